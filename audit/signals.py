"""Signals of the audit chain, for apps that react to what was recorded.

``event_recorded`` is sent after the transaction that appended an event
commits (never for a rolled-back append), with ``sender=AuditEvent`` and
``event`` (the saved ``AuditEvent``), for the events some app asked for with
``announce_when``: most events interest no one, and they cost nothing more
than before (no on-commit callback, no query). It is sent robustly: a
receiver that raises is logged and never reaches the service that recorded
the event, whose work is already committed. Receivers queue follow-up work
(notifications); they do no governed writes through it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django.dispatch import Signal

event_recorded = Signal()

# (action, canonical payload) -> whether ``event_recorded`` is sent for it.
Predicate = Callable[[str, Mapping[str, Any]], bool]
_predicates: list[Predicate] = []


def announce_when(predicate: Predicate) -> None:
    """Have ``event_recorded`` sent for the events ``predicate`` accepts.

    Called from an ``AppConfig.ready``; registering the same predicate twice
    registers it once.
    """
    if predicate not in _predicates:
        _predicates.append(predicate)


def is_announced(action: str, payload: Mapping[str, Any]) -> bool:
    """Whether an event with ``action`` and ``payload`` is announced on commit."""
    return any(predicate(action, payload) for predicate in _predicates)
