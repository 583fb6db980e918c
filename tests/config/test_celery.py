"""A task queued by the web process runs in a separate Celery worker process.

No eager mode: each test starts a real worker and proves, by its pid and the
request id it inherited, that the task crossed a real broker.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys

import pytest
import requests
from django.conf import settings
from kombu import Connection

from tests.conftest import ROOT, celery_worker, process_env, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _purge(queue: str) -> None:
    with Connection(settings.CELERY_BROKER_URL) as conn:
        conn.default_channel.queue_purge(queue)


def test_task_queued_by_web_runs_in_worker_over_redis(client, admin_user):
    assert settings.CELERY_BROKER_URL.startswith("redis://")
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    _purge(queue)
    client.force_login(admin_user)

    with celery_worker(process_env(), queue) as worker:
        queued = client.post("/api/v1/system/worker-ping/")
        assert queued.status_code == 202
        task_id = queued.json()["task_id"]
        request_id = queued["X-Request-ID"]

        def answered():
            body = client.get(f"/api/v1/system/worker-ping/{task_id}/").json()
            return body if body["state"] == "SUCCESS" else None

        body = wait_until(answered, timeout=90, what="the worker's answer")
        result = body["result"]
        assert result["pid"] not in (os.getpid(), worker.pid)  # a pool child
        assert result["pid"] != os.getpid()
        assert result["request_id"] == request_id


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_task_queued_by_web_runs_in_worker_over_embedded_sqlite_broker(tmp_path):
    """The laptop configuration: no DATABASE_URL, no broker URL, no MLflow URI."""
    env = process_env(CIVITAS_VAR_DIR=str(tmp_path), LOG_LEVEL="WARNING")
    for name in (
        "DATABASE_URL",
        "CELERY_BROKER_URL",
        "CELERY_RESULT_BACKEND",
        "MLFLOW_TRACKING_URI",
        "CELERY_TASK_DEFAULT_QUEUE",
    ):
        env.pop(name, None)
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput"], env=env, check=True,
                   capture_output=True)
    token = subprocess.run(
        [*manage, "shell", "-c", (
            "from django.contrib.auth import get_user_model;"
            "from knox.models import AuthToken;"
            "u = get_user_model().objects.create_superuser('ops', 'o@x.gov', None);"
            "print(AuthToken.objects.create(u)[1])"
        )],
        env=env, check=True, capture_output=True, text=True,
    ).stdout.strip().splitlines()[-1]
    port = _free_port()
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi:application",
         "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Token {token}", "X-Request-ID": secrets.token_hex(8)}
    try:
        def web_up():
            try:
                # The first call creates the MLflow SQLite store: slow, once.
                return requests.get(f"{base}/healthz", timeout=60).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(web_up, timeout=60, what="gunicorn to answer /healthz")
        broker = (tmp_path / "celery-broker.sqlite3")
        with celery_worker(env, "civitas") as worker:
            queued = requests.post(f"{base}/api/v1/system/worker-ping/",
                                   headers=headers, timeout=10)
            assert queued.status_code == 202, queued.text
            task_id = queued.json()["task_id"]
            assert broker.exists()  # the message went through the SQLite file

            def answered():
                body = requests.get(f"{base}/api/v1/system/worker-ping/{task_id}/",
                                    headers=headers, timeout=10).json()
                return body if body["state"] == "SUCCESS" else None

            result = wait_until(answered, timeout=90, what="the worker")["result"]
            assert result["pid"] not in (web.pid, worker.pid, os.getpid())
            assert result["request_id"] == queued.headers["X-Request-ID"]
    finally:
        web.terminate()
        web.wait(timeout=20)
