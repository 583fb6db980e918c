"""Llama-style language models made from scratch: config, weights, NumPy reference.

Civitas builds its own small models instead of downloading them, so the
engine and its tests always have real ONNX bundles to run. This module holds
the model definition shared by every path:

* ``LMConfig`` and its Llama ``config.json`` form;
* ``init_weights`` (the weight dictionary, Llama names);
* ``numpy_forward``, an independent float64 reference of the forward pass.

Graph construction (standard ops), bundle writing and classifiers live in
``modelgen.graphs``; the genai graph with ``com.microsoft`` kernels
(``GroupQueryAttention``, ``MatMulNBits``) in ``modelgen.genai``; the training
loss and its hand-written gradients in ``modelgen.backprop``; tokenizer and
model training, the shipped corpus and ``demo_models`` in ``modelgen.train``.
The package re-exports all of them, so ``import modelgen`` reaches the whole
toolkit.

Weight convention: every projection is stored ``[in_features, out_features]``
so the forward pass is ``x @ W`` (ONNX ``MatMul`` without a transpose).
``embed_tokens`` is ``[vocab, hidden]``; ``lm_head`` is ``[hidden, vocab]``
and is absent when embeddings are tied (the head is then ``embed_tokens.T``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

TRANSFORMERS_VERSION = "4.57.6"


@dataclass
class LMConfig:
    """Hyper-parameters of a Llama-style decoder.

    Invariants (checked by ``validate``): ``hidden_size`` divides by
    ``num_heads`` into an even head size, and ``num_heads`` is a multiple of
    ``num_kv_heads`` (grouped-query attention).
    """

    vocab_size: int = 512
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 172
    max_position_embeddings: int = 256
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    bos_token_id: int = 0
    eos_token_id: int = 1
    pad_token_id: int = 2

    def __post_init__(self) -> None:
        self.validate()

    @property
    def head_dim(self) -> int:
        """Size of one attention head."""
        return self.hidden_size // self.num_heads

    def validate(self) -> None:
        """Check the shape invariants.

        Raises ``ValueError`` naming the first violated one.
        """
        if min(self.vocab_size, self.hidden_size, self.num_layers) < 1:
            raise ValueError("vocab_size, hidden_size and num_layers must be >= 1")
        if self.num_heads < 1 or self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be a multiple of num_heads")
        if self.head_dim % 2:
            raise ValueError("head size must be even for rotary embeddings")
        if self.num_kv_heads < 1 or self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
        if self.max_position_embeddings < 2:
            raise ValueError("max_position_embeddings must be >= 2")

    def to_hf_config(self) -> dict:
        """The Llama ``config.json`` dict that transformers would write.

        Loadable by ``transformers.LlamaConfig``; ``head_dim`` is explicit so
        readers never have to derive it.
        """
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "attention_bias": False,
            "attention_dropout": 0.0,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "hidden_size": self.hidden_size,
            "initializer_range": 0.02,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "mlp_bias": False,
            "num_attention_heads": self.num_heads,
            "num_hidden_layers": self.num_layers,
            "num_key_value_heads": self.num_kv_heads,
            "pretraining_tp": 1,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_scaling": None,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": "float32",
            "transformers_version": TRANSFORMERS_VERSION,
            "use_cache": True,
            "vocab_size": self.vocab_size,
        }

    @classmethod
    def from_hf_config(cls, config: dict) -> LMConfig:
        """Read back a Llama ``config.json`` dict (the inverse of ``to_hf_config``).

        Raises ``KeyError`` when a required field is missing.
        """
        heads = int(config["num_attention_heads"])
        return cls(
            vocab_size=int(config["vocab_size"]),
            hidden_size=int(config["hidden_size"]),
            num_layers=int(config["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(config.get("num_key_value_heads") or heads),
            intermediate_size=int(config["intermediate_size"]),
            max_position_embeddings=int(config["max_position_embeddings"]),
            rope_theta=float(config.get("rope_theta", 10000.0)),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            bos_token_id=int(config.get("bos_token_id", 0)),
            eos_token_id=int(config.get("eos_token_id", 1)),
            pad_token_id=int(config.get("pad_token_id", 2)),
        )

    def to_dict(self) -> dict:
        """Plain field dict (for logs and fixtures)."""
        return asdict(self)

    def parameter_count(self) -> int:
        """Number of weights, counting a tied embedding once."""
        h, d = self.hidden_size, self.head_dim
        attn = h * self.num_heads * d * 2 + h * self.num_kv_heads * d * 2
        mlp = 3 * h * self.intermediate_size
        per_layer = attn + mlp + 2 * h
        head = 0 if self.tie_word_embeddings else h * self.vocab_size
        return self.vocab_size * h + self.num_layers * per_layer + h + head


def weight_shapes(cfg: LMConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor ``init_weights`` returns, in a stable order."""
    h, d = cfg.hidden_size, cfg.head_dim
    shapes: dict[str, tuple[int, ...]] = {"embed_tokens": (cfg.vocab_size, h)}
    for i in range(cfg.num_layers):
        p = f"layers.{i}."
        shapes[p + "input_layernorm"] = (h,)
        shapes[p + "q_proj"] = (h, cfg.num_heads * d)
        shapes[p + "k_proj"] = (h, cfg.num_kv_heads * d)
        shapes[p + "v_proj"] = (h, cfg.num_kv_heads * d)
        shapes[p + "o_proj"] = (cfg.num_heads * d, h)
        shapes[p + "post_attention_layernorm"] = (h,)
        shapes[p + "gate"] = (h, cfg.intermediate_size)
        shapes[p + "up"] = (h, cfg.intermediate_size)
        shapes[p + "down"] = (cfg.intermediate_size, h)
    shapes["norm"] = (h,)
    if not cfg.tie_word_embeddings:
        shapes["lm_head"] = (h, cfg.vocab_size)
    return shapes


def init_weights(
    cfg: LMConfig, seed: int, *, residual_scale: float = 1.0
) -> dict[str, np.ndarray]:
    """Random float32 weights with Llama names (see the module docstring).

    Projections are N(0, 1/fan_in); ``o_proj`` and ``down`` are further scaled
    by ``residual_scale / sqrt(2 * num_layers)`` so a deep stack starts close
    to the identity (GPT-2's residual scaling); norm gains start at 1. The
    embedding has unit variance, except when tied, where ``hidden ** -0.25``
    keeps the initial logits of the shared head moderate. Deterministic in
    ``seed``.
    """
    rng = np.random.default_rng(seed)
    out_scale = residual_scale / math.sqrt(2 * cfg.num_layers)
    weights: dict[str, np.ndarray] = {}
    for name, shape in weight_shapes(cfg).items():
        if name.endswith("norm") or name.endswith("layernorm"):
            value = np.ones(shape)
        elif name == "embed_tokens":
            std = cfg.hidden_size**-0.25 if cfg.tie_word_embeddings else 1.0
            value = rng.normal(0.0, std, shape)
        else:
            value = rng.normal(0.0, 1.0 / math.sqrt(shape[0]), shape)
            if name.endswith(("o_proj", "down")):
                value *= out_scale
        weights[name] = value.astype(np.float32)
    return weights


def lm_head_matrix(cfg: LMConfig, weights: dict[str, np.ndarray]) -> np.ndarray:
    """The ``[hidden, vocab]`` output projection, tied or not."""
    if cfg.tie_word_embeddings:
        return weights["embed_tokens"].T
    return weights["lm_head"]


def rope_inv_freq(cfg: LMConfig) -> np.ndarray:
    """Llama rotary frequencies ``theta ** (-2i / head_dim)``, float64."""
    d = cfg.head_dim
    return 1.0 / (cfg.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d))


def default_position_ids(attention_mask: np.ndarray) -> np.ndarray:
    """Positions as transformers derives them: ``cumsum(mask) - 1``, pads at 1.

    With right padding this is ``arange`` over the real tokens, so every
    layout (explicit ``position_ids`` or derived in-graph) agrees there.
    """
    mask = np.asarray(attention_mask, dtype=np.int64)
    pos = np.cumsum(mask, axis=-1) - 1
    return np.where(mask == 0, 1, pos)


def numpy_forward(
    cfg: LMConfig,
    weights: dict[str, np.ndarray],
    input_ids: np.ndarray,
    attention_mask: np.ndarray | None = None,
    position_ids: np.ndarray | None = None,
) -> np.ndarray:
    """Reference Llama forward in float64: ``[B, T]`` ids -> ``[B, T, V]`` logits.

    Written independently of the ONNX graph (per-head loops, explicit
    ``repeat`` of key/value heads) so that the two can check each other.
    A key position is visible when it is not later than the query and its
    mask entry is 1; a fully masked query row attends uniformly, as in
    transformers with ``finfo.min``. Raises ``ValueError`` on shape mismatch.
    """
    ids = np.asarray(input_ids, dtype=np.int64)
    if ids.ndim != 2:
        raise ValueError("input_ids must be [batch, sequence]")
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask)
    if mask.shape != ids.shape:
        raise ValueError("attention_mask must match input_ids")
    pos = default_position_ids(mask) if position_ids is None else position_ids
    w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    b, t = ids.shape
    nh, nkv, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    angles = np.asarray(pos, dtype=np.float64)[..., None] * rope_inv_freq(cfg)
    cos = np.cos(np.concatenate([angles, angles], axis=-1))  # [B, T, D]
    sin = np.sin(np.concatenate([angles, angles], axis=-1))

    def rope(x: np.ndarray) -> np.ndarray:  # x: [B, T, D]
        half = d // 2
        rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        return x * cos + rotated * sin

    def rms(x: np.ndarray, gain: np.ndarray) -> np.ndarray:
        var = np.mean(x * x, axis=-1, keepdims=True)
        return x / np.sqrt(var + cfg.rms_norm_eps) * gain

    causal = np.tril(np.ones((t, t), dtype=bool))
    visible = causal[None, :, :] & (mask[:, None, :] == 1)  # [B, Tq, Tk]
    x = w["embed_tokens"][ids]
    for i in range(cfg.num_layers):
        p = f"layers.{i}."
        h = rms(x, w[p + "input_layernorm"])
        q = (h @ w[p + "q_proj"]).reshape(b, t, nh, d)
        k = (h @ w[p + "k_proj"]).reshape(b, t, nkv, d)
        v = (h @ w[p + "v_proj"]).reshape(b, t, nkv, d)
        k = np.repeat(k, nh // nkv, axis=2)
        v = np.repeat(v, nh // nkv, axis=2)
        heads = []
        for j in range(nh):
            qj, kj = rope(q[:, :, j]), rope(k[:, :, j])
            scores = qj @ kj.transpose(0, 2, 1) / math.sqrt(d)
            scores = np.where(visible, scores, np.finfo(np.float32).min)
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            heads.append(probs @ v[:, :, j])
        x = x + np.concatenate(heads, axis=-1) @ w[p + "o_proj"]
        h = rms(x, w[p + "post_attention_layernorm"])
        gate = h @ w[p + "gate"]
        x = x + (gate / (1.0 + np.exp(-gate)) * (h @ w[p + "up"])) @ w[p + "down"]
    return rms(x, w["norm"]) @ lm_head_matrix(cfg, w)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log-softmax over the last axis (dtype preserved)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
