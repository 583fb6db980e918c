"""Fixtures for the fault tests: real workers on queues of their own, a slow
suite, and a private ``redis-server`` a test may stop and start again."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from governance.models import EvaluationRun, EvaluationSuite, RunStatus
from governance.services import evaluations as evaluation_services
from tests.conftest import ROOT, database_url, process_env, wait_until
from tests.factories import DatasetVersionFactory, LicenceFactory
from tests.governance.conftest import *  # noqa: F403  (bundles, suites, people)
from tests.governance.conftest import _jsonl, _stored


@pytest.fixture
def queues() -> tuple[str, str]:
    """A default and a housekeeping queue no other test consumes."""
    name = f"faults-{uuid.uuid4().hex[:8]}"
    return name, f"{name}-housekeeping"


@pytest.fixture
def worker_env(queues, mlflow_store) -> dict[str, str]:
    """The environment of a worker of this test's database, MLflow and queues."""
    default, housekeeping = queues
    return process_env(
        DATABASE_URL=database_url(),
        MLFLOW_TRACKING_URI=settings.MLFLOW_TRACKING_URI,
        MLFLOW_ARTIFACT_ROOT=settings.MLFLOW_ARTIFACT_ROOT,
        MLFLOW_EXPERIMENT=settings.MLFLOW_EXPERIMENT,
        CELERY_TASK_DEFAULT_QUEUE=default,
        CELERY_HOUSEKEEPING_QUEUE=housekeeping,
    )


def _refusal_suite(name: str, prompts: int) -> EvaluationSuite:
    rows = _jsonl(
        [
            {"prompt": f"Tell me about service {n}.", "should_refuse": n % 2 == 0}
            for n in range(prompts)
        ]
    )
    key, digest = _stored(f"tests/{name}-refusal.jsonl", rows)
    return EvaluationSuite.objects.create(
        name=name,
        version="1.0.0",
        licence=LicenceFactory(expression="CC0-1.0"),
        tasks=[
            {
                "task": "refusal",
                "name": "refusal",
                "options": {"max_new_tokens": 32},
                "dataset_version": DatasetVersionFactory(
                    storage_key=key, digest=digest
                ).pk,
            }
        ],
    )


@pytest.fixture
def slow_suite(db) -> EvaluationSuite:
    """A refusal suite long enough (seconds) to be interrupted mid-run."""
    return _refusal_suite("faults", 160)


@pytest.fixture
def long_suite(db) -> EvaluationSuite:
    """A refusal suite that keeps a worker busy for minutes, longer than any
    wait of the test that uses it: the test stops the worker, not the run."""
    return _refusal_suite("faults-long", 16000)


def request_run(member, version, suite) -> EvaluationRun:
    """A queued run whose message the test publishes itself."""
    return evaluation_services.evaluation_request(
        actor=member, model_version=version, suite=suite, enqueue=False
    )


def publish(env: dict[str, str], *messages: tuple[str, dict, str, str | None]) -> None:
    """Publish ``(task, kwargs, queue, task_id)`` messages to ``env``'s broker.

    In a child process, so a test may publish to a broker other than its own.
    """
    code = (
        "import django, json, sys; django.setup()\n"
        "from config.celery import app\n"
        "for name, kwargs, queue, task_id in json.loads(sys.argv[1]):\n"
        "    app.send_task(name, kwargs=kwargs, queue=queue, task_id=task_id)\n"
    )
    import json

    subprocess.run(
        [sys.executable, "-c", code, json.dumps(messages)],
        env=env, cwd=ROOT, check=True, timeout=120,
    )  # fmt: skip


def status_of(run_id: int) -> str:
    return EvaluationRun.objects.get(pk=run_id).status


def wait_running(run_id: int, *, timeout: float = 120) -> EvaluationRun:
    """Wait until the run is running and its engine has reported progress."""
    return wait_until(
        lambda: EvaluationRun.objects.filter(
            pk=run_id, status=RunStatus.RUNNING, progress__gt=0
        ).first(),
        timeout=timeout,
        what="the run to be under way",
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRedis:
    """A ``redis-server`` of the test's own, persisted as deploy does (AOF)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--appendonly", "yes", "--dir", str(self.directory),
                "--save", "", "--protected-mode", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(self._answers, timeout=20, what="redis-server to answer")

    def stop(self) -> None:
        """SIGTERM: Redis flushes its append-only file and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def _answers(self) -> bool:
        address = ("127.0.0.1", self.port)
        with (
            contextlib.suppress(OSError),
            socket.create_connection(address, timeout=1) as conn,
        ):
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
        return False


@pytest.fixture
def private_redis(tmp_path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis")
    server.directory.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()
