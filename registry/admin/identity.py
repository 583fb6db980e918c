"""Single sign-on in the admin: platform administrators only.

Claim rules are written here; the links between accounts and the provider's
subjects (``ExternalIdentity``) are shown read-only.

Every write goes through ``registry.services.identity`` (audited as
``sso.rule_created`` / ``sso.rule_changed``); a rule is switched off, never
deleted, so the audit events that name it keep their meaning.
"""

from __future__ import annotations

from django.contrib import admin

from registry.admin.base import ServiceAdmin
from registry.models import ClaimRule, ExternalIdentity, is_platform_admin
from registry.services import identity

RULE_FIELDS = ("name", "claim", "value", "agency", "role", "priority", "is_active")


@admin.register(ClaimRule)
class ClaimRuleAdmin(ServiceAdmin):
    list_display = ["name", "claim", "value", "agency", "role", "priority", "is_active"]
    list_filter = ["is_active", "role", ("agency", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name", "claim", "value", "agency__name", "agency__slug"]
    list_select_related = ["agency"]
    fields = [*RULE_FIELDS, "created_at", "updated_at"]
    computed_fields = ("created_at", "updated_at")
    update_fields = RULE_FIELDS

    def get_queryset(self, request):
        return ClaimRule.objects.select_related("agency")

    def has_module_permission(self, request) -> bool:
        return request.user.is_active and is_platform_admin(request.user)

    def has_view_permission(self, request, obj=None) -> bool:
        return self.has_module_permission(request)

    def has_add_permission(self, request) -> bool:
        return self.has_module_permission(request)

    def has_change_permission(self, request, obj=None) -> bool:
        return self.has_module_permission(request)

    def create(self, request, data):
        return identity.claim_rule_create(
            actor=request.user, **{name: data[name] for name in RULE_FIELDS}
        )

    def update(self, request, obj, changes):
        return identity.claim_rule_update(actor=request.user, rule=obj, **changes)


@admin.register(ExternalIdentity)
class ExternalIdentityAdmin(admin.ModelAdmin):
    """Which account each provider subject signs in to (read-only)."""

    list_display = ["user", "issuer", "subject", "created_at", "last_sign_in_at"]
    search_fields = ["user__username", "subject", "issuer"]
    list_select_related = ["user"]
    readonly_fields = list_display

    def has_module_permission(self, request) -> bool:
        return request.user.is_active and is_platform_admin(request.user)

    def has_view_permission(self, request, obj=None) -> bool:
        return self.has_module_permission(request)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
