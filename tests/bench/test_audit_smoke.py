"""Smoke run of ``bench/audit.py --verify-only`` on a small COPY-written chain.

A real run: a scratch PostgreSQL database created and migrated by the bench,
a chain written with COPY, verified in the database and as an export, and
inclusion and consistency proofs timed at the chain's full size, then the
database dropped. Checks the report's contract, never a speed.
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
SCRIPT = ROOT / "bench" / "audit.py"
pytestmark = pytest.mark.slow
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/civitas"


def test_verify_only_times_proofs_at_the_chain_size():
    server = os.environ.get("DATABASE_URL", DEFAULT_DB).rsplit("/", 1)[0]
    scratch = f"{server}/civitas_auditsmoke_{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if k != "CIVITAS_SIGNING_KEY_FILE"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--verify-only", "--events", "3000",
         "--proof-samples", "5", "--quiet", "--json", "--database-url", scratch],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)}, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["seeded"]["events"] == 3000
    assert report["verify"]["events_per_second"] > 0
    assert report["export"]["events_per_second"] > 0
    proofs = report["proofs"]
    assert (proofs["tree_size"], proofs["samples"]) == (3000, 5)
    # a tree of 3,000 leaves: at most ceil(log2(3000)) = 12 hashes per
    # inclusion path, each proof verified by the bench before it is counted
    assert 1 <= proofs["inclusion"]["hashes_max"] <= 12
    assert proofs["consistency"]["hashes_max"] >= 1
    for kind in ("inclusion", "consistency"):
        assert 0 < proofs[kind]["ms_median"] <= proofs[kind]["ms_max"]
    exists = subprocess.run(
        ["psql", f"{server}/postgres", "-XAtq", "-c",
         f"SELECT 1 FROM pg_database WHERE datname = '{scratch.rsplit('/', 1)[1]}'"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert exists == "", "the scratch database must be dropped"
