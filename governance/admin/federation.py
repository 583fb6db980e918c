"""Federation in the admin: platform administrators add trusted peers.

A peer is added through ``peer_create`` (which derives its key id, creates
its local agency and records the audit event); it is never edited in place:
a new key is a new peer. Imports and federated versions are read only.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from config.admin import ReadOnlyAdmin
from config.exceptions import DomainError
from governance.federation.services import peer_create
from governance.models import FederatedVersion, FederationImport, FederationPeer


class PeerForm(forms.ModelForm):
    base_url = forms.URLField(max_length=500, assume_scheme="https")
    jurisdiction = forms.CharField(
        max_length=6, help_text=_("Jurisdiction of the peer's local agency.")
    )

    class Meta:
        model = FederationPeer
        fields = ["name", "base_url", "public_key_pem"]


@admin.register(FederationPeer)
class FederationPeerAdmin(admin.ModelAdmin):
    form = PeerForm
    list_display = ["name", "base_url", "key_id", "agency", "created_at"]
    search_fields = ["name", "key_id"]

    def has_module_permission(self, request) -> bool:
        return request.user.is_active and request.user.is_superuser

    has_view_permission = has_add_permission = lambda self, request, obj=None: (
        request.user.is_active and request.user.is_superuser
    )

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change) -> None:
        try:
            created = peer_create(
                actor=request.user,
                name=form.cleaned_data["name"],
                base_url=form.cleaned_data["base_url"],
                public_key_pem=form.cleaned_data["public_key_pem"],
                jurisdiction=form.cleaned_data["jurisdiction"],
            )
        except DomainError as exc:
            raise forms.ValidationError(exc.message) from exc
        obj.pk = created.pk


@admin.register(FederationImport)
class FederationImportAdmin(ReadOnlyAdmin):
    list_display = ["id", "peer", "origin_model_id", "tree_size", "model", "created_at"]
    list_filter = ["peer"]

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.is_active and request.user.is_superuser


@admin.register(FederatedVersion)
class FederatedVersionAdmin(ReadOnlyAdmin):
    list_display = ["model_version", "peer", "origin_id", "origin_url"]
    list_filter = ["peer"]

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.is_active and request.user.is_superuser
