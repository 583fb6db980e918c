"""ONNX Runtime adapter: sessions, a session cache, and the three model kinds.

Pure Python over onnxruntime, NumPy and tokenizers (no Django, no
transformers). Every input and output is bound by name and every dtype is
read from the session, so exports that order or type their inputs
differently (GPT-2, int32 ids, float16 caches) load the same way.

* ``RuntimeSettings`` / ``make_session``: the CPU session policy;
* ``SessionCache``: process-local LRU of sessions under a memory budget;
* ``CausalLM``: log-likelihoods (lm-evaluation-harness semantics), rolling
  perplexity windows and greedy generation through the KV cache;
* ``SequenceClassifier`` and ``TensorModel``: class probabilities;
* ``load_model``: picks the adapter from ``bundle.inspect_bundle`` facts.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

if TYPE_CHECKING:
    from engine.causal_lm import CausalLM

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_NUMPY_TYPES = {
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(bool)": np.bool_,
}


class RuntimeCheckError(Exception):
    """A model cannot be driven, or failed its registration self-test.

    ``figures`` carries the self-test measurements when there are any.
    """

    def __init__(self, message: str, figures: dict | None = None) -> None:
        super().__init__(message)
        self.figures = figures or {}


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class RuntimeSettings:
    """How a session is configured; hashable, so it can key the cache.

    ``intra_op_threads=0`` means every CPU in the affinity mask.
    ``graph_optimization`` is one of disable, basic, extended, all.
    Raises ``ValueError`` on an unknown optimisation level or negative counts.
    """

    intra_op_threads: int = 0
    inter_op_threads: int = 1
    graph_optimization: str = "all"
    allow_spinning: bool = False
    mem_arena: bool = True

    def __post_init__(self) -> None:
        if self.graph_optimization not in _OPT_LEVELS:
            raise ValueError(f"graph_optimization must be one of {sorted(_OPT_LEVELS)}")
        if self.intra_op_threads < 0 or self.inter_op_threads < 1:
            raise ValueError("thread counts must be intra >= 0 and inter >= 1")

    def resolved_intra_op_threads(self) -> int:
        """The thread count actually used (0 resolved to the affinity count)."""
        return self.intra_op_threads or available_cores()

    def to_dict(self) -> dict:
        """JSON-able form, with the resolved thread count added."""
        data = asdict(self)
        data["resolved_intra_op_threads"] = self.resolved_intra_op_threads()
        return data


def make_session(model_path: Path, settings: RuntimeSettings) -> ort.InferenceSession:
    """An ``InferenceSession`` on ``CPUExecutionProvider`` only, sequential.

    Spinning is off by default: spinning threads burn CPU between runs, which
    slows co-located work and inflates the CPU-seconds a run is charged.
    No custom operator library is ever registered (bundles are untrusted).
    External data is resolved next to ``model_path``. Raises onnxruntime's
    errors (``Fail``, ``InvalidGraph``, ...) for invalid models.
    """
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = settings.resolved_intra_op_threads()
    opts.inter_op_num_threads = settings.inter_op_threads
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = _OPT_LEVELS[settings.graph_optimization]
    opts.enable_cpu_mem_arena = settings.mem_arena
    spin = "1" if settings.allow_spinning else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
    opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
    opts.log_severity_level = 3
    return ort.InferenceSession(
        str(model_path), sess_options=opts, providers=["CPUExecutionProvider"]
    )


def _default_budget() -> int:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 1024**3
    return total // 2


class SessionCache:
    """Process-local LRU of sessions keyed by (artifact key, settings).

    Creating a session costs seconds per GB of weights (parsing, graph
    optimisation, weight pre-packing), against milliseconds per decode step,
    so a worker keeps sessions across tasks of one job and across jobs on
    the same model. Each entry is charged ``2.5 x weight_bytes`` (weights,
    pre-packed copies, arena) against ``budget_bytes`` (default: half the
    physical memory). Least recently used entries are evicted before a new
    session is created; a session bigger than the whole budget is still
    returned and kept, alone. One lock guards the cache, including session
    creation, so two threads never build the same session twice.
    """

    MEMORY_FACTOR = 2.5

    def __init__(
        self, budget_bytes: int | None = None, *, factory=make_session
    ) -> None:
        self.budget_bytes = int(
            budget_bytes if budget_bytes is not None else _default_budget()
        )
        self._factory = factory
        self._entries: OrderedDict[tuple, tuple[ort.InferenceSession, int]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    @classmethod
    def estimate_bytes(cls, weight_bytes: int) -> int:
        """Memory charged for a session whose weights take ``weight_bytes``."""
        return int(cls.MEMORY_FACTOR * max(0, int(weight_bytes)))

    def get(
        self, key: str, path: Path, settings: RuntimeSettings, weight_bytes: int
    ) -> ort.InferenceSession:
        """The cached session for ``(key, settings)``, created from ``path`` on a miss.

        ``key`` identifies the artifact (its sha256), so the same bundle
        extracted in two places shares a session. Raises whatever
        ``make_session`` raises; a failed creation caches nothing.
        """
        cache_key = (key, settings)
        with self._lock:
            if cache_key in self._entries:
                self._entries.move_to_end(cache_key)
                self.hits += 1
                return self._entries[cache_key][0]
            self.misses += 1
            cost = self.estimate_bytes(weight_bytes)
            while self._entries and self._used() + cost > self.budget_bytes:
                self._entries.popitem(last=False)
                self.evictions += 1
            session = self._factory(Path(path), settings)
            self._entries[cache_key] = (session, cost)
            return session

    def _used(self) -> int:
        return sum(cost for _, cost in self._entries.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, item: tuple) -> bool:
        with self._lock:
            return item in self._entries

    def bytes_in_use(self) -> int:
        """Sum of the charges of the cached sessions."""
        with self._lock:
            return self._used()

    def stats(self) -> dict:
        """Counters for logs: entries, bytes charged, budget, hits, misses."""
        with self._lock:
            return {
                "entries": len(self._entries),
                "bytes_in_use": self._used(),
                "budget_bytes": self.budget_bytes,
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
            }

    def clear(self) -> None:
        """Drop every session (their memory is freed when no caller holds them)."""
        with self._lock:
            self._entries.clear()


@dataclass(frozen=True)
class _Port:
    name: str
    dtype: Any
    shape: tuple


def _ports(nodes) -> dict[str, _Port]:
    return {
        n.name: _Port(n.name, _NUMPY_TYPES.get(n.type), tuple(n.shape or ()))
        for n in nodes
    }


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8") as fh:
        data = json.load(fh)
    return data if isinstance(data, dict) else {}


def _first_int(*values) -> int | None:
    for value in values:
        if isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _id_set(*values) -> frozenset[int]:
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool):
            return frozenset({value})
        if isinstance(value, list) and value:
            return frozenset(int(v) for v in value)
    return frozenset()


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


class SequenceClassifier:
    """Text classifier: ``input_ids``, ``attention_mask`` -> ``logits [B, labels]``.

    Texts are encoded with the tokenizer's own special tokens (a BERT-style
    ``tokenizer.json`` adds ``[CLS]``/``[SEP]``) and truncated to the model's
    maximum length; batches are right-padded.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        tokenizer: Tokenizer,
        *,
        config: dict | None = None,
        settings: RuntimeSettings | None = None,
    ) -> None:
        config = config or {}
        self.session = session
        self.tokenizer = tokenizer
        self.settings = settings
        self.tokens_processed = 0
        self.inputs = _ports(session.get_inputs())
        outputs = _ports(session.get_outputs())
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
        self.pad_token_id = _first_int(config.get("pad_token_id")) or 0
        tokenizer.enable_truncation(self.max_length)

    def encode(self, text: str) -> list[int]:
        """Ids with the tokenizer's special tokens, truncated to ``max_length``."""
        return list(self.tokenizer.encode(text).ids)

    def predict_proba(
        self, texts: Sequence[str], *, batch_size: int = 32
    ) -> np.ndarray:
        """Class probabilities ``[len(texts), num_labels]`` (float64, rows sum to 1)."""
        rows: list[np.ndarray] = []
        step = max(1, int(batch_size))
        for start in range(0, len(texts), step):
            encoded = [
                self.encode(t) or [self.pad_token_id]
                for t in texts[start : start + step]
            ]
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
            (out,) = self.session.run([self.output_name], feed)
            self.tokens_processed += int(mask.sum())
            out = np.asarray(out, dtype=np.float64)
            rows.append(out if self.outputs_probabilities else _softmax(out))
        if not rows:
            return np.zeros((0, self.num_labels))
        return np.concatenate(rows, axis=0)


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
        self.input = _ports(inputs)[inputs[0].name]
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
    shape), and onnxruntime errors for graphs it refuses.
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
    if cache is not None:
        key = digest or f"path:{model_path.resolve()}"
        session = cache.get(key, model_path, settings, int(weight_bytes))
    else:
        session = make_session(model_path, settings)
    config = _read_json(root / "config.json")
    kind = _fact(facts, "kind", "generic")
    if kind in ("causal_lm_kv", "causal_lm", "seq_classifier"):
        tokenizer_path = root / "tokenizer.json"
        if not tokenizer_path.is_file():
            raise RuntimeCheckError("the bundle has no tokenizer.json")
        tokenizer = load_tokenizer(tokenizer_path)
        if kind == "seq_classifier":
            return SequenceClassifier(
                session, tokenizer, config=config, settings=settings
            )
        from engine.causal_lm import CausalLM

        genai = _read_json(root / "genai_config.json") or None
        layout = _fact(facts, "layout")
        dynamic = bool(
            _fact(facts, "quantisation", "fp32") not in _FLOAT_OR_WEIGHT_ONLY
            and uses_dynamic_quantisation(model_path)
        )
        return CausalLM(
            session,
            tokenizer,
            config=config,
            generation_config=_read_json(root / "generation_config.json"),
            genai_config=genai,
            settings=settings,
            layout=layout if isinstance(layout, str) else None,
            dynamic_quantisation=dynamic,
        )
    return TensorModel(session, config=config, settings=settings)


_LM_NAMES = frozenset(
    {
        "CausalLM",
        "DEFAULT_CONTEXT_LENGTH",
        "DYNAMIC_QUANT_RELATIVE_TOLERANCE",
        "SELFTEST_TOLERANCE",
    }
)


def __getattr__(name: str):
    """Re-export ``runtime_lm``'s ``CausalLM`` and constants lazily.

    Lazy because ``runtime_lm`` imports this module; an eager import here
    would be circular.
    """
    if name in _LM_NAMES:
        from engine import causal_lm as runtime_lm

        return getattr(runtime_lm, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """Module attributes including the lazily re-exported ones."""
    return sorted(set(globals()) | _LM_NAMES)
