"""User names appear only to the owning agency's members and to oversight
(issue 9 item 6; SECURITY C2: another agency's data does not leak through a
public object)."""

from __future__ import annotations

import pytest

from governance.models import EvaluationRun, EvaluationSuite, Policy
from registry.models import Visibility
from tests.factories import (
    AIModelFactory,
    DatasetFactory,
    DatasetVersionFactory,
    LicenceFactory,
    ModelVersionFactory,
    UserFactory,
)
from tests.registry.conftest import token_client

API = "/api/v1"


@pytest.fixture
def public_objects(member_a, agency_a):
    dataset = DatasetFactory(
        agency=agency_a, created_by=member_a, visibility=Visibility.PUBLIC
    )
    dataset_version = DatasetVersionFactory(dataset=dataset, created_by=member_a)
    model = AIModelFactory(
        agency=agency_a, created_by=member_a, visibility=Visibility.PUBLIC
    )
    version = ModelVersionFactory(model=model, created_by=member_a)
    suite = EvaluationSuite.objects.create(
        name="names", version="1.0.0", licence=LicenceFactory(), tasks=[]
    )
    run = EvaluationRun.objects.create(
        model_version=version, suite=suite, requested_by=member_a, artifact_digest="0"
    )
    return {
        "models": (model.pk, "created_by"),
        "model-versions": (version.pk, "created_by"),
        "datasets": (dataset.pk, "created_by"),
        "dataset-versions": (dataset_version.pk, "created_by"),
        "evaluations": (run.pk, "requested_by"),
    }


def _names(client, objects) -> dict[str, set]:
    seen = {}
    for route, (pk, field) in objects.items():
        detail = client.get(f"{API}/{route}/{pk}/")
        assert detail.status_code == 200, (route, detail.content)
        rows = client.get(f"{API}/{route}/").json()["results"]
        listed = [row[field] for row in rows if row["id"] == pk]
        assert len(listed) == 1, route
        seen[route] = {detail.json()[field], *listed}
    return seen


def test_c2_public_objects_name_their_creator_to_no_other_agency(
    public_objects, api_b
):
    assert all(names == {None} for names in _names(api_b, public_objects).values())


def test_c2_public_objects_name_no_one_to_a_caller_of_no_agency(public_objects):
    outsider = token_client(UserFactory(username="outsider"))
    assert all(names == {None} for names in _names(outsider, public_objects).values())


def test_c2_the_agency_and_oversight_see_the_names(
    public_objects, api_a, api_reviewer
):
    for client in (api_a, api_reviewer):
        assert all(
            names == {"alice"} for names in _names(client, public_objects).values()
        )


def test_c2_a_platform_policy_names_its_author_to_oversight_only(
    reviewer, api_a, api_reviewer
):
    policy = Policy.objects.create(
        name="names", version=1, title="Names", scope="platform", rules=[],
        created_by=reviewer,
    )
    assert api_a.get(f"{API}/policies/{policy.pk}/").json()["created_by"] is None
    seen = api_reviewer.get(f"{API}/policies/{policy.pk}/").json()["created_by"]
    assert seen == "rita"


def test_c2_the_creator_reads_their_name_in_the_answer_to_their_write(api_a):
    response = api_a.post(
        f"{API}/models/",
        {"name": "Mine", "slug": "mine", "task": "text-generation",
         "intended_use": "Drafting replies.", "visibility": "public"},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["created_by"] == "alice"
