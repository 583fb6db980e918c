"""The engine on the ``optimised`` graph (fused attention) beside the unfused one.

Same bench model, workload and runners as ``eval_throughput.py``; every
engine pair runs alternately in one process (``timed_pair``), so both see
the same moments of any other load, and each reports CPU seconds per token
(``getrusage`` through ``time.process_time``), which foreign load disturbs
less than wall time:

* fp32 scoring and generation: the Optimum graph, then the same graph after
  ``engine.optimise.optimise_bundle`` (one ``GroupQueryAttention`` a layer,
  fed one packed Q/K/V ``MatMul``; gate and up packed too);
* int8 scoring: ``engine.quantise`` dynamic int8 of each (fusion first,
  then quantisation: the pass needs the float projections to anchor on);
* int4 generation: ``MatMulNBits`` of each;
* onnxruntime-genai (fp32 and int4, same weights, its own ``GroupQueryAttention``
  graph with the builder's packed Q/K/V) in the export environment, as
  ``eval_throughput.py`` runs it.

``eval_throughput.py`` runs it as its ``optimised`` phase (``--json``: the
``optimised`` object); standalone, on the bundles that script wrote:
``bench/fused.py --bundle bench/out/eval_throughput/llama-99m-h768-l8-v32000
--genai-bundle bench/out/eval_throughput/llama-99m-h768-l8-v32000-genai``;
``--spinning-pair`` instead times fused-graph generation without and with
spinning session threads, alternately (one JSON object).
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
    rate,
    ratio,
    run_worker,
    source_stamp,
    timed_pair,
    workload,
)
from bench.int4 import ensure_genai_int4  # noqa: E402


def ensure_fused(bundle: Path) -> tuple[Path, dict]:
    """The ``optimised`` graph of ``bundle`` as ``<bundle>-fused``, cached.

    The marker records the passes (``engine.optimise.TOOL``) and the source
    (``source_stamp``): a graph made by other passes is made again.
    """
    import shutil

    from engine.optimise import TOOL, optimise_bundle

    dest = bundle.with_name(bundle.name + "-fused")
    marker = dest / "bench_fused.json"
    made_by = {"tool": TOOL, "stamp": source_stamp(bundle)}
    if marker.is_file():
        report = json.loads(marker.read_text())
        if report.pop("made_by", None) == made_by:
            return dest, report
    shutil.rmtree(dest, ignore_errors=True)
    report = optimise_bundle(bundle, dest)
    if report["status"] != "fused":
        raise RuntimeError(f"not fused: {report['reason']}")
    marker.write_text(json.dumps({**report, "made_by": made_by}, default=str) + "\n")
    return dest, report


def _pair(
    a_bundle: Path, b_bundle: Path, task: str, settings, repeats, work, b_settings=None
) -> dict:
    """``task`` ("scoring" or "generation") on both bundles, alternately
    (``b_settings``: other session settings for the second)."""
    from engine.runtime import load_model

    models = [
        load_model(a_bundle, settings=settings),
        load_model(b_bundle, settings=b_settings or settings),
    ]
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
    out["fused_vs_unfused"] = (
        out["fused"]["tokens_per_s"] / out["unfused"]["tokens_per_s"]
    )
    if task == "generation":
        out["greedy_tokens_equal"] = produced[0] == produced[1]
    return out


def fused_figures(bundle: Path, settings, repeats: int, work: dict) -> dict:
    """Every pair: fp32 scoring and generation, int8 scoring, int4 generation."""
    fused, report = ensure_fused(bundle)
    pairs = {
        "fp32_scoring": (bundle, fused, "scoring"),
        "fp32_generation": (bundle, fused, "generation"),
        "int8_scoring": (ensure_quantised(bundle), ensure_quantised(fused), "scoring"),
        "int4_generation": (
            ensure_quantised(bundle, "int4"),
            ensure_quantised(fused, "int4"),
            "generation",
        ),
    }
    result: dict = {"bundle": str(fused), "fused_ops": report["fused_ops"]}
    for name, (a, b, task) in pairs.items():
        print(f"[fused] {name}", file=sys.stderr, flush=True)
        result[name] = _pair(a, b, task, settings, repeats, work)
    return result


def fused_summary(runs: dict) -> dict:
    """``runs["fused"]`` with the genai rates and the ratios (``--json``'s
    ``optimised`` object); genai from ``runs["genai"]`` and ``runs["int4"]``."""
    r = dict(runs["fused"])
    genai = {
        name: rate(NEW_TOKENS, run and run["generation_times_s"])
        for name, run in (("fp32", runs.get("genai")), ("int4", runs["int4"]["genai"]))
    }
    r["genai_generation_tokens_per_s"] = genai
    r["ratios"] = {
        graph: {
            "int8_vs_fp32_scoring": ratio(
                r["int8_scoring"][graph]["tokens_per_s"],
                r["fp32_scoring"][graph]["tokens_per_s"],
            ),
            "fp32_generation_vs_genai": ratio(
                r["fp32_generation"][graph]["tokens_per_s"], genai["fp32"]
            ),
            "int4_generation_vs_genai": ratio(
                r["int4_generation"][graph]["tokens_per_s"], genai["int4"]
            ),
        }
        for graph in ("unfused", "fused")
    }
    return r


def fused_lines(r: dict) -> list[str]:
    """The printed form: one line per pair, then the ratios."""
    lines = [
        "optimised graph (fused attention) beside the unfused one, alternately:",
        f"{'  workload':<20}{'unfused tok/s':>14}{'fused tok/s':>13}{'fused/unf':>10}"
        f"{'CPU ms/tok unf':>16}{'fused':>8}",
    ]
    for name in ("fp32_scoring", "fp32_generation", "int8_scoring", "int4_generation"):
        p = r[name]
        lines.append(
            f"  {name:<18}{p['unfused']['tokens_per_s']:>14,.1f}"
            f"{p['fused']['tokens_per_s']:>13,.1f}{p['fused_vs_unfused']:>10.2f}"
            f"{p['unfused']['cpu_s_per_token'] * 1e3:>16.2f}"
            f"{p['fused']['cpu_s_per_token'] * 1e3:>8.2f}"
        )
    for graph, ratios in r["ratios"].items():
        shown = ", ".join(
            f"{k} {'-' if v is None else format(v, '.2f')}" for k, v in ratios.items()
        )
        lines.append(f"  {graph}: {shown}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Standalone: the pairs and genai on bundles ``eval_throughput.py`` wrote."""
    from engine.session import RuntimeSettings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="Optimum bundle")
    parser.add_argument("--genai-bundle", type=Path, help="its genai_gqa twin")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="0 = every core")
    parser.add_argument("--engine-spinning", nargs="?", const="always", default="off")
    parser.add_argument(
        "--spinning-pair",
        action="store_true",
        help="only: fused-graph generation without, then with, spinning threads",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    args.threads = args.threads or len(os.sched_getaffinity(0))
    settings = RuntimeSettings.spinning(args.threads, args.engine_spinning)
    vocab = json.loads((args.bundle / "config.json").read_text())["vocab_size"]
    if args.spinning_pair:
        fused = ensure_fused(args.bundle)[0]
        spinning = RuntimeSettings(args.threads, allow_spinning=True)
        pair = _pair(
            fused, fused, "generation", settings, args.repeats, workload(vocab),
            b_settings=spinning,
        )  # fmt: skip
        result = {
            "without_spinning": pair["unfused"],
            "with_spinning": pair["fused"],
            "with_vs_without": pair["fused_vs_unfused"],
            "greedy_tokens_equal": pair["greedy_tokens_equal"],
        }
        print(json.dumps(result, default=float))
        return 0
    runs: dict = {"genai": None, "int4": {"genai": None}}
    runs["fused"] = fused_figures(args.bundle, settings, args.repeats, workload(vocab))
    genai_python = python_with("onnxruntime_genai")[0]
    if genai_python and args.genai_bundle:
        print("[fused] onnxruntime-genai fp32 and int4", file=sys.stderr, flush=True)
        runs["genai"] = run_worker(genai_python, "genai", args.genai_bundle, args)
        int4 = ensure_genai_int4(
            ensure_quantised(args.bundle, "int4"), args.genai_bundle
        )
        runs["int4"]["genai"] = run_worker(genai_python, "genai", int4, args)
    result = fused_summary(runs)
    print(
        json.dumps(result, default=float)
        if args.json
        else "\n".join(fused_lines(result))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
