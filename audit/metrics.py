"""The audit chain's gauges on ``/metrics`` (config.metrics).

Read from the chain head (one row) and the newest checkpoint (an index).
"""

from __future__ import annotations

from django.utils import timezone

from audit.models import AuditChainHead, AuditCheckpoint
from config.metrics import register_gauge


def chain_length():
    """Events in the chain: the head's sequence number."""
    head = AuditChainHead.objects.order_by().values_list("seq", flat=True).first()
    return [({}, head or 0)]


def _last_checkpoint():
    return AuditCheckpoint.objects.order_by("-seq").values("seq", "created_at").first()


def seconds_since_checkpoint():
    """Seconds since the newest signed checkpoint (none yet: no sample)."""
    last = _last_checkpoint()
    if last is None:
        return []
    return [({}, (timezone.now() - last["created_at"]).total_seconds())]


def unsigned_events():
    """Events appended after the newest signed checkpoint."""
    head = AuditChainHead.objects.order_by().values_list("seq", flat=True).first() or 0
    last = _last_checkpoint()
    return [({}, head - (last["seq"] if last else 0))]


def register() -> None:
    """Called from ``AuditConfig.ready``."""
    register_gauge("civitas_audit_chain_length", "Events in the audit chain",
                   chain_length)
    register_gauge("civitas_audit_seconds_since_checkpoint",
                   "Seconds since the newest signed audit checkpoint",
                   seconds_since_checkpoint)
    register_gauge("civitas_audit_unsigned_events",
                   "Audit events appended since the newest signed checkpoint",
                   unsigned_events)
