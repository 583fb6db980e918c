"""Smoke run of ``bench/load.py`` on a tiny catalogue: the whole path, in seconds.

A real run: a PostgreSQL database prepared by ``bench/load_seed.py`` (COPY
of the catalogue and of an audit chain), kept as a template and cloned,
gunicorn started with ``deploy/gunicorn.conf.py`` and DEBUG off, locust
driving every endpoint. Checks the report's contract and that every request
succeeded, never a speed: figures depend on the machine and its other load.
The prepared chain is then verified with the project's own verifier.
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
SCRIPT = ROOT / "bench" / "load.py"
pytestmark = pytest.mark.slow
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/civitas"
DEFAULT_REDIS = "redis://127.0.0.1:6379/15"


def _server_url() -> str:
    """The PostgreSQL server of the test run, without a database name."""
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


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny run's JSON report, its output directory and database prefix."""
    out = tmp_path_factory.mktemp("load-out")
    prefix = f"civitas_loadsmoke_{uuid.uuid4().hex[:6]}"
    command = [
        sys.executable, str(SCRIPT), "--json",
        "--sizes", "40,120", "--audit-events", "500",
        "--duration", "1", "--warmup", "0.3", "--users", "2",
        "--database", _server_url(),
        "--redis", os.environ.get("CELERY_BROKER_URL", DEFAULT_REDIS),
        "--db-prefix", prefix, "--out-dir", str(out),
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=240, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        yield json.loads(done.stdout), out, prefix
    finally:
        _drop(prefix)


def test_load_smoke_reports_every_endpoint_at_both_sizes(run):
    report, _out, _prefix = run
    assert report["processor"]["model"]
    assert report["processor"]["cores"] >= 1
    assert [r["versions"] for r in report["runs"]] == [40, 120]
    for size in report["runs"]:
        rows = size["endpoints"]
        for name in (
            "versions_filtered", "versions_filtered_uncached", "version_detail",
            "version_detail_uncached", "lineage", "audit_list",
            "register_version", "request_evaluation", "public_register",
        ):
            row = rows[name]
            assert row["requests"] > 0, (size["versions"], name, row)
            assert row["failures"] == 0, (size["versions"], name, row)
            assert row["rps"] > 0
            assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert size["audit_events"] >= 500
        # The read cache's baseline ran on its own server, side by side.
        speedup = size["read_cache_speedup"]
        assert set(speedup) == {"version_detail", "versions_filtered"}
        assert all(ratio > 0 for ratio in speedup.values())
        assert len(size["server_log"]) == 2
    assert set(report["p99_ratio"]) >= {"version_detail", "versions_filtered"}


def test_load_smoke_seeds_a_chain_the_verifier_accepts(run):
    report, _out, _prefix = run
    template = report["runs"][0]["template"]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": f"{_server_url()}/{template}",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "LOG_LEVEL": "WARNING",
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "verify_audit"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env, check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_load_smoke_second_run_reuses_the_prepared_database(run):
    _report, out, prefix = run
    command = [
        sys.executable, str(SCRIPT), "--json",
        "--sizes", "40", "--audit-events", "500",
        "--duration", "0.5", "--warmup", "0.2", "--users", "1",
        "--endpoints", "version_detail",
        "--database", _server_url(),
        "--redis", os.environ.get("CELERY_BROKER_URL", DEFAULT_REDIS),
        "--db-prefix", prefix, "--out-dir", str(out),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    again = json.loads(done.stdout)["runs"][0]
    assert again["prepare"]["cached"] is True
    assert again["endpoints"]["version_detail"]["failures"] == 0
