"""Smoke run of ``bench/register.py`` on a tiny register: the whole path, in seconds.

A real run: a PostgreSQL template database migrated and seeded by the bench,
cloned, every register page requested through Django. Checks the report's
contract, that the register lists what it should and that no page's query
count depends on the size, never a speed: figures depend on the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "register.py"
pytestmark = pytest.mark.slow
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/civitas"
DEFAULT_REDIS = "redis://127.0.0.1:6379/15"


def _server_url() -> str:
    url = os.environ.get("DATABASE_URL", DEFAULT_DB)
    return url.rsplit("/", 1)[0]


def _drop(prefix: str) -> None:
    names = subprocess.run(
        ["psql", f"{_server_url()}/postgres", "-XAtq", "-c",
         f"SELECT datname FROM pg_database WHERE datname LIKE '{prefix}_%'"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    for name in names:
        subprocess.run(
            ["psql", f"{_server_url()}/postgres", "-XAtq", "-c",
             f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"],
            capture_output=True, check=True,
        )


def _run(prefix: str, entries: int) -> dict:
    command = [
        sys.executable, str(SCRIPT), "--json",
        "--entries", str(entries), "--requests", "3", "--warmup", "1",
        "--csv-repeats", "1",
        "--database", _server_url(),
        "--redis", os.environ.get("CELERY_BROKER_URL", DEFAULT_REDIS),
        "--db-prefix", prefix,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def reports():
    prefix = f"civitas_regsmoke_{uuid.uuid4().hex[:6]}"
    try:
        yield _run(prefix, 30), _run(prefix, 90), _run(prefix, 30)
    finally:
        _drop(prefix)


def test_register_smoke_reports_every_page(reports):
    small, _large, _again = reports
    assert small["processor"]["model"] and small["processor"]["cores"] >= 1
    assert small["entries"] == small["listed"] == 30
    assert small["unlisted"] == 6  # the drafts the register must not list
    for name in ("list", "list_search", "list_filtered", "list_deep_page",
                 "entry", "api", "api_filtered"):
        row = small["pages"][name]
        assert row["requests"] == 3
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    assert small["csv"]["rows"] == 30 and small["csv"]["bytes"] > 0
    assert small["list_p95_ms"] == small["pages"]["list"]["p95_ms"]


def test_register_smoke_queries_do_not_grow_with_the_register(reports):
    small, large, _again = reports
    for name, row in small["pages"].items():
        assert large["pages"][name]["queries"] == row["queries"], name
    assert large["csv"]["queries"] == small["csv"]["queries"]


def test_register_smoke_second_run_reuses_the_template(reports):
    small, _large, again = reports
    assert small["prepare"]["cached"] is False
    assert again["prepare"]["cached"] is True
