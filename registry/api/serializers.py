"""API serializers of the catalogue: input serializers validate, output ones show.

Input serializers name only the fields a caller may set; everything else
(agency, status, released_at, digests, graph facts, created_by) is left out,
so a request carrying them changes nothing (mass assignment, SECURITY C6).
Related ids are looked up among the objects the caller may read, so another
agency's private object is answered "does not exist" (SECURITY C3). The views
pass ``validated_data`` to one service and render its result with an output
serializer.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from config.authentication import served_user
from config.exceptions import ApiErrorSerializer  # noqa: F401  (re-exported)
from registry import licences, services
from registry.models import (
    Agency,
    AIModel,
    Dataset,
    DatasetRole,
    DatasetVersion,
    Derivation,
    Licence,
    Membership,
    ModelKind,
    ModelVersion,
    ModelVersionDataset,
    PersonalData,
    Role,
    Task,
    Visibility,
    is_oversight,
    is_platform_admin,
    jurisdiction_validator,
    semver_validator,
    user_membership,
    user_role,
)
from registry.selectors import is_visible_to

# --- fields --------------------------------------------------------------------


@extend_schema_field(OpenApiTypes.STR)
class LicenceExpressionField(serializers.Field):
    """An SPDX expression naming a registered licence, in any spelling.

    ``apache-2.0 or mit`` finds the licence registered as ``Apache-2.0 OR
    MIT``. Invalid expressions and unregistered licences are field errors.
    """

    default_error_messages = {
        "not_registered": (
            'Licence "{expression}" is not registered yet: POST it to '
            "/api/v1/licences/ first."
        ),
    }

    def to_internal_value(self, data) -> Licence:
        if not isinstance(data, str):
            raise serializers.ValidationError("Give an SPDX expression as a string.")
        try:
            licence = services.licence_lookup(data)
        except licences.LicenceExpressionError as exc:
            raise serializers.ValidationError(exc.message, code=exc.code) from exc
        if licence is None:
            self.fail("not_registered", expression=licences.normalise(data))
        return licence

    def to_representation(self, value: Licence) -> str:
        return value.expression


@extend_schema_field(OpenApiTypes.INT)
class VisiblePrimaryKeyField(serializers.PrimaryKeyRelatedField):
    """A primary key resolved among the objects the requesting user may read."""

    def __init__(self, *, model, **kwargs) -> None:
        self.model = model
        super().__init__(**kwargs)

    def get_queryset(self):
        request = self.context["request"]
        return self.model.objects.visible_to(request.user)


@extend_schema_field(OpenApiTypes.STR)
class AgencyUserNameField(serializers.Field):
    """The user name in ``source`` (e.g. ``created_by``), or null.

    Shown to members of the object's agency and to oversight; to anyone else
    (other agencies, callers of no agency) it is null, so a public object does
    not name the people of the agency that made it. The reader is the
    context's request, else the request being served; with neither, null.
    ``agency`` is the ORM path
    from the object to its agency's id (``model__agency_id``); relations not
    loaded with the row are read in one query for the whole page.
    """

    def __init__(self, *, agency: str, **kwargs) -> None:
        self.agency_path = agency
        self._agency_ids: dict | None = None
        kwargs["read_only"] = True
        kwargs["allow_null"] = True
        super().__init__(**kwargs)

    def get_attribute(self, instance):
        user = super().get_attribute(instance)
        if user is None or not self._shown_for(instance):
            return None
        return user.get_username()

    def to_representation(self, value):
        return value

    def _shown_for(self, instance) -> bool:
        request = self.context.get("request")
        viewer = request.user if request is not None else served_user()
        if viewer is None or not viewer.is_authenticated:
            return False
        if is_oversight(viewer):
            return True
        own = user_membership(viewer)
        return own is not None and self._agency_of(instance) == own.agency_id

    def _agency_of(self, instance) -> int | None:
        *relations, attribute = self.agency_path.split("__")
        obj = instance
        for name in relations:
            if name not in obj._state.fields_cache:
                return self._page_agency_ids(instance).get(instance.pk)
            obj = getattr(obj, name)
            if obj is None:
                return None
        return getattr(obj, attribute)

    def _page_agency_ids(self, instance) -> dict:
        if self._agency_ids is None or instance.pk not in self._agency_ids:
            rows = self.root.instance
            if not isinstance(rows, list | tuple | QuerySet):
                rows = [instance]
            pks = {row.pk for row in rows if isinstance(row, type(instance))}
            pks.add(instance.pk)
            self._agency_ids = dict(
                type(instance)
                ._default_manager.filter(pk__in=pks)
                .values_list("pk", self.agency_path)
            )
        return self._agency_ids


# --- output --------------------------------------------------------------------


class AgencySummarySerializer(serializers.ModelSerializer):
    """An agency named inside another object."""

    class Meta:
        model = Agency
        fields = ["slug", "name"]
        read_only_fields = fields


class AgencySerializer(serializers.ModelSerializer):
    """An agency as the API shows it."""

    class Meta:
        model = Agency
        fields = [
            "slug",
            "name",
            "jurisdiction",
            "contact_name",
            "contact_email",
            "description",
            "is_oversight_body",
            "created_at",
        ]
        read_only_fields = fields


class MembershipSerializer(serializers.ModelSerializer):
    """A person's place in an agency."""

    username = serializers.CharField(source="user.username", read_only=True)
    email = serializers.EmailField(source="user.email", read_only=True)
    agency = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Membership
        fields = ["username", "email", "agency", "role", "created_at", "updated_at"]
        read_only_fields = fields


class LicenceSerializer(serializers.ModelSerializer):
    """A registered licence with what it permits."""

    class Meta:
        model = Licence
        fields = [
            "id",
            "expression",
            "spdx_ids",
            "name",
            "is_osi_approved",
            "allows_commercial_use",
            "allows_derivatives",
            "requires_share_alike",
            "created_at",
        ]
        read_only_fields = fields


class LicenceSummarySerializer(serializers.ModelSerializer):
    """A licence named inside another object, with its flags."""

    class Meta:
        model = Licence
        fields = [
            "expression",
            "is_osi_approved",
            "allows_commercial_use",
            "allows_derivatives",
            "requires_share_alike",
        ]
        read_only_fields = fields


class DatasetSerializer(serializers.ModelSerializer):
    """A dataset as the API shows it."""

    agency = AgencySummarySerializer(read_only=True)
    created_by = AgencyUserNameField(agency="agency_id")

    class Meta:
        model = Dataset
        fields = [
            "id",
            "agency",
            "name",
            "slug",
            "description",
            "visibility",
            "created_by",
            "created_at",
        ]
        read_only_fields = fields


class DatasetVersionSerializer(serializers.ModelSerializer):
    """A dataset version with its datasheet; nothing here changes after creation."""

    dataset = serializers.PrimaryKeyRelatedField(read_only=True)
    dataset_slug = serializers.CharField(source="dataset.slug", read_only=True)
    agency = serializers.CharField(source="dataset.agency.slug", read_only=True)
    licence = LicenceSummarySerializer(read_only=True)
    created_by = AgencyUserNameField(agency="dataset__agency_id")

    class Meta:
        model = DatasetVersion
        fields = [
            "id",
            "dataset",
            "dataset_slug",
            "agency",
            "version",
            "motivation",
            "composition",
            "collection_process",
            "preprocessing",
            "intended_uses",
            "distribution",
            "maintenance",
            "languages",
            "record_count",
            "licence",
            "origin_jurisdiction",
            "personal_data",
            "legal_basis",
            "digest",
            "size_bytes",
            "artifact_state",
            "created_by",
            "created_at",
        ]
        read_only_fields = fields


class AIModelSerializer(serializers.ModelSerializer):
    """A model family as the API shows it."""

    agency = AgencySummarySerializer(read_only=True)
    created_by = AgencyUserNameField(agency="agency_id")

    class Meta:
        model = AIModel
        fields = [
            "id",
            "agency",
            "name",
            "slug",
            "task",
            "domain",
            "description",
            "intended_use",
            "out_of_scope_uses",
            "visibility",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class BaseVersionSerializer(serializers.ModelSerializer):
    """The version another was derived from, named by id, model and version."""

    model = serializers.PrimaryKeyRelatedField(read_only=True)
    model_slug = serializers.CharField(source="model.slug", read_only=True)
    agency = serializers.CharField(source="model.agency.slug", read_only=True)

    class Meta:
        model = ModelVersion
        fields = ["id", "model", "model_slug", "agency", "version"]
        read_only_fields = fields


class DatasetLinkSerializer(serializers.ModelSerializer):
    """A dataset version a model version used, and for what."""

    dataset_version = serializers.PrimaryKeyRelatedField(read_only=True)
    dataset = serializers.CharField(
        source="dataset_version.dataset.slug", read_only=True
    )
    agency = serializers.CharField(
        source="dataset_version.dataset.agency.slug", read_only=True
    )
    version = serializers.CharField(source="dataset_version.version", read_only=True)

    class Meta:
        model = ModelVersionDataset
        fields = ["dataset_version", "dataset", "agency", "version", "role"]
        read_only_fields = fields


class ModelVersionSerializer(serializers.ModelSerializer):
    """A model version: metadata, lineage, artifact state and graph facts.

    ``base_version`` is null when the base belongs to a model the caller may
    not read; ``datasets`` lists only dataset versions the caller may read.
    """

    model = serializers.PrimaryKeyRelatedField(read_only=True)
    model_slug = serializers.CharField(source="model.slug", read_only=True)
    agency = serializers.CharField(source="model.agency.slug", read_only=True)
    licence = LicenceSummarySerializer(read_only=True)
    base_version = serializers.SerializerMethodField()
    datasets = DatasetLinkSerializer(source="dataset_links", many=True, read_only=True)
    is_released = serializers.BooleanField(read_only=True)
    created_by = AgencyUserNameField(agency="model__agency_id")
    # Blank until the artifact has been inspected, as the schema says.
    kind = serializers.ChoiceField(
        choices=ModelKind.choices, allow_blank=True, read_only=True
    )
    derivation = serializers.ChoiceField(
        choices=Derivation.choices, allow_blank=True, read_only=True
    )

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "model",
            "model_slug",
            "agency",
            "version",
            "status",
            "licence",
            "base_version",
            "derivation",
            "derivation_settings",
            "datasets",
            "training_run",
            "training_jurisdiction",
            "training_hardware",
            "training_energy_kwh",
            "hosting_jurisdiction",
            "limitations",
            "risks",
            "ethical_considerations",
            "artifact_state",
            "artifact_error",
            "artifact_digest",
            "artifact_size",
            "artifact_format",
            "graph_inputs",
            "graph_outputs",
            "opsets",
            "parameter_count",
            "weight_bytes",
            "kind",
            "layout",
            "num_layers",
            "quantisation",
            "selftest",
            "is_released",
            "released_at",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    _base_serializer: BaseVersionSerializer | None = None

    @extend_schema_field(BaseVersionSerializer(allow_null=True))
    def get_base_version(self, obj: ModelVersion) -> dict | None:
        base = obj.base_version
        if base is None:
            return None
        request = self.context.get("request")
        # Without a request there is no reader to check: show public bases only.
        user = request.user if request is not None else None
        if not is_visible_to(
            user, agency_id=base.model.agency_id, visibility=base.model.visibility
        ):
            return None
        # One nested serializer for the whole page: building a ModelSerializer's
        # fields costs more than rendering a row (bench/README.md, "Load").
        if self._base_serializer is None:
            self._base_serializer = BaseVersionSerializer(context=self.context)
        return self._base_serializer.to_representation(base)


class MeSerializer(serializers.Serializer):
    """The caller: who they are, their role and their agency."""

    username = serializers.CharField()
    email = serializers.EmailField()
    role = serializers.CharField(allow_null=True)
    is_oversight = serializers.BooleanField()
    is_platform_admin = serializers.BooleanField()
    agency = AgencySummarySerializer(allow_null=True)

    @staticmethod
    def for_user(user) -> dict:
        """The payload for ``user``."""
        membership = user_membership(user)
        return {
            "username": user.get_username(),
            "email": user.email,
            "role": user_role(user),
            "is_oversight": is_oversight(user),
            "is_platform_admin": is_platform_admin(user),
            "agency": membership.agency if membership else None,
        }


class TokenSerializer(serializers.Serializer):
    """A personal API token as listed: its key prefix and lifetime, never the secret."""

    token_key = serializers.CharField()
    created = serializers.DateTimeField()
    expiry = serializers.DateTimeField(allow_null=True)
    is_current = serializers.SerializerMethodField()

    def get_is_current(self, token) -> bool:
        auth = getattr(self.context.get("request"), "auth", None)
        return getattr(auth, "digest", None) == token.digest


class TokenCreatedSerializer(serializers.Serializer):
    """A new token: the secret appears in this response only."""

    token = serializers.CharField(help_text="Send as `Authorization: Token <token>`.")
    token_key = serializers.CharField()
    created = serializers.DateTimeField()
    expiry = serializers.DateTimeField(allow_null=True)


class LicenceRegisteredSerializer(LicenceSerializer):
    """A licence after registration, saying whether it was new."""

    created = serializers.BooleanField(read_only=True)

    class Meta(LicenceSerializer.Meta):
        fields = [*LicenceSerializer.Meta.fields, "created"]
        read_only_fields = fields


# --- input ---------------------------------------------------------------------


class AgencyCreateSerializer(serializers.Serializer):
    """What a platform administrator gives to register an agency."""

    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=80)
    jurisdiction = serializers.CharField(
        max_length=6, validators=[jurisdiction_validator]
    )
    contact_name = serializers.CharField(
        max_length=200, required=False, allow_blank=True
    )
    contact_email = serializers.EmailField(required=False, allow_blank=True)
    description = serializers.CharField(required=False, allow_blank=True)
    is_oversight_body = serializers.BooleanField(required=False, default=False)


class AgencyUpdateSerializer(serializers.Serializer):
    """The agency fields its maintainers may change."""

    name = serializers.CharField(max_length=200, required=False)
    jurisdiction = serializers.CharField(
        max_length=6, validators=[jurisdiction_validator], required=False
    )
    contact_name = serializers.CharField(
        max_length=200, required=False, allow_blank=True
    )
    contact_email = serializers.EmailField(required=False, allow_blank=True)
    description = serializers.CharField(required=False, allow_blank=True)


class MembershipCreateSerializer(serializers.Serializer):
    """A person to add to an agency, by username, with a role."""

    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)

    def validate_username(self, value: str):
        user = get_user_model().objects.filter(username=value, is_active=True).first()
        if user is None:
            raise serializers.ValidationError(
                "No active user has this username.", code="does_not_exist"
            )
        return user


class MembershipUpdateSerializer(serializers.Serializer):
    """A new role for a person."""

    role = serializers.ChoiceField(choices=Role.choices)


class LicenceRegisterSerializer(serializers.Serializer):
    """An SPDX licence expression to register."""

    expression = serializers.CharField(max_length=500)


class DatasetCreateSerializer(serializers.Serializer):
    """A dataset to register for the caller's agency (it starts private)."""

    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=80)
    description = serializers.CharField(required=False, allow_blank=True)


class VisibilityGuardMixin:
    """Refuse a visibility change: it follows governance decisions, not edits."""

    def validate_visibility(self, value: str) -> str:
        current = getattr(self.instance, "visibility", Visibility.PRIVATE)
        if value != current:
            raise serializers.ValidationError(
                "Visibility changes through a governance approval, not this API.",
                code="read_only",
            )
        return value


class DatasetUpdateSerializer(VisibilityGuardMixin, serializers.Serializer):
    """The dataset fields its agency's maintainers may change."""

    name = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    visibility = serializers.ChoiceField(choices=Visibility.choices, required=False)

    def validate(self, attrs):
        attrs.pop("visibility", None)
        return attrs


class DatasetVersionCreateSerializer(serializers.Serializer):
    """A dataset version and its datasheet (Gebru et al.)."""

    dataset = VisiblePrimaryKeyField(model=Dataset)
    version = serializers.CharField(max_length=64, validators=[semver_validator])
    licence = LicenceExpressionField()
    motivation = serializers.CharField()
    composition = serializers.CharField()
    collection_process = serializers.CharField()
    preprocessing = serializers.CharField(required=False, allow_blank=True)
    intended_uses = serializers.CharField()
    distribution = serializers.CharField(required=False, allow_blank=True)
    maintenance = serializers.CharField(required=False, allow_blank=True)
    languages = serializers.ListField(
        child=serializers.RegexField(
            services.LANGUAGE_TAG.pattern,
            max_length=35,
            error_messages={
                "invalid": "Use a BCP 47 language tag such as en or pt-BR."
            },
        ),
        required=False,
        max_length=100,
    )
    record_count = serializers.IntegerField(min_value=0)
    origin_jurisdiction = serializers.CharField(
        max_length=6, validators=[jurisdiction_validator]
    )
    personal_data = serializers.ChoiceField(
        choices=PersonalData.choices, default=PersonalData.NONE
    )
    legal_basis = serializers.CharField(required=False, allow_blank=True, default="")


class ModelCreateSerializer(serializers.Serializer):
    """A model family to register for the caller's agency (it starts private)."""

    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=80)
    task = serializers.ChoiceField(choices=Task.choices)
    domain = serializers.CharField(max_length=200, required=False, allow_blank=True)
    description = serializers.CharField(required=False, allow_blank=True)
    intended_use = serializers.CharField()
    out_of_scope_uses = serializers.CharField(required=False, allow_blank=True)


class ModelUpdateSerializer(VisibilityGuardMixin, serializers.Serializer):
    """The model fields its agency's maintainers may change; the slug is fixed."""

    name = serializers.CharField(max_length=200, required=False)
    slug = serializers.SlugField(max_length=80, required=False)
    task = serializers.ChoiceField(choices=Task.choices, required=False)
    domain = serializers.CharField(max_length=200, required=False, allow_blank=True)
    description = serializers.CharField(required=False, allow_blank=True)
    intended_use = serializers.CharField(required=False)
    out_of_scope_uses = serializers.CharField(required=False, allow_blank=True)
    visibility = serializers.ChoiceField(choices=Visibility.choices, required=False)

    def validate_slug(self, value: str) -> str:
        if self.instance is not None and value != self.instance.slug:
            raise serializers.ValidationError(
                "The slug of a model never changes.", code="read_only"
            )
        return value

    def validate(self, attrs):
        # Both were checked to be unchanged; neither reaches the service.
        attrs.pop("slug", None)
        attrs.pop("visibility", None)
        return attrs


@extend_schema_field(
    {"type": "string", "format": "decimal", "pattern": r"^\d{0,11}(?:\.\d{0,3})?$"}
)
class NonNegativeDecimalField(serializers.DecimalField):
    """A decimal from 0 (``min_value=0``): the schema's pattern has no sign."""


class DatasetLinkInputSerializer(serializers.Serializer):
    """A dataset version this model version used, and for what."""

    dataset_version = VisiblePrimaryKeyField(model=DatasetVersion)
    role = serializers.ChoiceField(choices=DatasetRole.choices)


class ModelVersionFieldsSerializer(serializers.Serializer):
    """The metadata of a model version that its agency may set until release."""

    licence = LicenceExpressionField()
    base_version = VisiblePrimaryKeyField(
        model=ModelVersion, required=False, allow_null=True
    )
    derivation = serializers.ChoiceField(
        choices=Derivation.choices, required=False, allow_blank=True
    )
    datasets = DatasetLinkInputSerializer(many=True, required=False)
    training_run = serializers.CharField(
        max_length=500, required=False, allow_blank=True
    )
    training_jurisdiction = serializers.CharField(
        max_length=6,
        validators=[jurisdiction_validator],
        required=False,
        allow_blank=True,
    )
    training_hardware = serializers.CharField(
        max_length=300, required=False, allow_blank=True
    )
    training_energy_kwh = NonNegativeDecimalField(
        max_digits=14, decimal_places=3, min_value=0, required=False, allow_null=True
    )
    hosting_jurisdiction = serializers.CharField(
        max_length=6,
        validators=[jurisdiction_validator],
        required=False,
        allow_blank=True,
    )
    limitations = serializers.CharField(required=False, allow_blank=True)
    risks = serializers.CharField(required=False, allow_blank=True)
    ethical_considerations = serializers.CharField(required=False, allow_blank=True)

    def validate(self, attrs):
        if "datasets" in attrs:
            attrs["datasets"] = [
                (link["dataset_version"], link["role"]) for link in attrs["datasets"]
            ]
        return attrs


class ModelVersionCreateSerializer(ModelVersionFieldsSerializer):
    """A new version of a model the caller's agency owns."""

    model = VisiblePrimaryKeyField(model=AIModel)
    version = serializers.CharField(max_length=64, validators=[semver_validator])


class ModelVersionUpdateSerializer(ModelVersionFieldsSerializer):
    """Metadata changes to an unreleased version; ``datasets`` replaces the links."""

    licence = LicenceExpressionField(required=False)
