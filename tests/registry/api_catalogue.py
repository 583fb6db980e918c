"""A small two-agency catalogue for the API and service tests.

Agency A (``city-a``) and agency B (``region-b``) each own a private dataset,
dataset version, model and released model version; B also owns a public
model, version and dataset. Rows are built with the factories (set-up only);
behaviour under test goes through the API or the services.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.utils import timezone

from registry.models import (
    Agency,
    AIModel,
    Dataset,
    DatasetVersion,
    Licence,
    ModelVersion,
    Visibility,
)
from tests.factories import (
    AIModelFactory,
    DatasetFactory,
    DatasetVersionFactory,
    LicenceFactory,
    ModelVersionFactory,
)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Hash test passwords with MD5: the production hasher takes most of a second.

    Import this fixture into a test module to apply it there.
    """
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@dataclass
class Catalogue:
    """The objects of both agencies, by owner and visibility."""

    licence: Licence
    dataset_a: Dataset
    dataset_version_a: DatasetVersion
    model_a: AIModel
    version_a: ModelVersion
    dataset_b: Dataset
    dataset_version_b: DatasetVersion
    model_b: AIModel
    version_b: ModelVersion
    public_dataset_b: Dataset
    public_dataset_version_b: DatasetVersion
    public_model_b: AIModel
    public_version_b: ModelVersion


def build_catalogue(agency_a: Agency, agency_b: Agency, user_a, user_b) -> Catalogue:
    """Create the catalogue of both agencies."""
    licence = LicenceFactory(expression="Apache-2.0")
    released = timezone.now()

    def owned(agency, user, slug, visibility=Visibility.PRIVATE):
        dataset = DatasetFactory(
            agency=agency,
            slug=f"{slug}-data",
            name=f"{slug} data",
            created_by=user,
            visibility=visibility,
        )
        dataset_version = DatasetVersionFactory(
            dataset=dataset, licence=licence, created_by=user
        )
        model = AIModelFactory(
            agency=agency,
            slug=f"{slug}-model",
            name=f"{slug} model",
            created_by=user,
            visibility=visibility,
        )
        version = ModelVersionFactory(
            model=model,
            version="1.0.0",
            licence=licence,
            created_by=user,
            released_at=released,
        )
        return dataset, dataset_version, model, version

    a = owned(agency_a, user_a, "alpha")
    b = owned(agency_b, user_b, "beta")
    public_b = owned(agency_b, user_b, "open-beta", Visibility.PUBLIC)
    return Catalogue(licence, *a, *b, *public_b)
