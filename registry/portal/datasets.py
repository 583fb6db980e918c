"""Dataset pages: the list, a dataset and its versions, a datasheet, and the forms.

Registering a dataset or a dataset version with its datasheet, and attaching
dataset versions to a model version (training, fine-tuning or evaluation
data), go through ``registry.services`` as the API's writes do; reads through
``registry.selectors``.
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
from django.utils.formats import number_format
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from config.exceptions import DomainError
from registry import lineage, selectors, services
from registry.models import DatasetVersion, ModelVersionDataset
from registry.portal.catalogue import PAGE_SIZE, can_register, can_write_for
from registry.portal.forms import (
    DatasetForm,
    DatasetLinkForm,
    DatasetVersionForm,
    add_domain_error,
)


def _visible_dataset(user, pk: int):
    dataset = selectors.dataset_list(user).filter(pk=pk).first()
    if dataset is None:
        raise Http404
    return dataset


def _visible_dataset_version(user, pk: int) -> DatasetVersion:
    dataset_version = selectors.dataset_version_list(user).filter(pk=pk).first()
    if dataset_version is None:
        raise Http404
    return dataset_version


@login_required
def dataset_list(request):
    """Datasets the reader may see, with their versions' licences and data status."""
    versions = DatasetVersion.objects.select_related("licence").order_by(
        "-created_at", "-id"
    )
    datasets = selectors.dataset_list(request.user).prefetch_related(
        Prefetch("versions", queryset=versions)
    )
    query = (request.GET.get("q") or "").strip()
    if query:
        datasets = datasets.filter(
            Q(name__icontains=query)
            | Q(slug__icontains=query)
            | Q(description__icontains=query)
        )
    page = Paginator(datasets.order_by("name", "id"), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "portal/registry/dataset_list.html",
        {
            "page": page,
            "q": query,
            "query": f"q={query}" if query else "",
            "can_register": can_register(request.user),
        },
    )


@login_required
def dataset_detail(request, pk: int):
    """A dataset and its versions, each with a link to its datasheet."""
    dataset = _visible_dataset(request.user, pk)
    versions = (
        selectors.dataset_version_list(request.user)
        .filter(dataset=dataset)
        .order_by("-created_at", "-id")
    )
    return render(
        request,
        "portal/registry/dataset_detail.html",
        {
            "dataset": dataset,
            "versions": versions,
            "can_write": can_write_for(request.user, dataset.agency_id),
        },
    )


@login_required
def dataset_version_detail(request, pk: int):
    """A dataset version's datasheet and the model versions that used it."""
    dataset_version = _visible_dataset_version(request.user, pk)
    users = (
        ModelVersionDataset.objects.filter(
            dataset_version=dataset_version,
            model_version__in=selectors.model_version_list(request.user).values("pk"),
        )
        .select_related("model_version__model__agency")
        .order_by("role", "model_version__model__slug", "model_version__version")
    )
    graph = lineage.dataset_version_lineage(dataset_version, user=request.user)
    return render(
        request,
        "portal/registry/dataset_version_detail.html",
        {
            "dv": dataset_version,
            "records": number_format(dataset_version.record_count, force_grouping=True),
            "dataset": dataset_version.dataset,
            "users": users,
            "warnings": graph["warnings"],
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def dataset_create(request):
    """Register a dataset for the reader's agency through ``dataset_create``."""
    if not can_register(request.user):
        raise PermissionDenied(_("Only an agency's members and maintainers do this."))
    form = DatasetForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            dataset = services.dataset_create(actor=request.user, **form.cleaned_data)
        except DomainError as error:
            add_domain_error(form, error)
        else:
            return redirect("registry_portal:dataset_detail", pk=dataset.pk)
    return render(
        request,
        "portal/registry/dataset_form.html",
        {"form": form},
        status=400 if form.errors else 200,
    )


@login_required
@require_http_methods(["GET", "POST"])
def dataset_version_create(request, pk: int):
    """Register a dataset version with its datasheet (``dataset_version_create``).

    A new licence expression is registered first (``licence_register``,
    idempotent), as for a model version.
    """
    dataset = _visible_dataset(request.user, pk)
    if not can_write_for(request.user, dataset.agency_id):
        raise PermissionDenied(_("Only the owning agency's members and maintainers."))
    form = DatasetVersionForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        try:
            with transaction.atomic():
                data["licence"], _created = services.licence_register(
                    actor=request.user, expression=data["licence"]
                )
                dataset_version = services.dataset_version_create(
                    actor=request.user, dataset=dataset, **data
                )
        except DomainError as error:
            add_domain_error(form, error)
        else:
            return redirect(
                "registry_portal:dataset_version_detail", pk=dataset_version.pk
            )
    return render(
        request,
        "portal/registry/dataset_version_form.html",
        {"form": form, "dataset": dataset},
        status=400 if form.errors else 200,
    )


@login_required
@require_http_methods(["GET", "POST"])
def version_datasets(request, pk: int):
    """Attach a dataset version to a model version (``model_version_update``).

    The version's links are replaced by the current ones plus the new one,
    as the API's ``datasets`` field does; a released version refuses
    (``version_released``: released content is immutable).
    """
    version = selectors.model_version_list(request.user).filter(pk=pk).first()
    if version is None:
        raise Http404
    if not can_write_for(request.user, version.model.agency_id):
        raise PermissionDenied(_("Only the owning agency's members and maintainers."))
    candidates = selectors.dataset_version_list(request.user).order_by(
        "dataset__agency__slug", "dataset__slug", "-created_at"
    )
    form = DatasetLinkForm(request.POST or None, dataset_versions=candidates)
    if request.method == "POST" and form.is_valid():
        # Every current link, not only those the selector shows the reader.
        current = [
            (link.dataset_version, link.role)
            for link in ModelVersionDataset.objects.filter(
                model_version_id=version.pk
            ).select_related("dataset_version")
        ]
        added = (form.cleaned_data["dataset_version"], form.cleaned_data["role"])
        try:
            services.model_version_update(
                actor=request.user, model_version=version, datasets=[*current, added]
            )
        except DomainError as error:
            add_domain_error(form, error)
        else:
            return redirect(
                reverse("governance_portal:version_detail", args=[version.pk])
                + "#datasets"
            )
    return render(
        request,
        "portal/registry/version_datasets.html",
        {"form": form, "version": version},
        status=400 if form.errors else 200,
    )
