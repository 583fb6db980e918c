"""`make run`'s process set under supervisord: a dead process comes back.

The same config `deploy/run-local.sh` starts (deploy/supervisord.conf) runs in a
temporary var directory on the embedded defaults (SQLite database and broker);
the worker is killed, supervisord names it and starts it again, and web keeps
answering meanwhile.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import ROOT, process_env, wait_until

CONF = str(ROOT / "deploy" / "supervisord.conf")
EMBEDDED = ("DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
            return True
    except urllib.error.HTTPError:
        return True  # an answer (503 while a dependency is down is still one)
    except OSError:
        return False


def _ctl(env, *args) -> str:
    command = [sys.executable, "-m", "supervisor.supervisorctl", "-c", CONF, *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    return result.stdout.strip()


def _worker_pid(env) -> int | None:
    status = _ctl(env, "status", "worker")
    pid = _ctl(env, "pid", "worker")
    return int(pid) if "RUNNING" in status and pid.isdigit() and pid != "0" else None


def _start(tmp_path, **overrides):
    """Migrate, then start supervisord; returns (process, env, port, log path)."""
    port = _free_port()
    env = process_env(
        CIVITAS_VAR_DIR=str(tmp_path),
        SECRET_KEY="make-run-test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        ALLOWED_HOSTS="localhost,127.0.0.1",
        CIVITAS_HTTPS="false",
        PORT=str(port),
        WEB_CONCURRENCY="1",
        CELERY_WORKER_CONCURRENCY="1",
        CELERY_TASK_DEFAULT_QUEUE="civitas-supervised",
        CELERY_HOUSEKEEPING_QUEUE="civitas-supervised-housekeeping",
        PATH=f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.getenv("PYTHONPATH")])),
    )
    env.update(overrides)
    for name in EMBEDDED:
        env.pop(name, None)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        env=env, cwd=ROOT, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    log = tmp_path / "supervisord.out"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-c", CONF],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return proc, env, port, log


def _stop(proc) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture
def supervised(tmp_path):
    """The make-run process set under supervisord; yields (env, port, log path)."""
    proc, env, port, log = _start(tmp_path)
    try:
        yield env, port, log
    finally:
        _stop(proc)


@pytest.mark.slow
def test_make_run_restarts_a_killed_worker_while_web_keeps_answering(supervised):
    env, port, log = supervised
    wait_until(lambda: _answers(port), timeout=120, what="web to answer")
    old = wait_until(lambda: _worker_pid(env), timeout=120, what="the worker")

    os.killpg(old, signal.SIGKILL)  # the worker's main process and its pool
    deadline = time.monotonic() + 120
    new = None
    while time.monotonic() < deadline and not new:
        assert _answers(port), "web stopped answering while the worker was down"
        pid = _worker_pid(env)
        new = pid if pid and pid != old else None
        time.sleep(0.5)

    assert new, "supervisord did not start the worker again"
    assert _answers(port)
    assert "RUNNING" in _ctl(env, "status", "web")
    assert "RUNNING" in _ctl(env, "status", "beat")
    assert "RUNNING" in _ctl(env, "status", "worker-housekeeping")
    output = log.read_text()
    assert "exited: worker (terminated by SIGKILL; not expected)" in output


@pytest.mark.slow
def test_make_run_stops_everything_naming_a_process_that_cannot_stay_up(tmp_path):
    # A worker that exits at once, every time (an invalid concurrency).
    proc, _env, port, log = _start(tmp_path, CELERY_WORKER_CONCURRENCY="none")
    try:
        proc.wait(timeout=150)  # supervisord gives up on it and stops
    finally:
        if proc.poll() is None:
            _stop(proc)

    output = log.read_text()
    assert "process 'worker' keeps dying" in output
    assert "gave up: worker entered FATAL state" in output
    assert not _answers(port), "web was left running: the platform is half up"
