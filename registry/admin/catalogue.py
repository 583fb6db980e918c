"""Licences, datasets, models and their versions in the admin."""

from __future__ import annotations

from django.contrib import admin
from django.template.defaultfilters import filesizeformat
from django.utils.html import format_html_join

from config.admin import ReadOnlyAdmin
from config.exceptions import Conflict
from registry import lineage, services
from registry.admin.base import (
    _VIEWER,
    AgencyOwnedAdmin,
    ReadOnlyInline,
    ServiceAdmin,
    _is_writer,
)
from registry.models import (
    AIModel,
    Dataset,
    DatasetVersion,
    Licence,
    ModelVersion,
    ModelVersionDataset,
    is_platform_admin,
    user_agency_id,
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
class ModelVersionDatasetAdmin(ReadOnlyAdmin, ServiceAdmin):
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
