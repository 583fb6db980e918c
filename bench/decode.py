"""The engine's decode loop (``engine.decode.greedy``) beside the former one.

Same bench model and generation workload as ``eval_throughput.py`` (batch 1,
a 32-token prompt, 64 greedy tokens, prefill included); for each graph the
former loop (``greedy_reference``: ``InferenceSession.run`` per step, NumPy
in and out, a fresh cache every step) and the IOBinding loop run alternately
in one process on one session (``timed_pair``), each reporting wall tokens/s
and CPU ms per token (``time.process_time``, which foreign load disturbs
less than wall time). Graphs: the ``optimised`` fp32 and int4 ones (one
``GroupQueryAttention`` a layer: one in-place cache buffer) and the unfused
int4 one (``Concat``-grown cache), derived and cached as ``bench/fused.py``
does. Run on the bundles ``eval_throughput.py`` wrote:
``bench/decode.py --bundle bench/out/eval_throughput/llama-99m-h768-l8-v32000``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.baselines import (  # noqa: E402
    NEW_TOKENS,
    ensure_quantised,
    timed_pair,
    workload,
)
from bench.fused import ensure_fused  # noqa: E402


def loop_pair(bundle: Path, settings, repeats: int, prompt: list[int]) -> dict:
    """Former and IOBinding loop on ``bundle``, alternately."""
    from engine.decode import greedy, greedy_reference
    from engine.runtime import load_model

    lm = load_model(bundle, settings=settings)
    shared = lm.shares_cache_buffers
    produced: dict[str, list[int]] = {}

    def run(key: str, loop, **kwargs):
        def call() -> None:
            produced[key] = loop(lm, prompt, NEW_TOKENS, (), **kwargs)[0]

        return call

    times = timed_pair(
        run("a", greedy_reference), run("b", greedy, shared=shared), repeats
    )
    out: dict = {"bundle": bundle.name, "shared_cache": shared}
    for key, name in (("a", "former"), ("b", "iobinding")):
        wall = float(np.median(times[key]["wall_s"]))
        out[name] = {
            "tokens_per_s": NEW_TOKENS / wall,
            "cpu_ms_per_token": float(np.median(times[key]["cpu_s"]))
            * 1e3
            / NEW_TOKENS,
        }
    out["speedup"] = out["iobinding"]["tokens_per_s"] / out["former"]["tokens_per_s"]
    out["greedy_tokens_equal"] = produced["a"] == produced["b"]
    return out


def main(argv: list[str] | None = None) -> int:
    from engine.session import RuntimeSettings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="Optimum bundle")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="0 = every core")
    parser.add_argument("--engine-spinning", default="off")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    threads = args.threads or len(os.sched_getaffinity(0))
    settings = RuntimeSettings.spinning(threads, args.engine_spinning)
    vocab = json.loads((args.bundle / "config.json").read_text())["vocab_size"]
    prompt = workload(vocab)["prompt"]
    fused = ensure_fused(args.bundle)[0]
    graphs = {
        "fused_fp32": fused,
        "fused_int4": ensure_quantised(fused, "int4"),
        "unfused_int4": ensure_quantised(args.bundle, "int4"),
    }
    results = {}
    for name, bundle in graphs.items():
        print(f"[decode] {name}", file=sys.stderr, flush=True)
        results[name] = loop_pair(bundle, settings, args.repeats, prompt)
    if args.json:
        print(json.dumps(results))
        return 0
    print(
        f"{'graph':<14}{'former tok/s':>13}{'new tok/s':>11}{'new/former':>11}"
        f"{'CPU ms/tok former':>19}{'new':>7}  same tokens"
    )
    for name, r in results.items():
        print(
            f"{name:<14}{r['former']['tokens_per_s']:>13.1f}"
            f"{r['iobinding']['tokens_per_s']:>11.1f}{r['speedup']:>11.3f}"
            f"{r['former']['cpu_ms_per_token']:>19.2f}"
            f"{r['iobinding']['cpu_ms_per_token']:>7.2f}  {r['greedy_tokens_equal']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
