"""Dynamic int8 text classification: one-text runs on a session of their own.

The layouts before are timed beside it.

A transformer classifier (``modelgen.build_decoder_classifier``: the bench
LM's decoder shape, mean-pooled, a linear head over the labels), written
once under ``bench/out/classifier``, and its dynamic int8 derivation
(``engine.quantise``, as eval_throughput's int8 phase makes it). One process
times, alternately (``bench.baselines.timed_rounds``), ``predict_proba`` over
the same texts (passages of the shipped corpus of 12 to 107 words, at most
``--max-length`` tokens) with:

* ``fp32``: the fp32 graph, ``--batch-size`` right-padded texts per run;
* ``int8``: as the engine runs it: one text per run (``rows_per_run``, so
  that probabilities do not depend on the batch), two runs at a time, each
  on the single-threaded row session (``engine.session.RowRuns``);
* ``int8_shared``: the same runs two at a time on the model's one 2-thread
  session (the layout of 2026-12-04 to 2026-12-06 for language models);
* ``int8_serial``: the runs one after another on that session (the
  classifier before 2026-12-06).

It prints texts/s, CPU ms per text and the ratios, checks that the three
int8 layouts give the same probabilities to the bit, and compares int8 with
fp32 (largest probability difference, same predicted label). ``--json``
prints one object.

    .venv/bin/python bench/classifier.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.baselines import ensure_quantised, ratio, timed_rounds  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "out" / "classifier"
LABELS = ("benefits", "housing", "health", "tax", "transport", "other")
RUNNERS = ("fp32", "int8", "int8_shared", "int8_serial")


def decoder_config(layers: int, hidden: int) -> object:
    """The decoder shape: eval_throughput's ~100 M model's width, heads and
    MLP, with multi-head attention and ``layers`` layers."""
    from modelgen.lm import LMConfig

    heads = hidden // 64
    return LMConfig(
        vocab_size=32000,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=heads,
        intermediate_size=hidden * 8 // 3 // 64 * 64,
        max_position_embeddings=512,
    )


def ensure_bundle(cfg, out_dir: Path, max_length: int) -> Path:
    """Write (or reuse) the fp32 classifier bundle for ``cfg``.

    Reused when its ``bench_model.json`` records the same config; the marker
    is removed before and written after the bundle, so an interrupted write
    is redone. Weights are seeded.
    """
    import modelgen

    millions = round(parameters(cfg) / 1e6)
    path = (
        out_dir / f"decoder-classifier-{millions}m-h{cfg.hidden_size}-l{cfg.num_layers}"
    )
    record = {"config": cfg.to_dict(), "seed": 0, "max_length": max_length}
    marker = path / "bench_model.json"
    if marker.is_file() and json.loads(marker.read_text()) == record:
        return path
    log(f"writing {path}")
    marker.unlink(missing_ok=True)
    weights = modelgen.init_weights(cfg, 0)
    rng = np.random.default_rng(1)
    head = rng.normal(0.0, cfg.hidden_size**-0.5, (cfg.hidden_size, len(LABELS)))
    bias = np.zeros(len(LABELS))
    model = modelgen.build_decoder_classifier(
        cfg, weights, head.astype(np.float32), bias.astype(np.float32)
    )
    docs = [text for _, text in modelgen.corpus_documents()]
    tokenizer = modelgen.train_tokenizer(docs, 512)
    config = modelgen.classifier_config(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        labels=LABELS,
        max_position_embeddings=max_length,
        pad_token_id=tokenizer.token_to_id("<|pad|>") or 0,
    )
    config |= {
        "architectures": ["CivitasDecoderForSequenceClassification"],
        "model_type": "civitas-decoder",
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
    }
    modelgen.write_bundle(path, model, tokenizer, config, external_data=True)
    marker.write_text(json.dumps(record) + "\n")
    return path


def parameters(cfg) -> int:
    """The classifier's weights: the decoder's, less the LM head, plus its own."""
    head = 0 if cfg.tie_word_embeddings else cfg.hidden_size * cfg.vocab_size
    return cfg.parameter_count() - head + (cfg.hidden_size + 1) * len(LABELS)


def passages(count: int) -> list[str]:
    """``count`` passages of the shipped corpus, 12 to 107 words long (as
    varied as the texts a service classifies, so fp32 batches carry padding)."""
    import modelgen

    docs = [text.split() for _, text in modelgen.corpus_documents()]
    return [" ".join(docs[i % len(docs)][: 12 + (i * 29) % 96]) for i in range(count)]


def log(message: str) -> None:
    """Progress on stderr (stdout carries only the table or the JSON)."""
    print(f"[classifier] {message}", file=sys.stderr, flush=True)


def _runners(fp32: Path, int8: Path, threads: int, texts: list[str], batch: int):
    """One ``predict_proba`` callable per runner, each on its own model."""
    from engine import session as engine_session
    from engine.runtime import load_model
    from engine.session import RuntimeSettings

    settings = RuntimeSettings.spinning(threads, "within")
    # Before the row session, a run-time quantised graph's session never spun.
    before = replace(settings, spin_within_runs=False)
    models = {
        "fp32": load_model(fp32, settings=settings),
        "int8": load_model(int8, settings=settings),
        "int8_shared": load_model(int8, settings=before),
        "int8_serial": load_model(int8, settings=before),
    }
    models["int8_shared"]._open_row_session = None
    models["int8_serial"]._open_row_session = None

    def serial() -> np.ndarray:
        # RowRuns._map runs inline when called from inside its own pool.
        engine_session._INSIDE.pool = True
        try:
            return models["int8_serial"].predict_proba(texts, batch_size=batch)
        finally:
            engine_session._INSIDE.pool = False

    fns = {
        key: (lambda m=model: m.predict_proba(texts, batch_size=batch))
        for key, model in models.items()
        if key != "int8_serial"
    }
    fns["int8_serial"] = serial
    return models, fns


def measure(args) -> dict:
    """Every runner's figures, the ratios and the agreement checks."""
    from engine.perf import ForeignLoad, environment, processor

    cfg = decoder_config(args.layers, args.hidden)
    fp32 = ensure_bundle(cfg, args.out_dir, args.max_length)
    int8 = ensure_quantised(fp32)
    texts = passages(args.texts)
    models, fns = _runners(fp32, int8, args.threads, texts, args.batch_size)
    probabilities: dict[str, np.ndarray] = {}

    def keeping(key: str, fn):
        # The rounds' untimed warm-up call leaves each runner's probabilities.
        return lambda: probabilities.setdefault(key, fn())

    tokens = [len(models["fp32"].encode(text)) for text in texts]
    window = ForeignLoad().start()
    started = time.perf_counter()
    rounds = timed_rounds(
        {key: keeping(key, fn) for key, fn in fns.items()}, args.repeats
    )
    foreign = window.stop() * window.cpu_count
    runners = {}
    for key, times in rounds.items():
        wall, cpu = float(np.median(times["wall_s"])), float(np.median(times["cpu_s"]))
        runners[key] = {
            "texts_per_s": len(texts) / wall,
            "cpu_ms_per_text": 1e3 * cpu / len(texts),
            "times_s": times["wall_s"],
        }
    rate = {key: row["texts_per_s"] for key, row in runners.items()}
    p32, p8 = probabilities["fp32"], probabilities["int8"]
    return {
        "model": {
            "parameters": parameters(cfg),
            "layers": cfg.num_layers,
            "hidden": cfg.hidden_size,
            "bundle": str(fp32),
            "int8_bundle": str(int8),
        },
        "texts": len(texts),
        "tokens_mean": float(np.mean(tokens)),
        "tokens_max": int(np.max(tokens)),
        "batch_size": args.batch_size,
        "threads": args.threads,
        "repeats": args.repeats,
        "runners": runners,
        "int8_vs_fp32": ratio(rate["int8"], rate["fp32"]),
        "int8_vs_shared_session": ratio(rate["int8"], rate["int8_shared"]),
        "int8_vs_serial": ratio(rate["int8"], rate["int8_serial"]),
        # What the layouts ran on: the int8 runner on its row session, the
        # two baselines on the model's one session.
        "int8_row_session": models["int8"]._row_session is not None,
        "baselines_on_one_session": all(
            models[key]._row_session is None for key in ("int8_shared", "int8_serial")
        ),
        "int8_layouts_equal": all(
            np.array_equal(p8, probabilities[key])
            for key in ("int8_shared", "int8_serial")
        ),
        "int8_max_probability_difference": float(np.abs(p8 - p32).max()),
        "int8_same_label": int((p8.argmax(axis=1) == p32.argmax(axis=1)).sum()),
        "foreign_cores": round(foreign, 3),
        "wall_s": round(time.perf_counter() - started, 1),
        "processor": processor(),
        "environment": environment(),
    }


def lines(r: dict) -> list[str]:
    """The printed table."""
    from engine.perf import describe_processor

    model, cpu = r["model"], r["processor"]
    out = [
        f"model: decoder classifier, {model['parameters'] / 1e6:.1f} M params "
        f"({model['layers']} layers, hidden {model['hidden']}), dynamic int8 "
        "beside fp32",
        f"workload: {r['texts']} texts (mean {r['tokens_mean']:.0f} tokens, at most "
        f"{r['tokens_max']}); fp32 in batches of {r['batch_size']}; {r['threads']} "
        f"threads; {r['repeats']} rounds, median",
        f"{'runner':<13}{'texts/s':>10}{'vs fp32':>9}{'CPU ms/text':>13}",
    ]
    fp32 = r["runners"]["fp32"]["texts_per_s"]
    for key in RUNNERS:
        row = r["runners"][key]
        out.append(
            f"{key:<13}{row['texts_per_s']:>10,.1f}{row['texts_per_s'] / fp32:>9.2f}"
            f"{row['cpu_ms_per_text']:>13.2f}"
        )
    out += [
        "int8 (row session) vs the shared session: "
        f"{r['int8_vs_shared_session']:.2f}x; vs one run after another: "
        f"{r['int8_vs_serial']:.2f}x",
        f"int8 layouts equal to the bit: {r['int8_layouts_equal']}; int8 vs fp32: "
        f"max |dp| {r['int8_max_probability_difference']:.4f}, same label for "
        f"{r['int8_same_label']} of {r['texts']}",
        f"foreign load: {r['foreign_cores']:.2f} cores",
        f"processor: {describe_processor(cpu)}; "
        f"onnxruntime {r['environment']['onnxruntime']}",
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--texts", type=int, default=48)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="0 = every core")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if min(args.layers, args.hidden, args.texts, args.repeats, args.max_length) < 1:
        parser.error("sizes and counts must be positive")
    if args.hidden % 64:
        parser.error("--hidden must be a multiple of 64")
    args.threads = args.threads or len(os.sched_getaffinity(0))
    result = measure(args)
    print(json.dumps(result) if args.json else "\n".join(lines(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
