"""The public transparency register: list, search and filters, entry, JSON, CSV."""

from __future__ import annotations

import csv
import io

import pytest
from django.core.cache import cache
from django.test import Client

from audit import services as audit
from audit.models import AuditCheckpoint, AuditEvent
from governance.models import UseCaseStatus
from governance.register import CSV_COLUMNS
from governance.services import decisions as decision_services
from registry.models import DatasetRole, ModelVersionDataset, PersonalData, Visibility
from tests.factories import DatasetVersionFactory, ModelVersionFactory
from tests.governance.conftest import RATIONALE

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def public():
    return Client()


def _csv(response) -> list[dict]:
    text = b"".join(response.streaming_content).decode("utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def test_home_is_the_register_and_lists_only_entries_in_or_out_of_service(
    kit, publish, public
):
    entry = publish(title="Answering parking questions")

    response = public.get("/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "Public register of AI use" in page
    assert "Answering parking questions" in page
    assert "City A" in page
    assert "Minimal risk" in page
    assert entry.model_version.model.name in page
    assert "small@1.0.0" in page and "multiple_choice.acc 0.9" in page
    assert "Approval" in page
    # The kit's own use case is still a draft: never listed.
    assert kit.use_case.title not in page
    assert public.get(f"/register/{kit.use_case.pk}/").status_code == 404


def test_suspended_and_retired_stay_listed_rejected_never(kit, publish, public):
    suspended = publish(title="Suspended entry")
    retired = publish(title="Retired entry")
    reviewer = kit.reviewers[0]
    decision_services.use_case_suspend(
        actor=reviewer, use_case=suspended, rationale="Reports of wrong answers."
    )
    decision_services.use_case_retire(
        actor=reviewer, use_case=retired, rationale="The service was closed down."
    )
    kit.in_review()
    decision_services.use_case_reject(
        actor=reviewer, use_case=kit.use_case, rationale="Not proportionate at all."
    )

    page = public.get("/").content.decode()
    assert "Suspended entry" in page and "Retired entry" in page
    assert kit.use_case.title not in page
    only = public.get("/", {"status": "suspended"}).content.decode()
    assert "Suspended entry" in only and "Retired entry" not in only
    assert "Suspension" in only
    api = public.get("/api/v1/register/", {"status": "retired"}).json()["results"]
    assert [r["title"] for r in api] == ["Retired entry"]
    assert api[0]["decision"]["kind"] == "retire"
    assert api[0]["decision"]["rationale"] == "The service was closed down."


def test_search_and_filters_narrow_every_rendering_alike(kit, publish, public):
    publish(title="Parking permits assistant")
    publish(title="Waste collection helper", tier="high")
    personal = ModelVersionFactory(
        model=kit.use_case.model_version.model,
        artifact_state="available",
        artifact_digest="b" * 64,
        kind=kit.use_case.model_version.kind,
        released_at=kit.use_case.model_version.released_at,
    )
    ModelVersionDataset.objects.create(
        model_version=personal,
        dataset_version=DatasetVersionFactory(
            dataset__agency=kit.use_case.agency,
            dataset__visibility=Visibility.PUBLIC,
            dataset__name="Letters from residents",
            personal_data=PersonalData.PSEUDONYMISED,
            legal_basis="Public task.",
        ),
        role=DatasetRole.FINE_TUNING,
    )
    publish(title="Letters triage", version=personal)

    cases = {
        (("q", "parking permits"),): {"Parking permits assistant"},
        (("risk_tier", "high"),): {"Waste collection helper"},
        (("personal_data", "yes"),): {"Letters triage"},
        (("personal_data", "no"), ("agency", "city-a")): {
            "Parking permits assistant",
            "Waste collection helper",
        },
        (("agency", "region-b"),): set(),
    }
    for params, expected in cases.items():
        query = dict(params)
        page = public.get("/", query).content.decode()
        for title in (
            "Parking permits assistant",
            "Waste collection helper",
            "Letters triage",
        ):
            assert (title in page) == (title in expected), (query, title)
        api = public.get("/api/v1/register/", query).json()["results"]
        assert {r["title"] for r in api} == expected, query
        rows = _csv(public.get("/register.csv", query))
        assert {r["title"] for r in rows} == expected, query


def test_an_unknown_filter_value_is_refused_not_ignored(publish, public):
    publish()

    page = public.get("/", {"risk_tier": "catastrophic"})
    api = public.get("/api/v1/register/", {"personal_data": "maybe"})
    download = public.get("/register.csv", {"status": "draft"})

    assert page.status_code == 200
    assert "There is a problem" in page.content.decode()
    assert api.status_code == 400
    assert api.json()["code"] == "validation_error"
    assert "personal_data" in api.json()["fields"]
    assert download.status_code == 400


def test_entry_page_shows_the_evidence_and_the_covering_checkpoint(
    kit, publish, public
):
    audit.checkpoint_create()  # covers everything before the approval
    entry = publish(title="Drafting council tax letters")
    event = AuditEvent.objects.filter(
        action="use_case.approved", object_id=str(entry.pk)
    ).get()
    assert not AuditCheckpoint.objects.filter(seq__gte=event.seq).exists()

    before = public.get(f"/register/{entry.pk}/").content.decode()
    assert "Not yet covered" in before

    audit.checkpoint_create()
    covering = AuditCheckpoint.objects.filter(seq__gte=event.seq).order_by("seq")[0]
    page = public.get(f"/register/{entry.pk}/").content.decode()
    assert "Drafting council tax letters" in page
    assert entry.purpose in page
    assert entry.model_version.artifact_digest in page
    assert RATIONALE in page
    assert covering.head_hash in page
    assert f"Event {event.seq} of the audit chain" in page
    record = public.get("/api/v1/register/").json()["results"][0]
    assert record["decision"]["audit_event_seq"] == event.seq
    assert record["checkpoint"]["seq"] == covering.seq
    assert record["checkpoint"]["head_hash"] == covering.head_hash


def test_json_and_csv_are_two_renderings_of_the_same_records(kit, publish, public):
    for number in range(3):
        publish(title=f"Entry {number}")
    audit.checkpoint_create()

    api = public.get("/api/v1/register/").json()["results"]
    rows = _csv(public.get("/register.csv"))

    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [int(r["id"]) for r in rows] == [r["id"] for r in api]
    for record, row in zip(api, rows, strict=True):
        assert row["title"] == record["title"]
        assert row["agency"] == record["agency"]["slug"]
        assert row["model_version"] == record["model"]["version"]
        assert row["artifact_sha256"] == record["model"]["artifact_sha256"]
        assert row["risk_tier"] == record["risk_tier"] == "minimal"
        assert row["decision"] == record["decision"]["kind"] == "approve"
        assert int(row["checkpoint_seq"]) == record["checkpoint"]["seq"]
        assert "small@1.0.0: multiple_choice.acc=0.9" in row["evaluations"]
        assert record["evaluations"][0]["metrics"] == [
            {"task": "multiple_choice", "name": "acc", "value": 0.9}
        ]


def test_csv_defuses_spreadsheet_formulas(kit, publish, public):
    publish(title='=HYPERLINK("http://evil")')

    rows = _csv(public.get("/register.csv"))

    assert rows[0]["title"].startswith("'=")


def test_a_private_dataset_of_an_approved_version_is_never_named(kit, publish, public):
    ModelVersionDataset.objects.create(
        model_version=kit.use_case.model_version,
        dataset_version=DatasetVersionFactory(
            dataset__agency=kit.use_case.agency,
            dataset__name="Hidden complaints archive",
            dataset__slug="hidden-complaints",
            personal_data=PersonalData.PERSONAL,
            legal_basis="Public task.",
        ),
        role=DatasetRole.TRAINING,
    )
    entry = publish()

    page = public.get(f"/register/{entry.pk}/").content.decode()
    record = public.get("/api/v1/register/").json()["results"][0]

    assert "Hidden complaints archive" not in page
    assert "A dataset its agency has not published" in page
    assert "Personal data" in page
    assert record["datasets"] == [
        {
            "name": None,
            "version": None,
            "role": "training",
            "licence": "Apache-2.0",
            "personal_data": "personal",
            "is_public": False,
        }
    ]
    assert record["uses_personal_data"] is True


def _approved_count(count, publish):
    for _ in range(count):
        publish()


@pytest.mark.parametrize(
    "url",
    ["/", "/?q=entry&risk_tier=minimal", "/api/v1/register/", "/register.csv"],
)
def test_register_pages_issue_a_constant_number_of_queries(
    url, kit, publish, public, django_assert_max_num_queries
):
    def measure() -> int:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as queries:
            response = public.get(url)
            if hasattr(response, "streaming_content"):
                b"".join(response.streaming_content)
        assert response.status_code == 200
        return len(queries)

    _approved_count(2, publish)
    audit.checkpoint_create()
    small = measure()
    _approved_count(18, publish)
    audit.checkpoint_create()
    large = measure()

    assert large == small, (url, small, large)
    with django_assert_max_num_queries(12):
        b"".join(getattr(public.get(url), "streaming_content", [b""]))


def test_entry_page_queries_do_not_grow_with_the_catalogue(
    kit, publish, public, django_assert_max_num_queries
):
    entry = publish()
    _approved_count(5, publish)

    with django_assert_max_num_queries(12):
        assert public.get(f"/register/{entry.pk}/").status_code == 200


def test_home_keeps_the_name_home_and_the_sign_in_link(publish, public):
    from django.urls import reverse

    assert reverse("home") == "/"
    page = public.get("/").content.decode()
    assert 'href="/accounts/login/"' in page
    assert UseCaseStatus.APPROVED  # the register's statuses are the lifecycle's
