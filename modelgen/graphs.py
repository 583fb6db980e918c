"""ONNX graphs and bundles for the models ``modelgen`` defines.

Every graph uses standard ``ai.onnx`` operators only, built with
``onnx.helper``; weights are initializers named as in ``init_weights``.
Causal LM layouts (``build_causal_lm``) reproduce what real exporters emit:

* ``optimum``: Hugging Face Optimum's ``text-generation-with-past`` export
  (``input_ids``, ``attention_mask``, ``position_ids``,
  ``past_key_values.N.key|value`` -> ``logits``, ``present.N.key|value``);
* ``plain``: no KV cache (``input_ids``, ``attention_mask``, ``position_ids``
  -> ``logits``);
* ``merged``: Optimum 1.x ``decoder_model_merged.onnx``: the ``optimum`` inputs
  plus ``use_cache_branch: bool[1]`` driving a real ``If`` node whose
  ``else`` branch ignores the past tensors (as the no-past decoder does) and
  whose ``then`` branch concatenates them. With an empty past both branches
  compute the same logits;
* ``genai``: the onnxruntime-genai builder's I/O contract: no
  ``position_ids`` (positions are ``CumSum(attention_mask) - 1`` in-graph),
  KV head size exposed as the symbolic dim ``kv_cache_dim`` and described by
  ``genai_config.json``. The attention itself is built from standard ops (not
  ``GroupQueryAttention``), so that config sets
  ``past_present_share_buffer: false``: the graph grows its cache by
  concatenation instead of writing into a preallocated buffer.
  ``modelgen.genai`` builds the builder's contrib-op variant.

Masks are built in the graph: a key is visible when it is not later than the
query and its ``attention_mask`` entry is 1.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from modelgen.lm import LMConfig, rope_inv_freq, weight_shapes

LAYOUTS = ("optimum", "plain", "merged", "genai")
PRODUCER = "civitas-modelgen"
# The initializer holding a tied head's own copy of the embedding (``[vocab,
# hidden]``, transposed in the graph), when ``build_causal_lm`` stores one.
TIED_HEAD = "lm_head.weight"
_INT64_MAX = np.iinfo(np.int64).max
_ONNX_INT = {"int64": TensorProto.INT64, "int32": TensorProto.INT32}


class _Graph:
    """Node list with unique names; constants and weights go to a shared pool.

    A child (for an ``If`` branch) shares the counter and the initializer pool
    with its parent: ONNX subgraphs may read outer-scope initializers, so
    weights are stored once however many branches use them.
    """

    def __init__(self, counter=None, initializers=None, consts=None) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self._counter = counter if counter is not None else itertools.count()
        self.initializers: dict[str, onnx.TensorProto] = (
            initializers if initializers is not None else {}
        )
        self._consts: dict[tuple, str] = consts if consts is not None else {}

    def child(self) -> _Graph:
        return _Graph(self._counter, self.initializers, self._consts)

    def fresh(self, hint: str) -> str:
        return f"/{hint}_{next(self._counter)}"

    def op(self, op_type: str, inputs: Sequence[str], *, out=None, n_out=1, **attrs):
        """Append a node; returns its output name (or names when ``n_out > 1``)."""
        if out is None:
            outs = [self.fresh(op_type.lower()) for _ in range(n_out)]
        else:
            outs = [out] if isinstance(out, str) else list(out)
        self.nodes.append(
            helper.make_node(
                op_type, list(inputs), outs, name=self.fresh(op_type), **attrs
            )
        )
        return outs[0] if len(outs) == 1 else outs

    def const(self, value, dtype=np.int64) -> str:
        """A deduplicated constant initializer."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            name = f"const_{len(self._consts)}"
            self.initializers[name] = numpy_helper.from_array(array, name)
            self._consts[key] = name
        return self._consts[key]

    def weight(self, name: str, array: np.ndarray) -> str:
        self.initializers[name] = numpy_helper.from_array(
            np.ascontiguousarray(array, dtype=np.float32), name
        )
        return name


def _value_info(name: str, elem_type: int, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


def _rms_norm(g: _Graph, x: str, gain: str, eps: float) -> str:
    square = g.op("Mul", [x, x])
    mean = g.op("ReduceMean", [square, g.const([-1])], keepdims=1)
    denom = g.op("Sqrt", [g.op("Add", [mean, g.const(eps, np.float32)])])
    return g.op("Mul", [g.op("Div", [x, denom]), gain])


def _rope(g: _Graph, x: str, cos: str, sin: str) -> str:
    """Llama rotate-half rotary embedding on ``[B, S, heads, D]``."""
    first, second = g.op("Split", [x], n_out=2, axis=-1, num_outputs=2)
    rotated = g.op("Concat", [g.op("Neg", [second]), first], axis=-1)
    return g.op("Add", [g.op("Mul", [x, cos]), g.op("Mul", [rotated, sin])])


def _visibility(
    g: _Graph, ids: str, mask: str, past: list[tuple[str, str]] | None
) -> tuple[str, str, str, str]:
    """``(visible [B, 1, 1, S, T], mask, offset, total)`` for the attention.

    Without a past only the last ``sequence_length`` mask columns are read
    (the returned ``mask`` is that slice); ``offset`` is the first query's
    position and ``total`` the key count.
    """
    seq = g.op("Gather", [g.op("Shape", [ids]), g.const(1)], axis=0)
    if past is None:
        start = g.op("Neg", [g.op("Unsqueeze", [seq, g.const([0])])])
        mask = g.op("Slice", [mask, start, g.const([_INT64_MAX]), g.const([1])])
        total, offset = seq, g.const(0)
    else:
        total = g.op("Gather", [g.op("Shape", [mask]), g.const(1)], axis=0)
        offset = g.op("Sub", [total, seq])
    query_index = g.op("Range", [offset, total, g.const(1)])
    key_index = g.op("Range", [g.const(0), total, g.const(1)])
    causal = g.op(
        "LessOrEqual",
        [
            g.op("Unsqueeze", [key_index, g.const([0])]),
            g.op("Unsqueeze", [query_index, g.const([1])]),
        ],
    )
    padding = g.op(
        "Unsqueeze",
        [g.op("Cast", [mask], to=TensorProto.BOOL), g.const([1, 2, 3])],
    )
    return g.op("And", [padding, causal]), mask, offset, total


def _rotary_tables(
    g: _Graph,
    cfg: LMConfig,
    position_ids: str | None,
    mask: str,
    offset: str,
    total: str,
) -> tuple[str, str]:
    """``(cos, sin)`` ``[B, S, 1, D]``; positions from the mask when not given."""
    if position_ids is None:
        cumulative = g.op("CumSum", [mask, g.const(1)])
        all_positions = g.op("Sub", [cumulative, g.const(1)])
        position_ids = g.op(
            "Slice",
            [
                all_positions,
                g.op("Unsqueeze", [offset, g.const([0])]),
                g.op("Unsqueeze", [total, g.const([0])]),
                g.const([1]),
            ],
        )
    inv_freq = g.const(rope_inv_freq(cfg), np.float32)
    angles = g.op(
        "Mul",
        [
            g.op(
                "Unsqueeze",
                [g.op("Cast", [position_ids], to=TensorProto.FLOAT), g.const([2])],
            ),
            inv_freq,
        ],
    )
    angles = g.op("Concat", [angles, angles], axis=-1)
    cos = g.op("Unsqueeze", [g.op("Cos", [angles]), g.const([2])])
    sin = g.op("Unsqueeze", [g.op("Sin", [angles]), g.const([2])])
    return cos, sin


def _decoder_layer(
    g: _Graph,
    cfg: LMConfig,
    i: int,
    x: str,
    *,
    rotary: tuple[str, str],
    visible: str,
    constants: tuple[str, str],
    past: list[tuple[str, str]] | None,
    present_out: list[tuple[str, str]] | None,
) -> str:
    """Append decoder layer ``i`` (attention, then the SwiGLU MLP); returns ``x``.

    ``constants`` is ``(1 / sqrt(head_dim), float32 min)``, made once.
    """
    nh, nkv, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    rep = nh // nkv
    cos, sin = rotary
    scale, hidden_min = constants
    p = f"layers.{i}."
    h = _rms_norm(g, x, p + "input_layernorm", cfg.rms_norm_eps)
    q = g.op("Reshape", [g.op("MatMul", [h, p + "q_proj"]), g.const([0, 0, nh, d])])
    q = g.op("Mul", [_rope(g, q, cos, sin), scale])
    q = g.op("Reshape", [q, g.const([0, 0, nkv, rep, d])])
    q = g.op("Transpose", [q], perm=[0, 2, 3, 1, 4])  # [B, KV, rep, S, D]
    k = g.op("Reshape", [g.op("MatMul", [h, p + "k_proj"]), g.const([0, 0, nkv, d])])
    k = g.op("Transpose", [_rope(g, k, cos, sin)], perm=[0, 2, 1, 3])
    v = g.op("Reshape", [g.op("MatMul", [h, p + "v_proj"]), g.const([0, 0, nkv, d])])
    v = g.op("Transpose", [v], perm=[0, 2, 1, 3])  # [B, KV, S, D]
    if past is not None:
        assert present_out is not None
        k = g.op("Concat", [past[i][0], k], axis=2, out=present_out[i][0])
        v = g.op("Concat", [past[i][1], v], axis=2, out=present_out[i][1])
    elif present_out is not None:
        k = g.op("Identity", [k], out=present_out[i][0])
        v = g.op("Identity", [v], out=present_out[i][1])
    keys = g.op(
        "Transpose", [g.op("Unsqueeze", [k, g.const([2])])], perm=[0, 1, 2, 4, 3]
    )
    scores = g.op("Where", [visible, g.op("MatMul", [q, keys]), hidden_min])
    probs = g.op("Softmax", [scores], axis=-1)
    attn = g.op("MatMul", [probs, g.op("Unsqueeze", [v, g.const([2])])])
    attn = g.op("Transpose", [attn], perm=[0, 3, 1, 2, 4])  # [B, S, KV, rep, D]
    attn = g.op("Reshape", [attn, g.const([0, 0, -1])])
    x = g.op("Add", [x, g.op("MatMul", [attn, p + "o_proj"])])
    h = _rms_norm(g, x, p + "post_attention_layernorm", cfg.rms_norm_eps)
    gate = g.op("MatMul", [h, p + "gate"])
    act = g.op(
        "Mul",
        [
            g.op("Mul", [gate, g.op("Sigmoid", [gate])]),
            g.op("MatMul", [h, p + "up"]),
        ],
    )
    return g.op("Add", [x, g.op("MatMul", [act, p + "down"])])


def _decoder(
    g: _Graph,
    cfg: LMConfig,
    *,
    ids: str,
    mask: str,
    position_ids: str | None,
    past: list[tuple[str, str]] | None,
    logits_out: str | None,
    present_out: list[tuple[str, str]] | None,
) -> str:
    """Append the whole decoder to ``g``; returns its final normed hidden states.

    ``past=None`` means no cache: only the last ``sequence_length`` mask
    columns are read. ``position_ids=None`` derives positions from the mask.
    ``present_out`` names the concatenated (or, without past, fresh) K/V.
    ``logits_out=None`` leaves out the head. A tied head reads ``TIED_HEAD``
    when the graph stores one, else ``embed_tokens``.
    """
    visible, mask, offset, total = _visibility(g, ids, mask, past)
    rotary = _rotary_tables(g, cfg, position_ids, mask, offset, total)
    scale = g.const(1.0 / math.sqrt(cfg.head_dim), np.float32)
    hidden_min = g.const(np.finfo(np.float32).min, np.float32)

    x = g.op("Gather", ["embed_tokens", ids], axis=0)
    for i in range(cfg.num_layers):
        x = _decoder_layer(
            g,
            cfg,
            i,
            x,
            rotary=rotary,
            visible=visible,
            constants=(scale, hidden_min),
            past=past,
            present_out=present_out,
        )
    x = _rms_norm(g, x, "norm", cfg.rms_norm_eps)
    if logits_out is None:
        return x
    if not cfg.tie_word_embeddings:
        head = "lm_head"
    else:
        tied = TIED_HEAD if TIED_HEAD in g.initializers else "embed_tokens"
        head = g.op("Transpose", [tied], perm=[1, 0])
    g.op("MatMul", [x, head], out=logits_out)
    return x


def _lm_signature(
    cfg: LMConfig, layout: str, int_type: int
) -> tuple[list, list, list[tuple[str, str]], list[tuple[str, str]]]:
    """``(inputs, outputs, past names, present names)`` of a layout's graph."""
    has_past = layout != "plain"
    total = "past_sequence_length + sequence_length" if has_past else "sequence_length"
    kv_dim: int | str = "kv_cache_dim" if layout == "genai" else cfg.head_dim
    inputs = [
        _value_info("input_ids", int_type, ["batch_size", "sequence_length"]),
        _value_info("attention_mask", int_type, ["batch_size", total]),
    ]
    if layout != "genai":
        inputs.append(
            _value_info("position_ids", int_type, ["batch_size", "sequence_length"])
        )
    past_names = [
        (f"past_key_values.{i}.key", f"past_key_values.{i}.value")
        for i in range(cfg.num_layers)
    ]
    present_names = [
        (f"present.{i}.key", f"present.{i}.value") for i in range(cfg.num_layers)
    ]
    present_len = "total_sequence_length" if layout == "genai" else total
    outputs = [
        _value_info(
            "logits",
            TensorProto.FLOAT,
            ["batch_size", "sequence_length", cfg.vocab_size],
        )
    ]
    if has_past:
        past_shape = ["batch_size", cfg.num_kv_heads, "past_sequence_length", kv_dim]
        present_shape = ["batch_size", cfg.num_kv_heads, present_len, kv_dim]
        for pair in past_names:
            inputs += [_value_info(n, TensorProto.FLOAT, past_shape) for n in pair]
        for pair in present_names:
            outputs += [_value_info(n, TensorProto.FLOAT, present_shape) for n in pair]
    if layout == "merged":
        inputs.append(_value_info("use_cache_branch", TensorProto.BOOL, [1]))
    return inputs, outputs, past_names, present_names


def _merged_decoder(
    g: _Graph,
    cfg: LMConfig,
    *,
    ids: str,
    mask: str,
    positions: str | None,
    names: tuple[list, list[tuple[str, str]], list[tuple[str, str]]],
) -> None:
    """An ``If`` on ``use_cache_branch``: ``then`` reads the past, ``else`` not.

    ``names`` is ``(graph outputs, past names, present names)``.
    """
    outputs, past_names, present_names = names
    branches = {}
    for branch, branch_past in (("then", past_names), ("else", None)):
        sub = g.child()
        logits = f"{branch}/logits"
        present = [(f"{branch}/{k}", f"{branch}/{v}") for k, v in present_names]
        _decoder(
            sub,
            cfg,
            ids=ids,
            mask=mask,
            position_ids=positions,
            past=branch_past,
            logits_out=logits,
            present_out=present,
        )
        sub_outputs = [_value_info(logits, TensorProto.FLOAT, None)]
        sub_outputs += [
            _value_info(n, TensorProto.FLOAT, None) for pair in present for n in pair
        ]
        branches[branch] = helper.make_graph(
            sub.nodes, f"{branch}_branch", [], sub_outputs
        )
    g.op(
        "If",
        ["use_cache_branch"],
        out=[o.name for o in outputs],
        then_branch=branches["then"],
        else_branch=branches["else"],
    )


def _lm_weights(
    cfg: LMConfig,
    weights: dict[str, np.ndarray],
    *,
    tied_head_copy: bool,
    head: bool = True,
) -> _Graph:
    """A graph holding the decoder's weights (and a tied head's copy, if asked);
    ``head=False`` leaves out ``lm_head``."""
    shapes = weight_shapes(cfg)
    if not head:
        shapes.pop("lm_head", None)
    missing = [n for n in shapes if n not in weights]
    if missing:
        raise ValueError(f"missing weights: {missing[:5]}")
    g = _Graph()
    for name in shapes:
        if tuple(weights[name].shape) != shapes[name]:
            raise ValueError(f"weight {name} has shape {weights[name].shape}")
        g.weight(name, weights[name])
    if tied_head_copy and cfg.tie_word_embeddings:
        g.weight(TIED_HEAD, weights["embed_tokens"])
    return g


def build_causal_lm(
    cfg: LMConfig,
    weights: dict[str, np.ndarray],
    *,
    layout: str = "optimum",
    opset: int = 18,
    ids_dtype: str = "int64",
    input_order: Sequence[str] | None = None,
    tied_head_copy: bool = False,
) -> onnx.ModelProto:
    """The decoder as an ONNX model in one of ``LAYOUTS`` (module docstring).

    ``ids_dtype`` ("int64" or "int32") types ``input_ids``, ``attention_mask``
    and ``position_ids`` (int32 exercises loaders that read dtypes from the
    session). ``input_order`` permutes the graph inputs by name (GPT-2's
    export puts the past between ``input_ids`` and ``attention_mask``); it
    must name every input exactly once. Tied embeddings share the
    ``embed_tokens`` initializer, unless ``tied_head_copy`` stores the head
    as its own identical copy ``TIED_HEAD`` (as ``torch.onnx`` exports of
    tied models often do). Raises ``ValueError`` on an unknown layout or
    dtype, a bad ``input_order`` or missing weights.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    if ids_dtype not in _ONNX_INT:
        raise ValueError("ids_dtype must be 'int64' or 'int32'")
    g = _lm_weights(cfg, weights, tied_head_copy=tied_head_copy)
    int_type = _ONNX_INT[ids_dtype]
    has_past = layout != "plain"
    inputs, outputs, past_names, present_names = _lm_signature(cfg, layout, int_type)

    def as_int64(name: str) -> str:
        if int_type == TensorProto.INT64:
            return name
        return g.op("Cast", [name], to=TensorProto.INT64)

    ids, mask = as_int64("input_ids"), as_int64("attention_mask")
    positions = None if layout == "genai" else as_int64("position_ids")
    if layout == "merged":
        names = (outputs, past_names, present_names)
        _merged_decoder(g, cfg, ids=ids, mask=mask, positions=positions, names=names)
    else:
        _decoder(
            g,
            cfg,
            ids=ids,
            mask=mask,
            position_ids=positions,
            past=past_names if has_past else None,
            logits_out="logits",
            present_out=present_names if has_past else None,
        )
    if input_order is not None:
        by_name = {vi.name: vi for vi in inputs}
        if sorted(input_order) != sorted(by_name):
            raise ValueError(f"input_order must name exactly {sorted(by_name)}")
        inputs = [by_name[n] for n in input_order]
    graph = helper.make_graph(
        g.nodes,
        f"civitas_llama_{layout}",
        inputs,
        outputs,
        initializer=list(g.initializers.values()),
    )
    return _finish_model(graph, opset)


def _finish_model(
    graph: onnx.GraphProto, opset: int, extra_opsets=()
) -> onnx.ModelProto:
    opsets = [helper.make_opsetid("", opset), *extra_opsets]
    model = helper.make_model(graph, opset_imports=opsets, producer_name=PRODUCER)
    model.ir_version = helper.find_min_ir_version_for(opsets[:1])
    return model


def genai_config(
    cfg: LMConfig, *, filename: str = "model.onnx", share_buffer: bool = False
) -> dict:
    """The ``genai_config.json`` dict the onnxruntime-genai builder writes for Llama.

    Name templates as the builder's (``past_key_values.%d.key``,
    ``present.%d.key``). ``share_buffer`` (``past_present_share_buffer``) is
    false for the standard-op graph, which grows its cache (module
    docstring), and may be true for ``build_genai_contrib`` graphs, whose
    ``GroupQueryAttention`` also accepts a preallocated cache.
    """
    return {
        "model": {
            "bos_token_id": cfg.bos_token_id,
            "context_length": cfg.max_position_embeddings,
            "decoder": {
                "session_options": {
                    "log_id": "onnxruntime-genai",
                    "provider_options": [],
                },
                "filename": filename,
                "head_size": cfg.head_dim,
                "hidden_size": cfg.hidden_size,
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
                "num_attention_heads": cfg.num_heads,
                "num_hidden_layers": cfg.num_layers,
                "num_key_value_heads": cfg.num_kv_heads,
            },
            "eos_token_id": cfg.eos_token_id,
            "pad_token_id": cfg.pad_token_id,
            "type": "llama",
            "vocab_size": cfg.vocab_size,
        },
        "search": {
            "diversity_penalty": 0.0,
            "do_sample": False,
            "early_stopping": True,
            "length_penalty": 1.0,
            "max_length": cfg.max_position_embeddings,
            "min_length": 0,
            "no_repeat_ngram_size": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": share_buffer,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0,
        },
    }


def build_classifier(
    embedding: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    *,
    opset: int = 18,
) -> onnx.ModelProto:
    """Bag-of-embeddings sequence classifier as ONNX.

    ``input_ids``, ``attention_mask`` int64 ``[batch_size, sequence_length]``
    -> ``logits`` float ``[batch_size, num_labels]`` = masked mean of
    ``embedding[ids]`` @ ``weight`` + ``bias``. A row with no real token
    divides by 1, giving ``bias``. Raises ``ValueError`` on shape mismatch.
    """
    _check_head(embedding.shape[1], weight, bias)
    g = _Graph()
    g.weight("embedding", embedding)
    g.weight("classifier.weight", weight)
    g.weight("classifier.bias", bias)
    tokens = g.op("Gather", ["embedding", "input_ids"], axis=0)
    return _pooled_classifier(
        g, tokens, weight.shape[1], "civitas_bow_classifier", opset
    )


def build_decoder_classifier(
    cfg: LMConfig,
    weights: dict[str, np.ndarray],
    weight: np.ndarray,
    bias: np.ndarray,
    *,
    opset: int = 18,
) -> onnx.ModelProto:
    """Transformer sequence classifier as ONNX: ``build_causal_lm``'s decoder
    without its head (causal attention, positions from the mask), then the
    masked mean of its final hidden states @ ``weight`` + ``bias``.

    Same inputs and ``logits`` output as ``build_classifier``; ``weights``
    as ``init_weights`` returns them (an ``lm_head`` is ignored). Raises
    ``ValueError`` on shape mismatch or missing weights.
    """
    _check_head(cfg.hidden_size, weight, bias)
    g = _lm_weights(cfg, weights, tied_head_copy=False, head=False)
    g.weight("classifier.weight", weight)
    g.weight("classifier.bias", bias)
    hidden = _decoder(
        g,
        cfg,
        ids="input_ids",
        mask="attention_mask",
        position_ids=None,
        past=None,
        logits_out=None,
        present_out=None,
    )
    labels = weight.shape[1]
    return _pooled_classifier(g, hidden, labels, "civitas_decoder_classifier", opset)


def _check_head(dim: int, weight: np.ndarray, bias: np.ndarray) -> None:
    if weight.shape[0] != dim or bias.shape != (weight.shape[1],):
        raise ValueError("weight must be [dim, labels] and bias [labels]")


def _pooled_classifier(
    g: _Graph, states: str, labels: int, name: str, opset: int
) -> onnx.ModelProto:
    """Finish a classifier whose ``states [B, S, dim]`` are in ``g``: their
    mean over the ``attention_mask`` tokens (a row with none divides by 1)
    @ ``classifier.weight`` + ``classifier.bias`` is ``logits [B, labels]``."""
    mask = g.op(
        "Unsqueeze",
        [g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT), g.const([2])],
    )
    summed = g.op("ReduceSum", [g.op("Mul", [states, mask]), g.const([1])], keepdims=0)
    count = g.op("ReduceSum", [mask, g.const([1])], keepdims=0)
    count = g.op("Max", [count, g.const(1.0, np.float32)])
    pooled = g.op("Div", [summed, count])
    g.op(
        "Add",
        [g.op("MatMul", [pooled, "classifier.weight"]), "classifier.bias"],
        out="logits",
    )
    inputs = [
        _value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
        _value_info(
            "attention_mask", TensorProto.INT64, ["batch_size", "sequence_length"]
        ),
    ]
    outputs = [_value_info("logits", TensorProto.FLOAT, ["batch_size", labels])]
    graph = helper.make_graph(
        g.nodes, name, inputs, outputs, initializer=list(g.initializers.values())
    )
    return _finish_model(graph, opset)


def classifier_config(
    *,
    vocab_size: int,
    hidden_size: int,
    labels: Sequence[str],
    max_position_embeddings: int = 512,
    pad_token_id: int = 2,
) -> dict:
    """``config.json`` for ``build_classifier`` models (transformers-like fields)."""
    return {
        "architectures": ["CivitasBagOfEmbeddingsForSequenceClassification"],
        "model_type": "civitas-bow",
        "hidden_size": hidden_size,
        "id2label": {str(i): label for i, label in enumerate(labels)},
        "label2id": {label: i for i, label in enumerate(labels)},
        "max_position_embeddings": max_position_embeddings,
        "num_labels": len(labels),
        "pad_token_id": pad_token_id,
        "problem_type": "single_label_classification",
        "vocab_size": vocab_size,
    }


def build_tabular_model(
    features: np.ndarray, labels: np.ndarray, *, seed: int = 0, opset: int = 18
):
    """Fit a scikit-learn ``LogisticRegression`` and convert it with skl2onnx.

    Returns ``(onnx.ModelProto, fitted_classifier)``. The model takes
    ``input`` float ``[N, n_features]`` and outputs ``label`` and
    ``probabilities`` (``zipmap`` disabled, so a plain ``[N, classes]``
    tensor). Needs scikit-learn and skl2onnx (development dependencies);
    raises ``ImportError`` without them.
    """
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(features, dtype=np.float32)
    clf = LogisticRegression(max_iter=1000, random_state=seed).fit(x, labels)
    model = convert_sklearn(
        clf,
        initial_types=[("input", FloatTensorType([None, x.shape[1]]))],
        options={id(clf): {"zipmap": False}},
        target_opset={"": opset, "ai.onnx.ml": 3},
    )
    model.producer_name = PRODUCER
    return model, clf


def write_bundle(
    dest_dir: Path,
    model_proto: onnx.ModelProto,
    tokenizer=None,
    hf_config: dict | None = None,
    *,
    genai_config: dict | None = None,
    external_data: bool = False,
    generation_config: dict | None = None,
) -> Path:
    """Write a bundle directory laid out as Optimum (or the genai builder) does.

    Files: ``model.onnx`` (weights in ``model.onnx.data`` when
    ``external_data``), ``tokenizer.json`` + ``tokenizer_config.json`` when a
    tokenizer is given, ``config.json`` when ``hf_config`` is given,
    ``generation_config.json`` for causal LMs (derived from ``hf_config``
    unless given), ``genai_config.json`` when given. A stale
    ``model.onnx.data`` from an earlier write is removed. ``model_proto`` is
    not modified. Returns ``dest_dir``.
    """
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    data_path = dest / "model.onnx.data"
    if data_path.exists():
        data_path.unlink()
    if external_data:
        copy = onnx.ModelProto()
        copy.CopyFrom(model_proto)
        onnx.save_model(
            copy,
            str(dest / "model.onnx"),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data_path.name,
            size_threshold=1024,
        )
    else:
        onnx.save_model(model_proto, str(dest / "model.onnx"))
    if tokenizer is not None:
        tokenizer.save(str(dest / "tokenizer.json"))
        _write_json(
            dest / "tokenizer_config.json", _tokenizer_config(tokenizer, hf_config)
        )
    if hf_config is not None:
        _write_json(dest / "config.json", hf_config)
        is_lm = any(
            a.endswith("ForCausalLM") for a in hf_config.get("architectures", [])
        )
        if generation_config is None and is_lm:
            generation_config = {
                "_from_model_config": True,
                "bos_token_id": hf_config.get("bos_token_id"),
                "eos_token_id": hf_config.get("eos_token_id"),
                "pad_token_id": hf_config.get("pad_token_id"),
                "transformers_version": hf_config.get("transformers_version"),
            }
    if generation_config is not None:
        _write_json(dest / "generation_config.json", generation_config)
    if genai_config is not None:
        _write_json(dest / "genai_config.json", genai_config)
    return dest


def _tokenizer_config(tokenizer, hf_config: dict | None) -> dict:
    config = hf_config or {}

    def token(key: str) -> str | None:
        index = config.get(key)
        return tokenizer.id_to_token(index) if isinstance(index, int) else None

    return {
        "add_bos_token": False,
        "add_eos_token": False,
        "bos_token": token("bos_token_id"),
        "clean_up_tokenization_spaces": False,
        "eos_token": token("eos_token_id"),
        "model_max_length": config.get("max_position_embeddings", 512),
        "pad_token": token("pad_token_id"),
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
