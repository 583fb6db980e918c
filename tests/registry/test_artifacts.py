"""Artifact upload, download, references and dataset files through the API.

Real PostgreSQL, real files: each test gets its own artifact store and
scratch directory (``artifact_dirs``) and checks them after refusals.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
import tracemalloc
from pathlib import Path

import psutil
import pytest
from django.core.files.uploadhandler import StopFutureHandlers
from django.urls import include, path
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema
from rest_framework.throttling import ScopedRateThrottle

from audit.models import AuditEvent
from config.exceptions import PayloadTooLarge
from registry.api.urls import artifact_patterns
from registry.models import ArtifactState, DatasetVersion, Visibility
from registry.services import artifacts
from registry.storage import DigestingUploadHandler
from tests.factories import (
    AIModelFactory,
    DatasetFactory,
    DatasetVersionFactory,
    ModelVersionFactory,
)
from tests.registry.artifact_bundles import (  # noqa: F401 - fixtures
    artifact_dirs_fixture,
    big_external_bundle,
    files_under,
    fresh_throttles,
    put_raw,
    row,
    tiny_model_bytes,
    zip_bytes,
)

pytestmark = pytest.mark.django_db

MB = 1024 * 1024
NOT_ALLOWED = "reference_not_allowed"
BAD_SCHEME = "reference_scheme_not_allowed"


@pytest.fixture
def version_a(agency_a, member_a):
    model = AIModelFactory(agency=agency_a, created_by=member_a)
    return ModelVersionFactory(model=model, created_by=member_a)


def _url(version, suffix: str = "artifact/") -> str:
    return f"/api/v1/model-versions/{version.pk}/{suffix}"


def _events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("seq"))


def _lm_bundle_zip(tmp_path: Path) -> bytes:
    """A real causal LM with KV cache and its tokenizer, zipped in a folder."""
    import modelgen

    cfg = modelgen.LMConfig(
        vocab_size=300, hidden_size=16, num_layers=2, num_heads=2, num_kv_heads=1,
        intermediate_size=32, max_position_embeddings=64,
    )  # fmt: skip
    texts = [t for _, t in modelgen.corpus_documents()]
    tokenizer = modelgen.train_tokenizer(texts, cfg.vocab_size)
    folder = tmp_path / "lm" / "assistant"
    modelgen.write_lm_bundle(folder, cfg, modelgen.init_weights(cfg, 0), tokenizer)
    members = {f"assistant/{p.name}": p.read_bytes() for p in sorted(folder.iterdir())}
    return zip_bytes(members, deflate=True)


# --- Upload ----------------------------------------------------------------


def test_raw_put_of_a_single_onnx_is_pending_until_a_worker_releases_it(
    api_a, version_a, artifact_dirs, member_a, django_capture_on_commit_callbacks
):
    body = tiny_model_bytes()

    with django_capture_on_commit_callbacks() as callbacks:
        response = put_raw(api_a, _url(version_a), body, filename="tiny.onnx")

    assert response.status_code == 202, response.json()
    assert len(callbacks) == 1  # civitas.artifact_verify, queued on commit
    digest = hashlib.sha256(body).hexdigest()
    data = response.json()
    assert data["artifact_state"] == "pending"
    assert data["artifact_digest"] == digest
    assert data["artifact_size"] == len(body)
    assert data["artifact_format"] == "onnx"
    assert data["kind"] == "generic"
    assert data["parameter_count"] == 2
    assert data["graph_inputs"] == [{"name": "x", "dtype": "float32", "shape": [2]}]
    assert data["released_at"] is None
    stored = row(version_a)
    assert stored["artifact_key"] == f"model-versions/{version_a.pk}/{digest}.onnx"
    assert stored["original_filename"] == "tiny.onnx"
    assert (artifact_dirs.store / stored["artifact_key"]).read_bytes() == body
    assert files_under(artifact_dirs.scratch) == []
    [event] = _events("model_version.artifact_uploaded")
    assert event.object_id == str(version_a.pk)
    assert event.actor_id == member_a.pk
    assert event.agency_slug == "city-a"

    # What the worker's civitas.artifact_verify does: self-test, then release.
    assert artifacts.artifact_verify(version_id=version_a.pk) == "available"

    released = row(version_a)
    assert released["released_at"] is not None
    assert released["selftest"]["passed"] is True
    assert released["selftest"]["output_shapes"] == [[2]]
    assert released["artifact_key"] == stored["artifact_key"]
    assert files_under(artifact_dirs.scratch) == []
    [verified] = _events("model_version.artifact_verified")
    assert verified.actor_id is None


def test_multipart_post_of_a_real_language_model_bundle_reads_its_graph(
    api_a, version_a, artifact_dirs, tmp_path
):
    body = _lm_bundle_zip(tmp_path)
    bundle = tmp_path / "assistant.zip"
    bundle.write_bytes(body)

    with open(bundle, "rb") as f:
        response = api_a.post(_url(version_a), {"file": f}, format="multipart")

    assert response.status_code == 202, response.json()
    data = response.json()
    assert data["artifact_digest"] == hashlib.sha256(body).hexdigest()
    assert data["artifact_format"] == "zip"
    assert data["original_filename"] == "assistant.zip"
    assert data["kind"] == "causal_lm_kv"
    assert data["num_layers"] == 2
    assert data["quantisation"] == "fp32"
    assert any(i["name"] == "input_ids" for i in data["graph_inputs"])
    assert files_under(artifact_dirs.store) == [
        f"model-versions/{version_a.pk}/{data['artifact_digest']}.zip"
    ]


def test_streamed_upload_of_200_mb_keeps_memory_flat_and_digest_exact(
    api_a, version_a, artifact_dirs, tmp_path
):
    bundle = big_external_bundle(tmp_path / "big.zip", 200 * MB)
    size = bundle.stat().st_size
    expected = hashlib.sha256()
    with open(bundle, "rb") as f:
        while chunk := f.read(MB):
            expected.update(chunk)
    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with open(bundle, "rb") as body:
            # The file object itself is the WSGI input: the test client never
            # holds the body in memory, so RSS shows the server side only.
            response = api_a.put(
                _url(version_a),
                data=None,
                content_type="application/octet-stream",
                **{"wsgi.input": body, "CONTENT_LENGTH": str(size)},
                HTTP_CONTENT_DISPOSITION='attachment; filename="big.zip"',
            )
    finally:
        elapsed = time.perf_counter() - started
        python_peak = tracemalloc.get_traced_memory()[1] / MB
        tracemalloc.stop()
        done.set()
        sampler.join()
    growth = (peak[0] - baseline) / MB
    print(
        f"\n200 MB streamed upload: {size / MB:.0f} MiB in {elapsed:.1f} s, "
        f"peak RSS growth {growth:.1f} MiB, peak Python allocations "
        f"{python_peak:.1f} MiB"
    )

    assert response.status_code == 202, response.json()
    assert growth < 64, f"RSS grew by {growth:.1f} MiB for a {size / MB:.0f} MiB body"
    assert python_peak < 64, f"{python_peak:.1f} MiB allocated at the peak"
    data = response.json()
    assert data["artifact_digest"] == expected.hexdigest()
    assert data["artifact_size"] == size
    assert data["weight_bytes"] == 200 * MB
    stored = artifact_dirs.store / row(version_a)["artifact_key"]
    assert stored.stat().st_size == size
    assert files_under(artifact_dirs.scratch) == []


def test_second_upload_is_a_conflict_and_changes_nothing(
    api_a, version_a, artifact_dirs
):
    assert put_raw(api_a, _url(version_a), tiny_model_bytes()).status_code == 202
    pending = put_raw(api_a, _url(version_a), tiny_model_bytes() + b"\x00")
    assert pending.status_code == 409
    assert pending.json()["code"] == "artifact_pending"
    artifacts.artifact_verify(version_id=version_a.pk)
    before = row(version_a)
    stored_before = files_under(artifact_dirs.store)

    again = put_raw(api_a, _url(version_a), tiny_model_bytes() + b"\x00")

    assert again.status_code == 409
    assert again.json()["code"] == "artifact_exists"
    assert row(version_a) == before
    assert files_under(artifact_dirs.store) == stored_before
    assert files_under(artifact_dirs.scratch) == []


@pytest.mark.parametrize(
    "filename",
    [
        "../../x.onnx",
        "..\\x.onnx",
        "/etc/x.onnx",
        "%2e%2e%2fx.onnx",
        "%252e%252e%252fx.onnx",
    ],
)
def test_a1_hostile_filename_is_metadata_only(
    api_a, version_a, artifact_dirs, tmp_path, filename
):
    response = put_raw(api_a, _url(version_a), tiny_model_bytes(), filename=filename)

    assert response.status_code == 202, response.json()
    stored = row(version_a)
    digest = stored["artifact_digest"]
    assert stored["artifact_key"] == f"model-versions/{version_a.pk}/{digest}.onnx"
    assert stored["original_filename"] == filename
    assert files_under(artifact_dirs.store) == [stored["artifact_key"]]
    assert not (tmp_path / "x.onnx").exists()
    assert not Path("/etc/x.onnx").exists()


def test_a1_filename_with_nul_and_control_characters_is_escaped(
    api_a, version_a, artifact_dirs
):
    response = put_raw(
        api_a,
        _url(version_a),
        tiny_model_bytes(),
        HTTP_CONTENT_DISPOSITION="attachment; filename*=UTF-8''evil%00%0a.onnx",
    )

    assert response.status_code == 202, response.json()
    assert row(version_a)["original_filename"] == "evil\\x00\\n.onnx"


def test_a2_upload_over_the_cap_is_413_and_leaves_no_temp_file(
    api_a, version_a, artifact_dirs, settings
):
    settings.CIVITAS_UPLOAD_MAX_BYTES = 4096
    before = row(version_a)

    declared = put_raw(api_a, _url(version_a), b"\x08" * 5000)
    assert declared.status_code == 413
    assert declared.json()["code"] == "payload_too_large"

    # The multipart Content-Length is within the cap plus envelope slack: only
    # the byte counter of the handler can refuse it.
    multipart = api_a.post(
        _url(version_a),
        {"file": _named_file(b"\x08" * 5000, "m.onnx")},
        format="multipart",
    )
    assert multipart.status_code == 413
    assert multipart.json()["code"] == "payload_too_large"
    assert row(version_a) == before
    assert files_under(artifact_dirs.store) == []
    assert files_under(artifact_dirs.scratch) == []


def test_a2_a_content_length_under_the_cap_reads_no_more_than_it_claims(
    api_a, version_a, artifact_dirs, settings
):
    settings.CIVITAS_UPLOAD_MAX_BYTES = 4096
    body = tiny_model_bytes() * 100

    response = put_raw(api_a, _url(version_a), body, CONTENT_LENGTH="4000")

    # 4000 bytes of a longer file are not a model; the rest was never read.
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_onnx"
    assert files_under(artifact_dirs.store) == []
    assert files_under(artifact_dirs.scratch) == []


def test_a2_chunked_body_without_content_length_is_411(api_a, version_a, artifact_dirs):
    response = put_raw(
        api_a,
        _url(version_a),
        tiny_model_bytes(),
        CONTENT_LENGTH="",
        HTTP_TRANSFER_ENCODING="chunked",
    )

    assert response.status_code == 411
    assert response.json()["code"] == "length_required"
    assert row(version_a)["artifact_state"] == ArtifactState.NONE
    assert files_under(artifact_dirs.scratch) == []


def test_a2_handler_counts_bytes_whatever_content_length_claims(
    artifact_dirs, settings
):
    settings.CIVITAS_UPLOAD_MAX_BYTES = 4096
    handler = DigestingUploadHandler()
    handler.handle_raw_input(None, {}, 100, None)
    with pytest.raises(StopFutureHandlers):
        handler.new_file("file", "x.onnx", "application/octet-stream", 100)
    path = handler.file.temporary_file_path()
    handler.receive_data_chunk(b"a" * 4096, 0)

    with pytest.raises(PayloadTooLarge):
        handler.receive_data_chunk(b"a", 4096)

    assert not os.path.exists(path)
    with pytest.raises(PayloadTooLarge):
        handler.handle_raw_input(None, {}, 4097, None)


def _named_file(content: bytes, name: str):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, content, content_type="application/octet-stream")


def test_a3_multipart_with_many_file_parts_is_400(api_a, version_a, artifact_dirs):
    parts = {f"file{i}": _named_file(b"x" * 10, f"f{i}.onnx") for i in range(1000)}

    response = api_a.post(_url(version_a), parts, format="multipart")

    assert response.status_code == 400
    assert response.json()["code"] == "too_many_parts"
    assert files_under(artifact_dirs.scratch) == []
    assert row(version_a)["artifact_state"] == ArtifactState.NONE


def test_multipart_with_two_file_parts_is_400(api_a, version_a, artifact_dirs):
    response = api_a.post(
        _url(version_a),
        {
            "file": _named_file(tiny_model_bytes(), "a.onnx"),
            "other": _named_file(tiny_model_bytes(), "b.onnx"),
        },
        format="multipart",
    )

    assert response.status_code == 400
    assert response.json()["code"] == "too_many_parts"
    assert files_under(artifact_dirs.scratch) == []
    assert files_under(artifact_dirs.store) == []


def test_multipart_without_a_file_part_is_400(api_a, version_a, artifact_dirs):
    response = api_a.post(_url(version_a), {"name": "x"}, format="multipart")

    assert response.status_code == 400
    assert response.json()["code"] == "missing_file"


def test_other_content_types_are_415(api_a, version_a, artifact_dirs):
    response = api_a.put(
        _url(version_a), data=b'{"a": 1}', content_type="application/json"
    )

    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


def test_empty_body_is_400(api_a, version_a, artifact_dirs):
    response = api_a.post(
        _url(version_a), {"file": _named_file(b"", "e.onnx")}, format="multipart"
    )

    assert response.status_code == 400
    assert response.json()["code"] == "empty_upload"
    assert files_under(artifact_dirs.scratch) == []


def test_uploads_are_throttled_by_the_upload_scope(
    api_a, artifact_dirs, agency_a, member_a, monkeypatch
):
    monkeypatch.setattr(
        ScopedRateThrottle,
        "THROTTLE_RATES",
        {**ScopedRateThrottle.THROTTLE_RATES, "upload": "2/hour"},
    )
    model = AIModelFactory(agency=agency_a, created_by=member_a)
    versions = [ModelVersionFactory(model=model) for _ in range(3)]

    codes = [put_raw(api_a, _url(v), tiny_model_bytes()).status_code for v in versions]

    assert codes == [202, 202, 429]
    assert api_a.get(_url(versions[2])).status_code == 200  # reads are not counted


# --- Permissions and tenancy --------------------------------------------------


def test_c1_other_agency_cannot_upload_or_read_a_private_version(
    api_b, version_a, artifact_dirs
):
    assert put_raw(api_b, _url(version_a), tiny_model_bytes()).status_code == 404
    assert api_b.get(_url(version_a)).status_code == 404
    assert api_b.get(_url(version_a, "download/")).status_code == 404
    assert files_under(artifact_dirs.scratch) == []


def test_reviewer_can_download_but_not_upload(
    api_reviewer, api_a, version_a, artifact_dirs
):
    assert put_raw(api_reviewer, _url(version_a), tiny_model_bytes()).status_code == 404
    assert put_raw(api_a, _url(version_a), tiny_model_bytes()).status_code == 202
    assert api_reviewer.get(_url(version_a, "download/")).status_code == 409
    artifacts.artifact_verify(version_id=version_a.pk)

    response = api_reviewer.get(_url(version_a, "download/"))

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == tiny_model_bytes()


def test_anonymous_caller_gets_401(anon, version_a, artifact_dirs):
    assert anon.get(_url(version_a, "download/")).status_code == 401
    assert put_raw(anon, _url(version_a), tiny_model_bytes()).status_code == 401
    assert anon.post(_url(version_a, "artifact/reference/"), {}).status_code == 401


# --- Download -------------------------------------------------------------------


def test_download_streams_the_stored_file_with_digest_headers(
    api_a, version_a, artifact_dirs, member_a
):
    body = tiny_model_bytes()
    put_raw(api_a, _url(version_a), body, filename="../../evil name.onnx")
    artifacts.artifact_verify(version_id=version_a.pk)
    digest = hashlib.sha256(body).digest()

    response = api_a.get(
        _url(version_a, "download/"), HTTP_ACCEPT="application/octet-stream"
    )

    assert response.status_code == 200
    assert response.streaming
    assert b"".join(response.streaming_content) == body
    assert response["Digest"] == "sha-256=" + base64.b64encode(digest).decode()
    assert response["X-Content-SHA256"] == digest.hex()
    assert response["Content-Length"] == str(len(body))
    slug = version_a.model.slug
    assert response["Content-Disposition"] == (
        f'attachment; filename="{slug}-{version_a.version}.onnx"'
    )
    [event] = _events("model_version.downloaded")
    assert event.actor_id == member_a.pk


def test_public_version_is_downloadable_by_another_agency(
    api_a, api_b, agency_a, member_a, artifact_dirs
):
    model = AIModelFactory(
        agency=agency_a, created_by=member_a, visibility=Visibility.PUBLIC
    )
    version = ModelVersionFactory(model=model)
    put_raw(api_a, _url(version), tiny_model_bytes())
    artifacts.artifact_verify(version_id=version.pk)

    response = api_b.get(_url(version, "download/"))

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == tiny_model_bytes()
    assert put_raw(api_b, _url(version), tiny_model_bytes()).status_code == 404


def test_download_without_an_artifact_is_409(api_a, version_a, artifact_dirs):
    response = api_a.get(_url(version_a, "download/"))

    assert response.status_code == 409
    assert response.json()["code"] == "artifact_not_available"
    assert _events("model_version.downloaded") == []


# --- By reference -----------------------------------------------------------------


@pytest.fixture
def drop(tmp_path, settings):
    """An allow-listed reference directory."""
    root = tmp_path / "drop"
    root.mkdir()
    settings.CIVITAS_REFERENCE_ROOTS = [str(root)]
    return root


def test_reference_makes_the_version_pending_and_queues_verification_on_commit(
    api_a, version_a, artifact_dirs, drop, django_capture_on_commit_callbacks
):
    path = drop / "tiny.onnx"
    path.write_bytes(tiny_model_bytes())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()

    with django_capture_on_commit_callbacks() as callbacks:
        response = api_a.post(
            _url(version_a, "artifact/reference/"),
            {"uri": path.as_uri(), "sha256": digest.upper()},
            format="json",
        )

    assert response.status_code == 202, response.json()
    assert response.json()["artifact_state"] == "pending"
    assert len(callbacks) == 1
    stored = row(version_a)
    assert stored["artifact_state"] == ArtifactState.PENDING
    assert stored["artifact_digest"] == digest
    assert stored["source_uri"] == path.as_uri()
    assert stored["released_at"] is None
    assert len(_events("model_version.artifact_referenced")) == 1
    download = api_a.get(_url(version_a, "download/"))
    assert download.status_code == 409
    assert download.json()["code"] == "artifact_not_available"
    again = api_a.post(
        _url(version_a, "artifact/reference/"),
        {"uri": path.as_uri(), "sha256": digest},
        format="json",
    )
    assert again.status_code == 409
    assert put_raw(api_a, _url(version_a), tiny_model_bytes()).status_code == 409


def _reference(client, version, uri: str, sha256: str = "a" * 64):
    return client.post(
        _url(version, "artifact/reference/"),
        {"uri": uri, "sha256": sha256},
        format="json",
    )


@pytest.mark.parametrize(
    ("make_uri", "code"),
    [
        (lambda drop, tmp: (tmp / "outside.onnx").as_uri(), NOT_ALLOWED),
        (lambda drop, tmp: f"file://{drop}/../outside.onnx", NOT_ALLOWED),
        (
            lambda drop, tmp: f"file://{drop}/%2e%2e/outside.onnx",
            "reference_not_allowed",
        ),
        (lambda drop, tmp: (drop / "escape" / "x.onnx").as_uri(), NOT_ALLOWED),
        (lambda drop, tmp: (drop / "link.onnx").as_uri(), NOT_ALLOWED),
        (lambda drop, tmp: f"file://evil.example{drop}/x.onnx", NOT_ALLOWED),
        (lambda drop, tmp: drop.as_uri(), NOT_ALLOWED),
        (lambda drop, tmp: "http://169.254.169.254/latest/meta-data", BAD_SCHEME),
        (lambda drop, tmp: "https://example.org/model.onnx", BAD_SCHEME),
        (lambda drop, tmp: "s3://models/city-a/model.zip", BAD_SCHEME),
        (lambda drop, tmp: "ftp://example.org/model.onnx", BAD_SCHEME),
        (lambda drop, tmp: str(drop / "x.onnx"), BAD_SCHEME),
    ],
    ids=[
        "outside", "dotdot", "encoded-dotdot", "symlinked-dir", "symlinked-file",
        "remote-host", "the-root-itself", "metadata-ip", "https", "s3-unconfigured",
        "ftp", "bare-path",
    ],
)  # fmt: skip
def test_c11_reference_outside_the_allow_list_is_400(
    api_a, version_a, artifact_dirs, drop, tmp_path, make_uri, code
):
    (tmp_path / "outside.onnx").write_bytes(tiny_model_bytes())
    (tmp_path / "elsewhere").mkdir()
    (drop / "escape").symlink_to(tmp_path / "elsewhere")
    (drop / "link.onnx").symlink_to(tmp_path / "outside.onnx")
    before = row(version_a)

    response = _reference(api_a, version_a, make_uri(drop, tmp_path))

    assert response.status_code == 400, response.json()
    assert response.json()["code"] == code
    assert row(version_a) == before


def test_reference_with_a_malformed_digest_is_400(api_a, version_a, drop):
    response = _reference(
        api_a, version_a, (drop / "x.onnx").as_uri(), sha256="not-a-digest"
    )

    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"
    assert "sha256" in response.json()["fields"]


def test_no_reference_roots_means_no_references(api_a, version_a, tmp_path, settings):
    settings.CIVITAS_REFERENCE_ROOTS = []
    (tmp_path / "x.onnx").write_bytes(tiny_model_bytes())

    response = _reference(api_a, version_a, (tmp_path / "x.onnx").as_uri())

    assert response.status_code == 400
    assert response.json()["code"] == "reference_not_allowed"


def test_verify_twice_is_safe_and_records_one_event(
    version_a, artifact_dirs, drop, member_a, django_capture_on_commit_callbacks
):
    path = drop / "tiny.onnx"
    path.write_bytes(tiny_model_bytes())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with django_capture_on_commit_callbacks():
        artifacts.model_version_artifact_reference(
            actor=member_a, version=version_a, uri=path.as_uri(), sha256=digest
        )

    first = artifacts.artifact_verify(version_id=version_a.pk)
    second = artifacts.artifact_verify(version_id=version_a.pk)

    assert (first, second) == (ArtifactState.AVAILABLE, "skipped")
    stored = row(version_a)
    assert stored["artifact_state"] == ArtifactState.AVAILABLE
    assert stored["released_at"] is not None
    assert files_under(artifact_dirs.store) == [stored["artifact_key"]]
    assert len(_events("model_version.artifact_verified")) == 1
    assert files_under(artifact_dirs.scratch) == []


def test_verify_refuses_a_file_swapped_for_a_symlink_after_registration(
    version_a, artifact_dirs, drop, tmp_path, member_a,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    path = drop / "tiny.onnx"
    path.write_bytes(tiny_model_bytes())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with django_capture_on_commit_callbacks():
        artifacts.model_version_artifact_reference(
            actor=member_a, version=version_a, uri=path.as_uri(), sha256=digest
        )
    secret = tmp_path / "secret.onnx"
    secret.write_bytes(tiny_model_bytes())
    path.unlink()
    path.symlink_to(secret)

    assert artifacts.artifact_verify(version_id=version_a.pk) == ArtifactState.FAILED

    stored = row(version_a)
    assert "outside the allowed directories" in stored["artifact_error"]
    assert files_under(artifact_dirs.store) == []


# --- Datasets -------------------------------------------------------------------


@pytest.fixture
def dataset_version_a(agency_a, member_a):
    dataset = DatasetFactory(agency=agency_a, created_by=member_a)
    return DatasetVersionFactory(dataset=dataset, created_by=member_a)


def test_dataset_file_upload_and_download(
    api_a, api_b, dataset_version_a, artifact_dirs
):
    body = b'{"q": "Opening hours?", "a": "9 to 5"}\n' * 100
    url = f"/api/v1/dataset-versions/{dataset_version_a.pk}/file/"

    response = put_raw(api_a, url, body, filename="../qa.jsonl")

    assert response.status_code == 201, response.json()
    digest = hashlib.sha256(body).hexdigest()
    assert response.json()["digest"] == digest
    assert response.json()["size_bytes"] == len(body)
    dataset_version_a.refresh_from_db()
    assert dataset_version_a.storage_key == (
        f"dataset-versions/{dataset_version_a.pk}/{digest}.jsonl"
    )
    assert dataset_version_a.original_filename == "../qa.jsonl"
    assert dataset_version_a.artifact_state == ArtifactState.AVAILABLE
    assert len(_events("dataset_version.file_uploaded")) == 1

    again = api_a.post(
        url, {"file": _named_file(b"other", "b.csv")}, format="multipart"
    )
    assert again.status_code == 409
    assert again.json()["code"] == "file_exists"

    download = api_a.get(f"/api/v1/dataset-versions/{dataset_version_a.pk}/download/")
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == body
    assert download["X-Content-SHA256"] == digest
    assert download["Content-Type"] == "application/octet-stream"
    assert len(_events("dataset_version.downloaded")) == 1

    assert (
        api_b.get(
            f"/api/v1/dataset-versions/{dataset_version_a.pk}/download/"
        ).status_code
        == 404
    )
    assert files_under(artifact_dirs.store) == [dataset_version_a.storage_key]


def test_dataset_file_of_any_format_is_not_inspected(
    api_a, dataset_version_a, artifact_dirs
):
    body = b"PAR1" + os.urandom(2048) + b"PAR1"
    url = f"/api/v1/dataset-versions/{dataset_version_a.pk}/file/"

    response = api_a.post(
        url, {"file": _named_file(body, "records.parquet")}, format="multipart"
    )

    assert response.status_code == 201, response.json()
    assert files_under(artifact_dirs.store) == [
        f"dataset-versions/{dataset_version_a.pk}/"
        f"{hashlib.sha256(body).hexdigest()}.parquet"
    ]


# --- Dataset files by reference ----------------------------------------------------


def _dataset_reference(client, dataset_version, uri: str, sha256: str = "a" * 64):
    return client.post(
        f"/api/v1/dataset-versions/{dataset_version.pk}/file/reference/",
        {"uri": uri, "sha256": sha256},
        format="json",
    )


def _dataset_row(dataset_version) -> dict:
    return DatasetVersion.objects.filter(pk=dataset_version.pk).values().get()


def test_dataset_reference_goes_pending_and_queues_verification_on_commit(
    api_a, anon, dataset_version_a, artifact_dirs, drop,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    path = drop / "qa.jsonl"
    path.write_bytes(b'{"q": "Opening hours?", "a": "9 to 5"}\n')
    digest = hashlib.sha256(path.read_bytes()).hexdigest()

    with django_capture_on_commit_callbacks() as callbacks:
        response = _dataset_reference(
            api_a, dataset_version_a, path.as_uri(), digest.upper()
        )

    assert response.status_code == 202, response.json()
    assert response.json()["artifact_state"] == "pending"
    assert response.json()["source_uri"] == path.as_uri()
    assert len(callbacks) == 1
    stored = _dataset_row(dataset_version_a)
    assert stored["artifact_state"] == ArtifactState.PENDING
    assert stored["digest"] == digest
    assert stored["source_uri"] == path.as_uri()
    assert stored["storage_key"] == ""
    assert len(_events("dataset_version.file_referenced")) == 1
    url = f"/api/v1/dataset-versions/{dataset_version_a.pk}/"
    assert api_a.get(f"{url}download/").status_code == 409
    again = _dataset_reference(api_a, dataset_version_a, path.as_uri(), digest)
    assert again.status_code == 409
    assert again.json()["code"] == "file_exists"
    assert put_raw(api_a, f"{url}file/", b"x").status_code == 409
    assert _dataset_reference(anon, dataset_version_a, path.as_uri()).status_code == 401


def test_dataset_reference_to_a_version_with_a_file_is_409(
    api_a, dataset_version_a, artifact_dirs, drop
):
    url = f"/api/v1/dataset-versions/{dataset_version_a.pk}/file/"
    assert put_raw(api_a, url, b"a,b\n1,2\n", filename="t.csv").status_code == 201
    (drop / "t.csv").write_bytes(b"a,b\n1,2\n")
    before = _dataset_row(dataset_version_a)

    response = _dataset_reference(api_a, dataset_version_a, (drop / "t.csv").as_uri())

    assert response.status_code == 409
    assert response.json()["code"] == "file_exists"
    assert _dataset_row(dataset_version_a) == before


@pytest.mark.parametrize(
    ("make_uri", "code"),
    [
        (lambda drop, tmp: (tmp / "outside.jsonl").as_uri(), NOT_ALLOWED),
        (lambda drop, tmp: f"file://{drop}/%2e%2e/outside.jsonl", NOT_ALLOWED),
        (lambda drop, tmp: (drop / "link.jsonl").as_uri(), NOT_ALLOWED),
        (lambda drop, tmp: "http://169.254.169.254/latest/meta-data", BAD_SCHEME),
        (lambda drop, tmp: "https://example.org/qa.jsonl", BAD_SCHEME),
    ],
    ids=["outside", "encoded-dotdot", "symlinked-file", "metadata-ip", "https"],
)
def test_c11_dataset_reference_outside_the_allow_list_is_400(
    api_a, dataset_version_a, artifact_dirs, drop, tmp_path, make_uri, code
):
    (tmp_path / "outside.jsonl").write_bytes(b"{}\n")
    (drop / "link.jsonl").symlink_to(tmp_path / "outside.jsonl")
    before = _dataset_row(dataset_version_a)

    response = _dataset_reference(api_a, dataset_version_a, make_uri(drop, tmp_path))

    assert response.status_code == 400, response.json()
    assert response.json()["code"] == code
    assert _dataset_row(dataset_version_a) == before


def test_dataset_verify_stores_the_file_once_and_a_mismatch_fails(
    agency_a, member_a, dataset_version_a, artifact_dirs, drop,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    body = b'{"q": "Opening hours?", "a": "9 to 5"}\n' * 50
    (drop / "qa.jsonl").write_bytes(body)
    digest = hashlib.sha256(body).hexdigest()
    dataset = dataset_version_a.dataset
    wrong = DatasetVersionFactory(dataset=dataset, created_by=member_a, version="9.9.9")
    with django_capture_on_commit_callbacks():
        for version, sha256 in ((dataset_version_a, digest), (wrong, "0" * 64)):
            artifacts.dataset_version_file_reference(
                actor=member_a,
                dataset_version=version,
                uri=(drop / "qa.jsonl").as_uri(),
                sha256=sha256,
            )

    first = artifacts.dataset_file_verify(dataset_version_id=dataset_version_a.pk)
    second = artifacts.dataset_file_verify(dataset_version_id=dataset_version_a.pk)
    mismatch = artifacts.dataset_file_verify(dataset_version_id=wrong.pk)

    assert (first, second) == (ArtifactState.AVAILABLE, "skipped")
    stored = _dataset_row(dataset_version_a)
    assert stored["digest"] == digest
    assert stored["size_bytes"] == len(body)
    assert stored["storage_key"] == (
        f"dataset-versions/{dataset_version_a.pk}/{digest}.jsonl"
    )
    assert len(_events("dataset_version.file_verified")) == 1
    assert mismatch == ArtifactState.FAILED
    failed = _dataset_row(wrong)
    assert failed["artifact_state"] == ArtifactState.FAILED
    assert digest in failed["artifact_error"]
    assert "0" * 64 in failed["artifact_error"]
    assert failed["digest"] == failed["storage_key"] == ""
    assert files_under(artifact_dirs.store) == [stored["storage_key"]]
    assert files_under(artifact_dirs.scratch) == []
    [event] = _events("dataset_version.file_verification_failed")
    assert event.payload_data["code"] == "digest_mismatch"


def test_artifact_sweep_requeues_stale_dataset_references(
    member_a, dataset_version_a, artifact_dirs, drop, settings,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    (drop / "qa.jsonl").write_bytes(b"{}\n")
    with django_capture_on_commit_callbacks():
        artifacts.dataset_version_file_reference(
            actor=member_a,
            dataset_version=dataset_version_a,
            uri=(drop / "qa.jsonl").as_uri(),
            sha256="a" * 64,
        )
    settings.CIVITAS_ARTIFACT_REQUEUE_MINUTES = 30
    with django_capture_on_commit_callbacks() as callbacks:
        assert artifacts.artifact_sweep() == {"requeued": 0}
    assert callbacks == []

    # Audit events cannot be back-dated (append-only): move the cutoff instead.
    settings.CIVITAS_ARTIFACT_REQUEUE_MINUTES = 0
    with django_capture_on_commit_callbacks() as callbacks:
        assert artifacts.artifact_sweep() == {"requeued": 1}
    assert len(callbacks) == 1


# --- Schema -----------------------------------------------------------------------


def test_openapi_schema_of_the_artifact_endpoints_validates_without_warnings():
    generator = SchemaGenerator(
        patterns=[path("api/v1/", include(artifact_patterns))]
    )
    GENERATOR_STATS.reset()

    schema = generator.get_schema(request=None, public=True)

    assert not GENERATOR_STATS, "drf-spectacular warned about the artifact views"
    validate_schema(schema)
    upload = schema["paths"]["/api/v1/model-versions/{id}/artifact/"]["put"]
    assert set(upload["requestBody"]["content"]) == {
        "application/octet-stream",
        "multipart/form-data",
    }
    assert {"202", "400", "401", "404", "409", "413", "415"} <= set(upload["responses"])
    download = schema["paths"]["/api/v1/model-versions/{id}/download/"]["get"]
    assert "application/octet-stream" in download["responses"]["200"]["content"]
    assert "/api/v1/dataset-versions/{id}/file/" in schema["paths"]
    assert "/api/v1/model-versions/{id}/artifact/reference/" in schema["paths"]
    assert "/api/v1/dataset-versions/{id}/file/reference/" in schema["paths"]
