"""The algorithmic transparency record, after the UK ATRS (v4.0 structure).

Tier 1 is the summary for the public; tier 2 the detail: owner and
responsibility, description and rationale, decision-making process (ATRS
v4 "deployment context"), tool specification with the models, data, and
risks and mitigations. Fields are filled from the use case, its agency, the
model version and its datasets; a field no record holds yet is written as
the missing-evidence marker and its path listed in ``missing_evidence``.
The JSON Schema is ``governance/schemas/atrs.schema.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.template.loader import render_to_string

from governance.exports.record import DatasetFacts, UseCaseRecord, VersionRecord
from governance.exports.text import MISSING, or_missing

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "atrs.schema.json"
ATRS_VERSION = "4.0"
# ATRS phases by use-case status.
PHASES = {
    "approved": "production",
    "suspended": "production",
    "retired": "retired",
    "expired": "retired",
}


def _performance(version: VersionRecord) -> str:
    return "; ".join(
        f"{run.suite} {run.suite_version}: {m.task}.{m.name} = {m.value:.6g}"
        for run in version.evaluations
        for m in run.metrics
    )


def _model(version: VersionRecord) -> dict[str, str]:
    return {
        "model_name": f"{version.model_name} (self-hosted, {version.agency.name})",
        "model_version": version.version,
        "model_task": version.task,
        "model_input": ", ".join(str(i.get("name", i)) for i in version.graph_inputs),
        "model_output": ", ".join(str(o.get("name", o)) for o in version.graph_outputs),
        "model_architecture": ", ".join(
            str(v) for v in (version.kind, version.layout, version.quantisation) if v
        )
        + (
            f"; {version.parameter_count} parameters" if version.parameter_count else ""
        ),
        "model_performance": _performance(version),
        "datasets_and_purposes": "; ".join(
            f"{d.ref if d.disclosed else 'undisclosed dataset'} ({d.role})"
            for d in version.datasets
        ),
        "artifact_sha256": version.artifact_digest,
        "licence": version.licence.expression,
    }


def _data(d: DatasetFacts) -> dict[str, str]:
    if not d.disclosed:
        return {
            "source_data_name": f"undisclosed {d.role} dataset",
            "data_description": "",
            "data_quantities": "",
            "sensitive_attributes": f"personal data: {d.personal_data}",
            "source_data_url": "",
            "data_collection": "",
            "data_cleaning": "",
            "data_access_and_storage": "",
            "licence": d.licence,
        }
    return {
        "source_data_name": f"{d.name} {d.version}",
        "data_description": d.composition,
        "data_quantities": f"{d.record_count} records"
        + (f", {d.size_bytes} bytes" if d.size_bytes else ""),
        "sensitive_attributes": f"personal data: {d.personal_data}"
        + (f"; legal basis: {d.legal_basis}" if d.legal_basis else ""),
        "source_data_url": d.source_uri,
        "data_collection": d.collection_process,
        "data_cleaning": d.preprocessing,
        "data_access_and_storage": "; ".join(
            t for t in (d.distribution, d.maintenance) if t
        ),
        "licence": d.licence,
    }


def _risks(record: UseCaseRecord) -> dict[str, str]:
    uc, version = record.use_case, record.version
    assessment = (
        f"Civitas impact questionnaire: {uc.risk_tier} risk "
        f"(score {uc.risk_score}); {'; '.join(uc.risk_reasons)}"
        if uc.risk_tier
        else ""
    )
    return {
        "impact_assessment": assessment,
        "risks_and_mitigations": "; ".join(
            t
            for t in (
                version.risks,
                version.ethical_considerations,
                version.limitations,
            )
            if t
        ),
    }


def _filled(value: Any, path: str, missing: list[str]) -> Any:
    """``value`` with every blank string replaced by the marker, paths noted."""
    if isinstance(value, dict):
        return {k: _filled(v, f"{path}/{k}", missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_filled(v, f"{path}/{i}", missing) for i, v in enumerate(value)]
    text = or_missing(value)
    if text == MISSING:
        missing.append(path)
    return text


def atrs_record(record: UseCaseRecord) -> dict[str, Any]:
    """The transparency record as a JSON-ready dict (valid against the schema)."""
    uc, version = record.use_case, record.version
    agency = uc.agency
    fields = {
        "tier_1": {
            "title": uc.title,
            "organisation_name": agency.name,
            "phase": PHASES.get(uc.status, "pre-deployment"),
            "region": agency.jurisdiction,
            "one_sentence_description": uc.purpose.split("\n")[0],
            "name": version.model_name,
            "description": f"{uc.purpose} {version.description}".strip(),
            "website_url": "",
            "contact_email": agency.contact_email,
        },
        "tier_2": {
            "owner_and_responsibility": {
                "organisation_or_department": agency.name,
                "team": "",
                "senior_responsible_owner": "",
                "third_party_involvement": "no (model developed and hosted by "
                f"{version.agency.name})",
            },
            "description_and_rationale": {
                "detailed_description": " ".join(
                    t
                    for t in (
                        version.description,
                        f"Intended use: {version.intended_use}",
                        f"Out of scope: {version.out_of_scope_uses}"
                        if version.out_of_scope_uses
                        else "",
                        f"Limitations: {version.limitations}"
                        if version.limitations
                        else "",
                    )
                    if t
                ),
                "public_service": uc.public_service,
                "benefit": "",
                "alternatives_considered": "",
            },
            "decision_making_process": {
                "process_integration": uc.decision_informed,
                "affected_people": uc.affected_people,
                "frequency_and_scale_of_usage": "",
                "human_decisions_and_review": uc.human_oversight,
                "required_training": "",
                "appeals_and_review": "",
            },
            "tool_specification": {
                "system_architecture": f"One self-hosted ONNX model run on CPU "
                f"({version.artifact_format or 'format not stated'})",
                "maintenance": f"Approval valid until {uc.valid_until.isoformat()}",
                "models": [_model(version)],
            },
            "data": [_data(d) for d in version.datasets],
            "risks_and_mitigations": _risks(record),
        },
    }
    missing: list[str] = []
    filled = _filled(fields, "", missing)
    return {
        "atrs_version": ATRS_VERSION,
        "use_case_id": uc.id,
        "status": uc.status,
        **filled,
        "missing_evidence": missing,
    }


def _rows(value: Any, label: str) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [row for k, v in value.items() for row in _rows(v, f"{label}{k} ")]
    if isinstance(value, list):
        return [row for i, v in enumerate(value, 1) for row in _rows(v, f"{label}{i} ")]
    return [(label.strip().replace("_", " "), value)]


def atrs_html(record: UseCaseRecord) -> str:
    """The transparency record as a standalone HTML page."""
    document = atrs_record(record)
    sections = [
        (title, _rows(document["tier_2"][key], ""))
        for key, title in (
            ("owner_and_responsibility", "Owner and responsibility"),
            ("description_and_rationale", "Description and rationale"),
            ("decision_making_process", "Decision-making process"),
            ("tool_specification", "Tool specification"),
            ("data", "Data"),
            ("risks_and_mitigations", "Risks and mitigations"),
        )
    ]
    return render_to_string(
        "exports/atrs.html",
        {
            "document": document,
            "summary": _rows(document["tier_1"], ""),
            "sections": sections,
            "missing": MISSING,
        },
    )
