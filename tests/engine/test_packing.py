"""Packed projections (``engine.packing``) behind the ``optimised`` graph.

On the ten family fixtures the packed graph (alone, or after the attention
fusion as ``optimise_bundle`` runs it) scores like the unpacked one within
1e-4 relative; each ``GroupQueryAttention`` reads one packed projection
(with one packed bias in Qwen2); the int4 derivation of a packed graph puts
the very bytes of the unpacked derivation side by side in one
``MatMulNBits``, and dynamic int8 still derives and self-tests; graphs that
differ from the pattern come back untouched with the reason.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from engine.attention import FUSED_OP, fuse_attention
from engine.optimise import TOLERANCE, optimise_bundle, verify_fused
from engine.packing import pack_projections
from engine.quantise import Derivation, quantise_graph
from engine.runtime import load_model
from tests.engine.test_attention import FUSED_FAMILIES, _config, gqa_bundle
from tests.engine.test_families import FAMILIES, FIXTURES

__all__ = ["gqa_bundle"]  # the fixture, shared with test_attention


def _sequences(root: Path) -> list[list[int]]:
    reference = json.loads((root / "reference.json").read_text())
    return [text["token_ids"] for text in reference["texts"]]


def _bundle_with(root: Path, model, dest: Path) -> Path:
    shutil.copytree(root, dest)
    onnx.save_model(model, str(dest / "model.onnx"))
    return dest


def _op_count(model, op_type: str) -> int:
    return sum(n.op_type == op_type for n in model.graph.node)


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_siblings_score_like_the_unpacked_graph(family, tmp_path):
    """Without the attention fusion: q/k/v and gate/up become MatMul + Split."""
    root = FIXTURES / family
    model = onnx.load(str(root / "model.onnx"))
    before = _op_count(model, "MatMul")
    report = pack_projections(model)
    if report["status"] == "not_packed":  # gpt2: c_attn is packed already
        assert "no projections" in report["reason"], report
        return
    assert report["qkv"] == 0 and report["siblings"] >= 1, report
    assert _op_count(model, "Split") >= report["siblings"]
    assert _op_count(model, "MatMul") == report["matmuls_after"] < before
    onnx.checker.check_model(model)
    packed = _bundle_with(root, model, tmp_path / "packed")
    verdict = verify_fused(root, packed, _sequences(root))
    assert verdict["verified"] and verdict["max_relative_diff"] <= TOLERANCE, verdict


@pytest.mark.parametrize("family", FUSED_FAMILIES)
def test_each_attention_reads_one_packed_projection(family, tmp_path):
    root = FIXTURES / family
    layers = _config(root)["num_hidden_layers"]
    report = optimise_bundle(root, tmp_path / "fused")
    assert report["packing"]["status"] == "packed", report
    assert report["packing"]["qkv"] == layers
    assert report["packing"]["siblings"] == layers  # gate and up
    assert report["packing"]["matmuls_before"] - report["packing"]["matmuls_after"] == (
        3 * layers
    )
    graph = onnx.load(str(tmp_path / "fused" / "model.onnx")).graph
    weights = {t.name: t for t in graph.initializer}
    for node in (n for n in graph.node if n.op_type == FUSED_OP):
        assert node.input[0] and not node.input[1] and not node.input[2]
        producer = next(n for n in graph.node if node.input[0] in n.output)
        if family == "qwen2":  # its q, k and v carry biases: one packed Add
            assert producer.op_type == "Add"
            assert any(weights[i].dims[0] > 0 for i in producer.input if i in weights)
            continue
        assert producer.op_type == "MatMul"
        config = _config(root)
        d = config["hidden_size"] // config["num_attention_heads"]
        width = d * (config["num_attention_heads"] + 2 * config["num_key_value_heads"])
        assert list(weights[producer.input[1]].dims) == [config["hidden_size"], width]
    verdict = verify_fused(root, tmp_path / "fused", _sequences(root))
    assert verdict["verified"], verdict


def _quantised(root: Path, dest: Path, method: str) -> Path:
    shutil.copytree(root, dest)
    (dest / "model.onnx").unlink()
    quantise_graph(
        root / "model.onnx", dest / "model.onnx", Derivation(method), feeds=None
    )
    return dest


def _nbits(root: Path) -> tuple[list, dict[str, np.ndarray]]:
    model = onnx.load(str(root / "model.onnx"))
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "MatMulNBits"], arrays


def test_int4_of_a_packed_graph_holds_the_unpacked_bytes_side_by_side(tmp_path):
    root = FIXTURES / "llama"
    fused = tmp_path / "fused"
    assert optimise_bundle(root, fused)["packing"]["qkv"] > 0
    int4 = _quantised(fused, tmp_path / "fused-int4", "int4")
    # The same graph with the attention fused but nothing packed, quantised.
    model = onnx.load(str(root / "model.onnx"))
    assert fuse_attention(model, _config(root))["status"] == "fused"
    unpacked = _quantised(
        _bundle_with(root, model, tmp_path / "unpacked"), tmp_path / "u-int4", "int4"
    )
    nodes, arrays = _nbits(int4)
    theirs_nodes, theirs = _nbits(unpacked)
    gqa = [
        n
        for n in onnx.load(str(int4 / "model.onnx")).graph.node
        if n.op_type == FUSED_OP
    ]
    for kernel in gqa:
        packed = next(n for n in nodes if kernel.input[0] in n.output)
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in packed.attribute}
        parts = [n for n in theirs_nodes if n.input[0] == packed.input[0]]
        assert len(parts) == 3  # q, k, v of the unpacked derivation
        part_n = [next(a.i for a in n.attribute if a.name == "N") for n in parts]
        assert attrs["N"] == sum(part_n)
        for k in (1, 2):  # the packed blocks, then the scales
            np.testing.assert_array_equal(
                arrays[packed.input[k]],
                np.concatenate([theirs[n.input[k]] for n in parts]),
            )
    lm = load_model(int4)
    assert lm.selftest()["passed"]
    verdict = verify_fused(unpacked, int4, _sequences(root))
    own = verify_fused(root, unpacked, _sequences(root))
    assert verdict["max_relative_diff"] < own["max_relative_diff"] / 5, (verdict, own)


def test_dynamic_int8_of_a_packed_graph_derives_and_self_tests(gqa_bundle, tmp_path):
    # The modelgen Llama: the family fixtures' random weights fail the int8
    # self-test packed or not (their KV-cache difference passes the bound).
    report = optimise_bundle(gqa_bundle, tmp_path / "fused")
    assert report["packing"]["qkv"] == 3
    int8 = _quantised(tmp_path / "fused", tmp_path / "int8", "dynamic-int8")
    model = onnx.load(str(int8 / "model.onnx"))
    assert (
        _op_count(model, "MatMulInteger") + _op_count(model, "DynamicQuantizeMatMul")
        > 0
    )
    assert FUSED_OP in {n.op_type for n in model.graph.node}
    assert load_model(int8).selftest()["passed"]


def _break(model, how: str) -> None:
    graph = model.graph
    kernel = next(n for n in graph.node if n.op_type == FUSED_OP)
    if how == "key_read_elsewhere":
        graph.node.append(onnx.helper.make_node("Identity", [kernel.input[1]], ["k"]))
        graph.output.append(onnx.helper.make_tensor_value_info("k", 1, None))
    elif how == "key_not_projection":
        graph.node.append(onnx.helper.make_node("Relu", [kernel.input[1]], ["relu"]))
        kernel.input[1] = "relu"
    elif how == "query_negated":
        graph.node.append(onnx.helper.make_node("Neg", [kernel.input[0]], ["q"]))
        kernel.input[0] = "q"
    elif how == "already_packed":
        kernel.input[1] = ""


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("key_read_elsewhere", "read by more than the attention"),
        ("key_not_projection", "not a MatMul by a constant weight"),
        ("query_negated", "not a MatMul by a constant weight"),
        ("already_packed", "already reads packed"),
    ],
)
def test_an_unexpected_attention_leaves_the_graph_untouched(how, reason):
    model = onnx.load(str(FIXTURES / "llama" / "model.onnx"))
    assert fuse_attention(model, _config(FIXTURES / "llama"))["status"] == "fused"
    _break(model, how)
    before = model.SerializeToString()
    report = pack_projections(model)
    assert report["status"] == "not_packed" and reason in report["reason"], report
    assert model.SerializeToString() == before
