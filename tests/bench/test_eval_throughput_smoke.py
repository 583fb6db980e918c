"""Smoke run of ``bench/eval_throughput.py --quick --repeats 1 --json``.

Checks the contract of the JSON (every key, positive figures), never a
timing threshold: speed depends on the machine and on its other load. The
PyTorch and onnxruntime-genai baselines run when ``.venv-export`` has them;
otherwise their ratios must be null with a reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# A real (if small) run: tens of seconds, more with the PyTorch baseline.
pytestmark = pytest.mark.slow

SCRIPT = ROOT / "bench" / "eval_throughput.py"
REQUIRED = (
    "scoring_tokens_per_s",
    "generation_tokens_per_s",
    "ratio_vs_naive_ort",
    "ratio_vs_torch",
    "matmul_gflops",
    "bandwidth_gb_s",
    "scoring_fraction_of_limit",
    "generation_fraction_of_limit",
    "foreign_load",
    "environment",
)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """The JSON of one quick run, its bundles in a temporary directory."""
    out = tmp_path_factory.mktemp("bench-out")
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--repeats",
            "1",
            "--json",
            "--out-dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=540,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, "--json must print exactly one line (one object)"
    return json.loads(lines[0])


def test_every_key_is_present(report):
    missing = [k for k in REQUIRED if k not in report]
    assert not missing


def test_engine_figures_and_limits_are_positive(report):
    for key in (
        "scoring_tokens_per_s",
        "generation_tokens_per_s",
        "matmul_gflops",
        "bandwidth_gb_s",
        "scoring_fraction_of_limit",
        "generation_fraction_of_limit",
    ):
        assert isinstance(report[key], float), key
        assert report[key] > 0, key


def test_ratio_vs_naive_ort_is_positive(report):
    assert report["ratio_vs_naive_ort"]["scoring"] > 0
    assert report["ratio_vs_naive_ort"]["generation"] > 0
    assert report["baselines"]["naive_ort"]["generation_matches_engine"] is True


def test_torch_ratio_is_positive_or_null_with_a_reason(report):
    torch = report["baselines"]["torch"]
    if report["ratio_vs_torch"] is None:
        assert torch["status"]
        return
    assert report["ratio_vs_torch"]["scoring"] > 0
    assert report["ratio_vs_torch"]["generation"] > 0
    # The same weights: PyTorch and the engine agree on the logits.
    assert torch["max_abs_logit_diff_vs_engine"] < 1e-3


def test_genai_is_measured_or_explained(report):
    genai = report["baselines"]["genai"]
    if report["ratio_vs_genai"] is None:
        assert genai["status"]
    else:
        assert genai["generation_tokens_per_s"] > 0


def test_the_optimised_graph_and_genai_are_timed_alternately_or_explained(report):
    alternating = report["alternating"]
    if report["ratio_vs_genai"] is None:
        assert alternating["status"] and set(alternating) == {"status"}
        return
    assert alternating["engine_spinning"] == "off"  # the run's --engine-spinning
    for name in ("fp32_generation", "int4_generation"):
        row = alternating[name]
        assert row["engine_tokens_per_s"] > 0 and row["genai_tokens_per_s"] > 0
        assert row["ratio_vs_genai"] == pytest.approx(
            row["engine_tokens_per_s"] / row["genai_tokens_per_s"]
        )
        assert row["cpu_ms_per_token"]["engine"] > 0
        assert row["cpu_ms_per_token"]["genai"] > 0


def test_foreign_load_and_environment_are_recorded(report):
    load = report["foreign_load"]
    assert isinstance(load["contaminated"], bool)
    assert {"engine", "naive_ort", "matmul_gflops", "bandwidth"} <= set(load["phases"])
    for phase in load["phases"].values():
        assert phase["foreign_cores"] >= 0
    env = report["environment"]
    assert env["onnxruntime"]
    assert env["runtime_settings"]["resolved_intra_op_threads"] >= 1


def test_int8_scoring_is_reported_against_fp32_and_its_limit(report):
    int8 = report["int8"]
    for key in (
        "scoring_tokens_per_s",
        "ratio_vs_fp32",
        "ratio_vs_fp32_cpu",
        "ratio_vs_fp32_engine_phase",
        "ratio_vs_fp32_shared_session",
        "int8_matmul_gops",
        "int8_limit_vs_fp32_limit",
        "scoring_limit_tokens_per_s",
        "scoring_fraction_of_limit",
        "perplexity_fp32",
        "perplexity_int8",
    ):
        assert isinstance(int8[key], float) and int8[key] > 0, key
    # Dynamic int8 of the same weights: the perplexity moves, but little.
    assert 0 < abs(int8["perplexity_relative_change"]) < 0.05
    assert int8["int8_limit_vs_fp32_limit"] == pytest.approx(
        int8["int8_matmul_gops"] / report["matmul_gflops"]
    )
    assert int8["targets"] == {"ratio_vs_fp32": 3.0, "perplexity_relative_change": 0.01}


def test_int4_generation_is_compared_with_genai_on_the_same_weights(report):
    int4 = report["int4"]
    for key in (
        "generation_tokens_per_s",
        "generation_limit_tokens_per_s",
        "generation_fraction_of_limit",
    ):
        assert isinstance(int4[key], float) and int4[key] > 0, key
    assert isinstance(int4["matches_fp32_engine"], bool)
    if int4["genai_generation_tokens_per_s"] is None:
        assert int4["genai_status"] and int4["ratio_vs_genai"] is None
    else:
        assert int4["ratio_vs_genai"] > 0
        assert isinstance(int4["genai_matches_engine"], bool)


def test_the_optimised_graph_is_measured_beside_the_unfused_one(report):
    optimised = report["optimised"]
    assert optimised["fused_ops"]["GroupQueryAttention"] >= 1
    for pair in ("fp32_scoring", "fp32_generation", "int8_scoring", "int4_generation"):
        for graph in ("unfused", "fused"):
            figures = optimised[pair][graph]
            assert figures["tokens_per_s"] > 0 and figures["cpu_s_per_token"] > 0
        assert optimised[pair]["fused_vs_unfused"] > 0
    # fp32: the fused graph generates exactly the unfused graph's tokens.
    assert optimised["fp32_generation"]["greedy_tokens_equal"] is True
    for graph in ("unfused", "fused"):
        assert optimised["ratios"][graph]["int8_vs_fp32_scoring"] > 0


def test_the_uploaded_graph_is_timed_beside_its_baselines_or_explained(report):
    beside = report["beside"]
    if report["ratio_vs_torch"] is None and report["ratio_vs_genai"] is None:
        assert beside["status"] and set(beside) == {"status"}
        return
    assert (beside["engine_spinning"], beside["rounds"]) == ("off", 1)
    measured = {"torch": report["ratio_vs_torch"], "genai": report["ratio_vs_genai"]}
    for name, runners in (("scoring", ["torch"]), ("generation", ["torch", "genai"])):
        rows, ratios = beside[name]["runners"], beside[name]["ratios"]
        for key in runners:
            if measured[key] is None:
                continue
            assert ratios[f"vs_{key}"] == pytest.approx(
                rows["engine"]["tokens_per_s"] / rows[key]["tokens_per_s"]
            )
    assert "beside" in report["foreign_load"]["phases"]
