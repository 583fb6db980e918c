"""The one record every export renders: write once, publish many.

``version_record`` gathers, through the selectors, everything Civitas holds
about a model version into a tree of frozen dataclasses; ``use_case_record``
adds one use case on top. The model card, the ML-BOM, the Annex IV document
and the transparency record are pure functions of these records, so a field
is read from the database in one place and appears the same in every export.

Visibility is the reader's: a dataset version the reader may not see is kept
by its role, licence and personal-data status only (``disclosed`` false, no
name), as the public register shows it; use cases and decisions are those
the reader may see.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from django.db.models import OuterRef, QuerySet, Subquery

from governance.models import Decision, PolicyResult, UseCase
from governance.register import RegisterEvaluation, latest_evaluations
from registry.models import DatasetVersion, ModelVersion, ModelVersionDataset
from registry.selectors import model_version_list


@dataclass(frozen=True)
class AgencyFacts:
    name: str
    slug: str
    jurisdiction: str
    contact_email: str


@dataclass(frozen=True)
class LicenceFacts:
    expression: str
    spdx_ids: tuple[str, ...]
    name: str


@dataclass(frozen=True)
class DatasetFacts:
    """A dataset version the model version names, with its datasheet.

    When the reader may not see it, only ``role``, ``licence`` and
    ``personal_data`` are filled and ``disclosed`` is false.
    """

    disclosed: bool
    role: str
    licence: str
    personal_data: str
    agency_slug: str = ""
    name: str = ""
    slug: str = ""
    version: str = ""
    digest: str = ""
    source_uri: str = ""
    languages: tuple[str, ...] = ()
    record_count: int | None = None
    size_bytes: int | None = None
    origin_jurisdiction: str = ""
    legal_basis: str = ""
    motivation: str = ""
    composition: str = ""
    collection_process: str = ""
    preprocessing: str = ""
    intended_uses: str = ""
    distribution: str = ""
    maintenance: str = ""

    @property
    def ref(self) -> str:
        """A stable identifier: ``agency/dataset@version``, or the role when hidden."""
        if not self.disclosed:
            return f"undisclosed-{self.role}-dataset"
        return f"{self.agency_slug}/{self.slug}@{self.version}"


@dataclass(frozen=True)
class BaseVersionFacts:
    """The version this one derives from (its pedigree)."""

    id: int
    agency_slug: str
    model_name: str
    model_slug: str
    version: str
    artifact_digest: str
    licence: str


@dataclass(frozen=True)
class LifecycleEvent:
    """A decision on one of the version's use cases."""

    decided_at: datetime
    use_case_title: str
    kind: str
    from_status: str
    to_status: str
    rationale: str


@dataclass(frozen=True)
class UseCaseFacts:
    """A use case of the version, as its agency wrote it, and its assessment."""

    id: int
    title: str
    purpose: str
    public_service: str
    affected_people: str
    decision_informed: str
    human_oversight: str
    valid_until: date
    status: str
    risk_tier: str
    risk_score: int | None
    risk_reasons: tuple[str, ...]
    policy_passed: bool | None
    agency: AgencyFacts


@dataclass(frozen=True)
class VersionRecord:
    """Everything the exports say about one model version."""

    id: int
    agency: AgencyFacts
    model_name: str
    model_slug: str
    task: str
    domain: str
    description: str
    intended_use: str
    out_of_scope_uses: str
    version: str
    status: str
    licence: LicenceFacts
    artifact_digest: str
    artifact_size: int | None
    artifact_format: str
    graph_inputs: tuple[dict, ...]
    graph_outputs: tuple[dict, ...]
    opsets: dict
    parameter_count: int | None
    kind: str
    layout: str
    quantisation: str
    base: BaseVersionFacts | None
    derivation: str
    training_run: str
    training_jurisdiction: str
    training_hardware: str
    training_energy_kwh: Decimal | None
    hosting_jurisdiction: str
    limitations: str
    risks: str
    ethical_considerations: str
    created_at: datetime
    released_at: datetime | None
    datasets: tuple[DatasetFacts, ...]
    evaluations: tuple[RegisterEvaluation, ...]
    use_cases: tuple[UseCaseFacts, ...]
    lifecycle: tuple[LifecycleEvent, ...]

    @property
    def full_name(self) -> str:
        return f"{self.agency.slug}/{self.model_slug}"

    @property
    def languages(self) -> tuple[str, ...]:
        """Languages of the training and fine-tuning data, sorted, no repeats."""
        return tuple(
            sorted(
                {
                    language
                    for d in self.datasets
                    if d.role != "evaluation"
                    for language in d.languages
                }
            )
        )


@dataclass(frozen=True)
class UseCaseRecord:
    """One use case with the record of the version it uses."""

    use_case: UseCaseFacts
    version: VersionRecord


def _values(obj, names: str) -> dict:
    """``{name: obj.name}`` for each of the space-separated ``names``."""
    return {name: getattr(obj, name) for name in names.split()}


def _agency(agency) -> AgencyFacts:
    return AgencyFacts(**_values(agency, "name slug jurisdiction contact_email"))


_DATASHEET = (
    "version digest source_uri record_count size_bytes origin_jurisdiction "
    "legal_basis motivation composition collection_process preprocessing "
    "intended_uses distribution maintenance"
)


def _datasets(version: ModelVersion, user) -> tuple[DatasetFacts, ...]:
    visible = set(
        DatasetVersion.objects.visible_to(user)
        .filter(model_links__model_version=version)
        .values_list("pk", flat=True)
    )
    links = (
        ModelVersionDataset.objects.filter(model_version=version)
        .select_related("dataset_version__dataset__agency", "dataset_version__licence")
        .order_by("role", "id")
    )
    found = []
    for link in links:
        dv = link.dataset_version
        common = {
            "role": link.role,
            "licence": dv.licence.expression,
            "personal_data": dv.personal_data,
        }
        if dv.pk not in visible:
            found.append(DatasetFacts(disclosed=False, **common))
            continue
        found.append(
            DatasetFacts(
                disclosed=True,
                agency_slug=dv.dataset.agency.slug,
                name=dv.dataset.name,
                slug=dv.dataset.slug,
                languages=tuple(dv.languages or ()),
                **_values(dv, _DATASHEET),
                **common,
            )
        )
    return tuple(found)


def _with_policy_verdict(use_cases: QuerySet[UseCase]) -> QuerySet[UseCase]:
    """Each use case with ``policy_passed``, its latest policy result's verdict."""
    latest = PolicyResult.objects.filter(use_case_id=OuterRef("pk")).order_by(
        "-created_at", "-id"
    )
    return use_cases.annotate(policy_passed=Subquery(latest.values("passed")[:1]))


def _use_case_facts(use_case: UseCase) -> UseCaseFacts:
    return UseCaseFacts(
        id=use_case.pk,
        risk_tier=use_case.risk_tier or "",
        risk_reasons=tuple(str(r) for r in use_case.risk_reasons or ()),
        policy_passed=use_case.policy_passed,
        **_values(
            use_case,
            "title purpose public_service affected_people decision_informed "
            "human_oversight valid_until status risk_score",
        ),
        agency=_agency(use_case.agency),
    )


def _lifecycle(version: ModelVersion, use_case_ids: list[int]):
    decisions = (
        Decision.objects.filter(model_version=version, use_case_id__in=use_case_ids)
        .select_related("use_case")
        .order_by("decided_at", "id")
    )
    return tuple(
        LifecycleEvent(
            use_case_title=d.use_case.title,
            **_values(d, "decided_at kind from_status to_status rationale"),
        )
        for d in decisions
    )


def _base(base: ModelVersion | None) -> BaseVersionFacts | None:
    if base is None:
        return None
    return BaseVersionFacts(
        id=base.pk,
        agency_slug=base.model.agency.slug,
        model_name=base.model.name,
        model_slug=base.model.slug,
        licence=base.licence.expression,
        **_values(base, "version artifact_digest"),
    )


_VERSION_FIELDS = (
    "version status artifact_digest artifact_size artifact_format "
    "parameter_count kind layout quantisation derivation training_run "
    "training_jurisdiction training_hardware training_energy_kwh "
    "hosting_jurisdiction limitations risks ethical_considerations "
    "created_at released_at"
)


def version_record(version: ModelVersion, *, user) -> VersionRecord:
    """The record of ``version`` as ``user`` may read it.

    The caller has already found ``version`` among those ``user`` may read
    (``registry.selectors.model_version_list``); it is read again here with
    every field the exports show.
    """
    mv = (
        model_version_list(user)
        .defer(None)
        .select_related("base_version__licence")
        .get(pk=version.pk)
    )
    use_cases = list(
        _with_policy_verdict(UseCase.objects.visible_to(user).filter(model_version=mv))
        .select_related("agency")
        .order_by("id")
    )
    model = mv.model
    return VersionRecord(
        id=mv.pk,
        agency=_agency(model.agency),
        model_name=model.name,
        model_slug=model.slug,
        **_values(model, "task domain description intended_use out_of_scope_uses"),
        licence=LicenceFacts(
            expression=mv.licence.expression,
            spdx_ids=tuple(mv.licence.spdx_ids or ()),
            name=mv.licence.name,
        ),
        graph_inputs=tuple(mv.graph_inputs or ()),
        graph_outputs=tuple(mv.graph_outputs or ()),
        opsets=dict(mv.opsets or {}),
        base=_base(mv.base_version),
        **_values(mv, _VERSION_FIELDS),
        datasets=_datasets(mv, user),
        evaluations=tuple(latest_evaluations([mv.pk]).get(mv.pk, [])),
        use_cases=tuple(_use_case_facts(u) for u in use_cases),
        lifecycle=_lifecycle(mv, [u.pk for u in use_cases]),
    )


def use_case_record(use_case: UseCase, *, user) -> UseCaseRecord:
    """The record of ``use_case`` and its version, as ``user`` may read them.

    The caller has found ``use_case`` among those ``user`` may read (or, for
    the public register, among the register's entries, whose models are public).
    """
    return UseCaseRecord(
        use_case=_use_case_facts(
            _with_policy_verdict(UseCase.objects.filter(pk=use_case.pk))
            .select_related("agency")
            .get()
        ),
        version=version_record(use_case.model_version, user=user),
    )
