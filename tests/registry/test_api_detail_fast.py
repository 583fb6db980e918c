"""A version's detail by fixed SQL (registry/api/detail.py): the serializer's bytes.

The reference is the same request with ``CIVITAS_FAST_VERSION_DETAIL`` off
(the ORM and ``ModelVersionSerializer``). Versions are generated from a
seeded random source over every optional field, agency, visibility, licence,
lineage, dataset link and status, and read by every kind of reader.
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIRequestFactory

from audit.models import SecurityEvent
from registry import selectors
from registry.api import detail
from registry.api.serializers import ModelVersionSerializer
from registry.models import (
    ArtifactState,
    DatasetRole,
    Derivation,
    ModelKind,
    ModelVersionDataset,
    VersionStatus,
    Visibility,
)
from tests.factories import (
    AgencyFactory,
    AIModelFactory,
    DatasetFactory,
    DatasetVersionFactory,
    LicenceFactory,
    ModelVersionFactory,
    UserFactory,
)
from tests.registry.conftest import token_client

VERSION_SQL = detail.STATEMENTS["agency"][0].split("WHERE")[0]


def _licences():
    return [
        LicenceFactory(expression="Apache-2.0"),
        LicenceFactory(
            expression="CC-BY-NC-4.0",
            is_osi_approved=False,
            allows_commercial_use=False,
            requires_share_alike=False,
        ),
        LicenceFactory(
            expression="GPL-3.0-only",
            requires_share_alike=True,
            allows_derivatives=True,
        ),
    ]


def _datasets(agencies, rnd):
    versions = []
    for agency in agencies:
        for visibility in Visibility.values:
            dataset = DatasetFactory(agency=agency, visibility=visibility)
            for k in range(2):
                versions.append(
                    DatasetVersionFactory(
                        dataset=dataset, version=f"{rnd.randint(0, 9)}.{k}.0"
                    )
                )
    return versions


def _optional(rnd, value):
    return value if rnd.random() < 0.5 else None


def _fields(rnd) -> dict:
    """Every optional field of a version, set or left at its default, at random."""
    blank = rnd.random() < 0.3
    return {
        "status": rnd.choice(VersionStatus.values),
        "derivation": "" if blank else rnd.choice(Derivation.values),
        "derivation_settings": {}
        if blank
        else {"method": "lora", "r": 8, "\u00e9t\u00e9": [1.5, None]},
        "training_run": "" if blank else f"runs:/{rnd.getrandbits(64):x}",
        "training_jurisdiction": rnd.choice(["", "FR", "DE-BY"]),
        "training_hardware": "" if blank else '8 \u00d7 H100 "SXM"',
        "training_energy_kwh": _optional(
            rnd,
            rnd.choice(
                [
                    Decimal("0"),
                    Decimal("0.001"),
                    Decimal("12.5"),
                    Decimal("99999999999.999"),
                ]
            ),
        ),
        "hosting_jurisdiction": rnd.choice(["", "FR", "BE"]),
        "limitations": ""
        if blank
        else "Ne répond pas aux questions juridiques.\n<b>&</b>",
        "risks": rnd.choice(["", "Hallucination."]),
        "ethical_considerations": rnd.choice(["", "Bias 😐"]),
        "artifact_state": rnd.choice(ArtifactState.values),
        "artifact_error": rnd.choice(["", "bad opset"]),
        "artifact_digest": rnd.choice(["", "ab" * 32]),
        "artifact_size": _optional(rnd, rnd.randint(1, 2**40)),
        "artifact_format": rnd.choice(["", "onnx", "zip"]),
        "graph_inputs": []
        if blank
        else [{"name": "input_ids", "shape": ["b", 128], "type": 7}],
        "graph_outputs": [] if blank else [{"name": "logits", "shape": [None, 3]}],
        "opsets": {} if blank else {"": 17, "com.microsoft": 1},
        "parameter_count": _optional(rnd, rnd.randint(0, 10**11)),
        "weight_bytes": _optional(rnd, rnd.randint(0, 10**12)),
        "kind": "" if blank else rnd.choice(ModelKind.values),
        "layout": rnd.choice(["", "llama"]),
        "num_layers": _optional(rnd, rnd.randint(1, 96)),
        "quantisation": rnd.choice(["", "int8"]),
        "selftest": {} if blank else {"perplexity": 12.25, "ok": True, "tokens": 512},
        "released_at": _optional(
            rnd,
            dt.datetime(2026, 3, 1, 12, 0, 0, rnd.randint(0, 999_999), tzinfo=dt.UTC),
        ),
    }


def _catalogue(agencies, seed: int = 20261204, count: int = 36):
    """``count`` varied versions across ``agencies``; lineage crosses agencies."""
    rnd = random.Random(seed)
    licences = _licences()
    datasets = _datasets(agencies, rnd)
    versions = []
    for n in range(count):
        agency = agencies[n % len(agencies)]
        model = AIModelFactory(agency=agency, visibility=rnd.choice(Visibility.values))
        base = rnd.choice([None, *versions[-6:]])
        creator = UserFactory(username=f"maker-{n}")
        version = ModelVersionFactory(
            model=model,
            licence=rnd.choice(licences),
            base_version=base,
            created_by=creator,
            **_fields(rnd),
        )
        for dataset_version in rnd.sample(datasets, rnd.randint(0, 4)):
            ModelVersionDataset.objects.create(
                model_version=version,
                dataset_version=dataset_version,
                role=rnd.choice(DatasetRole.values),
            )
        versions.append(version)
    return versions


@pytest.fixture
def readers(
    agency_a, agency_b, member_a, maintainer_a, member_b, reviewer, platform_admin
):
    outsider = UserFactory(username="no-agency")
    return {
        "member_a": member_a,
        "maintainer_a": maintainer_a,
        "member_b": member_b,
        "reviewer": reviewer,
        "platform_admin": platform_admin,
        "outsider": outsider,
    }


def _get(client, url, *, fast: bool):
    with (
        override_settings(CIVITAS_FAST_VERSION_DETAIL=fast),
        CaptureQueriesContext(connection) as queries,
    ):
        response = client.get(url)
    took_fast_path = any(VERSION_SQL in query["sql"] for query in queries)
    return response, took_fast_path


@pytest.mark.django_db
def test_fast_detail_is_byte_identical_for_every_reader(agency_a, agency_b, readers):
    third = AgencyFactory(slug="third-c", name="Third C")
    versions = _catalogue([agency_a, agency_b, third])
    seen = {200: 0, 404: 0}
    for name, user in readers.items():
        client = token_client(user)
        for version in versions:
            url = f"/api/v1/model-versions/{version.pk}/"
            fast, used = _get(client, url, fast=True)
            reference, used_reference = _get(client, url, fast=False)
            assert used and not used_reference, (name, version.pk)
            assert fast.status_code == reference.status_code, (name, version.pk)
            assert fast.content == reference.content, (name, version.pk)
            assert fast["Content-Type"] == reference["Content-Type"]
            seen[fast.status_code] += 1
    # Every branch was exercised: readable and hidden versions, bases shown
    # and hidden, links shown and hidden, fields set and blank.
    assert seen[200] > 60 and seen[404] > 10


@pytest.mark.django_db
def test_fast_detail_varies_where_the_serializer_does(agency_a, agency_b, readers):
    """The generated catalogue does reach every branch the test relies on."""
    versions = _catalogue([agency_a, agency_b])
    shown = [detail.version_detail(readers["member_a"], v.pk) for v in versions]
    shown = [data for data in shown if data is not None]
    assert any(
        d["base_version"] is None and v.base_version_id
        for d, v in zip(shown, versions, strict=False)
    )
    assert any(d["base_version"] is not None for d in shown)
    assert any(d["created_by"] is None for d in shown)
    assert any(d["created_by"] is not None for d in shown)
    assert any(d["training_energy_kwh"] is None for d in shown)
    assert any(d["training_energy_kwh"] not in (None, "") for d in shown)
    assert any(d["released_at"] is None for d in shown)
    assert any(d["is_released"] for d in shown)
    assert any(len(d["datasets"]) > 1 for d in shown)


@pytest.mark.django_db
@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "America/St_Johns"])
def test_fast_detail_matches_the_serializer_in_the_active_time_zone(
    agency_a, member_a, zone
):
    version = ModelVersionFactory(
        model__agency=agency_a,
        released_at=dt.datetime(2026, 7, 1, 23, 30, tzinfo=dt.UTC),
        training_energy_kwh=Decimal("3.14159"),
    )
    request = APIRequestFactory().get("/")
    request.user = member_a
    with timezone.override(zone):
        row = selectors.model_version_list(member_a).get(pk=version.pk)
        reference = ModelVersionSerializer(row, context={"request": request}).data
        fast = detail.version_detail(member_a, version.pk)
    assert JSONRenderer().render(fast) == JSONRenderer().render(reference)


@pytest.mark.django_db
def test_another_agencys_private_version_is_404_through_the_fast_path(
    agency_a, member_b
):
    private = ModelVersionFactory(
        model__agency=agency_a, model__visibility=Visibility.PRIVATE
    )
    client = token_client(member_b)
    response, used = _get(client, f"/api/v1/model-versions/{private.pk}/", fast=True)
    missing, _ = _get(client, "/api/v1/model-versions/999999999/", fast=True)
    assert used
    assert response.status_code == missing.status_code == 404
    assert response.content == missing.content  # indistinguishable from no such id
    assert detail.version_detail(member_b, private.pk) is None
    denied = SecurityEvent.objects.filter(object_id=str(private.pk))
    assert denied.count() == 1  # recorded as authz.denied, as the reference path does


@pytest.mark.django_db
def test_private_dataset_and_base_of_another_agency_stay_hidden(
    agency_a, agency_b, member_b
):
    hidden_base = ModelVersionFactory(
        model__agency=agency_a, model__visibility=Visibility.PRIVATE
    )
    secret = DatasetVersionFactory(
        dataset__agency=agency_a, dataset__visibility=Visibility.PRIVATE
    )
    version = ModelVersionFactory(
        model__agency=agency_a,
        model__visibility=Visibility.PUBLIC,
        base_version=hidden_base,
    )
    ModelVersionDataset.objects.create(
        model_version=version, dataset_version=secret, role=DatasetRole.TRAINING
    )
    data = detail.version_detail(member_b, version.pk)
    assert data["base_version"] is None and data["datasets"] == []
    assert data["created_by"] is None


@pytest.mark.django_db
@pytest.mark.parametrize("suffix", ["?format=api", "abc/", "0012/"])
def test_unusual_requests_take_the_serializer_path(agency_a, member_a, suffix):
    version = ModelVersionFactory(model__agency=agency_a, pk=12)
    client = token_client(member_a)
    url = "/api/v1/model-versions/" + (
        f"{version.pk}/{suffix}" if suffix[0] == "?" else suffix
    )
    fast, used = _get(client, url, fast=True)
    reference, _ = _get(client, url, fast=False)
    assert fast.status_code == reference.status_code
    if suffix == "0012/":  # plain digits: fast, and the same as the ORM's int("0012")
        assert used and fast.status_code == 200 and fast.content == reference.content
    else:
        assert not used


@pytest.mark.django_db
def test_a_user_of_no_agency_reads_public_versions_only(agency_a):
    outsider = UserFactory(username="nobody")  # no membership: no agency
    public = ModelVersionFactory(
        model__agency=agency_a, model__visibility=Visibility.PUBLIC
    )
    private = ModelVersionFactory(model__agency=agency_a)
    assert detail.version_detail(outsider, public.pk)["id"] == public.pk
    assert detail.version_detail(outsider, private.pk) is None
