"""The auditors' pages: an object's chain, verification, checkpoint and export."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit import services as audit
from audit.models import AuditEvent
from governance.portal import audit as audit_pages
from governance.portal.forms.audit import AuditSearchForm

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

HOME = "/portal/audit/"
EXPORT = "/portal/audit/export/"


def _chain(use_case) -> str:
    return f"/portal/audit/objects/governance.usecase/{use_case.pk}/"


def _version_chain(version) -> str:
    return f"/portal/audit/objects/registry.modelversion/{version.pk}/"


def _tamper(seq: int) -> None:
    """What a database superuser could do: rewrite one event's payload."""
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(
            "ALTER TABLE governance_auditevent "
            "DISABLE TRIGGER governance_auditevent_no_update_delete"
        )
        cursor.execute(
            "UPDATE governance_auditevent SET payload = '{\"n\":999}' WHERE seq = %s",
            [seq],
        )
        cursor.execute(
            "ALTER TABLE governance_auditevent "
            "ENABLE TRIGGER governance_auditevent_no_update_delete"
        )


def test_anonymous_readers_are_sent_to_sign_in(client, kit):
    for url in (HOME, _chain(kit.use_case), EXPORT):
        response = client.get(url)
        assert response.status_code == 302
        assert response.url.startswith("/accounts/login/")


def test_an_auditor_reads_an_objects_chain_with_hashes_and_payload(
    client, kit, reviewer
):
    kit.in_review()
    client.force_login(reviewer)
    response = client.get(_chain(kit.use_case))
    assert response.status_code == 200
    page = response.content.decode()
    events = list(
        AuditEvent.objects.filter(
            object_type="governance.usecase", object_id=str(kit.use_case.pk)
        ).order_by("seq")
    )
    assert len(events) >= 3
    for event in events:
        assert f"Event {event.seq}: {event.action}" in page
        assert event.hash in page and event.prev_hash in page
    assert "use_case.submitted" in page and "use_case.review_started" in page
    # The payload as key/value text, not JSON.
    assert '<th scope="row">Submission id</th>' in page
    assert "{&quot;" not in page
    assert "no: the event was altered" not in page
    assert page.count("Content matches its hash") == len(events)
    assert f'href="/portal/review/{kit.use_case.pk}/"' in page
    assert "Audit chain of Use case" in page


def test_the_search_form_opens_the_chain(client, kit, reviewer):
    kit.in_review()
    client.force_login(reviewer)
    page = client.get(HOME).content.decode()
    assert 'value="governance.usecase"' in page
    response = client.get(
        HOME, {"object_type": "governance.usecase", "object_id": kit.use_case.pk}
    )
    assert response.status_code == 302 and response.url == _chain(kit.use_case)
    response = client.get(HOME, {"object_type": "nothing.here", "object_id": "1"})
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    form = AuditSearchForm(
        {"object_type": "a.b", "object_id": "1/2"}, object_types=[("a.b", "a.b")]
    )
    assert not form.is_valid() and "object_id" in form.errors


def test_oversight_sees_verification_ok_the_checkpoint_and_the_public_key(
    client, kit, reviewer
):
    kit.in_review()
    checkpoint = audit.checkpoint_create()
    client.force_login(reviewer)
    page = client.get(HOME).content.decode()
    assert '<span class="badge badge--ok">OK</span>' in page
    assert f"All {AuditEvent.objects.count()} events recompute" in page
    assert checkpoint.head_hash in page
    assert checkpoint.envelope["signatures"][0]["sig"] in page
    assert "Verifies with the platform key" in page
    from audit import signing

    assert signing.public_key_pem().strip().splitlines()[1] in page
    assert "/api/v1/audit/public-key/" in page


def test_a_broken_chain_names_its_first_broken_link(client, kit, reviewer):
    kit.in_review()
    _tamper(2)
    client.force_login(reviewer)
    page = client.get(HOME).content.decode()
    assert '<span class="badge badge--bad">Broken</span>' in page
    assert "The first broken link is event 2." in page
    assert "altered" in page
    event = AuditEvent.objects.get(seq=2)
    url = f"/portal/audit/objects/{event.object_type}/{event.object_id}/"
    assert "no: the event was altered" in client.get(url).content.decode()


def test_verification_is_bounded(client, kit, reviewer, monkeypatch):
    kit.in_review()
    monkeypatch.setattr(audit_pages, "PORTAL_VERIFY_MAX_EVENTS", 2)
    client.force_login(reviewer)
    page = client.get(HOME).content.decode()
    assert "Not verified here" in page and "verify_audit" in page


def test_oversight_downloads_the_whole_chain_and_an_objects_events(
    client, kit, reviewer
):
    kit.in_review()
    client.force_login(reviewer)
    response = client.get(EXPORT)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson"
    assert "attachment" in response["Content-Disposition"]
    lines = [
        json.loads(line) for line in b"".join(response.streaming_content).splitlines()
    ]
    assert lines[0]["type"] == "header" and lines[0]["partial"] is False
    assert lines[-1]["type"] == "end"
    exported = AuditEvent.objects.filter(action="audit.exported").latest("seq")
    assert exported.payload_data["via"] == "portal"
    response = client.get(
        EXPORT,
        {"object_type": "governance.usecase", "object_id": str(kit.use_case.pk)},
    )
    lines = [
        json.loads(line) for line in b"".join(response.streaming_content).splitlines()
    ]
    assert lines[0]["partial"] is True
    events = [line for line in lines if line["type"] == "event"]
    assert events and {e["object_id"] for e in events} == {str(kit.use_case.pk)}


def test_c1_agency_staff_read_their_own_audit_events_only(
    client, kit, member_a, member_b
):
    kit.in_review()
    client.force_login(member_b)
    assert client.get(_chain(kit.use_case)).status_code == 404
    assert client.get(EXPORT).status_code == 403
    version = kit.use_case.model_version
    response = client.get(
        EXPORT,
        {"object_type": "registry.modelversion", "object_id": str(version.pk)},
    )
    assert response.status_code == 404
    page = client.get(HOME).content.decode()
    assert "Verification" not in page  # oversight only, as the API
    assert kit.use_case.title not in page
    client.force_login(member_a)
    page = client.get(_chain(kit.use_case)).content.decode()
    assert "use_case.submitted" in page
    assert "only your agency" in page
    assert client.get(EXPORT).status_code == 403
    assert not AuditEvent.objects.filter(action="audit.exported").exists()


def test_agency_staff_export_a_model_version_of_theirs(client, kit, member_a):
    kit.in_review()
    version = kit.use_case.model_version
    client.force_login(member_a)
    page = client.get(_version_chain(version)).content.decode()
    assert "Download these events" in page
    response = client.get(
        EXPORT,
        {"object_type": "registry.modelversion", "object_id": str(version.pk)},
    )
    assert response.status_code == 200
    lines = [
        json.loads(line) for line in b"".join(response.streaming_content).splitlines()
    ]
    assert lines[0]["partial"] is True
    assert all(
        line.get("object_id") == str(version.pk)
        for line in lines
        if line["type"] == "event"
    )


def test_object_page_queries_do_not_grow_with_its_events(
    client, kit, reviewer, django_assert_max_num_queries
):
    use_case = kit.use_case
    for n in range(2):
        audit.record(
            actor=reviewer, action="test.noted", obj=use_case, payload={"n": n}
        )
    client.force_login(reviewer)
    client.get(_chain(use_case))
    with CaptureQueriesContext(connection) as small:
        client.get(_chain(use_case))
    for n in range(18):
        audit.record(
            actor=reviewer, action="test.noted", obj=use_case, payload={"n": n}
        )
    with django_assert_max_num_queries(len(small)):
        page = client.get(_chain(use_case)).content.decode()
    assert page.count("test.noted") >= 20


def test_audit_home_queries_do_not_grow_with_the_chain(
    client, kit, reviewer, django_assert_max_num_queries
):
    use_case = kit.use_case
    for n in range(2):
        audit.record(
            actor=reviewer, action="test.noted", obj=use_case, payload={"n": n}
        )
    audit.checkpoint_create()
    client.force_login(reviewer)
    client.get(HOME)
    with CaptureQueriesContext(connection) as small:
        client.get(HOME)
    for n in range(18):
        audit.record(
            actor=reviewer, action="test.noted", obj=use_case, payload={"n": n}
        )
    audit.checkpoint_create()
    with django_assert_max_num_queries(len(small)):
        page = client.get(HOME).content.decode()
    assert '<span class="badge badge--ok">OK</span>' in page
