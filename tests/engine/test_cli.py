"""The offline CLI contract: ``python -m engine``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine.test_evaluate import (
    SUITES,
    build_classifier_bundle,
    build_lm_bundle,
    build_tabular_bundle,
)

ROOT = Path(__file__).resolve().parents[2]
METRICS = {
    "perplexity": {"perplexity", "bits_per_byte"},
    "multiple_choice": {"acc", "acc_norm"},
    "stereotype_pairs": {"stereotype_preference"},
    "refusal": {"refusal_rate", "over_refusal_rate", "toxicity_rate"},
    "classification": {
        "accuracy",
        "macro_f1",
        "ece",
        "demographic_parity_difference",
        "equalized_odds_difference",
    },
}
DATA = {
    "perplexity": "civitas-perplexity-public-texts",
    "multiple_choice": "civitas-public-services-mc",
    "stereotype_pairs": "civitas-stereotype-pairs",
    "refusal": "civitas-refusal",
    "classification": "civitas-department-routing",
}


def cli(*args: str | Path) -> subprocess.CompletedProcess:
    """Run the CLI from the repository root, as a user would."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "engine", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    return {
        "lm": build_lm_bundle(base / "lm")[0],
        "classifier": build_classifier_bundle(base / "clf")[0],
        "tabular": build_tabular_bundle(base / "tab")[0],
    }


@pytest.mark.parametrize("task", sorted(METRICS))
def test_json_output_for_each_task(bundles, tmp_path, task):
    bundle = bundles["classifier" if task == "classification" else "lm"]
    data = SUITES / DATA[task] / "data.jsonl"
    items = tmp_path / "items.jsonl"
    extra = ["--max-new-tokens", "4"] if task == "refusal" else []
    run = cli(
        bundle, "--task", task, "--data", data, "--json", "--items", items, *extra
    )
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert list(doc) == ["task", "metrics", "performance", "environment"]
    assert doc["task"] == task
    assert METRICS[task] <= set(doc["metrics"])
    assert doc["performance"]["energy_method"] in ("rapl", "estimate_cpu_time")
    assert doc["environment"]["engine_version"]
    rows = [json.loads(line) for line in items.read_text().splitlines()]
    assert len(rows) == len(data.read_text().splitlines())
    assert all(r["task"] == task for r in rows)


def test_suite_json_output(bundles):
    run = cli(
        bundles["lm"],
        "--suite",
        SUITES / "civitas-core" / "suite.json",
        "--json",
        "--max-new-tokens",
        "4",
        "--threads",
        "1",
    )
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert list(doc) == ["suite", "tasks"]
    assert doc["suite"] == "civitas-core"
    assert [t["task"] for t in doc["tasks"]] == [
        "perplexity",
        "multiple_choice",
        "stereotype_pairs",
        "refusal",
    ]
    for entry in doc["tasks"]:
        assert list(entry) == ["task", "metrics", "performance", "environment"]
        assert METRICS[entry["task"]] <= set(entry["metrics"])
        assert entry["environment"]["runtime_settings"]["intra_op_threads"] == 1


def test_table_output_and_progress_bar(bundles):
    data = SUITES / "civitas-perplexity-public-texts" / "data.jsonl"
    run = cli(bundles["lm"], "--task", "perplexity", "--data", data)
    assert run.returncode == 0, run.stderr
    assert "perplexity" in run.stdout
    assert "bits_per_byte" in run.stdout
    assert "estimate_cpu_time" in run.stdout or "rapl" in run.stdout
    assert "40/40" in run.stderr


def test_tabular_bundle_on_feature_records(bundles, tmp_path):
    data = tmp_path / "features.jsonl"
    rows = [{"features": [0.5 * i, -0.2, 1.0], "label": i % 3} for i in range(6)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = cli(bundles["tabular"], "--task", "classification", "--data", data, "--json")
    assert run.returncode == 0, run.stderr
    assert 0.0 <= json.loads(run.stdout)["metrics"]["accuracy"] <= 1.0


def test_bad_data_line_exits_2_with_one_error_line(bundles, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text(
        '{"context": "Q", "choices": ["a", "b"], "answer": 0}\n{"context": 1}\n'
    )
    run = cli(bundles["lm"], "--task", "multiple_choice", "--data", data, "--json")
    assert run.returncode == 2
    assert run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: data_error: ")
    assert "line 2" in lines[0]


def test_wrong_task_for_the_model_kind_exits_2(bundles):
    data = SUITES / "civitas-perplexity-public-texts" / "data.jsonl"
    run = cli(bundles["classifier"], "--task", "perplexity", "--data", data)
    assert run.returncode == 2
    assert run.stderr.startswith("error: unsupported_task: ")


def test_usage_errors_exit_2_with_one_line(bundles):
    run = cli(bundles["lm"], "--task", "perplexity")
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "error: usage: --task needs --data FILE.jsonl"
    ]
    run = cli(bundles["lm"], "--task", "nonsense", "--data", "x.jsonl")
    assert run.returncode == 2
    assert len(run.stderr.strip().splitlines()) == 1


def test_failed_run_exits_1(bundles):
    data = SUITES / "civitas-perplexity-public-texts" / "data.jsonl"
    run = cli(
        bundles["lm"], "--task", "perplexity", "--data", data, "--memory-mb", "64"
    )
    assert run.returncode == 1
    assert run.stderr.startswith("error: resource_limit: ")


LONG_CHOICE = "The council collects garden waste every second week. " * 60


@pytest.mark.parametrize(
    ("second_line", "message"),
    [
        (
            json.dumps({"context": "Q:", "choices": ["a", LONG_CHOICE], "answer": 0}),
            "longer than the model's context window",
        ),
        ('{"context": "Q: \\ud800", "choices": ["a", "b"], "answer": 0}', "surrogate"),
    ],
    ids=["continuation-longer-than-context", "lone-surrogate"],
)
def test_bad_data_found_while_scoring_exits_2_naming_the_line(
    bundles, tmp_path, second_line, message
):
    data = tmp_path / "bad.jsonl"
    first = '{"context": "Q:", "choices": ["a", "b"], "answer": 0}'
    data.write_text(f"{first}\n{second_line}\n", encoding="utf-8")
    run = cli(bundles["lm"], "--task", "multiple_choice", "--data", data, "--json")
    assert run.returncode == 2, run.stderr
    assert run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: data_error: ")
    assert "line 2" in lines[0] and message in lines[0]


def test_json_output_records_batch_size_threads_and_performance_metrics(bundles):
    data = SUITES / "civitas-perplexity-public-texts" / "data.jsonl"
    run = cli(
        bundles["lm"],
        *("--task", "perplexity", "--data", data, "--json"),
        *("--batch-size", "3", "--threads", "1"),
    )
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    perf = doc["performance"]
    assert (perf["batch_size"], perf["scoring_batch_size"]) == (3, 3)
    assert perf["intra_op_threads"] == 1
    assert doc["metrics"]["tokens_per_s"] == perf["tokens_per_s"]
    assert doc["metrics"]["peak_rss_mb"] == pytest.approx(
        perf["peak_rss_bytes"] / 2**20
    )
    assert doc["metrics"]["model_load_s"] == perf["model_load_s"] > 0
