"""Defect 17: an empty MLflow store is created and migrated once, never raced.

``make run`` from an empty ``var/`` starts web workers, a Celery worker and
the demo evaluations together; each used to run MLflow's schema migrations
on the SQLite store at once, which could leave it half-migrated for good.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from governance import tracking
from tests.conftest import ROOT, process_env, wait_until

pytestmark = pytest.mark.slow

PROCESSES = 6

# Each child imports everything first, then waits for the start signal, so
# that every first open of the store happens at the same moment.
_CHILD = """
import os, sys, time
from pathlib import Path
import django
django.setup()
import mlflow.store.tracking.sqlalchemy_store  # noqa: F401  (import cost first)
from governance import tracking
go = Path(sys.argv[1])
(go.parent / f"ready-{os.getpid()}").touch()
while not go.exists():
    time.sleep(0.005)
tracking.ping()
print("opened")
"""


def _head_revision() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


def _schema(db: Path) -> tuple[str | None, set[str]]:
    """The store's alembic revision and its table names, read with plain sqlite3."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        tables = {row[0] for row in rows}
        revision = None
        if "alembic_version" in tables:
            query = "SELECT version_num FROM alembic_version"
            revision = conn.execute(query).fetchone()[0]
    return revision, tables


def _assert_usable(settings, db: Path, root: Path) -> None:
    settings.MLFLOW_TRACKING_URI = f"sqlite:///{db}"
    settings.MLFLOW_ARTIFACT_ROOT = (root / "mlruns").as_uri()
    settings.MLFLOW_EXPERIMENT = "civitas-store-test"
    logged = tracking.log_evaluation(
        tracking.EvaluationRecord(
            run_name="store", tags={}, params={"p": "1"}, metrics={"m": 1.0}
        )
    )
    assert tracking.read_run(logged.run_id).metrics == {"m": 1.0}


def test_processes_opening_an_empty_store_at_once_leave_it_migrated(
    settings, tmp_path
):
    db = tmp_path / "var" / "mlflow.sqlite3"
    db.parent.mkdir()
    go = tmp_path / "go"
    env = process_env(
        MLFLOW_TRACKING_URI=f"sqlite:///{db}",
        MLFLOW_ARTIFACT_ROOT=(tmp_path / "mlruns").as_uri(),
        LOG_LEVEL="WARNING",
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(go)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    wait_until(
        lambda: len(list(tmp_path.glob("ready-*"))) == PROCESSES,
        timeout=180,
        what="every child to import MLflow and wait",
    )
    go.touch()
    outcomes = [child.communicate(timeout=300) for child in children]

    failures = [
        err[-2000:] for child, (_, err) in zip(children, outcomes, strict=True)
        if child.returncode != 0
    ]
    assert failures == []
    assert all(out.strip() == "opened" for out, _ in outcomes)
    revision, tables = _schema(db)
    assert revision == _head_revision()
    assert not {t for t in tables if t.startswith("_alembic_tmp")}
    _assert_usable(settings, db, tmp_path)


def test_mlflow_migrate_creates_an_empty_store_once(settings, tmp_path):
    db = tmp_path / "fresh" / "mlflow.sqlite3"
    settings.MLFLOW_TRACKING_URI = f"sqlite:///{db}"

    first, second = StringIO(), StringIO()
    call_command("mlflow_migrate", stdout=first)
    call_command("mlflow_migrate", stdout=second)

    revision, tables = _schema(db)
    assert revision == _head_revision()
    assert {"experiments", "runs", "metrics", "params"} <= tables
    assert "created" in first.getvalue()
    assert "up to date" in second.getvalue()
    _assert_usable(settings, db, tmp_path)


def test_mlflow_migrate_leaves_a_tracking_server_to_migrate_its_own_store(settings):
    settings.MLFLOW_TRACKING_URI = "http://127.0.0.1:1"
    out = StringIO()

    call_command("mlflow_migrate", stdout=out)

    assert "tracking server" in out.getvalue()
