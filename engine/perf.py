"""Time, memory, CPU and energy measurement of one evaluation run.

Wall time comes from ``time.perf_counter``; CPU time is this process's user +
system time from ``getrusage`` (all threads, children excluded); peak memory is
``resource.getrusage(RUSAGE_SELF).ru_maxrss``, the process's high-water mark
since it started (evaluations run in a fresh child, so that covers the model
load and the run), and the current RSS comes from psutil.

Energy is measured from RAPL counters when the kernel exposes them readable,
otherwise estimated as ``cpu_seconds x watts_per_core``; the result always
carries ``energy_method`` and the assumption behind the number.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

from engine import ENGINE_VERSION

RAPL_ROOT = Path("/sys/class/powercap")
DEFAULT_WATTS_PER_CORE = 4.0
_TOP_LEVEL_ZONE = re.compile(r"^intel-rapl:\d+$")


def watts_per_core() -> float:
    """Assumed CPU power per busy core: env ``CIVITAS_WATTS_PER_CORE`` or 4.0 W.

    4 W per thread is codecarbon's fallback for CPUs missing from its table.
    """
    raw = os.environ.get("CIVITAS_WATTS_PER_CORE", "")
    try:
        value = float(raw) if raw else DEFAULT_WATTS_PER_CORE
    except ValueError:
        value = DEFAULT_WATTS_PER_CORE
    return value if value > 0 else DEFAULT_WATTS_PER_CORE


def read_rapl(root: Path | str = RAPL_ROOT) -> dict[str, tuple[int, int]] | None:
    """Read package-level RAPL counters: ``{zone: (energy_uj, max_energy_range_uj)}``.

    Only top-level zones (``intel-rapl:N``, one per socket) are read, because
    sub-zones (core, dram) are contained in or beside them and would double
    count. Returns ``None`` when no counter is present or readable.
    """
    base = Path(root)
    try:
        zones = sorted(
            p for p in base.glob("intel-rapl:*") if _TOP_LEVEL_ZONE.match(p.name)
        )
    except OSError:
        return None
    counters = {}
    for zone in zones:
        try:
            energy = int((zone / "energy_uj").read_text().strip())
            max_range = int((zone / "max_energy_range_uj").read_text().strip())
        except (OSError, ValueError):
            return None
        counters[zone.name] = (energy, max_range)
    return counters or None


def rapl_delta_joules(
    start: dict[str, tuple[int, int]], end: dict[str, tuple[int, int]]
) -> float:
    """Energy between two RAPL readings in joules, summed over zones.

    A counter that went down wrapped once at ``max_energy_range_uj``:
    ``Δ = end + max_range - start``.
    """
    total_uj = 0
    for zone, (e0, max_range) in start.items():
        e1 = end[zone][0]
        total_uj += e1 - e0 if e1 >= e0 else e1 + max_range - e0
    return total_uj / 1e6


def cpu_seconds() -> float:
    """This process's user + system CPU time in seconds (all threads).

    From ``getrusage(RUSAGE_SELF)``, which has microsecond resolution where
    ``os.times`` counts 10 ms clock ticks.
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_bytes(current_rss: int | None = None) -> int:
    """High-water RSS of this process: ``getrusage`` ``ru_maxrss`` (KiB on Linux).

    The kernel updates that mark lazily, so the current RSS (psutil) can be a
    little higher at the moment of reading; the larger of the two is returned.
    """
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = maxrss if sys.platform == "darwin" else maxrss * 1024
    if current_rss is None:
        current_rss = psutil.Process().memory_info().rss
    return int(max(peak, current_rss))


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (NumPy default); ``None`` when empty."""
    return float(np.percentile(values, q)) if values else None


@dataclass
class Recorder:
    """Measure one run: ``with Recorder() as rec: ... rec.item(latency_s)``.

    ``tokens`` is set by the caller (tokens the model processed, prompt and
    generated). ``result()`` returns the JSON-able performance record.
    """

    rapl_root: Path | str = RAPL_ROOT
    load_seconds: float | None = None
    tokens: int = 0
    latencies: list[float] = field(default_factory=list)
    _t0: float = 0.0
    _cpu0: float = 0.0
    _rapl0: dict | None = None
    _wall: float | None = None
    _cpu: float | None = None
    _energy_j: float | None = None

    def __enter__(self) -> Recorder:
        self._rapl0 = read_rapl(self.rapl_root)
        self._cpu0 = cpu_seconds()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._wall = time.perf_counter() - self._t0
        self._cpu = cpu_seconds() - self._cpu0
        if self._rapl0 is not None:
            end = read_rapl(self.rapl_root)
            if end is not None and end.keys() == self._rapl0.keys():
                self._energy_j = rapl_delta_joules(self._rapl0, end)

    def item(self, latency_s: float, count: int = 1) -> None:
        """Record ``count`` items that each took ``latency_s`` seconds."""
        self.latencies.extend([latency_s] * count)

    def result(self) -> dict:
        """Performance record: times, throughput, latency, memory, CPU, energy."""
        if self._wall is None or self._cpu is None:
            raise RuntimeError("Recorder.result() called before the run ended")
        wall, cpu, n = self._wall, self._cpu, len(self.latencies)
        rss = psutil.Process().memory_info().rss
        tokens = self.tokens
        out = {
            "model_load_s": self.load_seconds,
            "wall_s": wall,
            "items": n,
            "tokens": tokens,
            "items_per_s": n / wall if wall > 0 else None,
            "tokens_per_s": tokens / wall if wall > 0 and tokens else None,
            "latency_p50_s": percentile(self.latencies, 50),
            "latency_p95_s": percentile(self.latencies, 95),
            "cpu_s": cpu,
            "cpu_s_per_1k_tokens": cpu / tokens * 1000 if tokens else None,
            "peak_rss_bytes": peak_rss_bytes(rss),
            "peak_rss_method": "getrusage ru_maxrss, process high-water mark",
            "rss_bytes": rss,
        }
        out.update(self._energy(cpu, tokens))
        return out

    def _energy(self, cpu: float, tokens: int) -> dict:
        if self._energy_j is not None:
            joules = self._energy_j
            return {
                "energy_j": joules,
                "energy_per_1k_tokens_j": joules / tokens * 1000 if tokens else None,
                "energy_method": "rapl",
                "energy_assumption": (
                    "RAPL package counters over the run's wall time; includes "
                    "idle power and other processes on the same sockets"
                ),
            }
        watts = watts_per_core()
        joules = cpu * watts
        return {
            "energy_j": joules,
            "energy_per_1k_tokens_j": joules / tokens * 1000 if tokens else None,
            "energy_method": "estimate_cpu_time",
            "energy_assumption": (
                f"no readable RAPL counters: cpu_seconds x {watts:g} W per busy "
                "core (CIVITAS_WATTS_PER_CORE); excludes RAM, idle and "
                "platform power"
            ),
            "watts_per_core": watts,
        }


def _proc_stat_busy_seconds(stat_path: Path | str) -> float:
    """Busy CPU seconds of the whole machine since boot, from ``/proc/stat``.

    Busy = user + nice + system + irq + softirq + steal (idle and iowait left
    out; guest time is already inside user).
    """
    with open(stat_path, encoding="ascii") as fh:
        fields = fh.readline().split()
    if not fields or fields[0] != "cpu":
        raise ValueError(f"unexpected first line in {stat_path}")
    ticks = [int(x) for x in fields[1:]] + [0] * 8
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks[:8]
    hz = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq + steal) / hz


@dataclass
class ForeignLoad:
    """Share of machine CPU used by other processes during a window.

    ``fraction = max(0, busy_machine - busy_self) / (wall * online CPUs)``,
    clamped to 1, with ``busy_machine`` from ``/proc/stat`` and ``busy_self``
    from ``getrusage``. A benchmark marks or repeats runs above a threshold.
    ``clock`` and ``self_cpu`` are parameters so the arithmetic can be tested.
    """

    stat_path: Path | str = "/proc/stat"
    cpu_count: int = field(default_factory=lambda: os.cpu_count() or 1)
    clock: Callable[[], float] = time.perf_counter
    self_cpu: Callable[[], float] = cpu_seconds
    fraction: float | None = None
    _busy0: float = 0.0
    _self0: float = 0.0
    _t0: float = 0.0

    def start(self) -> ForeignLoad:
        """Take the opening reading."""
        self._busy0 = _proc_stat_busy_seconds(self.stat_path)
        self._self0 = self.self_cpu()
        self._t0 = self.clock()
        return self

    def stop(self) -> float:
        """Take the closing reading and return the foreign-load fraction."""
        wall = self.clock() - self._t0
        busy = _proc_stat_busy_seconds(self.stat_path) - self._busy0
        own = self.self_cpu() - self._self0
        capacity = wall * self.cpu_count
        self.fraction = (
            min(1.0, max(0.0, busy - own) / capacity) if capacity > 0 else 0.0
        )
        return self.fraction

    def __enter__(self) -> ForeignLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# Instruction-set features that change which numeric kernels ONNX Runtime
# and NumPy pick, and so the speed and the last bits of a floating-point
# result.
ISA_FEATURES = (
    "sse4_1",
    "sse4_2",
    "fma",
    "f16c",
    "avx",
    "avx2",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "sve",
    "sve2",
)


def isa_features(flags) -> list[str]:
    """The ``ISA_FEATURES`` among a processor's ``flags``, in that order."""
    present = set(flags or ())
    return [name for name in ISA_FEATURES if name in present]


def processor(environment: dict | None = None) -> dict:
    """The processor's model and signature, the cores this process may use,
    and which of ``ISA_FEATURES`` it has (what a benchmark reports beside its
    figures): of this machine, or as an ``environment()`` recorded them."""
    if environment is None:
        environment = {**cpu_info(), "cores_available": _cores()}
    return {
        "model": environment.get("cpu_model"),
        "signature": environment.get("cpu_signature"),
        "cores": environment.get("cores_available"),
        "flags": isa_features(environment.get("cpu_flags")),
    }


def describe_processor(cpu: dict) -> str:
    """One line for a benchmark's table: ``processor()`` as words."""
    signature = f", {cpu['signature']}" if cpu.get("signature") else ""
    return (
        f"{cpu['model']}{signature} ({cpu['cores']} cores; "
        f"{' '.join(cpu['flags']) or 'no listed ISA features'})"
    )


# A cloud guest often sees a masked model name ("Intel(R) Xeon(R)
# Processor"), shared by processors whose kernels and speeds differ; the CPUID
# signature in /proc/cpuinfo still tells them apart (x86: family 6 model 143
# is Sapphire Rapids, 207 Emerald Rapids; family 25 model 17 is Zen 4). Arm
# kernels report the implementer and part numbers instead.
_SIGNATURE_FIELDS = (
    ("vendor_id", ""),
    ("cpu family", "family "),
    ("model", "model "),
    ("stepping", "stepping "),
    ("CPU implementer", "implementer "),
    ("CPU part", "part "),
    ("CPU variant", "variant "),
    ("CPU revision", "revision "),
)


def cpu_info(cpuinfo_path: Path | str = "/proc/cpuinfo") -> dict:
    """Model name, signature and flags of the first processor in
    ``/proc/cpuinfo``."""
    try:
        text = Path(cpuinfo_path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    first: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        first.setdefault(key.strip(), value.strip())
    flags = (first.get("flags") or first.get("Features") or "").split()
    signature = " ".join(
        label + first[key] for key, label in _SIGNATURE_FIELDS if first.get(key)
    )
    return {
        "cpu_model": first.get("model name") or platform.processor() or None,
        "cpu_signature": signature or None,
        "cpu_flags": flags,
    }


def _cores() -> int | None:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count()


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except ImportError:
        return None
    return getattr(mod, "__version__", None)


def environment(settings: dict | None = None) -> dict:
    """Describe where a run happened: CPU, cores used, library versions, settings."""
    info = cpu_info()
    return {
        "engine_version": ENGINE_VERSION,
        "cpu_model": info["cpu_model"],
        "cpu_signature": info["cpu_signature"],
        "cpu_flags": info["cpu_flags"],
        "cores_available": _cores(),
        "cpu_count": os.cpu_count(),
        "onnxruntime": _version("onnxruntime"),
        "onnx": _version("onnx"),
        "numpy": _version("numpy"),
        "tokenizers": _version("tokenizers"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "runtime_settings": settings,
        "rapl_available": read_rapl() is not None,
    }
