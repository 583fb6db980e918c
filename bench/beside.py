"""The engine on the uploaded graph beside PyTorch eager and onnxruntime-genai,
timed alternately in one process.

``eval_throughput.py`` times each runner in a phase of its own, a minute or
more apart. On a VM whose speed drifts within minutes, a ratio of two such
phases measures the drift as much as the runners: on 2026-12-06 (Intel,
family 6 model 207) the MatMul probe read 315 GFLOP/s in one run and 200
twenty minutes later, and the engine's scoring came out at 1.08x and 0.72x
PyTorch. Here one process (``.venv-export/bin/python``, which has torch and
genai) calls the runners round after round (``bench.baselines.timed_rounds``,
with a ``--idle`` s sleep before each call, so that threads another runner
left spinning, PyTorch's OpenMP pool or genai's, have stopped):

* scoring (batch 8 x 128 tokens): the engine and PyTorch eager;
* generation (batch 1, 64 new tokens): the engine, PyTorch eager and genai on
  its own graph of the same weights (``--genai-bundle``, genai's builder
  layout with fused attention).

The engine runs the uploaded (unfused) graph with eval_throughput's engine
settings (``RuntimeSettings.spinning(threads, --engine-spinning)``). A
runner whose package this interpreter lacks is left out and named.

    .venv-export/bin/python bench/beside.py --engine-spinning within \\
        --bundle bench/out/eval_throughput/llama-99m-h768-l8-v32000 \\
        --genai-bundle bench/out/eval_throughput/llama-99m-h768-l8-v32000-genai
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.baselines import (  # noqa: E402
    BATCH,
    NEW_TOKENS,
    SEQ_LEN,
    ratio,
    run_json,
    timed_rounds,
    workload,
)

TOKENS = {"scoring": BATCH * SEQ_LEN, "generation": NEW_TOKENS}


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _runners(args) -> tuple[dict, list[str]]:
    """``{workload: {runner: callable}}`` and the runners left out, with why."""
    from engine.runtime import load_model
    from engine.session import RuntimeSettings

    settings = RuntimeSettings.spinning(args.threads, args.engine_spinning)
    model = load_model(args.bundle, settings=settings)
    vocab = json.loads((args.bundle / "config.json").read_text())["vocab_size"]
    work = workload(vocab)
    requests = [([], row) for row in work["scoring"]]
    fns: dict = {
        "scoring": {"engine": lambda: model.loglikelihood(requests, batch_size=BATCH)},
        "generation": {
            "engine": lambda: model.generate(
                work["prompt"], max_new_tokens=NEW_TOKENS, stop_ids=()
            )
        },
    }
    missing = []
    if _has("torch") and _has("transformers"):
        from bench.baselines import torch_runners

        torch = torch_runners(args.bundle, args.threads)
        fns["scoring"]["torch"] = torch["score"]
        fns["generation"]["torch"] = torch["generate"]
    else:
        missing.append("torch: this interpreter has no torch or transformers")
    if args.genai_bundle and args.genai_bundle.is_dir() and _has("onnxruntime_genai"):
        from bench.baselines import genai_generator

        fns["generation"]["genai"] = genai_generator(args.genai_bundle, args.threads)[1]
    else:
        missing.append("genai: no --genai-bundle folder, or no onnxruntime_genai here")
    return fns, missing


def measure(args) -> dict:
    """Per workload: every runner's tokens/s and CPU, and the engine's ratios."""
    fns, missing = _runners(args)
    result: dict = {
        "graph": "uploaded (unfused)",
        "engine_spinning": args.engine_spinning,
        "rounds": args.repeats,
        "idle_s": args.idle,
        "left_out": missing,
    }
    for name, runners in fns.items():
        print(f"[beside] {name}: {', '.join(runners)}", file=sys.stderr, flush=True)
        times = timed_rounds(runners, args.repeats, idle_s=args.idle)
        rows = {
            key: {
                "tokens_per_s": TOKENS[name] / float(np.median(t["wall_s"])),
                "cpu_ms_per_token": 1e3 * float(np.median(t["cpu_s"])) / TOKENS[name],
                "times_s": t["wall_s"],
            }
            for key, t in times.items()
        }
        engine = rows["engine"]["tokens_per_s"]
        result[name] = {
            "runners": rows,
            "ratios": {
                f"vs_{key}": ratio(engine, row["tokens_per_s"])
                for key, row in rows.items()
                if key != "engine"
            },
        }
    return result


def beside_figures(python: str | None, bundle: Path, genai_bundle, args) -> dict:
    """This script under ``python`` as a phase of eval_throughput (same
    repeats, threads and engine settings), or ``{"status": why not}``."""
    if not python:
        return {"status": "no interpreter with torch or genai"}
    command = [python, str(Path(__file__).resolve()), "--bundle", str(bundle),
               "--repeats", str(args.repeats), "--threads", str(args.threads),
               "--engine-spinning", args.engine_spinning, "--json"]  # fmt: skip
    if genai_bundle:
        command += ["--genai-bundle", str(genai_bundle)]
    try:
        return run_json(command, "the engine beside its baselines")
    except RuntimeError as exc:
        return {"status": str(exc)}


def beside_lines(result: dict) -> list[str]:
    """eval_throughput's table lines for ``beside_figures``."""
    head = "uploaded graph beside its baselines, timed alternately"
    if "status" in result:
        return [f"{head}: {result['status']}"]
    parts = []
    for name in TOKENS:
        rows, ratios = result[name]["runners"], result[name]["ratios"]
        rates = " / ".join(f"{row['tokens_per_s']:,.1f}" for row in rows.values())
        vs = ", ".join(f"{v:.2f}x {k.removeprefix('vs_')}" for k, v in ratios.items())
        parts.append(f"{name} {vs or '-'} ({'/'.join(rows)}: {rates} tok/s)")
    return [f"{head}: " + "; ".join(parts)] + [
        f"  left out: {why}" for why in result["left_out"]
    ]


def lines(result: dict) -> list[str]:
    """The printed table: one line per workload and runner."""
    out = [
        f"engine on the {result['graph']} graph, spinning "
        f"{result['engine_spinning']}; {result['rounds']} rounds, runners "
        f"alternating, {result['idle_s']} s idle before each call",
        f"{'workload':<12}{'runner':<8}{'tok/s':>10}{'CPU ms/tok':>12}"
        f"{'engine ÷ it':>13}",
    ]
    for name in TOKENS:
        rows, ratios = result[name]["runners"], result[name]["ratios"]
        for key, row in rows.items():
            vs = ratios.get(f"vs_{key}")
            out.append(
                f"{name:<12}{key:<8}{row['tokens_per_s']:>10,.1f}"
                f"{row['cpu_ms_per_token']:>12.3f}"
                f"{'-' if vs is None else format(vs, '.2f'):>13}"
            )
    return out + [f"left out: {why}" for why in result["left_out"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="uploaded bundle")
    parser.add_argument("--genai-bundle", type=Path, help="its genai_gqa twin")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds")
    parser.add_argument("--threads", type=int, default=0, help="0 = every core")
    parser.add_argument(
        "--engine-spinning", choices=("off", "within", "always"), default="within"
    )
    parser.add_argument("--idle", type=float, default=0.2, help="seconds before calls")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    args.threads = args.threads or len(os.sched_getaffinity(0))
    result = measure(args)
    print(json.dumps(result) if args.json else "\n".join(lines(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
