"""The main list and detail endpoints read in a constant number of queries.

Each endpoint is called over 3 rows and over 30 rows (versions with dataset
links and bases, derived versions in a lineage, audit events): the count may
not grow with the rows (no N+1), and stays under a fixed ceiling. The
figures under load are ``bench/load.py``'s (bench/README.md).
"""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from audit import services as audit
from registry.models import DatasetRole, ModelVersionDataset, Visibility
from tests.factories import (
    AIModelFactory,
    DatasetFactory,
    DatasetVersionFactory,
    ModelVersionFactory,
)

pytestmark = pytest.mark.django_db


def _catalogue(agency, user, rows: int) -> list:
    """A root version and ``rows`` versions derived from it, each linked to two
    dataset versions; the root comes first."""
    model = AIModelFactory(agency=agency, created_by=user, visibility=Visibility.PUBLIC)
    datasets = [
        DatasetVersionFactory(
            dataset=DatasetFactory(agency=agency, created_by=user), created_by=user
        )
        for _ in range(2)
    ]
    root = ModelVersionFactory(model=model, created_by=user)
    versions = [root]
    for _ in range(rows):
        version = ModelVersionFactory(model=model, created_by=user, base_version=root)
        for dataset_version, role in zip(
            datasets, (DatasetRole.TRAINING, DatasetRole.EVALUATION), strict=True
        ):
            ModelVersionDataset.objects.create(
                model_version=version, dataset_version=dataset_version, role=role
            )
        versions.append(version)
    return versions


def _count(client, path: str) -> int:
    client.get(path)  # warm per-process caches (content types, settings)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(path)
    assert response.status_code == 200, response.content[:500]
    return len(queries)


@pytest.mark.parametrize(
    ("path", "ceiling"),
    [
        ("/api/v1/model-versions/", 6),
        ("/api/v1/model-versions/?agency=city-a&released=false", 6),
        ("/api/v1/model-versions/{last}/", 6),
        ("/api/v1/model-versions/{first}/lineage/", 30),
        ("/api/v1/audit/events/", 5),
    ],
)
def test_endpoint_queries_do_not_grow_with_rows(
    path, ceiling, agency_a, maintainer_a, api_maintainer_a,
    django_assert_max_num_queries,
):
    counts = {}
    for rows in (3, 30):
        versions = _catalogue(agency_a, maintainer_a, rows)
        with transaction.atomic():
            for version in versions:
                audit.record(actor=maintainer_a, action="bench.touched", obj=version)
        url = path.format(first=versions[0].pk, last=versions[-1].pk)
        with django_assert_max_num_queries(ceiling):
            api_maintainer_a.get(url)
        counts[rows] = _count(api_maintainer_a, url)
    assert counts[30] == counts[3], counts
