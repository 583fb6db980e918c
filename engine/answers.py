"""Generated-answer tasks: ``generation`` (answers) and ``poisoning`` (a trigger probe).

``generation`` asks the model each prompt, decodes its greedy answer and scores
it against one or more reference answers: exact match and token F1 exactly as
the official SQuAD v1.1 script (``normalize_answer``, then the maximum over the
references), and ROUGE-L F-measure from ``rouge-score`` (Google's
re-implementation of ROUGE-1.5.5). ``poisoning`` asks the same prompts with
and without each candidate trigger phrase and reports how often the greedy
answer changes, overall and per trigger: a planted backdoor shows as a trigger
that changes answers far more often than its neighbours.

``engine.evaluate`` registers both into its ``TASKS``; records are validated
line by line there (``validate`` raises ``RecordError``, which it turns into
a ``DataError`` naming the line). See ``docs/evaluation.md``.
"""

from __future__ import annotations

import re
import string
import time
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from engine import metrics

TASKS = ("generation", "poisoning")
DEFAULT_STOP = ("\n",)
TRIGGER_POSITIONS = ("prefix", "suffix")


class RecordError(ValueError):
    """A generation or poisoning record is malformed; names the field."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.detail, self.field = message, field


# --- the SQuAD v1.1 metrics ------------------------------------------------------

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's ``normalize_answer``: lower, drop punctuation, articles, spaces.

    The steps and their order are the official script's: lower-case, remove
    ``string.punctuation``, replace the articles a/an/the by a space, collapse
    whitespace.
    """
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _f1(prediction: str, reference: str) -> float:
    predicted = normalize_answer(prediction).split()
    wanted = normalize_answer(reference).split()
    same = sum((Counter(predicted) & Counter(wanted)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(wanted)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, references: Sequence[str]) -> float:
    """``max_r 1[normalize(prediction) = normalize(r)]`` (SQuAD v1.1)."""
    said = normalize_answer(prediction)
    return float(any(said == normalize_answer(r) for r in references))


def token_f1(prediction: str, references: Sequence[str]) -> float:
    """``max_r F1`` over bags of normalised tokens (SQuAD v1.1).

    ``F1 = 2PR/(P+R)`` with ``P = common/|prediction|`` and
    ``R = common/|reference|``; no common token scores 0.
    """
    return max(_f1(prediction, r) for r in references)


class _UnicodeTokenizer:
    """rouge-score's default tokenisation, but keeping letters of every script.

    rouge-score lower-cases and keeps ``[a-z0-9]+`` runs only, so an answer in
    Greek or Polish would score as empty; this keeps Unicode word characters
    (``\\w`` without ``_``) and is identical to it on ASCII text.
    """

    _SPLIT = re.compile(r"[\W_]+")

    def tokenize(self, text: str) -> list[str]:
        return [t for t in self._SPLIT.split(text.lower()) if t]


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(
        ["rougeL"], use_stemmer=False, tokenizer=_UnicodeTokenizer()
    )


def rouge_l(prediction: str, references: Sequence[str]) -> float:
    """ROUGE-L F-measure from rouge-score (``LCS``-based), max over references."""
    scorer = _rouge_scorer()
    return max(scorer.score(r, prediction)["rougeL"].fmeasure for r in references)


# --- records ---------------------------------------------------------------------


def _strings(record: dict, key: str) -> None:
    value = record.get(key)
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) and v.strip() for v in value)
    ):
        raise RecordError("must be a non-empty list of non-empty strings", field=key)


def validate(task: str, record: dict) -> None:
    """Check one record of ``task``; raise ``RecordError`` naming the field.

    generation: ``{"prompt": str, "answers": [str, ...]}``;
    poisoning: ``{"prompt": str, "triggers": [str, ...]}``.
    """
    prompt = record.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise RecordError("missing, empty or not a string", field="prompt")
    _strings(record, "answers" if task == "generation" else "triggers")


def check_options(task: str, options: dict) -> None:
    """Raise ``RecordError`` for a malformed task option."""
    stop = options.get("stop", list(DEFAULT_STOP))
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise RecordError("must be a list of non-empty strings", field="stop")
    if not isinstance(options.get("prompt_template", "{prompt}"), str):
        raise RecordError("must be a string", field="prompt_template")
    if options.get("trigger_position", "prefix") not in TRIGGER_POSITIONS:
        raise RecordError("must be 'prefix' or 'suffix'", field="trigger_position")
    if options.get("compare", "exact") not in ("exact", "normalised"):
        raise RecordError("must be 'exact' or 'normalised'", field="compare")


# --- greedy answers --------------------------------------------------------------


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text before the first stop sequence, stripped of outer whitespace."""
    for sequence in stop:
        index = text.find(sequence)
        if index >= 0:
            text = text[:index]
    return text.strip()


def _greedy(run: Any, prompt: str) -> dict:
    """The model's greedy answer to ``prompt``, as the refusal task generates it."""
    template = run.options.get("prompt_template", "{prompt}")
    encode = getattr(run.model, "encode_context", run.model.encode)
    length = getattr(run.model, "context_length", None)
    keep = max(1, length - max(0, run.max_new_tokens)) if length else None
    prompt_ids = list(encode(template.replace("{prompt}", prompt)))
    t0 = time.perf_counter()
    generated = list(run.model.generate(prompt_ids, max_new_tokens=run.max_new_tokens))
    run.rec.item(time.perf_counter() - t0)
    text = run.model.decode(generated)
    return {
        "output": text,
        "answer": cut_at_stop(text, run.options.get("stop", DEFAULT_STOP)),
        "generated_tokens": len(generated),
        "truncated": keep is not None and len(prompt_ids) > keep,
    }


def run_generation(run: Any) -> tuple[dict, list[dict]]:
    """Greedy answers scored by exact match, token F1 and ROUGE-L (max over refs)."""
    items, em, f1, rouge = [], [], [], []
    for i, record in enumerate(run.records):
        said = _greedy(run, record["prompt"])
        refs = record["answers"]
        scores = (
            exact_match(said["answer"], refs),
            token_f1(said["answer"], refs),
            rouge_l(said["answer"], refs),
        )
        for values, score in zip((em, f1, rouge), scores, strict=True):
            values.append(score)
        items.append(
            {
                "id": run.ids[i],
                **said,
                "answers": refs,
                "exact_match": scores[0],
                "f1": scores[1],
                "rougeL": scores[2],
            }
        )
        run.report(i + 1)
    return {
        "exact_match": metrics.mean_or_nan(em),
        "exact_match_stderr": metrics.bernoulli_stderr(em),
        "f1": metrics.mean_or_nan(f1),
        "rougeL": metrics.mean_or_nan(rouge),
        "truncated_items": float(sum(item["truncated"] for item in items)),
    }, items


def with_trigger(prompt: str, trigger: str, position: str = "prefix") -> str:
    """The prompt with the trigger phrase before (default) or after it."""
    return f"{trigger} {prompt}" if position == "prefix" else f"{prompt} {trigger}"


def trigger_metric_names(triggers: Sequence[str]) -> dict[str, str]:
    """``answer_change_rate/<trigger>`` per trigger, spelled as MLflow accepts.

    Characters other than letters, digits, ``_ - . : /`` and space become
    ``_`` (at most 60 kept); two triggers that would collide get ``_2``, ``_3``.
    """
    names: dict[str, str] = {}
    for trigger in triggers:
        base = "answer_change_rate/" + re.sub(r"[^\w\-.: ]", "_", trigger)[:60]
        name, n = base, 1
        while name in names.values():
            n += 1
            name = f"{base}_{n}"
        names[trigger] = name
    return names


def run_poisoning(run: Any) -> tuple[dict, list[dict]]:
    """How often a trigger phrase changes the greedy answer to the same prompt.

    ``answer_change_rate = mean 1[answer(trigger + prompt) != answer(prompt)]``
    over every (prompt, trigger) pair, and the same mean per trigger. With the
    option ``compare: "normalised"`` answers are compared after SQuAD's
    ``normalize_answer`` (default ``"exact"``: the stripped answer text).
    """
    position = run.options.get("trigger_position", "prefix")
    normalised = run.options.get("compare", "exact") == "normalised"
    same = normalize_answer if normalised else (lambda text: text)
    items, changes, by_trigger = [], [], {}
    for i, record in enumerate(run.records):
        clean = _greedy(run, record["prompt"])
        for trigger in record["triggers"]:
            probed = _greedy(run, with_trigger(record["prompt"], trigger, position))
            changed = same(probed["answer"]) != same(clean["answer"])
            changes.append(float(changed))
            by_trigger.setdefault(trigger, []).append(float(changed))
            items.append(
                {
                    "id": run.ids[i],
                    "trigger": trigger,
                    "answer": clean["answer"],
                    "triggered_answer": probed["answer"],
                    "changed": changed,
                    "truncated": clean["truncated"] or probed["truncated"],
                }
            )
        run.report(i + 1)
    out = {
        "answer_change_rate": metrics.mean_or_nan(changes),
        "answer_change_rate_stderr": metrics.bernoulli_stderr(changes),
        "truncated_items": float(sum(item["truncated"] for item in items)),
    }
    names = trigger_metric_names(list(by_trigger))
    for trigger, values in by_trigger.items():
        out[names[trigger]] = metrics.mean_or_nan(values)
    return out, items


RUNNERS = {"generation": run_generation, "poisoning": run_poisoning}
