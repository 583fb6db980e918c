"""``audit.signals.event_recorded``: once per committed event asked for, robustly."""

from __future__ import annotations

import pytest
from django.db import transaction

from audit import services as audit
from audit.signals import announce_when, event_recorded

pytestmark = pytest.mark.django_db


def _signal_test_events(action, payload):
    return action.startswith("signaltest.")


def test_each_committed_event_asked_for_is_announced_once_and_failures_are_contained(
    django_capture_on_commit_callbacks,
):
    announce_when(_signal_test_events)
    seen = []

    def listen(sender, event, **kwargs):
        seen.append(event.seq)

    def explode(sender, event, **kwargs):
        raise RuntimeError("a broken receiver")

    event_recorded.connect(listen, dispatch_uid="test-listen")
    event_recorded.connect(explode, dispatch_uid="test-explode")
    try:
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            with transaction.atomic():
                first = audit.record(actor=None, action="signaltest.created")
                audit.record(actor=None, action="dataset.created")  # not asked for
                second = audit.record(actor=None, action="signaltest.updated")
            assert seen == []  # not before the commit
    finally:
        event_recorded.disconnect(dispatch_uid="test-listen")
        event_recorded.disconnect(dispatch_uid="test-explode")

    assert seen == [first.seq, second.seq]
    assert len(callbacks) == 2  # nothing is scheduled for an event no one wants
