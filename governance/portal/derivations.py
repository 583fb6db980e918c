"""Deriving a quantised or optimised version from the version page, and its trade."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _

from config.exceptions import DomainError
from governance.portal.forms.derivations import DeriveForm
from governance.quantisation import PLATFORM_DERIVATIONS, quantisation_evidence
from governance.services.derivations import model_version_derive
from registry.models import ArtifactState, Derivation, ModelVersion
from registry.portal.catalogue import can_write_for


def registered_message(derivation: str) -> str:
    """What the requester is told once the derived version is registered."""
    if derivation == Derivation.OPTIMISED:
        return _(
            "The optimised version is registered; a worker fuses and verifies it now."
        )
    return _("The quantised version is registered; a worker derives it now.")


def may_derive(user, version: ModelVersion) -> bool:
    """The owning agency's writers, on a released fp32 version."""
    return (
        can_write_for(user, version.model.agency_id)
        and version.is_released
        and version.artifact_state == ArtifactState.AVAILABLE
        and version.quantisation == "fp32"
        and version.derivation != Derivation.QUANTISED
    )


def evidence_rows(version: ModelVersion) -> dict | None:
    """The trade of a quantised or optimised version, for the version page.

    None for other versions and for a derivation that failed (it has no
    bundle, so nothing to compare).
    """
    if (
        version.derivation not in PLATFORM_DERIVATIONS
        or version.base_version_id is None
        or version.derivation_failed
    ):
        return None
    return quantisation_evidence(version)


def failure_explanation(version: ModelVersion) -> dict | None:
    """Why a platform derivation failed, in plain words, for the version page.

    ``{"code", "explanation", "detail"}``: the machine-readable code, what it
    means for the reader, and the worker's own reason; None unless
    ``version.derivation_failed``.
    """
    if not version.derivation_failed:
        return None
    code = version.derivation_settings["failure_code"]
    explanations = {
        "not_fused": _(
            "Neither Civitas's attention fusion nor ONNX Runtime's optimiser "
            "recognised a pattern it can fuse in the base version's graph. No "
            "optimised bundle was made: an identical copy of the base version "
            "would add nothing."
        ),
        "fusion_not_verified": _(
            "The fused graph changed the model's scores by more than the "
            "tolerance on the verification texts, so it was thrown away."
        ),
        "not_causal_lm": _("Only causal language models can be optimised."),
    }
    return {
        "code": code,
        "explanation": explanations.get(
            code, _("The derivation stopped before a bundle could be made.")
        ),
        "detail": version.artifact_error,
    }


@login_required
def version_derive_view(request, pk: int):
    """Ask for a quantised or optimised version (GET form, POST request)."""
    version = get_object_or_404(
        ModelVersion.objects.visible_to(request.user).select_related("model__agency"),
        pk=pk,
    )
    if not can_write_for(request.user, version.model.agency_id):
        raise PermissionDenied
    form = DeriveForm(
        request.POST if request.method == "POST" else None, user=request.user
    )
    if request.method == "POST" and form.is_valid():
        try:
            derived = model_version_derive(
                actor=request.user,
                parent=version,
                method=form.cleaned_data["method"],
                version=form.cleaned_data["version"],
                calibration=form.cleaned_data.get("calibration"),
                block_size=form.cleaned_data.get("block_size"),
            )
        except DomainError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, registered_message(derived.derivation))
            return redirect("governance_portal:version_detail", pk=derived.pk)
    return render(
        request,
        "portal/versions/derive.html",
        {
            "version": version,
            "form": form,
            "may_derive": may_derive(request.user, version),
        },
    )
