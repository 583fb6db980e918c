"""Uploading a bundle from the portal: streamed, capped, checked, CSRF-protected."""

from __future__ import annotations

import hashlib
import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from registry.models import ArtifactState, ModelVersion
from registry.storage import DigestingUploadHandler, SpooledUpload
from tests.factories import ModelVersionFactory
from tests.registry.artifact_bundles import (
    big_external_bundle,
    tiny_model_bytes,
    zip_bytes,
)
from tests.registry.portal.conftest import signed_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def version_a(agency_a, member_a):
    return ModelVersionFactory(model__agency=agency_a, version="1.0.0")


def url(version) -> str:
    return f"/portal/versions/{version.pk}/artifact/"


def bundle(content: bytes, name: str = "model.onnx") -> dict:
    return {"file": SimpleUploadedFile(name, content, "application/octet-stream")}


def leftover_spool_files(settings) -> list[str]:
    root = settings.ARTIFACT_TMP_DIR
    return (
        [n for n in os.listdir(root) if n.startswith("upload-")]
        if os.path.isdir(root)
        else []
    )


def test_anonymous_readers_are_sent_to_sign_in(version_a):
    for method in ("get", "post"):
        response = getattr(Client(), method)(url(version_a))
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


def test_the_page_offers_the_form_and_the_progress_bar(member_a, version_a):
    page = signed_in(member_a).get(url(version_a)).content.decode()
    assert 'enctype="multipart/form-data"' in page
    assert '<progress id="upload-bar"' in page and 'aria-live="polite"' in page
    assert "portal/upload.js" in page
    assert 'name="csrfmiddlewaretoken"' in page


def test_a_valid_bundle_is_stored_pending_its_self_test(member_a, version_a, settings):
    content = tiny_model_bytes()
    response = signed_in(member_a).post(url(version_a), bundle(content))
    text = response.content.decode()
    version_a.refresh_from_db()
    digest = hashlib.sha256(content).hexdigest()
    assert response.status_code == 200
    assert version_a.artifact_state == ArtifactState.PENDING
    assert version_a.artifact_digest == digest and digest in text
    assert version_a.graph_inputs[0]["name"] == "x"
    assert "Verification in progress" in text
    assert AuditEvent.objects.filter(
        action="model_version.artifact_uploaded", object_id=str(version_a.pk)
    ).exists()
    assert leftover_spool_files(settings) == []


def test_the_body_streams_through_the_digesting_handler_to_a_temporary_file(
    member_a, version_a, settings, tmp_path
):
    # Larger than FILE_UPLOAD_MAX_MEMORY_SIZE: Django alone would keep the
    # chunks in memory below that size; the portal always spools to disk.
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
    path = big_external_bundle(tmp_path / "big.zip", 3 * 1024 * 1024)
    content = path.read_bytes()
    response = signed_in(member_a).post(url(version_a), bundle(content, "big.zip"))
    request = response.wsgi_request
    assert response.status_code == 200
    assert [type(h) for h in request.upload_handlers] == [DigestingUploadHandler]
    spooled = request.FILES["file"]
    assert isinstance(spooled, SpooledUpload)
    assert spooled.sha256 == hashlib.sha256(content).hexdigest()
    assert not os.path.exists(spooled.temporary_file_path())  # removed afterwards
    version_a.refresh_from_db()
    assert version_a.artifact_size == len(content)


def test_a2_an_upload_over_the_cap_is_413_and_leaves_no_temp_file(
    member_a, version_a, settings
):
    settings.CIVITAS_UPLOAD_MAX_BYTES = 1000
    response = signed_in(member_a).post(url(version_a), bundle(b"x" * 5000))
    assert response.status_code == 413
    assert "larger than the limit of 1000 bytes" in response.content.decode()
    version_a.refresh_from_db()
    assert version_a.artifact_state == ArtifactState.NONE
    assert leftover_spool_files(settings) == []


def test_a4_a_path_traversal_archive_is_refused_readably(member_a, version_a, settings):
    hostile = zip_bytes({"model.onnx": tiny_model_bytes(), "../evil.txt": b"x"})
    client = signed_in(member_a)
    response = client.post(
        url(version_a),
        bundle(hostile, "bundle.zip"),
        headers={"X-Requested-With": "XMLHttpRequest"},
    )
    text = response.content.decode()
    assert response.status_code == 400
    assert "<html" not in text  # the fragment upload.js swaps in
    assert "The bundle was refused" in text and "unsafe_path" in text
    assert "&#x27;..&#x27;" in text or "'..'" in text
    version_a.refresh_from_db()
    assert version_a.artifact_state == ArtifactState.NONE
    assert leftover_spool_files(settings) == []


def test_not_an_onnx_file_is_refused_with_the_engines_reason(member_a, version_a):
    response = signed_in(member_a).post(url(version_a), bundle(b"hello" * 100))
    assert response.status_code == 400
    assert "The bundle was refused" in response.content.decode()


def test_c7_the_upload_needs_the_csrf_token(member_a, version_a):
    client = Client(enforce_csrf_checks=True)
    client.force_login(member_a)
    response = client.post(url(version_a), bundle(tiny_model_bytes()))
    assert response.status_code == 403
    version_a.refresh_from_db()
    assert version_a.artifact_state == ArtifactState.NONE
    client.get(url(version_a))
    token = client.cookies["csrftoken"].value
    response = client.post(
        url(version_a), bundle(tiny_model_bytes()), headers={"X-CSRFToken": token}
    )
    assert response.status_code == 200
    version_a.refresh_from_db()
    assert version_a.artifact_state == ArtifactState.PENDING


def test_a_released_version_takes_no_second_bundle(member_a, agency_a):
    released = ModelVersionFactory(
        model__agency=agency_a,
        artifact_state=ArtifactState.AVAILABLE,
        artifact_digest="a" * 64,
        released_at=timezone.now(),
    )
    response = signed_in(member_a).post(url(released), bundle(tiny_model_bytes()))
    assert response.status_code == 409
    assert "register a new version" in response.content.decode()
    assert ModelVersion.objects.get(pk=released.pk).artifact_digest == "a" * 64


def test_c1_another_agency_gets_404_on_the_upload_and_its_state(member_b, version_a):
    client = signed_in(member_b)
    assert client.get(url(version_a)).status_code == 404
    assert client.post(url(version_a), bundle(tiny_model_bytes())).status_code == 404
    state = f"/portal/versions/{version_a.pk}/artifact/state/"
    assert client.get(state).status_code == 404


def test_the_state_fragment_polls_while_pending(member_a, version_a):
    ModelVersion.objects.filter(pk=version_a.pk).update(
        artifact_state=ArtifactState.PENDING
    )
    client = signed_in(member_a)
    state = f"/portal/versions/{version_a.pk}/artifact/state/"
    assert 'hx-trigger="every 2s"' in client.get(state).content.decode()
    ModelVersion.objects.filter(pk=version_a.pk).update(
        artifact_state=ArtifactState.FAILED, artifact_error="Self-test failed."
    )
    text = client.get(state).content.decode()
    assert "hx-trigger" not in text and "Self-test failed." in text


def test_a_version_with_its_bundle_offers_no_upload_form(member_a, version_a):
    client = signed_in(member_a)
    client.post(url(version_a), bundle(tiny_model_bytes()))
    page = client.get(url(version_a)).content.decode()
    assert 'id="upload-form"' not in page
    assert "already has its bundle" in page
