"""The training loss of ``modelgen``'s language models and its gradients, by hand.

NumPy only: ``lm_loss_and_grads`` runs the decoder forward (causal attention
without padding, positions ``0..T-1``) keeping what the backward pass needs,
then back-propagates through every layer. ``modelgen.train.train_lm`` steps
on these gradients; ``numpy_forward`` in ``modelgen.lm`` stays an independent
reference of the forward pass.
"""

from __future__ import annotations

import math

import numpy as np

from modelgen.lm import LMConfig, rope_inv_freq

_MASKED = -1e9


class _Backprop:
    """The decoder's forward pass with the caches its hand-written backward needs.

    Holds what one batch shares (rotary tables, causal mask, shapes); the
    arithmetic is NumPy in the dtype of the weights.
    """

    def __init__(self, cfg: LMConfig, weights: dict[str, np.ndarray], b: int, t: int):
        self.cfg, self.w, self.b, self.t = cfg, weights, b, t
        dtype = weights["embed_tokens"].dtype
        self.nh, self.nkv, self.d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.rep, self.half = self.nh // self.nkv, cfg.head_dim // 2
        self.hidden = cfg.hidden_size
        self.scale = 1.0 / math.sqrt(self.d)
        angles = np.arange(t)[:, None] * rope_inv_freq(cfg)[None, :]
        self.cos = np.cos(np.concatenate([angles, angles], axis=-1)).astype(dtype)
        self.sin = np.sin(np.concatenate([angles, angles], axis=-1)).astype(dtype)
        self.causal = np.tril(np.ones((t, t), dtype=bool))
        self.eps = cfg.rms_norm_eps

    def rope(self, x):
        half = self.half
        rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        return x * self.cos + rotated * self.sin

    def rope_back(self, g):
        gs = g * self.sin
        half = self.half
        return g * self.cos + np.concatenate([gs[..., half:], -gs[..., :half]], axis=-1)

    def rms(self, x, gain):
        r = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps)
        n = x * r
        return n * gain, (n, r)

    @staticmethod
    def rms_back(dy, gain, cache):
        n, r = cache
        dn = dy * gain
        dx = r * (dn - n * np.mean(dn * n, axis=-1, keepdims=True))
        return dx, (dy * n).reshape(-1, n.shape[-1]).sum(axis=0)

    def heads(self, x, count):
        return x.reshape(self.b, self.t, count, self.d).transpose(0, 2, 1, 3)

    def merge(self, x):
        return x.transpose(0, 2, 1, 3).reshape(self.b, self.t, -1)

    def layer(self, i: int, x):
        """Decoder layer ``i`` forward; returns ``(x, cache)``."""
        w, p = self.w, f"layers.{i}."
        h, c1 = self.rms(x, w[p + "input_layernorm"])
        qr = self.rope(self.heads(h @ w[p + "q_proj"], self.nh))
        kk = self.rope(self.heads(h @ w[p + "k_proj"], self.nkv))
        kk = np.repeat(kk, self.rep, axis=1)
        vv = np.repeat(self.heads(h @ w[p + "v_proj"], self.nkv), self.rep, axis=1)
        s = qr @ kk.transpose(0, 1, 3, 2) * self.scale
        s = np.where(self.causal, s, _MASKED)
        probs = np.exp(s - s.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        attn = self.merge(probs @ vv)
        x1 = x + attn @ w[p + "o_proj"]
        h2, c2 = self.rms(x1, w[p + "post_attention_layernorm"])
        gate, up = h2 @ w[p + "gate"], h2 @ w[p + "up"]
        sig = 1.0 / (1.0 + np.exp(-gate))
        act = gate * sig * up
        cache = (h, c1, qr, kk, vv, probs, attn, h2, c2, gate, up, sig, act)
        return x1 + act @ w[p + "down"], cache

    def mlp_back(self, i: int, dx, cache, grads: dict[str, np.ndarray]):
        """Gradients of layer ``i``'s MLP and second norm; returns ``dx1``."""
        w, p, bt, hidden = self.w, f"layers.{i}.", self.b * self.t, self.hidden
        _, _, _, _, _, _, _, h2, c2, gate, up, sig, act = cache
        flat_dx = dx.reshape(bt, hidden)
        grads[p + "down"] = act.reshape(bt, -1).T @ flat_dx
        dact = dx @ w[p + "down"].T
        dup = dact * gate * sig
        dgate = dact * up * sig * (1.0 + gate * (1.0 - sig))
        h2_flat = h2.reshape(bt, hidden)
        grads[p + "gate"] = h2_flat.T @ dgate.reshape(bt, -1)
        grads[p + "up"] = h2_flat.T @ dup.reshape(bt, -1)
        dh2 = dgate @ w[p + "gate"].T + dup @ w[p + "up"].T
        dx1, grads[p + "post_attention_layernorm"] = self.rms_back(
            dh2, w[p + "post_attention_layernorm"], c2
        )
        return dx1 + dx

    def attention_back(self, i: int, dx1, cache, grads: dict[str, np.ndarray]):
        """Gradients of layer ``i``'s attention and first norm; returns ``dx``."""
        w, p, bt, hidden = self.w, f"layers.{i}.", self.b * self.t, self.hidden
        b, t, nkv, rep, d = self.b, self.t, self.nkv, self.rep, self.d
        h, c1, qr, kk, vv, probs, attn, *_ = cache
        grads[p + "o_proj"] = attn.reshape(bt, -1).T @ dx1.reshape(bt, hidden)
        dout = self.heads(dx1 @ w[p + "o_proj"].T, self.nh)
        dprobs = dout @ vv.transpose(0, 1, 3, 2)
        dvv = probs.transpose(0, 1, 3, 2) @ dout
        ds = (
            probs * (dprobs - (dprobs * probs).sum(axis=-1, keepdims=True)) * self.scale
        )
        dq = self.rope_back(ds @ kk)
        dk = self.rope_back(
            (ds.transpose(0, 1, 3, 2) @ qr).reshape(b, nkv, rep, t, d).sum(axis=2)
        )
        dv = dvv.reshape(b, nkv, rep, t, d).sum(axis=2)
        h_flat = h.reshape(bt, hidden)
        dh = np.zeros_like(h)
        for name, dproj in (("q_proj", dq), ("k_proj", dk), ("v_proj", dv)):
            dflat = self.merge(dproj)
            grads[p + name] = h_flat.T @ dflat.reshape(bt, -1)
            dh += dflat @ w[p + name].T
        dxn, grads[p + "input_layernorm"] = self.rms_back(
            dh, w[p + "input_layernorm"], c1
        )
        return dx1 + dxn


def lm_loss_and_grads(
    cfg: LMConfig,
    weights: dict[str, np.ndarray],
    inputs: np.ndarray,
    targets: np.ndarray,
    *,
    need_grads: bool = True,
) -> tuple[float, dict[str, np.ndarray]]:
    """Mean next-token cross-entropy of ``targets`` given ``inputs`` and its gradients.

    ``inputs``/``targets`` are ``[B, T]`` ids; attention is causal with no
    padding and positions ``0..T-1``. Computes in the dtype of the weights
    (float64 for gradient checks). Gradients have the weights' names and
    shapes (a tied head adds its gradient to ``embed_tokens``). Returns an
    empty dict when ``need_grads`` is false.
    """
    w = weights
    b, t = inputs.shape
    net = _Backprop(cfg, w, b, t)
    x = w["embed_tokens"][inputs]
    caches = []
    for i in range(cfg.num_layers):
        x, cache = net.layer(i, x)
        caches.append(cache)
    final, cf = net.rms(x, w["norm"])
    head = w["embed_tokens"].T if cfg.tie_word_embeddings else w["lm_head"]
    logits = (final @ head).reshape(b * t, -1)
    logits -= logits.max(axis=-1, keepdims=True)
    log_z = np.log(np.exp(logits).sum(axis=-1))
    flat_targets = targets.reshape(-1)
    rows = np.arange(b * t)
    loss = float(np.mean(log_z - logits[rows, flat_targets]))
    if not need_grads:
        return loss, {}

    grads: dict[str, np.ndarray] = {}
    dlogits = np.exp(logits - log_z[:, None])
    dlogits[rows, flat_targets] -= 1.0
    dlogits /= b * t
    dhead = final.reshape(b * t, cfg.hidden_size).T @ dlogits
    dx, grads["norm"] = net.rms_back(
        (dlogits @ head.T).reshape(b, t, cfg.hidden_size), w["norm"], cf
    )
    for i in reversed(range(cfg.num_layers)):
        dx1 = net.mlp_back(i, dx, caches[i], grads)
        dx = net.attention_back(i, dx1, caches[i], grads)
    dembed = np.zeros_like(w["embed_tokens"])
    np.add.at(dembed, inputs.reshape(-1), dx.reshape(b * t, cfg.hidden_size))
    if cfg.tie_word_embeddings:
        dembed += dhead.T
    else:
        grads["lm_head"] = dhead
    grads["embed_tokens"] = dembed
    return loss, grads
