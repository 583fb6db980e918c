"""Engine throughput against naive ONNX Runtime, PyTorch, genai and the machine.

    python bench/eval_throughput.py                     # ~100 M params, table
    python bench/eval_throughput.py --json              # one JSON object
    python bench/eval_throughput.py --quick --repeats 1 # ~10 M params, smoke run

On a generated Llama-shaped causal LM (``modelgen.LMConfig`` +
``init_weights``, random weights: speed does not depend on their values;
written once with ``write_lm_bundle(external_data=True)`` and cached under
``--out-dir``), one run measures, each as the median of ``--repeats`` timed
repeats after one warm-up:

* scoring: batch 8 of 128-token texts through ``CausalLM.loglikelihood``
  (right-padded batch, one cached session, log-softmax and gather included);
* generation: greedy, batch 1, 32-token prompt, 64 new tokens through
  ``CausalLM.generate`` (KV cache), prompt prefill included;
* baselines: (a) naive ONNX Runtime on the same ``model.onnx``: a new
  ``InferenceSession`` per item (default options but the same thread count),
  one item at a time, and generation recomputing the whole sequence every
  step; (b) PyTorch eager: ``LlamaForCausalLM`` loaded with the same weights,
  run by ``.venv-export/bin/python`` (torch never enters the project venv),
  generation with transformers' ``DynamicCache``; (c) onnxruntime-genai
  generation on the same weights in the genai builder's layout
  (``GroupQueryAttention``), where some interpreter here has it;
* int4: generation, the engine's int4 derivation vs genai on its weights;
* int8: the same model, dynamic int8 (``engine.quantise``): scoring / fp32,
  perplexity change on civitas-perplexity-public-texts, int8 MatMul limit;
* optimised (``bench/fused.py``): fused-attention graph beside the unfused;
* the machine's limits, measured now: ONNX Runtime fp32 MatMul GFLOP/s (a
  chain of 4 x [1024x4096, 4096x1024] with Relu, M = 256 rows, the engine's
  session settings), so scoring cannot exceed ``GFLOP/s / flops_per_token``
  (``2 N_matmul`` plus attention); and memory read bandwidth (NumPy sgemv and
  sum, and a one-row ORT MatMul, over arrays far larger than L3), so
  generation cannot exceed ``bandwidth / bytes_per_token`` (matmul weights
  read once per token). Limits take the best of their repeats (an upper
  bound), throughputs the median.

Foreign CPU load (``perf.ForeignLoad``; this process and its children
excluded) is sampled during every measurement; above ``--max-foreign-load``
cores (default 0.1) the phase is warned about on stderr and the run is marked
``contaminated``. Ratios are engine / baseline; fractions are figure / limit.
Workload, baselines: ``bench/baselines.py``; limits: ``bench/machine_limits.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The baselines and limits live beside this script (bench/baselines.py,
# bench/machine_limits.py); ROOT must be on sys.path first, hence the late imports.
from bench.baselines import (  # noqa: E402
    BATCH,
    NEW_TOKENS,
    PROMPT_LEN,
    SEQ_LEN,
    TOKEN_SEED,
    genai_worker,
    int8_figures,
    int8_summary,
    naive_figures,
    python_with,
    rate,
    ratio,
    run_worker,
    timed,
    torch_worker,
    workload,
)
from bench.beside import beside_figures, beside_lines  # noqa: E402
from bench.fused import fused_figures, fused_lines, fused_summary  # noqa: E402
from bench.int4 import int4_figures, int4_lines, int4_summary  # noqa: E402
from bench.machine_limits import bandwidth, int8_matmul_gops, matmul_gflops  # noqa: E402
from bench.phases import Phases, log  # noqa: E402
from bench.spinning import alternating_figures, alternating_lines  # noqa: E402
from engine.perf import describe_processor, processor  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "out" / "eval_throughput"
JSON_KEYS = (
    "scoring_tokens_per_s",
    "generation_tokens_per_s",
    "ratio_vs_naive_ort",
    "ratio_vs_torch",
    "matmul_gflops",
    "bandwidth_gb_s",
    "scoring_fraction_of_limit",
    "generation_fraction_of_limit",
    "foreign_load",
    "environment",
)


# -- the bench model ----------------------------------------------------------


def bench_config(params: float):
    """A Llama-shaped ``LMConfig`` of about ``params`` weights.

    Width, heads and vocabulary follow the size class (a ~100 M model is
    768 wide with 12 heads over 4 KV heads and a 32k vocabulary, untied);
    the layer count is then chosen to land nearest the target.
    """
    from modelgen.lm import LMConfig

    if params >= 50e6:
        hidden, heads, kv, inter, vocab = 768, 12, 4, 2048, 32000
    elif params >= 4e6:
        hidden, heads, kv, inter, vocab = 256, 4, 2, 688, 8192
    else:
        hidden, heads, kv, inter, vocab = 128, 4, 2, 344, 4096

    def make(layers: int) -> LMConfig:
        return LMConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=kv,
            intermediate_size=inter,
            max_position_embeddings=512,
        )

    one, two = make(1).parameter_count(), make(2).parameter_count()
    per_layer = two - one
    layers = max(1, round((params - (one - per_layer)) / per_layer))
    return make(layers)


def ensure_bundles(cfg, out_dir: Path, *, genai: bool) -> dict[str, Path]:
    """Write (or reuse) the Optimum bundle and, if asked, the genai one.

    A bundle is reused when its ``bench_model.json`` records the same config;
    that marker is removed before and written after the bundle, so an
    interrupted write is redone. ``init_weights`` is seeded, so both layouts
    hold the same weights even when only one is rewritten.
    """
    import modelgen

    millions = round(cfg.parameter_count() / 1e6)
    key = f"llama-{millions}m-h{cfg.hidden_size}-l{cfg.num_layers}-v{cfg.vocab_size}"
    wanted = {"optimum": out_dir / key}
    if genai:
        wanted["genai_gqa"] = out_dir / f"{key}-genai"
    record = {"config": cfg.to_dict(), "seed": 0}
    weights = tokenizer = None
    for layout, path in wanted.items():
        marker = path / "bench_model.json"
        expected = {**record, **modelgen.layout_record(layout)}
        if marker.is_file() and json.loads(marker.read_text()) == expected:
            continue
        if weights is None:
            log(f"generating {key} ({cfg.parameter_count() / 1e6:.1f} M params)")
            weights = modelgen.init_weights(cfg, 0)
            docs = [text for _, text in modelgen.corpus_documents()]
            tokenizer = modelgen.train_tokenizer(docs, 512)
        log(f"writing {path}")
        marker.unlink(missing_ok=True)
        modelgen.write_lm_bundle(
            path, cfg, weights, tokenizer, layout=layout, external_data=True
        )
        marker.write_text(json.dumps(expected) + "\n")
    return wanted


# -- measurements in the main process ----------------------------------------


def engine_figures(bundle: Path, settings, repeats: int, work: dict) -> dict:
    """Scoring and generation through the engine (cached session, KV cache)."""
    from engine.runtime import load_model
    from engine.session import SessionCache

    cache = SessionCache()
    start = time.perf_counter()
    model = load_model(bundle, settings=settings, cache=cache)
    load_s = time.perf_counter() - start
    requests = [([], row) for row in work["scoring"]]

    def score() -> None:
        model.loglikelihood(requests, batch_size=BATCH)

    def generate() -> list[int]:
        return model.generate(work["prompt"], max_new_tokens=NEW_TOKENS, stop_ids=())

    score_times = timed(score, repeats)
    gen_times = timed(generate, repeats)
    tokens = generate()
    probe = model.logits([work["probe"]])[0]
    again = load_model(bundle, settings=settings, cache=cache)
    return {
        "load_s": load_s,
        "scoring_times_s": score_times,
        "generation_times_s": gen_times,
        "generated_tokens": tokens,
        "probe_logits": probe,
        "session_cache": {**cache.stats(), "reused": again.session is model.session},
        "bos_token_id": model.bos_token_id,
    }


def _interpreters(args: argparse.Namespace) -> dict[str, tuple[str | None, str]]:
    """``{"genai" | "torch": (python, reason)}``: who runs each foreign baseline."""
    genai = (
        python_with("onnxruntime_genai") if not args.no_genai else (None, "--no-genai")
    )
    torch = (
        python_with("torch", args.torch_python)
        if not args.no_torch
        else (None, "--no-torch")
    )
    return {"genai": genai, "torch": torch}


def _model_costs(cfg) -> dict:
    """MatMul weights, FLOPs per scoring token and bytes per generated token."""
    matmul_params = (
        cfg.parameter_count()
        - cfg.vocab_size * cfg.hidden_size * (0 if cfg.tie_word_embeddings else 1)
        - (2 * cfg.num_layers + 1) * cfg.hidden_size
    )
    attention_flops = 4 * SEQ_LEN * cfg.num_heads * cfg.head_dim * cfg.num_layers
    return {
        "matmul_parameters": matmul_params,
        "flops_per_scoring_token": 2 * matmul_params + attention_flops,
        "bytes_per_generated_token": 4 * matmul_params,
    }


def _measure_torch(
    phases: Phases, python: str, bundle: Path, args, engine: dict
) -> tuple[dict | None, str]:
    """PyTorch eager figures (and their logit gap to the engine), or why not."""
    log(f"PyTorch eager via {python}")
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as tmp:
        probe_path = Path(tmp) / "probe.npy"
        try:
            torch = phases.measure(
                "torch",
                lambda: run_worker(
                    python, "torch", bundle, args, ("--probe-out", str(probe_path))
                ),
            )
            torch_logits = np.load(probe_path)
            torch["max_abs_logit_diff_vs_engine"] = float(
                np.abs(torch_logits - engine["probe_logits"]).max()
            )
        except RuntimeError as exc:
            return None, str(exc)
    return torch, ""


def _measure_genai(
    phases: Phases, python: str, bundle: Path, args
) -> tuple[dict | None, str]:
    """onnxruntime-genai generation figures, or why not."""
    log(f"onnxruntime-genai via {python}")
    try:
        genai = phases.measure(
            "genai", lambda: run_worker(python, "genai", bundle, args)
        )
    except RuntimeError as exc:
        return None, str(exc)
    return genai, ""


def _measure(args, cfg, phases: Phases, settings, bundles, interpreters) -> dict:
    """Every measurement: limits, engine, naive ORT, torch and genai workers."""
    bundle = bundles["optimum"]
    work = workload(cfg.vocab_size)
    runs: dict = {}
    log(f"machine limits ({args.threads} threads)")
    runs["limits"] = phases.measure(
        "matmul_gflops", lambda: matmul_gflops(args.threads, args.repeats)
    )
    bw_bytes = (256 if args.quick else 1024) * 1024**2
    runs["bw"] = phases.measure(
        "bandwidth", lambda: bandwidth(args.threads, args.repeats, bw_bytes)
    )
    log("engine: scoring and generation")
    engine = phases.measure(
        "engine", lambda: engine_figures(bundle, settings, args.repeats, work)
    )
    runs["engine"] = engine
    log("naive ONNX Runtime: new session per item, no KV cache")
    runs["naive"] = phases.measure(
        "naive_ort", lambda: naive_figures(bundle, args.threads, args.repeats, work)
    )
    runs["torch"], runs["genai"] = None, None
    torch_python, torch_reason = interpreters["torch"]
    genai_python, genai_reason = interpreters["genai"]
    if torch_python:
        runs["torch"], error = _measure_torch(
            phases, torch_python, bundle, args, engine
        )
        torch_reason = error or torch_reason
    if genai_python:
        runs["genai"], error = _measure_genai(
            phases, genai_python, bundles["genai_gqa"], args
        )
        genai_reason = error or genai_reason
    runs["reasons"] = {"torch": torch_reason, "genai": genai_reason}
    log("int4: the engine's int4 derivation, and genai on the same int4 weights")
    runs["int4"] = int4_figures(phases, bundles, settings, args, work, genai_python)
    log("int8: dynamic int8 of the same model, and the int8 MatMul limit")
    runs["int8"] = phases.measure(
        "int8", lambda: int8_figures(bundle, settings, args.repeats, work, args.quick)
    )
    runs["int8_limit"] = int8_matmul_gops(args.threads, args.repeats)
    log("optimised: the fused-attention graph and the unfused one, alternately")
    runs["fused"] = phases.measure(
        "fused", lambda: fused_figures(bundle, settings, args.repeats, work)
    )
    runs["alternating"] = {"status": genai_reason}
    if genai_python:
        log("the optimised graph and genai generating alternately (bench/spinning.py)")
        twin = bundles["genai_gqa"]
        try:
            runs["alternating"] = phases.measure(
                "alternating",
                lambda: alternating_figures(genai_python, bundle, twin, args),
            )
        except RuntimeError as exc:
            runs["alternating"] = {"status": str(exc)}
    log("the uploaded graph beside PyTorch and genai, alternately (bench/beside.py)")
    python = interpreters["torch"][0] or genai_python
    twin = bundles.get("genai_gqa") if genai_python else None
    runs["beside"] = phases.measure(
        "beside", lambda: beside_figures(python, bundle, twin, args)
    )
    return runs


def _rates(runs: dict, costs: dict) -> dict:
    """Tokens per second of every runner and the two limits."""
    scoring_tokens = BATCH * SEQ_LEN
    engine, naive = runs["engine"], runs["naive"]
    torch, genai = runs["torch"], runs["genai"]
    return {
        "score": rate(scoring_tokens, engine["scoring_times_s"]),
        "gen": rate(NEW_TOKENS, engine["generation_times_s"]),
        "naive_score": rate(scoring_tokens, naive["scoring_times_s"]),
        "naive_gen": rate(NEW_TOKENS, naive["generation_times_s"]),
        "torch_score": rate(scoring_tokens, torch and torch["scoring_times_s"]),
        "torch_gen": rate(NEW_TOKENS, torch and torch["generation_times_s"]),
        "genai_gen": rate(NEW_TOKENS, genai and genai["generation_times_s"]),
        "scoring_limit": runs["limits"]["matmul_gflops"]
        * 1e9
        / costs["flops_per_scoring_token"],
        "generation_limit": runs["bw"]["bandwidth_gb_s"]
        * 1e9
        / costs["bytes_per_generated_token"],
    }


def _fractions(rates: dict, s: float | None, g: float | None) -> dict:
    return {
        "scoring": ratio(s, rates["scoring_limit"]),
        "generation": ratio(g, rates["generation_limit"]),
    }


def _torch_baseline(runs: dict, rates: dict, python: str | None) -> dict:
    torch, engine = runs["torch"], runs["engine"]
    if not torch:
        return {"status": runs["reasons"]["torch"]}
    return {
        "scoring_tokens_per_s": rates["torch_score"],
        "generation_tokens_per_s": rates["torch_gen"],
        "fraction_of_limit": _fractions(
            rates, rates["torch_score"], rates["torch_gen"]
        ),
        "max_abs_logit_diff_vs_engine": torch["max_abs_logit_diff_vs_engine"],
        "generation_matches_engine": torch["generated_tokens"]
        == engine["generated_tokens"],
        "attn_implementation": torch["attn_implementation"],
        "versions": torch["versions"],
        "python": python,
        "times_s": {
            "scoring": torch["scoring_times_s"],
            "generation": torch["generation_times_s"],
        },
    }


def _genai_baseline(runs: dict, rates: dict, python: str | None) -> dict:
    genai, engine = runs["genai"], runs["engine"]
    if not genai:
        return {"status": runs["reasons"]["genai"]}
    return {
        "generation_tokens_per_s": rates["genai_gen"],
        "fraction_of_limit": _fractions(rates, None, rates["genai_gen"]),
        "generation_matches_engine": genai["generated_tokens"]
        == engine["generated_tokens"],
        "layout": "genai builder contract, GroupQueryAttention, fp32",
        "versions": genai["versions"],
        "python": python,
        "times_s": {"generation": genai["generation_times_s"]},
    }


def _baselines(runs: dict, rates: dict, interpreters: dict) -> dict:
    """The ``baselines`` object: naive ORT, torch and genai figures or reasons."""
    naive, engine = runs["naive"], runs["engine"]
    return {
        "naive_ort": {
            "scoring_tokens_per_s": rates["naive_score"],
            "generation_tokens_per_s": rates["naive_gen"],
            "fraction_of_limit": _fractions(
                rates, rates["naive_score"], rates["naive_gen"]
            ),
            "generation_matches_engine": naive["generated_tokens"]
            == engine["generated_tokens"],
            "times_s": {
                "scoring": naive["scoring_times_s"],
                "generation": naive["generation_times_s"],
            },
        },
        "torch": _torch_baseline(runs, rates, interpreters["torch"][0]),
        "genai": _genai_baseline(runs, rates, interpreters["genai"][0]),
    }


def _headline(runs: dict, rates: dict) -> dict:
    """The top-level figures: engine rates, ratios, limits and fractions."""
    score, gen = rates["score"], rates["gen"]
    return {
        "scoring_tokens_per_s": score,
        "generation_tokens_per_s": gen,
        "ratio_vs_naive_ort": {
            "scoring": ratio(score, rates["naive_score"]),
            "generation": ratio(gen, rates["naive_gen"]),
        },
        "ratio_vs_torch": (
            {
                "scoring": ratio(score, rates["torch_score"]),
                "generation": ratio(gen, rates["torch_gen"]),
            }
            if runs["torch"]
            else None
        ),
        "ratio_vs_genai": (
            {"generation": ratio(gen, rates["genai_gen"])} if runs["genai"] else None
        ),
        "matmul_gflops": runs["limits"]["matmul_gflops"],
        "bandwidth_gb_s": runs["bw"]["bandwidth_gb_s"],
        "scoring_limit_tokens_per_s": rates["scoring_limit"],
        "generation_limit_tokens_per_s": rates["generation_limit"],
        "scoring_fraction_of_limit": ratio(score, rates["scoring_limit"]),
        "generation_fraction_of_limit": ratio(gen, rates["generation_limit"]),
    }


def run_bench(args: argparse.Namespace) -> dict:
    """Every measurement of one run; returns the JSON-able result."""
    from engine import perf
    from engine.session import RuntimeSettings

    settings = RuntimeSettings.spinning(args.threads, args.engine_spinning)
    phases = Phases(args.max_foreign_load, args.wait_quiet)
    cfg = bench_config(args.params or (10e6 if args.quick else 100e6))
    interpreters = _interpreters(args)
    bundles = ensure_bundles(
        cfg, args.out_dir, genai=interpreters["genai"][0] is not None
    )
    bundle = bundles["optimum"]
    weight_bytes = sum(p.stat().st_size for p in bundle.glob("model.onnx*"))
    costs = _model_costs(cfg)
    runs = _measure(args, cfg, phases, settings, bundles, interpreters)
    rates = _rates(runs, costs)
    engine = runs["engine"]
    result = {
        **_headline(runs, rates),
        "baselines": _baselines(runs, rates, interpreters),
        "int8": int8_summary(runs, rates["score"], costs["flops_per_scoring_token"]),
        "int4": int4_summary(
            runs, runs["bw"]["bandwidth_gb_s"], costs["matmul_parameters"]
        ),
        "optimised": fused_summary(runs),
        "alternating": runs["alternating"],
        "beside": runs["beside"],
        "engine": {
            "session_create_s": engine["load_s"],
            "session_cache": engine["session_cache"],
            "times_s": {
                "scoring": engine["scoring_times_s"],
                "generation": engine["generation_times_s"],
            },
        },
        "model": {
            "bundle": str(bundle),
            "config": cfg.to_dict(),
            "parameters": cfg.parameter_count(),
            "matmul_parameters": costs["matmul_parameters"],
            "file_bytes": weight_bytes,
            "flops_per_scoring_token": costs["flops_per_scoring_token"],
            "bytes_per_generated_token": costs["bytes_per_generated_token"],
        },
        "limits": {**runs["limits"], **runs["bw"]},
        "workload": {
            "scoring": f"batch {BATCH} x {SEQ_LEN} tokens",
            "generation": f"batch 1, {PROMPT_LEN}-token prompt, {NEW_TOKENS} new",
            "repeats": args.repeats,
            "statistic": "median after one warm-up",
            "token_seed": TOKEN_SEED,
        },
        "foreign_load": phases.summary(),
        "environment": perf.environment(settings.to_dict()),
    }
    result["environment"]["date_utc"] = time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime()
    )
    return result


def _fmt(value: float | None, spec: str = ",.1f") -> str:
    return "-" if value is None else format(value, spec)


def _runner_lines(r: dict) -> list[str]:
    """The model, the workload and the tokens/s of every runner."""
    b = r["baselines"]
    torch = b["torch"]
    genai = b["genai"]
    model = r["model"]
    return [
        f"model: Llama-shaped, {model['parameters'] / 1e6:.1f} M params "
        f"({model['config']['num_layers']} layers, hidden "
        f"{model['config']['hidden_size']}, vocab {model['config']['vocab_size']}), "
        f"fp32, {model['file_bytes'] / 1e6:.0f} MB",
        f"workload: scoring {r['workload']['scoring']}; generation "
        f"{r['workload']['generation']}; {r['workload']['repeats']} repeats, "
        "median after warm-up",
        "",
        f"{'runner':<34}{'scoring tok/s':>15}{'generation tok/s':>18}",
        f"{'engine (CausalLM)':<34}{_fmt(r['scoring_tokens_per_s']):>15}"
        f"{_fmt(r['generation_tokens_per_s']):>18}",
        f"{'(a) naive ORT, session per item':<34}"
        f"{_fmt(b['naive_ort']['scoring_tokens_per_s']):>15}"
        f"{_fmt(b['naive_ort']['generation_tokens_per_s']):>18}",
        f"{'(b) PyTorch eager':<34}"
        f"{_fmt(torch.get('scoring_tokens_per_s')):>15}"
        f"{_fmt(torch.get('generation_tokens_per_s')):>18}"
        + (f"   {torch['status']}" if "status" in torch else ""),
        f"{'(c) onnxruntime-genai':<34}{'-':>15}"
        f"{_fmt(genai.get('generation_tokens_per_s')):>18}"
        + (f"   {genai['status']}" if "status" in genai else ""),
        f"{'limit (physics, measured)':<34}"
        f"{_fmt(r['scoring_limit_tokens_per_s']):>15}"
        f"{_fmt(r['generation_limit_tokens_per_s']):>18}",
        "",
    ]


def _ratio_lines(r: dict) -> list[str]:
    """The engine's ratios to each baseline and its fractions of the limits."""
    lines = [f"{'engine ratio / fraction':<34}{'scoring':>15}{'generation':>18}"]
    rows = [
        ("ratio_vs_naive_ort", r["ratio_vs_naive_ort"]),
        ("ratio_vs_torch", r["ratio_vs_torch"]),
        ("ratio_vs_genai", r["ratio_vs_genai"]),
    ]
    for name, value in rows:
        value = value or {}
        lines.append(
            f"{name:<34}{_fmt(value.get('scoring'), '.2f'):>15}"
            f"{_fmt(value.get('generation'), '.2f'):>18}"
        )
    model, i8 = r["model"], r["int8"]
    lines += [
        f"{'fraction of limit':<34}{_fmt(r['scoring_fraction_of_limit'], '.2f'):>15}"
        f"{_fmt(r['generation_fraction_of_limit'], '.2f'):>18}",
        "",
        f"limits: ORT fp32 MatMul {r['matmul_gflops']:.1f} GFLOP/s (M=256) -> "
        f"{model['flops_per_scoring_token'] / 1e6:.0f} MFLOP/token; read bandwidth "
        f"{r['bandwidth_gb_s']:.1f} GB/s (sgemv {r['limits']['sgemv_gb_s']:.1f}, sum "
        f"{r['limits']['sum_gb_s']:.1f}, ORT gemv {r['limits']['ort_gemv_gb_s']:.1f}) "
        f"-> {model['bytes_per_generated_token'] / 1e6:.0f} MB/token",
        f"engine session create {r['engine']['session_create_s']:.2f} s, reused from "
        f"the cache afterwards: {r['engine']['session_cache']['reused']}",
        f"int8 (dynamic): {_fmt(i8['scoring_tokens_per_s'])} tok/s, "
        f"{_fmt(i8['ratio_vs_fp32'], '.2f')}x fp32 timed alternately (target 3; "
        f"CPU-seconds {_fmt(i8['ratio_vs_fp32_cpu'], '.2f')}x; rows sharing a session "
        f"{_fmt(i8['ratio_vs_fp32_shared_session'], '.2f')}x), perplexity "
        f"{i8['perplexity_relative_change']:+.2%} (target within 1%); int8 MatMul "
        f"{i8['int8_matmul_gops']:.1f} GOP/s ({i8['int8_limit_vs_fp32_limit']:.2f}x "
        f"the fp32 one), fraction {_fmt(i8['scoring_fraction_of_limit'], '.2f')}",
    ]
    return lines


def _note_lines(r: dict) -> list[str]:
    """Figures above their limit, and the baselines' agreement with the engine."""
    lines = []
    torch = r["baselines"]["torch"]
    genai = r["baselines"]["genai"]
    over = [
        name
        for name in ("scoring", "generation")
        if (r[f"{name}_fraction_of_limit"] or 0) > 1
    ]
    if over:
        lines.append(
            f"NOTE: {' and '.join(over)} above the measured limit: that limit "
            "probe ran slower than the model (other load, or a shape that "
            "suits the CPU less); read the fraction as ~1"
        )
    if "max_abs_logit_diff_vs_engine" in torch:
        lines.append(
            "torch vs engine: max |dlogit| "
            f"{torch['max_abs_logit_diff_vs_engine']:.2e}, "
            f"greedy tokens equal: {torch['generation_matches_engine']}"
        )
    if "generation_matches_engine" in genai:
        lines.append(f"genai greedy tokens equal: {genai['generation_matches_engine']}")
    return lines


def _load_lines(r: dict) -> list[str]:
    """Other load per phase, and the environment."""
    load = r["foreign_load"]
    phases = ", ".join(
        f"{n} {p['foreign_cores']:.2f}" for n, p in load["phases"].items()
    )
    return [
        f"foreign load (cores): {phases}",
        (
            "WARNING: contaminated by other load: "
            + ", ".join(load["contaminated_phases"])
            if load["contaminated"]
            else f"foreign load below {load['threshold_cores']} cores in every phase"
        ),
        f"environment: {describe_processor(processor(r['environment']))}, "
        f"onnxruntime {r['environment']['onnxruntime']}, threads "
        f"{r['environment']['runtime_settings']['resolved_intra_op_threads']}, "
        f"{r['environment']['date_utc']}",
    ]


def render_table(r: dict) -> str:
    """The readable report: figures, ratios, fractions, load, environment."""
    lines = _runner_lines(r) + _ratio_lines(r) + int4_lines(r) + _note_lines(r)
    lines += fused_lines(r["optimised"]) + alternating_lines(r["alternating"])
    lines += beside_lines(r.get("beside", {"status": "not measured"}))
    lines += _load_lines(r)
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (``--worker`` is internal)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (>= 1)")
    parser.add_argument("--params", type=float, help="target parameter count")
    parser.add_argument("--quick", action="store_true", help="~10 M params smoke run")
    parser.add_argument("--threads", type=int, default=0, help="0 = every core")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--max-foreign-load",
        type=float,
        default=0.1,
        help="cores of other load above which a phase is flagged",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help="seconds each phase may wait for other load to drop first",
    )
    parser.add_argument("--save", type=Path, help="also write the JSON here")
    parser.add_argument(  # off; within (runs only); always (bare flag: genai's)
        "--engine-spinning", nargs="?", const="always", default="off"
    )
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-genai", action="store_true")
    parser.add_argument("--torch-python", type=Path, help="default .venv-export")
    parser.add_argument("--worker", choices=("torch", "genai"), help=argparse.SUPPRESS)
    parser.add_argument("--bundle", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--probe-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if not args.threads:
        try:
            args.threads = len(os.sched_getaffinity(0))
        except AttributeError:
            args.threads = os.cpu_count() or 1
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the bench (or a worker) and print the table or the JSON."""
    args = parse_args(argv)
    if args.worker:
        worker = torch_worker if args.worker == "torch" else genai_worker
        print(json.dumps(worker(args)))
        return 0
    result = run_bench(args)
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(result, indent=1, default=float) + "\n")
    if args.json:
        print(json.dumps(result, default=float))
    else:
        print(render_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
