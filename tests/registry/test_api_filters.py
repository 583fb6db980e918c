"""Catalogue filters: no existence oracle, no match through what the caller cannot see.

SECURITY C13 and C2 (issue 9, item 5), and the JSON-list filters of item 7,
which must answer alike on PostgreSQL and SQLite (this file runs on both:
``tests/config/test_filters.py::test_filter_tests_pass_on_sqlite``).
"""

from __future__ import annotations

import pytest
from django.utils import timezone

from registry.models import ModelVersion, ModelVersionDataset, Visibility
from tests.factories import (
    AIModelFactory,
    DatasetFactory,
    DatasetVersionFactory,
    LicenceFactory,
    ModelVersionFactory,
)

pytestmark = pytest.mark.django_db

API = "/api/v1"
UNUSED = 10**12


def _ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def _public_version_trained_on_a_private_dataset(agency):
    """Agency A's public model version, trained on its private dataset version."""
    private = DatasetVersionFactory(dataset=DatasetFactory(agency=agency))
    base = ModelVersionFactory(model=AIModelFactory(agency=agency))
    version = ModelVersionFactory(
        model=AIModelFactory(agency=agency, visibility=Visibility.PUBLIC),
        base_version=base,
        released_at=timezone.now(),
    )
    ModelVersionDataset.objects.create(
        model_version=version, dataset_version=private, role="training"
    )
    return version, private, base


def test_c13_dataset_version_filter_never_matches_through_a_private_dataset(
    agency_a, api_a, api_b
):
    version, private, _ = _public_version_trained_on_a_private_dataset(agency_a)
    assert version.pk in _ids(api_b.get(f"{API}/model-versions/"))
    assert api_b.get(f"{API}/dataset-versions/{private.pk}/").status_code == 404

    seen = api_b.get(f"{API}/model-versions/", {"dataset_version": private.pk})
    unused = api_b.get(f"{API}/model-versions/", {"dataset_version": UNUSED})

    assert (seen.status_code, seen.json()) == (unused.status_code, unused.json())
    assert _ids(seen) == []
    # The owner, who may read the dataset, still finds the version through it.
    assert _ids(
        api_a.get(f"{API}/model-versions/", {"dataset_version": private.pk})
    ) == [version.pk]


def test_c13_base_version_filter_never_matches_through_a_private_version(
    agency_a, api_a, api_b
):
    version, _, base = _public_version_trained_on_a_private_dataset(agency_a)

    seen = api_b.get(f"{API}/model-versions/", {"base_version": base.pk})
    unused = api_b.get(f"{API}/model-versions/", {"base_version": UNUSED})

    assert (seen.status_code, seen.json()) == (unused.status_code, unused.json())
    assert _ids(seen) == []
    assert _ids(api_a.get(f"{API}/model-versions/", {"base_version": base.pk})) == [
        version.pk
    ]


def test_c13_id_filters_answer_alike_for_another_agencys_id_and_an_unused_one(
    agency_a, api_a, api_b
):
    dataset_version = DatasetVersionFactory(dataset=DatasetFactory(agency=agency_a))
    version = ModelVersionFactory(model=AIModelFactory(agency=agency_a))
    cases = [
        ("dataset-versions", "dataset", dataset_version.dataset_id, dataset_version),
        ("model-versions", "model", version.model_id, version),
        ("model-versions", "dataset_version", dataset_version.pk, None),
        ("model-versions", "base_version", version.pk, None),
    ]
    for resource, name, other, _ in cases:
        seen = api_b.get(f"{API}/{resource}/", {name: other})
        unused = api_b.get(f"{API}/{resource}/", {name: UNUSED})
        assert (seen.status_code, seen.json()) == (
            unused.status_code,
            unused.json(),
        ), (resource, name)
        assert seen.status_code == 200 and seen.json()["results"] == []
    for resource, name, other, row in cases:
        if row is not None:
            assert _ids(api_a.get(f"{API}/{resource}/", {name: other})) == [row.pk]


def test_c2_filters_with_another_agencys_ids_list_none_of_its_rows(
    agency_a, agency_b, api_b
):
    version, private, base = _public_version_trained_on_a_private_dataset(agency_a)
    hidden = ModelVersion.objects.exclude(pk=version.pk)
    for name, value in [
        ("model", base.model_id),
        ("base_version", base.pk),
        ("dataset_version", private.pk),
    ]:
        listed = _ids(api_b.get(f"{API}/model-versions/", {name: value}))
        assert not set(listed) & set(hidden.values_list("pk", flat=True)), name
        assert listed == [], name


# --- JSON-list filters: the same answers on PostgreSQL and SQLite ------------------


def test_language_filter_matches_a_whole_tag_in_any_case(agency_a, api_a):
    dataset = DatasetFactory(agency=agency_a)
    english = DatasetVersionFactory(dataset=dataset, languages=["fr", "en"])
    british = DatasetVersionFactory(
        dataset=dataset, version="2.0.0", languages=["en-GB"]
    )

    assert _ids(api_a.get(f"{API}/dataset-versions/", {"language": "en"})) == [
        english.pk
    ]
    assert _ids(api_a.get(f"{API}/dataset-versions/", {"language": "EN-gb"})) == [
        british.pk
    ]
    assert _ids(api_a.get(f"{API}/dataset-versions/", {"language": "de"})) == []


def test_language_filter_refuses_what_is_not_a_tag(api_a):
    for value in ['"en"', "en%", "e_", "fr,en", "é", "en\\"]:
        response = api_a.get(f"{API}/dataset-versions/", {"language": value})
        assert response.status_code == 400, value
        assert list(response.json()["fields"]) == ["language"]


def test_spdx_id_filter_matches_an_identifier_of_the_expression(api_a):
    both = LicenceFactory(
        expression="Apache-2.0 OR MIT", spdx_ids=["Apache-2.0", "MIT"], name="Dual"
    )
    gpl = LicenceFactory(
        expression="GPL-3.0-or-later", spdx_ids=["GPL-3.0-or-later"], name="GPL"
    )

    assert _ids(api_a.get(f"{API}/licences/", {"spdx_id": "MIT"})) == [both.pk]
    assert _ids(api_a.get(f"{API}/licences/", {"spdx_id": "mit"})) == [both.pk]
    assert _ids(api_a.get(f"{API}/licences/", {"spdx_id": "GPL-3.0-or-later"})) == [
        gpl.pk
    ]
    assert _ids(api_a.get(f"{API}/licences/", {"spdx_id": "GPL-3.0"})) == []
    response = api_a.get(f"{API}/licences/", {"spdx_id": "MIT%"})
    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["spdx_id"]
