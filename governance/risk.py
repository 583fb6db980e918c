"""Impact questionnaires: checking their definition, validating answers, scoring.

A questionnaire (``governance/questionnaires/<name>-<version>.json``, stored
as a ``Questionnaire`` row by a data migration) is a list of questions with
weighted answers, score thresholds that map a score to a risk tier, and
triggers: answers that set a floor on the tier whatever the score (an Annex
III area makes a use ``high``, an Article 5 practice makes it
``prohibited``). The tier is the highest of the threshold's and every
triggered one. Pure functions over plain dicts; nothing here touches the
database. See docs/governance.md, "Use cases and risk".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from config.exceptions import DomainError

QUESTIONNAIRE_DIR = Path(__file__).resolve().parent / "questionnaires"
DEFAULT_QUESTIONNAIRE = "aia"
# Lowest to highest; a tier outranks every tier before it.
TIER_ORDER = ("minimal", "limited", "high", "prohibited")
_SCORED_TIERS = TIER_ORDER[:3]  # prohibited comes from triggers, never a score


class Assessment(NamedTuple):
    """The outcome of scoring answers: unpacks as ``score, tier, reasons``."""

    score: int
    tier: str
    reasons: list[str]


def load_definition(filename: str) -> dict[str, Any]:
    """Read and check a shipped questionnaire file; raises ValueError if malformed."""
    definition = json.loads((QUESTIONNAIRE_DIR / filename).read_text("utf-8"))
    check_definition(definition)
    return definition


def shipped_definitions() -> list[dict[str, Any]]:
    """Every questionnaire shipped in ``questionnaires/``, checked, by file name."""
    return [
        load_definition(path.name) for path in sorted(QUESTIONNAIRE_DIR.glob("*.json"))
    ]


def check_definition(definition: dict[str, Any]) -> None:
    """Check a questionnaire's structure and cross-references.

    Invariants: question ids and answer ids (within a question) are unique;
    weights are non-negative integers; thresholds start at 0, rise strictly
    and name scored tiers (not ``prohibited``) in rising order; each trigger
    names an existing question and answer and a tier. Raises ValueError
    naming the first problem.
    """
    for key in ("name", "version", "title", "questions", "thresholds"):
        if key not in definition:
            raise ValueError(f"questionnaire: missing '{key}'")
    seen: set[str] = set()
    for question in definition["questions"]:
        qid = question.get("id")
        if not qid or qid in seen:
            raise ValueError(f"questionnaire: missing or repeated question id {qid!r}")
        seen.add(qid)
        if not question.get("text") or not question.get("answers"):
            raise ValueError(f"question {qid}: needs text and answers")
        answer_ids: set[str] = set()
        for answer in question["answers"]:
            aid = answer.get("id")
            if not aid or aid in answer_ids:
                raise ValueError(f"question {qid}: missing or repeated answer {aid!r}")
            answer_ids.add(aid)
            weight = answer.get("weight")
            if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
                raise ValueError(f"question {qid}, answer {aid}: weight must be >= 0")
    thresholds = definition["thresholds"]
    if not thresholds or thresholds[0].get("min_score") != 0:
        raise ValueError("thresholds: the first one must start at score 0")
    previous_score, previous_rank = -1, -1
    for threshold in thresholds:
        tier, score = threshold.get("tier"), threshold.get("min_score")
        if tier not in _SCORED_TIERS:
            raise ValueError(f"thresholds: {tier!r} is not a scored tier")
        if not isinstance(score, int) or score <= previous_score:
            raise ValueError("thresholds: min_score must rise strictly")
        if TIER_ORDER.index(tier) <= previous_rank:
            raise ValueError("thresholds: tiers must rise with the score")
        previous_score, previous_rank = score, TIER_ORDER.index(tier)
    questions = {q["id"]: q for q in definition["questions"]}
    for trigger in definition.get("triggers", []):
        question = questions.get(trigger.get("question"))
        answers = {a["id"] for a in question["answers"]} if question else set()
        if trigger.get("answer") not in answers:
            raise ValueError(f"trigger {trigger!r}: no such question and answer")
        if trigger.get("tier") not in TIER_ORDER or not trigger.get("reason"):
            raise ValueError(f"trigger {trigger!r}: needs a tier and a reason")


def _error(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def _chosen(question: dict[str, Any], value: Any) -> tuple[list[str], list[dict]]:
    """The answer ids given to one question, and the errors that make them invalid."""
    qid = question["id"]
    known = {a["id"]: a for a in question["answers"]}
    if question.get("multiple"):
        if not isinstance(value, list) or not value:
            return [], [
                _error(
                    "invalid_answer",
                    f"Question '{qid}' takes a non-empty list of answer ids.",
                )
            ]
        ids = value
    elif isinstance(value, str):
        ids = [value]
    else:
        return [], [
            _error("invalid_answer", f"Question '{qid}' takes one answer id, a string.")
        ]
    errors = []
    for aid in ids:
        if not isinstance(aid, str) or aid not in known:
            errors.append(
                _error(
                    "unknown_answer",
                    f"Question '{qid}' has no answer {aid!r}; choose from "
                    + ", ".join(known)
                    + ".",
                )
            )
    if len(set(map(str, ids))) != len(ids):
        errors.append(
            _error("invalid_answer", f"Question '{qid}' lists an answer twice.")
        )
    exclusive = [
        aid
        for aid in ids
        if isinstance(aid, str) and known.get(aid, {}).get("exclusive")
    ]
    if exclusive and len(ids) > 1:
        errors.append(
            _error(
                "invalid_answer",
                f"Answer '{exclusive[0]}' to question '{qid}' excludes every other.",
            )
        )
    return ids, errors


def validate_answers(definition: dict[str, Any], answers: Any) -> dict[str, list[str]]:
    """Check answers against the questionnaire; return them as lists of answer ids.

    Every question must be answered: a string answer id for a single-choice
    question, a non-empty list of ids for a multiple-choice one. Raises
    ``DomainError`` (400, code ``invalid_answers``) whose ``fields.answers``
    lists one ``{code, message}`` per problem, each naming the question and,
    where relevant, the answer (``unknown_question``, ``unknown_answer``,
    ``missing_answer``, ``invalid_answer``).
    """
    if not isinstance(answers, dict):
        raise DomainError(
            "Answers must be an object mapping question ids to answer ids.",
            code="invalid_answers",
            fields={
                "answers": [_error("invalid", "Give an object, not a list or value.")]
            },
        )
    questions = {q["id"]: q for q in definition["questions"]}
    errors = [
        _error("unknown_question", f"Unknown question '{qid}'.")
        for qid in answers
        if qid not in questions
    ]
    normalised: dict[str, list[str]] = {}
    for qid, question in questions.items():
        if qid not in answers:
            errors.append(_error("missing_answer", f"Question '{qid}' has no answer."))
            continue
        ids, problems = _chosen(question, answers[qid])
        errors.extend(problems)
        normalised[qid] = ids
    if errors:
        raise DomainError(
            f"The answers do not fit questionnaire "
            f"{definition['name']}@{definition['version']}.",
            code="invalid_answers",
            fields={"answers": errors},
        )
    return normalised


def assess(questionnaire: Any, answers: Any) -> Assessment:
    """Score answers and map them to a risk tier, with the reasons for it.

    ``questionnaire`` is a ``Questionnaire`` row or its definition dict. The
    score is the sum of the chosen answers' weights; the tier is the highest
    of the last threshold the score reaches and of every triggered tier.
    ``reasons`` holds one sentence for the threshold and one per trigger
    that fired. Raises ``DomainError`` (400) for invalid answers, see
    ``validate_answers``.
    """
    definition = getattr(questionnaire, "definition", questionnaire)
    chosen = validate_answers(definition, answers)
    weights = {
        (q["id"], a["id"]): a["weight"]
        for q in definition["questions"]
        for a in q["answers"]
    }
    score = sum(weights[(qid, aid)] for qid, ids in chosen.items() for aid in ids)
    reached = [t for t in definition["thresholds"] if score >= t["min_score"]][-1]
    tier = reached["tier"]
    reasons = [
        f"The score {score} reaches the '{tier}' threshold of {reached['min_score']}."
    ]
    for trigger in definition.get("triggers", []):
        if trigger["answer"] in chosen.get(trigger["question"], []):
            reasons.append(
                f"Answer '{trigger['answer']}' to '{trigger['question']}' makes the "
                f"use at least '{trigger['tier']}': {trigger['reason']}"
            )
            if TIER_ORDER.index(trigger["tier"]) > TIER_ORDER.index(tier):
                tier = trigger["tier"]
    return Assessment(score=score, tier=tier, reasons=reasons)
