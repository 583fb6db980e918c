"""Example bodies of the governance and audit API for the OpenAPI schema.

The story follows the demo catalogue: Arden City Council puts its requests
assistant (model version 31) into service for its contact centre, the Office
for Public AI Oversight reviews it. ``response``/``request`` build the
examples, as in ``registry.api.examples``.
"""

from __future__ import annotations

from registry.api.examples import AT, DIGEST, request, response

__all__ = ["request", "response"]

LATER = "2026-03-09T14:05:00Z"
KEY_ID = "b1946ac92492d234"
STATEMENT_SHA256 = "4e07408562bedb8b60ce05c1decfe3ad16b72230967de01f640b7e4729b49fce"

SUITE = {
    "id": 1,
    "name": "civitas-core",
    "version": "1.0.0",
    "description": "Perplexity on published service texts and multiple-choice "
    "questions about public services.",
    "licence": "CC0-1.0",
    "agency": None,
    "is_builtin": True,
    "tasks": [
        {
            "task": "perplexity",
            "name": "public-services-perplexity",
            "dataset_version": 4,
            "options": {},
        },
        {
            "task": "multiple_choice",
            "name": "public-services-mc",
            "dataset_version": 5,
            "options": {},
        },
    ],
    "created_at": AT,
}

EVALUATION_RUN = {
    "id": 118,
    "model_version": 31,
    "suite": "civitas-core@1.0.0",
    "status": "succeeded",
    "progress": 1.0,
    "progress_note": "done",
    "requested_by": "arden.member",
    "requested_at": AT,
    "started_at": "2026-03-02T09:30:02Z",
    "finished_at": "2026-03-02T09:31:40Z",
    "artifact_digest": DIGEST,
    "attempts": 1,
    "failure_code": "",
    "failure_reason": "",
    "metrics": [
        {"task": "public-services-perplexity", "name": "perplexity", "value": 18.4},
        {"task": "public-services-mc", "name": "acc", "value": 0.81},
    ],
    "results": [
        {
            "task": "multiple_choice",
            "name": "public-services-mc",
            "metrics": {"acc": 0.81},
            "data_sha256": DIGEST,
        }
    ],
    "environment": {"onnxruntime": "1.20.1", "python": "3.11.7"},
    "mlflow_run_id": "5c1f0e3a9d2b4c7e8f6a1b2c3d4e5f60",
    "engine_version": "1.0.0",
    "wall_seconds": 98.2,
}

CANCELLED_RUN = {
    **EVALUATION_RUN,
    "status": "cancelled",
    "progress": 0.4,
    "progress_note": "public-services-mc: 40 of 100 items",
    "finished_at": "2026-03-02T09:31:00Z",
    "metrics": [],
    "results": [],
    "mlflow_run_id": "",
    "wall_seconds": None,
}

EVALUATION_ITEMS = (
    '{"task": "public-services-mc", "index": 0, "answer": 0, "predicted": 0, '
    '"correct": true}\n'
    '{"task": "public-services-mc", "index": 1, "answer": 2, "predicted": 1, '
    '"correct": false}\n'
)

ENVELOPE = {
    "payloadType": "application/vnd.civitas.evaluation-attestation+json",
    "payload": "eyJfdHlwZSI6Imh0dHBzOi8vaW4tdG90by5pby9TdGF0ZW1lbnQvdjEiLC4uLn0=",
    "signatures": [{"keyid": KEY_ID, "sig": "MEUCIQDx2f1...kT9w=="}],
}

DECISION_ENVELOPE = {
    **ENVELOPE,
    "payloadType": "application/vnd.civitas.decision-attestation+json",
}

USE_CASE = {
    "id": 9,
    "agency": "arden-city",
    "model_version": 31,
    "model_version_label": "arden-city/arden-requests-assistant@1.0.0",
    "title": "First replies to residents' requests",
    "purpose": "Suggest a first reply and a department for each web request.",
    "public_service": "Arden City contact centre",
    "affected_people": "Residents writing to the council",
    "decision_informed": "None: staff choose the department and send the reply.",
    "human_oversight": "A member of staff reads and edits every suggestion.",
    "valid_until": "2027-03-31",
    "status": "draft",
    "is_editable": True,
    "risk_tier": "limited",
    "risk_score": 14,
    "questionnaire": "aia@1",
    "answers": {"public_interaction": ["no"], "human_oversight": ["every_output"]},
    "risk_reasons": ["The score 14 reaches the 'limited' threshold of 12."],
    "assessed_at": AT,
    "assessed_by": "arden.maintainer",
    "created_by": "arden.maintainer",
    "created_at": AT,
    "updated_at": AT,
}

QUESTIONNAIRE = {
    "id": 1,
    "name": "aia",
    "version": "1",
    "title": "Algorithmic impact assessment for a public use of a language model",
    "definition": {
        "questions": [
            {
                "id": "public_interaction",
                "section": "Use",
                "text": "Do members of the public talk to the model directly?",
                "multiple": False,
                "answers": [
                    {"id": "no", "text": "No", "weight": 0},
                    {"id": "yes", "text": "Yes", "weight": 3},
                ],
            }
        ],
        "thresholds": [
            {"min_score": 0, "tier": "minimal"},
            {"min_score": 12, "tier": "limited"},
            {"min_score": 24, "tier": "high"},
        ],
        "triggers": [],
    },
    "created_at": AT,
}

POLICY = {
    "id": 4,
    "name": "platform-baseline",
    "version": 2,
    "is_current": True,
    "title": "Baseline for every use",
    "description": "Open licences and documented limitations.",
    "scope": "platform",
    "agency": None,
    "risk_tier": None,
    "rules": [
        {"id": "open-licence", "kind": "licence", "allow": ["Apache-2.0", "MIT"]},
        {
            "id": "card",
            "kind": "documentation",
            "model_card": ["limitations", "risks"],
        },
    ],
    "is_active": True,
    "created_by": "oversight.reviewer",
    "created_at": AT,
}

POLICY_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Civitas policy rules",
    "type": "array",
    "items": {"oneOf": [{"$ref": "#/$defs/licence"}, {"$ref": "#/$defs/size_cost"}]},
}

POLICY_RESULT = {
    "id": 57,
    "use_case": 9,
    "model_version": 31,
    "artifact_digest": DIGEST,
    "risk_tier": "limited",
    "trigger": "on_demand",
    "passed": True,
    "policies": [
        {
            "id": 4,
            "name": "platform-baseline",
            "version": 2,
            "title": "Baseline for every use",
            "scope": "platform",
        }
    ],
    "outcomes": [
        {
            "policy": "platform-baseline",
            "policy_id": 4,
            "policy_version": 2,
            "rule_id": "open-licence",
            "kind": "licence",
            "status": "passed",
            "evidence": {"licence": "Apache-2.0"},
            "message": "Apache-2.0 is allowed.",
        }
    ],
    "requested_by": "arden.maintainer",
    "created_at": AT,
}

SUBMISSION = {
    "id": 21,
    "use_case": 9,
    "number": 1,
    "submitted_by": "arden.maintainer",
    "submitted_at": AT,
    "model_version": 31,
    "artifact_digest": DIGEST,
    "policy_result": 57,
    "snapshot": {"title": USE_CASE["title"], "risk_tier": "limited"},
    "snapshot_sha256": STATEMENT_SHA256,
}

TRANSITION = {
    "id": 40,
    "use_case": 9,
    "from_status": "submitted",
    "to_status": "in_review",
    "actor": "oversight.reviewer",
    "reason": "",
    "submission": 21,
    "decision": None,
    "created_at": LATER,
}

WAIVER = {
    "id": 3,
    "use_case": 9,
    "policy_result": 57,
    "rule_ids": ["platform-baseline/energy"],
    "justification": "The pilot runs on a shared server without energy counters; "
    "the measurement is scheduled for the next quarter.",
    "granted_by": "oversight.reviewer",
    "granted_at": LATER,
}

DECISION = {
    "id": 15,
    "use_case": 9,
    "submission": 21,
    "review_round": 1,
    "model_version": 31,
    "artifact_digest": DIGEST,
    "kind": "approve",
    "reviewer": "oversight.reviewer",
    "rationale": "Evidence is complete and the human oversight is adequate.",
    "policy_result": 57,
    "waiver": WAIVER,
    "from_status": "in_review",
    "to_status": "approved",
    "decided_at": LATER,
    "approved_at": LATER,
    "expires_at": "2027-03-31T00:00:00Z",
    "attestation": STATEMENT_SHA256,
}

ATTESTATION = {
    "id": 30,
    "run": 118,
    "decision": None,
    "payload_type": "application/vnd.civitas.evaluation-attestation+json",
    "statement_sha256": STATEMENT_SHA256,
    "key_id": KEY_ID,
    "statement": {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [
            {
                "name": "arden-city/arden-requests-assistant@1.0.0",
                "digest": {"sha256": DIGEST},
            }
        ],
        "predicateType": "urn:civitas:attestation:evaluation:v1",
        "predicate": {"evaluation_run": {"id": 118, "status": "succeeded"}},
    },
    "envelope": ENVELOPE,
    "created_at": "2026-03-02T09:31:41Z",
}

IN_SERVICE = {
    "at": "2026-11-28T12:00:00Z",
    "count": 1,
    "results": [
        {
            "use_case": 9,
            "use_case_title": USE_CASE["title"],
            "agency": "arden-city",
            "model_version": 31,
            "model_version_label": USE_CASE["model_version_label"],
            "artifact_digest": DIGEST,
            "decision": 15,
            "approved_at": LATER,
            "expires_at": "2027-03-31T00:00:00Z",
        }
    ],
}

AUDIT_EVENT = {
    "seq": 1042,
    "created_at": AT,
    "actor": 5,
    "actor_label": "arden.maintainer",
    "agency": 1,
    "agency_slug": "arden-city",
    "action": "model_version.artifact_uploaded",
    "object_type": "registry.modelversion",
    "object_id": "31",
    "payload": {"sha256": DIGEST, "size": 4_902_113},
    "prev_hash": "7d1a54127b222502f5b79b5fb0803061152a44f92b37e23c6527baf665d4da9a",
    "hash": "e3b98a4da31a127d4bde6e43033f66ba274cab0eb7eb1c70ec41402bf6273dd8",
}

AUDIT_CHECKPOINT = {
    "seq": 1042,
    "head_hash": AUDIT_EVENT["hash"],
    "created_at": "2026-03-02T10:00:00Z",
    "envelope": {
        "payloadType": "application/vnd.civitas.audit-checkpoint+json",
        "payload": "eyJzZXEiOjEwNDIsImhlYWRfaGFzaCI6ImUzYjk4YTRkLi4uIn0=",
        "signatures": [{"keyid": KEY_ID, "sig": "MEQCIF0v...Yw=="}],
    },
}

AUDIT_VERIFICATION = {
    "ok": True,
    "events": 1042,
    "first_bad_seq": None,
    "reason": "",
    "checkpoints_ok": True,
}

PUBLIC_KEY_PEM = (
    "-----BEGIN PUBLIC KEY-----\n"
    "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n"
    "-----END PUBLIC KEY-----\n"
)

AUDIT_PUBLIC_KEY = {
    "algorithm": "ed25519",
    "keyid": KEY_ID,
    "public_key_pem": PUBLIC_KEY_PEM,
}

AUDIT_EXPORT = (
    '{"type": "header", "format": "civitas-audit-export", "version": 1, '
    '"up_to_seq": 1042, "partial": true, "keyid": "b1946ac92492d234"}\n'
    '{"type": "event", "seq": 1042, "action": "model_version.artifact_uploaded", '
    '"object_type": "registry.modelversion", "object_id": "31", "hash": "e3b9..."}\n'
    '{"type": "end", "events": 1, "up_to_seq": 1042}\n'
)


USE_CASE_EXAMPLE = {
    "model_version": 12,
    "title": "Drafting replies to housing-benefit letters",
    "purpose": "Draft first replies to citizens' letters about housing benefit.",
    "public_service": "Housing benefit, city of A",
    "affected_people": "Claimants writing to the benefits office",
    "decision_informed": "None: caseworkers write and sign every reply.",
    "human_oversight": "A caseworker reads and edits every draft before sending.",
    "valid_until": "2027-12-31",
}


ANSWERS_EXAMPLE = {
    "questionnaire": "aia@1",
    "answers": {
        "prohibited_practices": ["none"],
        "areas": ["internal_drafting"],
        "decision_role": "assists_staff",
        "affected_people": "public_general",
        "scale": "1k_to_100k",
        "impact_on_rights": "minor",
        "reversibility": "easily",
        "personal_data_in_use": "personal",
        "data_representativeness": "partly",
        "public_interaction": "no",
        "human_oversight": "every_output",
        "explainability": "partly",
        "contestability": "yes",
        "fallback": "yes",
    },
}


POLICY_EXAMPLE = {
    "name": "high-risk-baseline",
    "title": "Baseline for high-risk uses",
    "scope": "risk_tier",
    "risk_tier": "high",
    "rules": [
        {
            "id": "mc-accuracy",
            "kind": "required_evaluation",
            "suite": "civitas-core",
            "metric": "public-services-mc.acc",
            "min": 0.7,
            "max_age_days": 90,
        },
        {"id": "open-licence", "kind": "licence", "allow": ["Apache-2.0", "MIT"]},
        {"id": "lineage", "kind": "licence", "require_lineage_compatibility": True},
        {
            "id": "eu-only",
            "kind": "sovereignty",
            "training_jurisdictions": ["EU"],
            "hosting_jurisdictions": ["FR"],
        },
        {"id": "gdpr", "kind": "personal_data", "mode": "legal_basis_required"},
        {
            "id": "card",
            "kind": "documentation",
            "model_card": ["limitations", "risks"],
            "use_case": ["human_oversight"],
        },
        {
            "id": "small",
            "kind": "size_cost",
            "max_parameters": 3000000000,
            "max_energy_j_per_1k_tokens": 50,
        },
    ],
}


APPROVE_EXAMPLE = {
    "rationale": "Evidence is complete and the human oversight is adequate.",
}


WAIVER_EXAMPLE = {
    "rationale": "Approved with the energy rule waived for the pilot period.",
    "waiver": {
        "rule_ids": ["platform-baseline/energy"],
        "justification": "The pilot runs on a shared server whose energy counters "
        "are unavailable; the measurement is scheduled for the next quarter.",
    },
}
