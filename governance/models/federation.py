"""Federation: trusted peer platforms and what was imported from them.

A ``FederationPeer`` is another Civitas whose signed bundles this platform
accepts (its Ed25519 public key and key id); platform administrators keep
the list. Each peer is represented locally by an agency of its own, so an
imported model never belongs to a local agency. A ``FederationImport`` is one
accepted bundle (the peer's tree size is its sequence: a later bundle has a
larger one); ``FederatedVersion`` marks a local model version as the copy of
a peer's version, and ``FederatedAttestation`` keeps the peer's signed
attestations as the peer's, never as this platform's.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class FederationPeer(models.Model):
    """Another Civitas whose bundles are trusted, with its published key."""

    name = models.CharField(max_length=200, unique=True)
    base_url = models.URLField(max_length=500)
    public_key_pem = models.TextField()
    key_id = models.CharField(max_length=64, unique=True)
    agency = models.OneToOneField(
        "registry.Agency",
        on_delete=models.PROTECT,
        related_name="federation_peer",
        help_text=_("The local agency that holds what this peer publishes."),
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class FederationImport(models.Model):
    """One bundle accepted from a peer for one of its models."""

    peer = models.ForeignKey(
        FederationPeer, on_delete=models.PROTECT, related_name="imports"
    )
    origin_model_id = models.CharField(max_length=64)
    tree_size = models.PositiveBigIntegerField()
    root_hash = models.CharField(max_length=64)
    bundle_sha256 = models.CharField(max_length=64)
    model = models.ForeignKey(
        "registry.AIModel", on_delete=models.PROTECT, related_name="+"
    )
    summary = models.JSONField(default=dict)
    events = models.JSONField(default=list)
    imported_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["peer", "origin_model_id", "tree_size"],
                name="federation_import_once_per_tree_size",
            )
        ]

    def __str__(self) -> str:
        return f"{self.peer_id}:{self.origin_model_id}@{self.tree_size}"


class FederatedVersion(models.Model):
    """A local model version that is a copy of a peer's version."""

    model_version = models.OneToOneField(
        "registry.ModelVersion", on_delete=models.PROTECT, related_name="federated"
    )
    peer = models.ForeignKey(
        FederationPeer, on_delete=models.PROTECT, related_name="versions"
    )
    origin_id = models.CharField(max_length=64)
    origin_url = models.CharField(max_length=1000, blank=True)
    last_import = models.ForeignKey(
        FederationImport, on_delete=models.PROTECT, related_name="versions"
    )

    class Meta:
        ordering = ["peer", "origin_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["peer", "origin_id"], name="federated_version_once_per_peer"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model_version_id} <- {self.peer_id}:{self.origin_id}"


class FederatedAttestation(models.Model):
    """A peer's signed attestation (evaluation or decision), kept as the peer's."""

    federation_import = models.ForeignKey(
        FederationImport, on_delete=models.CASCADE, related_name="attestations"
    )
    kind = models.CharField(max_length=20)
    origin_id = models.CharField(max_length=64)
    payload_type = models.CharField(max_length=100)
    statement = models.JSONField()
    envelope = models.JSONField()
    key_id = models.CharField(max_length=64)

    class Meta:
        ordering = ["federation_import", "kind", "origin_id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.origin_id} ({self.key_id[:12]})"
