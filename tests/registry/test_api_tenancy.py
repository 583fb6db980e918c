"""Tenancy of the catalogue API: who sees what, and 404/401 on every endpoint.

Another agency's private object answers 404 exactly like an id never used
(SECURITY C1), lists never show it (C2), anonymous callers get 401 with the
JSON error body, oversight reviewers and platform administrators read
everything.
"""

from __future__ import annotations

import pytest
from knox.models import AuthToken

from audit.models import AuditEvent, SecurityEvent
from tests.registry.api_catalogue import (  # noqa: F401
    _fast_password_hashing,
    build_catalogue,
)

API = "/api/v1"


@pytest.fixture
def cat(agency_a, agency_b, member_a, member_b):
    return build_catalogue(agency_a, agency_b, member_a, member_b)


def ids(response) -> set:
    assert response.status_code == 200, response.content
    return {row.get("id", row.get("slug")) for row in response.json()["results"]}


# Every route of the catalogue API with a request that would succeed for the
# owner; {a_*} placeholders name agency A's private objects.
ENDPOINTS = [
    ("get", "/me/"),
    ("get", "/auth/tokens/"),
    ("post", "/auth/tokens/"),
    ("delete", "/auth/tokens/{a_token}/"),
    ("get", "/agencies/"),
    ("post", "/agencies/"),
    ("get", "/agencies/city-a/"),
    ("patch", "/agencies/city-a/"),
    ("get", "/agencies/city-a/members/"),
    ("post", "/agencies/city-a/members/"),
    ("get", "/agencies/city-a/members/alice/"),
    ("patch", "/agencies/city-a/members/alice/"),
    ("delete", "/agencies/city-a/members/alice/"),
    ("get", "/licences/"),
    ("post", "/licences/"),
    ("get", "/licences/{licence}/"),
    ("get", "/datasets/"),
    ("post", "/datasets/"),
    ("get", "/datasets/{a_dataset}/"),
    ("patch", "/datasets/{a_dataset}/"),
    ("get", "/dataset-versions/"),
    ("post", "/dataset-versions/"),
    ("get", "/dataset-versions/{a_dataset_version}/"),
    ("get", "/models/"),
    ("post", "/models/"),
    ("get", "/models/{a_model}/"),
    ("patch", "/models/{a_model}/"),
    ("get", "/model-versions/"),
    ("post", "/model-versions/"),
    ("get", "/model-versions/{a_version}/"),
    ("patch", "/model-versions/{a_version}/"),
]

# The object routes that another agency's member must not be able to reach.
OBJECT_ENDPOINTS = [
    (method, path) for method, path in ENDPOINTS if "city-a/" in path or "{a_" in path
]


def fill(path: str, cat, token_key: str = "") -> str:
    return API + path.format(
        a_token=token_key,
        licence=cat.licence.pk,
        a_dataset=cat.dataset_a.pk,
        a_dataset_version=cat.dataset_version_a.pk,
        a_model=cat.model_a.pk,
        a_version=cat.version_a.pk,
    )


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_anonymous_gets_401_with_the_error_body(anon, cat, method, path):
    response = getattr(anon, method)(
        fill(path, cat, "abcdefghijklmno"), {}, format="json"
    )
    assert response.status_code == 401
    body = response.json()
    assert body["code"] == "not_authenticated"
    assert body["message"]
    assert response.headers["WWW-Authenticate"]


@pytest.mark.parametrize(("method", "path"), OBJECT_ENDPOINTS)
def test_c1_another_agencys_member_gets_404(api_b, member_a, cat, method, path):
    _, secret = AuthToken.objects.create(member_a)
    url = fill(path, cat, secret[:15])
    response = getattr(api_b, method)(
        url, {"name": "x", "role": "member"}, format="json"
    )
    assert response.status_code == 404, response.content
    assert response.json()["code"] == "not_found"


@pytest.mark.parametrize(("method", "path"), OBJECT_ENDPOINTS)
def test_c1_404_for_hidden_objects_matches_404_for_missing_ones(
    api_b, cat, method, path
):
    """No existence oracle: a hidden object and a never-used id look the same."""
    hidden = getattr(api_b, method)(fill(path, cat, "x" * 15), {}, format="json")
    missing_path = path.replace("city-a", "no-such-agency").replace("alice", "nobody")
    missing = API + missing_path.format(
        a_token="y" * 15,
        a_dataset=999999,
        a_dataset_version=999999,
        a_model=999999,
        a_version=999999,
    )
    missing = getattr(api_b, method)(missing, {}, format="json")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json() == missing.json()


def test_c1_hidden_object_lookup_is_audited_as_authz_denied(api_b, member_b, cat):
    chain = AuditEvent.objects.count()
    api_b.get(f"{API}/models/{cat.model_a.pk}/")
    api_b.get(f"{API}/models/999999/")
    # A security event, kept off the hash chain (docs/audit.md).
    (event,) = SecurityEvent.objects.filter(action="authz.denied")
    assert AuditEvent.objects.count() == chain
    assert event.object_type == "registry.aimodel"
    assert event.object_id == str(cat.model_a.pk)
    assert event.agency_slug == "city-a"
    assert event.actor_id == member_b.pk


@pytest.mark.parametrize("method", ["put", "delete"])
@pytest.mark.parametrize(
    "path",
    [
        "/datasets/{a_dataset}/",
        "/dataset-versions/{a_dataset_version}/",
        "/models/{a_model}/",
        "/model-versions/{a_version}/",
        "/licences/{licence}/",
        "/agencies/city-a/",
    ],
)
def test_catalogue_records_are_never_deleted_or_replaced(
    api_a, api_b, cat, method, path
):
    for client in (api_a, api_b):
        response = getattr(client, method)(fill(path, cat), {}, format="json")
        assert response.status_code == 405
        assert response.json()["code"] == "method_not_allowed"


def test_dataset_versions_have_no_patch(api_a, cat):
    response = api_a.patch(
        f"{API}/dataset-versions/{cat.dataset_version_a.pk}/",
        {"motivation": "rewritten"},
        format="json",
    )
    assert response.status_code == 405


LISTS = {
    "datasets": ("dataset_a", "dataset_b", "public_dataset_b"),
    "dataset-versions": (
        "dataset_version_a",
        "dataset_version_b",
        "public_dataset_version_b",
    ),
    "models": ("model_a", "model_b", "public_model_b"),
    "model-versions": ("version_a", "version_b", "public_version_b"),
}


@pytest.mark.parametrize("resource", LISTS)
def test_member_sees_own_and_public_only(api_a, cat, resource):
    own, hidden, public = (getattr(cat, name).pk for name in LISTS[resource])
    seen = ids(api_a.get(f"{API}/{resource}/"))
    assert seen == {own, public}
    assert hidden not in seen


@pytest.mark.parametrize("resource", LISTS)
@pytest.mark.parametrize("client", ["api_reviewer", "api_admin"])
def test_oversight_sees_everything(request, cat, resource, client):
    api = request.getfixturevalue(client)
    seen = ids(api.get(f"{API}/{resource}/"))
    assert seen == {getattr(cat, name).pk for name in LISTS[resource]}
    hidden = getattr(cat, LISTS[resource][1]).pk
    assert api.get(f"{API}/{resource}/{hidden}/").status_code == 200


@pytest.mark.parametrize("resource", LISTS)
def test_filters_and_search_with_the_other_agencys_ids_find_nothing(
    api_a, cat, resource
):
    """C2: a filter naming B's agency or private ids yields only public rows."""
    public = getattr(cat, LISTS[resource][2]).pk
    assert ids(api_a.get(f"{API}/{resource}/", {"agency": "region-b"})) == {public}
    assert ids(api_a.get(f"{API}/{resource}/", {"search": "beta"})) <= {public}


def test_model_version_filter_by_hidden_dataset_version_finds_nothing(api_a, cat):
    response = api_a.get(
        f"{API}/model-versions/", {"dataset_version": cat.dataset_version_b.pk}
    )
    assert ids(response) == set()


def test_agencies_member_sees_own_oversight_sees_all(
    api_a, api_reviewer, agency_a, agency_b, oversight_body
):
    assert ids(api_a.get(f"{API}/agencies/")) == {"city-a"}
    assert ids(api_reviewer.get(f"{API}/agencies/")) == {
        "city-a",
        "region-b",
        "oversight",
    }
    assert api_reviewer.get(f"{API}/agencies/city-a/members/").status_code == 200


def test_licences_are_shared_reference_data(api_a, api_b, cat):
    for client in (api_a, api_b):
        assert ids(client.get(f"{API}/licences/")) == {cat.licence.pk}


def test_public_version_hides_its_private_base_and_datasets(
    api_a, api_b, cat, member_b
):
    from registry import services

    derived = services.model_version_create(
        actor=member_b,
        model=cat.public_model_b,
        version="2.0.0",
        licence=cat.licence,
        base_version=cat.version_b,
        derivation="fine-tuned",
        datasets=[
            (cat.dataset_version_b, "training"),
            (cat.public_dataset_version_b, "evaluation"),
        ],
    )
    seen_by_a = api_a.get(f"{API}/model-versions/{derived.pk}/").json()
    assert seen_by_a["base_version"] is None
    assert [d["dataset_version"] for d in seen_by_a["datasets"]] == [
        cat.public_dataset_version_b.pk
    ]
    seen_by_b = api_b.get(f"{API}/model-versions/{derived.pk}/").json()
    assert seen_by_b["base_version"]["id"] == cat.version_b.pk
    assert len(seen_by_b["datasets"]) == 2
