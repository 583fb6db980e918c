"""Agencies and their people through the API: who may register, edit and grant."""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from registry.models import Agency, Membership, Role
from tests.factories import UserFactory
from tests.registry.api_catalogue import _fast_password_hashing  # noqa: F401

API = "/api/v1"


def test_platform_admin_registers_an_agency(api_admin, api_maintainer_a):
    body = {"name": "Port Authority", "slug": "port", "jurisdiction": "NL"}
    refused = api_maintainer_a.post(f"{API}/agencies/", body, format="json")
    assert refused.status_code == 403
    assert refused.json()["code"] == "permission_denied"
    created = api_admin.post(f"{API}/agencies/", body, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["slug"] == "port"
    again = api_admin.post(f"{API}/agencies/", body, format="json")
    assert again.status_code == 409
    assert again.json()["fields"]["name"][0]["code"] == "unique"


def test_agency_jurisdiction_is_validated(api_admin):
    response = api_admin.post(
        f"{API}/agencies/",
        {"name": "X", "slug": "x", "jurisdiction": "France"},
        format="json",
    )
    assert response.status_code == 400
    assert (
        response.json()["fields"]["jurisdiction"][0]["code"] == "invalid_jurisdiction"
    )


def test_maintainer_edits_own_agency_not_its_slug_or_oversight_flag(
    api_maintainer_a, api_a, agency_a
):
    url = f"{API}/agencies/city-a/"
    assert api_a.patch(url, {"description": "x"}, format="json").status_code == 403
    response = api_maintainer_a.patch(
        url,
        {
            "description": "Smart city office",
            "slug": "hijack",
            "is_oversight_body": True,
        },
        format="json",
    )
    assert response.status_code == 200
    agency_a.refresh_from_db()
    assert agency_a.description == "Smart city office"
    assert (agency_a.slug, agency_a.is_oversight_body) == ("city-a", False)


def test_members_list_and_detail(api_a, member_a, maintainer_a):
    rows = api_a.get(f"{API}/agencies/city-a/members/").json()["results"]
    assert {row["username"] for row in rows} == {"alice", "mara"}
    detail = api_a.get(f"{API}/agencies/city-a/members/mara/").json()
    assert (detail["role"], detail["agency"]) == ("maintainer", "city-a")
    missing = api_a.get(f"{API}/agencies/city-a/members/nobody/")
    assert missing.status_code == 404


def test_maintainer_adds_a_member(api_maintainer_a, agency_a):
    UserFactory(username="j.martin")
    response = api_maintainer_a.post(
        f"{API}/agencies/city-a/members/",
        {"username": "j.martin", "role": "member"},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert Membership.objects.get(user__username="j.martin").agency == agency_a


def test_adding_an_unknown_person_is_a_field_error(api_maintainer_a, agency_a):
    response = api_maintainer_a.post(
        f"{API}/agencies/city-a/members/", {"username": "ghost"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["fields"]["username"][0]["code"] == "does_not_exist"


def test_maintainer_cannot_grant_reviewer(api_maintainer_a, member_a):
    response = api_maintainer_a.patch(
        f"{API}/agencies/city-a/members/alice/", {"role": "reviewer"}, format="json"
    )
    assert response.status_code == 403
    assert Membership.objects.get(user=member_a).role == Role.MEMBER


def test_role_change_through_the_api_is_audited(api_maintainer_a, member_a):
    response = api_maintainer_a.patch(
        f"{API}/agencies/city-a/members/alice/", {"role": "maintainer"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["role"] == "maintainer"
    event = AuditEvent.objects.get(action="membership.role_changed")
    assert event.payload_data == {"user": "alice", "from": "member", "to": "maintainer"}


@pytest.mark.parametrize("method", ["patch", "delete"])
def test_nobody_changes_their_own_role(api_maintainer_a, maintainer_a, method):
    response = getattr(api_maintainer_a, method)(
        f"{API}/agencies/city-a/members/mara/", {"role": "member"}, format="json"
    )
    assert response.status_code == 403
    assert Membership.objects.get(user=maintainer_a).role == Role.MAINTAINER


def test_maintainer_removes_a_member(api_maintainer_a, member_a):
    response = api_maintainer_a.delete(f"{API}/agencies/city-a/members/alice/")
    assert response.status_code == 204
    assert not Membership.objects.filter(user=member_a).exists()


def test_platform_admin_grants_reviewer_in_an_oversight_body(api_admin, oversight_body):
    UserFactory(username="new-reviewer")
    response = api_admin.post(
        f"{API}/agencies/oversight/members/",
        {"username": "new-reviewer", "role": "reviewer"},
        format="json",
    )
    assert response.status_code == 201
    assert Agency.objects.get(slug="oversight").memberships.count() == 1
