"""The onnxruntime-genai layout built with the builder's ``com.microsoft`` kernels.

``modelgen.graphs.build_causal_lm(layout="genai")`` reproduces the genai I/O
contract with standard operators only; this module reproduces the graph the
genai builder actually emits for CPU: ``GroupQueryAttention`` (rotary inside)
fed by one packed Q/K/V projection (the builder's default on CPU,
``make_packed_matmul``: the q, k and v weights concatenated along N, in that
order, as ``layers.{i}.qkv_proj``; the gate and up projections stay apart,
as ``fuse_mlp_gate_up`` is off by default) and, for int4/int8 precisions,
``MatMulNBits`` blockwise-quantised weights. Both kernels ship inside
onnxruntime (no custom operator library).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from modelgen.graphs import (
    _finish_model,
    _Graph,
    _rms_norm,
    _value_info,
)
from modelgen.lm import LMConfig, rope_inv_freq, weight_shapes


def quantize_blockwise(
    matrix: np.ndarray, *, bits: int = 4, block_size: int = 32
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symmetric round-to-nearest blockwise quantisation in ``MatMulNBits`` layout.

    ``matrix`` is ``[K, N]`` (``x @ W``). Returns ``(packed, scales,
    dequantized)``: ``packed`` uint8 ``[N, K / block_size, block_size * bits
    / 8]`` (two 4-bit values per byte, low nibble first), ``scales`` float32
    ``[N * K / block_size]``, and the ``[K, N]`` float32 matrix the kernel
    effectively multiplies by (for the NumPy reference). The zero point is
    the kernel's default ``2 ** (bits - 1)``. Raises ``ValueError`` when
    ``bits`` is not 4 or 8 or ``K`` is not a multiple of ``block_size``.
    """
    if bits not in (4, 8):
        raise ValueError("bits must be 4 or 8")
    k, n = matrix.shape
    if k % block_size:
        raise ValueError(f"K={k} is not a multiple of block_size={block_size}")
    half = 2 ** (bits - 1)
    blocks = np.asarray(matrix, dtype=np.float64).T.reshape(
        n, k // block_size, block_size
    )
    scales = np.abs(blocks).max(axis=-1) / (half - 1)
    scales = np.where(scales == 0, 1.0, scales).astype(np.float32)
    q = np.clip(np.round(blocks / scales[..., None]), -half, half - 1).astype(np.int32)
    stored = (q + half).astype(np.uint8)
    packed = stored if bits == 8 else (stored[..., 0::2] | (stored[..., 1::2] << 4))
    dequantized = (q * scales[..., None]).reshape(n, k).T.astype(np.float32)
    return packed.astype(np.uint8), scales.reshape(-1), dequantized


QKV_PARTS = ("q_proj", "k_proj", "v_proj")  # packed, in this order, as qkv_proj
_PROJECTIONS = ("qkv_proj", *QKV_PARTS, "o_proj", "gate", "up", "down")
# Bumped when the graph for the same weights changes (2: packed Q/K/V), so
# that caches of built bundles (bench/eval_throughput.py) are not reused.
GRAPH_REVISION = 2


def qkv_parts(name: str) -> tuple[str, ...] | None:
    """``layers.{i}.{q,k,v}_proj`` for a packed ``layers.{i}.qkv_proj``, else None."""
    if not name.endswith(".qkv_proj"):
        return None
    prefix = name.removesuffix("qkv_proj")
    return tuple(prefix + part for part in QKV_PARTS)


def packed_weights(
    cfg: LMConfig, weights: dict[str, np.ndarray], *, packed_qkv: bool = True
) -> dict[str, np.ndarray]:
    """The graph's float weights: each layer's q, k, v as one ``qkv_proj``
    (unless not ``packed_qkv``)."""
    if not packed_qkv:
        return {name: weights[name] for name in weight_shapes(cfg)}
    stored: dict[str, np.ndarray] = {}
    for name in weight_shapes(cfg):
        if name.endswith(QKV_PARTS[0]):
            packed = name.removesuffix(QKV_PARTS[0]) + "qkv_proj"
            parts = [weights[part] for part in qkv_parts(packed)]
            stored[packed] = np.concatenate(parts, axis=1)
        elif not name.endswith(QKV_PARTS[1:]):
            stored[name] = weights[name]
    return stored


def _contrib_weights(
    g: _Graph,
    cfg: LMConfig,
    weights: dict[str, np.ndarray],
    bits: int | None,
    block_size: int,
    packed_qkv: bool,
) -> dict[str, np.ndarray]:
    """Store the weights (projections quantised when ``bits``); the effective ones.

    The q, k and v weights are stored packed (``packed_weights``), and
    quantised packed as the builder does: blockwise quantisation is per
    output column, so their effective weights are the packed one's columns.
    """
    effective = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}
    for name, weight in packed_weights(cfg, weights, packed_qkv=packed_qkv).items():
        if bits is None or not name.endswith(_PROJECTIONS):
            g.weight(name, weight)
            continue
        packed, scales, dequantized = quantize_blockwise(
            weight, bits=bits, block_size=block_size
        )
        g.initializers[name] = numpy_helper.from_array(packed, name)
        g.initializers[name + ".scales"] = numpy_helper.from_array(
            scales, name + ".scales"
        )
        parts = qkv_parts(name) or (name,)
        edges = np.cumsum([weights[part].shape[1] for part in parts])[:-1]
        columns = np.split(dequantized, edges, axis=1)
        effective.update(zip(parts, columns, strict=True))
    return effective


def _contrib_signature(cfg: LMConfig) -> tuple[list, list]:
    """``(inputs, outputs)`` of the genai builder's graph."""
    inputs = [
        _value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
        _value_info(
            "attention_mask",
            TensorProto.INT64,
            ["batch_size", "past_sequence_length + sequence_length"],
        ),
    ]
    outputs = [
        _value_info(
            "logits",
            TensorProto.FLOAT,
            ["batch_size", "sequence_length", cfg.vocab_size],
        )
    ]
    past_shape = [
        "batch_size",
        cfg.num_kv_heads,
        "past_sequence_length",
        "kv_cache_dim",
    ]
    present_shape = [
        "batch_size",
        cfg.num_kv_heads,
        "total_sequence_length",
        "kv_cache_dim",
    ]
    for i in range(cfg.num_layers):
        past = [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
        present = [f"present.{i}.key", f"present.{i}.value"]
        inputs += [_value_info(n, TensorProto.FLOAT, past_shape) for n in past]
        outputs += [_value_info(n, TensorProto.FLOAT, present_shape) for n in present]
    return inputs, outputs


def _gqa_extras(g: _Graph, cfg: LMConfig) -> list[str]:
    """``GroupQueryAttention``'s ``seqlens_k``, total length, cos and sin caches."""
    angles = np.arange(cfg.max_position_embeddings)[:, None] * rope_inv_freq(cfg)
    cos = g.const(np.cos(angles), np.float32)
    sin = g.const(np.sin(angles), np.float32)
    lengths = g.op("ReduceSum", ["attention_mask", g.const([1])], keepdims=0)
    seqlens = g.op("Cast", [g.op("Sub", [lengths, g.const(1)])], to=TensorProto.INT32)
    total = g.op(
        "Cast",
        [g.op("Gather", [g.op("Shape", ["attention_mask"]), g.const([1])], axis=0)],
        to=TensorProto.INT32,
    )
    return [seqlens, total, cos, sin]


def _contrib_layer(
    g: _Graph,
    cfg: LMConfig,
    i: int,
    x: str,
    *,
    project,
    gqa_extras: list[str],
    packed_qkv: bool,
) -> str:
    """Append layer ``i``: ``GroupQueryAttention`` on the packed Q/K/V (its key
    and value inputs empty), then the SwiGLU MLP; returns x."""
    p = f"layers.{i}."
    past = [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
    present = [f"present.{i}.key", f"present.{i}.value"]
    h = _rms_norm(g, x, p + "input_layernorm", cfg.rms_norm_eps)
    if packed_qkv:
        qkv = [project(h, p + "qkv_proj"), "", ""]
    else:
        qkv = [project(h, p + part) for part in QKV_PARTS]
    attn = g.op(
        "GroupQueryAttention",
        [
            *qkv,
            *past,
            *gqa_extras,
        ],
        out=[g.fresh("gqa"), *present],
        domain="com.microsoft",
        num_heads=cfg.num_heads,
        kv_num_heads=cfg.num_kv_heads,
        do_rotary=1,
        rotary_interleaved=0,
    )[0]
    x = g.op("Add", [x, project(attn, p + "o_proj")])
    h = _rms_norm(g, x, p + "post_attention_layernorm", cfg.rms_norm_eps)
    gate = project(h, p + "gate")
    act = g.op(
        "Mul",
        [g.op("Mul", [gate, g.op("Sigmoid", [gate])]), project(h, p + "up")],
    )
    return g.op("Add", [x, project(act, p + "down")])


def build_genai_contrib(
    cfg: LMConfig,
    weights: dict[str, np.ndarray],
    *,
    bits: int | None = 4,
    block_size: int = 32,
    opset: int = 18,
    packed_qkv: bool = True,
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The ``genai`` layout with the builder's ``com.microsoft`` kernels.

    Attention is ``GroupQueryAttention`` (rotary inside, rotate-half, fed
    ``seqlens_k = ReduceSum(attention_mask) - 1`` and the total length, so
    right padding is exact) on one packed Q/K/V projection (three with
    ``packed_qkv=False``, the builder's ``fuse_qkv=false``); with ``bits``
    (4 or 8) every block projection is a ``MatMulNBits`` of
    ``quantize_blockwise`` weights, while the
    embedding and the head stay float32. Returns ``(model, effective
    weights)``: the weights with each projection replaced by what the kernel
    multiplies by, so ``numpy_forward`` on them reproduces the graph.
    Raises ``ValueError`` when the head size is not a multiple of 16
    (a ``GroupQueryAttention`` CPU requirement) or a quantised dimension is
    not a multiple of ``block_size``.
    """
    if cfg.head_dim % 16:
        raise ValueError("GroupQueryAttention needs a head size multiple of 16")
    g = _Graph()
    effective = _contrib_weights(g, cfg, weights, bits, block_size, packed_qkv)
    stored = packed_weights(cfg, weights, packed_qkv=packed_qkv)
    shapes = {name: w.shape for name, w in stored.items()}

    def project(x: str, name: str) -> str:
        if bits is None:
            return g.op("MatMul", [x, name])
        k, n = shapes[name]
        return g.op(
            "MatMulNBits",
            [x, name, name + ".scales"],
            domain="com.microsoft",
            K=k,
            N=n,
            bits=bits,
            block_size=block_size,
        )

    extras = _gqa_extras(g, cfg)
    x = g.op("Gather", ["embed_tokens", "input_ids"], axis=0)
    for i in range(cfg.num_layers):
        x = _contrib_layer(
            g, cfg, i, x, project=project, gqa_extras=extras, packed_qkv=packed_qkv
        )
    x = _rms_norm(g, x, "norm", cfg.rms_norm_eps)
    head = (
        g.op("Transpose", ["embed_tokens"], perm=[1, 0])
        if cfg.tie_word_embeddings
        else "lm_head"
    )
    g.op("MatMul", [x, head], out="logits")
    inputs, outputs = _contrib_signature(cfg)
    graph = helper.make_graph(
        g.nodes,
        "civitas_llama_genai_contrib",
        inputs,
        outputs,
        initializer=list(g.initializers.values()),
    )
    model = _finish_model(graph, opset, [helper.make_opsetid("com.microsoft", 1)])
    return model, effective
