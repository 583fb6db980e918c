"""Nothing private leaks through the public register (issue 11).

Agency B keeps a private model, version, dataset and use case (submitted,
never approved); agency A has an approved entry whose version also names a
private dataset. Every public page and endpoint is walked, as the public,
with every search and filter, and none of B's identifying strings (names,
slugs, purposes, digests), nor the private dataset's, may appear.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from governance.portal.forms.incidents import issue_stamp
from governance.services import lifecycle
from governance.services import use_cases as use_case_services
from registry.models import (
    ArtifactState,
    DatasetRole,
    ModelKind,
    ModelVersionDataset,
    PersonalData,
)
from tests.factories import DatasetVersionFactory, ModelVersionFactory
from tests.governance.conftest import TIER_ANSWERS

pytestmark = pytest.mark.django_db

SECRET_DIGEST = "5ec7e7" * 10 + "abcd"
SECRET_DATA_DIGEST = "da7a5ec7" * 8
SECRETS = {
    "model name": "Zephyr Covert Scorer",
    "model slug": "zephyr-covert-scorer",
    "model description": "Scores applicants for covert review",
    "version": "7.7.7-zephyr",
    "artifact digest": SECRET_DIGEST,
    "dataset name": "Zephyr Benefit Claimants",
    "dataset slug": "zephyr-claimants",
    "dataset digest": SECRET_DATA_DIGEST,
    "use case title": "Zephyr fraud triage",
    "use case purpose": "Rank benefit claimants for Zephyr fraud checks",
    "public service": "Zephyr benefits office",
    "private dataset of A": "Arden Sealed Complaints",
    "private dataset slug of A": "arden-sealed-complaints",
}


@pytest.fixture
def private_b(agency_b, member_b, aia_questionnaire, fast_passwords):
    """Agency B's private model, version, dataset and submitted use case."""
    from registry.models import Role
    from tests.factories import MembershipFactory, UserFactory

    version = ModelVersionFactory(
        model__agency=agency_b,
        model__name=SECRETS["model name"],
        model__slug=SECRETS["model slug"],
        model__description=SECRETS["model description"],
        version=SECRETS["version"],
        artifact_state=ArtifactState.AVAILABLE,
        artifact_digest=SECRET_DIGEST,
        kind=ModelKind.CAUSAL_LM_KV,
        released_at=timezone.now(),
    )
    ModelVersionDataset.objects.create(
        model_version=version,
        dataset_version=DatasetVersionFactory(
            dataset__agency=agency_b,
            dataset__name=SECRETS["dataset name"],
            dataset__slug=SECRETS["dataset slug"],
            digest=SECRET_DATA_DIGEST,
            personal_data=PersonalData.PERSONAL,
            legal_basis="Public task.",
        ),
        role=DatasetRole.TRAINING,
    )
    use_case = use_case_services.use_case_create(
        actor=member_b,
        model_version=version,
        title=SECRETS["use case title"],
        purpose=SECRETS["use case purpose"],
        public_service=SECRETS["public service"],
        valid_until=timezone.localdate() + timedelta(days=200),
    )
    use_case_services.use_case_assess(
        actor=member_b, use_case=use_case, answers=TIER_ANSWERS["minimal"]
    )
    submitter = MembershipFactory(
        user=UserFactory(username="bea"), agency=agency_b, role=Role.MAINTAINER
    ).user
    lifecycle.use_case_submit(actor=submitter, use_case=use_case)
    return use_case


@pytest.fixture
def approved_a(kit, publish):
    ModelVersionDataset.objects.create(
        model_version=kit.use_case.model_version,
        dataset_version=DatasetVersionFactory(
            dataset__agency=kit.use_case.agency,
            dataset__name=SECRETS["private dataset of A"],
            dataset__slug=SECRETS["private dataset slug of A"],
        ),
        role=DatasetRole.EVALUATION,
    )
    return publish(title="Answering library questions")


def _public_urls(entry, secret) -> list[tuple[str, dict]]:
    queries = [
        {},
        {"q": "Zephyr"},
        {"q": "covert"},
        {"q": SECRET_DIGEST[:12]},
        {"q": "Arden Sealed"},
        {"agency": "region-b"},
        {"agency": "city-a"},
        {"risk_tier": "minimal"},
        {"status": "approved"},
        {"personal_data": "yes"},
        {"personal_data": "no"},
        {"page": "2"},
    ]
    urls = []
    for base in ("/", "/api/v1/register/", "/register.csv"):
        urls += [(base, query) for query in queries]
    urls += [
        (f"/register/{entry.pk}/", {}),
        (f"/register/{secret.pk}/", {}),
        (f"/register/{secret.pk}/report/", {}),
        ("/api/v1/audit/public-key/", {}),
    ]
    return urls


def _body(response) -> str:
    if hasattr(response, "streaming_content"):
        return b"".join(response.streaming_content).decode()
    return response.content.decode()


def test_no_public_page_or_endpoint_names_private_objects(
    private_b, approved_a, settings
):
    settings.CIVITAS_INCIDENT_FORM_MIN_SECONDS = 0
    cache.clear()
    client = Client()
    seen = []
    for url, query in _public_urls(approved_a, private_b):
        response = client.get(url, query)
        seen.append((url, query, response.status_code))
        body = _body(response)
        if (url, query) in (("/", {}), ("/api/v1/register/", {})):
            assert "Answering library questions" in body
        for what, secret in SECRETS.items():
            assert secret.lower() not in body.lower(), (url, query, what)
    # The walk really reached the pages: the approved entry is listed.
    assert ("/", {}, 200) in seen
    assert (f"/register/{private_b.pk}/", {}, 404) in seen
    # The incident form: its answers, right and wrong, leak nothing either.
    for data in (
        {"what_happened": "short", "occurred_on": "x"},
        {
            "what_happened": "The assistant gave the wrong library hours.",
            "occurred_on": timezone.localdate().isoformat(),
            "issued": issue_stamp(approved_a.pk),
        },
    ):
        response = client.post(f"/register/{approved_a.pk}/report/", data, follow=True)
        body = _body(response)
        for what, secret in SECRETS.items():
            assert secret.lower() not in body.lower(), ("report form", what)
    forged = client.post(
        f"/register/{private_b.pk}/report/",
        {
            "what_happened": "Trying to report on a private use case.",
            "occurred_on": timezone.localdate().isoformat(),
            "issued": issue_stamp(private_b.pk),
        },
    )
    assert forged.status_code == 404
    cache.clear()
