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
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

EXPORT_PYTHON = ROOT / ".venv-export" / "bin" / "python"
DEFAULT_OUT = ROOT / "bench" / "out" / "eval_throughput"
BATCH, SEQ_LEN, PROMPT_LEN, NEW_TOKENS = 8, 128, 32, 64
TOKEN_SEED = 1234
PROBE_LEN = 16
MATMUL_ROWS, MATMUL_K, MATMUL_N, MATMUL_LAYERS = 256, 1024, 4096, 4
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


def timed(fn, repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` after one untimed warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


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


def torch_worker(args: argparse.Namespace) -> dict:
    """PyTorch eager figures for the bundle (run under ``.venv-export``)."""
    import onnx
    import torch
    import transformers
    from onnx import numpy_helper

    torch.set_num_threads(args.threads)
    bundle = Path(args.bundle)
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

    with torch.inference_mode():
        probe = model(input_ids=torch.tensor([work["probe"]])).logits[0].numpy()
    np.save(args.probe_out, probe.astype(np.float32))
    score_times = timed(score, args.repeats)
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


def genai_worker(args: argparse.Namespace) -> dict:
    """onnxruntime-genai greedy generation figures on the genai bundle."""
    import onnxruntime_genai as og

    # genai reads its thread count from genai_config.json only; set it to
    # the run's, like every other runner.
    config_path = Path(args.bundle) / "genai_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    options = config["model"]["decoder"].setdefault("session_options", {})
    options["intra_op_num_threads"] = args.threads
    options["inter_op_num_threads"] = 1
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    model = og.Model(str(args.bundle))
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

    times = timed(generate, args.repeats)
    return {
        "generation_times_s": times,
        "generated_tokens": produced[-1],
        "versions": {"onnxruntime_genai": og.__version__},
    }


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
        if marker.is_file() and json.loads(marker.read_text()) == {
            **record,
            "layout": layout,
        }:
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
        marker.write_text(json.dumps({**record, "layout": layout}) + "\n")
    return wanted


# -- measurements in the main process ----------------------------------------


def log(message: str) -> None:
    """Progress on stderr (stdout carries only the table or the JSON)."""
    print(f"[eval_throughput] {message}", file=sys.stderr, flush=True)


def own_and_children_cpu() -> float:
    """CPU seconds of this process and its finished children (the workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Phases:
    """Foreign-load sampling per measurement phase.

    With ``wait_quiet_s > 0`` each phase first waits, up to that many
    seconds, for a 2-second window whose other load is under the threshold
    (on a shared machine a test run elsewhere can last minutes).
    """

    QUIET_WINDOW_S = 2.0

    def __init__(self, threshold_cores: float, wait_quiet_s: float = 0.0) -> None:
        self.threshold = threshold_cores
        self.wait_quiet_s = wait_quiet_s
        self.phases: dict[str, dict] = {}

    def _foreign_cores(self, seconds: float) -> float:
        from engine.perf import ForeignLoad

        window = ForeignLoad(self_cpu=own_and_children_cpu).start()
        time.sleep(seconds)
        return window.stop() * window.cpu_count

    def _wait_for_quiet(self, name: str) -> float:
        """Seconds spent waiting for a quiet window (0 when not asked)."""
        if self.wait_quiet_s <= 0:
            return 0.0
        started = time.monotonic()
        while self._foreign_cores(self.QUIET_WINDOW_S) > self.threshold:
            if time.monotonic() - started >= self.wait_quiet_s:
                log(
                    f"machine still busy after {self.wait_quiet_s:.0f} s; "
                    f"measuring '{name}' anyway"
                )
                break
        return time.monotonic() - started

    def measure(self, name: str, fn):
        """Run ``fn`` under a ``ForeignLoad`` window and record the load."""
        from engine.perf import ForeignLoad

        waited = self._wait_for_quiet(name)
        window = ForeignLoad(self_cpu=own_and_children_cpu)
        window.start()
        started = time.perf_counter()
        try:
            return fn()
        finally:
            fraction = window.stop()
            cores = fraction * window.cpu_count
            self.phases[name] = {
                "foreign_cores": round(cores, 3),
                "foreign_fraction": round(fraction, 4),
                "wall_s": round(time.perf_counter() - started, 2),
                "waited_for_quiet_s": round(waited, 1),
            }
            if cores > self.threshold:
                log(
                    f"WARNING: {cores:.2f} cores of other load during '{name}' "
                    f"(threshold {self.threshold}); its figures are not trustworthy"
                )

    def summary(self) -> dict:
        """Per-phase figures, the worst phase and the contaminated flag."""
        worst = max((p["foreign_cores"] for p in self.phases.values()), default=0.0)
        flagged = [
            n for n, p in self.phases.items() if p["foreign_cores"] > self.threshold
        ]
        return {
            "threshold_cores": self.threshold,
            "max_foreign_cores": worst,
            "contaminated": bool(flagged),
            "contaminated_phases": flagged,
            "phases": self.phases,
        }


def matmul_gflops(threads: int, repeats: int) -> dict:
    """Best ORT fp32 GFLOP/s of the reference MatMul chain at M = 256."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from engine.session import RuntimeSettings, make_session

    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(MATMUL_LAYERS):
        for j, (k, n) in enumerate(((MATMUL_K, MATMUL_N), (MATMUL_N, MATMUL_K))):
            w = (rng.standard_normal((k, n)) / math.sqrt(k)).astype(np.float32)
            inits.append(numpy_helper.from_array(w, f"w{i}_{j}"))
            mm, out = f"mm{i}_{j}", f"y{i}_{j}"
            nodes.append(helper.make_node("MatMul", [x, f"w{i}_{j}"], [mm]))
            nodes.append(helper.make_node("Relu", [mm], [out]))
            x = out
    graph = helper.make_graph(
        nodes,
        "matmul_chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", MATMUL_K])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["m", MATMUL_K])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    with tempfile.TemporaryDirectory(prefix="matmul-chain-") as tmp:
        path = Path(tmp) / "chain.onnx"
        onnx.save_model(model, str(path))
        session = make_session(path, RuntimeSettings(intra_op_threads=threads))
    feed = {"x": rng.standard_normal((MATMUL_ROWS, MATMUL_K)).astype(np.float32)}
    # Each run is ~0.1 s: many repeats, so the best one is a true peak.
    times = timed(lambda: session.run(None, feed), limit_repeats(repeats))
    flops = 2.0 * MATMUL_ROWS * MATMUL_K * MATMUL_N * 2 * MATMUL_LAYERS
    return {
        "matmul_gflops": flops / min(times) / 1e9,
        "matmul_gflops_median": flops / float(np.median(times)) / 1e9,
        "shape": f"{MATMUL_LAYERS} x [{MATMUL_K}x{MATMUL_N}, {MATMUL_N}x{MATMUL_K}]",
        "rows": MATMUL_ROWS,
    }


def limit_repeats(repeats: int) -> int:
    """Repeats for a limit probe: short runs, so at least 10."""
    return max(10, 2 * repeats)


def ort_gemv_gb_s(threads: int, repeats: int, weight_bytes: int) -> float:
    """Best read bandwidth of one ORT MatMul ``[1, K] x [K, N]`` (a decode step)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from engine.session import RuntimeSettings, make_session

    k = 4096
    n = weight_bytes // (4 * k)
    weight = np.full((k, n), 0.001, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "gemv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        initializer=[numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    with tempfile.TemporaryDirectory(prefix="gemv-") as tmp:
        path = Path(tmp) / "gemv.onnx"
        onnx.save_model(
            model, str(path), save_as_external_data=True, location="gemv.data"
        )
        session = make_session(path, RuntimeSettings(intra_op_threads=threads))
    feed = {"x": np.ones((1, k), dtype=np.float32)}
    times = timed(lambda: session.run(None, feed), limit_repeats(repeats))
    return weight.nbytes / min(times) / 1e9


def bandwidth(threads: int, repeats: int, array_bytes: int) -> dict:
    """Best read bandwidth (GB/s) over arrays of ``array_bytes`` (>> L3).

    Three probes, the best counts: NumPy sgemv (BLAS threads limited to
    ``threads``), NumPy sum (one thread), and an ONNX Runtime MatMul with one
    row (what a decode step does) over a weight of half that size.
    """
    cols = 4096
    rows = array_bytes // (4 * cols)
    matrix = np.ones((rows, cols), dtype=np.float32)
    vector = np.ones(cols, dtype=np.float32)
    try:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(limits=threads)
    except ImportError:  # NumPy's BLAS then uses its own thread count
        limiter = None
    try:
        gemv = timed(lambda: matrix @ vector, limit_repeats(repeats))
        total = timed(lambda: matrix.sum(dtype=np.float32), limit_repeats(repeats))
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
    gemv_gb = matrix.nbytes / min(gemv) / 1e9
    sum_gb = matrix.nbytes / min(total) / 1e9
    nbytes = matrix.nbytes
    ort_gb = ort_gemv_gb_s(threads, repeats, array_bytes // 2)
    return {
        "bandwidth_gb_s": max(gemv_gb, sum_gb, ort_gb),
        "sgemv_gb_s": gemv_gb,
        "sum_gb_s": sum_gb,
        "ort_gemv_gb_s": ort_gb,
        "array_mb": round(nbytes / 1e6),
    }


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


def run_worker(python: str, kind: str, bundle: Path, args, extra=()) -> dict:
    """Run ``--worker kind`` under ``python``; its last stdout line is JSON."""
    command = [
        python,
        str(Path(__file__).resolve()),
        "--worker",
        kind,
        "--bundle",
        str(bundle),
        "--threads",
        str(args.threads),
        "--repeats",
        str(args.repeats),
        *extra,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        raise RuntimeError(f"{kind} worker failed: {' | '.join(tail)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def median(values: list[float]) -> float:
    """Median of a non-empty list."""
    return float(np.median(values))


def rate(count: int, times: list[float] | None) -> float | None:
    """``count`` per median second, or ``None`` without times."""
    return count / median(times) if times else None


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b`` or ``None`` when either is missing."""
    return a / b if a and b else None


def run_bench(args: argparse.Namespace) -> dict:
    """Every measurement of one run; returns the JSON-able result."""
    from engine import perf
    from engine.session import RuntimeSettings

    settings = RuntimeSettings(intra_op_threads=args.threads)
    phases = Phases(args.max_foreign_load, args.wait_quiet)
    target = args.params or (10e6 if args.quick else 100e6)
    cfg = bench_config(target)
    genai_python, genai_reason = (
        python_with("onnxruntime_genai") if not args.no_genai else (None, "--no-genai")
    )
    torch_python, torch_reason = (
        python_with("torch", args.torch_python)
        if not args.no_torch
        else (None, "--no-torch")
    )
    bundles = ensure_bundles(cfg, args.out_dir, genai=genai_python is not None)
    bundle = bundles["optimum"]
    work = workload(cfg.vocab_size)
    weight_bytes = sum(p.stat().st_size for p in bundle.glob("model.onnx*"))
    matmul_params = (
        cfg.parameter_count()
        - cfg.vocab_size * cfg.hidden_size * (0 if cfg.tie_word_embeddings else 1)
        - (2 * cfg.num_layers + 1) * cfg.hidden_size
    )
    attention_flops = 4 * SEQ_LEN * cfg.num_heads * cfg.head_dim * cfg.num_layers
    flops_per_token = 2 * matmul_params + attention_flops
    bytes_per_token = 4 * matmul_params

    log(f"machine limits ({args.threads} threads)")
    limits = phases.measure(
        "matmul_gflops", lambda: matmul_gflops(args.threads, args.repeats)
    )
    bw_bytes = (256 if args.quick else 1024) * 1024**2
    bw = phases.measure(
        "bandwidth", lambda: bandwidth(args.threads, args.repeats, bw_bytes)
    )

    log("engine: scoring and generation")
    engine = phases.measure(
        "engine", lambda: engine_figures(bundle, settings, args.repeats, work)
    )
    log("naive ONNX Runtime: new session per item, no KV cache")
    naive = phases.measure(
        "naive_ort", lambda: naive_figures(bundle, args.threads, args.repeats, work)
    )

    torch = None
    if torch_python:
        log(f"PyTorch eager via {torch_python}")
        with tempfile.TemporaryDirectory(prefix="bench-probe-") as tmp:
            probe_path = Path(tmp) / "probe.npy"
            try:
                torch = phases.measure(
                    "torch",
                    lambda: run_worker(
                        torch_python,
                        "torch",
                        bundle,
                        args,
                        ("--probe-out", str(probe_path)),
                    ),
                )
                torch_logits = np.load(probe_path)
                torch["max_abs_logit_diff_vs_engine"] = float(
                    np.abs(torch_logits - engine["probe_logits"]).max()
                )
            except RuntimeError as exc:
                torch_reason, torch = str(exc), None
    genai = None
    if genai_python:
        log(f"onnxruntime-genai via {genai_python}")
        try:
            genai = phases.measure(
                "genai",
                lambda: run_worker(genai_python, "genai", bundles["genai_gqa"], args),
            )
        except RuntimeError as exc:
            genai_reason, genai = str(exc), None

    scoring_tokens = BATCH * SEQ_LEN
    score = rate(scoring_tokens, engine["scoring_times_s"])
    gen = rate(NEW_TOKENS, engine["generation_times_s"])
    naive_score = rate(scoring_tokens, naive["scoring_times_s"])
    naive_gen = rate(NEW_TOKENS, naive["generation_times_s"])
    torch_score = rate(scoring_tokens, torch and torch["scoring_times_s"])
    torch_gen = rate(NEW_TOKENS, torch and torch["generation_times_s"])
    genai_gen = rate(NEW_TOKENS, genai and genai["generation_times_s"])
    scoring_limit = limits["matmul_gflops"] * 1e9 / flops_per_token
    generation_limit = bw["bandwidth_gb_s"] * 1e9 / bytes_per_token

    def fractions(s: float | None, g: float | None) -> dict:
        return {
            "scoring": ratio(s, scoring_limit),
            "generation": ratio(g, generation_limit),
        }

    result = {
        "scoring_tokens_per_s": score,
        "generation_tokens_per_s": gen,
        "ratio_vs_naive_ort": {
            "scoring": ratio(score, naive_score),
            "generation": ratio(gen, naive_gen),
        },
        "ratio_vs_torch": (
            {"scoring": ratio(score, torch_score), "generation": ratio(gen, torch_gen)}
            if torch
            else None
        ),
        "ratio_vs_genai": {"generation": ratio(gen, genai_gen)} if genai else None,
        "matmul_gflops": limits["matmul_gflops"],
        "bandwidth_gb_s": bw["bandwidth_gb_s"],
        "scoring_limit_tokens_per_s": scoring_limit,
        "generation_limit_tokens_per_s": generation_limit,
        "scoring_fraction_of_limit": ratio(score, scoring_limit),
        "generation_fraction_of_limit": ratio(gen, generation_limit),
        "baselines": {
            "naive_ort": {
                "scoring_tokens_per_s": naive_score,
                "generation_tokens_per_s": naive_gen,
                "fraction_of_limit": fractions(naive_score, naive_gen),
                "generation_matches_engine": naive["generated_tokens"]
                == engine["generated_tokens"],
                "times_s": {
                    "scoring": naive["scoring_times_s"],
                    "generation": naive["generation_times_s"],
                },
            },
            "torch": (
                {
                    "scoring_tokens_per_s": torch_score,
                    "generation_tokens_per_s": torch_gen,
                    "fraction_of_limit": fractions(torch_score, torch_gen),
                    "max_abs_logit_diff_vs_engine": torch[
                        "max_abs_logit_diff_vs_engine"
                    ],
                    "generation_matches_engine": torch["generated_tokens"]
                    == engine["generated_tokens"],
                    "attn_implementation": torch["attn_implementation"],
                    "versions": torch["versions"],
                    "python": torch_python,
                    "times_s": {
                        "scoring": torch["scoring_times_s"],
                        "generation": torch["generation_times_s"],
                    },
                }
                if torch
                else {"status": torch_reason}
            ),
            "genai": (
                {
                    "generation_tokens_per_s": genai_gen,
                    "fraction_of_limit": fractions(None, genai_gen),
                    "generation_matches_engine": genai["generated_tokens"]
                    == engine["generated_tokens"],
                    "layout": "genai builder contract, GroupQueryAttention, fp32",
                    "versions": genai["versions"],
                    "python": genai_python,
                    "times_s": {"generation": genai["generation_times_s"]},
                }
                if genai
                else {"status": genai_reason}
            ),
        },
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
            "matmul_parameters": matmul_params,
            "file_bytes": weight_bytes,
            "flops_per_scoring_token": flops_per_token,
            "bytes_per_generated_token": bytes_per_token,
        },
        "limits": {**limits, **bw},
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


def render_table(r: dict) -> str:
    """The readable report: figures, ratios, fractions, load, environment."""
    b = r["baselines"]
    torch = b["torch"]
    genai = b["genai"]
    model = r["model"]
    lines = [
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
        f"{'engine ratio / fraction':<34}{'scoring':>15}{'generation':>18}",
    ]
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
    lines += [
        f"{'fraction of limit':<34}{_fmt(r['scoring_fraction_of_limit'], '.2f'):>15}"
        f"{_fmt(r['generation_fraction_of_limit'], '.2f'):>18}",
        "",
        f"limits: ORT fp32 MatMul {r['matmul_gflops']:.1f} GFLOP/s (M=256) -> "
        f"{model['flops_per_scoring_token'] / 1e6:.0f} MFLOP/token; read bandwidth "
        f"{r['bandwidth_gb_s']:.1f} GB/s (sgemv {r['limits']['sgemv_gb_s']:.1f}, sum "
        f"{r['limits']['sum_gb_s']:.1f}, ORT gemv {r['limits']['ort_gemv_gb_s']:.1f})"
        " -> "
        f"{model['bytes_per_generated_token'] / 1e6:.0f} MB/token",
        f"engine session create {r['engine']['session_create_s']:.2f} s, reused from "
        f"the cache afterwards: {r['engine']['session_cache']['reused']}",
    ]
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
    load = r["foreign_load"]
    phases = ", ".join(
        f"{n} {p['foreign_cores']:.2f}" for n, p in load["phases"].items()
    )
    lines += [
        f"foreign load (cores): {phases}",
        (
            "WARNING: contaminated by other load: "
            + ", ".join(load["contaminated_phases"])
            if load["contaminated"]
            else f"foreign load below {load['threshold_cores']} cores in every phase"
        ),
        f"environment: {r['environment']['cpu_model']}, "
        f"{r['environment']['cores_available']} cores, onnxruntime "
        f"{r['environment']['onnxruntime']}, threads "
        f"{r['environment']['runtime_settings']['resolved_intra_op_threads']}, "
        f"{r['environment']['date_utc']}",
    ]
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
    parser.add_argument(
        "--save", type=Path, help="also write the JSON object to this file"
    )
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-genai", action="store_true")
    parser.add_argument(
        "--torch-python",
        type=Path,
        help="interpreter with torch (default .venv-export)",
    )
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
