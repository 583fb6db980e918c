"""Quantised bundles derived in the sandbox with ONNX Runtime's own tools.

A small generated Llama-shaped model is derived by each method; the derived
bundle is inspected (its quantisation read from the graph), passes the
registration self-test, and scores texts within a stated tolerance of fp32.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.archive import materialise_bundle
from engine.bundle import inspect_bundle
from engine.quantise import (
    Derivation,
    QuantiseError,
    calibration_texts,
    derive_bundle,
)
from engine.runtime import load_model
from engine.sandbox import EvaluationFailure
from engine.selftest import run_selftest

TEXTS = [
    "The library opens at nine and closes at six on weekdays.",
    "Apply for a parking permit online or at the town hall.",
    "Household waste is collected every Tuesday morning.",
    "You can renew your passport at the civil registry office.",
]
# Relative tolerance on a text's total log-likelihood against fp32.
INT8_TOLERANCE = 0.01
INT4_TOLERANCE = 0.03
LIMITS = {"memory_bytes": 4 * 1024**3, "timeout_s": 300}


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    """A zipped fp32 causal LM (hidden 64, so every MatMul has whole blocks)."""
    import modelgen

    root = tmp_path_factory.mktemp("fp32")
    tokenizer = modelgen.train_tokenizer(TEXTS * 8, 300)
    cfg = modelgen.LMConfig(
        vocab_size=320,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=128,
        max_position_embeddings=64,
    )
    folder = modelgen.write_lm_bundle(
        root / "bundle", cfg, modelgen.init_weights(cfg, 0), tokenizer
    )
    return Path(shutil.make_archive(str(root / "lm"), "zip", folder))


@pytest.fixture(scope="module")
def calibration(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("calibration") / "texts.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    return path


def _scores(root: Path) -> np.ndarray:
    model = load_model(root)
    return np.array([sum(model.loglikelihood_rolling(model.encode(t))) for t in TEXTS])


@pytest.fixture(scope="module")
def fp32_scores(parent, tmp_path_factory) -> np.ndarray:
    root = materialise_bundle(parent, tmp_path_factory.mktemp("fp32-open") / "b")
    return _scores(root)


@pytest.mark.parametrize(
    ("method", "block_size", "quantisation", "tolerance"),
    [
        ("dynamic-int8", None, "int8", INT8_TOLERANCE),
        ("static-int8", None, "int8", INT8_TOLERANCE),
        ("int4", 32, "int4", INT4_TOLERANCE),
    ],
)
def test_each_method_derives_a_bundle_close_to_fp32(
    parent, calibration, fp32_scores, tmp_path, method, block_size, quantisation,
    tolerance,
):  # fmt: skip
    out = tmp_path / "derived.zip"
    report = derive_bundle(
        parent,
        out,
        Derivation(method, block_size),
        calibration_path=calibration if method == "static-int8" else None,
        **LIMITS,
    )
    assert report["settings"]["method"] == method
    assert report["parent_quantisation"] == "fp32"
    root = materialise_bundle(out, tmp_path / "open")
    facts = inspect_bundle(root)
    assert facts.quantisation == quantisation
    assert facts.kind == "causal_lm_kv"
    assert run_selftest(root, facts=facts, **LIMITS)["passed"] is True
    scores = _scores(root)
    relative = np.abs(scores / fp32_scores - 1.0)
    assert relative.max() < tolerance, (scores, fp32_scores)
    # Quantised, not copied: the scores move a little.
    assert not np.allclose(scores, fp32_scores, rtol=1e-7, atol=0)


@pytest.mark.parametrize("method", ["dynamic-int8", "static-int8"])
def test_int8_weights_keep_to_seven_bits(parent, calibration, tmp_path, method):
    """``reduce_range``: full 8-bit weights saturate ONNX Runtime's int8
    kernel on processors without VNNI, so every derived weight is within
    +-64 (a pair sum of 2 x 255 x 64 fits in int16; 8-bit weights reach
    127), and the settings say so."""
    import onnx
    from onnx import numpy_helper

    out = tmp_path / "derived.zip"
    report = derive_bundle(
        parent,
        out,
        Derivation(method),
        calibration_path=calibration if method == "static-int8" else None,
        **LIMITS,
    )
    assert report["settings"]["reduce_range"] is True
    root = materialise_bundle(out, tmp_path / "open")
    model = onnx.load(str(root / inspect_bundle(root).model_file))
    weights = [
        numpy_helper.to_array(t)
        for t in model.graph.initializer
        if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2
    ]
    assert weights
    assert max(int(np.abs(w.astype(np.int16)).max()) for w in weights) <= 64


def test_static_calibration_reads_the_named_texts(parent, tmp_path):
    texts = tmp_path / "three.jsonl"
    texts.write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in TEXTS[:3])
        + json.dumps({"label": "no text here"})
        + "\n"
    )
    report = derive_bundle(
        parent,
        tmp_path / "d.zip",
        Derivation("static-int8"),
        calibration_path=texts,
        **LIMITS,
    )
    # One scoring feed per calibration text, none for the record without one.
    assert report["calibration_batches"] == 3
    assert calibration_texts(texts) == TEXTS[:3]


def test_static_calibration_without_texts_is_refused(parent, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"label": 1}) + "\n")
    with pytest.raises(EvaluationFailure) as caught:
        derive_bundle(
            parent,
            tmp_path / "d.zip",
            Derivation("static-int8"),
            calibration_path=empty,
            **LIMITS,
        )
    assert caught.value.code == "refused"
    assert caught.value.reason == "calibration_empty"
    assert not (tmp_path / "d.zip").exists()


def test_a_quantised_parent_is_refused(parent, tmp_path):
    first = tmp_path / "int8.zip"
    derive_bundle(parent, first, Derivation("dynamic-int8"), **LIMITS)
    with pytest.raises(EvaluationFailure) as caught:
        derive_bundle(first, tmp_path / "again.zip", Derivation("int4"), **LIMITS)
    assert caught.value.reason == "not_fp32"


def test_a_parent_that_is_not_onnx_is_refused_in_the_child(tmp_path):
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"<html>not a model</html>")
    with pytest.raises(EvaluationFailure) as caught:
        derive_bundle(fake, tmp_path / "d.zip", Derivation("dynamic-int8"), **LIMITS)
    assert caught.value.code == "refused"


def test_requests_are_checked_before_any_child_starts(parent, tmp_path):
    with pytest.raises(QuantiseError) as unknown:
        derive_bundle(parent, tmp_path / "d.zip", Derivation("fp8"), **LIMITS)
    assert unknown.value.code == "unknown_method"
    with pytest.raises(QuantiseError) as block:
        derive_bundle(parent, tmp_path / "d.zip", Derivation("int4", 48), **LIMITS)
    assert block.value.code == "bad_block_size"
    with pytest.raises(QuantiseError) as static:
        derive_bundle(parent, tmp_path / "d.zip", Derivation("static-int8"), **LIMITS)
    assert static.value.code == "calibration_required"


def test_the_derivation_is_held_to_its_time_limit(parent, tmp_path):
    with pytest.raises(EvaluationFailure) as caught:
        derive_bundle(
            parent,
            tmp_path / "d.zip",
            Derivation("dynamic-int8"),
            memory_bytes=LIMITS["memory_bytes"],
            timeout_s=0.05,
        )
    assert caught.value.code == "timeout"
    assert not (tmp_path / "d.zip").exists()
