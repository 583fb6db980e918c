"""The causal language model adapter (``runtime.load_model`` returns it for LMs).

``CausalLM`` drives a decoder-only ONNX graph in any of the layouts real
exporters produce (Optimum with cache, Optimum 1.x merged, onnxruntime-genai,
plain without cache), binding every input and output by name. Scoring follows
lm-evaluation-harness semantics; generation is greedy through the KV cache.
Sessions and the shared helpers come from ``engine.session``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from engine.decode import greedy
from engine.session import (
    RowRuns,
    RuntimeCheckError,
    RuntimeSettings,
    first_int,
    id_set,
    ports,
    rows_per_run,
)

_PRESENT_RE = re.compile(r"^present(?:_key_values)?\.(\d+)\.(key|value)$")
DEFAULT_CONTEXT_LENGTH = 2048
SELFTEST_TOLERANCE = 1e-4
DYNAMIC_QUANT_RELATIVE_TOLERANCE = 0.05


class CausalLM(RowRuns):
    """Decoder-only LM behind one ONNX session (Optimum, merged, genai or plain).

    Scoring batches right-padded sequences (exact for every layout; left
    padding is not, see the reference notes) and feeds an empty cache.
    ``generate`` uses the KV cache when the graph has one. ``tokens_processed``
    counts every real (unpadded) token fed to the session. BOS, EOS, pad and
    the context length come from ``generation_config.json``, ``config.json``
    then ``genai_config.json`` (context length defaults to
    ``DEFAULT_CONTEXT_LENGTH`` when none says). Construction raises
    ``RuntimeCheckError`` for inputs it cannot feed, a missing logits or
    present output, or a KV shape it cannot resolve. Not thread-safe (one
    model per worker thread). ``gqa_cache`` (``load_model`` passes the
    bundle's fact of that name) decides ``shares_cache_buffers``; without it
    generation takes the generic cache path. ``row_session`` (``load_model``
    gives one to graphs quantised at run time) opens the session their
    concurrent one-row scoring runs use (``_scoring_session``).
    """

    MAX_LOGIT_BYTES = 512 * 1024**2

    def __init__(
        self,
        session: ort.InferenceSession,
        tokenizer: Tokenizer,
        *,
        config: dict | None = None,
        generation_config: dict | None = None,
        genai_config: dict | None = None,
        settings: RuntimeSettings | None = None,
        layout: str | None = None,
        dynamic_quantisation: bool = False,
        gqa_cache: Iterable[Sequence[str]] = (),
        row_session: Callable[[], ort.InferenceSession] | None = None,
    ) -> None:
        self.session = session
        self._open_row_session = row_session
        self.dynamic_quantisation = dynamic_quantisation
        self.tokenizer = tokenizer
        self.settings = settings
        self.tokens_processed = 0
        self._count_lock = threading.Lock()
        config = config or {}
        generation = generation_config or {}
        genai_model = (genai_config or {}).get("model", {}) or {}
        decoder = genai_model.get("decoder", {}) or {}
        self.inputs = ports(session.get_inputs())
        self.outputs = ports(session.get_outputs())
        self._bind_inputs(decoder)
        self._bind_outputs(decoder)
        # Names of every run, listed once (a decode step is ~4 ms at int4).
        self._past_flat = [n for pair in self.past_names for n in pair]
        self._wanted = [self.logits_name] + [n for p in self.present_names for n in p]
        self.layout = layout or self._detect_layout(bool(genai_config))

        vocab_dim = self.outputs[self.logits_name].shape[-1:] or (None,)
        self.vocab_size = (
            vocab_dim[0]
            if isinstance(vocab_dim[0], int)
            else first_int(config.get("vocab_size"), genai_model.get("vocab_size"))
            or tokenizer.get_vocab_size()
        )
        self.context_length = (
            first_int(
                config.get("max_position_embeddings"),
                config.get("n_positions"),
                config.get("max_sequence_length"),
                genai_model.get("context_length"),
            )
            or DEFAULT_CONTEXT_LENGTH
        )
        self._bind_special_ids(generation, config, genai_model)
        self.kv_heads, self.head_dim = self._kv_shape(config, decoder)
        self.shares_cache_buffers = self._shares_cache_buffers(gqa_cache)

    def _bind_special_ids(
        self, generation: dict, config: dict, genai_model: dict
    ) -> None:
        """EOS, BOS and pad ids from ``generation_config.json``, ``config.json``
        then ``genai_config.json``; raises ``RuntimeCheckError`` with no BOS
        and no EOS."""
        eos_sources = (
            generation.get("eos_token_id"),
            config.get("eos_token_id"),
            genai_model.get("eos_token_id"),
        )
        self.eos_token_id = first_int(*eos_sources)
        self.eos_token_ids = id_set(*eos_sources)
        # As lm-evaluation-harness: the configured BOS, else the EOS token.
        # Guessing a BOS from the tokenizer's vocabulary would score every
        # first token against a token the model may never have been given.
        bos = first_int(
            generation.get("bos_token_id"),
            config.get("bos_token_id"),
            genai_model.get("bos_token_id"),
            self.eos_token_id,
        )
        if bos is None:
            raise RuntimeCheckError(
                "no BOS or EOS token: set bos_token_id or eos_token_id in config.json"
            )
        self.bos_token_id = int(bos)
        self.pad_token_id = first_int(
            generation.get("pad_token_id"),
            config.get("pad_token_id"),
            genai_model.get("pad_token_id"),
        )
        if self.pad_token_id is None:
            self.pad_token_id = (
                self.eos_token_id if self.eos_token_id is not None else 0
            )

    def _bind_inputs(self, decoder: dict) -> None:
        names = decoder.get("inputs", {}) or {}
        self.ids_name = names.get("input_ids", "input_ids")
        self.mask_name = names.get("attention_mask", "attention_mask")
        self.position_name = names.get("position_ids", "position_ids")
        if self.ids_name not in self.inputs:
            raise RuntimeCheckError(f"the model has no input {self.ids_name!r}")
        past_key = names.get("past_key_names", "past_key_values.%d.key")
        past_value = names.get("past_value_names", "past_key_values.%d.value")
        self.past_names: list[tuple[str, str]] = []
        layer = 0
        while (past_key % layer) in self.inputs and (past_value % layer) in self.inputs:
            self.past_names.append((past_key % layer, past_value % layer))
            layer += 1
        known = {self.ids_name, self.mask_name, self.position_name, "use_cache_branch"}
        known.update(n for pair in self.past_names for n in pair)
        unknown = sorted(set(self.inputs) - known - {"token_type_ids"})
        if unknown:
            raise RuntimeCheckError(f"unsupported model inputs: {unknown}")

    def _bind_outputs(self, decoder: dict) -> None:
        names = decoder.get("outputs", {}) or {}
        logits = names.get("logits", "logits")
        if logits not in self.outputs:
            rank3 = [p.name for p in self.outputs.values() if len(p.shape) == 3]
            if not rank3:
                raise RuntimeCheckError("the model has no logits output")
            logits = rank3[0]
        self.logits_name = logits
        key_t = names.get("present_key_names", "present.%d.key")
        value_t = names.get("present_value_names", "present.%d.value")
        self.present_names: list[tuple[str, str]] = []
        for i in range(len(self.past_names)):
            pair = (key_t % i, value_t % i)
            if not all(n in self.outputs for n in pair):
                found = {
                    (int(m[1]), m[2]): n
                    for n in self.outputs
                    if (m := _PRESENT_RE.match(n))
                }
                pair = (found.get((i, "key")), found.get((i, "value")))
            if None in pair:
                raise RuntimeCheckError(f"no present output for cache layer {i}")
            self.present_names.append(pair)

    def _detect_layout(self, has_genai: bool) -> str:
        if has_genai:
            return "genai"
        if "use_cache_branch" in self.inputs:
            return "optimum_merged"
        return "optimum" if self.past_names else "plain"

    def _kv_shape(self, config: dict, decoder: dict) -> tuple[int, int]:
        if not self.past_names:
            return 0, 0
        shape = self.inputs[self.past_names[0][0]].shape
        if len(shape) != 4:
            raise RuntimeCheckError(f"KV cache inputs must be rank 4, got {shape}")
        heads = first_int(
            config.get("num_attention_heads"),
            config.get("n_head"),
            decoder.get("num_attention_heads"),
        )
        kv_heads = (
            shape[1]
            if isinstance(shape[1], int)
            else first_int(
                config.get("num_key_value_heads"),
                decoder.get("num_key_value_heads"),
                heads,
            )
        )
        hidden = first_int(config.get("hidden_size"), config.get("n_embd"))
        head_dim = (
            shape[3]
            if isinstance(shape[3], int)
            else first_int(
                decoder.get("head_size"),
                config.get("head_dim"),
                hidden // heads if hidden and heads else None,
            )
        )
        if not kv_heads or not head_dim:
            raise RuntimeCheckError(
                "cannot resolve the KV cache shape from the configs"
            )
        return int(kv_heads), int(head_dim)

    @property
    def has_cache(self) -> bool:
        """Whether the graph takes and returns a KV cache."""
        return bool(self.past_names)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    @cached_property
    def special_prefix(self) -> list[int]:
        """Ids the tokenizer's post-processor puts before a text, often ``[]``.

        ``[BOS]`` for a Llama- or Gemma-style ``TemplateProcessing``
        (``"<s> $A"``); tokens it appends after the text (an EOS) are left out,
        since a context is always followed by its continuation.
        """
        probe = "a"
        plain = self.encode(probe)
        full = list(self.tokenizer.encode(probe, add_special_tokens=True).ids)
        for start in range(len(full) - len(plain) + 1):
            if full[start : start + len(plain)] == plain:
                return full[:start]
        return []

    def encode_context(self, text: str) -> list[int]:
        """Token ids of a context as the tokenizer says: ``special_prefix + encode``.

        As lm-evaluation-harness (``tok_encode`` with the tokenizer's default),
        a text that already starts with the prefix's text gets no second copy.
        """
        prefix = self.special_prefix
        if prefix and text.startswith(
            self.tokenizer.decode(prefix, skip_special_tokens=False)
        ):
            prefix = []
        return [*prefix, *self.encode(text)]

    def conditioning_ids(self) -> list[int]:
        """What an empty context means: the tokenizer's prefix, else the config's BOS.

        The first token of a text is scored given these ids; they are never
        scored themselves.
        """
        return list(self.special_prefix) or [self.bos_token_id]

    def scoring_batch_size(self, batch_size: int) -> int:
        """Sequences per session run when scoring with ``batch_size``.

        A graph that quantises its activations at run time computes one scale
        per tensor, over every row and the padding of the batch, so its
        log-likelihoods would depend on the batch; it is scored one sequence
        at a time, unpadded. Any other graph scores ``batch_size`` rows.
        """
        return rows_per_run(batch_size, dynamic_quantisation=self.dynamic_quantisation)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, special tokens skipped."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

    def _empty_past(self, batch: int) -> list[np.ndarray]:
        shape = (batch, self.kv_heads, 0, self.head_dim)
        return [
            np.zeros(shape, dtype=self.inputs[name].dtype or np.float32)
            for pair in self.past_names
            for name in pair
        ]

    def _run(
        self,
        ids: np.ndarray,
        mask: np.ndarray,
        past: list[np.ndarray] | None,
        *,
        use_cache: bool,
        session: ort.InferenceSession | None = None,
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """One run of ``session`` (default ``self.session``); positions follow
        the mask (``cumsum - 1``)."""
        batch, seq = ids.shape
        feed: dict[str, np.ndarray] = {
            self.ids_name: ids.astype(
                self.inputs[self.ids_name].dtype or np.int64, copy=False
            )
        }
        if self.mask_name in self.inputs:
            feed[self.mask_name] = mask.astype(
                self.inputs[self.mask_name].dtype or np.int64, copy=False
            )
        if self.position_name in self.inputs:
            positions = np.cumsum(mask, axis=1)[:, -seq:] - 1
            positions = np.where(mask[:, -seq:] == 0, 1, positions)
            feed[self.position_name] = positions.astype(
                self.inputs[self.position_name].dtype or np.int64
            )
        if "token_type_ids" in self.inputs:
            feed["token_type_ids"] = np.zeros_like(feed[self.ids_name])
        if self.past_names:
            tensors = past if past is not None else self._empty_past(batch)
            feed.update(zip(self._past_flat, tensors, strict=True))
        if "use_cache_branch" in self.inputs:
            feed["use_cache_branch"] = np.array([use_cache], dtype=np.bool_)
        results = (session or self.session).run(self._wanted, feed)
        self.count_tokens(int(mask[:, -seq:].sum()))
        return results[0], results[1:]

    def count_tokens(self, count: int) -> None:
        """Add ``count`` real tokens fed to the session to ``tokens_processed``."""
        with self._count_lock:  # scoring runs rows on several threads
            self.tokens_processed += count

    def _shares_cache_buffers(self, gqa_cache: Iterable[Sequence[str]]) -> bool:
        """Whether every cache write is a ``GroupQueryAttention`` reading the
        matching past (``gqa_cache``: its ``[past_key, past_value, present_key,
        present_value]`` quadruples, ``bundle.GraphFacts.gqa_cache``): generation
        then updates one buffer per cache tensor in place."""
        quads = {tuple(quad) for quad in gqa_cache}
        return bool(self.past_names) and all(
            (*past, *present) in quads
            for past, present in zip(self.past_names, self.present_names, strict=True)
        )

    def _check_ids(self, seq: Sequence[int]) -> None:
        if not len(seq):
            raise ValueError("empty token sequence")
        if len(seq) > self.context_length:
            raise ValueError(
                f"sequence of {len(seq)} tokens exceeds the context length "
                f"{self.context_length}"
            )
        if min(seq) < 0 or max(seq) >= self.vocab_size:
            raise ValueError("token id outside the model's vocabulary")

    def _padded(self, batch: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        width = max(len(s) for s in batch)
        ids = np.full((len(batch), width), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        return ids, mask

    def logits(
        self,
        batch: Sequence[Sequence[int]],
        *,
        session: ort.InferenceSession | None = None,
    ) -> list[np.ndarray]:
        """Raw float32 logits ``[T_i, V]`` per sequence (right-padded batch run).

        Runs ``session`` (default ``self.session``). Splits the batch so
        that one run's logits stay under ``MAX_LOGIT_BYTES``. Raises
        ``ValueError`` for an empty sequence, one longer than
        ``context_length``, or an id outside the vocabulary.
        """
        for seq in batch:
            self._check_ids(seq)
        out: list[np.ndarray] = []
        start = 0
        while start < len(batch):
            width = max(len(s) for s in batch[start:])
            rows = max(1, self.MAX_LOGIT_BYTES // max(1, width * self.vocab_size * 4))
            chunk = batch[start : start + rows]
            ids, mask = self._padded(chunk)
            logits, _ = self._run(ids, mask, None, use_cache=False, session=session)
            out.extend(
                np.asarray(logits[row, : len(seq)], dtype=np.float32)
                for row, seq in enumerate(chunk)
            )
            start += len(chunk)
        return out

    def forward(self, batch: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Per-sequence float32 log-softmax ``[T_i, V]`` of a right-padded batch.

        Row ``t`` is the distribution of the token after position ``t``.
        Raises as ``logits``.
        """
        return [_log_softmax(x) for x in self.logits(batch)]

    def loglikelihood(
        self,
        requests: Sequence[tuple[Sequence[int], Sequence[int]]],
        *,
        batch_size: int = 8,
    ) -> list[tuple[float, bool, list[float]]]:
        """``(sum ll, is_greedy, per-token ll)`` of each continuation given its context.

        lm-evaluation-harness semantics: an empty context conditions on
        ``conditioning_ids()`` (BOS);
        the model reads ``(context + continuation)[-(L + 1):][:-1]`` with ``L``
        the context length (the context is left-truncated); ``is_greedy`` is
        true when every continuation token is the argmax. Requests run longest
        first in batches of ``scoring_batch_size(batch_size)`` and come back in
        input order, so the result does not depend on ``batch_size``. An
        empty continuation scores ``(0.0, True, [])``. Raises ``ValueError``
        when a continuation alone is longer than ``L``.
        """
        length = self.context_length
        prepared: list[tuple[list[int], list[int]] | None] = []
        for context, continuation in requests:
            cont = [int(t) for t in continuation]
            if not cont:
                prepared.append(None)
                continue
            if len(cont) > length:
                raise ValueError(
                    f"continuation of {len(cont)} tokens exceeds the context "
                    f"length {length}"
                )
            ctx = [int(t) for t in context] or self.conditioning_ids()
            prepared.append(((ctx + cont)[-(length + 1) :][:-1], cont))
        results: list[tuple[float, bool, list[float]] | None] = [
            (0.0, True, []) if p is None else None for p in prepared
        ]
        order = sorted(
            (i for i, p in enumerate(prepared) if p is not None),
            key=lambda i: -len(prepared[i][0]),
        )
        step = self.scoring_batch_size(batch_size)
        chunks = [order[start : start + step] for start in range(0, len(order), step)]
        session = self._scoring_session(step)

        def score(chunk: list[int]) -> list[tuple[int, tuple]]:
            logits = self.logits([prepared[i][0] for i in chunk], session=session)
            pairs = [(x, prepared[i][1]) for i, x in zip(chunk, logits, strict=True)]
            return list(zip(chunk, self._map(_continuation_scores, pairs), strict=True))

        # Run-time quantised graphs run one row at a time (``rows_per_run``):
        # those rows run concurrently, each on its own caller thread.
        for scored in self._map(score, chunks, parallel=step == 1):
            for i, result in scored:
                results[i] = result
        return [r if r is not None else (0.0, True, []) for r in results]

    def rolling_windows(
        self, token_ids: Sequence[int]
    ) -> list[tuple[list[int], list[int]]]:
        """lm-evaluation-harness rolling windows (``context_len=1``), made disjoint.

        Each token appears in exactly one continuation; the first window's
        context is ``conditioning_ids()`` (BOS, never scored) and every later
        one sees up to ``context_length`` preceding tokens.
        """
        tokens = [int(t) for t in token_ids]
        length = self.context_length
        if not tokens:
            return []
        first = min(length, len(tokens))
        windows = [(self.conditioning_ids(), tokens[:first])]
        predicted = first
        while predicted < len(tokens):
            window_len = min(len(tokens) - predicted, length)
            end = predicted + window_len
            context = tokens[end - length - 1 : end - 1]
            continuation = tokens[end - window_len : end]
            windows.append(
                (context[: len(context) - (len(continuation) - 1)], continuation)
            )
            predicted += window_len
        return windows

    def loglikelihood_rolling(
        self, token_ids: Sequence[int], *, batch_size: int = 8
    ) -> list[float]:
        """Log-likelihood of every token of ``token_ids``, each scored once.

        ``token_ids`` come from ``encode`` (no special tokens): the first token
        is conditioned on ``conditioning_ids()``; texts longer than the context
        length are split by ``rolling_windows``. Returns one float per token
        (empty for no tokens).
        """
        windows = self.rolling_windows(token_ids)
        scored = self.loglikelihood(windows, batch_size=batch_size)
        return [ll for _, _, per_token in scored for ll in per_token]

    def generate(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        stop_ids: Iterable[int] | None = None,
        use_cache: bool = True,
    ) -> list[int]:
        """Greedy continuation of ``prompt_ids`` (batch 1), without the prompt.

        ``stop_ids=None`` stops at the EOS ids; an empty collection never
        stops early. The stop token ends generation and is not returned. An
        empty prompt starts from BOS. The prompt is left-truncated to
        ``context_length - max_new_tokens`` tokens (at least one), and
        generation ends at the context length. With a KV cache the new
        token's ``present`` tensors become the next ``past_key_values``
        (``use_cache_branch`` true after the first step); ``use_cache=False``
        or a graph without cache recomputes the whole sequence each step.
        The cached loop is ``engine.decode.greedy`` (``IOBinding``, one
        in-place cache buffer when ``shares_cache_buffers``).
        """
        stops = (
            set(self.eos_token_ids) if stop_ids is None else {int(s) for s in stop_ids}
        )
        prompt = [int(t) for t in prompt_ids] or [self.bos_token_id]
        keep = max(1, self.context_length - max(0, int(max_new_tokens)))
        prompt = prompt[-keep:]
        self._check_ids(prompt)
        budget = min(int(max_new_tokens), self.context_length - len(prompt))
        out: list[int] = []
        if budget <= 0:
            return out
        if use_cache and self.has_cache:
            shared = self.shares_cache_buffers
            return greedy(self, prompt, budget, stops, shared=shared)[0]
        while True:
            ids = np.asarray([prompt + out], dtype=np.int64)
            logits, _ = self._run(ids, np.ones_like(ids), None, use_cache=False)
            token = int(np.argmax(logits[0, -1]))
            if token in stops:
                return out
            out.append(token)
            if len(out) >= budget:
                return out

    def _probe_sequences(self) -> tuple[list[int], list[int]]:
        text = "The council collects garden waste every second week from April."
        ids = [t for t in self.encode(text) if t < self.vocab_size]
        rng = np.random.default_rng(0)
        while len(ids) < 12:
            ids.append(
                int(
                    rng.integers(
                        0, min(self.vocab_size, self.tokenizer.get_vocab_size())
                    )
                )
            )
        length = max(2, min(12, self.context_length - 4))
        long_seq = [self.bos_token_id, *ids][:length]
        return long_seq, long_seq[: max(1, length // 2)][::-1]

    def selftest(self, *, tolerance: float | None = None) -> dict:
        """Registration self-test; returns its figures, raises when one fails.

        Checks: logits are ``[B, T, V]`` with ``V >=`` the tokenizer's vocabulary
        and finite; a right-padded batch equals the sequences run alone; the
        last logits of a cached step equal a full recompute; cached and
        recomputed greedy generation agree. The default ``tolerance`` is
        ``SELFTEST_TOLERANCE`` (absolute), except for graphs with dynamically
        quantised activations (``dynamic_quantisation``), whose scales depend
        on the whole batch: there it is ``DYNAMIC_QUANT_RELATIVE_TOLERANCE``
        times the largest probe logit, and a generation mismatch is reported
        but not failed (one noisy argmax flips it). Wiring faults (a wrong
        cache, ignored positions or masks) move logits by a large fraction
        of their range, so they fail either way. Raises ``RuntimeCheckError``
        (with ``figures``) when a shape is wrong, a value is not finite, or a
        difference exceeds the tolerance.
        """
        long_seq, short_seq = self._probe_sequences()
        figures: dict[str, Any] = {
            "layout": self.layout,
            "vocab_size": int(self.vocab_size),
            "tokenizer_vocab_size": int(self.tokenizer.get_vocab_size()),
            "context_length": int(self.context_length),
            "dynamic_quantisation": self.dynamic_quantisation,
        }
        ids, mask = self._padded([long_seq, short_seq])
        batch_logits, _ = self._run(ids, mask, None, use_cache=False)
        if tolerance is None:
            tolerance = SELFTEST_TOLERANCE
            if self.dynamic_quantisation:
                scale = float(np.abs(batch_logits).max())
                tolerance = max(tolerance, DYNAMIC_QUANT_RELATIVE_TOLERANCE * scale)
        figures["tolerance"] = tolerance
        self._selftest_logits(batch_logits, len(long_seq), figures)
        figures["padding_max_abs_diff"] = self._selftest_padding(
            (long_seq, short_seq), batch_logits
        )
        figures["kv_max_abs_diff"] = None
        if self.has_cache:
            self._selftest_cache(long_seq, batch_logits, figures)
        failures = [
            name
            for name in ("padding_max_abs_diff", "kv_max_abs_diff")
            if figures[name] is not None and not figures[name] <= tolerance
        ]
        if figures.get("generation_match") is False and not self.dynamic_quantisation:
            failures.append("generation_match")
        figures["passed"] = not failures
        if failures:
            raise RuntimeCheckError(f"self-test failed: {', '.join(failures)}", figures)
        return figures

    def _selftest_logits(
        self, batch_logits: np.ndarray, length: int, figures: dict[str, Any]
    ) -> None:
        """Raise unless the probe logits are ``[2, length, V >= vocab]`` and finite."""
        figures["logits_shape"] = [int(d) for d in batch_logits.shape]
        if batch_logits.shape != (2, length, batch_logits.shape[-1]) or (
            batch_logits.shape[-1] < figures["tokenizer_vocab_size"]
        ):
            raise RuntimeCheckError(
                f"logits shape {figures['logits_shape']} is not [B, T, V >= "
                f"{figures['tokenizer_vocab_size']}]",
                figures,
            )
        if not np.all(np.isfinite(batch_logits)):
            raise RuntimeCheckError("logits contain NaN or infinity", figures)

    def _selftest_padding(
        self, sequences: tuple[list[int], list[int]], batch_logits: np.ndarray
    ) -> float:
        """Largest difference between the padded batch and each sequence alone."""
        padding_diff = 0.0
        for row, seq in enumerate(sequences):
            single, _ = self._run(
                np.asarray([seq]),
                np.ones((1, len(seq)), dtype=np.int64),
                None,
                use_cache=False,
            )
            padding_diff = max(
                padding_diff,
                float(np.abs(single[0] - batch_logits[row, : len(seq)]).max()),
            )
        return padding_diff

    def _selftest_cache(
        self, long_seq: list[int], batch_logits: np.ndarray, figures: dict[str, Any]
    ) -> None:
        """A cached step against the full recompute, and cached generation against
        recomputed generation (``kv_max_abs_diff``, ``generation_match``)."""
        prefix = np.asarray([long_seq[:-1]])
        _, past = self._run(prefix, np.ones_like(prefix), None, use_cache=False)
        step_logits, _ = self._run(
            np.asarray([long_seq[-1:]]),
            np.ones((1, len(long_seq)), dtype=np.int64),
            past,
            use_cache=True,
        )
        figures["kv_max_abs_diff"] = float(
            np.abs(step_logits[0, -1] - batch_logits[0, len(long_seq) - 1]).max()
        )
        steps = min(6, self.context_length - len(long_seq))
        cached = self.generate(long_seq, max_new_tokens=steps, stop_ids=())
        full = self.generate(
            long_seq, max_new_tokens=steps, stop_ids=(), use_cache=False
        )
        figures["generation_match"] = cached == full


def _continuation_scores(pair: tuple[np.ndarray, list[int]]) -> tuple:
    """``(sum ll, is_greedy, per-token ll)`` of ``cont`` from a sequence's logits.

    The log-softmax of only the continuation's rows, gathered at its tokens:
    ``x[t, c] - max_t - log sum exp(x[t] - max_t)`` in float32, the same
    arithmetic as ``_log_softmax`` without its full-size output; greedy is the
    argmax of the logits (that of the log-softmax).
    """
    logits, cont = pair
    rows = np.asarray(logits[-len(cont) :], dtype=np.float32)
    index = np.arange(len(cont))
    best = rows.argmax(axis=-1)
    top = rows[index, best]
    shifted = np.subtract(rows, top[:, None])
    np.exp(shifted, out=shifted)
    log_total = np.log(shifted.sum(axis=-1))
    per_token = ((rows[index, cont] - top) - log_total).astype(np.float64)
    greedy = bool(np.all(best == np.asarray(cont)))
    return float(per_token.sum()), greedy, per_token.tolist()


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float32)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
