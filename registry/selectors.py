"""Reads that encode who may see what.

Roles come from the person's one ``Membership``; a Django superuser is a
platform administrator (``registry.models.user_role``).
"""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from registry.models import (
    Agency,
    AIModel,
    ClaimRule,
    Dataset,
    DatasetVersion,
    Licence,
    Membership,
    ModelVersion,
    ModelVersionDataset,
    Visibility,
)

# Who a user is (membership, role, agency) is read by the querysets of
# ``registry.models`` too, so it is defined there; re-exported here, with
# the other reads.
from registry.models import forget_membership as forget_membership
from registry.models import is_oversight as is_oversight
from registry.models import is_platform_admin as is_platform_admin
from registry.models import user_agency_id as user_agency_id
from registry.models import user_agency_ids as user_agency_ids
from registry.models import user_membership as user_membership
from registry.models import user_role as user_role


def is_visible_to(user, *, agency_id: int | None, visibility: str) -> bool:
    """The in-memory twin of ``TenantQuerySet.visible_to`` for a loaded row."""
    return (
        is_oversight(user)
        or (agency_id is not None and agency_id == user_agency_id(user))
        or visibility == Visibility.PUBLIC
    )


def agency_list(user) -> QuerySet[Agency]:
    """Agencies the user may read: every one for oversight, else their own."""
    if is_oversight(user):
        return Agency.objects.all()
    return Agency.objects.filter(pk=user_agency_id(user))


def membership_list(user, agency: Agency) -> QuerySet[Membership]:
    """The people of one agency, if the user may read that agency's people."""
    return (
        Membership.objects.visible_to(user)
        .filter(agency=agency)
        .select_related("user", "agency")
    )


def licence_list() -> QuerySet[Licence]:
    """Every registered licence: licences are shared reference data."""
    return Licence.objects.all()


def dataset_list(user) -> QuerySet[Dataset]:
    """Datasets the user may read, with their agency and creator."""
    return Dataset.objects.visible_to(user).select_related("agency", "created_by")


def dataset_version_list(user) -> QuerySet[DatasetVersion]:
    """Dataset versions the user may read, with everything the API shows."""
    return DatasetVersion.objects.visible_to(user).select_related(
        "dataset__agency", "licence", "created_by"
    )


def model_list(user) -> QuerySet[AIModel]:
    """Models the user may read, with their agency and creator."""
    return AIModel.objects.visible_to(user).select_related("agency", "created_by")


def model_version_list(user) -> QuerySet[ModelVersion]:
    """Model versions the user may read, in a constant number of queries.

    Dataset links are limited to dataset versions the user may read, so a
    public model does not reveal the names of its agency's private datasets.
    """
    links = (
        ModelVersionDataset.objects.filter(
            dataset_version__in=DatasetVersion.objects.visible_to(user).values("pk")
        )
        .select_related("dataset_version__dataset__agency")
        # Only what the API shows of a link: a page would otherwise load every
        # datasheet in full (bench/README.md, "Load").
        .only(
            "model_version_id",
            "role",
            "dataset_version__version",
            "dataset_version__dataset__slug",
            "dataset_version__dataset__agency__slug",
        )
    )
    return (
        ModelVersion.objects.visible_to(user)
        .select_related(
            "model__agency", "licence", "base_version__model__agency", "created_by"
        )
        .prefetch_related(Prefetch("dataset_links", queryset=links))
        # The base version, the model and the creator are shown by a few names;
        # their long texts and JSON would be loaded and parsed for every row.
        .defer(*_UNSHOWN_RELATED)
    )


_UNSHOWN_RELATED = (
    *(
        f"base_version__{name}"
        for name in (
            "artifact_error",
            "graph_inputs",
            "graph_outputs",
            "opsets",
            "selftest",
            "limitations",
            "risks",
            "ethical_considerations",
            "training_hardware",
            "source_uri",
        )
    ),
    *(
        f"{path}__{name}"
        for path in ("model", "base_version__model")
        for name in ("description", "intended_use", "out_of_scope_uses", "domain")
    ),
    *(
        f"{path}__{name}"
        for path in ("model__agency", "base_version__model__agency")
        for name in ("description", "contact_name", "contact_email")
    ),
    "created_by__password",
)


def claim_rule_for(claims: dict) -> ClaimRule | None:
    """The active claim rule that decides who ``claims`` make their bearer.

    The highest priority among the matching rules wins; equal priorities, the
    older rule. None when no rule matches (single sign-on is then refused).
    """
    rules = ClaimRule.objects.filter(is_active=True).select_related("agency")
    return next((rule for rule in rules if rule.matches(claims)), None)


def claim_names() -> set[str]:
    """The names of the claims the active rules read (kept in refusal events)."""
    return set(ClaimRule.objects.filter(is_active=True).values_list("claim", flat=True))
