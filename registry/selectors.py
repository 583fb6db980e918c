"""Reads that encode who may see what.

Roles come from the person's one ``Membership``; a Django superuser is a
platform administrator. The membership is fetched once per user object and
cached on it, so a request asks the database at most once.
"""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

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
    Visibility,
)

_CACHE_ATTR = "_civitas_membership"


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
    links = ModelVersionDataset.objects.filter(
        dataset_version__in=DatasetVersion.objects.visible_to(user).values("pk")
    ).select_related("dataset_version__dataset__agency")
    return (
        ModelVersion.objects.visible_to(user)
        .select_related(
            "model__agency", "licence", "base_version__model__agency", "created_by"
        )
        .prefetch_related(Prefetch("dataset_links", queryset=links))
    )
