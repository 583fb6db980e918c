"""engine.compare on generated models: each class, streaming, the sandbox."""

from __future__ import annotations

import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

import modelgen
from engine.compare import (
    CompareFailure,
    classify,
    compare_bundles,
    run_compare,
)

TEXTS = [
    "The library opens at nine and closes at six on weekdays.",
    "Apply for a parking permit online or at the town hall.",
    "Household waste is collected every Tuesday morning.",
    "You can renew your passport at the civil registry office.",
] * 8
OTHER_TEXTS = [
    "Swimming pool lessons start in September for every age group.",
    "Report a broken street light with the form on the website.",
] * 16


def _cfg(**overrides) -> modelgen.LMConfig:
    values = dict(
        vocab_size=320,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return modelgen.LMConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """A base LM and one derived bundle per modification class."""
    from modelgen.derive import quantise

    root = tmp_path_factory.mktemp("compare")
    tokenizer = modelgen.train_tokenizer(TEXTS, 300)
    cfg = _cfg()
    weights = modelgen.init_weights(cfg, 0)
    rng = np.random.default_rng(1)
    tuned = {
        name: (w + 0.01 * rng.standard_normal(w.shape)).astype(w.dtype)
        for name, w in weights.items()
    }
    deeper = _cfg(num_layers=3)
    out = {
        "base": modelgen.write_lm_bundle(root / "base", cfg, weights, tokenizer),
        "fine_tune": modelgen.write_lm_bundle(root / "ft", cfg, tuned, tokenizer),
        "architecture": modelgen.write_lm_bundle(
            root / "deeper", deeper, modelgen.init_weights(deeper, 0), tokenizer
        ),
        "tokenizer": modelgen.write_lm_bundle(
            root / "tok", cfg, weights, modelgen.train_tokenizer(OTHER_TEXTS, 300)
        ),
    }
    out["quantised"] = quantise(out["base"], root / "int8")
    shutil.copytree(out["base"], root / "copy")
    out["copy"] = root / "copy"
    return out


def _initializers(bundle: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(bundle / "model.onnx"))
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_a_fine_tune_is_classed_so_and_each_relative_change_matches_numpy(bundles):
    report = compare_bundles(bundles["base"], bundles["fine_tune"])
    assert report["classes"] == ["fine_tune"]
    assert report["primary"] == "fine_tune"
    base, tuned = _initializers(bundles["base"]), _initializers(bundles["fine_tune"])
    rows = {row["name"]: row for row in report["weights"]["tensors"]}
    assert set(rows) == set(base) == set(tuned)
    for name, a in base.items():
        a64, b64 = a.astype(np.float64), tuned[name].astype(np.float64)
        norm, diff = np.linalg.norm(a64), np.linalg.norm(a64 - b64)
        expected = diff / norm if norm else 0.0  # graph constants stay zero
        assert rows[name]["relative_change"] == pytest.approx(expected, rel=1e-9)
    assert report["weights"]["max_relative_change"] == pytest.approx(
        max(r["relative_change"] for r in rows.values())
    )
    assert report["graph"]["ops_added"] == report["graph"]["ops_removed"] == {}
    assert report["tokenizer"]["changed"] is False


def test_dynamic_int8_quantisation_is_classed_quantisation_with_its_error(bundles):
    report = compare_bundles(bundles["base"], bundles["quantised"])
    assert report["classes"] == ["quantisation"]
    weights = report["weights"]
    assert weights["tensors_dequantised"] > 0
    assert weights["unmatched_base"] == weights["unmatched_derived"] == []
    # Dequantise one replaced tensor independently and compare.
    base, derived = _initializers(bundles["base"]), _initializers(bundles["quantised"])
    row = next(r for r in weights["tensors"] if r["matched_by"] == "dequantised")
    name = row["name"]
    q = derived[f"{name}_quantized"].astype(np.float64)
    scale = derived[f"{name}_scale"].astype(np.float64)
    zero = derived[f"{name}_zero_point"].astype(np.float64)
    restored = (q - zero) * scale
    a = base[name].astype(np.float64)
    expected = np.linalg.norm(a - restored) / np.linalg.norm(a)
    assert row["relative_change"] == pytest.approx(expected, rel=1e-9)
    assert 0 < weights["max_relative_change"] < 0.05  # int8 keeps the weights close


def test_more_layers_is_an_architecture_change(bundles):
    report = compare_bundles(bundles["base"], bundles["architecture"])
    assert report["primary"] == "architecture_change"
    assert report["weights"]["unmatched_derived"]  # the third layer's weights
    assert report["graph"]["signature_changed"]  # one more past_key_values pair
    assert report["graph"]["ops_added"]


def test_a_new_tokenizer_with_the_same_weights_is_only_a_tokenizer_change(bundles):
    report = compare_bundles(bundles["base"], bundles["tokenizer"])
    assert report["classes"] == ["tokenizer_change"]
    assert report["tokenizer"]["changed"]
    assert report["tokenizer"]["tokens_added"] > 0
    assert report["weights"]["max_relative_change"] == 0.0


def test_a_copy_is_unchanged(bundles):
    report = compare_bundles(bundles["base"], bundles["copy"])
    assert report["classes"] == ["unchanged"]
    assert report["weights"]["overall_relative_change"] == 0.0


def test_precedence_puts_the_most_substantial_class_first():
    report = {
        "graph": {
            "signature_changed": False,
            "ops_added": {"ai.onnx:Relu": 1},
            "ops_removed": {},
            "facts": {"quantisation": ["fp32", "int8"]},
        },
        "weights": {
            "shape_changes": [],
            "unmatched_base": [],
            "unmatched_derived": [],
            "tensors_dequantised": 3,
            "values_changed_by_name": 2,
        },
        "tokenizer": {"changed": True},
    }
    result = classify(report)
    assert result["classes"] == [
        "architecture_change",
        "tokenizer_change",
        "quantisation",
        "fine_tune",
    ]
    assert result["primary"] == "architecture_change"


def test_the_sandboxed_comparison_gives_the_same_report(bundles):
    direct = compare_bundles(bundles["base"], bundles["quantised"])
    confined = run_compare(
        bundles["base"], bundles["quantised"], memory_bytes=2 << 30, timeout_s=120
    )
    assert confined["classes"] == direct["classes"]
    assert confined["weights"]["max_relative_change"] == pytest.approx(
        direct["weights"]["max_relative_change"]
    )


def test_a_hostile_bundle_is_refused_before_any_weight_is_read(bundles, tmp_path):
    hostile = tmp_path / "hostile"
    shutil.copytree(bundles["base"], hostile)
    model = onnx.load(str(hostile / "model.onnx"))
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    del tensor.external_data[:]
    tensor.external_data.add(key="location", value="../../../../etc/passwd")
    onnx.save(model, str(hostile / "model.onnx"))
    with pytest.raises(CompareFailure) as refused:
        run_compare(bundles["base"], hostile, memory_bytes=2 << 30, timeout_s=120)
    assert refused.value.code == "external_data_outside"


# --- streaming: two ~100 MB models, memory bounded ---------------------------

SIDE = 2500  # a 2500 x 2500 float32 matrix is 25 MB
LAYERS = 4


def _reference_changes(base: Path, derived: Path) -> dict[str, float]:
    """Relative change per tensor with NumPy, one whole tensor at a time."""
    count = SIDE * SIDE
    changes = {}
    for layer in range(LAYERS):
        a = np.fromfile(
            base / "weights.bin", np.float32, count, offset=layer * count * 4
        )
        b = np.fromfile(
            derived / "weights.bin", np.float32, count, offset=layer * count * 4
        )
        a64 = a.astype(np.float64)
        changes[f"w{layer}"] = float(
            np.linalg.norm(a64 - b.astype(np.float64)) / np.linalg.norm(a64)
        )
    return changes


@pytest.mark.slow
def test_two_100_mb_models_are_compared_with_bounded_memory(tmp_path):
    from modelgen.derive import write_matmul_chain

    base = write_matmul_chain(tmp_path / "base", layers=LAYERS, side=SIDE)
    derived = write_matmul_chain(
        tmp_path / "derived", layers=LAYERS, side=SIDE, noise=0.02, seed=100
    )
    model_bytes = (base / "weights.bin").stat().st_size
    assert model_bytes >= 100_000_000
    tracemalloc.start()
    try:
        report = compare_bundles(base, derived)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < model_bytes / 5, f"peak {peak} bytes for a {model_bytes} B model"
    assert report["classes"] == ["fine_tune"]
    rows = {r["name"]: r["relative_change"] for r in report["weights"]["tensors"]}
    for name, expected in _reference_changes(base, derived).items():
        assert rows[name] == pytest.approx(expected, rel=1e-9)


def test_int4_block_quantisation_in_place_is_quantisation(tmp_path):
    """MatMulNBits keeps a weight's name with a packed shape: not a new shape."""
    tokenizer = modelgen.train_tokenizer(TEXTS, 300)
    cfg = _cfg(hidden_size=64)
    weights = modelgen.init_weights(cfg, 0)
    base = modelgen.write_lm_bundle(
        tmp_path / "gqa", cfg, weights, tokenizer, layout="genai_gqa"
    )
    int4 = modelgen.write_lm_bundle(
        tmp_path / "int4", cfg, weights, tokenizer, layout="genai_int4"
    )
    report = compare_bundles(base, int4)
    assert report["classes"] == ["quantisation"]
    # qkv_proj (the genai builder packs q, k, v), o_proj, gate, up, down
    assert report["weights"]["tensors_packed"] == 5 * cfg.num_layers
    assert report["weights"]["unmatched_derived"] == []  # the scales are not weights
    assert report["weights"]["shape_changes"] == []


def test_per_channel_quantisation_is_dequantised_along_its_channels(bundles, tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    per_channel = tmp_path / "per-channel"
    shutil.copytree(bundles["base"], per_channel)
    quantize_dynamic(
        bundles["base"] / "model.onnx",
        per_channel / "model.onnx",
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    report = compare_bundles(bundles["base"], per_channel)
    per_tensor = compare_bundles(bundles["base"], bundles["quantised"])
    assert report["classes"] == ["quantisation"]
    # A wrong channel axis would scale rows by other columns' scales.
    assert 0 < report["weights"]["max_relative_change"] < 0.05
    assert (
        report["weights"]["overall_relative_change"]
        <= per_tensor["weights"]["overall_relative_change"]
    )
