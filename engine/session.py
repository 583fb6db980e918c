"""ONNX Runtime sessions and the helpers every model adapter shares.

Pure Python over onnxruntime and NumPy (no Django). ``runtime`` (the
classifier and tensor adapters, ``load_model``) and ``causal_lm`` (the
language-model adapter) both build on this module, so neither imports the
other's internals.

* ``RuntimeSettings`` / ``make_session``: the CPU session policy;
* ``SessionCache``: process-local LRU of sessions under a memory budget;
* ``RowRuns``: the text adapters' runs on several caller threads, and the
  second session their one-row runs use; ``address_space_headroom``: whether
  one fits;
* ``ports``, ``first_int``, ``id_set``: reading a session's inputs and
  outputs and the token ids of the bundle's configs;
* ``RuntimeCheckError``: a model cannot be driven or failed its self-test.
"""

from __future__ import annotations

import os
import resource
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

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
    ``allow_spinning``: idle pool threads spin, during and between runs
    (ONNX Runtime's default, and onnxruntime-genai's). ``spin_within_runs``:
    they spin between the operators of one run and stop when it returns
    (``session.force_spinning_stop``), so nothing burns CPU between runs.
    Raises ``ValueError`` on an unknown optimisation level or negative counts.
    """

    intra_op_threads: int = 0
    inter_op_threads: int = 1
    graph_optimization: str = "all"
    allow_spinning: bool = False
    mem_arena: bool = True
    spin_within_runs: bool = False

    def __post_init__(self) -> None:
        if self.graph_optimization not in _OPT_LEVELS:
            raise ValueError(f"graph_optimization must be one of {sorted(_OPT_LEVELS)}")
        if self.intra_op_threads < 0 or self.inter_op_threads < 1:
            raise ValueError("thread counts must be intra >= 0 and inter >= 1")

    @classmethod
    def spinning(cls, intra_op_threads: int, mode: str) -> RuntimeSettings:
        """Settings with spinning ``mode``: off, within (runs only) or always.

        Raises ``ValueError`` on another mode.
        """
        if mode not in ("off", "within", "always"):
            raise ValueError("spinning must be one of off, within, always")
        return cls(
            intra_op_threads,
            allow_spinning=mode == "always",
            spin_within_runs=mode == "within",
        )

    def for_concurrent_runs(self) -> RuntimeSettings:
        """These settings for a session whose runs go on several caller threads.

        One intra-op thread and no spinning: each run computes on its caller's
        thread alone. Several one-row runs on one multi-threaded session would
        share its pool and wait at each other's parallel loops; measured on a
        2-core Xeon (AMX), eight one-row int8 runs on two caller threads took
        158 ms on a 2-thread session and 131 ms on 1-thread sessions, with
        the same logits to the bit.
        """
        return replace(
            self, intra_op_threads=1, allow_spinning=False, spin_within_runs=False
        )

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
    ``spin_within_runs`` spins only inside a run (``session.force_spinning_stop``).
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
    within = settings.spin_within_runs and not settings.allow_spinning
    opts.add_session_config_entry(
        "session.intra_op.allow_spinning", "1" if within else spin
    )
    opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
    if within:
        opts.add_session_config_entry("session.force_spinning_stop", "1")
    opts.log_severity_level = 3
    return ort.InferenceSession(
        str(model_path), sess_options=opts, providers=["CPUExecutionProvider"]
    )


def address_space_headroom() -> int | None:
    """Bytes this process may still map under its ``RLIMIT_AS``; None without one.

    The evaluation child runs under such a limit (``engine.sandbox``): a
    second session is opened only where it fits (``load_model``).
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    with open("/proc/self/statm", encoding="ascii") as statm:
        mapped = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    return soft - mapped


# Set in the threads of ``RowRuns._map``'s pool: a nested map runs inline.
_INSIDE = threading.local()


class RowRuns:
    """Session runs on several caller threads, for the text adapters.

    Needs ``session``, ``settings`` and ``_open_row_session``: None, or a
    callable that opens the session concurrent one-row runs use (or returns
    None when there is no room for it). ``load_model`` gives one to graphs
    quantised at run time, which run one row per run (``rows_per_run``) and
    run those rows concurrently.
    """

    session: ort.InferenceSession
    settings: RuntimeSettings | None
    _open_row_session: Any = None
    _row_session: ort.InferenceSession | None = None

    def _scoring_session(self, rows_per_run: int) -> ort.InferenceSession:
        """The session runs of ``rows_per_run`` rows use.

        One-row runs of a run-time quantised graph go on several caller
        threads at once (``_map``); given ``_open_row_session``, they run on
        the single-threaded session it opens (once, on first use;
        ``RuntimeSettings.for_concurrent_runs``), where they do not share one
        thread pool. Anything else, and every run once the opener has
        returned None (no room for a second session), uses ``self.session``.
        """
        if rows_per_run != 1 or self._open_row_session is None:
            return self.session
        if self.settings is None or self.settings.resolved_intra_op_threads() < 2:
            return self.session
        if self._row_session is None:
            self._row_session = self._open_row_session()
            if self._row_session is None:
                self._open_row_session = None
                return self.session
        return self._row_session

    def _map(self, fn, items: list, *, parallel: bool = True) -> list:
        """``fn`` over ``items``, on up to ``intra_op_threads`` threads.

        NumPy and ONNX Runtime release the GIL, so the scoring arithmetic of
        several sequences (and one-row session runs, which
        ``InferenceSession.run`` allows from several threads) use every core.
        ``parallel=False``, and a call from inside the pool, run inline.
        """
        workers = self.settings.resolved_intra_op_threads() if self.settings else 1
        inline = not parallel or getattr(_INSIDE, "pool", False)
        if inline or len(items) < 2 or workers < 2:
            return [fn(item) for item in items]

        def inside(item):
            _INSIDE.pool = True
            return fn(item)

        with ThreadPoolExecutor(min(workers, len(items))) as pool:
            return list(pool.map(inside, items))


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
class Port:
    """One session input or output: its name, NumPy dtype (None if unknown), shape."""

    name: str
    dtype: Any
    shape: tuple


def ports(nodes) -> dict[str, Port]:
    """``Port`` of each of a session's ``get_inputs()`` / ``get_outputs()`` by name."""
    return {
        n.name: Port(n.name, _NUMPY_TYPES.get(n.type), tuple(n.shape or ()))
        for n in nodes
    }


def first_int(*values) -> int | None:
    """The first int among ``values`` (a list counts as its first item), else None."""
    for value in values:
        if isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def id_set(*values) -> frozenset[int]:
    """The ids of the first value that is an int or a non-empty list of ints."""
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool):
            return frozenset({value})
        if isinstance(value, list) and value:
            return frozenset(int(v) for v in value)
    return frozenset()


def rows_per_run(batch_size: int, *, dynamic_quantisation: bool) -> int:
    """Rows per session run when a model scores ``batch_size`` rows at a time.

    A graph that quantises its activations at run time (``DynamicQuantizeLinear``,
    ``MatMulInteger``) computes one scale per tensor over every row and the
    padding of the batch, so its outputs would depend on the batch: such a graph
    runs one unpadded row at a time. Any other graph runs ``batch_size`` rows.
    """
    return 1 if dynamic_quantisation else max(1, int(batch_size))
