"""Inviting people (defect 16) and the audit of account changes (defect 5)."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from audit.models import AuditEvent
from registry.models import Membership, Role
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "Lantern-orchard-57-quiet"


def _link(output: str) -> str:
    return re.search(r"http://testserver(/accounts/reset/\S+)", output).group(1)


def _invite(by, *args: str) -> str:
    out = StringIO()
    call_command("invite", *args, "--by", by.username, "--url", "http://testserver/",
                 stdout=out)
    return out.getvalue()


def _events(action: str):
    return AuditEvent.objects.filter(action=action).order_by("seq")


def _set_password(client: Client, link: str, password: str = NEW_PASSWORD):
    """Open the link as the person would, then submit the set-password form."""
    opened = client.get(link)
    assert opened.status_code == 302  # Django moves the token into the session
    return client.post(
        opened["Location"], {"new_password1": password, "new_password2": password}
    )


def test_invite_creates_the_person_and_a_link_that_sets_the_password_once(
    platform_admin, agency_a
):
    output = _invite(
        platform_admin, "nina", "--agency", agency_a.slug, "--role", "maintainer",
        "--email", "nina@city-a.example.gov", "--first-name", "Nina",
    )

    nina = get_user_model().objects.get(username="nina")
    assert not nina.has_usable_password()
    assert (nina.membership.agency, nina.membership.role) == (agency_a, Role.MAINTAINER)
    link = _link(output)

    done = _set_password(Client(), link)
    assert done.status_code == 302
    assert done["Location"] == "/accounts/reset/done/"
    nina.refresh_from_db()
    assert nina.check_password(NEW_PASSWORD)
    # The link worked once: the token was made from the old password hash.
    again = Client().get(link, follow=True)
    assert again.context["validlink"] is False

    [invited] = _events("account.invited")
    assert invited.actor == platform_admin
    assert invited.payload_data == {"user": "nina", "role": "maintainer"}
    assert _events("membership.added").filter(object_id=str(nina.membership.pk))
    [password_set] = _events("account.password_set")
    assert password_set.actor == nina
    assert password_set.payload_data == {
        "user": "nina",
        "usable": True,
        "via": "link",
    }
    assert password_set.agency_id == agency_a.pk


def test_maintainers_invite_only_to_their_own_agency_and_agency_roles(
    maintainer_a, agency_a, agency_b
):
    _invite(maintainer_a, "otto", "--agency", agency_a.slug)
    assert Membership.objects.get(user__username="otto").role == Role.MEMBER

    with pytest.raises(CommandError, match="maintainers or a platform administrator"):
        _invite(maintainer_a, "pia", "--agency", agency_b.slug)
    with pytest.raises(CommandError, match="Only platform administrators grant"):
        _invite(maintainer_a, "quinn", "--agency", agency_a.slug, "--role", "admin")
    # A refused invitation leaves no account behind.
    assert not get_user_model().objects.filter(username__in=["pia", "quinn"]).exists()
    with pytest.raises(CommandError, match="taken"):
        _invite(maintainer_a, "otto", "--agency", agency_a.slug)


def test_a_new_link_is_only_for_people_without_a_password(
    platform_admin, maintainer_a, member_a, agency_a
):
    _invite(platform_admin, "rosa", "--agency", agency_a.slug)

    link = _link(_invite(maintainer_a, "rosa", "--new-link"))
    assert _events("account.password_link_issued").get().actor == maintainer_a
    assert _set_password(Client(), link).status_code == 302

    # Rosa and Alice now have passwords: no administrator may take them over.
    for person in ("rosa", member_a.username):
        with pytest.raises(CommandError, match="change it themselves"):
            _invite(platform_admin, person, "--new-link")


def test_admin_action_invites_a_person_and_shows_the_link(
    client, platform_admin, agency_a
):
    client.force_login(platform_admin)
    changelist = "/admin/registry/agency/"
    chosen = {"action": "invite_person", "_selected_action": [agency_a.pk]}

    form = client.post(changelist, chosen)
    assert form.status_code == 200
    assert b'name="username"' in form.content

    done = client.post(
        changelist,
        {**chosen, "apply": "1", "username": "sven", "email": "", "role": "member"},
        follow=True,
    )
    messages = [str(m) for m in done.context["messages"]]
    assert any("/accounts/reset/" in m and "sven" in m for m in messages)
    sven = get_user_model().objects.get(username="sven")
    assert sven.membership.agency == agency_a
    assert _events("account.invited").get().actor == platform_admin


def test_admin_action_issues_a_link_for_demo_people_without_a_password(
    client, platform_admin, agency_a
):
    _invite(platform_admin, "tara", "--agency", agency_a.slug)
    client.force_login(platform_admin)
    membership = Membership.objects.get(user__username="tara")

    done = client.post(
        "/admin/registry/membership/",
        {"action": "issue_password_link", "_selected_action": [membership.pk]},
        follow=True,
    )

    [message] = [str(m) for m in done.context["messages"]]
    assert message.startswith("tara: http://testserver/accounts/reset/")


def test_flags_changed_in_the_admin_user_form_are_audited_with_the_admin(
    client, platform_admin, member_a
):
    client.force_login(platform_admin)
    url = f"/admin/auth/user/{member_a.pk}/change/"
    form = client.get(url).context["adminform"].form
    data = {
        name: value
        for name, value in form.initial.items()
        if name not in ("password", "groups", "user_permissions", "last_login")
        and value is not None
    }
    data.update(
        is_staff="on",
        is_active="on",
        date_joined_0=member_a.date_joined.strftime("%Y-%m-%d"),
        date_joined_1=member_a.date_joined.strftime("%H:%M:%S"),
    )
    data.pop("is_superuser", None)
    data.pop("date_joined", None)

    response = client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    [event] = _events("account.flags_changed")
    assert event.actor == platform_admin
    assert event.payload_data == {
        "user": member_a.username,
        "changed": {"is_staff": {"from": False, "to": True}},
        "via": "request",
    }


def test_password_set_in_the_admin_is_audited_with_the_admin(
    client, platform_admin, member_a
):
    client.force_login(platform_admin)

    response = client.post(
        f"/admin/auth/user/{member_a.pk}/password/",
        {
            "password1": NEW_PASSWORD,
            "password2": NEW_PASSWORD,
            "usable_password": "true",
        },
    )

    assert response.status_code == 302
    [event] = _events("account.password_set")
    assert event.actor == platform_admin
    assert event.payload_data["via"] == "request"


def test_password_and_flags_set_from_a_command_are_audited_without_an_actor():
    person = UserFactory(username="uma")
    before = AuditEvent.objects.count()

    person.set_password(NEW_PASSWORD)
    person.is_superuser = True
    person.save()
    person.set_unusable_password()
    person.save(update_fields=["password"])
    person.save(update_fields=["last_login"])  # nothing tracked changed

    actions = [
        (event.action, event.actor, event.payload_data["via"])
        for event in AuditEvent.objects.filter(seq__gt=before).order_by("seq")
    ]
    assert actions == [
        ("account.password_set", None, "command"),
        ("account.flags_changed", None, "command"),
        ("account.password_set", None, "command"),
    ]


def test_a_hash_upgraded_at_login_is_no_password_change(settings):
    person = UserFactory(username="vera")
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
        "django.contrib.auth.hashers.MD5PasswordHasher",
    ]
    before = AuditEvent.objects.count()

    assert person.check_password("correct-Horse-battery-9")  # re-hashed and saved

    person.refresh_from_db()
    assert person.password.startswith("pbkdf2_")
    assert AuditEvent.objects.count() == before

