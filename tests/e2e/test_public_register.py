"""The public register in a browser: find an entry, download its records, report
an incident; then a reviewer triages the report and suspends the use case."""

from __future__ import annotations

import csv
import io
import time

import pytest

from governance.models import IncidentReport, UseCaseStatus
from tests.e2e.conftest import (
    accessible_in_both_languages,
    sign_in,
)
from tests.governance.conftest import *  # noqa: F403  (the lifecycle kit)
from tests.governance.portal.conftest import publish  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FACTORY_PASSWORD = "correct-Horse-battery-9"  # tests.factories.UserFactory's


def test_public_finds_an_entry_reports_and_a_reviewer_suspends(
    page,
    shot,
    kit,
    publish,  # noqa: F811
    settings,
):
    settings.CIVITAS_INCIDENT_FORM_MIN_SECONDS = 1
    publish(title="Answering parking questions")
    entry = publish(title="Drafting council tax letters")
    publish(title="Waste collection helper", tier="high")

    # The public: the register is the home page.
    page.goto("/")
    assert page.get_by_role("heading", level=1).inner_text() == (
        "Public register of AI use"
    )
    accessible_in_both_languages(page, shot, "register")

    # Search and filter.
    page.get_by_label("Search", exact=True).fill("council tax")
    page.get_by_label("Risk tier").select_option("minimal")
    page.get_by_role("button", name="Search").click()
    page.wait_for_load_state()
    titles = page.locator("article.register-entry h2 a").all_inner_texts()
    assert titles == ["Drafting council tax letters"]
    shot(page, "register-search")

    # The CSV download of the same search.
    with page.expect_download() as download:
        page.get_by_role("link", name="Download these entries as CSV").click()
    with open(download.value.path(), encoding="utf-8") as downloaded:
        rows = list(csv.DictReader(io.StringIO(downloaded.read())))
    assert [r["title"] for r in rows] == ["Drafting council tax letters"]
    assert rows[0]["decision"] == "approve"

    # The JSON of the same search.
    answer = page.request.get(
        "/api/v1/register/?q=council+tax&risk_tier=minimal",
        headers={"Accept": "application/json"},
    )
    assert answer.ok
    [record] = answer.json()["results"]
    assert record["id"] == entry.pk and record["status"] == "approved"
    page.goto("/api/v1/register/?q=council+tax")
    shot(page, "register-json")

    # The entry page.
    page.goto("/?q=council+tax")
    page.get_by_role("link", name="Drafting council tax letters").click()
    page.wait_for_load_state()
    assert (
        page.get_by_role("heading", level=1)
        .inner_text()
        .startswith("Drafting council tax letters")
    )
    accessible_in_both_languages(page, shot, "entry")

    # An incident report, as a member of the public.
    page.get_by_label("What happened").fill(
        "The drafted letter said my council tax band was D; it is B."
    )
    page.get_by_label("When it happened").fill("2026-11-30")
    page.get_by_label("Your e-mail address (optional)").fill("resident@example.org")
    time.sleep(1.2)  # a person takes a moment; the form refuses instant posts
    page.get_by_role("button", name="Send the report").click()
    page.wait_for_load_state()
    report = IncidentReport.objects.get()
    assert f"IR-{report.pk}" in page.locator(".messages").inner_text()
    assert "resident@example.org" not in page.content()
    shot(page, "report-sent")

    # A reviewer of the oversight body triages it and suspends the use case.
    sign_in(page, "rita", FACTORY_PASSWORD)
    page.get_by_role("link", name="Incident reports").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", level=1).inner_text() == "Incident reports"
    accessible_in_both_languages(page, shot, "incidents")
    page.get_by_role("link", name=f"IR-{report.pk}").click()
    page.wait_for_load_state()
    assert "resident@example.org" in page.content()
    accessible_in_both_languages(page, shot, "incident")
    page.get_by_label("Actioned: measures taken").check()
    page.get_by_label("Triage note").fill(
        "Wrong council tax bands in drafts; suspended until the data is fixed."
    )
    page.get_by_label("Suspend this use case").check()
    shot(page, "triage-form")
    page.get_by_role("button", name="Record the triage").click()
    page.wait_for_load_state()
    assert "This report is closed" in page.content()
    shot(page, "triaged")
    entry.refresh_from_db()
    assert entry.status == UseCaseStatus.SUSPENDED

    # The register entry now says so.
    page.goto(f"/register/{entry.pk}/")
    heading = page.get_by_role("heading", level=1).inner_text()
    assert "Suspended" in heading
    assert "Wrong council tax bands" in page.content()
    shot(page, "entry-suspended")
