"""Fuse each layer's attention of a Llama-shaped causal LM into one kernel.

ONNX Runtime's transformer optimiser does not fuse the attention that
Optimum-style exports write with standard operators (projections, rotary
written out, repeat of the key/value heads, mask + ``Softmax``, the cache
grown by ``Concat``): on these graphs it reports nothing for attention, and a
decode step then runs some 450 small nodes where onnxruntime-genai's graph
runs about 200. This pass, written by hand for that reason, replaces each
layer's subgraph by one ``com.microsoft`` ``GroupQueryAttention``:

* its query, key and value are the three projection outputs (``[B, S,
  heads * D]``, before rotary); rotary runs inside the kernel
  (``do_rotary``, rotate-half) from cos/sin tables made from ``config.json``;
* its cache I/O is the graph's own ``past_key_values.{i}.*`` /
  ``present.{i}.*`` (``[B, kv_heads, T, D]``, native kv heads), so the engine
  drives the fused graph exactly as the unfused one;
* ``seqlens_k`` (``ReduceSum(attention_mask) - 1``) and the total length come
  from ``attention_mask``: exact for right padding and for a batch-1 cache,
  which are the only ways ``engine.causal_lm`` feeds a graph. Positions are
  then ``0..`` per row, which is what the engine's ``position_ids`` say.

Anchors, not a fixed node list: for layer ``i`` the producers of
``present.{i}.key/value`` must be ``Concat(past, new)`` on the sequence axis;
the value is ``Transpose(Reshape(projection))``; the key's and the query's
projections are the only weight ``MatMul`` outputs (plus an optional bias
``Add``) of the right width above the key and the attention's ``Softmax``;
the output projection is the first weight ``MatMul`` below it. Anything
else (a family whose rotary, scale or window the kernel does not reproduce,
a layer that does not match) leaves the graph untouched and says why; the
caller still verifies log-likelihoods against the unfused graph.
"""

from __future__ import annotations

import math
import re
from collections import deque
from typing import Any

import numpy as np

# Families whose attention the kernel reproduces: rotate-half rotary over the
# whole head, scale 1/sqrt(head size), no soft-capping. Mistral's sliding
# window becomes ``local_window_size``.
FUSABLE_FAMILIES = frozenset({"llama", "mistral", "qwen2"})
FUSED_OP = "GroupQueryAttention"
_PRESENT_RE = re.compile(r"^present(?:_key_values)?\.(\d+)\.(key|value)$")
_SEARCH_LIMIT = 400  # nodes one anchor search may visit
_MAX_TABLE = 1 << 24  # entries of each rotary table (64 MiB of float32)


class NotFusable(Exception):
    """The graph does not have the pattern; the message says where it differs."""


def attention_shape(config: dict) -> dict[str, Any]:
    """Heads, kv heads, head size, rotary base and window from ``config.json``.

    Raises ``NotFusable`` for a family or a setting the kernel does not
    reproduce.
    """
    family = config.get("model_type")
    if family not in FUSABLE_FAMILIES:
        raise NotFusable(f"model type {family!r} is not one this pass fuses")
    if config.get("rope_scaling") not in (None, {}) or config.get(
        "partial_rotary_factor", 1.0
    ) not in (None, 1, 1.0):
        raise NotFusable("scaled or partial rotary embeddings")
    try:
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
        hidden = int(config["hidden_size"])
        head_dim = int(config.get("head_dim") or hidden // heads)
        positions = int(config["max_position_embeddings"])
        theta = float(config.get("rope_theta", 10000.0))
    except (KeyError, TypeError, ValueError) as error:
        raise NotFusable(f"config.json lacks a usable {error}") from None
    if heads < 1 or kv_heads < 1 or heads % kv_heads or head_dim < 2 or head_dim % 2:
        raise NotFusable("inconsistent head counts in config.json")
    if head_dim % 16:
        raise NotFusable(f"head size {head_dim} is not a multiple of 16 (the kernel's)")
    if not 2 <= positions <= 1 << 18:
        raise NotFusable("max_position_embeddings out of range")
    if positions * head_dim // 2 > _MAX_TABLE:
        # The cos/sin tables are positions x head_dim/2 floats each: a hostile
        # config.json must not make the pass allocate gigabytes.
        raise NotFusable("rotary tables larger than the pass builds")
    # Qwen2 declares a window it does not use unless ``use_sliding_window``.
    windowed = config.get("use_sliding_window", family != "qwen2")
    window = config.get("sliding_window") if windowed else None
    return {
        "heads": heads,
        "kv_heads": kv_heads,
        "head_dim": head_dim,
        "hidden": hidden,
        "positions": positions,
        "theta": theta,
        "window": int(window) if window and int(window) < positions else None,
    }


class GraphIndex:
    """Producers, consumers and initializer shapes of a graph (also the base of
    ``engine.packing``'s edit plan)."""

    def __init__(self, graph) -> None:
        self.graph = graph
        self.producer = {out: n for n in graph.node for out in n.output if out}
        self.consumers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.weights = {t.name: tuple(t.dims) for t in graph.initializer}

    def projection(self, tensor: str, width: int, hidden: int) -> bool:
        """Whether ``tensor`` is ``x @ W`` (``W``: ``[hidden, width]``), or ``+ b``."""
        node = self.producer.get(tensor)
        if node is not None and node.op_type == "Add":
            biases = [i for i in node.input if self.weights.get(i) == (width,)]
            others = [i for i in node.input if i not in biases]
            if len(biases) != 1 or len(others) != 1:
                return False
            node = self.producer.get(others[0])
        return (
            node is not None
            and node.op_type == "MatMul"
            and self.weights.get(node.input[1]) == (hidden, width)
        )

    def above(self, start: str, width: int, hidden: int, stop: set[str]) -> set[str]:
        """Projection tensors of ``width`` among the ancestors of ``start``.

        The search does not cross ``Shape`` nodes (sizes, not data), the
        tensors in ``stop``, nor a projection it finds.
        """
        found: set[str] = set()
        queue, seen = deque([start]), {start}
        while queue:
            tensor = queue.popleft()
            if len(seen) > _SEARCH_LIMIT:
                raise NotFusable("attention subgraph larger than expected")
            if self.projection(tensor, width, hidden):
                found.add(tensor)
                continue
            node = self.producer.get(tensor)
            if node is None or node.op_type == "Shape" or tensor in stop:
                continue
            for name in node.input:
                if name and name not in seen:
                    seen.add(name)
                    queue.append(name)
        return found

    def below(self, start: str, op_type: str, accept) -> list:
        """Nodes of ``op_type`` passing ``accept`` among the descendants of
        ``start`` (the search stops at them)."""
        found, queue, seen = [], deque([start]), {start}
        while queue:
            tensor = queue.popleft()
            if len(seen) > _SEARCH_LIMIT:
                raise NotFusable("attention subgraph larger than expected")
            for node in self.consumers.get(tensor, []):
                if node.op_type == op_type and accept(node):
                    if node not in found:
                        found.append(node)
                    continue
                for out in node.output:
                    if out and out not in seen:
                        seen.add(out)
                        queue.append(out)
        return found


def _attr(node, name: str, default=None):
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _appended(index: GraphIndex, present: str, past: str) -> str:
    """The new entries ``present = Concat(past, new)`` appends; raises otherwise."""
    node = index.producer.get(present)
    if (
        node is None
        or node.op_type != "Concat"
        or _attr(node, "axis") not in (2, -2)
        or len(node.input) != 2
        or node.input[0] != past
    ):
        raise NotFusable(f"{present} is not Concat({past}, new) on the sequence axis")
    return node.input[1]


def _one(found, what: str, layer: int):
    if len(found) != 1:
        raise NotFusable(f"layer {layer}: {len(found)} candidates for the {what}")
    return next(iter(found))


def match_layer(index: GraphIndex, shape: dict, layer: int, cache: tuple) -> dict:
    """The anchors of layer ``layer``'s attention; raises ``NotFusable``.

    ``cache`` is ``(past key, past value, present key, present value)``.
    """
    past_k, past_v, present_k, present_v = cache
    hidden, d = shape["hidden"], shape["head_dim"]
    q_width, kv_width = shape["heads"] * d, shape["kv_heads"] * d
    new_k = _appended(index, present_k, past_k)
    new_v = _appended(index, present_v, past_v)
    transpose = index.producer.get(new_v)
    reshape = index.producer.get(transpose.input[0]) if transpose is not None else None
    if (
        transpose is None
        or transpose.op_type != "Transpose"
        or list(_attr(transpose, "perm", [])) != [0, 2, 1, 3]
        or reshape is None
        or reshape.op_type != "Reshape"
        or not index.projection(reshape.input[0], kv_width, hidden)
    ):
        raise NotFusable(f"layer {layer}: the new value is not a projection's heads")
    value = reshape.input[0]
    key = _one(index.above(new_k, kv_width, hidden, set()), "key projection", layer)
    softmax = _one(index.below(present_k, "Softmax", lambda n: True), "Softmax", layer)
    stop = {present_k, present_v}
    queries = index.above(softmax.input[0], q_width, hidden, stop)
    query = _one(queries - {key, value}, "query projection", layer)

    def is_out_projection(node) -> bool:
        return index.weights.get(node.input[1]) == (q_width, hidden)

    out_proj = _one(
        index.below(softmax.output[0], "MatMul", is_out_projection),
        "output projection",
        layer,
    )
    return {
        "query": query,
        "key": key,
        "value": value,
        "cache": cache,
        "out_proj": out_proj,
        "replaced": [index.producer[present_k], index.producer[present_v]],
    }


def _cache_names(graph) -> list[tuple[str, str, str, str]]:
    outputs: dict[tuple[int, str], str] = {}
    for output in graph.output:
        if m := _PRESENT_RE.match(output.name):
            outputs[(int(m[1]), m[2])] = output.name
    inputs = {i.name for i in graph.input}
    layers = []
    for layer in range(len(outputs) // 2):
        past = (f"past_key_values.{layer}.key", f"past_key_values.{layer}.value")
        present = (outputs.get((layer, "key")), outputs.get((layer, "value")))
        if not set(past) <= inputs or None in present:
            raise NotFusable(f"layer {layer} has no past_key_values / present pair")
        layers.append((*past, *present))
    if not layers:
        raise NotFusable("the graph has no KV cache")
    return layers


def _shared_inputs(shape: dict) -> tuple[list, list, list[str]]:
    """``(initializers, nodes, names)`` every layer's kernel reads: ``seqlens_k``,
    the total length and the cos/sin tables."""
    from onnx import TensorProto, helper, numpy_helper

    d = shape["head_dim"]
    inv_freq = 1.0 / shape["theta"] ** (np.arange(0, d, 2, dtype=np.float64) / d)
    angles = np.arange(shape["positions"], dtype=np.float64)[:, None] * inv_freq
    p = "gqa_fusion/"
    names = [p + n for n in ("axis1", "one", "cos", "sin")]
    initializers = [
        numpy_helper.from_array(np.array([1], dtype=np.int64), names[0]),
        numpy_helper.from_array(np.array(1, dtype=np.int64), names[1]),
        numpy_helper.from_array(np.cos(angles).astype(np.float32), names[2]),
        numpy_helper.from_array(np.sin(angles).astype(np.float32), names[3]),
    ]
    nodes = [
        helper.make_node(
            "ReduceSum", ["attention_mask", names[0]], [p + "lengths"], keepdims=0
        ),
        helper.make_node("Sub", [p + "lengths", names[1]], [p + "last"]),
        helper.make_node("Cast", [p + "last"], [p + "seqlens_k"], to=TensorProto.INT32),
        helper.make_node("Shape", ["attention_mask"], [p + "mask_shape"]),
        helper.make_node("Gather", [p + "mask_shape", names[0]], [p + "total"], axis=0),
        helper.make_node(
            "Cast", [p + "total"], [p + "total_length"], to=TensorProto.INT32
        ),
    ]
    return initializers, nodes, [p + "seqlens_k", p + "total_length", *names[2:]]


def _pruned(graph, nodes: list) -> tuple[list, set[str]]:
    """The ``nodes`` some graph output needs, and every tensor name they read."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(nodes):
        if any(out in needed for out in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    keep.reverse()
    return keep, needed


def _toposorted(graph, nodes: list, initializers: set[str]) -> list:
    """``nodes`` ordered so that each follows its inputs' producers (Kahn).

    Raises ``NotFusable`` for a cycle or an input nothing produces.
    """
    available = {i.name for i in graph.input} | initializers | {""}
    producer = {out: k for k, node in enumerate(nodes) for out in node.output}
    waiting = [0] * len(nodes)
    readers: dict[int, list[int]] = {}
    for k, node in enumerate(nodes):
        for name in set(node.input) - available:
            if name not in producer:
                raise NotFusable(f"the fused graph reads {name!r}, which nothing makes")
            waiting[k] += 1
            readers.setdefault(producer[name], []).append(k)
    ready = deque(k for k, count in enumerate(waiting) if not count)
    ordered = []
    while ready:
        k = ready.popleft()
        ordered.append(nodes[k])
        for reader in readers.get(k, []):
            waiting[reader] -= 1
            if not waiting[reader]:
                ready.append(reader)
    if len(ordered) != len(nodes):
        raise NotFusable("the fused graph has a cycle")
    return ordered


def _replace(graph, nodes: list, initializers: list, needed: set[str]) -> None:
    """Make ``nodes`` the graph's, add ``initializers``, drop what is unused."""
    produced = {out for node in nodes for out in node.output}
    copies = [type(node)() for node in nodes]
    for copy, node in zip(copies, nodes, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)
    for field, keep in ((graph.initializer, needed), (graph.value_info, produced)):
        for position in reversed(range(len(field))):
            if field[position].name not in keep:
                del field[position]
    graph.initializer.extend(initializers)


def fuse_attention(model, config: dict) -> dict[str, Any]:
    """Replace every layer's attention of ``model`` (in place) by one kernel.

    Returns ``{"status": "fused", "fused_ops": {"GroupQueryAttention": n},
    "layers": n}``, or ``{"status": "not_fused", "reason"}`` with ``model``
    unchanged when the family, the config or any layer does not match.
    """
    from onnx import helper

    graph = model.graph
    try:
        shape = attention_shape(config)
        if "attention_mask" not in {i.name for i in graph.input}:
            raise NotFusable("the graph has no attention_mask input")
        if any(a.g.node or a.graphs for n in graph.node for a in n.attribute):
            raise NotFusable("the graph has subgraphs (If, Loop, Scan)")
        index = GraphIndex(graph)
        layers = [
            match_layer(index, shape, n, cache)
            for n, cache in enumerate(_cache_names(graph))
        ]
    except NotFusable as reason:
        return {"status": "not_fused", "reason": str(reason)}
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as error:
        return {"status": "not_fused", "reason": f"malformed graph ({error!r})"}
    initializers, shared_nodes, shared = _shared_inputs(shape)
    attrs = {
        "num_heads": shape["heads"],
        "kv_num_heads": shape["kv_heads"],
        "do_rotary": 1,
        "rotary_interleaved": 0,
        "scale": 1.0 / math.sqrt(shape["head_dim"]),
    }
    if shape["window"]:
        # Measured on the Mistral fixture: ``sliding_window`` itself (as the
        # genai builder writes it) matches transformers' export; W - 1 does not.
        attrs["local_window_size"] = shape["window"]
    replaced = {id(n) for layer in layers for n in layer["replaced"]}
    nodes = [n for n in graph.node if id(n) not in replaced] + shared_nodes
    position = {id(node): k for k, node in enumerate(nodes)}
    for n, layer in enumerate(layers):
        past_k, past_v, present_k, present_v = layer["cache"]
        output = f"gqa_fusion/layers.{n}/attention"
        nodes.append(
            helper.make_node(
                FUSED_OP,
                [layer["query"], layer["key"], layer["value"], past_k, past_v, *shared],
                [output, present_k, present_v],
                name=f"gqa_fusion/layers.{n}",
                domain="com.microsoft",
                **attrs,
            )
        )
        rewired = helper.make_node("MatMul", [output, layer["out_proj"].input[1]], [])
        rewired.CopyFrom(layer["out_proj"])
        rewired.input[0] = output
        nodes[position[id(layer["out_proj"])]] = rewired
    nodes, needed = _pruned(graph, nodes)
    names = {t.name for t in graph.initializer} | {t.name for t in initializers}
    try:
        nodes = _toposorted(graph, nodes, names & needed)
    except NotFusable as reason:
        return {"status": "not_fused", "reason": str(reason)}
    _replace(graph, nodes, [t for t in initializers if t.name in needed], needed)
    # ONNX shape inference does not know the kernel: say its outputs are
    # float so that the quantisers can type the output projections.
    graph.value_info.extend(
        helper.make_tensor_value_info(f"gqa_fusion/layers.{n}/attention", 1, None)
        for n in range(len(layers))
    )
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return {
        "status": "fused",
        "fused_ops": {FUSED_OP: len(layers)},
        "layers": len(layers),
        "window": shape["window"],
    }
