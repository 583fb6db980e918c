"""Federation in one instance: the API, its tenancy, refusals, the approval guard.

The two-instance move lives in ``test_federation_instances``. Here a peer
is registered with this platform's own public key, which lets a bundle
exported here be imported back as the peer's (as another Civitas would).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.db import transaction

from audit import services as audit
from audit import signing
from audit.models import AuditEvent
from audit.verify import canonical_json
from config.exceptions import PolicyViolation
from governance.federation import bundle as fb
from governance.federation.services import bundle_export, bundle_import, peer_create
from governance.models import (
    Decision,
    FederatedAttestation,
    FederatedVersion,
    FederationImport,
    FederationPeer,
)
from governance.services import decisions as decision_services
from registry.models import AIModel, ArtifactState, ModelVersion
from tests.factories import ModelVersionFactory
from tests.governance.conftest import RATIONALE
from tests.registry.conftest import token_client

pytestmark = pytest.mark.django_db

EXPORTS = "/api/v1/federation/exports/"
IMPORTS = "/api/v1/federation/imports/"
PEERS = "/api/v1/federation/peers/"


@pytest.fixture
def noted_version(governed_version, maintainer_a):
    with transaction.atomic():
        audit.record(
            actor=maintainer_a, action="registry.version_noted", obj=governed_version
        )
    return governed_version


@pytest.fixture
def self_peer(platform_admin):
    """This platform trusted as a peer of itself (a stand-in for another Civitas)."""
    return peer_create(
        actor=platform_admin,
        name="civitas-self",
        base_url="https://civitas.self.example/",
        public_key_pem=signing.public_key_pem(),
        jurisdiction="FR",
    )


def _bundle_bytes(version, actor) -> bytes:
    out = io.BytesIO()
    bundle_export(actor=actor, version=version, out=out, include_artifacts=False)
    return out.getvalue()


def test_peers_are_kept_by_platform_admins_only(
    api_admin, api_reviewer, api_maintainer_a
):
    body = {
        "name": "civitas-nord",
        "base_url": "https://civitas.nord.example/",
        "public_key_pem": signing.public_key_pem(),
        "jurisdiction": "FR",
    }
    assert api_maintainer_a.get(PEERS).status_code == 403
    assert api_reviewer.post(PEERS, body, format="json").status_code == 403
    created = api_admin.post(PEERS, body, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["key_id"] == signing.platform_key_id()
    assert created.json()["agency"] == "fed-civitas-nord"
    assert [p["name"] for p in api_admin.get(PEERS).json()] == ["civitas-nord"]
    assert AuditEvent.objects.filter(action="federation.peer_added").count() == 1
    bad = api_admin.post(
        PEERS, {**body, "name": "x", "public_key_pem": "nope"}, format="json"
    )
    assert bad.status_code == 400 and "public_key_pem" in bad.json()["fields"]
    again = api_admin.post(PEERS, {**body, "name": "other"}, format="json")
    assert again.status_code == 400 and again.json()["code"] == "duplicate"
    assert FederationPeer.objects.count() == 1


def test_maintainers_and_oversight_export_a_signed_bundle_others_cannot(
    noted_version, maintainer_a, member_a, member_b, reviewer
):
    body = {"model_version": noted_version.pk}
    assert token_client(member_b).post(EXPORTS, body, format="json").status_code == 404
    assert token_client(member_a).post(EXPORTS, body, format="json").status_code == 403
    for user in (maintainer_a, reviewer):
        answer = token_client(user).post(EXPORTS, body, format="json")
        assert answer.status_code == 200
        assert answer["Content-Type"] == "application/gzip"
        data = b"".join(answer.streaming_content)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "b.tar.gz"
        archive.write_bytes(data)
        root = fb.extract(archive, Path(tmp) / "x")
        opened = fb.open_bundle(root, signing.public_key_pem())
    assert opened.metadata["version"]["origin_id"] == str(noted_version.pk)
    # The second bundle proves the first export's event too.
    assert [e["action"] for e in opened.events] == [
        "registry.version_noted",
        "federation.bundle_exported",
    ]
    exported = AuditEvent.objects.filter(action="federation.bundle_exported")
    assert exported.count() == 2 and exported.first().object_id == str(noted_version.pk)


def test_api_import_writes_the_peers_records_and_refuses_replays_and_garbage(
    noted_version, maintainer_a, api_admin, api_maintainer_a, self_peer, settings
):
    data = _bundle_bytes(noted_version, maintainer_a)
    upload = {"bundle": io.BytesIO(data), "peer": self_peer.pk}
    assert api_maintainer_a.post(IMPORTS, upload, format="multipart").status_code == 403
    answer = api_admin.post(IMPORTS, {"bundle": io.BytesIO(data)}, format="multipart")
    assert answer.status_code == 201, answer.json()
    summary = answer.json()["summary"]
    copy = ModelVersion.objects.get(pk=summary["model_version_id"])
    assert copy.model.agency == self_peer.agency and copy.pk != noted_version.pk
    assert copy.status == "draft" and copy.federated.origin_id == str(noted_version.pk)
    assert AuditEvent.objects.filter(action="federation.bundle_imported").count() == 1
    listed = api_admin.get(IMPORTS).json()
    assert [(i["peer"], i["summary"]["model_version_id"]) for i in listed] == [
        ("civitas-self", copy.pk)
    ]
    assert api_maintainer_a.get(IMPORTS).status_code == 403
    counts = _counts()
    replay = api_admin.post(IMPORTS, {"bundle": io.BytesIO(data)}, format="multipart")
    assert replay.status_code == 409 and replay.json()["code"] == "replayed"
    garbage = api_admin.post(
        IMPORTS, {"bundle": io.BytesIO(b"not a bundle")}, format="multipart"
    )
    assert garbage.status_code == 400 and garbage.json()["code"] == "malformed"
    settings.CIVITAS_UPLOAD_MAX_BYTES = len(data) - 1
    big = api_admin.post(IMPORTS, {"bundle": io.BytesIO(data)}, format="multipart")
    assert big.status_code == 413
    assert _counts() == counts


def _counts() -> tuple[int, ...]:
    return tuple(
        m.objects.count()
        for m in (
            AIModel,
            ModelVersion,
            FederationImport,
            FederatedVersion,
            FederatedAttestation,
            AuditEvent,
        )
    )


def test_an_imported_version_is_never_approved_here(kit, platform_admin, self_peer):
    use_case = kit.in_review()
    version = use_case.model_version
    with transaction.atomic():
        record = FederationImport.objects.create(
            peer=self_peer, origin_model_id="9", tree_size=1, root_hash="0" * 64,
            bundle_sha256="0" * 64, model=version.model,
        )  # fmt: skip
        FederatedVersion.objects.create(
            model_version=version, peer=self_peer, origin_id="9", last_import=record
        )
    before = Decision.objects.count()
    with pytest.raises(PolicyViolation) as refused:
        decision_services.use_case_approve(
            actor=kit.reviewers[0], use_case=use_case, rationale=RATIONALE
        )
    assert refused.value.code == "imported_version"
    assert Decision.objects.count() == before


def test_an_unsafe_archive_is_refused_as_malformed_and_writes_nothing(
    self_peer, tmp_path
):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../manifest.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    counts = _counts()
    with pytest.raises(Exception) as refused:
        bundle_import(actor=None, archive=archive, peer=self_peer)
    assert refused.value.code == "malformed"
    assert _counts() == counts


def _resigned(data: bytes, change) -> io.BytesIO:
    """The bundle with ``change(members)`` applied, its manifest re-signed here."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    change(members)
    manifest = json.loads(members["manifest.json"])
    for name in manifest["members"]:
        manifest["members"][name] = fb.sha256_hex(members[name])
    members["manifest.json"] = canonical_json(manifest)
    members["manifest.dsse.json"] = canonical_json(
        signing.sign_envelope(members["manifest.json"], fb.PAYLOAD_TYPE)
    )
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    out.seek(0)
    return out


def _refused_after(client, data: bytes, change, code: str) -> None:
    """The bundle changed and re-signed is refused with ``code``; nothing written."""
    counts = _counts()
    answer = client.post(
        IMPORTS, {"bundle": _resigned(data, change)}, format="multipart"
    )
    assert answer.status_code == 400 and answer.json()["code"] == code
    assert _counts() == counts


def test_a_consistency_proof_is_checked_against_the_last_import(
    noted_version, maintainer_a, api_admin, self_peer
):
    first = _bundle_bytes(noted_version, maintainer_a)
    answer = api_admin.post(IMPORTS, {"bundle": io.BytesIO(first)}, format="multipart")
    assert answer.status_code == 201
    size = answer.json()["tree_size"]
    out = io.BytesIO()
    bundle_export(
        actor=maintainer_a,
        version=noted_version,
        out=out,
        include_artifacts=False,
        since_tree_size=size,
    )

    def forge(members):
        proof = json.loads(members[fb.CONSISTENCY])
        proof["path"] = ["0" * 64, *proof["path"][1:]]
        members[fb.CONSISTENCY] = canonical_json(proof)

    _refused_after(api_admin, out.getvalue(), forge, "bad_proof")
    good = api_admin.post(
        IMPORTS, {"bundle": io.BytesIO(out.getvalue())}, format="multipart"
    )
    assert good.status_code == 201
    assert good.json()["summary"]["consistent_with_last"] is True


def test_artifacts_travel_with_their_digest(maintainer_a, api_admin, self_peer):
    content = b"onnx weights " * 1000
    key = storages["artifacts"].save("tests/fed-artifact.zip", ContentFile(content))
    version = ModelVersionFactory(
        model__agency=maintainer_a.membership.agency,
        artifact_state=ArtifactState.AVAILABLE,
        artifact_key=key,
        artifact_digest=hashlib.sha256(content).hexdigest(),
        original_filename="bundle.zip",
    )
    out = io.BytesIO()
    bundle_export(actor=maintainer_a, version=version, out=out, include_artifacts=True)

    def swap(members):
        members["artifacts/bundle.zip"] = b"other weights"

    _refused_after(api_admin, out.getvalue(), swap, "digest_mismatch")
    answer = api_admin.post(
        IMPORTS, {"bundle": io.BytesIO(out.getvalue())}, format="multipart"
    )
    assert answer.status_code == 201, answer.json()
    assert answer.json()["summary"]["artifact_stored"] is True
    copy = ModelVersion.objects.get(pk=answer.json()["summary"]["model_version_id"])
    with storages["artifacts"].open(copy.artifact_key, "rb") as stored:
        assert stored.read() == content
    assert copy.artifact_digest == version.artifact_digest


def test_two_models_of_one_slug_stay_two_models(
    noted_version, maintainer_a, agency_b, api_admin, self_peer
):
    twin = ModelVersionFactory(
        model__agency=agency_b, model__slug=noted_version.model.slug, version="2.0.0"
    )
    ids = []
    for version in (noted_version, twin):
        data = _bundle_bytes(version, maintainer_a)
        answer = api_admin.post(
            IMPORTS, {"bundle": io.BytesIO(data)}, format="multipart"
        )
        assert answer.status_code == 201, answer.json()
        ids.append(answer.json()["summary"]["model_id"])
        assert answer.json()["summary"]["origin_agency"]["slug"] == (
            version.model.agency.slug
        )
    models = AIModel.objects.filter(pk__in=ids).order_by("pk")
    assert [m.slug for m in models] == [
        noted_version.model.slug,
        f"{twin.model.slug}-{twin.model_id}",
    ]
    assert {m.agency_id for m in models} == {self_peer.agency_id}


def test_decision_and_evaluation_attestations_are_kept_as_the_peers(
    kit, maintainer_a, self_peer
):
    use_case = kit.approved()
    version = use_case.model_version
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "b.tar.gz"
        archive.write_bytes(_bundle_bytes(version, maintainer_a))
        record = bundle_import(actor=None, archive=archive, peer=self_peer)
    kinds = sorted(a.kind for a in record.attestations.all())
    assert kinds == ["decision"]
    assert {a.key_id for a in record.attestations.all()} == {self_peer.key_id}
    actions = {e["action"] for e in record.events}
    assert {"use_case.approved", "use_case.submitted"} <= actions, actions
    assert record.summary["origin_status"] == "approved"
    copy = ModelVersion.objects.get(pk=record.summary["model_version_id"])
    assert copy.status == "draft"


def test_records_that_fail_their_validators_are_refused_as_malformed(
    noted_version, maintainer_a, api_admin, self_peer
):
    def corrupt(members):
        meta = json.loads(members["metadata.json"])
        meta["version"]["artifact_digest"] = "../../etc/passwd"
        meta["version"]["version"] = "not a version"
        members["metadata.json"] = canonical_json(meta)

    _refused_after(
        api_admin, _bundle_bytes(noted_version, maintainer_a), corrupt, "malformed"
    )
