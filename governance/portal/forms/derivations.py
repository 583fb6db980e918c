"""The form that asks for a quantised or optimised version of an fp32 version."""

from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from engine.quantise import BLOCK_SIZES, DEFAULT_BLOCK_SIZE
from registry.models import ArtifactState, DatasetVersion, semver_validator


class DeriveForm(forms.Form):
    """Method, new version string, and the method's own setting."""

    method = forms.ChoiceField(
        label=_("Method"),
        choices=[
            ("dynamic-int8", _("int8, dynamic (no calibration)")),
            ("static-int8", _("int8, static QDQ calibrated on a dataset")),
            ("int4", _("int4 weights (MatMulNBits)")),
            ("optimised", _("fp32, fused graph (ONNX Runtime optimiser, verified)")),
        ],
    )
    version = forms.CharField(
        label=_("New version"), max_length=64, validators=[semver_validator]
    )
    calibration = forms.ModelChoiceField(
        queryset=DatasetVersion.objects.none(),
        label=_("Calibration dataset"),
        required=False,
        help_text=_("For static int8: the dataset version whose texts calibrate it."),
    )
    block_size = forms.TypedChoiceField(
        label=_("Block size"),
        choices=[(size, str(size)) for size in BLOCK_SIZES],
        coerce=int,
        initial=DEFAULT_BLOCK_SIZE,
        required=False,
        help_text=_("For int4: columns per scale."),
    )

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["calibration"].queryset = (
            DatasetVersion.objects.visible_to(user)
            .filter(artifact_state=ArtifactState.AVAILABLE)
            .select_related("dataset")
            .order_by("dataset__name", "-created_at")
        )
