"""Governance JSON turned into rows a person reads: outcomes, reasons, answers.

Policy results, risk assessments and questionnaire answers are stored as
JSON (``PolicyResult.outcomes``, ``UseCase.risk_reasons``,
``UseCase.answers``). The portal never shows that JSON: these pure
functions turn it into rows of words, and the include templates under
``governance/templates/portal/includes/`` render the rows as tables and
lists. Nothing here queries the database beyond the objects handed in
(``use_case.questionnaire`` should be ``select_related``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.formats import date_format, number_format
from django.utils.translation import gettext_lazy as _

RULE_KIND_LABELS = {
    "required_evaluation": _("Required evaluation"),
    "licence": _("Licences"),
    "sovereignty": _("Sovereignty"),
    "personal_data": _("Personal data"),
    "documentation": _("Documentation"),
    "size_cost": _("Size and cost"),
    "required_suite": _("Required evaluation suite"),
    "quantisation": _("Quality loss of a quantised or optimised version"),
}
# status -> (word, badge modifier); a badge always carries the word.
RULE_STATUS_LABELS = {
    "passed": (_("Passed"), "ok"),
    "failed": (_("Failed"), "bad"),
    "not_applicable": (_("Not applicable"), "muted"),
}
DATASET_ROLE_LABELS = {
    "training": _("Training"),
    "fine-tuning": _("Fine-tuning"),
    "evaluation": _("Evaluation"),
}
PERSONAL_DATA_LABELS = {
    "none": _("No personal data"),
    "pseudonymised": _("Pseudonymised"),
    "personal": _("Personal data"),
}
RISK_TIER_LABELS = {
    "minimal": _("Minimal risk"),
    "limited": _("Limited risk (transparency duties)"),
    "high": _("High risk"),
    "prohibited": _("Prohibited practice"),
}
# Evidence keys whose humanised form would read badly.
_EVIDENCE_LABELS = {
    "max_energy_j_per_1k_tokens": _("Maximum energy (J per 1,000 tokens)"),
    "energy_j_per_1k_tokens": _("Energy (J per 1,000 tokens)"),
    "spdx": _("SPDX expression"),
    "url": _("URL"),
}
_SCORE_REASON = re.compile(
    r"^The score (?P<score>\d+) reaches the '(?P<tier>[^']+)' threshold of "
    r"(?P<min_score>\d+)\.$"
)
_ISO_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")
_TRIGGER_REASON = re.compile(
    r"^Answer '(?P<answer>[^']+)' to '(?P<question>[^']+)' makes the use at least "
    r"'(?P<tier>[^']+)': (?P<reason>.*)$",
    re.DOTALL,
)


@dataclass(frozen=True)
class OutcomeRow:
    """One rule's outcome in words; ``evidence`` is ``[(label, text), ...]``."""

    policy: str
    policy_version: Any
    rule_id: str
    kind: str
    kind_label: str
    status: str
    status_label: str
    badge: str
    message: str
    evidence: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class ReasonRow:
    """One reason for a risk tier: a threshold reached or an answer's trigger."""

    text: str
    tier: str = ""
    tier_label: str = ""
    question: str = ""
    answer: str = ""
    reason: str = ""


@dataclass(frozen=True)
class AnswerRow:
    """A question and the text of every answer chosen for it."""

    question_id: str
    section: str
    question: str
    answers: list[str]


def tier_label(tier: str | None) -> str:
    """The words of a risk tier; an unassessed use case reads "Not assessed"."""
    if not tier:
        return str(_("Not assessed"))
    return str(RISK_TIER_LABELS.get(tier, tier))


def humanise_key(key: str) -> str:
    """``data_origin_jurisdictions`` -> ``Data origin jurisdictions``."""
    if key in _EVIDENCE_LABELS:
        return str(_EVIDENCE_LABELS[key])
    words = str(key).replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def _readable_instant(text: str) -> str:
    """An ISO 8601 instant in the reader's format and time zone, else as given."""
    try:
        moment = parse_datetime(text)
    except ValueError:
        moment = None
    if moment is None or timezone.is_naive(moment):
        return text
    return date_format(timezone.localtime(moment), "DATETIME_FORMAT")


def readable_value(value: Any) -> str:
    """Any evidence value as text: no brackets, braces or quotes of JSON."""
    if value is None or value == "":
        return str(_("none"))
    if isinstance(value, bool):
        return str(_("yes") if value else _("no"))
    if isinstance(value, int):
        return number_format(value, force_grouping=True)
    if isinstance(value, float):
        rounded = float(f"{value:.4g}")  # four significant digits, as the rules
        if rounded.is_integer():
            return number_format(int(rounded), force_grouping=True)
        return number_format(rounded, force_grouping=True)
    if isinstance(value, str) and _ISO_INSTANT.match(value):
        return _readable_instant(value)
    if isinstance(value, Mapping):
        if not value:
            return str(_("none"))
        return ", ".join(
            f"{humanise_key(k)}: {readable_value(v)}" for k, v in value.items()
        )
    if isinstance(value, list | tuple | set):
        if not value:
            return str(_("none"))
        separator = "; " if any(isinstance(v, Mapping) for v in value) else ", "
        return separator.join(readable_value(v) for v in value)
    return str(value)


def evidence_rows(evidence: Any) -> list[tuple[str, str]]:
    """The evidence of an outcome as ``(label, text)`` pairs, in stored order."""
    if not evidence:
        return []
    if not isinstance(evidence, Mapping):
        return [(str(_("Evidence")), readable_value(evidence))]
    return [
        (humanise_key(key), readable_value(value)) for key, value in evidence.items()
    ]


def policy_outcome_rows(result_or_outcomes: Any) -> list[OutcomeRow]:
    """Rows for a ``PolicyResult`` (or its ``outcomes`` list), rule by rule."""
    outcomes = getattr(result_or_outcomes, "outcomes", result_or_outcomes) or []
    rows = []
    for outcome in outcomes:
        status = str(outcome.get("status", ""))
        word, badge = RULE_STATUS_LABELS.get(status, (status, "info"))
        kind = str(outcome.get("kind", ""))
        rows.append(
            OutcomeRow(
                policy=str(outcome.get("policy", "")),
                policy_version=outcome.get("policy_version", ""),
                rule_id=str(outcome.get("rule_id", "")),
                kind=kind,
                kind_label=str(RULE_KIND_LABELS.get(kind, humanise_key(kind))),
                status=status,
                status_label=str(word),
                badge=badge,
                message=str(outcome.get("message", "")),
                evidence=evidence_rows(outcome.get("evidence")),
            )
        )
    return rows


def _definition(use_case: Any) -> dict[str, Any]:
    questionnaire = getattr(use_case, "questionnaire", None)
    return getattr(questionnaire, "definition", None) or {}


def _texts(definition: dict[str, Any]) -> tuple[dict, dict]:
    questions = {q["id"]: q for q in definition.get("questions", [])}
    answers = {
        (qid, a["id"]): a.get("text", a["id"])
        for qid, q in questions.items()
        for a in q.get("answers", [])
    }
    return questions, answers


def risk_reason_rows(use_case: Any) -> list[ReasonRow]:
    """The stored reasons for the use case's tier, with question and answer text.

    Reasons written by ``governance.risk.assess`` are recognised and
    rewritten in the reader's language with the question and answer texts
    of the questionnaire; any other reason is shown as stored.
    """
    questions, answers = _texts(_definition(use_case))
    rows = []
    for reason in getattr(use_case, "risk_reasons", None) or []:
        text = str(reason)
        score = _SCORE_REASON.match(text)
        trigger = _TRIGGER_REASON.match(text)
        if score:
            label = tier_label(score["tier"])
            rows.append(
                ReasonRow(
                    text=str(
                        _(
                            "The score %(score)s reaches the threshold of "
                            "%(min_score)s for “%(tier)s”."
                        )
                        % {
                            "score": score["score"],
                            "min_score": score["min_score"],
                            "tier": label,
                        }
                    ),
                    tier=score["tier"],
                    tier_label=label,
                )
            )
        elif trigger:
            qid, aid = trigger["question"], trigger["answer"]
            question = questions.get(qid, {}).get("text", qid)
            label = tier_label(trigger["tier"])
            rows.append(
                ReasonRow(
                    text=str(
                        _("This answer makes the use at least “%(tier)s”.")
                        % {"tier": label}
                    ),
                    tier=trigger["tier"],
                    tier_label=label,
                    question=question,
                    answer=answers.get((qid, aid), aid),
                    reason=trigger["reason"],
                )
            )
        else:
            rows.append(ReasonRow(text=text))
    return rows


def questionnaire_answer_rows(use_case: Any) -> list[AnswerRow]:
    """Each question of the questionnaire with the text of the answers chosen.

    Questions follow the questionnaire's order; an answer id the
    questionnaire does not know is shown as stored, and a question without
    an answer reads "No answer".
    """
    definition = _definition(use_case)
    stored = getattr(use_case, "answers", None) or {}
    questions, texts = _texts(definition)
    rows = []
    for qid, question in questions.items():
        chosen = stored.get(qid)
        ids: Iterable[Any] = (
            chosen if isinstance(chosen, list) else ([chosen] if chosen else [])
        )
        rows.append(
            AnswerRow(
                question_id=qid,
                section=str(question.get("section", "")),
                question=str(question.get("text", qid)),
                answers=[str(texts.get((qid, aid), aid)) for aid in ids]
                or [str(_("No answer"))],
            )
        )
    for qid in stored:
        if qid not in questions:
            value = stored[qid]
            values = value if isinstance(value, list) else [value]
            rows.append(AnswerRow(qid, "", qid, [readable_value(v) for v in values]))
    return rows
