"""Federation: trusted peers, signed bundle export, verified import.

``peer_create`` registers another Civitas (its public key and a local agency
that will hold what it publishes). ``bundle_export`` writes one version's
bundle (see ``governance.federation.bundle``) signed with this platform's
key. ``bundle_import`` checks a bundle against the peer's key, the digests,
the inclusion proofs and the replay rule, then writes the model, version,
licence, datasets and the peer's attestations in one transaction with one
audit event; a refusal writes nothing.
"""

from __future__ import annotations

import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify

from audit import services as audit
from audit import signing
from audit.models import AuditEvent
from audit.verify import VerificationError, format_timestamp, key_id, load_public_key
from audit.verify import parse_json as _parse
from config.exceptions import DomainError, PolicyViolation
from governance.federation import bundle as fb
from governance.models import (
    Attestation,
    FederatedAttestation,
    FederatedVersion,
    FederationImport,
    FederationPeer,
)
from registry.models import (
    Agency,
    AIModel,
    Dataset,
    DatasetVersion,
    Licence,
    ModelVersion,
    ModelVersionDataset,
    Visibility,
)
from registry.selectors import is_platform_admin
from registry.services.releases import refuse_failed_derivation
from registry.storage import artifact_storage

MODEL_FIELDS = ("name", "slug", "task", "domain", "description", "intended_use")
MODEL_FIELDS += ("out_of_scope_uses",)
VERSION_FIELDS = (
    "version", "artifact_digest", "artifact_size", "artifact_format",
    "graph_inputs", "graph_outputs", "opsets", "parameter_count", "weight_bytes",
    "kind", "layout", "num_layers", "quantisation", "derivation", "training_run",
    "training_jurisdiction", "training_hardware", "training_energy_kwh",
    "hosting_jurisdiction", "limitations", "risks", "ethical_considerations",
)  # fmt: skip
DATASET_FIELDS = (
    "version", "motivation", "composition", "collection_process", "preprocessing",
    "intended_uses", "distribution", "maintenance", "languages", "record_count",
    "origin_jurisdiction", "personal_data", "legal_basis", "digest", "size_bytes",
)  # fmt: skip
LICENCE_FIELDS = ("expression", "spdx_ids", "name", "is_osi_approved")


class FederationRefused(DomainError):
    """A bundle refused on import: ``code`` is the machine-readable reason."""

    default_code = "malformed"


class FederationReplayed(FederationRefused):
    status_code = 409


def _require_admin(actor) -> None:
    """Platform administrators, or the platform itself (None: manage.py)."""
    if actor is not None and not is_platform_admin(actor):
        raise PolicyViolation(
            "Only platform administrators manage federation.", code="not_admin"
        )


# --- Peers ----------------------------------------------------------------------


@transaction.atomic
def peer_create(
    *, actor, name: str, base_url: str, public_key_pem: str, jurisdiction: str
) -> FederationPeer:
    """Trust another Civitas: its key, and a local agency for what it publishes."""
    _require_admin(actor)
    try:
        kid = key_id(load_public_key(public_key_pem))
    except VerificationError as exc:
        raise DomainError(
            "Not an Ed25519 public key in PEM.",
            code="invalid",
            fields={"public_key_pem": [str(exc)]},
        ) from exc
    if FederationPeer.objects.filter(Q(name=name) | Q(key_id=kid)).exists():
        raise DomainError(
            "This peer or key is already trusted.",
            code="duplicate",
            fields={"name": ["A peer with this name or key exists."]},
        )
    agency = Agency.objects.create(
        name=f"{name} (federated)",
        slug=f"fed-{slugify(name)}"[:80],
        jurisdiction=jurisdiction,
        description=f"Models published by the federated platform {base_url}.",
    )
    peer = FederationPeer.objects.create(
        name=name,
        base_url=base_url,
        public_key_pem=public_key_pem.strip() + "\n",
        key_id=kid,
        agency=agency,
    )
    audit.record(
        actor=actor,
        action="federation.peer_added",
        obj=peer,
        agency=agency,
        payload={"name": name, "base_url": base_url, "key_id": kid},
    )
    return peer


# --- Export -----------------------------------------------------------------------


def _plain(obj, fields) -> dict[str, Any]:
    out = {}
    for name in fields:
        value = getattr(obj, name)
        out[name] = str(value) if isinstance(value, Decimal) else value
    return out


def _metadata(version: ModelVersion) -> dict[str, Any]:
    links = version.dataset_links.select_related(
        "dataset_version__dataset", "dataset_version__licence"
    )
    base = version.base_version
    return {
        "model": {
            "origin_id": str(version.model_id),
            "agency": {
                "name": version.model.agency.name,
                "slug": version.model.agency.slug,
            },
            **_plain(version.model, MODEL_FIELDS),
        },
        "version": {
            "origin_id": str(version.pk),
            "status": version.status,
            "released_at": version.released_at,
            **_plain(version, VERSION_FIELDS),
        },
        "licence": _plain(version.licence, LICENCE_FIELDS),
        "lineage": {
            "base_version": (
                {
                    "origin_id": str(base.pk),
                    "model": base.model.slug,
                    "version": base.version,
                }
                if base is not None
                else None
            ),
        },
        "datasets": [
            {
                "origin_id": str(link.dataset_version_id),
                "role": link.role,
                "dataset": {
                    "name": link.dataset_version.dataset.name,
                    "slug": link.dataset_version.dataset.slug,
                },
                "licence": _plain(link.dataset_version.licence, LICENCE_FIELDS),
                **_plain(link.dataset_version, DATASET_FIELDS),
            }
            for link in links
        ],
    }


def _attestations(version: ModelVersion) -> list[dict[str, Any]]:
    rows = Attestation.objects.filter(
        Q(run__model_version=version) | Q(decision__model_version=version)
    ).order_by("id")
    return [
        {
            "kind": "evaluation" if a.run_id else "decision",
            "origin_id": str(a.pk),
            "payload_type": a.payload_type,
            "statement": a.statement,
            "statement_sha256": a.statement_sha256,
            "envelope": a.envelope,
            "key_id": a.key_id,
        }
        for a in rows
    ]


def _events(version: ModelVersion, size: int) -> list[dict[str, Any]]:
    pairs = [
        ("registry.aimodel", version.model_id),
        ("registry.modelversion", version.pk),
    ]
    pairs += [
        ("governance.evaluationrun", pk)
        for pk in version.evaluations.values_list("pk", flat=True)
    ]
    pairs += [
        ("governance.decision", pk)
        for pk in version.decisions.values_list("pk", flat=True)
    ]
    # Decisions are recorded on their use case.
    pairs += [
        ("governance.usecase", pk)
        for pk in version.use_cases.values_list("pk", flat=True)
    ]
    query = Q(pk__in=[])
    for object_type, pk in pairs:
        query |= Q(object_type=object_type, object_id=str(pk))
    out = []
    for event in AuditEvent.objects.filter(query, seq__lte=size).order_by("seq"):
        row = {name: getattr(event, name) for name in fb.EVENT_FIELDS}
        row["created_at"] = format_timestamp(event.created_at)
        row["payload"] = _parse(event.payload)
        row["proof"] = audit.inclusion_proof(event, size).path
        out.append(row)
    return out


def bundle_export(
    *,
    actor,
    version: ModelVersion,
    out: BinaryIO,
    include_artifacts: bool,
    since_tree_size: int | None = None,
) -> dict[str, Any]:
    """Write ``version``'s signed bundle to ``out``; return its manifest.

    The caller has checked that ``actor`` may export it (its agency's
    maintainers, oversight). The newest tree head is signed first, so the
    bundle proves every event up to now; the export is then one audit event.
    ``since_tree_size`` (the size the importer last saw) adds a consistency
    proof from that tree to this one. Raises DomainError ``invalid`` for a
    size beyond the new tree.
    """
    if hasattr(version, "federated"):
        raise DomainError(
            "An imported version is exported by its own platform.", code="imported"
        )
    refuse_failed_derivation(version, "exported")
    audit.checkpoint_create()
    head = audit.tree_head_latest()
    parts = {
        "metadata.json": _metadata(version),
        "attestations.json": _attestations(version),
        "events.json": _events(version, head.tree_size),
        "tree_head.json": head.to_dict(),
    }
    if since_tree_size:
        try:
            proof = audit.consistency_proof(since_tree_size, head.tree_size)
        except audit.ProofError as exc:
            raise DomainError(
                str(exc),
                code="invalid",
                fields={"since_tree_size": ["Not a size of this platform's tree."]},
            ) from exc
        parts[fb.CONSISTENCY] = proof.to_dict()
    artifacts = []
    if include_artifacts and version.artifact_key:
        name = Path(version.original_filename or "artifact").name

        def opener():
            return artifact_storage().open(version.artifact_key, "rb")

        artifacts.append((name, opener))
    header = {
        "exporter": {
            "key_id": signing.platform_key_id(),
            "public_key_pem": signing.public_key_pem(),
        },
        "exported_at": format_timestamp(timezone.now()),
        "model": {
            "origin_id": str(version.model_id),
            "version_origin_id": str(version.pk),
        },
        "tree_size": head.tree_size,
        "root_hash": head.root_hash,
    }
    manifest = fb.write_bundle(
        out=out,
        parts=parts,
        header=header,
        artifacts=artifacts,
        sign=signing.sign_envelope,
    )
    with transaction.atomic():
        audit.record(
            actor=actor,
            action="federation.bundle_exported",
            obj=version,
            payload={
                "tree_size": head.tree_size,
                "root_hash": head.root_hash,
                "members": manifest["members"],
            },
        )
    return manifest


# --- Import -----------------------------------------------------------------------


def _licence(data: dict[str, Any]) -> Licence:
    licence, _ = Licence.objects.get_or_create(
        expression=data["expression"],
        defaults={k: data[k] for k in LICENCE_FIELDS if k != "expression"},
    )
    return licence


def _peer_user(peer: FederationPeer):
    """The inactive account that authors the peer's records here (no password)."""
    user, created = get_user_model().objects.get_or_create(
        username=peer.agency.slug, defaults={"is_active": False}
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def _dataset_links(version: ModelVersion, peer: FederationPeer, data) -> int:
    count, author = 0, _peer_user(peer)
    for item in data:
        slug, number = item["dataset"]["slug"], item["version"]
        dataset = Dataset.objects.filter(
            agency=peer.agency, slug=slug
        ).first() or _checked_create(
            Dataset(
                agency=peer.agency,
                slug=slug,
                name=item["dataset"]["name"],
                visibility=Visibility.PUBLIC,
                created_by=author,
            )
        )
        fields = {k: item[k] for k in DATASET_FIELDS if k != "version"}
        dataset_version = DatasetVersion.objects.filter(
            dataset=dataset, version=number
        ).first() or _checked_create(
            DatasetVersion(
                dataset=dataset,
                version=number,
                **fields,
                licence=_licence(item["licence"]),
                created_by=author,
            )
        )
        ModelVersionDataset.objects.get_or_create(
            model_version=version, dataset_version=dataset_version, role=item["role"]
        )
        count += 1
    return count


def _store_artifact(version: ModelVersion, opened: fb.OpenedBundle) -> bool:
    for name, path in opened.artifacts.items():
        if fb.file_sha256(path) != version.artifact_digest:
            raise FederationRefused(
                f"The artifact {name} is not the version's digest.",
                code="digest_mismatch",
            )
        key = f"federation/{version.model.agency.slug}/{version.artifact_digest}/{name}"
        with path.open("rb") as src:
            stored = artifact_storage().save(key, File(src, name=name))
        version.artifact_key, version.original_filename = stored, name
        version.artifact_state = "available"
        version.save(
            update_fields=["artifact_key", "original_filename", "artifact_state"]
        )
        return True
    return False


def _model_of(peer: FederationPeer, data: dict[str, Any]) -> AIModel:
    """The local copy of the peer's model: found by origin id, else created.

    Two of the peer's agencies may use one slug: a taken slug gets the
    origin id appended.
    """
    origin = str(data["origin_id"])
    earlier = FederationImport.objects.filter(peer=peer, origin_model_id=origin)
    found = earlier.select_related("model").first()
    if found is not None:
        return found.model
    slug = data["slug"]
    if AIModel.objects.filter(agency=peer.agency, slug=slug).exists():
        slug = f"{slug[: 79 - len(origin)]}-{origin}"
    return _checked_create(
        AIModel(
            agency=peer.agency,
            slug=slug,
            **{k: data[k] for k in MODEL_FIELDS if k != "slug"},
            visibility=Visibility.PUBLIC,
            created_by=_peer_user(peer),
        )
    )


def _checked_create(obj):
    """Save ``obj`` after its field validators (slugs, versions, digests) pass."""
    obj.full_clean(validate_unique=False, validate_constraints=False)
    obj.save(force_insert=True)
    return obj


def _write(peer: FederationPeer, opened: fb.OpenedBundle, actor, sha: str):
    meta = opened.metadata
    model_data, version_data = meta["model"], meta["version"]
    model = _model_of(peer, model_data)
    record = FederationImport.objects.create(
        peer=peer,
        origin_model_id=str(model_data["origin_id"]),
        tree_size=opened.tree_size,
        root_hash=opened.manifest["root_hash"],
        bundle_sha256=sha,
        model=model,
        events=opened.events,
        imported_by=actor if actor is not None and actor.pk else None,
    )
    origin_id = str(version_data["origin_id"])
    link = FederatedVersion.objects.filter(peer=peer, origin_id=origin_id).first()
    if link is None:
        fields = {k: version_data[k] for k in VERSION_FIELDS}
        version = _checked_create(
            ModelVersion(
                model=model,
                licence=_licence(meta["licence"]),
                released_at=timezone.now(),
                created_by=_peer_user(peer),
                **fields,
            )
        )
        link = FederatedVersion.objects.create(
            model_version=version,
            peer=peer,
            origin_id=origin_id,
            origin_url=f"{peer.base_url.rstrip('/')}/api/v1/model-versions/{origin_id}/",
            last_import=record,
        )
    else:
        version = link.model_version
        link.last_import = record
        link.save(update_fields=["last_import"])
    datasets = _dataset_links(version, peer, meta.get("datasets", []))
    for item in opened.attestations:
        FederatedAttestation.objects.create(
            federation_import=record,
            kind=item["kind"],
            origin_id=str(item["origin_id"]),
            payload_type=item["payload_type"],
            statement=item["statement"],
            envelope=item["envelope"],
            key_id=peer.key_id,
        )
    stored = _store_artifact(version, opened)
    record.summary = {
        "model_id": model.pk,
        "model_version_id": version.pk,
        "origin_version_id": origin_id,
        "origin_status": version_data.get("status"),
        "origin_agency": model_data.get("agency"),
        "datasets": datasets,
        "attestations": len(opened.attestations),
        "events": len(opened.events),
        "artifact_stored": stored,
        "tree_size": opened.tree_size,
    }
    record.save(update_fields=["summary"])
    return record, version


def _check_replay(peer: FederationPeer, opened: fb.OpenedBundle) -> bool | None:
    """Refuse a bundle no newer than the last one; check its consistency proof.

    True when the bundle proves its tree extends the last one imported,
    None when there is no earlier import or no proof from its size.
    """
    origin = str(opened.metadata["model"]["origin_id"])
    last = (
        FederationImport.objects.filter(peer=peer, origin_model_id=origin)
        .order_by("-tree_size")
        .first()
    )
    if last is None:
        return None
    if opened.tree_size <= last.tree_size:
        raise FederationReplayed(
            f"A bundle of tree size {last.tree_size} was already imported from "
            f"{peer.name}; this one has {opened.tree_size}.",
            code="replayed",
        )
    try:
        return fb.check_consistency(opened, last.tree_size, last.root_hash)
    except fb.BundleRefused as exc:
        raise _refused(exc) from exc


def _refused(exc: fb.BundleRefused) -> FederationRefused:
    cls = FederationReplayed if exc.reason == "replayed" else FederationRefused
    return cls(exc.message, code=exc.reason)


def bundle_import(
    *, actor, archive: Path, peer: FederationPeer | None = None
) -> FederationImport:
    """Verify the bundle at ``archive`` and import it; one audit event.

    The peer is the one named, or found by the key id the signature names
    (``unknown_key`` if none is trusted). Raises FederationRefused (400) with
    ``code`` ``bad_signature``, ``unknown_key``, ``digest_mismatch``,
    ``bad_proof`` or ``malformed``, FederationReplayed (409, ``replayed``)
    for a bundle no newer than the last one imported for that model; a
    refusal writes nothing.
    """
    _require_admin(actor)
    sha = fb.file_sha256(archive)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            root = fb.extract(archive, Path(tmp) / "bundle")
            kid = fb.signer_key_id(root)
            if peer is None:
                peer = FederationPeer.objects.filter(key_id=kid).first()
            if peer is None or peer.key_id != kid:
                raise fb.BundleRefused(
                    "unknown_key", f"No trusted peer holds the signing key {kid[:16]}."
                )
            opened = fb.open_bundle(root, peer.public_key_pem)
        except fb.BundleRefused as exc:
            raise _refused(exc) from exc
        try:
            with transaction.atomic():
                peer = FederationPeer.objects.select_for_update().get(pk=peer.pk)
                consistent = _check_replay(peer, opened)
                record, version = _write(peer, opened, actor, sha)
                record.summary["consistent_with_last"] = consistent
                record.save(update_fields=["summary"])
                audit.record(
                    actor=actor,
                    action="federation.bundle_imported",
                    obj=version,
                    payload={"peer": peer.name, "bundle_sha256": sha, **record.summary},
                )
        except (
            KeyError,
            TypeError,
            ValueError,
            IntegrityError,
            ValidationError,
        ) as exc:
            raise FederationRefused(
                f"The bundle's records do not fit: {exc}", code="malformed"
            ) from exc
    return record


def is_imported(version: ModelVersion) -> bool:
    """True for a version imported from a peer (never approved here)."""
    return FederatedVersion.objects.filter(model_version=version).exists()
