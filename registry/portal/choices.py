"""The catalogue's choices with translated labels, for the portal's forms and pages.

``registry.models`` states its choices in English for the API and the admin;
the portal shows them in the reader's language. Keyed by the stored value,
so a value missing here falls back to the model's own label.
"""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from registry.models import (
    DatasetRole,
    Derivation,
    ModelKind,
    PersonalData,
    Task,
    VersionStatus,
)

LABELS = {
    "task": {
        Task.TEXT_GENERATION: _("Text generation"),
        Task.TEXT_CLASSIFICATION: _("Text classification"),
        Task.TOKEN_CLASSIFICATION: _("Token classification"),
        Task.EMBEDDING: _("Embedding"),
        Task.OTHER: _("Other"),
    },
    "derivation": {
        Derivation.FINE_TUNED: _("Fine-tuned"),
        Derivation.QUANTISED: _("Quantised"),
        Derivation.OPTIMISED: _("Optimised (fused graph)"),
        Derivation.DISTILLED: _("Distilled"),
        Derivation.CONTINUED_PRETRAINING: _("Continued pre-training"),
        Derivation.OTHER: _("Other"),
    },
    "kind": {
        ModelKind.CAUSAL_LM_KV: _("Causal LM with KV cache"),
        ModelKind.CAUSAL_LM: _("Causal LM without KV cache"),
        ModelKind.SEQ_CLASSIFIER: _("Sequence classifier"),
        ModelKind.GENERIC: _("Generic tensor model"),
    },
    "role": {
        DatasetRole.TRAINING: _("Training"),
        DatasetRole.FINE_TUNING: _("Fine-tuning"),
        DatasetRole.EVALUATION: _("Evaluation"),
    },
    "personal_data": {
        PersonalData.NONE: _("No personal data"),
        PersonalData.PSEUDONYMISED: _("Pseudonymised"),
        PersonalData.PERSONAL: _("Personal data"),
    },
    "status": {
        VersionStatus.DRAFT: _("Draft"),
        VersionStatus.IN_REVIEW: _("In review"),
        VersionStatus.APPROVED: _("Approved"),
        VersionStatus.SUSPENDED: _("Suspended"),
        VersionStatus.RETIRED: _("Retired"),
    },
}


def choices(kind: str) -> list[tuple[str, str]]:
    """``(value, translated label)`` pairs for a form field or a filter."""
    return list(LABELS[kind].items())


def label(value: str, kind: str) -> str:
    """The translated label of a stored value, or the value itself."""
    return LABELS.get(kind, {}).get(value, value)
