"""The public transparency register: which use cases it lists, and their records.

One selector builds the records the portal's list and entry pages, the JSON
API (``/api/v1/register/``) and the CSV download (``/register.csv``) all
render, so the three never disagree.

The register lists every use case that is or was in service: ``approved``,
``suspended`` and ``retired``, never a draft, a submission, a rejection or an
expired approval, and only when its model is public (an approval publishes the
model, ``governance.services.decisions._publish``). An entry says what the
approval made public: the use case as submitted, its agency, the model version
with its digest and licence, the latest results of each suite the version was
measured on, the decision that set the current status and the signed audit
checkpoint covering it. Of the datasets the version names, a public dataset is
named; a private one is shown by its role, licence and personal-data status
only, so an approval never publishes a private dataset's name.

Every function issues a fixed number of queries for a page of entries,
whatever the size of the catalogue.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from django import forms
from django.db.models import (
    Exists,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Window,
)
from django.db.models.functions import RowNumber
from django.utils.translation import gettext_lazy as _

from audit.models import AuditCheckpoint, AuditEvent
from governance.models import (
    Decision,
    DecisionKind,
    EvaluationRun,
    RiskTier,
    RunMetric,
    RunStatus,
    UseCase,
    UseCaseStatus,
)
from governance.services.lifecycle import DECISION_EVENTS
from registry.models import (
    Agency,
    DatasetRole,
    ModelVersionDataset,
    PersonalData,
    Visibility,
)

S = UseCaseStatus
REGISTER_STATUSES = (S.APPROVED, S.SUSPENDED, S.RETIRED)
# The audit actions of the decisions that lead into a register status.
_DECISION_ACTIONS = sorted(set(DECISION_EVENTS.values()))
_USE_CASE_TYPE = UseCase._meta.label_lower
# Personal-data statuses counted as "uses personal data" by the filter.
_PERSONAL = (PersonalData.PERSONAL, PersonalData.PSEUDONYMISED)
CSV_BATCH = 500

# Labels the pages show, translated (the models' choice labels are English only).
STATUS_LABELS = {
    S.APPROVED: _("Approved"),
    S.SUSPENDED: _("Suspended"),
    S.RETIRED: _("Retired"),
}
RISK_TIER_LABELS = {
    RiskTier.MINIMAL: _("Minimal risk"),
    RiskTier.LIMITED: _("Limited risk (transparency duties)"),
    RiskTier.HIGH: _("High risk"),
    RiskTier.PROHIBITED: _("Prohibited practice"),
}
DATASET_ROLE_LABELS = {
    DatasetRole.TRAINING: _("Training"),
    DatasetRole.FINE_TUNING: _("Fine-tuning"),
    DatasetRole.EVALUATION: _("Evaluation"),
}
PERSONAL_DATA_LABELS = {
    PersonalData.NONE: _("No personal data"),
    PersonalData.PSEUDONYMISED: _("Pseudonymised personal data"),
    PersonalData.PERSONAL: _("Personal data"),
}
DECISION_LABELS = {
    DecisionKind.APPROVE: _("Approval"),
    DecisionKind.REINSTATE: _("Reinstatement"),
    DecisionKind.SUSPEND: _("Suspension"),
    DecisionKind.RETIRE: _("Retirement"),
    DecisionKind.REJECT: _("Rejection"),
    DecisionKind.REQUEST_CHANGES: _("Changes requested"),
}


# --- which use cases ---------------------------------------------------------------


class RegisterQueryForm(forms.Form):
    """The register's search and filters, as the page, the API and the CSV read them.

    Every field is optional; an unknown value is a validation error (the API
    answers 400, the page shows the message), never silently ignored.
    """

    q = forms.CharField(
        label=_("Search"),
        required=False,
        max_length=200,
        help_text=_("Words from the title, purpose, service, agency or model."),
    )
    agency = forms.SlugField(label=_("Agency"), required=False, max_length=80)
    risk_tier = forms.ChoiceField(
        label=_("Risk tier"),
        required=False,
        choices=[("", _("Any tier")), *RISK_TIER_LABELS.items()],
    )
    status = forms.ChoiceField(
        label=_("Status"),
        required=False,
        choices=[
            ("", _("Any status")),
            *STATUS_LABELS.items(),
        ],
    )
    personal_data = forms.ChoiceField(
        label=_("Personal data"),
        required=False,
        choices=[("", _("Either")), ("yes", _("Yes")), ("no", _("No"))],
        help_text=_("Whether a dataset of the model holds personal data."),
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["agency"].widget = forms.Select(
            choices=[("", _("Any agency")), *register_agency_choices()]
        )


# The columns a record reads: wide rows (JSON fields) are never loaded whole.
_ENTRY_FIELDS = (
    "title",
    "purpose",
    "public_service",
    "affected_people",
    "decision_informed",
    "human_oversight",
    "valid_until",
    "status",
    "risk_tier",
    "agency_id",
    "model_version_id",
    "agency__slug",
    "agency__name",
    "model_version__version",
    "model_version__artifact_digest",
    "model_version__model__name",
    "model_version__model__slug",
    "model_version__licence__expression",
)


def register_agency_choices() -> list[tuple[str, str]]:
    """(slug, name) of each agency with an entry in the register."""
    return list(
        Agency.objects.filter(
            Exists(register_use_cases().filter(agency_id=OuterRef("pk")))
        )
        .order_by("name")
        .values_list("slug", "name")
    )


def _personal_data_exists() -> Exists:
    return Exists(
        ModelVersionDataset.objects.filter(
            model_version_id=OuterRef("model_version_id"),
            dataset_version__personal_data__in=_PERSONAL,
        )
    )


def register_use_cases(filters: dict[str, Any] | None = None) -> QuerySet[UseCase]:
    """The use cases the register lists, narrowed by a valid RegisterQueryForm's data.

    Newest first (``-id``), the order of every rendering.
    """
    use_cases = UseCase.objects.filter(
        status__in=REGISTER_STATUSES,
        model_version__model__visibility=Visibility.PUBLIC,
    )
    filters = filters or {}
    if text := (filters.get("q") or "").strip():
        for word in text.split()[:8]:
            use_cases = use_cases.filter(
                Q(title__icontains=word)
                | Q(purpose__icontains=word)
                | Q(public_service__icontains=word)
                | Q(agency__name__icontains=word)
                | Q(model_version__model__name__icontains=word)
                | Q(model_version__version=word)
            )
    if filters.get("agency"):
        use_cases = use_cases.filter(agency__slug=filters["agency"])
    if filters.get("risk_tier"):
        use_cases = use_cases.filter(risk_tier=filters["risk_tier"])
    if filters.get("status"):
        use_cases = use_cases.filter(status=filters["status"])
    if filters.get("personal_data") == "yes":
        use_cases = use_cases.filter(_personal_data_exists())
    elif filters.get("personal_data") == "no":
        use_cases = use_cases.filter(~_personal_data_exists())
    return (
        use_cases.select_related(
            "agency", "model_version__model", "model_version__licence"
        )
        .only(*_ENTRY_FIELDS)
        .order_by("-id")
    )


def register_use_case(pk: int) -> UseCase | None:
    """The use case of one register entry, or None when the register lists no such."""
    return register_use_cases().filter(pk=pk).first()


# --- the records ---------------------------------------------------------------------


@dataclass(frozen=True)
class RegisterDataset:
    """A dataset version the model version names; ``name`` empty when private."""

    name: str
    version: str
    role: str
    role_label: str
    licence: str
    personal_data: str
    personal_data_label: str
    is_public: bool


@dataclass(frozen=True)
class RegisterMetric:
    task: str
    name: str
    value: float


@dataclass(frozen=True)
class RegisterEvaluation:
    """The latest succeeded run of one suite on the version."""

    run_id: int
    suite: str
    suite_version: str
    finished_at: datetime | None
    artifact_digest: str
    metrics: list[RegisterMetric]


@dataclass(frozen=True)
class RegisterCheckpoint:
    """The first signed checkpoint whose range includes the decision's audit event."""

    seq: int
    head_hash: str
    signed_at: datetime
    key_id: str
    event_seq: int


@dataclass(frozen=True)
class RegisterDecision:
    """The decision that set the entry's current status."""

    id: int
    kind: str
    kind_label: str
    decided_at: datetime
    rationale: str
    approved_at: datetime | None
    expires_at: datetime | None
    audit_event_seq: int | None
    checkpoint: RegisterCheckpoint | None


@dataclass(frozen=True)
class RegisterEntry:
    """One entry of the register, everything the public may read about it."""

    id: int
    title: str
    purpose: str
    public_service: str
    affected_people: str
    decision_informed: str
    human_oversight: str
    valid_until: date
    status: str
    status_label: str
    risk_tier: str
    risk_tier_label: str
    agency_slug: str
    agency_name: str
    model_name: str
    model_slug: str
    model_version_id: int
    model_version: str
    artifact_digest: str
    model_licence: str
    datasets: list[RegisterDataset] = field(default_factory=list)
    evaluations: list[RegisterEvaluation] = field(default_factory=list)
    decision: RegisterDecision | None = None

    @property
    def uses_personal_data(self) -> bool:
        return any(d.personal_data in _PERSONAL for d in self.datasets)

    def as_record(self) -> dict[str, Any]:
        """The entry as plain values (the JSON API's item; the CSV flattens it)."""
        decision = self.decision
        checkpoint = decision.checkpoint if decision else None
        return {
            "id": self.id,
            "title": self.title,
            "purpose": self.purpose,
            "public_service": self.public_service,
            "affected_people": self.affected_people,
            "decision_informed": self.decision_informed,
            "human_oversight": self.human_oversight,
            "valid_until": self.valid_until,
            "status": self.status,
            "risk_tier": self.risk_tier,
            "agency": {"slug": self.agency_slug, "name": self.agency_name},
            "model": {
                "name": self.model_name,
                "slug": self.model_slug,
                "version_id": self.model_version_id,
                "version": self.model_version,
                "artifact_sha256": self.artifact_digest,
                "licence": self.model_licence,
            },
            "uses_personal_data": self.uses_personal_data,
            "datasets": [
                {
                    "name": d.name or None,
                    "version": d.version or None,
                    "role": d.role,
                    "licence": d.licence,
                    "personal_data": d.personal_data,
                    "is_public": d.is_public,
                }
                for d in self.datasets
            ],
            "evaluations": [
                {
                    "run_id": e.run_id,
                    "suite": e.suite,
                    "suite_version": e.suite_version,
                    "finished_at": e.finished_at,
                    "artifact_sha256": e.artifact_digest,
                    "metrics": [
                        {"task": m.task, "name": m.name, "value": m.value}
                        for m in e.metrics
                    ],
                }
                for e in self.evaluations
            ],
            "decision": None
            if decision is None
            else {
                "id": decision.id,
                "kind": decision.kind,
                "decided_at": decision.decided_at,
                "rationale": decision.rationale,
                "approved_at": decision.approved_at,
                "expires_at": decision.expires_at,
                "audit_event_seq": decision.audit_event_seq,
            },
            "checkpoint": None
            if checkpoint is None
            else {
                "seq": checkpoint.seq,
                "head_hash": checkpoint.head_hash,
                "signed_at": checkpoint.signed_at,
                "key_id": checkpoint.key_id,
            },
        }


def _datasets(version_ids: list[int]) -> dict[int, list[RegisterDataset]]:
    rows = (
        ModelVersionDataset.objects.filter(model_version_id__in=version_ids)
        .order_by("role", "id")
        .values_list(
            "model_version_id",
            "role",
            "dataset_version__version",
            "dataset_version__personal_data",
            "dataset_version__licence__expression",
            "dataset_version__dataset__name",
            "dataset_version__dataset__visibility",
        )
    )
    found: dict[int, list[RegisterDataset]] = {}
    for version_id, role, version, personal, licence, name, visibility in rows:
        public = visibility == Visibility.PUBLIC
        found.setdefault(version_id, []).append(
            RegisterDataset(
                name=name if public else "",
                version=version if public else "",
                role=role,
                role_label=str(DATASET_ROLE_LABELS.get(role, role)),
                licence=licence,
                personal_data=personal,
                personal_data_label=str(PERSONAL_DATA_LABELS.get(personal, "")),
                is_public=public,
            )
        )
    return found


def latest_evaluations(version_ids: list[int]) -> dict[int, list[RegisterEvaluation]]:
    """The latest succeeded run of each suite on each version, with its metrics."""
    latest = list(
        EvaluationRun.objects.filter(
            model_version_id__in=version_ids, status=RunStatus.SUCCEEDED
        )
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("model_version_id"), F("suite_id")],
                order_by=[F("finished_at").desc(nulls_last=True), F("id").desc()],
            )
        )
        .filter(rank=1)
        .order_by("suite__name", "id")
        .values_list(
            "id",
            "model_version_id",
            "suite__name",
            "suite__version",
            "finished_at",
            "artifact_digest",
        )
    )
    metrics: dict[int, list[RegisterMetric]] = {}
    for run_id, task, name, value in (
        RunMetric.objects.filter(run_id__in=[row[0] for row in latest])
        .order_by("task", "name")
        .values_list("run_id", "task", "name", "value")
    ):
        metrics.setdefault(run_id, []).append(
            RegisterMetric(task=task, name=name, value=value)
        )
    found: dict[int, list[RegisterEvaluation]] = {}
    for run_id, version_id, suite, suite_version, finished_at, digest in latest:
        found.setdefault(version_id, []).append(
            RegisterEvaluation(
                run_id=run_id,
                suite=suite,
                suite_version=suite_version,
                finished_at=finished_at,
                artifact_digest=digest,
                metrics=metrics.get(run_id, []),
            )
        )
    return found


def _decisions(use_cases: list[UseCase]) -> dict[int, Decision]:
    """The latest decision that moved each use case into its current status."""
    status = {u.pk: u.status for u in use_cases}
    found: dict[int, Decision] = {}
    for decision in (
        Decision.objects.filter(
            use_case_id__in=list(status), to_status__in=REGISTER_STATUSES
        )
        .only(
            "use_case_id",
            "kind",
            "rationale",
            "from_status",
            "to_status",
            "decided_at",
            "approved_at",
            "expires_at",
        )
        .order_by("-decided_at", "-id")
    ):
        if decision.use_case_id in found:
            continue
        if decision.to_status == status[decision.use_case_id] != decision.from_status:
            found[decision.use_case_id] = decision
    return found


def _checkpoints(
    decisions: Iterable[Decision],
) -> dict[int, tuple[int, RegisterCheckpoint | None]]:
    """Each decision's audit event seq and the first checkpoint covering it."""
    decisions = list(decisions)
    if not decisions:
        return {}
    covering = (
        AuditCheckpoint.objects.filter(seq__gte=OuterRef("seq"))
        .order_by("seq")
        .values("seq")[:1]
    )
    events = (
        AuditEvent.objects.filter(
            object_type=_USE_CASE_TYPE,
            object_id__in=sorted({str(d.use_case_id) for d in decisions}),
            action__in=_DECISION_ACTIONS,
        )
        .annotate(checkpoint_seq=Subquery(covering))
        .values_list("seq", "payload", "checkpoint_seq")
    )
    wanted = {d.pk for d in decisions}
    by_decision: dict[int, tuple[int, int | None]] = {}
    for seq, payload, checkpoint_seq in events:
        decision_id = json.loads(payload).get("decision_id")
        if decision_id in wanted:
            by_decision[decision_id] = (seq, checkpoint_seq)
    seqs = {cp for _, cp in by_decision.values() if cp is not None}
    signed = {
        seq: RegisterCheckpoint(
            seq=seq,
            head_hash=head_hash,
            signed_at=created_at,
            key_id=_key_id(envelope),
            event_seq=0,
        )
        for seq, head_hash, created_at, envelope in AuditCheckpoint.objects.filter(
            seq__in=seqs
        ).values_list("seq", "head_hash", "created_at", "envelope")
    }
    found = {}
    for decision_id, (seq, checkpoint_seq) in by_decision.items():
        checkpoint = signed.get(checkpoint_seq) if checkpoint_seq else None
        if checkpoint is not None:
            checkpoint = RegisterCheckpoint(**{**checkpoint.__dict__, "event_seq": seq})
        found[decision_id] = (seq, checkpoint)
    return found


def _key_id(envelope: dict) -> str:
    signatures = envelope.get("signatures") or [{}]
    return str(signatures[0].get("keyid", ""))


def register_entries(use_cases: Iterable[UseCase]) -> list[RegisterEntry]:
    """The register's records of ``use_cases`` (from ``register_use_cases``).

    Six queries whatever their number: datasets, runs, their metrics,
    decisions, audit events, checkpoints.
    """
    use_cases = list(use_cases)
    if not use_cases:
        return []
    version_ids = sorted({u.model_version_id for u in use_cases})
    datasets = _datasets(version_ids)
    evaluations = latest_evaluations(version_ids)
    decisions = _decisions(use_cases)
    events = _checkpoints(decisions.values())
    entries = []
    for use_case in use_cases:
        version = use_case.model_version
        decision = decisions.get(use_case.pk)
        seq, checkpoint = (
            events.get(decision.pk, (None, None))
            if decision
            else (
                None,
                None,
            )
        )
        entries.append(
            RegisterEntry(
                id=use_case.pk,
                title=use_case.title,
                purpose=use_case.purpose,
                public_service=use_case.public_service,
                affected_people=use_case.affected_people,
                decision_informed=use_case.decision_informed,
                human_oversight=use_case.human_oversight,
                valid_until=use_case.valid_until,
                status=use_case.status,
                status_label=str(STATUS_LABELS.get(use_case.status, use_case.status)),
                risk_tier=use_case.risk_tier or "",
                risk_tier_label=str(RISK_TIER_LABELS.get(use_case.risk_tier, "")),
                agency_slug=use_case.agency.slug,
                agency_name=use_case.agency.name,
                model_name=version.model.name,
                model_slug=version.model.slug,
                model_version_id=version.pk,
                model_version=version.version,
                artifact_digest=version.artifact_digest,
                model_licence=version.licence.expression,
                datasets=datasets.get(version.pk, []),
                evaluations=evaluations.get(version.pk, []),
                decision=None
                if decision is None
                else RegisterDecision(
                    id=decision.pk,
                    kind=decision.kind,
                    kind_label=str(DECISION_LABELS.get(decision.kind, decision.kind)),
                    decided_at=decision.decided_at,
                    rationale=decision.rationale,
                    approved_at=decision.approved_at,
                    expires_at=decision.expires_at,
                    audit_event_seq=seq,
                    checkpoint=checkpoint,
                ),
            )
        )
    return entries


def register_entries_batched(
    use_cases: QuerySet[UseCase], *, batch: int = CSV_BATCH
) -> Iterator[RegisterEntry]:
    """Every record of ``use_cases``, built ``batch`` at a time (the CSV download).

    Keyset batches on ``-id``, so memory stays flat and the queries per batch
    are those of ``register_entries``.
    """
    after: int | None = None
    while True:
        page = use_cases if after is None else use_cases.filter(id__lt=after)
        rows = list(page[:batch])
        yield from register_entries(rows)
        if len(rows) < batch:
            return
        after = rows[-1].pk


CSV_COLUMNS = (
    "id",
    "title",
    "agency",
    "agency_name",
    "purpose",
    "public_service",
    "status",
    "risk_tier",
    "model",
    "model_version",
    "artifact_sha256",
    "model_licence",
    "uses_personal_data",
    "datasets",
    "evaluations",
    "decision",
    "decided_at",
    "approved_at",
    "expires_at",
    "audit_event_seq",
    "checkpoint_seq",
    "checkpoint_head_hash",
    "checkpoint_signed_at",
    "valid_until",
)


def _iso(value: date | datetime | None) -> str:
    return value.isoformat() if value is not None else ""


def csv_row(record: dict[str, Any]) -> list[str]:
    """One CSV row of a record (``RegisterEntry.as_record``), in CSV_COLUMNS order.

    Lists are joined with `` | ``: a dataset as ``name version (role, licence,
    personal data)`` (``unpublished dataset`` for a private one), an
    evaluation as ``suite@version: task.metric=value; ...``.
    """
    datasets = " | ".join(
        f"{d['name'] or 'unpublished dataset'}"
        f"{' ' + d['version'] if d['version'] else ''} "
        f"({d['role']}, {d['licence']}, {d['personal_data']})"
        for d in record["datasets"]
    )
    evaluations = " | ".join(
        f"{e['suite']}@{e['suite_version']}: "
        + "; ".join(f"{m['task']}.{m['name']}={m['value']:g}" for m in e["metrics"])
        for e in record["evaluations"]
    )
    decision = record["decision"] or {}
    checkpoint = record["checkpoint"] or {}
    values = {
        **record,
        "agency": record["agency"]["slug"],
        "agency_name": record["agency"]["name"],
        "model": record["model"]["name"],
        "model_version": record["model"]["version"],
        "artifact_sha256": record["model"]["artifact_sha256"],
        "model_licence": record["model"]["licence"],
        "uses_personal_data": "yes" if record["uses_personal_data"] else "no",
        "datasets": datasets,
        "evaluations": evaluations,
        "decision": decision.get("kind", ""),
        "decided_at": _iso(decision.get("decided_at")),
        "approved_at": _iso(decision.get("approved_at")),
        "expires_at": _iso(decision.get("expires_at")),
        "audit_event_seq": decision.get("audit_event_seq") or "",
        "checkpoint_seq": checkpoint.get("seq", ""),
        "checkpoint_head_hash": checkpoint.get("head_hash", ""),
        "checkpoint_signed_at": _iso(checkpoint.get("signed_at")),
        "valid_until": _iso(record["valid_until"]),
    }
    return [_csv_safe(str(values[column])) for column in CSV_COLUMNS]


def _csv_safe(value: str) -> str:
    """Defuse spreadsheet formulas: a cell never starts with = + - @ or a tab."""
    if value and value[0] in "=+-@\t\r":
        return "'" + value
    return value
