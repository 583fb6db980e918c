"""Batch-1 greedy decoding through the KV cache (``CausalLM.generate``'s loop).

Every step runs the session through an ``IOBinding`` instead of
``InferenceSession.run``, so nothing is converted between NumPy and
``OrtValue`` or allocated per step that need not be:

* the new token, its position and ``use_cache_branch`` live in small NumPy
  arrays bound once as ``OrtValue`` views and written in place;
  ``attention_mask`` (all ones for batch 1) is bound as a pointer into one
  preallocated row of ones with the step's shape ``[1, total]``;
* a step's logits are written into one preallocated ``[1, 1, V]`` buffer
  (``V`` read from the prompt run's output) and only that row is read;
* **shared cache** (``CausalLM.shares_cache_buffers``, from the bundle's
  ``gqa_cache`` fact): when every ``present`` pair is written by a
  ``com.microsoft`` ``GroupQueryAttention`` that reads the matching ``past``
  pair, one buffer ``[1, kv_heads, length, D]`` per tensor
  is bound as both the ``past`` input and the ``present`` output.
  ONNX Runtime's CPU kernel then appends the step's key and value in place
  (``past_present_share_buffer``, decided by pointer equality of past and
  present in ``GQAAttentionBase::ApplyAttention``), instead of allocating a
  new present and copying the whole past into it every step; the present's
  length is ``max(total_sequence_length, past length)``, the buffer's, and
  the valid length comes from ``seqlens_k`` / ``total_sequence_length``,
  which the ``optimised`` and onnxruntime-genai graphs derive from
  ``attention_mask``. This is how onnxruntime-genai drives the same graphs.
  ``length`` is the prompt plus the budget less one (the last token is never
  fed back), at most the context length.
* **any other cache** (``Concat``-grown, ``If`` branches): the ``present``
  outputs are left to ONNX Runtime and bound, as ``OrtValue``, as the next
  step's ``past``, with no NumPy round trip.

Results equal the ``InferenceSession.run`` loop's (tests/engine/test_decode.py
keeps that loop as the reference). Thread spinning is unchanged:
``session.force_spinning_stop`` is a session setting, and
``run_with_iobinding`` goes through the same ``InferenceSession::Run``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import onnxruntime as ort


class _Feeds:
    """The small inputs of one ``greedy`` call, bound to ``binding``."""

    def __init__(self, lm: Any, binding: ort.IOBinding, length: int) -> None:
        self.lm, self.binding = lm, binding
        self.ids = np.zeros((1, 1), dtype=self._dtype(lm.ids_name, np.int64))
        self.mask_dtype = self._dtype(lm.mask_name, np.int64)
        self.ones = np.ones((1, length), dtype=self.mask_dtype)
        self.ones_address = self.ones.ctypes.data  # ``.ctypes`` costs ~5 us a call
        self.positions = np.zeros((1, 1), dtype=self._dtype(lm.position_name, np.int64))
        self.flag = np.zeros((1,), dtype=np.bool_)
        # Arrays behind bound OrtValues: an OrtValue made from a NumPy array
        # views its memory, so the array must outlive every run.
        self.keep: list[np.ndarray] = [self.ones]
        if "use_cache_branch" in lm.inputs:
            self._bind("use_cache_branch", self.flag)

    def _dtype(self, name: str, default: Any) -> Any:
        port = self.lm.inputs.get(name)
        return (port.dtype if port is not None else None) or default

    def _bind(self, name: str, array: np.ndarray) -> None:
        self.keep.append(array)
        self.binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array))

    def prompt(self, prompt: list[int]) -> None:
        """Bind the whole prompt, positions ``0..P-1``, ``use_cache_branch`` false."""
        lm = self.lm
        ids = np.asarray([prompt], dtype=self.ids.dtype)
        self._bind(lm.ids_name, ids)
        if lm.position_name in lm.inputs:
            self._bind(
                lm.position_name,
                np.arange(len(prompt))[None].astype(self.positions.dtype),
            )
        if "token_type_ids" in lm.inputs:
            self._bind("token_type_ids", np.zeros_like(ids))
        self.mask(len(prompt))

    def steps(self) -> None:
        """Bind the one-token arrays that ``step`` then writes in place."""
        lm = self.lm
        self._bind(lm.ids_name, self.ids)
        if lm.position_name in lm.inputs:
            self._bind(lm.position_name, self.positions)
        if "token_type_ids" in lm.inputs:
            self._bind("token_type_ids", np.zeros_like(self.ids))
        self.flag[0] = True

    def step(self, token: int, total: int) -> None:
        """The next token at position ``total - 1`` with ``total`` ones of mask."""
        self.ids[0, 0] = token
        self.positions[0, 0] = total - 1
        self.mask(total)

    def mask(self, total: int) -> None:
        if self.lm.mask_name in self.lm.inputs:
            self.binding.bind_input(
                self.lm.mask_name,
                "cpu",
                0,
                self.mask_dtype,
                [1, total],
                self.ones_address,
            )


def greedy(
    lm: Any, prompt: list[int], budget: int, stops: Iterable[int], *, shared: bool
) -> tuple[list[int], np.ndarray]:
    """Greedy continuation of ``prompt`` by ``lm`` (a ``CausalLM`` with a cache).

    At most ``budget`` (>= 1) new tokens, ``len(prompt) + budget`` within the
    context length; a token in ``stops`` ends generation unreturned.
    ``shared`` (``CausalLM.shares_cache_buffers``) selects the in-place cache.
    Returns the tokens and the logits row ``[V]`` of the last run.
    """
    stops = frozenset(stops)
    session = lm.session
    binding = session.io_binding()
    length = len(prompt) + budget - 1
    feeds = _Feeds(lm, binding, length)
    binding.bind_output(lm.logits_name, "cpu")
    feeds.keep.extend(_bind_cache(lm, binding, length, shared))
    names = [
        (past, present)
        for pasts, presents in zip(lm.past_names, lm.present_names, strict=True)
        for past, present in zip(pasts, presents, strict=True)
    ]
    feeds.prompt(prompt)
    session.run_with_iobinding(binding)
    lm.count_tokens(len(prompt))
    last = binding.get_outputs()[0].numpy()[0, -1]
    step_logits = np.empty((1, 1, last.shape[-1]), dtype=last.dtype)
    binding.bind_ortvalue_output(
        lm.logits_name, ort.OrtValue.ortvalue_from_numpy(step_logits)
    )
    feeds.steps()
    out: list[int] = []
    while True:  # returns from inside: the stop token or the budget
        token = int(np.argmax(last))
        if token in stops:
            return out, last
        out.append(token)
        if len(out) >= budget:
            return out, last
        if not shared:
            _pass_present_on(binding, names)
        feeds.step(token, len(prompt) + len(out))
        session.run_with_iobinding(binding)
        lm.count_tokens(1)
        last = step_logits[0, -1]


def _bind_cache(
    lm: Any, binding: ort.IOBinding, length: int, shared: bool
) -> list[np.ndarray]:
    """Bind the first run's cache: shared buffers of ``length``, or empty pasts
    with the presents left to ONNX Runtime. Returns the arrays bound."""
    arrays = []
    for pasts, presents in zip(lm.past_names, lm.present_names, strict=True):
        for past, present in zip(pasts, presents, strict=True):  # key, value
            dtype = lm.inputs[past].dtype or np.float32
            shape = (1, lm.kv_heads, length if shared else 0, lm.head_dim)
            array = np.zeros(shape, dtype=dtype)
            value = ort.OrtValue.ortvalue_from_numpy(array)
            binding.bind_ortvalue_input(past, value)
            if shared:
                binding.bind_ortvalue_output(present, value)
            else:
                binding.bind_output(present, "cpu")
            arrays.append(array)
    return arrays


def _pass_present_on(binding: ort.IOBinding, names: list[tuple[str, str]]) -> None:
    """Bind the last run's ``present`` values as the ``past`` inputs and let
    ONNX Runtime allocate the next presents (outputs 1.. in binding order,
    ``names``: the ``(past, present)`` pairs in that order)."""
    values = binding.get_outputs()[1:]
    for (past, present), value in zip(names, values, strict=True):
        binding.bind_ortvalue_input(past, value)
        binding.bind_output(present, "cpu")


def greedy_reference(
    lm: Any, prompt: list[int], budget: int, stops: Iterable[int]
) -> tuple[list[int], np.ndarray]:
    """``greedy`` as ``CausalLM.generate`` ran it before this module: one
    ``InferenceSession.run`` per step with NumPy inputs, each step's presents
    fed back as the next past. Kept as the reference that tests/engine/test_decode.py
    and bench/decode.py hold ``greedy`` to; same arguments and result (it
    drives ``CausalLM._run``, the one-run helper scoring also uses)."""
    stops = frozenset(stops)
    ids = np.asarray([prompt], dtype=np.int64)
    logits, past = lm._run(ids, np.ones_like(ids), None, use_cache=False)
    out: list[int] = []
    while True:
        token = int(np.argmax(logits[0, -1]))
        if token in stops:
            return out, logits[0, -1]
        out.append(token)
        if len(out) >= budget:
            return out, logits[0, -1]
        mask = np.ones((1, len(prompt) + len(out)), dtype=np.int64)
        step = np.asarray([[token]], dtype=np.int64)
        logits, past = lm._run(step, mask, past, use_cache=True)
