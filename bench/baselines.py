"""The baselines ``eval_throughput.py`` compares the engine with, and its workload.

* the workload: seeded token ids every runner gets, and the timing rule
  (median of repeats after one warm-up);
* (a) naive ONNX Runtime: a new session per item, no batching, no KV cache;
* (b) PyTorch eager and (c) onnxruntime-genai: workers that
  ``eval_throughput.py --worker torch|genai`` runs under another interpreter
  (``.venv-export``), so this module imports only NumPy and the stdlib at the
  top; ``python_with`` finds that interpreter and ``run_worker`` runs one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "eval_throughput.py"
EXPORT_PYTHON = ROOT / ".venv-export" / "bin" / "python"
BATCH, SEQ_LEN, PROMPT_LEN, NEW_TOKENS = 8, 128, 32, 64
TOKEN_SEED = 1234
PROBE_LEN = 16


# -- shared by the main process and the workers (NumPy and stdlib only) -----


def workload(vocab_size: int, special: int = 3) -> dict[str, list]:
    """Seeded synthetic token ids: the scoring batch, the prompt, the probe.

    Ids below ``special`` (BOS, EOS, PAD) are avoided so nothing stops early.
    Every runtime gets exactly these ids.
    """
    rng = np.random.default_rng(TOKEN_SEED)

    def ids(*shape: int) -> list:
        return rng.integers(special, vocab_size, size=shape).tolist()

    return {
        "scoring": ids(BATCH, SEQ_LEN),
        "prompt": ids(PROMPT_LEN),
        "probe": ids(PROBE_LEN),
    }


def median(values: list[float]) -> float:
    """Median of a non-empty list."""
    return float(np.median(values))


def rate(count: int, times: list[float] | None) -> float | None:
    """``count`` per median second, or ``None`` without times."""
    return count / median(times) if times else None


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b`` or ``None`` when either is missing."""
    return a / b if a and b else None


def timed(fn, repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` after one untimed warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def timed_pair(a, b, repeats: int) -> dict:
    """Wall and process CPU seconds of ``a`` and ``b`` called alternately.

    One untimed warm-up each, then ``repeats`` rounds of ``a`` then ``b``:
    both see the same moments of any other load on the machine.
    """
    return timed_rounds({"a": a, "b": b}, repeats)


def timed_rounds(fns: dict, repeats: int, idle_s: float = 0.0) -> dict:
    """``timed_pair`` for any number of callables, by key.

    With ``idle_s``, each call is preceded (so that threads another call left
    spinning have stopped) and followed by that long a sleep, and
    ``idle_cores`` records the process CPU seconds per wall second during the
    second (threads this call left spinning show there).
    """
    for fn in fns.values():
        fn()
    out = {key: {"wall_s": [], "cpu_s": [], "idle_cores": []} for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            time.sleep(idle_s)
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            out[key]["wall_s"].append(time.perf_counter() - wall)
            out[key]["cpu_s"].append(time.process_time() - cpu)
            if idle_s:
                wall, cpu = time.perf_counter(), time.process_time()
                time.sleep(idle_s)
                idle = (time.process_time() - cpu) / (time.perf_counter() - wall)
                out[key]["idle_cores"].append(idle)
    return out


def log_softmax_gather(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Log-probabilities of ``targets`` under float32 ``logits [T, V]``."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    logz = np.log(np.exp(shifted).sum(axis=-1))
    return shifted[np.arange(len(targets)), targets] - logz


# -- workers run by another interpreter (torch, onnxruntime-genai) ----------


def _hf_state_dict(weights: dict[str, np.ndarray], layers: int) -> dict:
    """modelgen names ``[in, out]`` -> transformers Llama names ``[out, in]``."""
    state = {"model.embed_tokens.weight": weights["embed_tokens"]}
    projections = {
        "q_proj": "self_attn.q_proj",
        "k_proj": "self_attn.k_proj",
        "v_proj": "self_attn.v_proj",
        "o_proj": "self_attn.o_proj",
        "gate": "mlp.gate_proj",
        "up": "mlp.up_proj",
        "down": "mlp.down_proj",
    }
    for i in range(layers):
        src, dst = f"layers.{i}.", f"model.layers.{i}."
        for ours, theirs in projections.items():
            state[dst + theirs + ".weight"] = weights[src + ours].T
        for norm in ("input_layernorm", "post_attention_layernorm"):
            state[dst + norm + ".weight"] = weights[src + norm]
    state["model.norm.weight"] = weights["norm"]
    state["lm_head.weight"] = (
        weights["lm_head"].T if "lm_head" in weights else weights["embed_tokens"]
    )
    return state


def torch_runners(bundle: Path, threads: int) -> dict:
    """PyTorch eager on the bundle's weights (``transformers``' Llama, under
    ``.venv-export``): the model, the workload and its ``score`` and
    ``generate`` callables."""
    import onnx
    import torch
    import transformers
    from onnx import numpy_helper

    torch.set_num_threads(threads)
    config = json.loads((bundle / "config.json").read_text(encoding="utf-8"))
    model_proto = onnx.load(str(bundle / "model.onnx"), load_external_data=True)
    weights = {t.name: numpy_helper.to_array(t) for t in model_proto.graph.initializer}
    del model_proto
    hf_config = transformers.LlamaConfig(**config)
    model = transformers.LlamaForCausalLM(hf_config).eval()
    state = {
        k: torch.from_numpy(np.ascontiguousarray(v))
        for k, v in _hf_state_dict(weights, hf_config.num_hidden_layers).items()
    }
    del weights
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if "rotary" not in m]:
        raise RuntimeError(
            f"weight mapping: missing {missing}, unexpected {unexpected}"
        )
    work = workload(hf_config.vocab_size)
    bos = int(hf_config.bos_token_id)
    scoring = torch.tensor([[bos, *row[:-1]] for row in work["scoring"]])
    targets = np.asarray(work["scoring"])

    def score() -> None:
        with torch.inference_mode():
            logits = model(input_ids=scoring).logits.float()
            logprobs = torch.log_softmax(logits, dim=-1)
            logprobs.gather(-1, torch.from_numpy(targets)[..., None])

    def generate() -> list[int]:
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([work["prompt"]]), use_cache=True)
            tokens = [int(out.logits[0, -1].argmax())]
            while len(tokens) < NEW_TOKENS:
                out = model(
                    input_ids=torch.tensor([[tokens[-1]]]),
                    past_key_values=out.past_key_values,
                    use_cache=True,
                )
                tokens.append(int(out.logits[0, -1].argmax()))
        return tokens

    return {"model": model, "work": work, "score": score, "generate": generate}


def torch_worker(args: argparse.Namespace) -> dict:
    """PyTorch eager figures for the bundle (run under ``.venv-export``)."""
    import torch
    import transformers

    runners = torch_runners(Path(args.bundle), args.threads)
    model, work, generate = runners["model"], runners["work"], runners["generate"]
    with torch.inference_mode():
        probe = model(input_ids=torch.tensor([work["probe"]])).logits[0].numpy()
    np.save(args.probe_out, probe.astype(np.float32))
    score_times = timed(runners["score"], args.repeats)
    gen_times = timed(generate, args.repeats)
    return {
        "scoring_times_s": score_times,
        "generation_times_s": gen_times,
        "generated_tokens": generate(),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "attn_implementation": model.config._attn_implementation,
    }


def genai_generator(bundle: Path, threads: int):
    """``(workload, generate, produced)``: genai greedy generation on ``bundle``.

    Each ``generate()`` appends its new tokens to ``produced``.
    """
    import onnxruntime_genai as og

    # genai reads its thread count from genai_config.json only; set it to
    # the run's, like every other runner.
    config_path = bundle / "genai_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    options = config["model"]["decoder"].setdefault("session_options", {})
    options["intra_op_num_threads"] = threads
    options["inter_op_num_threads"] = 1
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    model = og.Model(str(bundle))
    work = workload(int(config["model"]["vocab_size"]))
    prompt = np.asarray(work["prompt"], dtype=np.int32)
    total = PROMPT_LEN + NEW_TOKENS
    produced: list[list[int]] = []

    def generate() -> None:
        params = og.GeneratorParams(model)
        # min_length keeps EOS from ending a random-weight model's run early.
        params.set_search_options(
            max_length=total, min_length=total, do_sample=False, top_k=1
        )
        generator = og.Generator(model, params)
        generator.append_tokens(prompt)
        while not generator.is_done():
            generator.generate_next_token()
        produced.append([int(t) for t in generator.get_sequence(0)[PROMPT_LEN:]])

    return work, generate, produced


def genai_worker(args: argparse.Namespace) -> dict:
    """onnxruntime-genai greedy generation figures on the genai bundle."""
    import onnxruntime_genai as og

    _, generate, produced = genai_generator(Path(args.bundle), args.threads)
    times = timed(generate, args.repeats)
    return {
        "generation_times_s": times,
        "generated_tokens": produced[-1],
        "versions": {"onnxruntime_genai": og.__version__},
    }


# -- run in the main process --------------------------------------------------


def naive_figures(bundle: Path, threads: int, repeats: int, work: dict) -> dict:
    """The same graph run naively: new session per item, no batching, no cache.

    Default session options except the thread count (kept equal so the
    ratio measures the engine's design, not a thread setting).
    """
    import onnxruntime as ort

    path = str(bundle / "model.onnx")
    config = json.loads((bundle / "config.json").read_text(encoding="utf-8"))
    kv_heads = int(config["num_key_value_heads"])
    head_dim = int(config["head_dim"])
    layers = int(config["num_hidden_layers"])
    bos = int(config["bos_token_id"])

    def new_session() -> ort.InferenceSession:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    def run(session, ids: list[int]) -> np.ndarray:
        arr = np.asarray([ids], dtype=np.int64)
        feed = {
            "input_ids": arr,
            "attention_mask": np.ones_like(arr),
            "position_ids": np.arange(arr.shape[1], dtype=np.int64)[None, :],
        }
        empty = np.zeros((1, kv_heads, 0, head_dim), dtype=np.float32)
        for i in range(layers):
            feed[f"past_key_values.{i}.key"] = empty
            feed[f"past_key_values.{i}.value"] = empty
        return session.run(["logits"], feed)[0][0]

    def score() -> None:
        for row in work["scoring"]:
            session = new_session()
            logits = run(session, [bos, *row[:-1]])
            log_softmax_gather(logits, np.asarray(row))

    def generate() -> list[int]:
        session = new_session()
        sequence = list(work["prompt"])
        for _ in range(NEW_TOKENS):
            sequence.append(int(run(session, sequence)[-1].argmax()))
        return sequence[PROMPT_LEN:]

    score_times = timed(score, repeats)
    gen_times = timed(generate, repeats)
    return {
        "scoring_times_s": score_times,
        "generation_times_s": gen_times,
        "generated_tokens": generate(),
    }


def python_with(module: str, explicit: Path | None = None) -> tuple[str | None, str]:
    """An interpreter that can import ``module``: this one, else ``.venv-export``.

    Returns ``(python, reason)``; ``python`` is ``None`` when none can, with
    the reason why.
    """
    candidates = [explicit] if explicit else [Path(sys.executable), EXPORT_PYTHON]
    tried = []
    for python in candidates:
        if not python.exists():
            tried.append(f"{python} missing")
            continue
        probe = subprocess.run(
            [str(python), "-c", f"import {module}"],
            capture_output=True,
            check=False,
        )
        if probe.returncode == 0:
            return str(python), ""
        tried.append(f"{python} cannot import {module}")
    return None, f"{module} not installed ({'; '.join(tried)})"


WORKER_TIMEOUT_S = 1800


def run_json(command: list[str], what: str) -> dict:
    """Run ``command`` (at most ``WORKER_TIMEOUT_S``); its last stdout line is JSON."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, check=False, env=env,
            timeout=WORKER_TIMEOUT_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{what} timed out after {exc.timeout:.0f} s") from exc
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        raise RuntimeError(f"{what} failed: {' | '.join(tail)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_worker(python: str, kind: str, bundle: Path, args, extra=()) -> dict:
    """Run ``--worker kind`` under ``python``; its last stdout line is JSON."""
    command = [python, str(SCRIPT), "--worker", kind, "--bundle", str(bundle),
               "--threads", str(args.threads), "--repeats", str(args.repeats),
               *extra]  # fmt: skip
    return run_json(command, f"{kind} worker")


# -- int8 scoring: a dynamic int8 version of the same model -------------------

PERPLEXITY_SUITE = ROOT / "governance" / "suites" / "civitas-perplexity-public-texts"


def source_stamp(*bundles: Path) -> list[list[int]]:
    """Size and modification time of each bundle's ``model.onnx``: a cache
    marker recording them is stale once a source bundle is rewritten."""
    return [
        [(b / "model.onnx").stat().st_size, (b / "model.onnx").stat().st_mtime_ns]
        for b in bundles
    ]


def ensure_quantised(bundle: Path, method: str = "dynamic-int8") -> Path:
    """The ``method`` derivation of ``bundle`` (``engine.quantise``), cached.

    Written beside it as ``<bundle>-int8`` (dynamic int8) or ``<bundle>-int4``
    (``MatMulNBits``, the platform's default block size 32); redone when
    ``bundle`` was rewritten since (``source_stamp``) or the derivation's
    settings changed.
    """
    import shutil

    from engine.quantise import Derivation, quantise_graph

    suffix = "int4" if method == "int4" else "int8"
    dest = bundle.with_name(f"{bundle.name}-{suffix}")
    marker = dest / f"bench_{suffix}.json"
    record = {
        "source": bundle.name,
        "settings": Derivation(method).settings(),
        "stamp": source_stamp(bundle),
    }
    if marker.is_file() and json.loads(marker.read_text()) == record:
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for path in bundle.iterdir():
        if path.is_file() and not path.name.startswith("model.onnx"):
            shutil.copy2(path, dest / path.name)
    quantise_graph(
        bundle / "model.onnx", dest / "model.onnx", Derivation(method), feeds=None
    )
    marker.write_text(json.dumps(record) + "\n")
    return dest


def _suite_perplexity(model, limit: int | None) -> float:
    from engine.evaluate import Records, read_jsonl, run_task

    records = read_jsonl(PERPLEXITY_SUITE / "data.jsonl")
    if limit is not None:
        records = Records(records[:limit])
    result = run_task(model, "perplexity", records, batch_size=BATCH)
    return result.metrics["perplexity"]


def int8_figures(bundle: Path, settings, repeats: int, work: dict, quick: bool):
    """Scoring times of the int8 model, and both models' suite perplexity."""
    from engine.runtime import load_model

    int8_bundle = ensure_quantised(bundle)
    fp32 = load_model(bundle, settings=settings)
    int8 = load_model(int8_bundle, settings=settings)
    # The engine's layout before 2026-12-06, the baseline timed beside it: the
    # concurrent one-row runs on the one shared (2-thread, never spinning)
    # session instead of a single-threaded second one.
    shared = load_model(int8_bundle, settings=replace(settings, spin_within_runs=False))
    shared._open_row_session = None
    requests = [([], row) for row in work["scoring"]]
    models = {"fp32": fp32, "int8": int8, "shared": shared}
    rounds = timed_rounds(
        {key: partial(m.loglikelihood, requests, batch_size=BATCH)
         for key, m in models.items()},
        repeats,
    )  # fmt: skip
    limit = 8 if quick else None
    return {
        "bundle": str(int8_bundle),
        "scoring_times_s": rounds["int8"]["wall_s"],
        "scoring_cpu_s": rounds["int8"]["cpu_s"],
        "fp32_scoring_times_s": rounds["fp32"]["wall_s"],
        "fp32_scoring_cpu_s": rounds["fp32"]["cpu_s"],
        "shared_session_scoring_times_s": rounds["shared"]["wall_s"],
        "perplexity_fp32": _suite_perplexity(fp32, limit),
        "perplexity_int8": _suite_perplexity(int8, limit),
        "perplexity_texts": limit or "all",
    }


def int8_summary(runs: dict, fp32_rate: float | None, flops_per_token: float) -> dict:
    """int8 scoring against fp32, its perplexity change, and its MatMul limit."""
    int8, gops = runs["int8"], runs["int8_limit"]["int8_matmul_gops"]
    score = BATCH * SEQ_LEN / float(np.median(int8["scoring_times_s"]))
    limit = gops * 1e9 / flops_per_token
    p32, p8 = int8["perplexity_fp32"], int8["perplexity_int8"]
    paired = int8.get("fp32_scoring_times_s")
    cpu = int8.get("fp32_scoring_cpu_s"), int8.get("scoring_cpu_s")
    shared = int8.get("shared_session_scoring_times_s")
    ratio = score / fp32_rate if fp32_rate else None
    if paired:  # fp32 and int8 timed alternately in this phase: the same moments
        ratio = float(np.median(paired) / np.median(int8["scoring_times_s"]))
    return {
        "scoring_tokens_per_s": score,
        "ratio_vs_fp32": ratio,
        "ratio_vs_fp32_engine_phase": score / fp32_rate if fp32_rate else None,
        # The same int8 graph with its one-row runs sharing one session's pool.
        "ratio_vs_fp32_shared_session": (
            float(np.median(paired) / np.median(shared)) if paired and shared else None
        ),
        # CPU seconds of the process: what other load on the machine hides least.
        "ratio_vs_fp32_cpu": (
            float(np.median(cpu[0]) / np.median(cpu[1])) if paired else None
        ),
        "perplexity_fp32": p32,
        "perplexity_int8": p8,
        "perplexity_relative_change": p8 / p32 - 1.0,
        **runs["int8_limit"],
        # What int8 can gain over fp32 on this processor if both ran at their
        # MatMul limits: without VNNI or AMX (AVX2 only) it is about 1.
        "int8_limit_vs_fp32_limit": gops / runs["limits"]["matmul_gflops"],
        "scoring_limit_tokens_per_s": limit,
        "scoring_fraction_of_limit": score / limit,
        "targets": {"ratio_vs_fp32": 3.0, "perplexity_relative_change": 0.01},
        "perplexity_texts": int8["perplexity_texts"],
    }
