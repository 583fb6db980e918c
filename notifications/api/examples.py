"""Example bodies of the webhooks API for the OpenAPI schema."""

from __future__ import annotations

AT = "2026-03-02T09:30:00Z"
DIGEST = "9f2c4e1a7b3d5c8e0f6a2b4d6e8f0a1c3e5b7d9f1a2c4e6b8d0f2a4c6e8b0d2f"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw6b8wlqRZ8Ks="

WEBHOOK = {
    "id": 7,
    "agency": "arden-city",
    "url": "https://hooks.arden-city.example.gov/civitas",
    "description": "Service desk: approvals and suspensions",
    "event_types": ["model_version.status_changed", "use_case.suspended"],
    "is_enabled": True,
    "secret_rotated_at": None,
    "previous_secret_expires_at": None,
    "created_at": AT,
    "updated_at": AT,
}

WEBHOOK_WITH_SECRET = {**WEBHOOK, "secret": SECRET}

CREATE = {
    "url": "https://hooks.arden-city.example.gov/civitas",
    "event_types": ["model_version.status_changed", "use_case.suspended"],
    "description": "Service desk: approvals and suspensions",
}

DELIVERY = {
    "id": 311,
    "event_id": "msg_audit_1042",
    "event_type": "use_case.suspended",
    "audit_seq": 1042,
    "payload": {
        "type": "use_case.suspended",
        "timestamp": "2026-03-02T09:30:00.000000Z",
        "data": {
            "audit_seq": 1042,
            "audit_hash": DIGEST,
            "agency": "arden-city",
            "actor": "rita#12",
            "object_type": "governance.usecase",
            "object_id": "31",
            "details": {"use_case_id": 31, "from": "approved", "to": "suspended"},
        },
    },
    "status": "delivered",
    "attempts": 3,
    "status_codes": [503, None, 200],
    "last_error": "",
    "response_excerpt": "ok",
    "next_attempt_at": None,
    "delivered_at": "2026-03-02T09:31:31Z",
    "created_at": AT,
}

PING = {
    **DELIVERY,
    "id": 312,
    "event_id": "msg_ping_5d41402abc4b2a76b9719d911017c592",
    "event_type": "webhook.ping",
    "audit_seq": None,
    "payload": {
        "type": "webhook.ping",
        "timestamp": "2026-03-02T09:30:00.000000Z",
        "data": {"agency": "arden-city", "webhook_id": 7},
    },
    "status": "pending",
    "attempts": 0,
    "status_codes": [],
    "response_excerpt": "",
    "next_attempt_at": AT,
    "delivered_at": None,
}
