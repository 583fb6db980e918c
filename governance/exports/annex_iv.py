"""Technical documentation after the headings of the EU AI Act's Annex IV.

The document is a list of sections, each a list of labelled fields read from
the version's record; a blank field is written as the missing-evidence
marker, never left out, so a reader sees what the provider has not given.
It renders as HTML (``exports/annex_iv.html``) and, through WeasyPrint, as PDF.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.template.loader import render_to_string
from django.utils import timezone

from governance.exports.record import DatasetFacts, VersionRecord
from governance.exports.text import MISSING, is_blank

HEADINGS = (
    "1. General description of the AI system",
    "2. Development process and data",
    "3. Monitoring, functioning and control",
    "4. Risk management system",
    "5. Changes over the lifecycle",
    "6. Standards applied",
    "7. Evaluation results",
)


@dataclass(frozen=True)
class Field:
    label: str
    value: str

    @property
    def is_missing(self) -> bool:
        return self.value == MISSING


@dataclass(frozen=True)
class Section:
    heading: str
    fields: tuple[Field, ...]

    @property
    def missing_count(self) -> int:
        return sum(f.is_missing for f in self.fields)


def _fields(*pairs: tuple[str, object]) -> tuple[Field, ...]:
    return tuple(
        Field(label, MISSING if is_blank(value) else str(value))
        for label, value in pairs
    )


def _join(values) -> str:
    return "; ".join(str(v) for v in values if not is_blank(v))


def _general(r: VersionRecord) -> tuple[Field, ...]:
    return _fields(
        ("Provider", f"{r.agency.name} ({r.agency.jurisdiction})"),
        ("Provider contact", r.agency.contact_email),
        ("System name and version", f"{r.model_name} {r.version}"),
        ("Intended purpose", r.intended_use),
        ("Description", r.description),
        ("Task", r.task),
        ("Domain", r.domain),
        ("Form of release", _join([r.artifact_format, r.artifact_digest])),
        ("Hosting jurisdiction", r.hosting_jurisdiction),
        (
            "Software versions (ONNX opsets)",
            _join(f"{k}: {v}" for k, v in sorted(r.opsets.items())),
        ),
        ("Licence", r.licence.expression),
    )


def _dataset_fields(d: DatasetFacts) -> tuple[tuple[str, object], ...]:
    if not d.disclosed:
        return (
            (
                f"Undisclosed {d.role} dataset",
                f"licence {d.licence}; personal data: {d.personal_data}",
            ),
        )
    name = f"{d.role} dataset {d.ref}"
    return (
        (f"{name}: composition", d.composition),
        (f"{name}: collection process", d.collection_process),
        (f"{name}: preprocessing", d.preprocessing),
        (f"{name}: licence and personal data", f"{d.licence}; {d.personal_data}"),
        (
            f"{name}: legal basis",
            d.legal_basis
            if d.personal_data != "none"
            else "not needed (no personal data)",
        ),
        (f"{name}: digest", d.digest),
    )


def _development(r: VersionRecord) -> tuple[Field, ...]:
    base = r.base
    datasets = [pair for d in r.datasets for pair in _dataset_fields(d)]
    return _fields(
        (
            "Base model",
            f"{base.agency_slug}/{base.model_slug} {base.version}"
            if base
            else "none (not derived)",
        ),
        ("Derivation", r.derivation if base else "not derived"),
        ("Architecture", _join([r.kind, r.layout, r.quantisation])),
        ("Parameter count", r.parameter_count),
        ("Training run", r.training_run),
        ("Training hardware", r.training_hardware),
        ("Training jurisdiction", r.training_jurisdiction),
        ("Training energy (kWh)", r.training_energy_kwh),
        ("Datasets", "" if not r.datasets else f"{len(r.datasets)} dataset versions"),
        *datasets,
    )


def _monitoring(r: VersionRecord) -> tuple[Field, ...]:
    return _fields(
        ("Limitations", r.limitations),
        ("Out-of-scope uses", r.out_of_scope_uses),
        (
            "Human oversight measures",
            _join(
                f"{u.title}: {u.human_oversight}"
                for u in r.use_cases
                if u.human_oversight
            ),
        ),
        ("Input specification", _join(i.get("name", i) for i in r.graph_inputs)),
        ("Output specification", _join(o.get("name", o) for o in r.graph_outputs)),
    )


def _risk(r: VersionRecord) -> tuple[Field, ...]:
    assessed = [
        f"{u.title}: {u.risk_tier} ({', '.join(u.risk_reasons) or 'no reasons given'})"
        for u in r.use_cases
        if u.risk_tier
    ]
    policies = [
        f"{u.title}: {'passed' if u.policy_passed else 'failed'}"
        for u in r.use_cases
        if u.policy_passed is not None
    ]
    return _fields(
        ("Known risks", r.risks),
        ("Ethical considerations", r.ethical_considerations),
        ("Risk assessments of the use cases", _join(assessed)),
        ("Policy checks", _join(policies)),
    )


def _lifecycle(r: VersionRecord) -> tuple[Field, ...]:
    events = [
        f"{e.decided_at:%Y-%m-%d} {e.use_case_title}: {e.kind} "
        f"({e.from_status} to {e.to_status})"
        for e in r.lifecycle
    ]
    return _fields(
        ("Registered", f"{r.created_at:%Y-%m-%d}"),
        (
            "Released (content frozen)",
            f"{r.released_at:%Y-%m-%d}" if r.released_at else "",
        ),
        ("Current status", r.status),
        ("Decisions", _join(events)),
    )


def _evaluations(r: VersionRecord) -> tuple[Field, ...]:
    if not r.evaluations:
        return _fields(("Succeeded evaluation runs", ""))
    return tuple(
        Field(
            f"{run.suite} {run.suite_version} (run {run.run_id}): {m.task}.{m.name}",
            f"{m.value:.6g}",
        )
        for run in r.evaluations
        for m in run.metrics
    ) or _fields(("Metrics", ""))


def annex_iv_sections(record: VersionRecord) -> tuple[Section, ...]:
    """The seven sections of the technical documentation, in Annex IV order."""
    builders = (
        _general,
        _development,
        _monitoring,
        _risk,
        _lifecycle,
        # No catalogue field holds the harmonised standards applied yet.
        lambda r: _fields(("Harmonised standards or other solutions applied", "")),
        _evaluations,
    )
    return tuple(
        Section(heading, build(record))
        for heading, build in zip(HEADINGS, builders, strict=True)
    )


def annex_iv_html(record: VersionRecord) -> str:
    """The technical documentation as a standalone HTML page."""
    sections = annex_iv_sections(record)
    return render_to_string(
        "exports/annex_iv.html",
        {
            "record": record,
            "sections": sections,
            "missing_count": sum(s.missing_count for s in sections),
            "missing": MISSING,
            "generated_at": timezone.now(),
        },
    )


def annex_iv_pdf(record: VersionRecord) -> bytes:
    """The technical documentation as PDF (WeasyPrint renders the HTML)."""
    from weasyprint import HTML

    return HTML(string=annex_iv_html(record)).write_pdf()
