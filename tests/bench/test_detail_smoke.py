"""Smoke run of ``bench/detail.py`` on a tiny catalogue: both paths, side by side.

A real run: the catalogue ``bench/load_seed.py`` builds, kept as a template
and cloned, then cold detail reads through Django's middleware on the
serializer path and the fixed-SQL path. Checks the report's contract and
that the two paths answered the same bytes, never a speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.bench.test_load_smoke import DEFAULT_REDIS, _drop, _server_url

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "detail.py"
pytestmark = pytest.mark.slow


def test_detail_smoke_measures_both_paths_on_the_same_bytes(tmp_path):
    prefix = f"civitas_detailsmoke_{uuid.uuid4().hex[:6]}"
    command = [
        sys.executable, str(SCRIPT), "--json", "--sizes", "40",
        "--requests", "30", "--warmup", "3", "--database", _server_url(),
        "--redis", os.environ.get("CELERY_BROKER_URL", DEFAULT_REDIS),
        "--db-prefix", prefix, "--out-dir", str(tmp_path),
    ]  # fmt: skip
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=240, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False,
        )  # fmt: skip
    finally:
        _drop(prefix)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["processor"]
    (run,) = report["runs"]
    assert run["versions"] == 40
    assert run["same_bytes"] == "50/50"
    assert set(run["paths"]) == {"serializer", "fixed_sql"}
    for figures in run["paths"].values():
        assert 0 < figures["wall_p50_ms"] <= figures["wall_p95_ms"]
        assert figures["wall_p95_ms"] <= figures["wall_p99_ms"]
        assert figures["cpu_mean_ms"] > 0
    assert all(ratio > 0 for ratio in run["ratios"].values())
