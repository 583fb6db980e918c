"""The webhooks API: agency maintainers manage theirs; everyone else sees nothing."""

from __future__ import annotations

import pytest

from audit.models import SecurityEvent
from notifications.models import Webhook, WebhookDelivery
from notifications.signing import decrypt
from tests.registry.conftest import token_client

pytestmark = pytest.mark.django_db

URL = "https://hooks.city-a.example.gov/civitas"
BODY = {"url": URL, "event_types": ["use_case.suspended", "policy.evaluated"]}


@pytest.fixture
def api_maintainer_b(maintainer_b):
    return token_client(maintainer_b)


def _create(client, **overrides):
    return client.post("/api/v1/webhooks/", {**BODY, **overrides}, format="json")


def test_a_maintainer_registers_a_webhook_and_sees_its_secret_once(
    api_maintainer_a, agency_a
):
    response = _create(api_maintainer_a, description="service desk")

    assert response.status_code == 201, response.content
    body = response.json()
    secret = body["secret"]
    assert secret.startswith("whsec_")
    assert body["agency"] == agency_a.slug
    assert body["event_types"] == ["policy.evaluated", "use_case.suspended"]
    webhook = Webhook.objects.get(pk=body["id"])
    assert secret not in webhook.secret_encrypted
    assert decrypt(webhook.secret_encrypted) == secret

    detail = api_maintainer_a.get(f"/api/v1/webhooks/{webhook.pk}/")
    listing = api_maintainer_a.get("/api/v1/webhooks/")
    assert detail.status_code == 200 and "secret" not in detail.json()
    assert secret not in detail.content.decode() + listing.content.decode()
    assert [row["id"] for row in listing.json()["results"]] == [webhook.pk]


def test_rotation_returns_a_new_secret_and_keeps_the_old_one_for_the_grace(
    api_maintainer_a,
):
    created = _create(api_maintainer_a).json()

    response = api_maintainer_a.post(f"/api/v1/webhooks/{created['id']}/rotate-secret/")

    assert response.status_code == 200
    body = response.json()
    assert body["secret"].startswith("whsec_") and body["secret"] != created["secret"]
    assert body["previous_secret_expires_at"] is not None
    webhook = Webhook.objects.get(pk=created["id"])
    assert decrypt(webhook.previous_secret_encrypted) == created["secret"]


def test_ping_queues_a_delivery_listed_in_the_log(api_maintainer_a):
    webhook = _create(api_maintainer_a).json()

    ping = api_maintainer_a.post(f"/api/v1/webhooks/{webhook['id']}/ping/")
    log = api_maintainer_a.get(f"/api/v1/webhooks/{webhook['id']}/deliveries/")

    assert ping.status_code == 202
    assert ping.json()["event_type"] == "webhook.ping"
    assert ping.json()["status"] == "pending"
    assert [row["id"] for row in log.json()["results"]] == [ping.json()["id"]]


def test_maintainers_change_and_disable_their_webhooks(api_maintainer_a):
    webhook = _create(api_maintainer_a).json()

    response = api_maintainer_a.patch(
        f"/api/v1/webhooks/{webhook['id']}/",
        {"is_enabled": False, "event_types": ["incident.reported"]},
        format="json",
    )

    assert response.status_code == 200
    assert response.json()["is_enabled"] is False
    assert response.json()["event_types"] == ["incident.reported"]


def test_c1_another_agencys_maintainer_gets_404_on_webhooks(
    api_maintainer_a, api_maintainer_b, api_a, reviewer
):
    webhook = _create(api_maintainer_a).json()
    base = f"/api/v1/webhooks/{webhook['id']}"
    missing = "/api/v1/webhooks/999999"
    api_reviewer = token_client(reviewer)

    for client in (api_maintainer_b, api_a, api_reviewer):
        for prefix in (base, missing):
            assert client.get(f"{prefix}/").status_code == 404
            assert client.patch(f"{prefix}/", {"is_enabled": False}).status_code == 404
            assert client.post(f"{prefix}/rotate-secret/").status_code == 404
            assert client.post(f"{prefix}/ping/").status_code == 404
            assert client.get(f"{prefix}/deliveries/").status_code == 404
        assert client.get("/api/v1/webhooks/").json()["results"] == []
    assert not WebhookDelivery.objects.exists()
    assert Webhook.objects.get(pk=webhook["id"]).is_enabled
    probes = SecurityEvent.objects.filter(object_type="notifications.webhook")
    assert probes.exists() and {p.object_id for p in probes} == {str(webhook["id"])}


def test_only_maintainers_and_platform_admins_register_webhooks(
    api_a, platform_admin, agency_a
):
    assert _create(api_a).status_code == 403

    admin = token_client(platform_admin)
    unnamed = _create(admin)
    named = _create(admin, agency=agency_a.slug)
    assert unnamed.status_code == 400 and unnamed.json()["fields"].keys() == {"agency"}
    assert named.status_code == 201 and named.json()["agency"] == agency_a.slug


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://hooks.city-a.example.gov/", "scheme_refused"),
        ("https://127.0.0.1/hook", "address_refused"),
        ("https://169.254.169.254/latest/meta-data/", "address_refused"),
        ("https://[::1]/hook", "address_refused"),
        ("https://localhost/hook", "address_refused"),
        ("https://user:pw@hooks.city-a.example.gov/", "credentials_in_url"),
    ],
)
def test_c11_insecure_or_internal_urls_are_refused_at_registration(
    api_maintainer_a, url, code
):
    response = _create(api_maintainer_a, url=url)

    assert response.status_code == 400, response.content
    assert response.json()["fields"]["url"][0]["code"] == code
    assert not Webhook.objects.exists()


def test_unknown_event_types_are_refused(api_maintainer_a):
    response = _create(api_maintainer_a, event_types=["model.deleted"])

    assert response.status_code == 400
    assert "event_types" in response.json()["fields"]
