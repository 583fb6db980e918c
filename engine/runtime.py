"""ONNX Runtime model adapters and ``load_model``, which picks one for a bundle.

Pure Python over onnxruntime, NumPy and tokenizers (no Django, no
transformers). Every input and output is bound by name and every dtype is
read from the session, so exports that order or type their inputs
differently (GPT-2, int32 ids, float16 caches) load the same way. Sessions,
their settings and cache live in ``engine.session``; the causal LM adapter in
``engine.causal_lm``.

* ``SequenceClassifier`` and ``TensorModel``: class probabilities;
* ``load_model``: picks the adapter (``CausalLM``, ``SequenceClassifier``,
  ``TensorModel``) from ``bundle.inspect_bundle`` facts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from engine.causal_lm import CausalLM
from engine.session import (
    RowRuns,
    RuntimeCheckError,
    RuntimeSettings,
    SessionCache,
    address_space_headroom,
    first_int,
    make_session,
    ports,
    rows_per_run,
)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8") as fh:
        data = json.load(fh)
    return data if isinstance(data, dict) else {}


def load_tokenizer(path: Path) -> Tokenizer:
    """``tokenizer.json`` with any shipped padding and truncation switched off.

    Raises ``RuntimeCheckError`` when the file is missing or unreadable.
    """
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:
        raise RuntimeCheckError(f"cannot load tokenizer {path.name}: {exc}") from exc
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def _softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    x = np.exp(x - x.max(axis=-1, keepdims=True))
    return x / x.sum(axis=-1, keepdims=True)


class SequenceClassifier(RowRuns):
    """Text classifier: ``input_ids``, ``attention_mask`` -> ``logits [B, labels]``.

    Texts are encoded with the tokenizer's own special tokens (a BERT-style
    ``tokenizer.json`` adds ``[CLS]``/``[SEP]``) and truncated to the model's
    maximum length; batches are right-padded. A graph quantised at run time
    (``dynamic_quantisation``) classifies one unpadded text per run, so its
    probabilities do not depend on the batch size; those runs go on several
    threads at once, on the session ``row_session`` opens (``RowRuns``).
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        tokenizer: Tokenizer,
        *,
        config: dict | None = None,
        settings: RuntimeSettings | None = None,
        dynamic_quantisation: bool = False,
        row_session: Callable[[], ort.InferenceSession] | None = None,
    ) -> None:
        config = config or {}
        self.session = session
        self._open_row_session = row_session
        self.tokenizer = tokenizer
        self.settings = settings
        self.dynamic_quantisation = dynamic_quantisation
        self.tokens_processed = 0
        self.inputs = ports(session.get_inputs())
        outputs = ports(session.get_outputs())
        if "input_ids" not in self.inputs:
            raise RuntimeCheckError("a text classifier needs an 'input_ids' input")
        unknown = sorted(
            set(self.inputs) - {"input_ids", "attention_mask", "token_type_ids"}
        )
        if unknown:
            raise RuntimeCheckError(f"unsupported classifier inputs: {unknown}")
        if "logits" in outputs:
            self.output_name = "logits"
        else:
            rank2 = [p.name for p in outputs.values() if len(p.shape) == 2]
            if not rank2:
                raise RuntimeCheckError("the classifier has no [batch, labels] output")
            self.output_name = rank2[0]
        self.outputs_probabilities = "prob" in self.output_name.lower()
        labels_dim = outputs[self.output_name].shape[-1]
        id2label = config.get("id2label") or {}
        self.num_labels = (
            labels_dim
            if isinstance(labels_dim, int)
            else int(config.get("num_labels") or len(id2label))
        )
        self.labels = [
            str(id2label.get(str(i), id2label.get(i, i)))
            for i in range(self.num_labels)
        ]
        self.max_length = int(config.get("max_position_embeddings") or 512)
        self.pad_token_id = first_int(config.get("pad_token_id")) or 0
        tokenizer.enable_truncation(self.max_length)

    def encode(self, text: str) -> list[int]:
        """Ids with the tokenizer's special tokens, truncated to ``max_length``."""
        return list(self.tokenizer.encode(text).ids)

    def scoring_batch_size(self, batch_size: int) -> int:
        """Texts per session run when classifying with ``batch_size``."""
        return rows_per_run(batch_size, dynamic_quantisation=self.dynamic_quantisation)

    def predict_proba(
        self, texts: Sequence[str], *, batch_size: int = 32
    ) -> np.ndarray:
        """Class probabilities ``[len(texts), num_labels]`` (float64, rows sum to 1)."""
        step = self.scoring_batch_size(batch_size)
        chunks = [texts[start : start + step] for start in range(0, len(texts), step)]
        session = self._scoring_session(step)
        # A graph quantised at run time classifies one text per run: those
        # runs go on concurrently, one per intra-op thread (``RowRuns``).
        done = self._map(
            partial(self._classify, session=session), chunks, parallel=step == 1
        )
        self.tokens_processed += sum(tokens for _, tokens in done)
        if not done:
            return np.zeros((0, self.num_labels))
        return np.concatenate([probs for probs, _ in done], axis=0)

    def _classify(
        self, texts: Sequence[str], *, session: ort.InferenceSession
    ) -> tuple[np.ndarray, int]:
        """Probabilities of one right-padded run of ``texts``, and its token count."""
        encoded = [self.encode(t) or [self.pad_token_id] for t in texts]
        width = max(len(e) for e in encoded)
        ids = np.full((len(encoded), width), self.pad_token_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        for r, e in enumerate(encoded):
            ids[r, : len(e)] = e
            mask[r, : len(e)] = 1
        feed = {"input_ids": ids.astype(self.inputs["input_ids"].dtype or np.int64)}
        if "attention_mask" in self.inputs:
            feed["attention_mask"] = mask.astype(
                self.inputs["attention_mask"].dtype or np.int64
            )
        if "token_type_ids" in self.inputs:
            feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
        (out,) = session.run([self.output_name], feed)
        out = np.asarray(out, dtype=np.float64)
        return (out if self.outputs_probabilities else _softmax(out)), int(mask.sum())


class TensorModel:
    """Numeric-feature model (skl2onnx and the like): one input, class probabilities.

    The probabilities output is the one named ``probabilities`` /
    ``output_probability``, else the first float ``[N, C]`` output; a
    ZipMap output (a list of ``{class: p}`` dicts) is turned into an array
    ordered by class.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        *,
        config: dict | None = None,
        settings: RuntimeSettings | None = None,
    ) -> None:
        self.session = session
        self.settings = settings
        self.config = config or {}
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise RuntimeCheckError("a tensor model must have exactly one input")
        self.input = ports(inputs)[inputs[0].name]
        outputs = session.get_outputs()
        by_name = {o.name: o for o in outputs}
        for preferred in ("probabilities", "output_probability"):
            if preferred in by_name:
                self.output_name = preferred
                break
        else:
            floats = [
                o.name
                for o in outputs
                if o.type == "tensor(float)" and len(o.shape or ()) == 2
            ]
            if not floats:
                raise RuntimeCheckError("the model has no probabilities output")
            self.output_name = floats[0]
        features = self.input.shape[-1] if self.input.shape else None
        self.num_features = features if isinstance(features, int) else None

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Probabilities ``[N, classes]`` (float64) for a ``[N, n_features]`` array.

        Raises ``ValueError`` when the feature count does not match the model.
        """
        x = np.asarray(features, dtype=self.input.dtype or np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if self.num_features is not None and x.shape[-1] != self.num_features:
            raise ValueError(
                f"expected {self.num_features} features, got {x.shape[-1]}"
            )
        (out,) = self.session.run([self.output_name], {self.input.name: x})
        if isinstance(out, list):
            keys = sorted(out[0]) if out else []
            return np.asarray([[row[k] for k in keys] for row in out], dtype=np.float64)
        return np.asarray(out, dtype=np.float64)


_DYNAMIC_QUANT_OPS = frozenset(
    {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul", "ConvInteger"}
)
_FLOAT_OR_WEIGHT_ONLY = frozenset({"fp32", "fp16", "bf16", "int4"})


def uses_dynamic_quantisation(model_path: Path) -> bool:
    """Whether the graph quantises activations at run time (``quantize_dynamic``).

    Such graphs compute per-batch activation scales, so padding and batching
    change their logits slightly. Reads the graph without its external
    weights; looks inside ``If``/``Loop`` subgraphs too.
    """
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            if node.op_type in _DYNAMIC_QUANT_OPS:
                return True
            for attr in node.attribute:
                if attr.HasField("g"):
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)
    return False


def _fact(facts: Any, name: str, default=None):
    if isinstance(facts, dict):
        return facts.get(name, default)
    return getattr(facts, name, default)


class _SessionOpener:
    """Sessions of one model file, through ``cache`` when given (keyed by ``key``)."""

    def __init__(self, path: Path, key: str, weight_bytes: int, cache) -> None:
        self.path, self.key, self.cache = path, key, cache
        self.weight_bytes = weight_bytes

    def open(self, settings: RuntimeSettings) -> ort.InferenceSession:
        if self.cache is None:
            return make_session(self.path, settings)
        return self.cache.get(self.key, self.path, settings, self.weight_bytes)

    def open_if_room(self, settings: RuntimeSettings) -> ort.InferenceSession | None:
        """``open``, or None where the address-space limit leaves no room.

        Under the evaluation child's limit, a second session must not turn a
        run that fits into a ``resource_limit`` failure: its runs then share
        the first session.
        """
        room = address_space_headroom()
        if room is not None and room < SessionCache.estimate_bytes(self.weight_bytes):
            return None
        return self.open(settings)


def load_model(
    root: Path,
    *,
    settings: RuntimeSettings | None = None,
    cache: SessionCache | None = None,
    digest: str | None = None,
    facts=None,
) -> CausalLM | SequenceClassifier | TensorModel:
    """Open an unpacked bundle as the adapter its kind calls for.

    ``facts`` (``bundle.GraphFacts``) is computed with ``inspect_bundle`` when
    not given; its ``kind`` picks the adapter (``causal_lm_kv``/``causal_lm``
    -> ``CausalLM``, ``seq_classifier`` -> ``SequenceClassifier``, anything
    else -> ``TensorModel``). Sessions come from ``cache`` when given, keyed by
    ``digest`` (or the resolved model path when no digest is known). Raises
    ``bundle.BundleError`` from inspection, ``RuntimeCheckError`` when the
    model cannot be driven (no tokenizer, unsupported inputs, unknown KV
    shape), and onnxruntime errors for graphs it refuses. A language model or
    classifier whose graph quantises at run time scores one row per run, on
    several caller threads at once: those runs get a second session of the
    same graph with ``RuntimeSettings.for_concurrent_runs`` (opened, through
    ``cache`` when given, on the first such scoring, where the address-space
    limit leaves room for it); generation keeps ``settings``.
    """
    root = Path(root)
    settings = settings or RuntimeSettings()
    if facts is None:
        from engine import bundle

        facts = bundle.inspect_bundle(root)
    model_file = Path(_fact(facts, "model_file", "model.onnx"))
    model_path = model_file if model_file.is_absolute() else root / model_file
    weight_bytes = _fact(facts, "weight_bytes") or sum(
        p.stat().st_size for p in model_path.parent.glob(model_path.name + "*")
    )
    kind = _fact(facts, "kind", "generic")
    dynamic = kind in ("causal_lm_kv", "causal_lm", "seq_classifier") and bool(
        _fact(facts, "quantisation", "fp32") not in _FLOAT_OR_WEIGHT_ONLY
        and uses_dynamic_quantisation(model_path)
    )
    opener = _SessionOpener(
        model_path, digest or f"path:{model_path.resolve()}", int(weight_bytes), cache
    )
    session = opener.open(settings)
    concurrent = settings.for_concurrent_runs()
    rows = partial(opener.open_if_room, concurrent) if dynamic else None
    config = _read_json(root / "config.json")
    if kind in ("causal_lm_kv", "causal_lm", "seq_classifier"):
        tokenizer_path = root / "tokenizer.json"
        if not tokenizer_path.is_file():
            raise RuntimeCheckError("the bundle has no tokenizer.json")
        tokenizer = load_tokenizer(tokenizer_path)
        if kind == "seq_classifier":
            return SequenceClassifier(
                session,
                tokenizer,
                config=config,
                settings=settings,
                dynamic_quantisation=dynamic,
                row_session=rows,
            )
        genai = _read_json(root / "genai_config.json") or None
        layout = _fact(facts, "layout")
        return CausalLM(
            session,
            tokenizer,
            config=config,
            generation_config=_read_json(root / "generation_config.json"),
            genai_config=genai,
            settings=settings,
            layout=layout if isinstance(layout, str) else None,
            dynamic_quantisation=dynamic,
            gqa_cache=_fact(facts, "gqa_cache", ()) or (),
            row_session=rows,
        )
    return TensorModel(session, config=config, settings=settings)
