"""Citizens' incident reports: filing on a register entry, spam and rate limits,
triage and suspension by oversight reviewers."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.core import signing
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from governance.models import Decision, IncidentReport, IncidentStatus, UseCaseStatus
from governance.portal.forms.incidents import _ISSUED_SALT, issue_stamp
from governance.services.incidents import incident_report_file
from registry.models import Role
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

TEXT = "The assistant told me the tip was closed on Saturday; it was open."


@pytest.fixture(autouse=True)
def _fresh_cache(settings):
    settings.CIVITAS_INCIDENT_FORM_MIN_SECONDS = 0
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def entry(publish):
    return publish(title="Answering waste questions")


def _post(client, use_case, **overrides):
    data = {
        "what_happened": TEXT,
        "occurred_on": (timezone.localdate() - timedelta(days=2)).isoformat(),
        "contact_email": "resident@example.org",
        "website": "",
        "issued": issue_stamp(use_case.pk),
        **overrides,
    }
    return client.post(f"/register/{use_case.pk}/report/", data)


def _old_stamp(use_case_id: int, seconds: float) -> str:
    return signing.dumps(
        {"u": use_case_id, "t": time.time() - seconds}, salt=_ISSUED_SALT
    )


def test_a_member_of_the_public_files_a_report_and_it_is_audited(entry):
    client = Client()

    response = _post(client, entry)

    assert response.status_code == 302
    assert response["Location"] == f"/register/{entry.pk}/"
    report = IncidentReport.objects.get()
    assert report.use_case == entry
    assert report.model_version == entry.model_version
    assert report.status == IncidentStatus.NEW
    assert report.contact_email == "resident@example.org"
    event = AuditEvent.objects.get(action="incident_report.filed")
    assert event.object_type == "registry.modelversion"
    assert event.object_id == str(entry.model_version_id)
    payload = event.payload_data
    assert payload["incident_report_id"] == report.pk
    assert payload["has_contact"] is True
    assert "resident@example.org" not in event.payload and TEXT not in event.payload
    page = client.get(response["Location"]).content.decode()
    assert f"IR-{report.pk}" in page
    # The contact is never shown publicly.
    assert "resident@example.org" not in page


def test_form_errors_are_shown_and_nothing_is_filed(entry):
    response = _post(
        Client(),
        entry,
        what_happened="too short",
        occurred_on=(timezone.localdate() + timedelta(days=3)).isoformat(),
        contact_email="not-an-address",
    )

    assert response.status_code == 400
    page = response.content.decode()
    assert "There is a problem" in page
    assert "The date cannot be in the future." in page
    assert "Enter a valid email address." in page
    assert not IncidentReport.objects.exists()


@pytest.mark.parametrize(
    "spam",
    [
        {"website": "http://cheap-pills.example"},
        {"issued": "forged"},
        {"issued": "stale"},
        {"issued": "other-entry"},
        {"issued": ""},
    ],
    ids=["honeypot", "forged-stamp", "stamp-older-than-a-day", "other-entry", "none"],
)
def test_spam_is_refused_without_filing(entry, spam):
    if spam.get("issued") == "stale":
        spam = {"issued": _old_stamp(entry.pk, 86400 + 60)}
    elif spam.get("issued") == "other-entry":
        spam = {"issued": _old_stamp(entry.pk + 1000, 60)}

    response = _post(Client(), entry, **spam)

    assert response.status_code == 400
    assert "could not be accepted" in response.content.decode()
    assert not IncidentReport.objects.exists()
    assert not AuditEvent.objects.filter(action="incident_report.filed").exists()


def test_a_form_sent_within_seconds_is_refused_then_accepted_later(entry, settings):
    settings.CIVITAS_INCIDENT_FORM_MIN_SECONDS = 5
    client = Client()

    quick = _post(client, entry, issued=issue_stamp(entry.pk))
    later = _post(client, entry, issued=_old_stamp(entry.pk, 6))

    assert quick.status_code == 400
    assert "That was quick" in quick.content.decode()
    assert later.status_code == 302
    assert IncidentReport.objects.count() == 1


def test_reports_are_rate_limited_per_client_address(entry, settings):
    settings.CIVITAS_INCIDENT_REPORTS_PER_ADDRESS = 2
    one = Client(REMOTE_ADDR="203.0.113.7")
    other = Client(REMOTE_ADDR="198.51.100.9")

    answers = [_post(one, entry).status_code for _ in range(3)]
    elsewhere = _post(other, entry)

    assert answers == [302, 302, 429]
    assert elsewhere.status_code == 302
    assert IncidentReport.objects.count() == 3
    limited = _post(one, entry)
    assert int(limited["Retry-After"]) > 0
    assert "Too many reports" in limited.content.decode()


def test_only_register_entries_take_reports(kit):
    response = _post(Client(), kit.use_case)  # a draft

    assert response.status_code == 404
    with pytest.raises(Exception, match="Only entries of the public register"):
        incident_report_file(
            use_case=kit.use_case,
            what_happened=TEXT,
            occurred_on=timezone.localdate(),
        )


# --- triage by oversight reviewers ------------------------------------------------


@pytest.fixture
def report(entry):
    return incident_report_file(
        use_case=entry,
        what_happened=TEXT,
        occurred_on=timezone.localdate(),
        contact_email="resident@example.org",
    )


def _signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_incident_pages_need_sign_in_and_oversight(report, member_a, reviewer):
    anonymous = Client()
    for url in ("/portal/incidents/", f"/portal/incidents/{report.pk}/"):
        response = anonymous.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")
        assert _signed_in(member_a).get(url).status_code == 403
    assert _signed_in(reviewer).get("/portal/incidents/999999/").status_code == 404


def test_reviewers_see_reports_with_contact_and_filter_by_status(
    report, reviewer, entry
):
    client = _signed_in(reviewer)

    listing = client.get("/portal/incidents/").content.decode()
    detail = client.get(f"/portal/incidents/{report.pk}/").content.decode()
    dismissed = client.get("/portal/incidents/", {"status": "dismissed"})

    assert f"IR-{report.pk}" in listing and "Answering waste questions" in listing
    assert "resident@example.org" in detail and TEXT in detail
    assert f"IR-{report.pk}" not in dismissed.content.decode()
    assert 'href="/portal/incidents/"' in listing  # the staff navigation link


def test_triage_records_the_outcome_and_an_audit_event(report, reviewer):
    client = _signed_in(reviewer)

    response = client.post(
        f"/portal/incidents/{report.pk}/",
        {"status": "triaged", "note": "Checking the opening hours data."},
    )

    assert response.status_code == 302
    report.refresh_from_db()
    assert report.status == IncidentStatus.TRIAGED
    assert report.triaged_by == reviewer
    assert report.triage_note == "Checking the opening hours data."
    event = AuditEvent.objects.get(action="incident_report.triaged")
    assert event.object_id == str(report.model_version_id)
    assert event.payload_data["to"] == "triaged"
    assert event.actor == reviewer


def test_triage_can_suspend_the_use_case_through_the_suspension_service(
    report, reviewer, entry
):
    client = _signed_in(reviewer)

    response = client.post(
        f"/portal/incidents/{report.pk}/",
        {
            "status": "actioned",
            "note": "Wrong closing days given to residents; suspended.",
            "suspend": "on",
        },
    )

    assert response.status_code == 302
    entry.refresh_from_db()
    report.refresh_from_db()
    assert entry.status == UseCaseStatus.SUSPENDED
    decision = Decision.objects.get(use_case=entry, kind="suspend")
    assert report.decision == decision
    assert report.status == IncidentStatus.ACTIONED
    assert AuditEvent.objects.filter(
        action="use_case.suspended", object_id=str(entry.pk)
    ).exists()
    triaged = AuditEvent.objects.get(action="incident_report.triaged")
    assert triaged.payload_data["suspension_decision_id"] == decision.pk
    page = Client().get(f"/register/{entry.pk}/").content.decode()
    assert "Suspended" in page and "Wrong closing days" in page
    closed = client.get(f"/portal/incidents/{report.pk}/").content.decode()
    assert "This report is closed" in closed


def test_triage_errors_are_form_errors_not_500s(report, reviewer, platform_admin):
    reviewer_client = _signed_in(reviewer)
    suspend_without_action = reviewer_client.post(
        f"/portal/incidents/{report.pk}/",
        {"status": "triaged", "note": "Looking into it now.", "suspend": "on"},
    )
    short_note = reviewer_client.post(
        f"/portal/incidents/{report.pk}/", {"status": "dismissed", "note": "no"}
    )
    by_admin = _signed_in(platform_admin).post(
        f"/portal/incidents/{report.pk}/",
        {"status": "dismissed", "note": "Not a real incident at all."},
    )

    assert suspend_without_action.status_code == 400
    assert "choose" in suspend_without_action.content.decode()
    assert short_note.status_code == 400
    assert by_admin.status_code == 400
    assert "Only oversight reviewers triage" in by_admin.content.decode()
    report.refresh_from_db()
    assert report.status == IncidentStatus.NEW


def test_incident_list_queries_do_not_grow(
    entry, reviewer, django_assert_max_num_queries
):
    def filed(count):
        for _ in range(count):
            incident_report_file(
                use_case=entry, what_happened=TEXT, occurred_on=timezone.localdate()
            )

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = _signed_in(reviewer)
    filed(2)
    with CaptureQueriesContext(connection) as small:
        client.get("/portal/incidents/")
    filed(18)
    with CaptureQueriesContext(connection) as large:
        client.get("/portal/incidents/")
    assert len(small) == len(large)


def test_another_reviewer_role_sees_the_nav_link_and_members_do_not(
    report, reviewer, member_a
):
    assert "/portal/incidents/" in _signed_in(reviewer).get("/").content.decode()
    assert "/portal/incidents/" not in _signed_in(member_a).get("/").content.decode()


def test_a_second_reviewer_membership_is_oversight_too(report, oversight_body):
    other = MembershipFactory(
        user=UserFactory(username="olga"), agency=oversight_body, role=Role.REVIEWER
    ).user
    assert _signed_in(other).get("/portal/incidents/").status_code == 200
