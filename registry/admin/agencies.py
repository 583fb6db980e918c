"""Agencies and their people in the admin."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth import get_user_model
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from config.exceptions import DomainError
from registry import accounts, services
from registry.admin.base import (
    ServiceAdmin,
    _is_maintainer_of,
)
from registry.models import (
    Agency,
    Membership,
    Role,
    is_platform_admin,
    user_role,
)
from registry.selectors import agency_list

# --- agencies and people ---------------------------------------------------------


class InviteForm(forms.Form):
    """Who to invite, and with which role (``accounts.account_invite``)."""

    username = forms.CharField(max_length=150)
    email = forms.EmailField(required=False)
    first_name = forms.CharField(max_length=150, required=False)
    last_name = forms.CharField(max_length=150, required=False)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)


@admin.action(description="Invite a person to the selected agency")
def invite_person(modeladmin, request, queryset):
    """Ask who to invite, invite them, and show their one-time password link."""
    if queryset.count() != 1:
        modeladmin.message_user(request, "Select one agency.", messages.ERROR)
        return None
    agency = queryset.get()
    form = InviteForm(request.POST if "apply" in request.POST else None)
    if form.is_valid():
        try:
            invitation = accounts.account_invite(
                actor=request.user,
                agency=agency,
                base_url=request.build_absolute_uri("/"),
                **form.cleaned_data,
            )
        except DomainError as error:
            form.add_error(None, error.message)
        else:
            modeladmin.message_user(
                request,
                f"Invited {invitation.user.get_username()} to {agency.slug} as "
                f"{invitation.membership.role}. Give them this one-time link to "
                f"set their password: {invitation.link}",
                messages.SUCCESS,
            )
            return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": f"Invite a person to {agency.name}",
        "opts": modeladmin.model._meta,
        "agency": agency,
        "form": form,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/registry/agency/invite.html", context)


@admin.action(description="Issue a one-time link to set a password")
def issue_password_link(modeladmin, request, queryset):
    """A new link for each selected person who has no password yet."""
    for membership in queryset.select_related("user"):
        try:
            link = accounts.account_password_link(
                actor=request.user,
                user=membership.user,
                base_url=request.build_absolute_uri("/"),
            )
        except DomainError as error:
            modeladmin.message_user(
                request, f"{membership.user}: {error.message}", messages.ERROR
            )
        else:
            modeladmin.message_user(
                request, f"{membership.user}: {link}", messages.SUCCESS
            )


@admin.register(Agency)
class AgencyAdmin(ServiceAdmin):
    list_display = ["name", "slug", "jurisdiction", "is_oversight_body", "created_at"]
    list_filter = ["is_oversight_body", "jurisdiction"]
    search_fields = ["name", "slug", "contact_name", "contact_email"]
    fields = [
        "name",
        "slug",
        "jurisdiction",
        "is_oversight_body",
        "contact_name",
        "contact_email",
        "description",
        "created_at",
    ]
    identity_fields = ("slug", "is_oversight_body")
    actions = [invite_person]
    computed_fields = ("created_at",)
    update_fields = (
        "name",
        "jurisdiction",
        "contact_name",
        "contact_email",
        "description",
    )

    def get_queryset(self, request):
        return agency_list(request.user)

    def has_add_permission(self, request) -> bool:
        return is_platform_admin(request.user)

    def has_change_permission(self, request, obj=None) -> bool:
        user = request.user
        if is_platform_admin(user):
            return True
        if obj is None:
            return user_role(user) == Role.MAINTAINER
        return _is_maintainer_of(user, obj.pk)

    def create(self, request, data):
        return services.agency_create(
            actor=request.user,
            **{name: data[name] for name in self.fields if name in data},
        )

    def update(self, request, obj, changes):
        return services.agency_update(actor=request.user, agency=obj, **changes)


@admin.register(Membership)
class MembershipAdmin(ServiceAdmin):
    list_display = ["user", "agency", "role", "created_at"]
    list_filter = ["role", ("agency", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["user__username", "user__email", "agency__name", "agency__slug"]
    list_select_related = ["user", "agency"]
    fields = ["user", "agency", "role", "created_at", "updated_at"]
    identity_fields = ("user", "agency")
    computed_fields = ("created_at", "updated_at")
    update_fields = ("role",)
    actions = [issue_password_link]

    def has_add_permission(self, request) -> bool:
        # Choosing a person means listing people outside the agency, which
        # only platform administrators may see; maintainers use the API.
        return is_platform_admin(request.user)

    def has_change_permission(self, request, obj=None) -> bool:
        user = request.user
        if is_platform_admin(user):
            return True
        if obj is None:
            return user_role(user) == Role.MAINTAINER
        return _is_maintainer_of(user, obj.agency_id)

    def has_delete_permission(self, request, obj=None) -> bool:
        # Removing a person is not retiring a record: the service decides.
        return self.has_change_permission(request, obj)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "user":
            kwargs["queryset"] = get_user_model().objects.filter(
                membership__isnull=True
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def create(self, request, data):
        return services.membership_add(
            actor=request.user,
            agency=data["agency"],
            user=data["user"],
            role=data["role"],
        )

    def update(self, request, obj, changes):
        return services.membership_set_role(
            actor=request.user, membership=obj, role=changes["role"]
        )

    def delete_model(self, request, obj) -> None:
        services.membership_remove(actor=request.user, membership=obj)

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except DomainError as error:
            self.message_user(request, error.message, level=messages.ERROR)
            return HttpResponseRedirect(
                reverse("admin:registry_membership_change", args=[object_id])
            )
