"""Hostile and broken uploads through the API: refused with the bundle's code,
and nothing is left behind (no storage object, no scratch file, no row change).

SECURITY.md A4-A7: traversal, absolute paths, links, devices, bombs, too many
members; files that claim to be ONNX but are a zip, a pickle, HTML, JSON or
a truncated protobuf.
"""

from __future__ import annotations

import io
import pickle
import tarfile

import pytest

from audit.models import AuditEvent
from registry.services import artifacts
from tests.factories import AIModelFactory, ModelVersionFactory
from tests.registry.artifact_bundles import (  # noqa: F401 - fixtures
    artifact_dirs_fixture,
    external_data_model_bytes,
    files_under,
    fresh_throttles,
    put_raw,
    row,
    tar_bytes,
    tar_with_device,
    tar_with_hardlink,
    tar_with_symlink,
    tar_with_traversal,
    tiny_model_bytes,
    zip_bytes,
    zip_with_symlink,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def version_a(agency_a, member_a):
    model = AIModelFactory(agency=agency_a, created_by=member_a)
    return ModelVersionFactory(model=model, created_by=member_a)


def _url(version) -> str:
    return f"/api/v1/model-versions/{version.pk}/artifact/"


def _bomb() -> bytes:
    """16 MiB of zeros deflated to a few KiB: a ratio far above 100."""
    return zip_bytes(
        {"model.onnx": tiny_model_bytes(), "weights.bin": bytes(16 << 20)},
        deflate=True,
    )


def _too_many_files() -> bytes:
    members = {"model.onnx": tiny_model_bytes()}
    members.update({f"extra/{i}.txt": b"x" for i in range(300)})
    return zip_bytes(members)


def _tar_gz_bomb() -> bytes:
    """64 MiB of zeros in a tar.gz of some KiB."""

    def build(tf):
        info = tarfile.TarInfo("weights.bin")
        info.size = 64 << 20
        tf.addfile(info, io.BytesIO(bytes(64 << 20)))

    return tar_bytes(build)


def _external_data_escape() -> bytes:
    """model.onnx whose initializer points at ../../etc/passwd."""
    return zip_bytes(
        {"model.onnx": external_data_model_bytes(4, location="../../etc/passwd")}
    )


UNSAFE_ARCHIVES = {
    "zip-traversal": (
        lambda: zip_bytes({"model.onnx": tiny_model_bytes(), "../evil.txt": b"x"}),
        "unsafe_path",
    ),
    "zip-absolute": (
        lambda: zip_bytes({"model.onnx": tiny_model_bytes(), "/etc/evil": b"x"}),
        "unsafe_path",
    ),
    "zip-backslash": (
        lambda: zip_bytes({"model.onnx": tiny_model_bytes(), "..\\evil": b"x"}),
        "unsafe_path",
    ),
    "zip-symlink": (zip_with_symlink, "link_member"),
    "tar-traversal": (tar_with_traversal, "unsafe_path"),
    "tar-symlink": (tar_with_symlink, "link_member"),
    "tar-hardlink": (tar_with_hardlink, "link_member"),
    "tar-device": (tar_with_device, "special_member"),
    "zip-bomb-by-ratio": (_bomb, "compression_ratio"),
    "tar-gz-bomb-by-ratio": (_tar_gz_bomb, "compression_ratio"),
    "too-many-files": (_too_many_files, "too_many_files"),
    "external-data-escape": (_external_data_escape, "external_data_outside"),
}


@pytest.mark.parametrize("case", sorted(UNSAFE_ARCHIVES))
def test_a4_a6_b1_unsafe_archive_is_refused_and_leaves_nothing(
    api_a, version_a, artifact_dirs, tmp_path, case
):
    make, code = UNSAFE_ARCHIVES[case]
    before = row(version_a)

    response = put_raw(api_a, _url(version_a), make(), filename="bundle.zip")

    assert response.status_code == 400, response.json()
    assert response.json()["code"] == code
    assert response.json()["message"]
    assert row(version_a) == before
    assert files_under(artifact_dirs.store) == []
    assert files_under(artifact_dirs.scratch) == []
    assert not (tmp_path / "evil.txt").exists()
    assert not AuditEvent.objects.filter(
        action="model_version.artifact_uploaded"
    ).exists()


def _pytorch_like_zip() -> bytes:
    return zip_bytes(
        {"archive/data.pkl": pickle.dumps({"w": [1.0]}), "archive/version": b"3"}
    )


def _truncated_protobuf() -> bytes:
    model = external_data_model_bytes(1024)
    return model[: len(model) // 2]


NOT_ONNX = {
    "zip-named-onnx": (_pytorch_like_zip, "missing_model"),
    "pickle": (lambda: pickle.dumps({"weights": list(range(100))}), "invalid_onnx"),
    "html": (
        lambda: b"<!DOCTYPE html><html><body>Not found</body></html>",
        "invalid_onnx",
    ),
    "json": (lambda: b'{"model": "gpt"}', "invalid_onnx"),
    "truncated-protobuf": (_truncated_protobuf, "invalid_onnx"),
    "random-bytes": (lambda: bytes(range(7, 250)) * 40, "invalid_onnx"),
    "archive-without-model": (
        lambda: zip_bytes({"README.md": b"# my model\n"}),
        "missing_model",
    ),
}


@pytest.mark.parametrize("case", sorted(NOT_ONNX))
def test_a7_non_onnx_upload_is_refused_and_leaves_nothing(
    api_a, version_a, artifact_dirs, case
):
    make, code = NOT_ONNX[case]
    before = row(version_a)

    response = put_raw(api_a, _url(version_a), make(), filename="model.onnx")

    assert response.status_code == 400, response.json()
    assert response.json()["code"] == code
    assert row(version_a) == before
    assert files_under(artifact_dirs.store) == []
    assert files_under(artifact_dirs.scratch) == []


def test_a4_multipart_upload_of_an_unsafe_archive_is_refused_the_same_way(
    api_a, version_a, artifact_dirs
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("bundle.tar.gz", tar_with_symlink())

    response = api_a.post(_url(version_a), {"file": upload}, format="multipart")

    assert response.status_code == 400
    assert response.json()["code"] == "link_member"
    assert files_under(artifact_dirs.store) == []
    assert files_under(artifact_dirs.scratch) == []


def test_archive_caps_come_from_the_settings(api_a, version_a, artifact_dirs, settings):
    settings.CIVITAS_BUNDLE_MAX_FILES = 3
    body = zip_bytes(
        {"model.onnx": tiny_model_bytes(), "a.json": b"{}", "b.json": b"{}", "c": b""}
    )

    response = put_raw(api_a, _url(version_a), body)

    assert response.status_code == 400
    assert response.json()["code"] == "too_many_files"


def test_a_valid_tar_gz_bundle_in_a_folder_is_accepted(api_a, version_a, artifact_dirs):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in (
            ("bundle/model.onnx", tiny_model_bytes()),
            ("bundle/config.json", b"{}"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))

    response = put_raw(api_a, _url(version_a), buffer.getvalue(), filename="b.tgz")

    assert response.status_code == 202, response.json()
    assert response.json()["artifact_format"] == "tar.gz"
    [stored] = files_under(artifact_dirs.store)
    assert stored.endswith(".tar.gz")
    assert files_under(artifact_dirs.scratch) == []
    assert artifacts.artifact_verify(version_id=version_a.pk) == "available"
    assert files_under(artifact_dirs.scratch) == []
