"""A resumable upload completed onto S3-compatible storage (moto's server).

The parts are staged on the web host (the bundle is inspected there); the
checked bundle lands in the bucket under the same key as a single upload.
"""

from __future__ import annotations

import hashlib

import pytest

from registry.models import ModelVersion, UploadSession, UploadState
from tests.factories import AIModelFactory, ModelVersionFactory
from tests.registry.artifact_bundles import fresh_throttles  # noqa: F401
from tests.registry.test_resumable_upload import (
    bundle,
    complete,
    create,
    parts_of,
    put_part,
    small_parts,  # noqa: F401 - fixture
)
from tests.registry.test_s3_storage import (  # noqa: F401 - fixtures
    BUCKET,
    _client,
    _keys,
    s3_endpoint,
    s3_store,
)


@pytest.mark.django_db
@pytest.mark.usefixtures("s3_store")
def test_resumable_upload_completes_into_the_bucket(
    api_a, agency_a, member_a, settings, tmp_path
):
    endpoint = settings.STORAGES["artifacts"]["OPTIONS"]["endpoint_url"]
    settings.ARTIFACT_TMP_DIR = tmp_path / "scratch"
    version = ModelVersionFactory(
        model=AIModelFactory(agency=agency_a, created_by=member_a), created_by=member_a
    )
    body = bundle()
    upload_id = create(api_a, version, body).json()["id"]
    for number, data in reversed(list(enumerate(parts_of(body), 1))):
        assert put_part(api_a, version, upload_id, number, data).status_code == 200

    done = complete(api_a, version, upload_id)

    assert done.status_code == 202, done.json()
    digest = hashlib.sha256(body).hexdigest()
    key = f"model-versions/{version.pk}/{digest}.zip"
    assert key in _keys(endpoint)
    stored = _client(endpoint).get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert stored == body
    assert ModelVersion.objects.get(pk=version.pk).artifact_key == key
    assert UploadSession.objects.get(pk=upload_id).state == UploadState.COMPLETED
    assert list((tmp_path / "scratch" / "uploads").iterdir()) == []
