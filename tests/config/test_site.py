"""The admin, the OpenAPI schema and its Swagger UI are served."""

import pytest
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema


@pytest.mark.django_db
def test_admin_login_page_carries_the_platform_branding(client):
    response = client.get("/admin/login/")

    assert response.status_code == 200
    assert "Civitas administration" in response.content.decode()


@pytest.mark.django_db
def test_swagger_ui_is_served_with_local_assets(client):
    response = client.get("/api/docs/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html
    assert "cdn.jsdelivr.net" not in html


@pytest.mark.django_db
def test_openapi_schema_is_served_and_validates(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi")

    assert response.status_code == 200
    schema = SchemaGenerator().get_schema(request=None, public=True)
    validate_schema(schema)
    assert "/api/v1/system/worker-ping/" in schema["paths"]


@pytest.mark.django_db
def test_worker_ping_requires_an_administrator(client, django_user_model):
    anonymous = client.post("/api/v1/system/worker-ping/")
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "not_authenticated"

    user = django_user_model.objects.create_user("clerk", password="x-Pa55word-long")
    client.force_login(user)
    assert client.post("/api/v1/system/worker-ping/").status_code == 403
