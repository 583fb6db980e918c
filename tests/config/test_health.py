"""GET /healthz reports the database, the broker and the MLflow store."""

import threading

import pytest


@pytest.fixture(autouse=True)
def _healthy_parts_answer_within_budget(settings):
    """A generous budget for these tests, which are about which part is down.

    The first look at the embedded MLflow store imports MLflow (seconds on a
    loaded machine); the budget itself is proven in test_health_timeouts.py.
    """
    settings.HEALTHCHECK_TIMEOUT_SECONDS = 30.0
    # A check still running from an earlier test's probe would be reported
    # ``busy``: let it finish first.
    for thread in threading.enumerate():
        if thread.name.startswith("civitas-health-"):
            thread.join(timeout=60)


@pytest.mark.django_db
def test_healthz_is_200_when_every_part_answers(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["down"] == []
    assert set(body["checks"]) == {"database", "broker", "mlflow"}
    assert all(part["ok"] for part in body["checks"].values())


@pytest.mark.django_db
def test_healthz_is_503_naming_the_broker_when_it_is_unreachable(client, settings):
    # Port 1 on loopback refuses connections: a broker that is down.
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"

    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "down"
    assert body["down"] == ["broker"]
    assert body["checks"]["broker"]["ok"] is False
    assert body["checks"]["database"]["ok"] is True
    # No connection string or host leaks to an anonymous caller.
    assert "127.0.0.1" not in response.content.decode()


@pytest.mark.django_db
def test_healthz_is_503_naming_mlflow_when_its_store_is_unreachable(client, settings):
    settings.MLFLOW_TRACKING_URI = "http://127.0.0.1:1"

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["down"] == ["mlflow"]


@pytest.mark.django_db
def test_an_app_registers_its_own_part_of_healthz(client):
    from config import health

    def check_archive() -> None:
        raise ConnectionRefusedError("archive at 10.0.0.7 refused")

    health.register("archive", check_archive)
    try:
        response = client.get("/healthz")
    finally:
        del health.CHECKS["archive"]

    assert response.status_code == 503
    body = response.json()
    assert body["down"] == ["archive"]
    assert body["checks"]["archive"]["error"] == "ConnectionRefusedError"
    assert "10.0.0.7" not in response.content.decode()
    # Governance registered the MLflow store from its AppConfig.ready.
    assert body["checks"]["mlflow"]["ok"] is True
