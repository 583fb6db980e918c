"""Governance JSON as readable rows and tables: outcomes, risk reasons, answers."""

from __future__ import annotations

from django.template.loader import render_to_string
from django.utils import translation

from governance.models import Questionnaire, UseCase
from governance.portal.readable import (
    evidence_rows,
    policy_outcome_rows,
    questionnaire_answer_rows,
    readable_value,
    risk_reason_rows,
)
from governance.risk import assess, load_definition

OUTCOMES = [
    {
        "policy": "platform-baseline",
        "policy_id": 1,
        "policy_version": 2,
        "rule_id": "licence-open",
        "kind": "licence",
        "status": "failed",
        "evidence": {
            "spdx": "LicenseRef-proprietary",
            "allow": ["Apache-2.0", "MIT"],
            "data_origins": [{"dataset": "census", "jurisdiction": None}],
            "stale": True,
            "parameter_count": 1250000,
            "value": 0.812345,
        },
        "message": "Licence LicenseRef-proprietary is not allowed.",
    },
    {
        "policy": "platform-baseline",
        "policy_version": 2,
        "rule_id": "docs",
        "kind": "documentation",
        "status": "not_applicable",
        "evidence": {},
        "message": "Nothing to check.",
    },
]


def _use_case(answers: dict) -> UseCase:
    definition = load_definition("aia-1.json")
    score, tier, reasons = assess(definition, answers)
    questionnaire = Questionnaire(name="aia", version="1", definition=definition)
    return UseCase(
        questionnaire=questionnaire,
        answers=answers,
        risk_tier=tier,
        risk_score=score,
        risk_reasons=reasons,
    )


def _answers(**overrides) -> dict:
    definition = load_definition("aia-1.json")
    answers = {}
    for question in definition["questions"]:
        first = question["answers"][0]["id"]
        answers[question["id"]] = [first] if question.get("multiple") else first
    answers.update(overrides)
    return answers


def test_outcome_rows_name_the_rule_and_status_in_words_and_evidence_as_text():
    failed, skipped = policy_outcome_rows(OUTCOMES)
    assert (failed.rule_id, failed.kind_label, failed.status_label, failed.badge) == (
        "licence-open",
        "Licences",
        "Failed",
        "bad",
    )
    assert failed.policy == "platform-baseline" and failed.policy_version == 2
    evidence = dict(failed.evidence)
    assert evidence["SPDX expression"] == "LicenseRef-proprietary"
    assert evidence["Allow"] == "Apache-2.0, MIT"
    assert evidence["Data origins"] == "Dataset: census, Jurisdiction: none"
    assert evidence["Stale"] == "yes"
    assert evidence["Parameter count"] == "1,250,000"
    assert evidence["Value"] == "0.8123"
    for text in evidence.values():
        assert not set(text) & set("[]{}\"'")
    assert (skipped.status_label, skipped.badge, skipped.evidence) == (
        "Not applicable",
        "muted",
        [],
    )


def test_outcome_rows_accept_a_result_object_and_unknown_kinds():
    class Result:
        outcomes = [{"rule_id": "x", "kind": "new_kind", "status": "passed"}]

    (row,) = policy_outcome_rows(Result())
    assert (row.kind_label, row.status_label, row.badge) == ("New kind", "Passed", "ok")
    assert evidence_rows(["a", "b"]) == [("Evidence", "a, b")]
    assert readable_value(None) == "none" and readable_value([]) == "none"


def test_numbers_in_evidence_follow_the_language():
    with translation.override("fr"):
        (row, _) = policy_outcome_rows(OUTCOMES)
        assert dict(row.evidence)["Value"] == "0,8123"


def test_risk_reasons_name_the_question_and_answer_of_each_trigger():
    use_case = _use_case(_answers(areas=["employment"]))
    rows = risk_reason_rows(use_case)
    assert use_case.risk_tier == "high"
    assert rows[0].text.startswith("The score ") and rows[0].tier_label
    (trigger,) = [row for row in rows if row.question]
    assert trigger.question == "Which areas does the use touch?"
    assert "employment" not in trigger.answer.split()  # the text, not the id
    assert trigger.answer.lower().startswith("employment")
    assert trigger.tier_label == "High risk"
    assert "Annex III" in trigger.reason


def test_unrecognised_reasons_are_kept_and_unassessed_use_cases_have_none():
    use_case = UseCase(risk_reasons=["Set by hand by the oversight body."])
    assert [row.text for row in risk_reason_rows(use_case)] == [
        "Set by hand by the oversight body."
    ]
    assert risk_reason_rows(UseCase()) == []
    assert questionnaire_answer_rows(UseCase()) == []


def test_answers_show_question_and_answer_text_in_questionnaire_order():
    use_case = _use_case(_answers(areas=["employment", "education"]))
    rows = questionnaire_answer_rows(use_case)
    assert [row.question_id for row in rows][:2] == ["prohibited_practices", "areas"]
    assert rows[0].question == "Does the use do any of the following?"
    assert rows[0].answers == ["None of these"]
    assert len(rows[1].answers) == 2
    assert all(" " in answer for answer in rows[1].answers)  # texts, not ids
    use_case.answers = {**use_case.answers, "gone": "x"}
    assert questionnaire_answer_rows(use_case)[-1].answers == ["x"]


def test_include_templates_render_tables_without_json():
    use_case = _use_case(_answers(areas=["employment"]))
    html = render_to_string(
        "portal/includes/policy_outcomes.html",
        {"outcome_rows": policy_outcome_rows(OUTCOMES)},
    )
    assert "<caption>" in html and 'scope="col"' in html
    assert '<span class="badge badge--bad">Failed</span>' in html
    assert "Apache-2.0, MIT" in html and "[" not in html
    html = render_to_string(
        "portal/includes/risk_reasons.html",
        {"reason_rows": risk_reason_rows(use_case)},
    )
    assert "Which areas does the use touch?" in html and "High risk" in html
    html = render_to_string(
        "portal/includes/questionnaire_answers.html",
        {"answer_rows": questionnaire_answer_rows(use_case)},
    )
    assert "<caption>" in html and "None of these" in html
    empty = render_to_string("portal/includes/policy_outcomes.html", {})
    assert "No policy outcome has been recorded." in empty
