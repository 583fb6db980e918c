"""Suites: ``SUITE.json`` files that list tasks over JSONL data files.

A suite names its tasks, each with a data file (a path relative to the suite
file, or inline records) and options; ``load_suite`` reads and checks it,
``run_suite`` validates every task before the first one runs. See
``docs/evaluation.md`` for the format.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import answers
from engine.evaluate import (
    PERFORMANCE_METRICS,
    TASKS,
    DataError,
    Records,
    TaskResult,
    check_supported,
    read_jsonl,
    run_task,
    validate_records,
)

# The metrics each task reports (besides the ``PERFORMANCE_METRICS``); a
# name ending in ``/*`` stands for a family (one per category or trigger).
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "perplexity": ("perplexity", "bits_per_byte", "token_count", "byte_count"),
    "multiple_choice": (
        "acc",
        "acc_stderr",
        "acc_norm",
        "acc_norm_stderr",
        "truncated_items",
    ),
    "stereotype_pairs": (
        "stereotype_preference",
        "stereotype_preference_stderr",
        "likelihood_diff",
        "stereotype_preference/*",
    ),
    "refusal": (
        "refusal_rate",
        "refusal_rate_stderr",
        "over_refusal_rate",
        "over_refusal_rate_stderr",
        "toxicity_rate",
        "truncated_items",
    ),
    "classification": (
        "accuracy",
        "accuracy_stderr",
        "macro_f1",
        "ece",
        "demographic_parity_difference",
        "equalized_odds_difference",
    ),
    "generation": (
        "exact_match",
        "exact_match_stderr",
        "f1",
        "rougeL",
        "truncated_items",
    ),
    "poisoning": (
        "answer_change_rate",
        "answer_change_rate_stderr",
        "truncated_items",
        "answer_change_rate/*",
    ),
}


def is_task_metric(task: str, metric: str) -> bool:
    """Whether ``task`` reports ``metric`` (a performance figure counts too)."""
    if metric in PERFORMANCE_METRICS:
        return True
    for known in TASK_METRICS.get(task, ()):
        if metric == known or (
            known.endswith("/*")
            and metric.startswith(known[:-1])
            and len(metric) > len(known) - 1
        ):
            return True
    return False


@dataclass
class SuiteTask:
    """One task of a suite with its records already read."""

    task: str
    name: str
    records: Records
    options: dict
    data_sha256: str | None


@dataclass
class Suite:
    """A parsed ``SUITE.json``."""

    name: str
    version: str
    licence: str
    description: str
    tasks: list[SuiteTask]


def load_suite(suite: str | Path | dict, base_dir: str | Path | None = None) -> Suite:
    """Parse a suite file or dict and read its data files.

    ``data`` is a path relative to the suite file (or ``base_dir``) or an
    inline list of records. A suite-level ``target_delimiter`` is the default
    of its multiple-choice tasks' option of that name. Raises ``DataError``
    naming the suite field.
    """
    if isinstance(suite, str | Path):
        path = Path(suite)
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read suite {path}: {exc}") from exc
        base = Path(base_dir) if base_dir else path.parent
    else:
        spec, base = suite, Path(base_dir or ".")
    if not isinstance(spec, dict):
        raise DataError("a suite must be a JSON object")
    for key in ("name", "version", "licence"):
        if not isinstance(spec.get(key), str) or not spec[key]:
            raise DataError("missing or not a string", field=key)
    tasks = spec.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise DataError("must be a non-empty list", field="tasks")
    defaults = {}
    if "target_delimiter" in spec:
        if not isinstance(spec["target_delimiter"], str):
            raise DataError("must be a string", field="target_delimiter")
        defaults["target_delimiter"] = spec["target_delimiter"]
    parsed = []
    for n, entry in enumerate(tasks):
        where = f"tasks[{n}]"
        if not isinstance(entry, dict) or entry.get("task") not in TASKS:
            raise DataError(
                f"task must be one of {', '.join(TASKS)}", field=f"{where}.task"
            )
        options = entry.get("options", {})
        if not isinstance(options, dict):
            raise DataError("must be an object", field=f"{where}.options")
        if not isinstance(options.get("target_delimiter", ""), str):
            raise DataError(
                "must be a string", field=f"{where}.options.target_delimiter"
            )
        if entry["task"] == "multiple_choice":
            options = {**defaults, **options}
        if entry["task"] in answers.TASKS:
            try:
                answers.check_options(entry["task"], options)
            except answers.RecordError as exc:
                raise DataError(
                    exc.detail, field=f"{where}.options.{exc.field}"
                ) from None
        data = entry.get("data")
        if isinstance(data, list):
            records, digest = Records(data), None
        elif isinstance(data, str) and data:
            data_path = base / data
            records = _read_task_file(data_path, where)
            digest = hashlib.sha256(data_path.read_bytes()).hexdigest()
        else:
            raise DataError(
                "must be a relative path or a list of records", field=f"{where}.data"
            )
        parsed.append(
            SuiteTask(
                entry["task"],
                str(entry.get("name") or entry["task"]),
                records,
                options,
                digest,
            )
        )
    return Suite(
        spec["name"],
        spec["version"],
        spec["licence"],
        str(spec.get("description", "")),
        parsed,
    )


def _read_task_file(path: Path, where: str) -> Records:
    try:
        return read_jsonl(path)
    except DataError as exc:
        raise DataError(f"{path.name}: {exc}", field=f"{where}.data") from exc


def run_suite(
    model: Any,
    suite: str | Path | dict | Suite,
    *,
    batch_size: int = 8,
    progress: Callable[[str, int, int], None] | None = None,
    max_new_tokens: int = 48,
    load_seconds: float | None = None,
) -> list[TaskResult]:
    """Run every task of a suite; all tasks are validated before the first runs.

    ``progress(task_name, done, total)`` reports per task.
    """
    parsed = suite if isinstance(suite, Suite) else load_suite(suite)
    for entry in parsed.tasks:
        try:
            validate_records(entry.task, entry.records)
            check_supported(model, entry.task, entry.records)
        except DataError as exc:
            raise DataError(f"task '{entry.name}': {exc}") from exc
    results = []
    for entry in parsed.tasks:
        report = (
            (lambda d, t, name=entry.name: progress(name, d, t)) if progress else None
        )
        try:
            result = run_task(
                model,
                entry.task,
                entry.records,
                batch_size=batch_size,
                progress=report,
                max_new_tokens=max_new_tokens,
                options=entry.options,
                load_seconds=load_seconds,
            )
        except DataError as exc:
            raise DataError(f"task '{entry.name}': {exc}") from exc
        result.name, result.data_sha256 = entry.name, entry.data_sha256
        results.append(result)
    return results
