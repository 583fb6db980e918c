"""Pack sibling weight ``MatMul`` nodes into one, after ``engine.attention``.

A batch-1 decode step is a string of small matrix-vector products, and each
kernel launch costs a dispatch over the thread pool; onnxruntime-genai's
model builder therefore packs the query, key and value projections into one
``MatMul`` that feeds ``GroupQueryAttention``'s packed input (its default on
CPU, fp32 and int4). ONNX Runtime's transformer optimiser packs Q/K/V only
inside its own ``Attention`` operator, which these graphs do not use, so
this pass is written by hand. Two rewrites, in this order:

``qkv``
    Each ``GroupQueryAttention`` whose query, key and value are projections
    of one tensor (``x @ W``, or ``x @ W + b`` as in Qwen2, every weight and
    bias an initializer) reads one ``MatMul`` over the weights concatenated
    along N in the order q, k, v (the builder's ``make_packed_matmul``),
    plus one ``Add`` of the concatenated biases; its key and value inputs
    become empty, which is the kernel's packed mode.
``siblings``
    Weight ``MatMul`` nodes that read the same tensor (the gate and up
    projections of a SwiGLU MLP) become one ``MatMul`` and a ``Split`` along
    the last axis whose outputs keep the original names.

Blockwise int4 (``MatMulNBits``) quantises each output column on its own,
so quantising a packed weight gives the bytes of the separate ones side by
side; per-tensor dynamic int8 does not (one scale over the packed weight).

Anchored and conservative like ``engine.attention``: a kernel whose inputs
do not match (a projection read elsewhere, weights of unequal type or
width, bias on some projections only) leaves the whole graph untouched and
the report says why. The caller still verifies log-likelihoods against the
unpacked graph (``engine.optimise.verify_fused``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.attention import FUSED_OP as _KERNEL
from engine.attention import GraphIndex

_FLOAT_TYPES = frozenset({1, 10, 11, 16})  # float, float16, double, bfloat16


class NotPackable(Exception):
    """The graph differs from the pattern; the message says where."""


class _Graph(GraphIndex):
    """Producers, consumers and initializers of a graph, and the edits made."""

    def __init__(self, graph) -> None:
        super().__init__(graph)
        self.initializers = {t.name: t for t in graph.initializer}
        self.outputs = {o.name for o in graph.output}
        self.position = {id(n): k for k, n in enumerate(graph.node)}
        self.removed: set[int] = set()  # id() of nodes to drop
        self.packed_query: dict[int, str] = {}  # id() of a kernel -> its query
        self.inserted: dict[int, list] = {}  # id() of a node -> nodes before it
        self.new_initializers: list = []

    def only_reader(self, tensor: str, reader) -> bool:
        """Whether ``reader`` is the one node reading ``tensor`` (no output)."""
        readers = self.consumers.get(tensor, [])
        return tensor not in self.outputs and readers == [reader]

    def weight(self, name: str):
        """The float initializer ``name`` as an array, or ``None``."""
        from onnx import numpy_helper

        tensor = self.initializers.get(name)
        if tensor is None or tensor.data_type not in _FLOAT_TYPES:
            return None
        return numpy_helper.to_array(tensor)

    def add_initializer(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.new_initializers.append(numpy_helper.from_array(array, name))
        return name

    def apply(self) -> None:
        """Rebuild the node list with the edits; drop initializers now unused."""
        nodes = []
        for node in self.graph.node:
            nodes.extend(self.inserted.get(id(node), []))
            if id(node) not in self.removed:
                nodes.append(node)
        copies = [type(node)() for node in nodes]
        for copy, node in zip(copies, nodes, strict=True):
            copy.CopyFrom(node)
            if id(node) in self.packed_query:
                copy.input[0], copy.input[1], copy.input[2] = (
                    self.packed_query[id(node)],
                    "",
                    "",
                )
        del self.graph.node[:]
        self.graph.node.extend(copies)
        self.graph.initializer.extend(self.new_initializers)
        read = {name for node in copies for name in node.input}
        read |= self.outputs
        for position in reversed(range(len(self.graph.initializer))):
            if self.graph.initializer[position].name not in read:
                del self.graph.initializer[position]


def _projection(g: _Graph, tensor: str, kernel) -> tuple:
    """``(matmul, bias Add or None, weight, bias or None)`` making ``tensor``."""
    node = g.producer.get(tensor)
    add, bias = None, None
    if node is not None and node.op_type == "Add":
        if not g.only_reader(tensor, kernel):
            raise NotPackable(f"{tensor} is read by more than the attention")
        constants = [i for i in node.input if g.weight(i) is not None]
        others = [i for i in node.input if i not in constants]
        if len(constants) != 1 or len(others) != 1:
            raise NotPackable(f"{tensor} is an Add, not a projection plus a bias")
        add, bias = node, g.weight(constants[0])
        kernel, tensor = node, others[0]
        node = g.producer.get(tensor)
    is_matmul = node is not None and node.op_type == "MatMul"
    weight = g.weight(node.input[1]) if is_matmul else None
    if weight is None or weight.ndim != 2 or g.weight(node.input[0]) is not None:
        raise NotPackable(f"{tensor} is not a MatMul by a constant weight")
    if not g.only_reader(tensor, kernel):
        raise NotPackable(f"{tensor} is read by more than the attention")
    if bias is not None and bias.shape != (weight.shape[1],):
        raise NotPackable(f"the bias on {tensor} is not one value per column")
    return node, add, weight, bias


def _pack_kernel(g: _Graph, kernel, n: int) -> None:
    """Plan the packed projection of one ``GroupQueryAttention``."""
    from onnx import helper

    if len(kernel.input) < 3 or not all(kernel.input[:3]):
        raise NotPackable(f"{kernel.name or _KERNEL} already reads packed Q/K/V")
    parts = [_projection(g, t, kernel) for t in kernel.input[:3]]
    matmuls = [p[0] for p in parts]
    weights = [p[2] for p in parts]
    biases = [p[3] for p in parts]
    if len({m.input[0] for m in matmuls}) != 1:
        raise NotPackable(f"the projections of attention {n} read different inputs")
    if len({(w.shape[0], w.dtype) for w in weights}) != 1:
        raise NotPackable(f"the weights of attention {n} differ in rows or type")
    attrs = {a.name: helper.get_attribute_value(a) for a in kernel.attribute}
    heads, kv_heads = attrs.get("num_heads"), attrs.get("kv_num_heads")
    q, k, v = (w.shape[1] for w in weights)
    if not heads or not kv_heads or q % heads or k != v or k * heads != q * kv_heads:
        raise NotPackable(f"the widths of attention {n} do not match its heads")
    if len({b is None for b in biases}) != 1:
        raise NotPackable(f"attention {n} has a bias on some projections only")
    p = f"packing/qkv.{n}"
    out = p + "/MatMul_output"
    weight = g.add_initializer(p + ".weight", np.concatenate(weights, axis=1))
    new = [helper.make_node("MatMul", [matmuls[0].input[0], weight], [out], name=p)]
    if biases[0] is not None:
        bias = g.add_initializer(p + ".bias", np.concatenate(biases))
        new.append(helper.make_node("Add", [out, bias], [p + "/Add_output"]))
        out = p + "/Add_output"
    first = min(matmuls, key=lambda m: g.position[id(m)])
    g.inserted[id(first)] = new
    g.removed.update(id(x) for part in parts for x in part[:2] if x is not None)
    g.packed_query[id(kernel)] = out


def _sibling_groups(g: _Graph) -> list[list]:
    """Weight ``MatMul`` nodes still in the graph, grouped by the tensor read."""
    groups: dict[str, list] = {}
    for node in g.graph.node:
        if node.op_type != "MatMul" or id(node) in g.removed or node.domain:
            continue
        weight = g.initializers.get(node.input[1])
        if weight is None or len(weight.dims) != 2 or node.input[0] in g.initializers:
            continue
        if weight.data_type in _FLOAT_TYPES:
            groups.setdefault(node.input[0], []).append(node)
    return [nodes for nodes in groups.values() if len(nodes) > 1]


def _pack_siblings(g: _Graph, nodes: list, n: int, opset: int) -> bool:
    """Plan one ``MatMul`` + ``Split`` for ``nodes``; False when they differ."""
    from onnx import helper

    weights = [g.weight(node.input[1]) for node in nodes]
    names = {node.input[1] for node in nodes}
    if len({(w.shape[0], w.dtype) for w in weights}) != 1 or len(names) != len(nodes):
        return False  # unequal rows or types, or one weight read twice
    p = f"packing/siblings.{n}"
    weight = g.add_initializer(p + ".weight", np.concatenate(weights, axis=1))
    widths = np.array([w.shape[1] for w in weights], dtype=np.int64)
    split_inputs = [p + "/MatMul_output"]
    attrs: dict[str, Any] = {"axis": -1}
    if opset >= 13:  # ``split`` became an input in opset 13
        split_inputs.append(g.add_initializer(p + ".split", widths))
    else:
        attrs["split"] = widths.tolist()
    outputs = [node.output[0] for node in nodes]
    g.inserted[id(nodes[0])] = [
        helper.make_node(
            "MatMul", [nodes[0].input[0], weight], split_inputs[:1], name=p
        ),
        helper.make_node("Split", split_inputs, outputs, name=p + "/Split", **attrs),
    ]
    g.removed.update(id(node) for node in nodes)
    return True


def _matmuls(graph) -> int:
    return sum(n.op_type in ("MatMul", "MatMulNBits") for n in graph.node)


def pack_projections(model) -> dict[str, Any]:
    """Pack ``model``'s projections in place (see the module docstring).

    Returns ``{"status": "packed", "qkv": kernels packed, "siblings": groups
    packed, "matmuls_before", "matmuls_after"}``; ``{"status":
    "not_packed", "reason"}`` with ``model`` unchanged when nothing matched
    or a ``GroupQueryAttention`` is not the pattern.
    """
    graph = model.graph
    opset = next(
        (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0
    )
    before = _matmuls(graph)
    try:
        if any(a.g.node or a.graphs for n in graph.node for a in n.attribute):
            raise NotPackable("the graph has subgraphs (If, Loop, Scan)")
        g = _Graph(graph)
        kernels = [n for n in graph.node if n.op_type == _KERNEL]
        for k, kernel in enumerate(kernels):
            _pack_kernel(g, kernel, k)
        groups = _sibling_groups(g)
        packed = sum(
            _pack_siblings(g, nodes, k, opset) for k, nodes in enumerate(groups)
        )
    except NotPackable as reason:
        return {"status": "not_packed", "reason": str(reason)}
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as error:
        return {"status": "not_packed", "reason": f"malformed graph ({error!r})"}
    if not kernels and not packed:
        return {"status": "not_packed", "reason": "no projections read the same tensor"}
    g.apply()
    return {
        "status": "packed",
        "qkv": len(kernels),
        "siblings": packed,
        "matmuls_before": before,
        "matmuls_after": _matmuls(graph),
    }
