"""The catalogue: agencies and their people, licences, datasets, models, versions.

Writes with business meaning go through ``registry.services``; visibility
rules live in the querysets below (``visible_to``), so every read path — API,
admin, portal — applies the same tenancy.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Upper

from config.authentication import MEMBERSHIP_CACHE_ATTR

# ISO 3166-1 alpha-2 ("FR"), optionally with an ISO 3166-2 subdivision ("ES-CT").
jurisdiction_validator = RegexValidator(
    r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$",
    "Use an ISO 3166-1 alpha-2 code, optionally with an ISO 3166-2 subdivision "
    "(e.g. FR, DE-BY, ES-CT).",
    code="invalid_jurisdiction",
)
semver_validator = RegexValidator(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$",
    "Use a semantic version such as 1.0.0 or 2.1.0-rc.1.",
    code="invalid_version",
)
sha256_validator = RegexValidator(
    r"^[0-9a-f]{64}$",
    "A SHA-256 digest is 64 lowercase hex characters.",
    "invalid_digest",
)


class Role(models.TextChoices):
    MEMBER = "member", "Member"
    MAINTAINER = "maintainer", "Maintainer"
    REVIEWER = "reviewer", "Oversight reviewer"
    ADMIN = "admin", "Platform administrator"


class Visibility(models.TextChoices):
    PRIVATE = "private", "Private to the agency"
    PUBLIC = "public", "Public"


class Agency(models.Model):
    """A public body using Civitas: the tenant that owns datasets and models."""

    name = models.CharField(max_length=200, unique=True)
    slug = models.SlugField(max_length=80, unique=True)
    jurisdiction = models.CharField(max_length=6, validators=[jurisdiction_validator])
    contact_name = models.CharField(max_length=200, blank=True)
    contact_email = models.EmailField(blank=True)
    description = models.TextField(blank=True)
    is_oversight_body = models.BooleanField(
        default=False, help_text="Oversight bodies' reviewers decide on approvals."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "agencies"

    def __str__(self) -> str:
        return self.name


class MembershipQuerySet(models.QuerySet):
    def visible_to(self, user) -> MembershipQuerySet:
        """Oversight sees every membership; others see their own agency's."""
        if is_oversight(user):
            return self
        return self.filter(agency_id=user_agency_id(user))


class Membership(models.Model):
    """A person's place in one agency, with a role. One membership per person."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="membership"
    )
    agency = models.ForeignKey(
        Agency, on_delete=models.PROTECT, related_name="memberships"
    )
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = MembershipQuerySet.as_manager()

    class Meta:
        ordering = ["agency__name", "user__username"]

    def __str__(self) -> str:
        return f"{self.user} ({self.role}, {self.agency.slug})"


# --- Who a user is -------------------------------------------------------------
#
# Roles come from the person's one ``Membership``; a Django superuser is a
# platform administrator. The membership is fetched once per user object and
# cached on it, so a request asks the database at most once. The querysets
# below need these, so they live here (``registry.selectors`` re-exports them).

# The API token's check fills it from the row it joins (config.authentication).
_CACHE_ATTR = MEMBERSHIP_CACHE_ATTR


def user_membership(user) -> Membership | None:
    """The user's membership (with its agency), or None for outsiders."""
    if user is None or not user.is_authenticated:
        return None
    if not hasattr(user, _CACHE_ATTR):
        setattr(
            user,
            _CACHE_ATTR,
            Membership.objects.select_related("agency").filter(user_id=user.pk).first(),
        )
    return getattr(user, _CACHE_ATTR)


def user_role(user) -> str | None:
    """The user's role name, ``admin`` for superusers, None for outsiders."""
    if user is not None and user.is_authenticated and user.is_superuser:
        return Role.ADMIN
    membership = user_membership(user)
    return membership.role if membership else None


def user_agency_id(user) -> int | None:
    """The id of the user's agency, or None."""
    membership = user_membership(user)
    return membership.agency_id if membership else None


def user_agency_ids(user) -> set[int]:
    """The agencies whose private objects the user may read (oversight: not listed)."""
    agency_id = user_agency_id(user)
    return {agency_id} if agency_id is not None else set()


def is_platform_admin(user) -> bool:
    """Platform administrators manage every agency."""
    return user_role(user) == Role.ADMIN


def is_oversight(user) -> bool:
    """Reviewers and platform administrators read across every agency."""
    return user_role(user) in (Role.REVIEWER, Role.ADMIN)


def forget_membership(user) -> None:
    """Drop the cached membership after a role change."""
    if hasattr(user, _CACHE_ATTR):
        delattr(user, _CACHE_ATTR)


class Licence(models.Model):
    """A normalised SPDX licence expression and what it permits.

    The flags describe the expression as a whole, read conservatively: for
    ``A AND B`` a permission holds only if both grant it; for ``A OR B`` if
    either does (the licensee may choose).
    """

    expression = models.CharField(max_length=500, unique=True)
    spdx_ids = models.JSONField(
        default=list, help_text="SPDX identifiers in the expression"
    )
    name = models.CharField(max_length=300, blank=True)
    is_osi_approved = models.BooleanField(default=False)
    allows_commercial_use = models.BooleanField(default=True)
    allows_derivatives = models.BooleanField(default=True)
    requires_share_alike = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["expression"]

    def __str__(self) -> str:
        return self.expression


class PersonalData(models.TextChoices):
    NONE = "none", "No personal data"
    PSEUDONYMISED = "pseudonymised", "Pseudonymised"
    PERSONAL = "personal", "Personal data"


class ArtifactState(models.TextChoices):
    """Where an artifact is in its journey from the agency to a usable file."""

    NONE = "none", "No artifact yet"
    PENDING = "pending", "Waiting for a worker to fetch and verify"
    AVAILABLE = "available", "Verified and usable"
    FAILED = "failed", "Refused"


class TenantQuerySet(models.QuerySet):
    """A queryset of objects owned by an agency through ``agency_path``."""

    agency_path = "agency"
    visibility_path = "visibility"

    def visible_to(self, user):
        """Oversight sees all; others their own agency's objects and public ones."""
        if is_oversight(user):
            return self
        own = Q(**{f"{self.agency_path}_id": user_agency_id(user)})
        public = Q(**{self.visibility_path: Visibility.PUBLIC})
        return self.filter(own | public)

    def editable_by(self, user):
        """Objects the user's agency owns (oversight reads, it does not edit)."""
        if is_platform_admin(user):
            return self
        return self.filter(**{f"{self.agency_path}_id": user_agency_id(user)})


class DatasetQuerySet(TenantQuerySet):
    pass


class Dataset(models.Model):
    """A named body of data an agency keeps; its content lives in versions."""

    agency = models.ForeignKey(
        Agency, on_delete=models.PROTECT, related_name="datasets"
    )
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80)
    description = models.TextField(blank=True)
    visibility = models.CharField(
        max_length=10, choices=Visibility.choices, default=Visibility.PRIVATE
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DatasetQuerySet.as_manager()

    class Meta:
        ordering = ["agency__slug", "slug"]
        constraints = [
            models.UniqueConstraint(
                fields=["agency", "slug"], name="dataset_slug_per_agency"
            )
        ]

    def __str__(self) -> str:
        return f"{self.agency.slug}/{self.slug}"


class DatasetVersionQuerySet(TenantQuerySet):
    agency_path = "dataset__agency"
    visibility_path = "dataset__visibility"


class DatasetVersion(models.Model):
    """An immutable release of a dataset, with its datasheet.

    The datasheet follows Gebru et al., "Datasheets for Datasets". Personal
    data requires a legal basis. Nothing here changes after creation.
    """

    dataset = models.ForeignKey(
        Dataset, on_delete=models.PROTECT, related_name="versions"
    )
    version = models.CharField(max_length=64, validators=[semver_validator])
    motivation = models.TextField()
    composition = models.TextField()
    collection_process = models.TextField()
    preprocessing = models.TextField(blank=True)
    intended_uses = models.TextField()
    distribution = models.TextField(blank=True)
    maintenance = models.TextField(blank=True)
    languages = models.JSONField(default=list, help_text="BCP 47 language tags")
    record_count = models.BigIntegerField(validators=[MinValueValidator(0)])
    licence = models.ForeignKey(Licence, on_delete=models.PROTECT, related_name="+")
    origin_jurisdiction = models.CharField(
        max_length=6, validators=[jurisdiction_validator]
    )
    personal_data = models.CharField(
        max_length=20, choices=PersonalData.choices, default=PersonalData.NONE
    )
    legal_basis = models.TextField(blank=True)
    digest = models.CharField(max_length=64, blank=True, validators=[sha256_validator])
    size_bytes = models.BigIntegerField(null=True, blank=True)
    storage_key = models.CharField(max_length=500, blank=True)
    source_uri = models.CharField(max_length=1000, blank=True)
    original_filename = models.CharField(max_length=255, blank=True)
    artifact_state = models.CharField(
        max_length=20, choices=ArtifactState.choices, default=ArtifactState.NONE
    )
    artifact_error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DatasetVersionQuerySet.as_manager()

    class Meta:
        ordering = ["dataset__slug", "-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["dataset", "version"], name="dataset_version_unique"
            ),
            models.CheckConstraint(
                condition=~Q(personal_data=PersonalData.PERSONAL) | ~Q(legal_basis=""),
                name="personal_data_needs_legal_basis",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.dataset}@{self.version}"


class Task(models.TextChoices):
    TEXT_GENERATION = "text-generation", "Text generation"
    TEXT_CLASSIFICATION = "text-classification", "Text classification"
    TOKEN_CLASSIFICATION = "token-classification", "Token classification"
    EMBEDDING = "embedding", "Embedding"
    OTHER = "other", "Other"


class AIModelQuerySet(TenantQuerySet):
    pass


class AIModel(models.Model):
    """A model family an agency develops; its releases are ``ModelVersion`` rows."""

    agency = models.ForeignKey(Agency, on_delete=models.PROTECT, related_name="models")
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80)
    task = models.CharField(max_length=30, choices=Task.choices)
    domain = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    intended_use = models.TextField()
    out_of_scope_uses = models.TextField(blank=True)
    visibility = models.CharField(
        max_length=10, choices=Visibility.choices, default=Visibility.PRIVATE
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = AIModelQuerySet.as_manager()

    class Meta:
        ordering = ["agency__slug", "slug"]
        verbose_name = "model"
        constraints = [
            models.UniqueConstraint(
                fields=["agency", "slug"], name="model_slug_per_agency"
            )
        ]

    def __str__(self) -> str:
        return f"{self.agency.slug}/{self.slug}"


class VersionStatus(models.TextChoices):
    """Where a version stands, derived from its use cases' statuses.

    Never set directly: ``registry.services.model_version_status_sync``
    recomputes it whenever one of the version's use cases changes status
    (see ``version_status_for``).
    """

    DRAFT = "draft", "Draft"
    IN_REVIEW = "in_review", "In review"
    APPROVED = "approved", "Approved"
    SUSPENDED = "suspended", "Suspended"
    RETIRED = "retired", "Retired"


class ModelKind(models.TextChoices):
    CAUSAL_LM_KV = "causal_lm_kv", "Causal LM with KV cache"
    CAUSAL_LM = "causal_lm", "Causal LM without KV cache"
    SEQ_CLASSIFIER = "seq_classifier", "Sequence classifier"
    GENERIC = "generic", "Generic tensor model"


class Derivation(models.TextChoices):
    FINE_TUNED = "fine-tuned", "Fine-tuned"
    QUANTISED = "quantised", "Quantised"
    OPTIMISED = "optimised", "Optimised (fused graph)"
    DISTILLED = "distilled", "Distilled"
    CONTINUED_PRETRAINING = "continued-pretraining", "Continued pre-training"
    OTHER = "other", "Other"


class ModelVersionQuerySet(TenantQuerySet):
    agency_path = "model__agency"
    visibility_path = "model__visibility"


class ModelVersion(models.Model):
    """A release of a model: its ONNX bundle, graph facts, lineage and model card.

    Once its artifact is verified (``released_at`` set) the content is frozen:
    a change means a new version. Only the lifecycle status moves afterwards,
    through the governance services.
    """

    model = models.ForeignKey(
        AIModel, on_delete=models.PROTECT, related_name="versions"
    )
    version = models.CharField(max_length=64, validators=[semver_validator])
    status = models.CharField(
        max_length=20, choices=VersionStatus.choices, default=VersionStatus.DRAFT
    )
    licence = models.ForeignKey(Licence, on_delete=models.PROTECT, related_name="+")
    # The artifact bundle.
    artifact_state = models.CharField(
        max_length=20, choices=ArtifactState.choices, default=ArtifactState.NONE
    )
    artifact_error = models.TextField(blank=True)
    artifact_key = models.CharField(max_length=500, blank=True)
    artifact_digest = models.CharField(
        max_length=64, blank=True, validators=[sha256_validator]
    )
    artifact_size = models.BigIntegerField(null=True, blank=True)
    artifact_format = models.CharField(max_length=10, blank=True)
    original_filename = models.CharField(max_length=255, blank=True)
    source_uri = models.CharField(max_length=1000, blank=True)
    # Facts read from the graph (never from the uploader's claims).
    graph_inputs = models.JSONField(default=list, blank=True)
    graph_outputs = models.JSONField(default=list, blank=True)
    opsets = models.JSONField(default=dict, blank=True)
    parameter_count = models.BigIntegerField(null=True, blank=True)
    weight_bytes = models.BigIntegerField(null=True, blank=True)
    kind = models.CharField(max_length=20, choices=ModelKind.choices, blank=True)
    layout = models.CharField(max_length=20, blank=True)
    num_layers = models.IntegerField(null=True, blank=True)
    quantisation = models.CharField(max_length=20, blank=True)
    # Figures of the registration self-test (language models only).
    selftest = models.JSONField(default=dict, blank=True)
    # Lineage.
    base_version = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="derived_versions",
    )
    derivation = models.CharField(max_length=30, choices=Derivation.choices, blank=True)
    # How a platform-derived version was made (method and settings); empty
    # for versions the agency uploaded.
    derivation_settings = models.JSONField(default=dict, blank=True)
    training_run = models.CharField(
        max_length=500, blank=True, help_text="MLflow run id or runs:/ URI"
    )
    training_jurisdiction = models.CharField(
        max_length=6, blank=True, validators=[jurisdiction_validator]
    )
    training_hardware = models.CharField(max_length=300, blank=True)
    training_energy_kwh = models.DecimalField(
        max_digits=14,
        decimal_places=3,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
    )
    hosting_jurisdiction = models.CharField(
        max_length=6, blank=True, validators=[jurisdiction_validator]
    )
    # Model card.
    limitations = models.TextField(blank=True)
    risks = models.TextField(blank=True)
    ethical_considerations = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    released_at = models.DateTimeField(null=True, blank=True)

    objects = ModelVersionQuerySet.as_manager()

    class Meta:
        ordering = ["model__slug", "-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["model", "version"], name="model_version_unique"
            )
        ]
        indexes = [
            models.Index(fields=["artifact_digest"]),
            # Filters of the version list, each ordered by the cursor (-id): a
            # value few rows hold must not scan the whole catalogue
            # (bench/README.md, "load.py").
            models.Index(fields=["status", "id"], name="load_mv_status_id"),
            models.Index(fields=["artifact_state", "id"], name="load_mv_artifact_id"),
            models.Index(fields=["kind", "id"], name="load_mv_kind_id"),
            models.Index(
                Upper("hosting_jurisdiction"), F("id"), name="load_mv_hosting_id"
            ),
            models.Index(
                Upper("training_jurisdiction"), F("id"), name="load_mv_training_id"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model}@{self.version}"

    @property
    def is_released(self) -> bool:
        """Released content is immutable."""
        return self.released_at is not None

    @property
    def derivation_failed(self) -> bool:
        """A platform derivation that ended without a bundle, for good.

        Such a version never gets an artifact (no upload replaces the
        platform's derivation), so it is neither evaluated, scheduled nor
        exported; its page and API say why (``failure_code``).
        """
        return self.artifact_state == ArtifactState.FAILED and bool(
            self.derivation_settings.get("failure_code")
        )


class DatasetRole(models.TextChoices):
    TRAINING = "training", "Training"
    FINE_TUNING = "fine-tuning", "Fine-tuning"
    EVALUATION = "evaluation", "Evaluation"


class ModelVersionDataset(models.Model):
    """A dataset version a model version was trained, tuned or evaluated on."""

    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="dataset_links"
    )
    dataset_version = models.ForeignKey(
        DatasetVersion, on_delete=models.PROTECT, related_name="model_links"
    )
    role = models.CharField(max_length=20, choices=DatasetRole.choices)

    class Meta:
        ordering = ["role", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["model_version", "dataset_version", "role"],
                name="model_version_dataset_role_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.model_version} <- {self.dataset_version} ({self.role})"


# --- Identity: single sign-on rules and sign-out everywhere --------------------


class ClaimRule(models.Model):
    """Who a person signing in through OpenID Connect becomes in Civitas.

    A rule matches when the claim named ``claim`` (from the ID token or the
    userinfo answer) equals ``value`` exactly, or is a list holding it (a
    ``groups`` claim). Of the active rules that match, the one with the
    highest ``priority`` wins (equal priorities: the older rule); it gives
    the person ``agency`` and ``role``. No rule matching: sign-in refused.
    """

    name = models.CharField(max_length=120, help_text="What the rule is for.")
    claim = models.CharField(
        max_length=100,
        validators=[RegexValidator(r"^[A-Za-z0-9_.:/-]+$")],
        help_text="The claim's name, e.g. agency, groups, civitas_role.",
    )
    value = models.CharField(
        max_length=300, help_text="The value the claim must equal (exact match)."
    )
    agency = models.ForeignKey(
        Agency, on_delete=models.PROTECT, related_name="claim_rules"
    )
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.MEMBER)
    priority = models.IntegerField(
        default=0, help_text="The matching rule with the highest priority wins."
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-priority", "id"]

    def __str__(self) -> str:
        return f"{self.claim} = {self.value} -> {self.role} @ {self.agency.slug}"

    def matches(self, claims: dict) -> bool:
        """Whether ``claims`` carry this rule's claim with its value."""
        found = claims.get(self.claim)
        if isinstance(found, list | tuple):
            return self.value in [str(item) for item in found]
        return found is not None and str(found) == self.value


class ExternalIdentity(models.Model):
    """A person's identity at an OpenID Connect provider: issuer and subject.

    Single sign-on finds the account by this pair, never by e-mail address
    or username, which a provider may let people change.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="external_identities",
    )
    issuer = models.CharField(max_length=300)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)
    last_sign_in_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["issuer", "subject"], name="external_identity_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.subject} @ {self.issuer}"


class SessionGeneration(models.Model):
    """How many times a person ended all their sessions ("sign out everywhere").

    Each browser session remembers the generation it was opened in; a session
    from an older generation is ended at its next request
    (``registry.sessions.SessionGenerationMiddleware``).
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="session_generation",
    )
    generation = models.PositiveIntegerField(default=0)
    ended_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.user} (generation {self.generation})"


class UploadState(models.TextChoices):
    """Where a resumable upload session is (``registry.services.uploads``)."""

    OPEN = "open", "Receiving parts"
    COMPLETING = "completing", "Being assembled and checked"
    COMPLETED = "completed", "Stored as the version's artifact"
    FAILED = "failed", "Refused at completion"


class UploadSession(models.Model):
    """A resumable, multi-part upload of one model version's bundle.

    The parts land at their offsets in one server-named staging file
    (``ARTIFACT_TMP_DIR/uploads/<id>.bundle``); the session's id, not any
    client input, names it. Part ``n`` (from 1) covers bytes
    ``[(n-1)*part_size, min(n*part_size, size))``. Expired sessions and their
    staging files are removed by ``civitas.upload_cleanup``.
    """

    id = models.UUIDField(primary_key=True)
    version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="upload_sessions"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    size = models.BigIntegerField(validators=[MinValueValidator(1)])
    part_size = models.BigIntegerField(validators=[MinValueValidator(1)])
    part_count = models.PositiveIntegerField()
    original_filename = models.CharField(max_length=255, blank=True)
    # The whole bundle's SHA-256 as the client announced it (optional).
    expected_sha256 = models.CharField(max_length=64, blank=True)
    state = models.CharField(
        max_length=20, choices=UploadState.choices, default=UploadState.OPEN
    )
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["expires_at"], name="upload_session_expiry")]

    def __str__(self) -> str:
        return f"upload {self.id} of version {self.version_id}"

    def part_length(self, number: int) -> int:
        """The exact byte length part ``number`` (from 1) must have."""
        start = (number - 1) * self.part_size
        return max(0, min(self.part_size, self.size - start))


class UploadPart(models.Model):
    """One received, hash-checked part of an upload session."""

    session = models.ForeignKey(
        UploadSession, on_delete=models.CASCADE, related_name="parts"
    )
    number = models.PositiveIntegerField()
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64, validators=[sha256_validator])
    received_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["number"]
        constraints = [
            models.UniqueConstraint(
                fields=["session", "number"], name="upload_part_unique"
            )
        ]

    def __str__(self) -> str:
        return f"part {self.number} of {self.session_id}"
