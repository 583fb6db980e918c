"""factory_boy factories for the catalogue.

They build rows directly, for test set-up only: behaviour under test always
goes through the services.
"""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from registry import models


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.gov")
    password = factory.django.Password("correct-Horse-battery-9")


class AgencyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Agency
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Agency {n}")
    slug = factory.Sequence(lambda n: f"agency-{n}")
    jurisdiction = "FR"
    contact_email = "contact@example.gov"


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Membership

    user = factory.SubFactory(UserFactory)
    agency = factory.SubFactory(AgencyFactory)
    role = models.Role.MEMBER


class LicenceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Licence
        django_get_or_create = ("expression",)

    expression = "Apache-2.0"
    spdx_ids = factory.LazyAttribute(lambda lic: [lic.expression])
    name = "Apache License 2.0"
    is_osi_approved = True


class DatasetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Dataset

    agency = factory.SubFactory(AgencyFactory)
    name = factory.Sequence(lambda n: f"Dataset {n}")
    slug = factory.Sequence(lambda n: f"dataset-{n}")
    created_by = factory.SubFactory(UserFactory)


class DatasetVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.DatasetVersion

    dataset = factory.SubFactory(DatasetFactory)
    version = "1.0.0"
    motivation = "Answer citizens' questions about local services."
    composition = "Question and answer pairs written by staff."
    collection_process = "Written by staff in 2026."
    intended_uses = "Training assistants for public services."
    languages = ["en"]
    record_count = 1000
    licence = factory.SubFactory(LicenceFactory)
    origin_jurisdiction = "FR"
    created_by = factory.SubFactory(UserFactory)


class AIModelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.AIModel

    agency = factory.SubFactory(AgencyFactory)
    name = factory.Sequence(lambda n: f"Model {n}")
    slug = factory.Sequence(lambda n: f"model-{n}")
    task = models.Task.TEXT_GENERATION
    intended_use = "Drafting replies to citizens, reviewed by staff."
    created_by = factory.SubFactory(UserFactory)


class ModelVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.ModelVersion

    model = factory.SubFactory(AIModelFactory)
    version = factory.Sequence(lambda n: f"1.0.{n}")
    licence = factory.SubFactory(LicenceFactory)
    created_by = factory.SubFactory(UserFactory)
