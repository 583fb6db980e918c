"""The evaluation child: limits, crashes, scrubbed environment, bundle checks."""

from __future__ import annotations

import os
import shutil
import signal
import time

import onnx
import pytest
from onnx import TensorProto, helper

from engine import sandbox
from engine.bundle import sha256_file
from engine.sandbox import EvaluationFailure, evaluate_bundle, run_isolated
from tests.engine.test_evaluate import (
    build_lm_bundle,
    build_tabular_bundle,
    read_suite_records,
)

# Targets are stdlib or engine functions named as "module:function", so the
# child imports nothing from the test suite and starts quickly.


def test_child_environment_has_no_secrets(monkeypatch):
    monkeypatch.setenv("CIVITAS_TEST_SECRET", "hunter2")
    monkeypatch.setenv("DATABASE_URL", "postgres://user:pw@db/civitas")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    seen = run_isolated("engine.sandbox:child_report", threads=2)
    env = seen["env"]
    assert "CIVITAS_TEST_SECRET" not in env
    assert "DATABASE_URL" not in env
    assert "hunter2" not in " ".join(env.values())
    assert env["HOME"] == seen["cwd"] == env["TMPDIR"]
    assert env["OMP_NUM_THREADS"] == "2"
    allowed = set(sandbox.scrubbed_env("/tmp", 2))
    leaked = [k for k in os.environ if k in env and k not in allowed]
    # Libraries may set variables of their own at import (OpenMP's KMP_*), but
    # nothing else of the parent's passes unless the sandbox put it there.
    assert [k for k in leaked if not k.startswith("KMP_")] == []
    assert seen["rlimit_as"] == sandbox.DEFAULT_MEMORY_BYTES
    assert seen["rlimit_core"] == 0
    assert seen["pgid_is_own"]


def test_memory_limit_gives_resource_limit():
    with pytest.raises(EvaluationFailure) as info:
        run_isolated("numpy:ones", (3 * 1024**3,), memory_bytes=1024**3)
    assert info.value.code == "resource_limit"
    assert info.value.exit_status == 1


def test_timeout_kills_the_process_group():
    started = time.monotonic()
    with pytest.raises(EvaluationFailure) as info:
        run_isolated(time.sleep, (60,), timeout_s=2)
    assert info.value.code == "timeout"
    assert time.monotonic() - started < 20


@pytest.mark.parametrize(
    ("target", "args", "name"),
    [
        ("ctypes:string_at", (0,), "SIGSEGV"),  # a real null-pointer read
        ("signal:raise_signal", (signal.SIGKILL,), "SIGKILL"),
    ],
)
def test_signal_death_is_reported_as_crashed(target, args, name):
    with pytest.raises(EvaluationFailure) as info:
        run_isolated(target, args)
    assert info.value.code == "crashed"
    assert name in info.value.message


def test_exceptions_in_the_child_are_classified():
    with pytest.raises(EvaluationFailure) as info:
        run_isolated("json:loads", ("{not json",))
    assert info.value.code == "failed"
    assert "JSONDecodeError" in info.value.message


@pytest.fixture(scope="module")
def lm_bundle(tmp_path_factory):
    return build_lm_bundle(tmp_path_factory.mktemp("sb") / "lm")[0]


@pytest.fixture(scope="module")
def pp_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "pp.jsonl"
    lines = (SUITE_LINE.format(i) for i in range(3))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


SUITE_LINE = '{{"id": "t{0}", "text": "The town hall opens at nine on day {0}."}}'


def test_evaluate_bundle_on_a_zip_with_the_right_digest(tmp_path, lm_bundle, pp_data):
    archive = shutil.make_archive(str(tmp_path / "bundle"), "zip", lm_bundle)
    digest = sha256_file(archive)
    events = []
    out = evaluate_bundle(
        archive,
        task="perplexity",
        data=pp_data,
        expected_digest=f"sha256:{digest}",
        progress=events.append,
    )
    assert events[-1] == {"task": "perplexity", "done": 3, "total": 3}
    assert out["task"] == "perplexity"
    assert out["bundle_sha256"] == digest
    assert out["facts"]["kind"] == "causal_lm_kv"
    (result,) = out["results"]
    assert result["metrics"]["token_count"] > 0
    assert [i["id"] for i in result["items"]] == ["t0", "t1", "t2"]
    assert result["performance"]["model_load_s"] > 0
    assert len(result["data_sha256"]) == 64


def test_directory_digest_is_the_sorted_sha256sum_manifest(lm_bundle):
    import hashlib

    files = sorted(p for p in lm_bundle.rglob("*") if p.is_file())
    manifest = "".join(
        f"{sha256_file(p)}  ./{p.relative_to(lm_bundle).as_posix()}\n" for p in files
    )
    expected = hashlib.sha256(manifest.encode()).hexdigest()
    assert sandbox.bundle_digest(lm_bundle) == expected


def test_bad_digest_is_refused_before_any_session(lm_bundle, pp_data):
    with pytest.raises(EvaluationFailure) as info:
        evaluate_bundle(
            lm_bundle, task="perplexity", data=pp_data, expected_digest="0" * 64
        )
    assert info.value.code == "refused"
    assert info.value.reason == "digest_mismatch"
    assert info.value.exit_status == 2


def test_disallowed_operator_is_refused_by_inspection(tmp_path, pp_data):
    node = helper.make_node("Evil", ["x"], ["y"], domain="com.example.custom")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[
            helper.make_opsetid("", 18),
            helper.make_opsetid("com.example.custom", 1),
        ],
    )
    (tmp_path / "b").mkdir()
    onnx.save(model, tmp_path / "b" / "model.onnx")
    with pytest.raises(EvaluationFailure) as info:
        evaluate_bundle(tmp_path / "b", task="perplexity", data=pp_data)
    assert info.value.code == "refused"
    assert info.value.reason == "op_not_allowed"


def memory_bomb_model() -> onnx.ModelProto:
    """A 3-feature classifier whose graph materialises a 1.6 GB tensor."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [20000, 20000])
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["big"]),
        helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
        helper.make_node("Mul", ["x", "total"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "bomb",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])],
        initializer=[shape],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_model_exceeding_the_memory_limit_fails_with_resource_limit(tmp_path):
    (tmp_path / "bomb").mkdir()
    onnx.save(memory_bomb_model(), tmp_path / "bomb" / "model.onnx")
    records = [{"features": [0.1, 0.2, 0.3], "label": 0}]
    with pytest.raises(EvaluationFailure) as info:
        evaluate_bundle(
            tmp_path / "bomb",
            task="classification",
            data=records,
            memory_bytes=1024**3,
            timeout_s=120,
        )
    assert info.value.code == "resource_limit"


def test_data_errors_are_caught_before_the_child_starts(tmp_path, lm_bundle):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": 3}\n', encoding="utf-8")
    with pytest.raises(EvaluationFailure) as info:
        evaluate_bundle(lm_bundle, task="perplexity", data=bad)
    assert info.value.code == "data_error"
    assert "line 2" in info.value.message


def test_unsupported_task_for_the_bundle_kind(tmp_path):
    root = build_tabular_bundle(tmp_path / "tab")[0]
    records = read_suite_records("civitas-perplexity-public-texts")[:1]
    with pytest.raises(EvaluationFailure) as info:
        evaluate_bundle(root, task="perplexity", data=records)
    assert info.value.code == "unsupported_task"
    assert info.value.exit_status == 2
