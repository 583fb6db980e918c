"""Catalogue pages: the models list, a model's page, registering models and versions.

Reads go through ``registry.selectors`` (so ``visible_to`` decides what a
reader sees, and another agency's private model answers 404); writes through
``registry.services``, as the API's (registry/api/catalogue.py). Who may
write mirrors the services: an agency's members and maintainers register
models and versions for their own agency; oversight reviewers read only.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Prefetch, Q
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from config.exceptions import DomainError
from registry import selectors, services
from registry.models import AIModel, ModelVersion, Role, Task, VersionStatus
from registry.portal.choices import choices
from registry.portal.forms import (
    ModelEditForm,
    ModelForm,
    ModelVersionForm,
    add_domain_error,
)

PAGE_SIZE = 20


def can_register(user) -> bool:
    """Members and maintainers of an agency register catalogue objects."""
    return selectors.user_role(user) in services.WRITER_ROLES


def can_maintain(user, agency_id: int) -> bool:
    """The owning agency's maintainers, or a platform administrator."""
    if selectors.is_platform_admin(user):
        return True
    return (
        selectors.user_role(user) == Role.MAINTAINER
        and selectors.user_agency_id(user) == agency_id
    )


def can_write_for(user, agency_id: int) -> bool:
    """The owning agency's members and maintainers, or a platform administrator."""
    if selectors.is_platform_admin(user):
        return True
    return can_register(user) and selectors.user_agency_id(user) == agency_id


def visible_model(user, pk: int) -> AIModel:
    """The model among those the user may read, else 404."""
    model = selectors.model_list(user).filter(pk=pk).first()
    if model is None:
        raise Http404
    return model


def _model_rows(user, params) -> tuple:
    """The filtered models, each with its versions' statuses prefetched."""
    versions = ModelVersion.objects.only(
        "id", "model_id", "version", "status", "created_at"
    ).order_by("-created_at", "-id")
    models = selectors.model_list(user).prefetch_related(
        Prefetch("versions", queryset=versions)
    )
    query = (params.get("q") or "").strip()
    if query:
        models = models.filter(
            Q(name__icontains=query)
            | Q(slug__icontains=query)
            | Q(description__icontains=query)
            | Q(domain__icontains=query)
        )
    task = params.get("task") or ""
    if task in Task.values:
        models = models.filter(task=task)
    status = params.get("status") or ""
    if status in VersionStatus.values:
        models = models.filter(versions__status=status).distinct()
    if params.get("owner") == "mine":
        models = models.filter(agency_id=selectors.user_agency_id(user))
    filters = {"q": query, "task": task, "status": status, "owner": params.get("owner")}
    return models.order_by("name", "id"), filters


@login_required
def model_list(request):
    """The models the reader may see: their agency's and public ones, filterable."""
    models, filters = _model_rows(request.user, request.GET)
    page = Paginator(models, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "portal/registry/model_list.html",
        {
            "page": page,
            "filters": filters,
            "query": query.urlencode(),
            "tasks": choices("task"),
            "statuses": choices("status"),
            "can_register": can_register(request.user),
        },
    )


@login_required
def model_detail(request, pk: int):
    """A model: its description, intended use, versions and their licences."""
    model = visible_model(request.user, pk)
    versions = (
        selectors.model_version_list(request.user)
        .filter(model=model)
        .order_by("-created_at", "-id")
    )
    return render(
        request,
        "portal/registry/model_detail.html",
        {
            "model": model,
            "versions": versions,
            "can_write": can_write_for(request.user, model.agency_id),
            "can_maintain": can_maintain(request.user, model.agency_id),
        },
    )


_EDITABLE = (
    "name",
    "task",
    "domain",
    "description",
    "intended_use",
    "out_of_scope_uses",
)


@login_required
@require_http_methods(["GET", "POST"])
def model_edit(request, pk: int):
    """Change a model's description and uses through ``model_update`` (maintainers)."""
    model = visible_model(request.user, pk)
    if not can_maintain(request.user, model.agency_id):
        raise PermissionDenied(_("Only the owning agency's maintainers."))
    initial = {name: getattr(model, name) for name in _EDITABLE}
    form = ModelEditForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            services.model_update(actor=request.user, model=model, **form.cleaned_data)
        except DomainError as error:
            add_domain_error(form, error)
        else:
            return redirect("registry_portal:model_detail", pk=model.pk)
    return render(
        request,
        "portal/registry/model_edit.html",
        {"form": form, "model": model},
        status=400 if form.errors else 200,
    )


@login_required
@require_http_methods(["GET", "POST"])
def model_create(request):
    """Register a model for the reader's agency through ``model_create``."""
    if not can_register(request.user):
        raise PermissionDenied(_("Only an agency's members and maintainers do this."))
    form = ModelForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            model = services.model_create(actor=request.user, **form.cleaned_data)
        except DomainError as error:
            add_domain_error(form, error)
        else:
            return redirect("registry_portal:model_detail", pk=model.pk)
    return render(
        request,
        "portal/registry/model_form.html",
        {"form": form},
        status=400 if form.errors else 200,
    )


def _base_versions(user):
    """Released versions the user may read, offered as bases."""
    return (
        ModelVersion.objects.visible_to(user)
        .filter(released_at__isnull=False)
        .select_related("model__agency")
        .order_by("model__agency__slug", "model__slug", "-created_at")
    )


@login_required
@require_http_methods(["GET", "POST"])
def version_create(request, pk: int):
    """Register a version of a model through ``model_version_create``.

    The licence expression is registered first when it is new
    (``licence_register``, idempotent), as an API client would POST it to
    /api/v1/licences/ before naming it.
    """
    model = visible_model(request.user, pk)
    if not can_write_for(request.user, model.agency_id):
        raise PermissionDenied(_("Only the owning agency's members and maintainers."))
    form = ModelVersionForm(
        request.POST or None, base_versions=_base_versions(request.user)
    )
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        try:
            with transaction.atomic():
                data["licence"], _created = services.licence_register(
                    actor=request.user, expression=data["licence"]
                )
                version = services.model_version_create(
                    actor=request.user, model=model, **data
                )
        except DomainError as error:
            add_domain_error(form, error)
        else:
            return redirect(
                reverse("governance_portal:version_detail", args=[version.pk])
            )
    return render(
        request,
        "portal/registry/version_form.html",
        {"form": form, "model": model},
        status=400 if form.errors else 200,
    )
