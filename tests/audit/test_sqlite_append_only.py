"""D1 on SQLite: the audit tables are append-only on the laptop default too.

``make test`` runs on PostgreSQL, so this test migrates a fresh SQLite database
in a child process (DATABASE_URL=sqlite:///...) and tries every way to change
or remove audit rows there: ORM update, delete, bulk, save(), raw SQL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT, process_env

ATTEMPTS = r"""
import json
import django
django.setup()
from django.core.management import call_command
from django.db import connection, transaction
from audit import services
from audit.models import AuditCheckpoint, AuditEvent

call_command("migrate", verbosity=0)
assert connection.vendor == "sqlite"
for n in range(3):
    with transaction.atomic():
        services.record(actor=None, action="demo.recorded", payload={"n": n})
services.checkpoint_create()

def snapshot():
    events = AuditEvent.objects.order_by("seq").values_list("seq", "action", "hash")
    points = AuditCheckpoint.objects.values_list("id", "head_hash")
    return [[list(e) for e in events], [list(p) for p in points]]

def raw(sql):
    with connection.cursor() as cursor:
        cursor.execute(sql)

def save_existing():
    event = AuditEvent.objects.get(seq=2)
    event.action = "demo.forged"
    event.save()

before = snapshot()
attempts = {
    "orm_update": lambda: AuditEvent.objects.filter(seq=2).update(action="x.y"),
    "orm_delete": lambda: AuditEvent.objects.filter(seq=3).delete(),
    "bulk_delete": lambda: AuditEvent.objects.all().delete(),
    "save_existing": save_existing,
    "checkpoint_update": lambda: AuditCheckpoint.objects.update(head_hash="0" * 64),
    "checkpoint_delete": lambda: AuditCheckpoint.objects.all().delete(),
    "raw_update": lambda: raw("UPDATE governance_auditevent SET action = 'x.y'"),
    "raw_delete": lambda: raw("DELETE FROM governance_auditevent WHERE seq = 1"),
    "raw_empty_table": lambda: raw("DELETE FROM governance_auditcheckpoint"),
}
refused = {}
for name, attempt in attempts.items():
    try:
        with transaction.atomic():
            attempt()
        refused[name] = "not refused"
    except Exception as e:  # asserted by the test: IntegrityError, append-only
        refused[name] = f"{type(e).__name__}: {e}"
print(json.dumps({"before": before, "after": snapshot(), "refused": refused}))
"""


def test_d1_sqlite_audit_rows_cannot_be_updated_or_deleted(tmp_path):
    env = process_env(
        DATABASE_URL=f"sqlite:///{tmp_path / 'civitas.sqlite3'}",
        CIVITAS_VAR_DIR=str(tmp_path),
        PYTHONPATH=os.pathsep.join(
            filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
        ),
    )
    result = subprocess.run(
        [sys.executable, "-c", ATTEMPTS],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])

    for name, message in outcome["refused"].items():
        assert message.startswith("IntegrityError"), f"{name}: {message}"
        assert "append-only" in message, f"{name}: {message}"
    assert outcome["after"] == outcome["before"]
    events, checkpoints = outcome["before"]
    assert [seq for seq, *_ in events] == [1, 2, 3]
    assert len(checkpoints) == 1
