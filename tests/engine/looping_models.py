"""Models whose graph never ends: an ONNX ``Loop`` with a huge trip count.

Used by the B5/B10/B11 tests: a text classifier and a tensor model that
look ordinary to the bundle validator but spin forever once run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

TRIP_COUNT = 2**62


def add_endless_loop(model: onnx.ModelProto, output: str) -> onnx.ModelProto:
    """Make graph output ``output`` wait for a Loop of ``TRIP_COUNT`` iterations."""
    graph = model.graph
    raw = f"{output}_before_loop"
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == output:
                node.output[i] = raw
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node(
                "Constant", [], ["zero"], value=numpy_helper.from_array(
                    np.array(0.0, dtype=np.float32)
                ),
            ),
            helper.make_node("Add", ["s_in", "zero"], ["s_out"]),
        ],
        "spin",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("s_in", TensorProto.FLOAT, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("s_out", TensorProto.FLOAT, []),
        ],
    )  # fmt: skip
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(TRIP_COUNT, dtype=np.int64), "spin_m"),
            numpy_helper.from_array(np.array(True), "spin_cond"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "spin_s0"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node(
                "Loop", ["spin_m", "spin_cond", "spin_s0"], ["spin_s"], body=body
            ),
            helper.make_node("Add", [raw, "spin_s"], [output]),
        ]
    )
    onnx.checker.check_model(model)
    return model


def looping_tensor_model_bytes() -> bytes:
    """A generic model ``y = x + W`` whose ``y`` waits for an endless Loop."""
    weight = helper.make_tensor("W", TensorProto.FLOAT, [2], [1.0, 2.0])
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "W"], ["y"])],
        "tiny_spin",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return add_endless_loop(model, "y").SerializeToString()


def write_looping_classifier(dest: Path, tokenizer, *, dim: int = 8) -> Path:
    """A two-label ``seq_classifier`` bundle whose logits wait for an endless Loop."""
    from modelgen.graphs import build_classifier, classifier_config, write_bundle

    rng = np.random.default_rng(0)
    vocab = tokenizer.get_vocab_size()
    model = build_classifier(
        rng.normal(size=(vocab, dim)).astype(np.float32),
        rng.normal(size=(dim, 2)).astype(np.float32),
        np.zeros(2, dtype=np.float32),
    )
    config = classifier_config(vocab_size=vocab, hidden_size=dim, labels=["no", "yes"])
    return Path(
        write_bundle(dest, add_endless_loop(model, "logits"), tokenizer, config)
    )
