"""Signals of the audit chain, for apps that react to what was recorded.

``event_recorded`` is sent once per appended event, after the transaction
that appended it commits (never for a rolled-back append), with
``sender=AuditEvent`` and ``event`` (the saved ``AuditEvent``). It is sent
robustly: a receiver that raises is logged and never reaches the service that
recorded the event, whose work is already committed. Receivers do no domain
writes of their own through it; they queue follow-up work (notifications).
"""

from __future__ import annotations

from django.dispatch import Signal

event_recorded = Signal()
