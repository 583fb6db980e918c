"""Two Civitas instances: a model moves from A (this test's database) to B.

B is a second PostgreSQL database, migrated and driven by ``manage.py``
subprocesses with their own var directory, hence their own signing key. A's
public key is registered in B as a trusted peer; then the bundle is
imported, read back from B's tables, and tampered, wrongly signed, falsely
proven and replayed bundles are each refused with their reason and leave
B's tables as they were.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.db import transaction

from audit import services as audit
from audit import signing
from audit.verify import canonical_json, key_id, pae
from governance.federation import bundle as fb
from governance.federation.services import bundle_export
from governance.services.attestations import attestation_for_run
from registry.models import ModelVersionDataset, Visibility
from tests.conftest import ROOT, database_url, process_env
from tests.factories import DatasetVersionFactory

pytestmark = pytest.mark.django_db(transaction=True)

B_TABLES = (
    "registry_aimodel",
    "registry_modelversion",
    "registry_datasetversion",
    "governance_federationimport",
    "governance_federatedversion",
    "governance_federatedattestation",
    "governance_auditevent",
)


@pytest.fixture(scope="module")
def instance_b(tmp_path_factory):
    """B: its own database (migrated here) and var directory (own key)."""
    base = database_url().rsplit("/", 1)[0]
    name = "civitas_fedtest_b_" + Path(ROOT).name.replace("-", "_")[:20]
    admin = psycopg.connect(f"{base}/postgres", autocommit=True)
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.execute(f'CREATE DATABASE "{name}"')
    var = tmp_path_factory.mktemp("instance-b")
    env = process_env(
        DATABASE_URL=f"{base}/{name}",
        CIVITAS_VAR_DIR=str(var),
        CIVITAS_SIGNING_KEY_GENERATE="true",
    )
    env.pop("CIVITAS_SIGNING_KEY_FILE", None)
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    yield {"env": env, "url": f"{base}/{name}", "var": var}
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def _b(instance_b, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT, env=instance_b["env"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _b_counts(instance_b) -> dict[str, int]:
    with psycopg.connect(instance_b["url"]) as conn:
        return {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in B_TABLES
        }


def _b_query(instance_b, sql: str, *params):
    with psycopg.connect(instance_b["url"]) as conn:
        return conn.execute(sql, params).fetchall()


@pytest.fixture
def federated(governed_version, maintainer_a, small_suite, make_run):
    """A's version with a public dataset, a run, its attestation, an event."""
    agency = maintainer_a.membership.agency
    dataset = DatasetVersionFactory(
        dataset__agency=agency,
        dataset__slug="service-faq",
        dataset__name="Service FAQ",
        dataset__visibility=Visibility.PUBLIC,
        digest="c" * 64,
    )
    ModelVersionDataset.objects.create(
        model_version=governed_version, dataset_version=dataset, role="training"
    )
    run = make_run(governed_version, small_suite, metrics={"perplexity.ppl": 12.5})
    with transaction.atomic():
        attestation_for_run(run=run)
        audit.record(
            actor=maintainer_a, action="registry.version_noted", obj=governed_version
        )
    return governed_version


def _export(version, actor, path: Path, since=None) -> dict:
    with path.open("wb") as out:
        return bundle_export(
            actor=actor,
            version=version,
            out=out,
            include_artifacts=False,
            since_tree_size=since,
        )


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def _repack(path: Path, members: dict[str, bytes]) -> Path:
    out = path.with_name(path.stem + "-altered.tar.gz")
    with tarfile.open(out, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def _sign_with(key: Ed25519PrivateKey, manifest: bytes, keyid: str) -> bytes:
    envelope = {
        "payload": base64.b64encode(manifest).decode(),
        "payloadType": fb.PAYLOAD_TYPE,
        "signatures": [
            {
                "keyid": keyid,
                "sig": base64.b64encode(
                    key.sign(pae(fb.PAYLOAD_TYPE, manifest))
                ).decode(),
            }
        ],
    }
    return canonical_json(envelope)


def _refused(instance_b, bundle: Path, reason: str, *extra) -> None:
    before = _b_counts(instance_b)
    done = _b(instance_b, "federation_import", str(bundle), *extra)
    assert done.returncode == 2, (done.stdout, done.stderr[-2000:])
    assert f"refused: {reason}:" in done.stderr
    assert _b_counts(instance_b) == before


def test_a_model_moves_from_a_to_b_and_every_bad_bundle_is_refused(
    instance_b, federated, maintainer_a, tmp_path
):
    first = tmp_path / "first.tar.gz"
    manifest = _export(federated, maintainer_a, first)
    pem = tmp_path / "a.pem"
    pem.write_text(signing.public_key_pem())

    # A bundle signed by an unknown platform's key: no peer trusts it yet.
    _refused(instance_b, first, "unknown_key")

    trust = ["--trust", "civitas-a", "--public-key", str(pem), "--jurisdiction", "FR"]
    done = _b(instance_b, "federation_import", str(first), *trust)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["tree_size"] == manifest["tree_size"]
    assert summary["attestations"] == 1 and summary["datasets"] == 1
    assert summary["events"] == 1  # the version_noted event, with its proof

    # B holds the model under the peer's agency, with its origin.
    rows = _b_query(
        instance_b,
        "SELECT m.slug, a.slug, v.version, v.status, v.artifact_digest, "
        "f.origin_id, p.name, p.key_id "
        "FROM governance_federatedversion f "
        "JOIN registry_modelversion v ON v.id = f.model_version_id "
        "JOIN registry_aimodel m ON m.id = v.model_id "
        "JOIN registry_agency a ON a.id = m.agency_id "
        "JOIN governance_federationpeer p ON p.id = f.peer_id",
    )
    assert rows == [
        (
            federated.model.slug, "fed-civitas-a", federated.version, "draft",
            federated.artifact_digest, str(federated.pk), "civitas-a",
            signing.platform_key_id(),
        )
    ]  # fmt: skip
    stored = _b_query(
        instance_b, "SELECT key_id, kind FROM governance_federatedattestation"
    )
    assert stored == [(signing.platform_key_id(), "evaluation")]
    events = _b_query(
        instance_b,
        "SELECT count(*) FROM governance_auditevent "
        "WHERE action = 'federation.bundle_imported'",
    )
    assert events == [(1,)]
    # B is another platform: it signs with a key of its own.
    b_key = _b(
        instance_b,
        "shell",
        "-c",
        "from audit import signing; print(signing.platform_key_id())",
    )
    assert b_key.returncode == 0, b_key.stderr[-2000:]
    assert b_key.stdout.strip() not in ("", signing.platform_key_id())

    members = _members(first)
    # Tampered: one byte changed in a member.
    tampered = dict(members)
    meta = bytearray(tampered["metadata.json"])
    meta[meta.index(b"intended_use") + 20] ^= 0x01
    tampered["metadata.json"] = bytes(meta)
    _refused(instance_b, _repack(first, tampered), "digest_mismatch")

    # Signed by a wrong key that claims A's key id.
    wrong = dict(members)
    wrong["manifest.dsse.json"] = _sign_with(
        Ed25519PrivateKey.generate(),
        members["manifest.json"],
        signing.platform_key_id(),
    )
    _refused(instance_b, _repack(first, wrong), "bad_signature", "--peer", "civitas-a")

    # Signed by an unknown key under its own id.
    stranger = Ed25519PrivateKey.generate()
    unknown = dict(members)
    unknown["manifest.dsse.json"] = _sign_with(
        stranger, members["manifest.json"], key_id(stranger.public_key())
    )
    _refused(instance_b, _repack(first, unknown), "unknown_key")

    # A falsified proof, correctly signed: the events do not reach the root.
    forged = dict(members)
    events = json.loads(members["events.json"])
    events[0]["proof"] = ["0" * 64, *events[0]["proof"][1:]]
    forged["events.json"] = canonical_json(events)
    manifest_doc = json.loads(members["manifest.json"])
    manifest_doc["members"]["events.json"] = fb.sha256_hex(forged["events.json"])
    forged["manifest.json"] = canonical_json(manifest_doc)
    forged["manifest.dsse.json"] = canonical_json(
        signing.sign_envelope(forged["manifest.json"], fb.PAYLOAD_TYPE)
    )
    _refused(instance_b, _repack(first, forged), "bad_proof")

    # Replay: the same bundle again, then an older one after a newer one.
    _refused(instance_b, first, "replayed")
    with transaction.atomic():
        audit.record(actor=maintainer_a, action="registry.version_noted", obj=federated)
    second = tmp_path / "second.tar.gz"
    newer = _export(federated, maintainer_a, second, since=manifest["tree_size"])
    assert newer["tree_size"] > manifest["tree_size"]
    done = _b(instance_b, "federation_import", str(second))
    assert done.returncode == 0, done.stderr[-3000:]
    # B checked that A's newer tree extends the one it imported before.
    assert json.loads(done.stdout)["consistent_with_last"] is True
    assert _b_query(instance_b, "SELECT count(*) FROM governance_federatedversion") == [
        (1,)
    ]
    _refused(instance_b, first, "replayed")
