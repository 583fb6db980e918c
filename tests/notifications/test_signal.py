"""``audit.signals.event_recorded``: sent once per committed event, robustly."""

from __future__ import annotations

import pytest
from django.db import transaction

from audit import services as audit
from audit.signals import event_recorded

pytestmark = pytest.mark.django_db


def test_each_committed_event_is_announced_once_and_a_failing_receiver_is_contained(
    django_capture_on_commit_callbacks,
):
    seen = []

    def listen(sender, event, **kwargs):
        seen.append(event.seq)

    def explode(sender, event, **kwargs):
        raise RuntimeError("a broken receiver")

    event_recorded.connect(listen, dispatch_uid="test-listen")
    event_recorded.connect(explode, dispatch_uid="test-explode")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            with transaction.atomic():
                first = audit.record(actor=None, action="dataset.created")
                second = audit.record(actor=None, action="dataset.updated")
            assert seen == []  # not before the commit
    finally:
        event_recorded.disconnect(dispatch_uid="test-listen")
        event_recorded.disconnect(dispatch_uid="test-explode")

    assert seen == [first.seq, second.seq]
