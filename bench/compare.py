"""Benchmark the comparison of a derived bundle with its base (engine.compare).

    python bench/compare.py                      # two 400 MB models
    python bench/compare.py --megabytes 50 --json

Writes two MatMul-chain bundles of about ``--megabytes`` each (the weights in
one external data file; the second is the first plus Gaussian noise), then
compares them three ways: in process with tracemalloc on (the peak of Python
and NumPy allocations against one model's size), in process without it (the
streaming throughput, MB of both models read per second), and through the
sandboxed child the worker uses (``run_compare``: the child's start-up and
confinement overhead). Prints a table, or one JSON object with ``--json``.
Figures measured on a busy machine are only indicative.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.compare import compare_bundles, run_compare  # noqa: E402
from modelgen.derive import write_matmul_chain  # noqa: E402


def _bundles(root: Path, megabytes: float, layers: int) -> tuple[Path, Path]:
    side = max(16, int(math.sqrt(megabytes * 1e6 / 4 / layers)))
    base = write_matmul_chain(root / "base", layers=layers, side=side)
    derived = write_matmul_chain(
        root / "derived", layers=layers, side=side, noise=0.01, seed=100
    )
    return base, derived


def measure(megabytes: float, layers: int, memory_bytes: int) -> dict:
    """Every figure of one benchmark run."""
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as scratch:
        base, derived = _bundles(Path(scratch), megabytes, layers)
        model_bytes = (base / "weights.bin").stat().st_size
        tracemalloc.start()
        compare_bundles(base, derived)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        started = time.perf_counter()
        report = compare_bundles(base, derived)
        plain = time.perf_counter() - started
        started = time.perf_counter()
        run_compare(base, derived, memory_bytes=memory_bytes, timeout_s=3600)
        sandboxed = time.perf_counter() - started
    return {
        "model_megabytes": round(model_bytes / 1e6, 1),
        "tensors": layers,
        "peak_traced_megabytes": round(peak / 1e6, 2),
        "peak_over_model_size": round(peak / model_bytes, 4),
        "seconds_in_process": round(plain, 3),
        "megabytes_per_second": round(2 * model_bytes / 1e6 / plain, 1),
        "seconds_sandboxed": round(sandboxed, 3),
        "sandbox_overhead_seconds": round(sandboxed - plain, 3),
        "primary": report["primary"],
        "max_relative_change": report["weights"]["max_relative_change"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=400.0)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--memory-bytes", type=int, default=2 << 30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    figures = measure(args.megabytes, args.layers, args.memory_bytes)
    if args.json:
        print(json.dumps(figures))
    else:
        width = max(map(len, figures))
        for name, value in figures.items():
            print(f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
