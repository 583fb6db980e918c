"""Training for Civitas' own models: tokenizer, Llama LM, classifier, demo bundles.

Everything runs in NumPy on a couple of CPU cores in seconds; nothing is
downloaded. The language model is trained end to end: every weight (the
embedding, all attention and MLP projections, every norm gain and the head)
gets exact gradients from a hand-written backward pass of the same Llama
forward as ``modelgen.numpy_forward`` (RMSNorm, rotary embeddings,
grouped-query causal attention, SwiGLU), optimised with Adam on next-token
cross-entropy. The loss and its gradients are ``modelgen.backprop``'s
``lm_loss_and_grads``, exposed so tests can check them against finite
differences.

Training text is the shipped CC0 corpus in ``corpus/`` (plain-language
public-service explanations, one topic per file).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from modelgen.backprop import lm_loss_and_grads
from modelgen.genai import GRAPH_REVISION, build_genai_contrib
from modelgen.graphs import (
    build_causal_lm,
    build_classifier,
    build_tabular_model,
    classifier_config,
    genai_config,
    write_bundle,
)
from modelgen.lm import LMConfig, init_weights

log = logging.getLogger(__name__)

CORPUS_DIR = Path(__file__).with_name("corpus")
SPECIAL_TOKENS = ("<|bos|>", "<|eos|>", "<|pad|>")


def corpus_documents(corpus_dir: Path = CORPUS_DIR) -> list[tuple[str, str]]:
    """``(topic, paragraph)`` pairs of the corpus, in a stable order.

    The topic is the file stem; paragraphs are separated by blank lines.
    Raises ``FileNotFoundError`` when the directory holds no ``.txt`` file.
    """
    files = sorted(Path(corpus_dir).glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"no corpus text in {corpus_dir}")
    docs = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        for block in text.split("\n\n"):
            paragraph = " ".join(block.split())
            if paragraph:
                docs.append((path.stem, paragraph))
    return docs


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2
) -> Tokenizer:
    """Byte-level BPE tokenizer trained on ``texts``.

    ``<|bos|>``, ``<|eos|>``, ``<|pad|>`` get ids 0, 1, 2; every byte is in
    the initial alphabet, so any text encodes without an unknown token.
    Encoding adds no special tokens; padding and truncation are off. The
    vocabulary may come out smaller than ``vocab_size`` on a small corpus.
    Deterministic for the same texts.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    for expected, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.token_to_id(token) == expected
    return tokenizer


def _flatten(cfg: LMConfig, corpus) -> np.ndarray:
    """One id stream: documents as ``bos + doc + eos``; a flat stream as is."""
    items = list(corpus)
    if items and not np.isscalar(items[0]):
        stream: list[int] = []
        for doc in items:
            stream.extend([cfg.bos_token_id, *(int(t) for t in doc), cfg.eos_token_id])
        return np.asarray(stream, dtype=np.int64)
    return np.asarray(items, dtype=np.int64)


def perplexity(
    cfg: LMConfig, weights: dict[str, np.ndarray], corpus, *, seq_len: int = 64
) -> float:
    """``exp`` of the mean next-token loss over non-overlapping windows of ``corpus``.

    ``corpus`` is as for ``train_lm``. Raises ``ValueError`` when it holds
    fewer than two tokens.
    """
    stream = _flatten(cfg, corpus)
    if len(stream) < 2:
        raise ValueError("need at least two tokens")
    seq_len = min(seq_len, cfg.max_position_embeddings)
    total, count = 0.0, 0
    for start in range(0, len(stream) - 1, seq_len):
        window = stream[start : start + seq_len + 1]
        if len(window) < 2:
            break
        loss, _ = lm_loss_and_grads(
            cfg, weights, window[None, :-1], window[None, 1:], need_grads=False
        )
        total += loss * (len(window) - 1)
        count += len(window) - 1
    return math.exp(total / count)


def train_lm(
    cfg: LMConfig,
    token_ids_corpus,
    *,
    steps: int,
    lr: float,
    seed: int,
    batch_size: int = 8,
    seq_len: int = 64,
    weights: dict[str, np.ndarray] | None = None,
    weight_decay: float = 0.0,
    history: list[float] | None = None,
    blas_threads: int | None = 1,
) -> dict[str, np.ndarray]:
    """Train every weight of the LM on next-token prediction; returns new weights.

    ``token_ids_corpus`` is a flat id sequence or a list of documents (each
    becomes ``bos + doc + eos``). Each step draws ``batch_size`` random
    windows of ``seq_len`` tokens (capped at the context length), computes
    exact gradients with ``lm_loss_and_grads`` and applies Adam (betas 0.9,
    0.95; decoupled ``weight_decay`` on matrices; global gradient norm
    clipped at 1; learning rate warmed up linearly over 5% of the steps then
    cosine-decayed to 10%). Starts from ``weights`` or ``init_weights(cfg,
    seed)``; the input dict is not modified. Per-step losses are appended to
    ``history`` when given and logged every 10% of the run. BLAS runs on
    ``blas_threads`` threads (None: the library default): these matrices are
    small, and on two shared cores a second BLAS thread made steps 2-4x
    slower here. Deterministic in ``seed``. Raises ``ValueError`` when the
    corpus is shorter than one window.
    """
    with _blas_threads(blas_threads):
        return _train_lm(
            cfg,
            token_ids_corpus,
            steps=steps,
            lr=lr,
            seed=seed,
            batch_size=batch_size,
            seq_len=seq_len,
            weights=weights,
            weight_decay=weight_decay,
            history=history,
        )


def _blas_threads(count: int | None):
    """Limit BLAS threads when threadpoolctl is installed; a no-op otherwise."""
    if count is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=count, user_api="blas")


def _train_lm(
    cfg,
    token_ids_corpus,
    *,
    steps,
    lr,
    seed,
    batch_size,
    seq_len,
    weights,
    weight_decay,
    history,
) -> dict[str, np.ndarray]:
    stream = _flatten(cfg, token_ids_corpus)
    seq_len = min(seq_len, cfg.max_position_embeddings)
    if len(stream) < seq_len + 2:
        raise ValueError(f"corpus of {len(stream)} tokens is shorter than one window")
    rng = np.random.default_rng(seed)
    params = {
        k: np.array(v, dtype=np.float32, copy=True)
        for k, v in (weights or init_weights(cfg, seed)).items()
    }
    first = {k: np.zeros_like(v) for k, v in params.items()}
    second = {k: np.zeros_like(v) for k, v in params.items()}
    beta1, beta2, adam_eps = 0.9, 0.95, 1e-8
    warmup = max(1, steps // 20)
    started = time.perf_counter()
    for step in range(1, steps + 1):
        starts = rng.integers(0, len(stream) - seq_len - 1, size=batch_size)
        windows = np.stack([stream[s : s + seq_len + 1] for s in starts])
        loss, grads = lm_loss_and_grads(cfg, params, windows[:, :-1], windows[:, 1:])
        if history is not None:
            history.append(loss)
        norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
        clip = min(1.0, 1.0 / (norm + 1e-12))
        if step <= warmup:
            rate = lr * step / warmup
        else:
            progress = (step - warmup) / max(1, steps - warmup)
            rate = lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))
        for name, grad in grads.items():
            g = grad * clip
            first[name] = beta1 * first[name] + (1 - beta1) * g
            second[name] = beta2 * second[name] + (1 - beta2) * g * g
            m_hat = first[name] / (1 - beta1**step)
            v_hat = second[name] / (1 - beta2**step)
            if weight_decay and params[name].ndim == 2:
                params[name] *= 1.0 - rate * weight_decay
            params[name] -= (rate * m_hat / (np.sqrt(v_hat) + adam_eps)).astype(
                np.float32
            )
        if step == 1 or step == steps or step % max(1, steps // 10) == 0:
            log.info(
                "train_lm step %d/%d loss %.4f lr %.2e (%.1f s)",
                step,
                steps,
                loss,
                rate,
                time.perf_counter() - started,
            )
    return params


def train_classifier(
    token_ids: Sequence[Sequence[int]],
    labels: Sequence[int],
    *,
    vocab_size: int,
    num_labels: int,
    dim: int = 32,
    steps: int = 300,
    lr: float = 0.05,
    seed: int = 0,
    batch_size: int = 32,
    history: list[float] | None = None,
) -> dict[str, np.ndarray]:
    """Train the bag-of-embeddings classifier of ``build_classifier`` with Adam.

    Returns ``{"embedding": [V, dim], "weight": [dim, L], "bias": [L]}``.
    Softmax cross-entropy on the masked mean of token embeddings; gradients
    are exact. Empty texts pool to zero. Per-step losses go to ``history``.
    Raises ``ValueError`` when the inputs are empty or a label is out of range.
    """
    if not token_ids or len(token_ids) != len(labels):
        raise ValueError("need as many non-empty token lists as labels")
    y = np.asarray(labels, dtype=np.int64)
    if y.min() < 0 or y.max() >= num_labels:
        raise ValueError("label out of range")
    rng = np.random.default_rng(seed)
    params = {
        "embedding": rng.normal(0.0, 0.1, (vocab_size, dim)).astype(np.float32),
        "weight": rng.normal(0.0, 1.0 / math.sqrt(dim), (dim, num_labels)).astype(
            np.float32
        ),
        "bias": np.zeros(num_labels, dtype=np.float32),
    }
    first = {k: np.zeros_like(v) for k, v in params.items()}
    second = {k: np.zeros_like(v) for k, v in params.items()}
    for step in range(1, steps + 1):
        batch = rng.integers(0, len(token_ids), size=min(batch_size, len(token_ids)))
        width = max(1, max(len(token_ids[i]) for i in batch))
        ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.float32)
        for row, i in enumerate(batch):
            ids[row, : len(token_ids[i])] = token_ids[i]
            mask[row, : len(token_ids[i])] = 1.0
        count = np.maximum(mask.sum(axis=1, keepdims=True), 1.0)
        pooled = (params["embedding"][ids] * mask[..., None]).sum(axis=1) / count
        logits = pooled @ params["weight"] + params["bias"]
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        rows = np.arange(len(batch))
        loss = float(-np.mean(np.log(probs[rows, y[batch]] + 1e-12)))
        if history is not None:
            history.append(loss)
        dlogits = probs
        dlogits[rows, y[batch]] -= 1.0
        dlogits /= len(batch)
        dpooled = dlogits @ params["weight"].T
        dtokens = (dpooled / count)[:, None, :] * mask[..., None]
        dembedding = np.zeros_like(params["embedding"])
        np.add.at(dembedding, ids.reshape(-1), dtokens.reshape(-1, dim))
        grads = {
            "embedding": dembedding,
            "weight": pooled.T @ dlogits,
            "bias": dlogits.sum(axis=0),
        }
        for name, g in grads.items():
            first[name] = 0.9 * first[name] + 0.1 * g
            second[name] = 0.999 * second[name] + 0.001 * g * g
            update = (first[name] / (1 - 0.9**step)) / (
                np.sqrt(second[name] / (1 - 0.999**step)) + 1e-8
            )
            params[name] -= (lr * update).astype(np.float32)
    return params


CONTRIB_LAYOUTS = {"genai_gqa": None, "genai_int8": 8, "genai_int4": 4}


def layout_record(layout: str) -> dict:
    """What identifies the graph ``write_lm_bundle`` builds for ``layout`` from
    given weights: the layout and, for the genai builder's graphs, their
    ``GRAPH_REVISION`` (for caches of built bundles)."""
    if layout in CONTRIB_LAYOUTS:
        return {"layout": layout, "graph_revision": GRAPH_REVISION}
    return {"layout": layout}


def write_lm_bundle(
    dest_dir: Path,
    cfg: LMConfig,
    weights: dict[str, np.ndarray],
    tokenizer: Tokenizer,
    *,
    layout: str = "optimum",
    external_data: bool = False,
    extra_files: dict[str, dict] | None = None,
) -> Path:
    """Build the ONNX graph for ``layout`` and write it as a bundle.

    ``layout`` is one of ``LAYOUTS`` (``build_causal_lm``) or of
    ``CONTRIB_LAYOUTS``: ``genai_gqa`` (``GroupQueryAttention``, float32),
    ``genai_int8`` / ``genai_int4`` (plus ``MatMulNBits``), built by
    ``build_genai_contrib``. Every genai bundle also gets
    ``genai_config.json``. ``extra_files`` maps more JSON file names to
    their content (e.g. a training record). Raises ``ValueError`` for an
    unknown layout or a shape the layout cannot take.
    """
    if layout in CONTRIB_LAYOUTS:
        model, _ = build_genai_contrib(cfg, weights, bits=CONTRIB_LAYOUTS[layout])
        genai = genai_config(cfg, share_buffer=True)
    else:
        model = build_causal_lm(cfg, weights, layout=layout)
        genai = genai_config(cfg) if layout == "genai" else None
    dest = write_bundle(
        dest_dir,
        model,
        tokenizer,
        cfg.to_hf_config(),
        genai_config=genai,
        external_data=external_data,
    )
    for name, content in (extra_files or {}).items():
        (dest / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    return dest


def write_classifier_bundle(
    dest_dir: Path,
    params: dict[str, np.ndarray],
    tokenizer: Tokenizer,
    labels: Sequence[str],
    *,
    max_length: int = 256,
) -> Path:
    """Write a ``train_classifier`` result as a ``seq_classifier`` bundle."""
    model = build_classifier(params["embedding"], params["weight"], params["bias"])
    config = classifier_config(
        vocab_size=params["embedding"].shape[0],
        hidden_size=params["embedding"].shape[1],
        labels=labels,
        max_position_embeddings=max_length,
        pad_token_id=tokenizer.token_to_id("<|pad|>") or 0,
    )
    return write_bundle(dest_dir, model, tokenizer, config)


TABULAR_FEATURES = (
    "household_size",
    "monthly_income_thousands",
    "rent_share_of_income",
    "months_in_arrears",
    "has_dependants",
)


def synthetic_tabular(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded synthetic housing-support triage data: ``TABULAR_FEATURES`` -> 0/1.

    Label 1 ("priority") follows a known logistic rule plus noise, so a
    linear model can learn it but not perfectly.
    """
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [
            rng.integers(1, 7, n),
            rng.gamma(4.0, 0.6, n),
            rng.uniform(0.1, 0.8, n),
            rng.poisson(1.0, n),
            rng.integers(0, 2, n),
        ]
    ).astype(np.float32)
    score = (
        -2.0
        + 0.3 * x[:, 0]
        - 0.5 * x[:, 1]
        + 3.0 * x[:, 2]
        + 0.8 * x[:, 3]
        + 0.7 * x[:, 4]
    )
    y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-score))).astype(np.int64)
    return x, y


def write_tabular_bundle(dest_dir: Path, *, n: int = 600, seed: int = 0) -> Path:
    """Fit ``build_tabular_model`` on ``synthetic_tabular`` data and write the bundle.

    ``config.json`` names the features and classes. Needs scikit-learn and
    skl2onnx.
    """
    features, labels = synthetic_tabular(n, seed)
    model, _ = build_tabular_model(features, labels, seed=seed)
    config = {
        "model_type": "civitas-tabular",
        "architectures": ["LogisticRegression"],
        "feature_names": list(TABULAR_FEATURES),
        "class_labels": ["standard", "priority"],
        "training": {"rows": n, "seed": seed, "generator": "synthetic_tabular"},
    }
    return write_bundle(dest_dir, model, None, config)


@dataclass(frozen=True)
class DemoSpec:
    """One demo language model: its name, shape and training budget."""

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    steps: int
    lr: float
    batch_size: int = 8
    seq_len: int = 128


DEMO_SPECS = (
    DemoSpec("civitas-llama-tiny", 64, 2, 4, 2, 192, steps=300, lr=3e-3),
    DemoSpec("civitas-llama-small", 128, 4, 4, 2, 352, steps=220, lr=2e-3, seq_len=64),
)
DEMO_VOCAB = 512
DEMO_CONTEXT = 128


def _corpus_digest(docs: Sequence[tuple[str, str]]) -> str:
    digest = hashlib.sha256()
    for topic, text in docs:
        digest.update(f"{topic}\t{text}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class _DemoCorpus:
    """The shipped corpus split for the demo (every tenth paragraph held out)."""

    docs: list[tuple[str, str]]
    train_docs: list[tuple[str, str]]
    held_docs: list[tuple[str, str]]
    tokenizer: Tokenizer
    train_ids: list[list[int]]
    held_ids: list[list[int]]

    @classmethod
    def load(cls) -> _DemoCorpus:
        """Split the corpus and train the demo tokenizer on the training part."""
        docs = corpus_documents()
        train_docs = [d for i, d in enumerate(docs) if i % 10]
        held_docs = [d for i, d in enumerate(docs) if not i % 10]
        tokenizer = train_tokenizer([text for _, text in train_docs], DEMO_VOCAB)
        return cls(
            docs,
            train_docs,
            held_docs,
            tokenizer,
            [tokenizer.encode(text).ids for _, text in train_docs],
            [tokenizer.encode(text).ids for _, text in held_docs],
        )


def _train_demo_lm(
    spec: DemoSpec, seed: int, corpus: _DemoCorpus
) -> tuple[LMConfig, dict[str, np.ndarray], dict]:
    """Train one demo LM; returns its config, weights and training record."""
    vocab = corpus.tokenizer.get_vocab_size()
    cfg = LMConfig(
        vocab_size=-(-vocab // 64) * 64,
        hidden_size=spec.hidden_size,
        num_layers=spec.num_layers,
        num_heads=spec.num_heads,
        num_kv_heads=spec.num_kv_heads,
        intermediate_size=spec.intermediate_size,
        max_position_embeddings=DEMO_CONTEXT,
    )
    initial = init_weights(cfg, seed)
    losses: list[float] = []
    started = time.perf_counter()
    weights = train_lm(
        cfg,
        corpus.train_ids,
        steps=spec.steps,
        lr=spec.lr,
        seed=seed,
        batch_size=spec.batch_size,
        seq_len=spec.seq_len,
        weights=initial,
        history=losses,
    )
    seconds = time.perf_counter() - started
    record = {
        "trained_parameters": "all",
        "parameter_count": cfg.parameter_count(),
        "steps": spec.steps,
        "batch_size": spec.batch_size,
        "seq_len": spec.seq_len,
        "lr": spec.lr,
        "seed": seed,
        "seconds": round(seconds, 2),
        "loss_first": losses[0],
        "loss_last_10_mean": float(np.mean(losses[-10:])),
        "loss_curve": [round(x, 4) for x in losses],
        "heldout_perplexity_untrained": perplexity(cfg, initial, corpus.held_ids),
        "heldout_perplexity_trained": perplexity(cfg, weights, corpus.held_ids),
        "corpus_sha256": _corpus_digest(corpus.docs),
        "corpus_documents": {
            "train": len(corpus.train_docs),
            "heldout": len(corpus.held_docs),
        },
    }
    log.info(
        "demo %s: %s",
        spec.name,
        {k: v for k, v in record.items() if k != "loss_curve"},
    )
    return cfg, weights, record


def _write_demo_int4(
    root: Path,
    trained: list[tuple[DemoSpec, LMConfig, dict, dict]],
    corpus: _DemoCorpus,
) -> list[Path]:
    """The int4 genai bundle of the first trained LM whose shape allows one."""
    for spec, cfg, weights, record in trained:
        if cfg.head_dim % 16 or cfg.hidden_size % 32 or cfg.intermediate_size % 32:
            continue
        _, effective = build_genai_contrib(cfg, weights, bits=4)
        quantised = {
            **record,
            "quantisation": "int4 MatMulNBits, block 32, symmetric RTN",
            "heldout_perplexity_quantised": perplexity(cfg, effective, corpus.held_ids),
        }
        bundle = write_lm_bundle(
            root / f"{spec.name}-genai-int4",
            cfg,
            weights,
            corpus.tokenizer,
            layout="genai_int4",
            external_data=True,
            extra_files={"civitas_training.json": quantised},
        )
        return [bundle]
    return []


def _write_demo_classifiers(root: Path, corpus: _DemoCorpus, seed: int) -> list[Path]:
    """The topic classifier and the tabular triage model."""
    topics = sorted({topic for topic, _ in corpus.docs})
    params = train_classifier(
        corpus.train_ids,
        [topics.index(t) for t, _ in corpus.train_docs],
        vocab_size=corpus.tokenizer.get_vocab_size(),
        num_labels=len(topics),
        seed=seed,
    )
    return [
        write_classifier_bundle(
            root / "civitas-topic-classifier", params, corpus.tokenizer, topics
        ),
        write_tabular_bundle(root / "civitas-tabular-triage", seed=seed),
    ]


def demo_models(
    dest_root: Path,
    *,
    seed: int = 0,
    specs: Sequence[DemoSpec] = DEMO_SPECS,
    include_extras: bool = False,
) -> list[Path]:
    """Train and write the demo catalogue's bundles under ``dest_root``.

    Trains one tokenizer on the shipped corpus (every tenth paragraph held
    out), then each ``specs`` LM, written as an Optimum bundle with a
    ``civitas_training.json`` record (loss curve, held-out perplexity of the
    untrained and trained weights, seconds, corpus sha256). With
    ``include_extras`` also writes, for the first LM whose shape allows it
    (head size a multiple of 16, dimensions multiples of 32), an int4
    onnxruntime-genai bundle (``<name>-genai-int4``, external data, its
    record adding the quantised model's held-out perplexity), then the topic
    classifier and the tabular model (needs scikit-learn and skl2onnx).
    Deterministic given ``seed``. Returns the bundle directories, LMs first.
    """
    root = Path(dest_root)
    corpus = _DemoCorpus.load()
    paths = []
    trained: list[tuple[DemoSpec, LMConfig, dict, dict]] = []
    for k, spec in enumerate(specs):
        cfg, weights, record = _train_demo_lm(spec, seed + k, corpus)
        paths.append(
            write_lm_bundle(
                root / spec.name,
                cfg,
                weights,
                corpus.tokenizer,
                extra_files={"civitas_training.json": record},
            )
        )
        trained.append((spec, cfg, weights, record))
    if include_extras:
        paths += _write_demo_int4(root, trained, corpus)
        paths += _write_demo_classifiers(root, corpus, seed)
    return paths
