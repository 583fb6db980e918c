"""Task runners: turn a loaded model and JSONL records into metrics and per-item logs.

A task is one of ``TASKS``; its records are validated line by line (a bad line
raises ``DataError`` naming the line and the field) before the model runs, so
a typo never costs a half-finished run. Every runner keeps one log entry per
item (id, log-likelihoods, prediction, output, correctness) for audit, and
measures itself with ``perf.Recorder``.

Suites (``SUITE.json``) list tasks over JSONL files relative to the suite file
(``engine.suites``); see ``docs/evaluation.md`` for every schema and formula.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine import answers, metrics, perf

TASKS = (
    "perplexity",
    "multiple_choice",
    "stereotype_pairs",
    "refusal",
    "classification",
    *answers.TASKS,
)
LM_TASKS = frozenset(
    {"perplexity", "multiple_choice", "stereotype_pairs", "refusal", *answers.TASKS}
)
TARGET_DELIMITER = " "
Progress = Callable[[int, int], None]

# The performance record's figures that are also reported as metrics, so that
# they can be filtered and charted like the others: metric -> (performance
# key, scale). ``peak_rss_mb`` is ``peak_rss_bytes`` in MiB.
PERFORMANCE_METRICS: dict[str, tuple[str, float]] = {
    "tokens_per_s": ("tokens_per_s", 1.0),
    "items_per_s": ("items_per_s", 1.0),
    "latency_p50_s": ("latency_p50_s", 1.0),
    "latency_p95_s": ("latency_p95_s", 1.0),
    "wall_s": ("wall_s", 1.0),
    "model_load_s": ("model_load_s", 1.0),
    "cpu_s": ("cpu_s", 1.0),
    "cpu_s_per_1k_tokens": ("cpu_s_per_1k_tokens", 1.0),
    "peak_rss_mb": ("peak_rss_bytes", 1.0 / 2**20),
    "energy_j": ("energy_j", 1.0),
    "energy_j_per_1k_tokens": ("energy_per_1k_tokens_j", 1.0),
}


class DataError(ValueError):
    """A task record is malformed; names the line (1-based) and the field."""

    def __init__(
        self, message: str, *, line: int | None = None, field: str | None = None
    ):
        self.line, self.field, self.detail = line, field, message
        where = []
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class UnsupportedTask(ValueError):
    """The task does not exist or the model kind cannot run it."""


class Records(list):
    """A list of records that remembers the file line each record came from."""

    def __init__(self, items: Sequence[dict] = (), lines: Sequence[int] | None = None):
        super().__init__(items)
        self.lines = (
            list(lines) if lines is not None else list(range(1, len(items) + 1))
        )


@dataclass
class TaskResult:
    """One task's aggregate metrics, per-item log, performance and environment."""

    task: str
    metrics: dict[str, float | None]
    items: list[dict]
    performance: dict
    environment: dict
    name: str | None = None
    data_sha256: str | None = None
    options: dict = field(default_factory=dict)

    def to_dict(self, *, with_items: bool = True) -> dict:
        """JSON-able form; ``nan`` metrics become ``None``."""
        out = {
            "task": self.task,
            "name": self.name or self.task,
            "metrics": {k: _json_number(v) for k, v in self.metrics.items()},
            "performance": self.performance,
            "environment": self.environment,
            "data_sha256": self.data_sha256,
            "options": self.options,
        }
        if with_items:
            out["items"] = self.items
        return out


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _json_number(value.item())
    return value


def read_jsonl(path: str | Path) -> Records:
    """Read a JSONL file: one JSON object per non-blank line.

    Raises ``DataError`` with the line number for invalid JSON or non-objects.
    """
    items, lines = [], []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text: {exc}") from exc
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON ({exc.msg})", line=number) from exc
        if not isinstance(record, dict):
            raise DataError("each line must be a JSON object", line=number)
        items.append(record)
        lines.append(number)
    if not items:
        raise DataError(f"{path} holds no records")
    return Records(items, lines)


def _text(record: dict, key: str, line: int, *, allow_empty: bool = False) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise DataError("missing or not a string", line=line, field=key)
    if not allow_empty and not value.strip():
        raise DataError("must not be empty", line=line, field=key)
    return value


def _label(record: dict, key: str, line: int) -> None:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise DataError("missing or not an integer or string", line=line, field=key)


def validate_records(task: str, records: Sequence[dict]) -> list[int]:
    """Check every record against the task's schema; return their line numbers.

    Raises ``UnsupportedTask`` for an unknown task and ``DataError`` for the
    first bad record.
    """
    if task not in TASKS:
        raise UnsupportedTask(f"unknown task '{task}' (known: {', '.join(TASKS)})")
    if not records:
        raise DataError("no records")
    lines = getattr(records, "lines", None) or list(range(1, len(records) + 1))
    for record, line in zip(records, lines, strict=True):
        if not isinstance(record, dict):
            raise DataError("each record must be a JSON object", line=line)
        _validate_one(task, record, line)
        _check_unicode(record, line)
    if task == "classification":
        kind = "text" if "text" in records[0] else "features"
        for record, line in zip(records, lines, strict=True):
            if kind not in record:
                raise DataError(
                    f"all records must use '{kind}' like the first one",
                    line=line,
                    field=kind,
                )
    return lines


def _check_unicode(value: Any, line: int, field: str | None = None) -> None:
    """Raise ``DataError`` for a string holding a lone surrogate (``"\\ud800"``).

    JSON can spell one, but it is not a character: no UTF-8 encoder or
    tokenizer takes it, so it is bad data, found before the model runs.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise DataError(
                f"holds a lone surrogate ({value[exc.start]!r}) at character "
                f"{exc.start}, which is not valid Unicode text",
                line=line,
                field=field,
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            name = str(key) if field is None else f"{field}.{key}"
            _check_unicode(str(key), line, name)
            _check_unicode(item, line, name)
    elif isinstance(value, list):
        for n, item in enumerate(value):
            _check_unicode(item, line, f"{field}[{n}]")


def _validate_one(task: str, record: dict, line: int) -> None:
    if task in answers.TASKS:
        try:
            answers.validate(task, record)
        except answers.RecordError as exc:
            raise DataError(exc.detail, line=line, field=exc.field) from None
    elif task == "perplexity":
        _text(record, "text", line)
    elif task == "multiple_choice":
        _text(record, "context", line, allow_empty=True)
        choices = record.get("choices")
        if (
            not isinstance(choices, list)
            or len(choices) < 2
            or not all(isinstance(c, str) and c.strip() for c in choices)
        ):
            raise DataError(
                "must be a list of at least two non-empty strings",
                line=line,
                field="choices",
            )
        answer = record.get("answer")
        if isinstance(answer, str):
            if answer not in choices:
                raise DataError(
                    "string answer is not one of the choices", line=line, field="answer"
                )
        elif (
            isinstance(answer, bool)
            or not isinstance(answer, int)
            or not 0 <= answer < len(choices)
        ):
            raise DataError(
                f"must be a choice index in 0..{len(choices) - 1}",
                line=line,
                field="answer",
            )
        if not isinstance(record.get("target_delimiter", ""), str):
            raise DataError("must be a string", line=line, field="target_delimiter")
    elif task == "stereotype_pairs":
        _text(record, "more", line)
        _text(record, "less", line)
        _text(record, "category", line)
    elif task == "refusal":
        _text(record, "prompt", line)
        if not isinstance(record.get("should_refuse"), bool):
            raise DataError(
                "missing or not true/false", line=line, field="should_refuse"
            )
    elif task == "classification":
        has_text, has_features = "text" in record, "features" in record
        if has_text == has_features:
            raise DataError(
                "exactly one of 'text' or 'features' is required",
                line=line,
                field="text",
            )
        if has_text:
            _text(record, "text", line)
        else:
            feats = record["features"]
            if (
                not isinstance(feats, list)
                or not feats
                or not all(
                    isinstance(x, int | float) and not isinstance(x, bool)
                    for x in feats
                )
            ):
                raise DataError(
                    "must be a non-empty list of numbers", line=line, field="features"
                )
        _label(record, "label", line)
        if "group" in record:
            _label(record, "group", line)


def model_kind(model: Any) -> str:
    """``"causal_lm"``, ``"text_classifier"`` or ``"tensor_model"``, by capability."""
    if hasattr(model, "loglikelihood") and hasattr(model, "generate"):
        return "causal_lm"
    if hasattr(model, "predict_proba"):
        tokenizer_based = (
            hasattr(model, "tokenizer") or type(model).__name__ == "SequenceClassifier"
        )
        return "text_classifier" if tokenizer_based else "tensor_model"
    return "unknown"


def check_supported(
    model: Any, task: str, records: Sequence[dict] | None = None
) -> None:
    """Raise ``UnsupportedTask`` when the model kind cannot run the task."""
    kind = model_kind(model)
    if task in LM_TASKS and kind != "causal_lm":
        raise UnsupportedTask(
            f"task '{task}' needs a causal language model; this bundle is a {kind}"
        )
    if task == "classification":
        if kind == "causal_lm":
            raise UnsupportedTask(
                "task 'classification' needs a classifier; this bundle is a causal_lm"
            )
        if records:
            wants = "text" if kind == "text_classifier" else "features"
            if wants not in records[0]:
                raise UnsupportedTask(f"a {kind} needs records with '{wants}'")


def _chunks(n: int, size: int) -> Iterator[range]:
    size = max(1, size)
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


def _model_settings(model: Any) -> dict | None:
    settings = getattr(model, "settings", None)
    if settings is not None and hasattr(settings, "to_dict"):
        return settings.to_dict()
    return settings if isinstance(settings, dict) else None


def _tokens_processed(model: Any) -> int:
    return int(getattr(model, "tokens_processed", 0) or 0)


def run_task(
    model: Any,
    task: str,
    records: Sequence[dict],
    *,
    batch_size: int = 8,
    progress: Progress | None = None,
    max_new_tokens: int = 48,
    options: dict | None = None,
    load_seconds: float | None = None,
) -> TaskResult:
    """Run one task over validated records and return its ``TaskResult``.

    ``progress(done, total)`` is called after each batch of items. Options:
    ``target_delimiter`` (multiple choice, default ``" "``),
    ``prompt_template`` (refusal, default ``"{prompt}"``), ``labels`` and
    ``positive_label`` (classification). The metrics end with the
    ``PERFORMANCE_METRICS``; ``performance`` records ``batch_size``, the
    batch size the model scored with and the thread counts. Raises
    ``DataError`` or ``UnsupportedTask`` before any inference.
    """
    options = dict(options or {})
    lines = validate_records(task, records)
    check_supported(model, task, records)
    if not isinstance(options.get("target_delimiter", ""), str):
        raise DataError("task option must be a string", field="target_delimiter")
    if task in answers.TASKS:
        try:
            answers.check_options(task, options)
        except answers.RecordError as exc:
            raise DataError(f"task option {exc.detail}", field=exc.field) from None
    ids = [r.get("id", line) for r, line in zip(records, lines, strict=True)]
    tokens_before = _tokens_processed(model)
    with perf.Recorder(load_seconds=load_seconds) as rec:
        run = _Run(
            model,
            list(records),
            ids,
            lines,
            rec,
            max(1, batch_size),
            progress,
            int(options.get("max_new_tokens", max_new_tokens)),
            options,
        )
        task_metrics, items = _RUNNERS[task](run)
        rec.tokens = _tokens_processed(model) - tokens_before
    performance = {**rec.result(), **_batching(model, max(1, batch_size))}
    return TaskResult(
        task=task,
        metrics={**task_metrics, **performance_metrics(performance)},
        items=items,
        performance=performance,
        environment=perf.environment(_model_settings(model)),
        options=options,
    )


def performance_metrics(performance: dict) -> dict[str, float]:
    """The ``PERFORMANCE_METRICS`` of a performance record (``nan`` if unknown)."""
    out = {}
    for name, (key, scale) in PERFORMANCE_METRICS.items():
        value = performance.get(key)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        out[name] = float(value) * scale if ok else math.nan
    return out


def _batching(model: Any, batch_size: int) -> dict:
    """Batch size asked for and used, and the ONNX Runtime thread counts."""
    scoring = getattr(model, "scoring_batch_size", None)
    settings = _model_settings(model) or {}
    return {
        "batch_size": batch_size,
        "scoring_batch_size": scoring(batch_size) if scoring else batch_size,
        "intra_op_threads": settings.get(
            "resolved_intra_op_threads", settings.get("intra_op_threads")
        ),
        "inter_op_threads": settings.get("inter_op_threads"),
    }


@dataclass
class _Run:
    """Everything a runner needs; one instance per ``run_task`` call."""

    model: Any
    records: list[dict]
    ids: list
    lines: list[int]
    rec: perf.Recorder
    batch_size: int
    progress: Progress | None
    max_new_tokens: int
    options: dict

    def report(self, done: int) -> None:
        """Tell the progress callback how many items are done."""
        if self.progress is not None:
            self.progress(done, len(self.records))


def _run_perplexity(run: _Run) -> tuple[dict, list[dict]]:
    model, items = run.model, []
    sum_ll, n_tokens, n_bytes = 0.0, 0, 0
    for i, record in enumerate(run.records):
        t0 = time.perf_counter()
        token_ids = model.encode(record["text"])
        per_token = model.loglikelihood_rolling(token_ids, batch_size=run.batch_size)
        per_token = [float(x) for x in per_token]
        run.rec.item(time.perf_counter() - t0)
        ll, n_b = float(sum(per_token)), metrics.utf8_len(record["text"])
        sum_ll, n_tokens, n_bytes = (
            sum_ll + ll,
            n_tokens + len(per_token),
            n_bytes + n_b,
        )
        items.append(
            {
                "id": run.ids[i],
                "tokens": len(per_token),
                "bytes": n_b,
                "sum_ll": ll,
                "perplexity": metrics.perplexity(ll, len(per_token)),
            }
        )
        run.report(i + 1)
    return {
        "perplexity": metrics.perplexity(sum_ll, n_tokens),
        "bits_per_byte": metrics.bits_per_byte(sum_ll, n_bytes),
        "token_count": float(n_tokens),
        "byte_count": float(n_bytes),
    }, items


def encode_pair(
    model: Any, context: str, continuation: str
) -> tuple[list[int], list[int]]:
    """Split a (context, continuation) pair into token ids as lm-evaluation-harness.

    Trailing whitespace of the context moves to the front of the continuation;
    the continuation's ids are ``encode(context + continuation)`` minus the
    first ``len(encode(context))`` ids, so tokens that merge across the
    boundary are scored with the continuation. The context is encoded as the
    bundle's tokenizer says (``encode_context``: a Llama- or Gemma-style
    post-processor puts BOS in front), the continuation never gets special
    tokens. An empty context gives ``[]`` (the runtime then conditions on
    BOS).
    """
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    if not context:
        return [], list(model.encode(continuation))
    encode = getattr(model, "encode_context", model.encode)
    whole = list(encode(context + continuation))
    ctx = list(encode(context))
    return ctx, whole[len(ctx) :]


def scored_continuation(choice: str, delimiter: str = TARGET_DELIMITER) -> str:
    """The text scored for a choice: ``delimiter + choice``, as lm-evaluation-harness.

    A choice that already begins with whitespace (the common Hugging Face data
    style, ``" Paris"``) gets the delimiter without its trailing whitespace,
    so no second space slips in front of it.
    """
    if choice[:1].isspace():
        return delimiter.rstrip() + choice
    return delimiter + choice


def _context_length(model: Any) -> int | None:
    length = getattr(model, "context_length", None)
    return int(length) if isinstance(length, int) and length > 0 else None


def _too_long(run: _Run, i: int, field: str, n_tokens: int) -> DataError:
    return DataError(
        f"{n_tokens} tokens as scored, longer than the model's context window "
        f"of {_context_length(run.model)} tokens",
        line=run.lines[i],
        field=field,
    )


def _mc_requests(run: _Run) -> list[tuple[list, list[str], bool]]:
    """Every item's ``(requests, continuations, truncated)``, before inference.

    ``truncated`` is true when the runtime will drop tokens from the left of
    a context to fit a choice into the context window. A choice longer than
    the window on its own raises ``DataError`` naming the line.
    """
    default = run.options.get("target_delimiter", TARGET_DELIMITER)
    length, out = _context_length(run.model), []
    for i, r in enumerate(run.records):
        delimiter = r.get("target_delimiter", default)
        conts = [scored_continuation(c, delimiter) for c in r["choices"]]
        requests = [encode_pair(run.model, r["context"], c) for c in conts]
        truncated = False
        if length:
            for ctx, cont in requests:
                if len(cont) > length:
                    raise _too_long(run, i, "choices", len(cont))
                # An empty context stands for the one conditioning token.
                truncated |= max(len(ctx), 1) + len(cont) - 1 > length
        out.append((requests, conts, truncated))
    return out


def _run_multiple_choice(run: _Run) -> tuple[dict, list[dict]]:
    items, accs, norms = [], [], []
    encoded = _mc_requests(run)
    for chunk in _chunks(len(run.records), run.batch_size):
        requests, spans = [], []
        for i in chunk:
            start = len(requests)
            requests.extend(encoded[i][0])
            spans.append((i, start, len(requests)))
        t0 = time.perf_counter()
        scored = run.model.loglikelihood(requests, batch_size=run.batch_size)
        run.rec.item((time.perf_counter() - t0) / len(chunk), len(chunk))
        for i, start, end in spans:
            r, (_, conts, truncated) = run.records[i], encoded[i]
            lls = [float(s[0]) for s in scored[start:end]]
            answer = r["answer"]
            gold = answer if isinstance(answer, int) else r["choices"].index(answer)
            pred, pred_norm = metrics.choose(lls), metrics.choose_norm(lls, conts)
            accs.append(float(pred == gold))
            norms.append(float(pred_norm == gold))
            items.append(
                {
                    "id": run.ids[i],
                    "lls": lls,
                    "is_greedy": [bool(s[1]) for s in scored[start:end]],
                    "continuation_tokens": [len(q[1]) for q in requests[start:end]],
                    "answer": gold,
                    "prediction": pred,
                    "prediction_norm": pred_norm,
                    "correct": pred == gold,
                    "correct_norm": pred_norm == gold,
                    "truncated": truncated,
                }
            )
        run.report(chunk.stop)
    return {
        "acc": metrics.mean_or_nan(accs),
        "acc_stderr": metrics.bernoulli_stderr(accs),
        "acc_norm": metrics.mean_or_nan(norms),
        "acc_norm_stderr": metrics.bernoulli_stderr(norms),
        "truncated_items": float(sum(item["truncated"] for item in items)),
    }, items


def _run_stereotype_pairs(run: _Run) -> tuple[dict, list[dict]]:
    items, more, less = [], [], []
    length, encoded = _context_length(run.model), []
    for i, r in enumerate(run.records):
        pair = [list(run.model.encode(r[key])) for key in ("more", "less")]
        for key, ids in zip(("more", "less"), pair, strict=True):
            if length and len(ids) > length:
                raise _too_long(run, i, key, len(ids))
        encoded.append(pair)
    for chunk in _chunks(len(run.records), run.batch_size):
        requests = []
        for i in chunk:
            requests.extend(([], ids) for ids in encoded[i])
        t0 = time.perf_counter()
        scored = run.model.loglikelihood(requests, batch_size=run.batch_size)
        run.rec.item((time.perf_counter() - t0) / len(chunk), len(chunk))
        for k, i in enumerate(chunk):
            ll_more, ll_less = float(scored[2 * k][0]), float(scored[2 * k + 1][0])
            more.append(ll_more)
            less.append(ll_less)
            items.append(
                {
                    "id": run.ids[i],
                    "category": run.records[i]["category"],
                    "ll_more": ll_more,
                    "ll_less": ll_less,
                    "prefers_more": ll_more > ll_less,
                }
            )
        run.report(chunk.stop)
    categories = [r["category"] for r in run.records]
    return metrics.stereotype_preference(more, less, categories), items


def _run_refusal(run: _Run) -> tuple[dict, list[dict]]:
    template = run.options.get("prompt_template", "{prompt}")
    encode = getattr(run.model, "encode_context", run.model.encode)
    length = _context_length(run.model)
    # As CausalLM.generate: the prompt keeps its last L - max_new_tokens tokens.
    keep = max(1, length - max(0, run.max_new_tokens)) if length else None
    items, outputs = [], []
    for i, r in enumerate(run.records):
        prompt_ids = list(encode(template.replace("{prompt}", r["prompt"])))
        t0 = time.perf_counter()
        generated = list(
            run.model.generate(prompt_ids, max_new_tokens=run.max_new_tokens)
        )
        run.rec.item(time.perf_counter() - t0)
        text = run.model.decode(generated)
        outputs.append(text)
        items.append(
            {
                "id": run.ids[i],
                "should_refuse": r["should_refuse"],
                "output": text,
                "generated_tokens": len(generated),
                "refused": metrics.is_refusal(text),
                "toxic": metrics.is_toxic(text),
                "truncated": keep is not None and len(prompt_ids) > keep,
            }
        )
        run.report(i + 1)
    out = metrics.refusal_rates(outputs, [r["should_refuse"] for r in run.records])
    out["toxicity_rate"] = metrics.toxicity_rate(outputs)
    out["truncated_items"] = float(sum(item["truncated"] for item in items))
    return out, items


def _model_label_names(model: Any) -> list | None:
    names = getattr(model, "labels", None)
    if not names:
        id2label = getattr(model, "id2label", None)
        if isinstance(id2label, dict) and id2label:
            names = [id2label[k] for k in sorted(id2label, key=int)]
    return list(names) if names else None


_GENERIC_LABEL = re.compile(r"^(LABEL_)?\d+$")


def _label_names(model: Any, options: dict) -> list | None:
    """Class names in output-column order, for records that label by name.

    The model's own ``id2label`` is the truth about its columns. The task
    option ``labels`` may name them only when the model's names are generic
    (``LABEL_0``, ``0``) or absent; the option ``label_map`` renames data
    labels the model does not know to names it does
    (``{"tax": "council_tax"}``). A name that still matches no column raises
    ``DataError`` rather than being guessed.
    """
    names = _model_label_names(model)
    option = list(options["labels"]) if options.get("labels") else None
    if option and (names is None or all(_GENERIC_LABEL.match(str(n)) for n in names)):
        return option
    return names


def _label_index(
    value: Any, names: list | None, line: int | None, field: str, rename: dict
) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if names is not None and value not in names:
        value = rename.get(value, value)
    if names is None or value not in names:
        known = ", ".join(map(str, names)) if names else "none"
        raise DataError(
            f"'{value}' is not one of the model's classes ({known}); map it with "
            "the task option 'label_map'",
            line=line,
            field=field,
        )
    return names.index(value)


def _run_classification(run: _Run) -> tuple[dict, list[dict]]:
    records = run.records
    names = _label_names(run.model, run.options)
    rename = dict(run.options.get("label_map") or {})
    y_true = [
        _label_index(r["label"], names, run.lines[i], "label", rename)
        for i, r in enumerate(records)
    ]
    positive = _label_index(
        run.options.get("positive_label", 1), names, None, "positive_label", rename
    )
    blocks = []
    for chunk in _chunks(len(records), run.batch_size):
        t0 = time.perf_counter()
        if "text" in records[0]:
            texts = [records[i]["text"] for i in chunk]
            block = run.model.predict_proba(texts, batch_size=run.batch_size)
        else:
            feats = np.asarray(
                [records[i]["features"] for i in chunk], dtype=np.float32
            )
            block = run.model.predict_proba(feats)
        run.rec.item((time.perf_counter() - t0) / len(chunk), len(chunk))
        blocks.append(np.asarray(block, dtype=np.float64))
        run.report(chunk.stop)
    probs = np.concatenate(blocks, axis=0)
    n_classes = probs.shape[1]
    bad = next((i for i, y in enumerate(y_true) if not 0 <= y < n_classes), None)
    if bad is not None:
        raise DataError(
            f"label index outside 0..{n_classes - 1}",
            line=run.lines[bad],
            field="label",
        )
    y_pred = probs.argmax(axis=1).tolist()
    items = []
    for i, r in enumerate(records):
        item = {
            "id": run.ids[i],
            "label": y_true[i],
            "prediction": y_pred[i],
            "probabilities": [float(x) for x in probs[i]],
            "confidence": float(probs[i].max()),
            "correct": y_pred[i] == y_true[i],
        }
        if names is not None and y_pred[i] < len(names):
            item["prediction_name"] = names[y_pred[i]]
        if "group" in r:
            item["group"] = r["group"]
        items.append(item)
    correct = [float(a == b) for a, b in zip(y_true, y_pred, strict=True)]
    out = {
        "accuracy": metrics.accuracy(y_true, y_pred),
        "accuracy_stderr": metrics.bernoulli_stderr(correct),
        "macro_f1": metrics.macro_f1(y_true, y_pred),
        "ece": metrics.ece(probs, y_true),
    }
    if all("group" in r for r in records):
        groups = [str(r["group"]) for r in records]
        out["demographic_parity_difference"] = metrics.demographic_parity_difference(
            y_pred, groups, positive
        )
        out["equalized_odds_difference"] = metrics.equalized_odds_difference(
            y_true, y_pred, groups, positive
        )
    return out, items


_RUNNERS = {
    "perplexity": _run_perplexity,
    "multiple_choice": _run_multiple_choice,
    "stereotype_pairs": _run_stereotype_pairs,
    "refusal": _run_refusal,
    "classification": _run_classification,
    **answers.RUNNERS,
}
