"""Shared fixtures: real PostgreSQL (pytest-django), Redis and Celery workers."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent


def database_url() -> str:
    """The URL of the database the current test sees (pytest-django's test DB)."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


def process_env(**overrides: str) -> dict[str, str]:
    """The environment for a child process of the platform (worker, web)."""
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    env["PYTHONPATH"] = str(ROOT)
    env.update(overrides)
    return env


@contextlib.contextmanager
def celery_worker(env: dict[str, str], queue: str) -> Iterator[subprocess.Popen]:
    """Run a real Celery worker process consuming ``queue`` until the block ends."""
    name = f"test-{uuid.uuid4().hex[:8]}@%h"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--loglevel",
            "INFO",
            "--pool",
            "prefork",
            "--concurrency",
            "1",
            "--queues",
            queue,
            "--hostname",
            name,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def worker_queues() -> str:
    """The default and the housekeeping queue, for one test worker to consume.

    A test that follows a run to what happens after it (the MLflow outbox,
    webhooks, comparisons) needs both: those tasks are housekeeping's
    (``CELERY_TASK_ROUTES``).
    """
    return f"{settings.CELERY_TASK_DEFAULT_QUEUE},{settings.CELERY_HOUSEKEEPING_QUEUE}"


def queued_tasks(callbacks) -> list:
    """The on-commit callbacks that queue a Celery task, not audit announcements."""
    return [c for c in callbacks if c.__qualname__.startswith("send_on_commit")]


def wait_until(predicate, *, timeout: float, interval: float = 0.2, what: str = ""):
    """Poll ``predicate`` until it returns a truthy value; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")


@pytest.fixture(autouse=True)
def _django_test_settings(settings):
    """Settings that only make tests cheaper, never change what they prove.

    Static names are served unhashed (tests do not run collectstatic) and
    passwords are hashed with MD5 (PBKDF2 costs most of a second per user).
    """
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {
            "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        },
    }


def _is_transactional(request) -> bool:
    marker = request.node.get_closest_marker("django_db")
    return "transactional_db" in request.fixturenames or bool(
        marker and marker.kwargs.get("transaction")
    )


@pytest.fixture(autouse=True)
def _audit_chain_flushable(request):
    """Let pytest-django flush tables after a transactional test.

    The audit tables' triggers refuse TRUNCATE, as they must in service; the
    flush that ends a transactional test uses TRUNCATE. As the superuser test
    role, replica mode skips ordinary triggers for that flush only, and every
    test starts with triggers enforced again. pytest-django's own autouse
    fixtures are set up first, so this teardown runs before the flush.
    """
    if not _is_transactional(request):
        yield
        return
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = origin")
    yield
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = replica")


@pytest.fixture(scope="session")
def mlflow_root(tmp_path_factory) -> Path:
    """One MLflow SQLite store per test session: creating one takes seconds."""
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture
def mlflow_store(settings, mlflow_root) -> Path:
    """Point the platform at the session's real MLflow store."""
    settings.MLFLOW_TRACKING_URI = f"sqlite:///{mlflow_root / 'mlflow.sqlite3'}"
    settings.MLFLOW_ARTIFACT_ROOT = (mlflow_root / "mlruns").as_uri()
    settings.MLFLOW_EXPERIMENT = "civitas-test"
    return mlflow_root


@pytest.fixture
def admin_user(django_user_model):
    """A platform superuser."""
    return django_user_model.objects.create_superuser(
        username="root-admin", email="admin@example.gov", password="unused-Pa55word!"
    )
