"""What every registry admin shares: service-backed admins, read-only inlines."""

from __future__ import annotations

from typing import Any, ClassVar

from django import forms
from django.contrib import admin

from config.admin import ReadOnlyInline as BaseReadOnlyInline
from config.exceptions import Conflict, DomainError
from registry import services
from registry.models import (
    Role,
    is_platform_admin,
    user_agency_id,
    user_membership,
    user_role,
)

_SERVICE_ERROR = "_civitas_admin_service_error"
_VIEWER = "_civitas_admin_viewer"


def _is_writer(user) -> bool:
    """Members and maintainers register catalogue objects for their agency."""
    return user_role(user) in services.WRITER_ROLES


def _is_maintainer_of(user, agency_id: int | None) -> bool:
    return user_role(user) == Role.MAINTAINER and user_agency_id(user) == agency_id


class ServiceForm(forms.ModelForm):
    """A model form that shows a service's refusal as form errors.

    ``service_error`` is set on a second, write-free validation pass after the
    service refused the first one (see ``ServiceAdmin.changeform_view``).
    """

    service_error: DomainError | None = None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        error = self.service_error
        if error is None:
            return cleaned
        placed = False
        for name, problems in (error.fields or {}).items():
            if name in self.fields:
                for problem in problems:
                    message = (
                        problem["message"] if isinstance(problem, dict) else problem
                    )
                    self.add_error(name, message)
                placed = True
        if not placed:
            self.add_error(None, error.message)
        return cleaned


class ServiceAdmin(admin.ModelAdmin):
    """Admin of a governed model: reads through ``visible_to``, writes via services.

    Subclasses implement ``create`` and ``update``, each calling one service
    with the acting user; the admin's own ``save()`` is never used. No delete.
    """

    form = ServiceForm
    # Only fields the update service accepts may differ from the stored row.
    update_fields: ClassVar[tuple[str, ...]] = ()
    # Read-only once created (part of the object's identity).
    identity_fields: ClassVar[tuple[str, ...]] = ()
    computed_fields: ClassVar[tuple[str, ...]] = ()

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        return queryset.visible_to(request.user)

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is not None:
            # Read-only displays need the viewer to hide what they may not see.
            setattr(obj, _VIEWER, request.user)
        return obj

    def has_module_permission(self, request) -> bool:
        user = request.user
        return (
            user.is_active
            and user.is_staff
            and (user.is_superuser or user_membership(user) is not None)
        )

    def has_view_permission(self, request, obj=None) -> bool:
        # Which rows: ``get_queryset``; whether at all: a place in an agency.
        return self.has_module_permission(request)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return self.computed_fields
        return (*self.identity_fields, *self.computed_fields)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        error = getattr(request, _SERVICE_ERROR, None)
        if error is None:
            return form
        return type(form.__name__, (form,), {"service_error": error})

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except DomainError as error:
            if request.method != "POST" or hasattr(request, _SERVICE_ERROR):
                raise
            # The refused write was rolled back with the admin's transaction;
            # validating again shows the refusal on the form, keeping the input.
            setattr(request, _SERVICE_ERROR, error)
            return super().changeform_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj, form, change) -> None:
        if change:
            stored = type(obj).objects.get(pk=obj.pk)
            changes = {
                name: form.cleaned_data[name]
                for name in form.changed_data
                if name in self.update_fields
            }
            saved = self.update(request, stored, changes) if changes else stored
        else:
            saved = self.create(request, form.cleaned_data)
        # The admin goes on with ``obj`` (log entry, redirect): make it the row
        # the service wrote.
        vars(obj).update(vars(saved))

    def save_formset(self, request, form, formset, change) -> None:
        # Inlines are read-only displays: nothing of theirs is saved, and the
        # admin's change message is told so.
        formset.new_objects = []
        formset.changed_objects = []
        formset.deleted_objects = []

    def create(self, request, data: dict[str, Any]):
        """Create the object through its service; return it."""
        raise Conflict("Objects of this kind are not created in the admin.")

    def update(self, request, obj, changes: dict[str, Any]):
        """Apply ``changes`` through the update service; return the object."""
        raise Conflict("Objects of this kind are not changed in the admin.")


class AgencyOwnedAdmin(ServiceAdmin):
    """An agency's own records: its writers add them, its maintainers change them."""

    def has_add_permission(self, request) -> bool:
        return _is_writer(request.user)

    def has_change_permission(self, request, obj=None) -> bool:
        user = request.user
        if is_platform_admin(user):
            return True
        if obj is None:
            return user_role(user) == Role.MAINTAINER
        return _is_maintainer_of(user, obj.agency_id)


class ReadOnlyInline(BaseReadOnlyInline):
    """A read-only list of related rows, linked, inside a tenancy-scoped page."""

    show_change_link = True

    def has_view_permission(self, request, obj=None) -> bool:
        # The parent's change page is reachable only through its tenancy.
        return True
