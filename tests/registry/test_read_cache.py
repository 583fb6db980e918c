"""The catalogue read cache (registry/read_cache.py) is exact: every write shows.

These tests commit for real (``transaction=True``): inside a transaction the
cache steps aside, so the rest of the suite never exercises it.
"""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test import override_settings

from registry import read_cache, services
from registry.models import AIModel, DatasetRole, ModelVersion, Visibility
from tests.factories import (
    DatasetFactory,
    DatasetVersionFactory,
    LicenceFactory,
    ModelVersionFactory,
)
from tests.registry.conftest import token_client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_cache():
    read_cache.clear()
    yield
    read_cache.clear()


@pytest.fixture
def public_version(agency_a, maintainer_a):
    version = ModelVersionFactory(
        model__agency=agency_a, model__visibility=Visibility.PUBLIC, limitations="v1"
    )
    return version


def _url(version) -> str:
    return f"/api/v1/model-versions/{version.pk}/"


def _detail(client, version):
    return client.get(_url(version))


def test_generation_moves_with_every_write_statement(public_version):
    before = read_cache.catalogue_generation()
    assert before is not None
    ModelVersion.objects.filter(pk=public_version.pk).update(limitations="raw")
    after_update = read_cache.catalogue_generation()
    with connection.cursor() as cursor:
        cursor.execute("UPDATE registry_licence SET name = name")
    after_sql = read_cache.catalogue_generation()
    assert before[0] == after_update[0] == after_sql[0]  # one epoch per database
    assert before[1] < after_update[1] < after_sql[1]


def test_second_read_is_served_from_the_cache_and_is_identical(api_a, public_version):
    first = _detail(api_a, public_version)
    second = _detail(api_a, public_version)
    assert first.status_code == second.status_code == 200
    assert second.content == first.content
    assert second["Content-Type"] == "application/json"
    assert read_cache.stats() == {"hits": 1, "misses": 1}


def test_a_service_write_is_seen_by_the_next_read(api_a, maintainer_a, public_version):
    assert _detail(api_a, public_version).json()["limitations"] == "v1"
    services.model_version_update(
        actor=maintainer_a, model_version=public_version, limitations="v2"
    )
    assert _detail(api_a, public_version).json()["limitations"] == "v2"


def test_a_queryset_update_outside_the_services_is_seen(api_a, public_version):
    assert _detail(api_a, public_version).json()["limitations"] == "v1"
    ModelVersion.objects.filter(pk=public_version.pk).update(limitations="by hand")
    assert _detail(api_a, public_version).json()["limitations"] == "by hand"


def test_a_list_page_follows_a_new_version(api_a, agency_a, public_version):
    url = "/api/v1/model-versions/?agency=city-a"
    assert len(api_a.get(url).json()["results"]) == 1
    ModelVersionFactory(model=public_version.model, version="2.0.0")
    assert len(api_a.get(url).json()["results"]) == 2


def test_each_reader_scope_gets_its_own_view_of_dataset_links(
    api_a, api_b, agency_a, maintainer_a, public_version
):
    """A public version's link to its agency's private dataset is shown to that
    agency only; a cached answer for one agency never reaches another."""
    private = DatasetVersionFactory(
        dataset=DatasetFactory(agency=agency_a, visibility=Visibility.PRIVATE),
        licence=LicenceFactory(),
    )
    services.model_version_update(
        actor=maintainer_a,
        model_version=public_version,
        datasets=[(private, DatasetRole.TRAINING)],
    )
    own = _detail(api_a, public_version).json()
    other = _detail(api_b, public_version).json()
    assert [link["dataset"] for link in own["datasets"]] == [private.dataset.slug]
    assert other["datasets"] == []
    assert _detail(api_b, public_version).json()["datasets"] == []


def test_a_version_made_private_disappears_for_other_agencies(api_b, public_version):
    assert _detail(api_b, public_version).status_code == 200
    AIModel.objects.filter(pk=public_version.model_id).update(
        visibility=Visibility.PRIVATE
    )
    assert _detail(api_b, public_version).status_code == 404


def test_errors_and_the_browsable_api_are_not_cached(api_a, public_version):
    for _ in range(2):
        assert api_a.get("/api/v1/model-versions/999999/").status_code == 404
    assert read_cache.stats() == {"hits": 0, "misses": 2}
    for _ in range(2):
        html = api_a.get(_url(public_version), HTTP_ACCEPT="text/html")
        assert html.status_code == 200 and html["Content-Type"].startswith("text/html")
    assert read_cache.stats() == {"hits": 0, "misses": 2}


def test_nothing_is_cached_inside_a_transaction(api_a, public_version):
    with transaction.atomic():
        assert _detail(api_a, public_version).status_code == 200
        assert _detail(api_a, public_version).status_code == 200
    assert read_cache.stats() == {"hits": 0, "misses": 0}


@override_settings(CIVITAS_READ_CACHE_ENTRIES=0)
def test_zero_entries_turns_the_cache_off(api_a, public_version):
    _detail(api_a, public_version)
    _detail(api_a, public_version)
    assert read_cache.stats() == {"hits": 0, "misses": 0}


def test_the_cache_keeps_at_most_its_limit(member_a, agency_a):
    versions = [
        ModelVersionFactory(model__agency=agency_a, version=f"3.0.{n}")
        for n in range(3)
    ]
    client = token_client(member_a)
    with override_settings(CIVITAS_READ_CACHE_ENTRIES=2):
        for version in versions:
            _detail(client, version)
        _detail(client, versions[0])  # the oldest entry was dropped
    assert read_cache.stats() == {"hits": 0, "misses": 4}
