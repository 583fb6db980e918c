"""Forms of the catalogue pages: they validate input, the views call one service.

Field rules the model validators already state (semantic versions,
jurisdiction codes, slugs) are checked again by the services; the forms only
turn text into the values the services take. A service's ``DomainError`` is
put back on the form by ``add_domain_error``, field by field, so the page
shows it beside the input it concerns.
"""

from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from config.exceptions import DomainError
from registry import licences
from registry.models import DatasetVersion, ModelVersion
from registry.portal.choices import choices

_TEXTAREA = forms.Textarea(attrs={"rows": 4})


def add_domain_error(form: forms.Form, error: DomainError) -> None:
    """Show a service's refusal on the form: per field where it names one."""
    placed = False
    for name, problems in (error.fields or {}).items():
        field = name if name in form.fields else None
        for problem in problems:
            message = problem.get("message") if isinstance(problem, dict) else problem
            form.add_error(field, str(message))
            placed = True
    if not placed:
        form.add_error(None, error.message)


class ModelForm(forms.Form):
    """Register a model family for the reader's agency (``model_create``)."""

    name = forms.CharField(label=_("Name"), max_length=200)
    slug = forms.SlugField(
        label=_("Short name"),
        max_length=80,
        help_text=_("Letters, digits and hyphens; unique in your agency."),
    )
    task = forms.ChoiceField(label=_("Task"), choices=choices("task"))
    domain = forms.CharField(label=_("Domain"), max_length=200, required=False)
    description = forms.CharField(
        label=_("Description"), widget=_TEXTAREA, required=False
    )
    intended_use = forms.CharField(label=_("Intended use"), widget=_TEXTAREA)
    out_of_scope_uses = forms.CharField(
        label=_("Out-of-scope uses"), widget=_TEXTAREA, required=False
    )


class ModelEditForm(ModelForm):
    """Change a model's descriptive fields (``model_update``); the slug is fixed."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        del self.fields["slug"]


class LicenceField(forms.CharField):
    """An SPDX expression, checked and normalised (``Apache-2.0 OR MIT``)."""

    def clean(self, value):
        value = super().clean(value)
        try:
            return licences.parse(value).expression
        except licences.LicenceExpressionError as exc:
            raise forms.ValidationError(exc.message, code=exc.code) from exc


class ModelVersionForm(forms.Form):
    """Register a version of a model (``model_version_create``).

    ``base_version`` offers the released versions the reader may see; the
    service checks again that the base is visible and released.
    """

    version = forms.CharField(
        label=_("Version"),
        max_length=64,
        help_text=_("A semantic version such as 1.0.0 or 2.1.0-rc.1."),
    )
    licence = LicenceField(
        label=_("Licence"),
        max_length=500,
        help_text=_("An SPDX licence expression, e.g. Apache-2.0 or MIT OR EUPL-1.2."),
    )
    base_version = forms.ModelChoiceField(
        label=_("Base version"),
        queryset=ModelVersion.objects.none(),
        required=False,
        help_text=_("The released version this one derives from, if any."),
    )
    derivation = forms.ChoiceField(
        label=_("Derivation"),
        choices=[("", _("None")), *choices("derivation")],
        required=False,
    )
    training_jurisdiction = forms.CharField(
        label=_("Training jurisdiction"),
        max_length=6,
        required=False,
        help_text=_("ISO 3166 code, e.g. FR or DE-BY."),
    )
    hosting_jurisdiction = forms.CharField(
        label=_("Hosting jurisdiction"),
        max_length=6,
        required=False,
        help_text=_("ISO 3166 code, e.g. FR or DE-BY."),
    )
    training_hardware = forms.CharField(
        label=_("Training hardware"), max_length=300, required=False
    )
    training_energy_kwh = forms.DecimalField(
        label=_("Training energy (kWh)"),
        max_digits=14,
        decimal_places=3,
        min_value=0,
        required=False,
    )
    training_run = forms.CharField(
        label=_("Training run"),
        max_length=500,
        required=False,
        help_text=_("MLflow run id or runs:/ URI."),
    )
    limitations = forms.CharField(
        label=_("Limitations"), widget=_TEXTAREA, required=False
    )
    risks = forms.CharField(label=_("Risks"), widget=_TEXTAREA, required=False)
    ethical_considerations = forms.CharField(
        label=_("Ethical considerations"), widget=_TEXTAREA, required=False
    )

    def __init__(self, *args, base_versions=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if base_versions is not None:
            self.fields["base_version"].queryset = base_versions


class DatasetForm(forms.Form):
    """Register a dataset for the reader's agency (``dataset_create``)."""

    name = forms.CharField(label=_("Name"), max_length=200)
    slug = forms.SlugField(
        label=_("Short name"),
        max_length=80,
        help_text=_("Letters, digits and hyphens; unique in your agency."),
    )
    description = forms.CharField(
        label=_("Description"), widget=_TEXTAREA, required=False
    )


class DatasetVersionForm(forms.Form):
    """Register a dataset version and its datasheet (``dataset_version_create``)."""

    version = forms.CharField(
        label=_("Version"),
        max_length=64,
        help_text=_("A semantic version such as 1.0.0."),
    )
    licence = LicenceField(
        label=_("Licence"),
        max_length=500,
        help_text=_("An SPDX licence expression, e.g. CC-BY-4.0."),
    )
    motivation = forms.CharField(
        label=_("Motivation"),
        widget=_TEXTAREA,
        help_text=_("Why the dataset was created."),
    )
    composition = forms.CharField(
        label=_("Composition"),
        widget=_TEXTAREA,
        help_text=_("What the records are and how many of each kind."),
    )
    collection_process = forms.CharField(
        label=_("Collection process"), widget=_TEXTAREA
    )
    preprocessing = forms.CharField(
        label=_("Preprocessing"), widget=_TEXTAREA, required=False
    )
    intended_uses = forms.CharField(label=_("Intended uses"), widget=_TEXTAREA)
    distribution = forms.CharField(
        label=_("Distribution"), widget=_TEXTAREA, required=False
    )
    maintenance = forms.CharField(
        label=_("Maintenance"), widget=_TEXTAREA, required=False
    )
    languages = forms.CharField(
        label=_("Languages"),
        required=False,
        help_text=_("BCP 47 tags separated by commas, e.g. fr, en."),
    )
    record_count = forms.IntegerField(label=_("Number of records"), min_value=0)
    origin_jurisdiction = forms.CharField(
        label=_("Origin jurisdiction"),
        max_length=6,
        help_text=_("ISO 3166 code, e.g. FR or DE-BY."),
    )
    personal_data = forms.ChoiceField(
        label=_("Personal data"), choices=choices("personal_data")
    )
    legal_basis = forms.CharField(
        label=_("Legal basis"),
        widget=_TEXTAREA,
        required=False,
        help_text=_("Required for personal or pseudonymised data."),
    )

    def clean_languages(self) -> list[str]:
        raw = self.cleaned_data.get("languages") or ""
        return [tag.strip() for tag in raw.split(",") if tag.strip()]


class DatasetLinkForm(forms.Form):
    """Attach a dataset version to a model version with its role."""

    dataset_version = forms.ModelChoiceField(
        label=_("Dataset version"), queryset=DatasetVersion.objects.none()
    )
    role = forms.ChoiceField(label=_("Used for"), choices=choices("role"))

    def __init__(self, *args, dataset_versions=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if dataset_versions is not None:
            self.fields["dataset_version"].queryset = dataset_versions


class ArtifactUploadForm(forms.Form):
    """The one file of a bundle upload (the endpoint streams it, see uploads.py)."""

    file = forms.FileField(
        label=_("Bundle"),
        help_text=_(
            "model.onnx, or a zip / tar / tar.gz holding model.onnx, its external "
            "weights, tokenizer.json and config files."
        ),
    )


class SignOutEverywhereForm(forms.Form):
    """End every session of the reader; optionally revoke their API tokens."""

    revoke_tokens = forms.BooleanField(
        required=False,
        label=_("Also revoke all my API tokens"),
        help_text=_(
            "Scripts and tools that use your tokens stop working; create new "
            "tokens afterwards if you need them."
        ),
    )
