"""E-mail to the people concerned, through Django's mail backend (locmem here)."""

from __future__ import annotations

import pytest
from django.core import mail
from django.db import transaction

from audit import services as audit
from notifications.mail import notification_email_send
from registry.models import Role
from tests.registry.conftest import _person

pytestmark = pytest.mark.django_db


def _event(action, agency, payload=None):
    with transaction.atomic():
        return audit.record(
            actor=None,
            action=action,
            agency=agency,
            object_type="registry.modelversion",
            object_id="7",
            payload=payload or {},
        )


@pytest.fixture
def people(agency_a, agency_b, maintainer_a, member_a, reviewer):
    other = _person("otto", agency_b, Role.MAINTAINER)
    quiet = _person("quinn", agency_a, Role.MAINTAINER)
    quiet.email = ""
    quiet.save()
    return {"maintainer": maintainer_a, "member": member_a, "other": other}


def test_a_status_change_mails_the_agencys_maintainers_only(agency_a, people):
    event = _event("model_version.status_changed", agency_a, {"to": "approved"})

    assert notification_email_send(event_seq=event.seq) == 1

    (message,) = mail.outbox
    assert message.to == [people["maintainer"].email]
    assert "model_version.status_changed" in message.subject
    assert '"to": "approved"' in message.body
    assert f"#{event.seq}" in message.body


def test_a_suspension_also_mails_the_reviewers_and_only_once(
    agency_a, people, reviewer
):
    event = _event("model_version.digest_mismatch", agency_a, {"expected": "ab"})

    assert notification_email_send(event_seq=event.seq) == 2
    assert notification_email_send(event_seq=event.seq) == 0  # a duplicate task

    assert sorted(m.to[0] for m in mail.outbox) == sorted(
        [people["maintainer"].email, reviewer.email]
    )
    assert all(len(m.to) == 1 for m in mail.outbox)


def test_passing_policies_and_unlisted_events_mail_nobody(agency_a, people):
    passed = _event("policy.evaluated", agency_a, {"passed": True})
    other = _event("model.updated", agency_a)

    assert notification_email_send(event_seq=passed.seq) == 0
    assert notification_email_send(event_seq=other.seq) == 0
    assert mail.outbox == []
