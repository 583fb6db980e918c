"""Which audit events notify, what their payload looks like, and who is e-mailed.

An event type is the audit action that produced it. A webhook subscribes to
any of ``EVENT_TYPES``; ``webhook.ping`` is sent only by the test ping.
``policy.evaluated`` notifies only when the evaluation failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from audit.verify import format_timestamp

PING = "webhook.ping"

# The people e-mailed: the event's agency's maintainers, and/or the oversight
# bodies' reviewers.
MAINTAINERS = "maintainers"
REVIEWERS = "reviewers"


@dataclass(frozen=True)
class EventType:
    name: str
    group: str
    audience: frozenset[str]
    description: str


_STATUS = {MAINTAINERS}
_SUSPENSION = {MAINTAINERS, REVIEWERS}
_CATALOGUE = [
    # (event type, group, audience, description)
    ("model_version.status_changed", "status", _STATUS,
     "A model version's derived status changed."),
    ("use_case.submitted", "status", _STATUS, "A use case was submitted for review."),
    ("use_case.review_started", "status", _STATUS,
     "A reviewer started reviewing a use case."),
    ("use_case.approved", "status", _STATUS, "A use case was approved."),
    ("use_case.rejected", "status", _STATUS, "A use case was rejected."),
    ("use_case.changes_requested", "status", _STATUS,
     "A reviewer asked for changes to a use case."),
    ("use_case.reinstated", "status", _STATUS, "A suspended use case was reinstated."),
    ("use_case.retired", "status", _STATUS, "A use case was retired."),
    ("use_case.expired", "status", _STATUS, "A use case's approval ended."),
    ("use_case.returned_to_review", "status", _STATUS,
     "An approved use case went back to review."),
    ("policy.evaluated", "policy", _STATUS,
     "The policies in force failed a use case (failures only)."),
    ("evaluation.regression", "regression", _STATUS,
     "A scheduled run moved a metric past its policy bound."),
    ("evaluation.reproducibility_failed", "regression", _STATUS,
     "A scheduled run's metrics differ from the previous run beyond tolerance."),
    ("use_case.suspended", "suspension", _SUSPENSION,
     "A reviewer suspended a use case."),
    ("model_version.digest_mismatch", "suspension", _SUSPENSION,
     "A stored artifact no longer matches its digest; its versions are suspended."),
    ("incident.reported", "incident", _SUSPENSION,
     "An incident was reported on a model version."),
]  # fmt: skip
EVENT_TYPES: dict[str, EventType] = {
    name: EventType(name, group, frozenset(audience), text)
    for name, group, audience, text in _CATALOGUE
}


def notifies(action: str, payload: Mapping[str, Any]) -> bool:
    """Whether an audit event with ``action`` and ``payload`` notifies anyone.

    Registered with ``audit.signals.announce_when``, so it runs for every
    event recorded: a set lookup for all but ``policy.evaluated``.
    """
    if action not in EVENT_TYPES:
        return False
    if action == "policy.evaluated":
        return payload.get("passed") is False
    return True


def event_id(seq: int) -> str:
    """The ``webhook-id`` of the audit event ``seq``: the same on every attempt."""
    return f"msg_audit_{seq}"


def webhook_payload(event) -> dict[str, Any]:
    """The JSON body sent for an ``audit.models.AuditEvent``.

    The Standard Webhooks shape: ``type``, ``timestamp`` (when the event was
    recorded) and ``data``, which names the audit event so that a receiver can
    fetch it and check it against the chain.
    """
    return {
        "type": event.action,
        "timestamp": format_timestamp(event.created_at),
        "data": {
            "audit_seq": event.seq,
            "audit_hash": event.hash,
            "agency": event.agency_slug,
            "actor": event.actor_label,
            "object_type": event.object_type,
            "object_id": event.object_id,
            "details": event.payload_data,
        },
    }
