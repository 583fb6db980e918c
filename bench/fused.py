"""The engine on the ``optimised`` graph (fused attention) beside the unfused one.

Same bench model, workload and runners as ``eval_throughput.py``; every
engine pair runs alternately in one process (``timed_pair``), so both see
the same moments of any other load, and each reports CPU seconds per token
(``getrusage`` through ``time.process_time``), which foreign load disturbs
less than wall time:

* fp32 scoring and generation: the Optimum graph, then the same graph after
  ``engine.optimise.optimise_bundle`` (one ``GroupQueryAttention`` a layer);
* int8 scoring: ``engine.quantise`` dynamic int8 of each (fusion first,
  then quantisation: the pass needs the float projections to anchor on);
* int4 generation: ``MatMulNBits`` of each;
* onnxruntime-genai (fp32 and int4, same weights, its own ``GroupQueryAttention``
  graph) in the export environment, as ``eval_throughput.py`` runs it.

Usage: ``bench/fused.py [--params 1e8] [--repeats 3] [--json] [--no-genai]``.
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
    BATCH,
    NEW_TOKENS,
    SEQ_LEN,
    ensure_quantised,
    python_with,
    run_worker,
    timed_pair,
    workload,
)
from bench.eval_throughput import DEFAULT_OUT, bench_config, ensure_bundles  # noqa: E402
from bench.int4 import ensure_genai_int4  # noqa: E402


def ensure_fused(bundle: Path) -> tuple[Path, dict]:
    """The ``optimised`` graph of ``bundle`` as ``<bundle>-fused``, cached."""
    import shutil

    from engine.optimise import optimise_bundle

    dest = bundle.with_name(bundle.name + "-fused")
    marker = dest / "bench_fused.json"
    if marker.is_file():
        return dest, json.loads(marker.read_text())
    shutil.rmtree(dest, ignore_errors=True)
    report = optimise_bundle(bundle, dest)
    if report["status"] != "fused":
        raise RuntimeError(f"not fused: {report['reason']}")
    marker.write_text(json.dumps(report, default=str) + "\n")
    return dest, report


def _pair(a_bundle: Path, b_bundle: Path, task: str, settings, repeats, work) -> dict:
    """``task`` ("scoring" or "generation") on both bundles, alternately."""
    from engine.runtime import load_model

    models = [load_model(b, settings=settings) for b in (a_bundle, b_bundle)]
    requests = [([], row) for row in work["scoring"]]
    tokens = BATCH * SEQ_LEN if task == "scoring" else NEW_TOKENS
    produced: list[list[int]] = [[], []]

    def runner(k: int):
        model = models[k]
        if task == "scoring":
            return lambda: model.loglikelihood(requests, batch_size=BATCH)

        def generate() -> None:
            produced[k] = model.generate(
                work["prompt"], max_new_tokens=NEW_TOKENS, stop_ids=()
            )

        return generate

    times = timed_pair(runner(0), runner(1), repeats)
    out = {}
    for key, name in (("a", "unfused"), ("b", "fused")):
        wall = float(np.median(times[key]["wall_s"]))
        cpu = float(np.median(times[key]["cpu_s"]))
        out[name] = {
            "tokens_per_s": tokens / wall,
            "cpu_s_per_token": cpu / tokens,
            "times_s": times[key]["wall_s"],
        }
    out["fused_vs_unfused"] = out["fused"]["tokens_per_s"] / out["unfused"]["tokens_per_s"]
    if task == "generation":
        out["greedy_tokens_equal"] = produced[0] == produced[1]
    return out


def _genai(python: str | None, bundle: Path, args) -> float | None:
    if not python:
        return None
    result = run_worker(python, "genai", bundle, args)
    return NEW_TOKENS / float(np.median(result["generation_times_s"]))


def run(args: argparse.Namespace) -> dict:
    """Every pair and the genai runs; returns the JSON object."""
    from engine.session import RuntimeSettings

    cfg = bench_config(args.params)
    genai_python = None if args.no_genai else python_with("onnxruntime_genai")[0]
    bundles = ensure_bundles(cfg, args.out_dir, genai=genai_python is not None)
    fused, report = ensure_fused(bundles["optimum"])
    settings = RuntimeSettings(args.threads, allow_spinning=args.engine_spinning)
    work = workload(cfg.vocab_size)
    pairs = {
        "fp32_scoring": (bundles["optimum"], fused, "scoring"),
        "fp32_generation": (bundles["optimum"], fused, "generation"),
        "int8_scoring": (
            ensure_quantised(bundles["optimum"]),
            ensure_quantised(fused),
            "scoring",
        ),
        "int4_generation": (
            ensure_quantised(bundles["optimum"], "int4"),
            ensure_quantised(fused, "int4"),
            "generation",
        ),
    }
    result: dict = {"params": cfg.parameter_count(), "fused_ops": report["fused_ops"]}
    for name, (a, b, task) in pairs.items():
        print(f"[fused] {name}", file=sys.stderr, flush=True)
        result[name] = _pair(a, b, task, settings, args.repeats, work)
    genai = {"fp32": None, "int4": None}
    if genai_python:
        print("[fused] onnxruntime-genai fp32 and int4", file=sys.stderr, flush=True)
        genai["fp32"] = _genai(genai_python, bundles["genai_gqa"], args)
        int4 = ensure_genai_int4(pairs["int4_generation"][0], bundles["genai_gqa"])
        genai["int4"] = _genai(genai_python, int4, args)
    result["genai_generation_tokens_per_s"] = genai
    result["ratios"] = _ratios(result, genai)
    return result


def _ratios(r: dict, genai: dict) -> dict:
    def div(a, b):
        return a / b if a is not None and b else None

    out = {}
    for graph in ("unfused", "fused"):
        out[graph] = {
            "int8_vs_fp32_scoring": div(
                r["int8_scoring"][graph]["tokens_per_s"],
                r["fp32_scoring"][graph]["tokens_per_s"],
            ),
            "fp32_generation_vs_genai": div(
                r["fp32_generation"][graph]["tokens_per_s"], genai["fp32"]
            ),
            "int4_generation_vs_genai": div(
                r["int4_generation"][graph]["tokens_per_s"], genai["int4"]
            ),
        }
    return out


def table(r: dict) -> str:
    """The printed form: one line per pair, then the ratios."""
    lines = [
        f"{'workload':<18}{'unfused tok/s':>14}{'fused tok/s':>13}{'fused/unf':>10}"
        f"{'CPU ms/tok unf':>16}{'fused':>8}"
    ]
    for name in ("fp32_scoring", "fp32_generation", "int8_scoring", "int4_generation"):
        p = r[name]
        lines.append(
            f"{name:<18}{p['unfused']['tokens_per_s']:>14,.1f}"
            f"{p['fused']['tokens_per_s']:>13,.1f}{p['fused_vs_unfused']:>10.2f}"
            f"{p['unfused']['cpu_s_per_token'] * 1e3:>16.2f}"
            f"{p['fused']['cpu_s_per_token'] * 1e3:>8.2f}"
        )
    genai = r["genai_generation_tokens_per_s"]
    lines.append(f"genai generation tok/s: fp32 {genai['fp32']}, int4 {genai['int4']}")
    for graph, ratios in r["ratios"].items():
        shown = ", ".join(
            f"{k} {'-' if v is None else format(v, '.2f')}" for k, v in ratios.items()
        )
        lines.append(f"{graph}: {shown}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse, run, print the table or (``--json``) one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=float, default=1e8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="0 = every core")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--engine-spinning", action="store_true")
    parser.add_argument("--no-genai", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    args.threads = args.threads or len(os.sched_getaffinity(0))
    result = run(args)
    print(json.dumps(result, default=float) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
