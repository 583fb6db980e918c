"""The production database's two roles (deploy/postgres/), proven on PostgreSQL.

A fresh database is made with roles.sql exactly as compose's init script and
``make deploy-check`` make it, migrated as the owner role, granted with
deploy/grants.py; then the application's role is tried: the audit tables
refuse its UPDATE, DELETE and TRUNCATE (raw SQL and the ORM), it cannot switch
the triggers off (replica mode, ALTER TABLE ... DISABLE TRIGGER), and the
platform itself works as that role (services, API calls, verify_audit).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys

import psycopg
import pytest
from django.conf import settings
from psycopg import errors

from deploy.check import create_database, drop_database, signing_key_pem
from tests.conftest import ROOT, process_env

AUDIT_TABLES = ["governance_auditevent", "governance_auditcheckpoint",
                "audit_securityevent", "audit_merklenode"]  # fmt: skip


def _superuser_url() -> str:
    db = settings.DATABASES["default"]
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return (
        f"postgres://{db.get('USER') or 'postgres'}{password}@"
        f"{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/postgres"
    )


def _manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="module")
def roles(tmp_path_factory):
    """A migrated database with its owner and app roles; yields URLs and an env."""
    base = settings.DATABASES["default"]["NAME"].removeprefix("test_")
    dbname = f"{base}_roles"
    superuser = _superuser_url()
    drop_database(superuser, dbname)  # a run interrupted before its teardown
    db = create_database(superuser, dbname)
    tmp = tmp_path_factory.mktemp("roles")
    key = tmp / "signing_key.pem"
    key.write_text(signing_key_pem())
    env = process_env(
        CIVITAS_VAR_DIR=str(tmp / "var"),
        CIVITAS_SIGNING_KEY_FILE=str(key),
        CELERY_TASK_DEFAULT_QUEUE=f"civitas-roles-{secrets.token_hex(3)}",
        ALLOWED_HOSTS="testserver",
        CIVITAS_HTTPS="false",
    )
    env.pop("DATABASE_URL_FILE", None)
    owner_env = {**env, "DATABASE_URL": db["owner_url"]}
    for args in (("manage.py", "migrate", "--noinput"),
                 ("deploy/grants.py", "--app-role", db["app_role"])):  # fmt: skip
        result = subprocess.run(
            [sys.executable, *args], cwd=ROOT, env=owner_env,
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
    db["app_env"] = {**env, "DATABASE_URL": db["app_url"]}
    try:
        yield db
    finally:
        drop_database(superuser, dbname)


# Runs as the app role: people and an agency through the services, then the
# API through Django's test client, then the audit chain's verification.
APP_AT_WORK = """
import json
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from registry import services
from registry.models import Role
User = get_user_model()
admin = User.objects.create_superuser("roles-admin", "a@roles.invalid", None)
agency = services.agency_create(actor=admin, name="Roles", slug="roles",
                                jurisdiction="FR")
member = User.objects.create_user("roles-member", "m@roles.invalid", None)
services.membership_add(actor=admin, agency=agency, user=member,
                        role=Role.MAINTAINER)
_, token = services.token_create(actor=member)
client = Client(HTTP_AUTHORIZATION=f"Token {token}")
statuses = {}
statuses["me"] = client.get("/api/v1/me/").status_code
statuses["licence"] = client.post("/api/v1/licences/", {"expression": "MIT"},
                                  content_type="application/json").status_code
model = client.post("/api/v1/models/", {"name": "M", "slug": "m", "task": "other",
                    "intended_use": "Testing roles."}, content_type="application/json")
statuses["model"] = model.status_code
statuses["patch"] = client.patch(f"/api/v1/models/{model.json()['id']}/",
                                 {"domain": "roles"},
                                 content_type="application/json").status_code
call_command("verify_audit")
print(json.dumps(statuses))
"""


@pytest.fixture(scope="module")
def app_at_work(roles):
    """The platform run as the app role once; its API answers."""
    result = _manage(roles["app_env"], "shell", "-c", APP_AT_WORK)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_app_role_runs_the_platform_and_the_audit_chain_verifies(app_at_work):
    assert app_at_work == {"me": 200, "licence": 201, "model": 201, "patch": 200}


def _connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, connect_timeout=10)


def test_d8_app_role_is_neither_owner_nor_superuser(roles):
    with _connect(roles["app_url"]) as conn:
        (rolsuper,) = conn.execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        owners = {
            row[0]
            for row in conn.execute(
                "SELECT tableowner FROM pg_tables WHERE schemaname = 'public'"
            )
        }
    assert rolsuper is False
    assert owners == {roles["owner_role"]}


def _count(conn, table: str) -> int:
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


@pytest.mark.parametrize("table", AUDIT_TABLES)
def test_d1_app_role_cannot_update_delete_or_truncate_audit_tables(
    roles, app_at_work, table
):
    with _connect(roles["app_url"]) as conn:
        before = _count(conn, table)
        conn.execute(f"INSERT INTO {table} SELECT * FROM {table} WHERE false")
        for sql in (f"UPDATE {table} SET id = id" if table.startswith("audit_")
                    else f"UPDATE {table} SET seq = seq",
                    f"DELETE FROM {table}", f"TRUNCATE {table}"):  # fmt: skip
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(sql)
        after = _count(conn, table)
    assert after == before
    if table == "governance_auditevent":
        assert before > 0  # the refusals had rows to refuse


def test_d1_app_role_queues_and_dequeues_pending_audit_events_but_never_updates(
    roles, app_at_work
):
    table = "audit_auditpendingevent"
    with _connect(roles["app_url"]) as conn, conn.transaction():
        (pending_id,) = conn.execute(
            f"INSERT INTO {table} (recorded_at, actor_label, agency_slug, action, "
            "object_type, object_id, payload) VALUES (now(), 'system', '', "
            "'roles.tested', '', '', '{}') RETURNING id"
        ).fetchone()
        for sql in (f"UPDATE {table} SET action = 'rewritten'", f"TRUNCATE {table}"):
            with pytest.raises(errors.InsufficientPrivilege), conn.transaction():
                conn.execute(sql)
        deleted = conn.execute(f"DELETE FROM {table} WHERE id = %s", [pending_id])
        assert deleted.rowcount == 1


def test_d8_app_role_cannot_switch_the_audit_triggers_off(roles):
    with _connect(roles["app_url"]) as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SET session_replication_role = replica")
        for table in AUDIT_TABLES[:2]:
            for how in ("ALL", "USER", f"{table}_no_update_delete"):
                with pytest.raises(errors.InsufficientPrivilege):
                    conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER {how}")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DROP TABLE governance_auditevent")


ORM_ATTEMPTS = """
import json
from django.db import ProgrammingError, transaction
from audit.models import AuditCheckpoint, AuditEvent, SecurityEvent
outcome = {}
attempts = {
    "update": lambda: AuditEvent.objects.update(action="rewritten"),
    "delete": lambda: AuditEvent.objects.all().delete(),
    "bulk_update": lambda: AuditEvent.objects.bulk_update(
        [AuditEvent(seq=1, action="rewritten")], ["action"]),
    "checkpoint_delete": lambda: AuditCheckpoint.objects.all().delete(),
    "security_update": lambda: SecurityEvent.objects.update(path="/x"),
}
for name, attempt in attempts.items():
    try:
        with transaction.atomic():
            attempt()
        outcome[name] = "allowed"
    except ProgrammingError as error:
        outcome[name] = "denied" if "permission denied" in str(error) else str(error)
outcome["actions"] = sorted(set(AuditEvent.objects.values_list("action", flat=True)))
print(json.dumps(outcome))
"""


def test_d1_orm_updates_and_deletes_of_the_audit_tables_fail_as_app_role(
    roles, app_at_work
):
    result = _manage(roles["app_env"], "shell", "-c", ORM_ATTEMPTS)

    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    actions = outcome.pop("actions")
    assert set(outcome.values()) == {"denied"}, outcome
    assert "rewritten" not in actions and actions
