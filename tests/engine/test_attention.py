"""The hand-written attention fusion (``engine.attention``) behind ``optimised``.

Each fused family gets one ``GroupQueryAttention`` per layer and scores a
right-padded batch and generates greedily through the KV cache exactly as
the unfused graph does; grouped-query models stay correct; an fp32 fused
graph quantises to int8 (dynamic) and int4 and still agrees with the
unfused graph quantised the same way; graphs without the pattern, or
malformed ones, come back ``not_fused`` and untouched.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

import modelgen
from engine.attention import FUSED_OP, fuse_attention
from engine.optimise import TOLERANCE, VERIFY_TEXTS, optimise_bundle, verify_fused
from engine.quantise import Derivation, calibration_feeds, quantise_graph
from engine.runtime import load_model
from tests.engine.test_families import FIXTURES

FUSED_FAMILIES = ("llama", "mistral", "qwen2")


def _config(root: Path) -> dict:
    return json.loads((root / "config.json").read_text())


@pytest.fixture(scope="module")
def gqa_bundle(tmp_path_factory) -> Path:
    """A modelgen Llama (Optimum layout): 8 heads over 2 kv heads of size 16."""
    tokenizer = modelgen.train_tokenizer(list(VERIFY_TEXTS) * 8, 300)
    cfg = modelgen.LMConfig(
        vocab_size=320,
        hidden_size=128,
        num_layers=3,
        num_heads=8,
        num_kv_heads=2,
        intermediate_size=128,
        max_position_embeddings=96,
    )
    model = modelgen.build_causal_lm(cfg, modelgen.init_weights(cfg, 3))
    root = tmp_path_factory.mktemp("gqa") / "bundle"
    return modelgen.write_bundle(root, model, tokenizer, cfg.to_hf_config())


def _fused(root: Path, tmp_path: Path) -> Path:
    report = optimise_bundle(root, tmp_path / "fused")
    layers = _config(root)["num_hidden_layers"]
    assert report["status"] == "fused", report
    assert report["fused_ops"][FUSED_OP] == layers
    assert report["attention"]["layers"] == layers
    graph = onnx.load(str(tmp_path / "fused" / "model.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count(FUSED_OP) == layers
    assert "Softmax" not in ops  # the whole attention went into the kernel
    return tmp_path / "fused"


def _prompts(model, count: int) -> list[list[int]]:
    texts = [*VERIFY_TEXTS, " ".join(VERIFY_TEXTS)]
    ids = [[t % model.vocab_size for t in model.encode(text)][:40] for text in texts]
    return [seq for seq in ids if seq][:count]


def _same_scores_and_generation(root: Path, fused: Path) -> None:
    original, candidate = load_model(root), load_model(fused)
    batch = _prompts(original, 6)  # unequal lengths: a right-padded batch
    assert len({len(s) for s in batch}) > 1
    for a, b in zip(original.logits(batch), candidate.logits(batch), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)
    for prompt in batch[:3]:
        expected = original.generate(prompt[:8], max_new_tokens=24, stop_ids=())
        assert len(expected) == 24
        assert candidate.generate(prompt[:8], max_new_tokens=24, stop_ids=()) == (
            expected
        )


@pytest.mark.parametrize("family", FUSED_FAMILIES)
def test_family_attention_fuses_and_scores_and_generates_alike(family, tmp_path):
    root = FIXTURES / family
    fused = _fused(root, tmp_path)
    _same_scores_and_generation(root, fused)
    before = len(onnx.load(str(root / "model.onnx")).graph.node)
    after = len(onnx.load(str(fused / "model.onnx")).graph.node)
    assert after < before / 4  # ~620 nodes become ~100 on these fixtures


def test_grouped_query_model_fuses_with_native_kv_heads(gqa_bundle, tmp_path):
    fused = _fused(gqa_bundle, tmp_path)
    node = next(
        n
        for n in onnx.load(str(fused / "model.onnx")).graph.node
        if n.op_type == FUSED_OP
    )
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert (attrs["num_heads"], attrs["kv_num_heads"], attrs["do_rotary"]) == (8, 2, 1)
    _same_scores_and_generation(gqa_bundle, fused)
    sequences = _prompts(load_model(gqa_bundle), 5)
    assert verify_fused(gqa_bundle, fused, sequences)["verified"]


@pytest.mark.parametrize("method", ["dynamic-int8", "static-int8", "int4"])
def test_a_fused_graph_quantises_and_agrees_with_the_unfused_quantised(
    gqa_bundle, tmp_path, method
):
    fused = _fused(gqa_bundle, tmp_path)
    quantised = {}
    for name, root in (("unfused", gqa_bundle), ("fused", fused)):
        dest = tmp_path / f"{name}-{method}"
        shutil.copytree(root, dest)
        (dest / "model.onnx").unlink()
        feeds = (
            calibration_feeds(root, list(VERIFY_TEXTS))
            if method == "static-int8"
            else None
        )
        quantise_graph(
            root / "model.onnx", dest / "model.onnx", Derivation(method), feeds=feeds
        )
        quantised[name] = dest
    ops = {
        n.op_type for n in onnx.load(str(quantised["fused"] / "model.onnx")).graph.node
    }
    assert FUSED_OP in ops and ops & {
        "MatMulInteger",
        "DynamicQuantizeMatMul",
        "MatMulNBits",
        "DequantizeLinear",
    }
    sequences = _prompts(load_model(gqa_bundle), 5)
    own = verify_fused(gqa_bundle, quantised["unfused"], sequences)
    if method != "int4":
        # engine.packing gives q, k and v (and gate and up) one packed weight,
        # so per-tensor int8 has one scale where the unfused graph has three:
        # not the same rounding, but no worse than the unfused graph's own.
        packed = verify_fused(gqa_bundle, quantised["fused"], sequences)
        assert packed["max_relative_diff"] < 1.5 * own["max_relative_diff"]
        return
    # int4 quantises each output column alone: both hold the same weights;
    # the activations' rounding (MatMulNBits' int8 accuracy level) turns the
    # fusion's ~1e-7 into more, yet far less than what quantisation moves.
    verdict = verify_fused(quantised["unfused"], quantised["fused"], sequences)
    assert verdict["max_relative_diff"] < own["max_relative_diff"] / 5, (verdict, own)
    unfused, candidate = (
        load_model(quantised["unfused"]),
        load_model(quantised["fused"]),
    )
    prompt = sequences[0][:8]
    assert candidate.generate(prompt, max_new_tokens=16, stop_ids=()) == (
        unfused.generate(prompt, max_new_tokens=16, stop_ids=())
    )


@pytest.mark.parametrize(
    ("family", "reason"),
    [
        ("gemma", "model type 'gemma'"),
        ("gpt2", "model type 'gpt2'"),
        ("stablelm", "model type 'stablelm'"),
    ],
)
def test_families_without_the_pattern_stay_unchanged(family, reason):
    model = onnx.load(str(FIXTURES / family / "model.onnx"))
    before = model.SerializeToString()
    report = fuse_attention(model, _config(FIXTURES / family))
    assert report["status"] == "not_fused" and reason in report["reason"]
    assert model.SerializeToString() == before


def test_a_graph_without_cache_or_with_small_heads_is_not_fused(tmp_path):
    tokenizer = modelgen.train_tokenizer(list(VERIFY_TEXTS) * 8, 300)
    for hidden, layout, reason in (
        (64, "plain", "no KV cache"),
        (64, "merged", "subgraphs"),
        (32, "optimum", "not a multiple of 16"),
    ):
        cfg = modelgen.LMConfig(vocab_size=320, hidden_size=hidden, num_heads=4)
        model = modelgen.build_causal_lm(
            cfg, modelgen.init_weights(cfg, 0), layout=layout
        )
        before = model.SerializeToString()
        report = fuse_attention(model, cfg.to_hf_config())
        assert report["status"] == "not_fused" and reason in report["reason"], report
        assert model.SerializeToString() == before
    root = modelgen.write_bundle(
        tmp_path / "plain", model, tokenizer, cfg.to_hf_config()
    )
    assert optimise_bundle(root, tmp_path / "out")["status"] == "not_fused"
    assert not (tmp_path / "out").exists()


def _break(model, how: str) -> None:
    graph = model.graph
    value = next(n for n in graph.node if n.output[0] == "present.0.value")
    if how == "softmax_gone":
        for node in graph.node:
            if node.op_type == "Softmax":
                node.op_type = "Relu"
    elif how == "dangling_value":
        value.input[1] = "nowhere"
    elif how == "empty_concat":
        del value.input[:]
    elif how == "cycle":  # layer 0's query reads layer 1's cache output
        query = next(n for n in graph.node if "layers.0/self_attn/q_proj" in n.name)
        query.input[0] = "present.1.value"


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("softmax_gone", "candidates for the Softmax"),
        ("dangling_value", "not a projection's heads"),
        ("empty_concat", "is not Concat"),
        ("cycle", "has a cycle"),
        ("bad_config", "inconsistent head counts"),
        ("huge_tables", "rotary tables larger"),
    ],
)
def test_a_malformed_graph_does_not_crash_the_pass(how, reason):
    model = onnx.load(str(FIXTURES / "llama" / "model.onnx"))
    _break(model, how)
    before = model.SerializeToString()
    config = _config(FIXTURES / "llama")
    if how == "bad_config":
        config = {**config, "num_attention_heads": 3, "head_dim": None}
    if how == "huge_tables":  # 2^18 positions x 8192/2: 4 GiB per table
        config = {**config, "max_position_embeddings": 1 << 18, "head_dim": 8192}
    report = fuse_attention(model, config)
    assert report["status"] == "not_fused" and reason in report["reason"], report
    assert model.SerializeToString() == before


def test_optimised_derivation_keeps_the_tolerance_on_a_fused_family(tmp_path):
    fused = _fused(FIXTURES / "llama", tmp_path)
    reference = json.loads((FIXTURES / "llama" / "reference.json").read_text())
    sequences = [text["token_ids"] for text in reference["texts"]]
    verdict = verify_fused(FIXTURES / "llama", fused, sequences)
    assert 0 < verdict["max_relative_diff"] <= TOLERANCE
