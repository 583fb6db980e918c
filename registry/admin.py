"""The catalogue in the Django admin, with the tenancy and the rules of the API.

Staff see what ``visible_to`` lets them see (superusers: everything) and may
change only what their agency owns and their role allows. Every write calls
the registry service that the API calls, so the admin leaves the same audit
events and obeys the same rules; a refusal comes back as a form error.
Released model versions and every dataset version are read-only (their
content is immutable) and nothing in the catalogue can be deleted: records
are retired, never removed. A membership is removed through its service.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth import get_user_model
from django.http import HttpResponseRedirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html_join

from config.exceptions import Conflict, DomainError
from registry import accounts, lineage, services
from registry.models import (
    Agency,
    AIModel,
    Dataset,
    DatasetVersion,
    Licence,
    Membership,
    ModelVersion,
    ModelVersionDataset,
    Role,
)
from registry.selectors import (
    agency_list,
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


class ReadOnlyInline(admin.TabularInline):
    """A read-only list of related rows inside a change page."""

    extra = 0
    can_delete = False
    show_change_link = True

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    def has_view_permission(self, request, obj=None) -> bool:
        # The parent's change page is reachable only through its tenancy.
        return True

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


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
    computed_fields = ("created_at",)
    actions = [invite_person]
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


# --- licences ----------------------------------------------------------------------


@admin.register(Licence)
class LicenceAdmin(ServiceAdmin):
    list_display = [
        "expression",
        "name",
        "is_osi_approved",
        "allows_commercial_use",
        "allows_derivatives",
        "requires_share_alike",
    ]
    list_filter = [
        "is_osi_approved",
        "allows_commercial_use",
        "allows_derivatives",
        "requires_share_alike",
    ]
    search_fields = ["expression", "name"]
    fields = [
        "expression",
        "name",
        "spdx_ids",
        "is_osi_approved",
        "allows_commercial_use",
        "allows_derivatives",
        "requires_share_alike",
        "created_at",
    ]
    identity_fields = ("expression",)
    # What a licence permits is read from its expression, never typed in.
    computed_fields = (
        "name",
        "spdx_ids",
        "is_osi_approved",
        "allows_commercial_use",
        "allows_derivatives",
        "requires_share_alike",
        "created_at",
    )

    def get_queryset(self, request):
        # Licences are shared reference data.
        return Licence.objects.all()

    def has_add_permission(self, request) -> bool:
        return is_platform_admin(request.user) or _is_writer(request.user)

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def create(self, request, data):
        licence, created = services.licence_register(
            actor=request.user, expression=data["expression"]
        )
        if not created:
            message = f"{licence.expression} is already registered."
            raise Conflict(
                message,
                code="unique",
                fields={"expression": [{"code": "unique", "message": message}]},
            )
        return licence


# --- datasets ----------------------------------------------------------------------


class DatasetVersionInline(ReadOnlyInline):
    model = DatasetVersion
    fields = [
        "version",
        "licence",
        "personal_data",
        "record_count",
        "artifact_state",
        "created_at",
    ]


@admin.register(Dataset)
class DatasetAdmin(AgencyOwnedAdmin):
    list_display = ["name", "slug", "agency", "visibility", "created_by", "created_at"]
    list_filter = ["visibility", ("agency", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name", "slug", "description"]
    list_select_related = ["agency", "created_by"]
    fields = [
        "name",
        "slug",
        "agency",
        "visibility",
        "description",
        "created_by",
        "created_at",
    ]
    identity_fields = ("slug",)
    computed_fields = ("agency", "visibility", "created_by", "created_at")
    update_fields = ("name", "description")
    inlines = [DatasetVersionInline]

    def create(self, request, data):
        return services.dataset_create(
            actor=request.user,
            name=data["name"],
            slug=data["slug"],
            description=data["description"],
        )

    def update(self, request, obj, changes):
        return services.dataset_update(actor=request.user, dataset=obj, **changes)


_DATASHEET = [
    "motivation",
    "composition",
    "collection_process",
    "preprocessing",
    "intended_uses",
    "distribution",
    "maintenance",
]


@admin.register(DatasetVersion)
class DatasetVersionAdmin(ServiceAdmin):
    list_display = [
        "__str__",
        "agency",
        "licence",
        "personal_data",
        "record_count",
        "artifact_state",
        "size",
        "created_at",
    ]
    list_filter = [
        "personal_data",
        "artifact_state",
        ("licence", admin.RelatedOnlyFieldListFilter),
        ("dataset__agency", admin.RelatedOnlyFieldListFilter),
    ]
    search_fields = ["dataset__slug", "dataset__name", "version", "=digest"]
    list_select_related = ["dataset__agency", "licence"]
    fieldsets = [
        (None, {"fields": ["dataset", "version", "licence"]}),
        ("Datasheet", {"fields": _DATASHEET}),
        (
            "Content",
            {
                "fields": [
                    "languages",
                    "record_count",
                    "origin_jurisdiction",
                    "personal_data",
                    "legal_basis",
                ]
            },
        ),
        (
            "File",
            {
                "fields": [
                    "artifact_state",
                    "digest",
                    "size",
                    "storage_key",
                    "original_filename",
                    "source_uri",
                    "artifact_error",
                ]
            },
        ),
        ("Record", {"fields": ["created_by", "created_at"]}),
    ]
    computed_fields = (
        "artifact_state",
        "digest",
        "size",
        "storage_key",
        "original_filename",
        "source_uri",
        "artifact_error",
        "created_by",
        "created_at",
    )

    @admin.display(description="agency", ordering="dataset__agency__slug")
    def agency(self, obj: DatasetVersion) -> str:
        return obj.dataset.agency.slug

    @admin.display(description="size", ordering="size_bytes")
    def size(self, obj: DatasetVersion) -> str:
        return filesizeformat(obj.size_bytes) if obj.size_bytes is not None else "-"

    def has_add_permission(self, request) -> bool:
        return is_platform_admin(request.user) or _is_writer(request.user)

    def has_change_permission(self, request, obj=None) -> bool:
        # A dataset version is immutable: a correction is a new version.
        return False

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "dataset":
            kwargs["queryset"] = Dataset.objects.editable_by(
                request.user
            ).select_related("agency")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def create(self, request, data):
        fields = [
            "version",
            "licence",
            *_DATASHEET,
            "languages",
            "record_count",
            "origin_jurisdiction",
            "personal_data",
            "legal_basis",
        ]
        return services.dataset_version_create(
            actor=request.user,
            dataset=data["dataset"],
            **{name: data[name] for name in fields},
        )


# --- models --------------------------------------------------------------------------


class ModelVersionInline(ReadOnlyInline):
    model = ModelVersion
    fk_name = "model"
    fields = [
        "version",
        "status",
        "licence",
        "artifact_state",
        "parameter_count",
        "quantisation",
        "released_at",
    ]


@admin.register(AIModel)
class AIModelAdmin(AgencyOwnedAdmin):
    list_display = ["name", "slug", "agency", "task", "visibility", "created_at"]
    list_filter = ["task", "visibility", ("agency", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name", "slug", "domain", "description"]
    list_select_related = ["agency"]
    fields = [
        "name",
        "slug",
        "agency",
        "task",
        "domain",
        "visibility",
        "description",
        "intended_use",
        "out_of_scope_uses",
        "created_by",
        "created_at",
        "updated_at",
    ]
    identity_fields = ("slug",)
    computed_fields = ("agency", "visibility", "created_by", "created_at", "updated_at")
    update_fields = (
        "name",
        "task",
        "domain",
        "description",
        "intended_use",
        "out_of_scope_uses",
    )
    inlines = [ModelVersionInline]

    def create(self, request, data):
        return services.model_create(
            actor=request.user,
            name=data["name"],
            slug=data["slug"],
            task=data["task"],
            domain=data["domain"],
            description=data["description"],
            intended_use=data["intended_use"],
            out_of_scope_uses=data["out_of_scope_uses"],
        )

    def update(self, request, obj, changes):
        return services.model_update(actor=request.user, model=obj, **changes)


class ModelVersionDatasetInline(ReadOnlyInline):
    model = ModelVersionDataset
    fields = ["dataset_version", "role"]
    verbose_name = "dataset"
    verbose_name_plural = "datasets"

    def get_queryset(self, request):
        # A public model must not reveal its agency's private datasets.
        visible = DatasetVersion.objects.all()
        if not request.user.is_superuser:
            visible = visible.visible_to(request.user)
        return (
            super()
            .get_queryset(request)
            .filter(dataset_version__in=visible)
            .select_related("dataset_version__dataset__agency")
        )


_CARD_FIELDS = ("limitations", "risks", "ethical_considerations")
_TRAINING_FIELDS = (
    "training_run",
    "training_jurisdiction",
    "training_hardware",
    "training_energy_kwh",
    "hosting_jurisdiction",
)


@admin.register(ModelVersion)
class ModelVersionAdmin(ServiceAdmin):
    list_display = [
        "__str__",
        "agency",
        "licence",
        "status",
        "artifact_state",
        "kind",
        "parameter_count",
        "quantisation",
        "released_at",
    ]
    list_filter = [
        "status",
        "artifact_state",
        "kind",
        "quantisation",
        "derivation",
        ("licence", admin.RelatedOnlyFieldListFilter),
        ("model__agency", admin.RelatedOnlyFieldListFilter),
    ]
    search_fields = ["model__slug", "model__name", "version", "=artifact_digest"]
    list_select_related = ["model__agency", "licence"]
    fieldsets = [
        (None, {"fields": ["model", "version", "status", "licence", "warnings"]}),
        (
            "Lineage",
            {"fields": ["base_version", "derivation", *_TRAINING_FIELDS]},
        ),
        ("Model card", {"fields": list(_CARD_FIELDS)}),
        (
            "Artifact",
            {
                "fields": [
                    "artifact_state",
                    "artifact_digest",
                    "size",
                    "artifact_format",
                    "artifact_key",
                    "original_filename",
                    "source_uri",
                    "artifact_error",
                    "released_at",
                ]
            },
        ),
        (
            "Graph facts",
            {
                "fields": [
                    "kind",
                    "layout",
                    "parameter_count",
                    "weights",
                    "num_layers",
                    "quantisation",
                    "opsets",
                    "graph_inputs",
                    "graph_outputs",
                    "selftest",
                ]
            },
        ),
        ("Record", {"fields": ["created_by", "created_at", "updated_at"]}),
    ]
    identity_fields = ("model", "version", "derivation")
    computed_fields = (
        "status",
        "warnings",
        "base",
        "artifact_state",
        "artifact_digest",
        "size",
        "artifact_format",
        "artifact_key",
        "original_filename",
        "source_uri",
        "artifact_error",
        "released_at",
        "kind",
        "layout",
        "parameter_count",
        "weights",
        "num_layers",
        "quantisation",
        "opsets",
        "graph_inputs",
        "graph_outputs",
        "selftest",
        "created_by",
        "created_at",
        "updated_at",
    )
    update_fields = ("licence", *_TRAINING_FIELDS, *_CARD_FIELDS)
    inlines = [ModelVersionDatasetInline]

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return self.fieldsets
        # Once the version exists its base is shown by ``base``, which does
        # not name a base the viewer may not see.
        return [
            (
                name,
                {
                    **options,
                    "fields": [
                        "base" if field == "base_version" else field
                        for field in options["fields"]
                    ],
                },
            )
            for name, options in self.fieldsets
        ]

    @admin.display(description="agency", ordering="model__agency__slug")
    def agency(self, obj: ModelVersion) -> str:
        return obj.model.agency.slug

    @admin.display(description="size", ordering="artifact_size")
    def size(self, obj: ModelVersion) -> str:
        return (
            filesizeformat(obj.artifact_size) if obj.artifact_size is not None else "-"
        )

    @admin.display(description="weights", ordering="weight_bytes")
    def weights(self, obj: ModelVersion) -> str:
        return filesizeformat(obj.weight_bytes) if obj.weight_bytes is not None else "-"

    @admin.display(description="base version")
    def base(self, obj: ModelVersion) -> str:
        viewer = getattr(obj, _VIEWER, None)
        if obj.base_version_id is None or viewer is None:
            return "-"
        base = (
            ModelVersion.objects.visible_to(viewer)
            .select_related("model__agency")
            .filter(pk=obj.base_version_id)
            .first()
        )
        return str(base) if base is not None else "-"

    @admin.display(description="licence warnings")
    def warnings(self, obj: ModelVersion):
        viewer = getattr(obj, _VIEWER, None)
        if obj.pk is None or viewer is None:
            return "-"
        found = lineage.licence_warnings(obj, user=viewer)
        if not found:
            return "none"
        return format_html_join("\n", "<p>{}</p>", ((w["message"],) for w in found))

    def has_add_permission(self, request) -> bool:
        return is_platform_admin(request.user) or _is_writer(request.user)

    def has_change_permission(self, request, obj=None) -> bool:
        user = request.user
        if not (is_platform_admin(user) or _is_writer(user)):
            return False
        if obj is None:
            return True
        # Released content is frozen: a change means a new version.
        if obj.is_released:
            return False
        return is_platform_admin(user) or user_agency_id(user) == obj.model.agency_id

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        user = request.user
        if db_field.name == "model":
            kwargs["queryset"] = AIModel.objects.editable_by(user).select_related(
                "agency"
            )
        elif db_field.name == "base_version":
            kwargs["queryset"] = (
                ModelVersion.objects.visible_to(user)
                .filter(released_at__isnull=False)
                .select_related("model__agency")
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def create(self, request, data):
        return services.model_version_create(
            actor=request.user,
            model=data["model"],
            version=data["version"],
            licence=data["licence"],
            base_version=data["base_version"],
            derivation=data["derivation"],
            **{name: data[name] for name in (*_TRAINING_FIELDS, *_CARD_FIELDS)},
        )

    def update(self, request, obj, changes):
        return services.model_version_update(
            actor=request.user, model_version=obj, **changes
        )


@admin.register(ModelVersionDataset)
class ModelVersionDatasetAdmin(ServiceAdmin):
    """The links alone, to search them; they are written with their model version."""

    list_display = ["model_version", "dataset_version", "role"]
    list_filter = ["role"]
    search_fields = [
        "model_version__model__slug",
        "model_version__version",
        "dataset_version__dataset__slug",
    ]
    list_select_related = [
        "model_version__model__agency",
        "dataset_version__dataset__agency",
    ]
    fields = ["model_version", "dataset_version", "role"]
    computed_fields = ("model_version", "dataset_version", "role")

    def get_queryset(self, request):
        # Links have no tenancy of their own: both ends must be visible.
        queryset = admin.ModelAdmin.get_queryset(self, request)
        if request.user.is_superuser:
            return queryset
        user = request.user
        return queryset.filter(
            model_version__in=ModelVersion.objects.visible_to(user),
            dataset_version__in=DatasetVersion.objects.visible_to(user),
        )

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
