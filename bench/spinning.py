"""Session thread policies side by side: no spinning, spinning within runs, always.

One process calls, alternately (``bench.baselines.timed_rounds``), the engine
with each policy of ``RuntimeSettings.spinning`` and, when this interpreter
has onnxruntime_genai (run it with ``.venv-export/bin/python``), genai on its
own graph with the same weights, so every runner sees the same moments of
any other load:

* ``off``: idle pool threads sleep (the engine's default);
* ``within``: they spin between the operators of a run and stop when it
  returns (``session.force_spinning_stop``);
* ``always``: ONNX Runtime's default, and genai's.

Workloads (``--workloads``): fused fp32, int4 and dynamic int8 generation
(64 tokens, batch 1). Dynamic int8 scoring is not among them: its one-row
runs go on a single-threaded session that never spins, whatever the policy
(``RuntimeSettings.for_concurrent_runs``; eval_throughput's int8 phase
compares it with the shared-session layout). For each:
tokens/s, CPU ms per token (``getrusage``) and idle cores: process CPU
seconds per second of a ``--idle`` s sleep right after each call.

    .venv-export/bin/python bench/spinning.py \\
        --bundle bench/out/eval_throughput/llama-99m-h768-l8-v32000 \\
        --genai-bundle bench/out/eval_throughput/llama-99m-h768-l8-v32000-genai
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
    ratio,
    run_json,
    timed_rounds,
    workload,
)
from bench.fused import ensure_fused  # noqa: E402
from bench.int4 import ensure_genai_int4  # noqa: E402

MODES = ("off", "within", "always")


def _runners(bundle: Path, threads: int, work: dict) -> dict:
    """One generating callable per policy."""
    from engine.runtime import load_model
    from engine.session import RuntimeSettings

    runners = {}
    for mode in MODES:
        model = load_model(bundle, settings=RuntimeSettings.spinning(threads, mode))
        runners[mode] = lambda m=model: m.generate(
            work["prompt"], max_new_tokens=NEW_TOKENS, stop_ids=()
        )
    return runners


def measure(args, work: dict) -> dict:
    """Every workload's figures per runner, and ratios to ``off`` and to genai."""
    fused = ensure_fused(args.bundle)[0]
    bundles = {
        "fp32_generation": (fused, args.genai_bundle),
        "int4_generation": (ensure_quantised(fused, "int4"), None),
        "int8_generation": (ensure_quantised(fused), None),
    }
    if args.genai_bundle:
        genai_int4 = ensure_genai_int4(
            ensure_quantised(args.bundle, "int4"), args.genai_bundle
        )
        bundles["int4_generation"] = (bundles["int4_generation"][0], genai_int4)
    result: dict = {"threads": args.threads, "idle_s": args.idle}
    for name in args.workloads.split(","):
        bundle, genai_bundle = bundles[name]
        fns = _runners(bundle, args.threads, work)
        if genai_bundle and _has_genai():
            from bench.baselines import genai_generator

            fns["genai"] = genai_generator(genai_bundle, args.threads)[1]
        print(f"[spinning] {name}", file=sys.stderr, flush=True)
        times = timed_rounds(fns, args.repeats, idle_s=args.idle)
        rows = {
            key: {
                "tokens_per_s": NEW_TOKENS / float(np.median(t["wall_s"])),
                "cpu_ms_per_token": 1e3 * float(np.median(t["cpu_s"])) / NEW_TOKENS,
                "idle_cores": float(np.median(t["idle_cores"])),
                "times_s": t["wall_s"],
            }
            for key, t in times.items()
        }
        for row in rows.values():
            row["vs_off"] = row["tokens_per_s"] / rows["off"]["tokens_per_s"]
            if "genai" in rows:
                row["vs_genai"] = row["tokens_per_s"] / rows["genai"]["tokens_per_s"]
        result[name] = rows
    return result


GENERATION = ("fp32_generation", "int4_generation")


def alternating_figures(python: str, bundle: Path, genai_bundle: Path, args) -> dict:
    """This script under ``python`` (one that has genai) as eval_throughput's
    worker: the engine's ``optimised`` graph with ``args.engine_spinning`` and
    genai generating alternately, fp32 and int4, ``args.repeats`` rounds."""
    command = [python, str(Path(__file__).resolve()), "--bundle", str(bundle),
               "--genai-bundle", str(genai_bundle), "--workloads", ",".join(GENERATION),
               "--repeats", str(args.repeats), "--threads", str(args.threads),
               "--json"]  # fmt: skip
    result = run_json(command, "the alternating engine and genai run")
    out: dict = {"engine_spinning": args.engine_spinning, "rounds": args.repeats}
    for name in GENERATION:
        engine, genai = result[name][args.engine_spinning], result[name].get("genai")
        if genai is None:
            raise RuntimeError(f"{python} ran no genai for {name}")
        out[name] = {
            "engine_tokens_per_s": engine["tokens_per_s"],
            "genai_tokens_per_s": genai["tokens_per_s"],
            "ratio_vs_genai": ratio(engine["tokens_per_s"], genai["tokens_per_s"]),
            "cpu_ms_per_token": {
                "engine": engine["cpu_ms_per_token"],
                "genai": genai["cpu_ms_per_token"],
            },
        }
    return out


def alternating_lines(alternating: dict) -> list[str]:
    """eval_throughput's table line for ``alternating_figures``."""
    if "status" in alternating:
        return [f"optimised graph and genai, alternately: {alternating['status']}"]
    parts = []
    for name in GENERATION:
        row = alternating[name]
        engine, genai = row["engine_tokens_per_s"], row["genai_tokens_per_s"]
        parts.append(
            f"{name.split('_')[0]} {row['ratio_vs_genai']:.2f}x "
            f"({engine:,.1f} / {genai:,.1f} tok/s)"
        )
    return [f"optimised graph vs genai, timed alternately: {', '.join(parts)}"]


def _has_genai() -> bool:
    try:
        import onnxruntime_genai  # noqa: F401
    except ImportError:
        return False
    return True


def lines(result: dict) -> list[str]:
    """The printed table: one line per workload and runner."""
    out = [
        f"threads {result['threads']}; idle cores over {result['idle_s']} s after "
        "each call",
        f"{'workload':<17}{'runner':<8}{'tok/s':>10}{'vs off':>8}{'vs genai':>9}"
        f"{'CPU ms/tok':>12}{'idle cores':>11}",
    ]
    for name, rows in result.items():
        if not isinstance(rows, dict):
            continue
        for key, row in rows.items():
            genai = row.get("vs_genai")
            out.append(
                f"{name:<17}{key:<8}{row['tokens_per_s']:>10,.1f}{row['vs_off']:>8.2f}"
                f"{'-' if genai is None else format(genai, '.2f'):>9}"
                f"{row['cpu_ms_per_token']:>12.3f}{row['idle_cores']:>11.3f}"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="Optimum bundle")
    parser.add_argument("--genai-bundle", type=Path, help="its genai_gqa twin")
    parser.add_argument(
        "--workloads", default="fp32_generation,int4_generation,int8_generation"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="0 = every core")
    parser.add_argument("--idle", type=float, default=0.2, help="seconds after calls")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    args.threads = args.threads or len(os.sched_getaffinity(0))
    vocab = json.loads((args.bundle / "config.json").read_text())["vocab_size"]
    result = measure(args, workload(vocab))
    print(json.dumps(result) if args.json else "\n".join(lines(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
