"""The ML bill of materials: CycloneDX 1.6 JSON.

cyclonedx-python-lib builds the BOM: the model component (licence as an SPDX
expression, the artifact's SHA-256, the base model as a pedigree ancestor),
one ``data`` component per dataset version and the dependency graph. The
library has no model for ``modelCard`` nor for a component's ``data``
(cyclonedx-python-lib issues #911-#913), so those two objects are written as
JSON into the library's output; the tests validate the whole against the
CycloneDX 1.6 schema.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from cyclonedx.model import HashAlgorithm, HashType
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType, Pedigree
from cyclonedx.model.contact import OrganizationalEntity
from cyclonedx.model.license import LicenseExpression
from cyclonedx.output.json import JsonV1Dot6

from governance.exports.record import DatasetFacts, VersionRecord

_URL = re.compile(r"^https?://\S+$")
# CycloneDX's learning approaches have no field in the catalogue yet.
_ARCHITECTURE_FAMILY = {
    "causal_lm_kv": "transformer decoder",
    "causal_lm": "transformer decoder",
    "seq_classifier": "transformer encoder",
}


def _hashes(digest: str) -> list[HashType]:
    return [HashType(alg=HashAlgorithm.SHA_256, content=digest)] if digest else []


def model_ref(record: VersionRecord) -> str:
    return f"model:{record.full_name}@{record.version}"


def _dataset_ref(dataset: DatasetFacts, index: int) -> str:
    return f"data:{dataset.ref}" if dataset.disclosed else f"data:{index}-{dataset.ref}"


def _model_component(record: VersionRecord) -> Component:
    base = record.base
    pedigree = None
    if base is not None:
        ancestor = Component(
            type=ComponentType.MACHINE_LEARNING_MODEL,
            name=base.model_name,
            group=base.agency_slug,
            version=base.version,
            bom_ref=f"model:{base.agency_slug}/{base.model_slug}@{base.version}",
            hashes=_hashes(base.artifact_digest),
            licenses=[LicenseExpression(base.licence)],
        )
        pedigree = Pedigree(
            ancestors=[ancestor], notes=record.derivation or "derivation not stated"
        )
    return Component(
        type=ComponentType.MACHINE_LEARNING_MODEL,
        name=record.model_name,
        group=record.agency.slug,
        version=record.version,
        description=record.description or None,
        bom_ref=model_ref(record),
        supplier=OrganizationalEntity(name=record.agency.name),
        hashes=_hashes(record.artifact_digest),
        licenses=[LicenseExpression(record.licence.expression)],
        pedigree=pedigree,
    )


def _data_component(dataset: DatasetFacts, index: int) -> Component:
    return Component(
        type=ComponentType.DATA,
        name=dataset.name if dataset.disclosed else f"undisclosed {dataset.role} data",
        group=dataset.agency_slug or None,
        version=dataset.version or None,
        description=dataset.composition or None,
        bom_ref=_dataset_ref(dataset, index),
        hashes=_hashes(dataset.digest),
        licenses=[LicenseExpression(dataset.licence)],
    )


def _component_data(dataset: DatasetFacts, agency: str) -> list[dict[str, Any]]:
    data: dict[str, Any] = {
        "type": "dataset",
        "name": dataset.name or f"undisclosed {dataset.role} data",
        "classification": f"personal-data:{dataset.personal_data}",
    }
    if dataset.disclosed:
        data["description"] = dataset.composition
        if _URL.match(dataset.source_uri):
            data["contents"] = {"url": dataset.source_uri}
        data["governance"] = {"owners": [{"organization": {"name": agency}}]}
    return [data]


def _model_card(record: VersionRecord, refs: list[str]) -> dict[str, Any]:
    parameters: dict[str, Any] = {"task": record.task}
    if family := _ARCHITECTURE_FAMILY.get(record.kind):
        parameters["architectureFamily"] = family
    if record.layout:
        parameters["modelArchitecture"] = record.layout
    if refs:
        parameters["datasets"] = [{"ref": ref} for ref in refs]
    parameters["inputs"] = [
        {"format": str(i.get("name", i))} for i in record.graph_inputs
    ] or [{"format": "unknown"}]
    parameters["outputs"] = [
        {"format": str(o.get("name", o))} for o in record.graph_outputs
    ] or [{"format": "unknown"}]
    considerations: dict[str, Any] = {
        "useCases": [record.intended_use] if record.intended_use else [],
        "technicalLimitations": [record.limitations] if record.limitations else [],
        "ethicalConsiderations": [
            {"name": text}
            for text in (record.ethical_considerations, record.risks)
            if text
        ],
    }
    if record.training_energy_kwh is not None:
        considerations["environmentalConsiderations"] = {
            "properties": [
                {
                    "name": "training_energy_kwh",
                    "value": str(record.training_energy_kwh),
                }
            ]
        }
    return {
        "bom-ref": f"{model_ref(record)}#model-card",
        "modelParameters": parameters,
        "quantitativeAnalysis": {
            "performanceMetrics": [
                {
                    "type": f"{m.task}.{m.name}",
                    "value": repr(m.value),
                    "slice": f"{run.suite} {run.suite_version}",
                }
                for run in record.evaluations
                for m in run.metrics
            ]
        },
        "considerations": {k: v for k, v in considerations.items() if v},
    }


def ml_bom(record: VersionRecord) -> str:
    """The CycloneDX 1.6 ML-BOM of ``record`` as JSON text."""
    serial = uuid.uuid5(
        uuid.NAMESPACE_URL, f"civitas:{model_ref(record)}:{record.artifact_digest}"
    )
    bom = Bom(serial_number=serial)
    model = _model_component(record)
    bom.components.add(model)
    data = [_data_component(d, i) for i, d in enumerate(record.datasets)]
    for component in data:
        bom.components.add(component)
    bom.register_dependency(model, data)
    document = json.loads(JsonV1Dot6(bom).output_as_string())
    refs = [str(c.bom_ref) for c in data]
    for component in document["components"]:
        if component["bom-ref"] == model_ref(record):
            component["modelCard"] = _model_card(record, refs)
        elif component["bom-ref"] in refs:
            index = refs.index(component["bom-ref"])
            component["data"] = _component_data(
                record.datasets[index], record.agency.name
            )
    return json.dumps(document, indent=2, sort_keys=False)
