"""Smoke run of ``bench/compare.py --megabytes 40 --layers 4 --json``.

Checks the contract of the JSON and what streaming promises (the traced
peak stays below one model's size), never a timing threshold.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_compare_bench_prints_its_figures():
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compare.py"), "--megabytes", "40",
         "--layers", "4", "--json"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    figures = json.loads(out.stdout)
    assert figures["primary"] == "fine_tune"
    assert figures["model_megabytes"] >= 39
    assert figures["megabytes_per_second"] > 0
    assert figures["seconds_sandboxed"] > 0
    assert 0 < figures["peak_over_model_size"] < 1
    assert 0 < figures["max_relative_change"] < 0.1
