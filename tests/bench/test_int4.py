"""``bench/int4.py``: genai's int4 graph holds the engine derivation's weights."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
from onnx import numpy_helper

import modelgen
from bench.baselines import ensure_quantised, workload
from bench.int4 import ensure_genai_int4
from engine.runtime import load_model
from engine.session import RuntimeSettings

TEXTS = ["The council collects garden waste every second week from April."] * 4


def _bundles(tmp_path):
    cfg = modelgen.LMConfig(vocab_size=320, hidden_size=64, intermediate_size=128)
    weights = modelgen.init_weights(cfg, 0)
    tokenizer = modelgen.train_tokenizer(TEXTS, 300)
    optimum = modelgen.write_lm_bundle(tmp_path / "m", cfg, weights, tokenizer)
    genai = modelgen.write_lm_bundle(
        tmp_path / "m-genai", cfg, weights, tokenizer, layout="genai_gqa"
    )
    int4 = ensure_quantised(optimum, "int4")
    return cfg, int4, ensure_genai_int4(int4, genai)


def _packed(path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path / "model.onnx"))
    names = {
        name
        for node in model.graph.node
        if node.op_type == "MatMulNBits"
        for name in node.input[1:]
    }
    return {
        t.name: numpy_helper.to_array(t)
        for t in model.graph.initializer
        if t.name in names
    }


def _fp32_compute(bundle, dest):
    """A copy whose ``MatMulNBits`` compute in float (``accuracy_level`` 0)."""
    shutil.copytree(bundle, dest)
    model = onnx.load(str(dest / "model.onnx"))
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.name == "accuracy_level":
                attribute.i = 0
    onnx.save_model(model, str(dest / "model.onnx"))
    return dest


def test_genai_int4_graph_carries_the_engine_derivations_packed_weights(tmp_path):
    cfg, int4, genai_int4 = _bundles(tmp_path)
    ours, theirs = _packed(int4), _packed(genai_int4)
    # 7 projections per layer and the head, each with its packed blocks and scales.
    assert len(ours) == 2 * (7 * cfg.num_layers + 1)
    # genai packs q, k and v into one qkv_proj: the engine's bytes side by side.
    assert len(theirs) == 2 * (5 * cfg.num_layers + 1)
    for name, value in theirs.items():
        parts = [name.replace("qkv_proj", f"{p}_proj") for p in "qkv"]
        if "qkv_proj" not in name:
            np.testing.assert_array_equal(value, ours[name])
            continue
        np.testing.assert_array_equal(value, np.concatenate([ours[p] for p in parts]))
    graph = onnx.load(str(genai_int4 / "model.onnx")).graph
    assert "GroupQueryAttention" in {n.op_type for n in graph.node}
    assert not [n for n in graph.node if n.op_type == "MatMul" and "proj" in n.input[1]]
    assert ensure_genai_int4(int4, tmp_path / "m-genai") == genai_int4  # cached


def test_both_int4_graphs_compute_the_same_logits_and_tokens(tmp_path):
    """With float compute, the two layouts differ only in rounding."""
    _, int4, genai_int4 = _bundles(tmp_path)
    settings = RuntimeSettings(intra_op_threads=1)
    a = load_model(_fp32_compute(int4, tmp_path / "a"), settings=settings)
    b = load_model(_fp32_compute(genai_int4, tmp_path / "b"), settings=settings)
    prompt = workload(a.vocab_size)["prompt"]
    diff = np.abs(a.logits([prompt])[0] - b.logits([prompt])[0]).max()
    assert diff < 1e-4
    new = {"max_new_tokens": 16, "stop_ids": ()}
    assert a.generate(prompt, **new) == b.generate(prompt, **new)
