"""The model card: Markdown with YAML front matter in the Hugging Face format.

The metadata is built with ``huggingface_hub.ModelCardData`` and
``EvalResult``, so the front matter is what the Hub writes and reads:
``license`` (a Hub licence id, or ``other`` with ``license_name`` and
``license_link``), ``datasets``, ``language``, ``base_model`` with
``base_model_relation``, ``pipeline_tag``, ``library_name`` and a
``model-index`` carrying the latest succeeded run of each suite.
"""

from __future__ import annotations

from huggingface_hub import EvalResult, ModelCardData

from governance.exports.record import VersionRecord
from governance.exports.text import MISSING, or_missing

# Licence ids the Hub knows, by the SPDX identifier they stand for.
HUB_LICENCES = {
    spdx.lower(): spdx.lower()
    for spdx in (
        "Apache-2.0",
        "MIT",
        "BSD-2-Clause",
        "BSD-3-Clause",
        "BSL-1.0",
        "CC0-1.0",
        "CC-BY-4.0",
        "CC-BY-SA-4.0",
        "CC-BY-NC-4.0",
        "CC-BY-NC-SA-4.0",
        "GPL-2.0",
        "GPL-3.0",
        "LGPL-2.1",
        "LGPL-3.0",
        "AGPL-3.0",
        "MPL-2.0",
        "EUPL-1.1",
        "EUPL-1.2",
        "Etalab-2.0",
        "ODbL-1.0",
        "Unlicense",
    )
}
HUB_LICENCES["odbl-1.0"] = "odbl"
HUB_PIPELINE_TAGS = {
    "text-generation": "text-generation",
    "text-classification": "text-classification",
    "token-classification": "token-classification",
    "embedding": "feature-extraction",
}
BASE_MODEL_RELATIONS = {"fine-tuned": "finetune", "quantised": "quantized"}


def hub_licence(record: VersionRecord) -> dict[str, str]:
    """``license`` (and ``license_name``/``license_link`` for ``other``)."""
    ids = record.licence.spdx_ids
    if len(ids) == 1 and ids[0].lower() in HUB_LICENCES:
        return {"license": HUB_LICENCES[ids[0].lower()]}
    return {
        "license": "other",
        "license_name": record.licence.expression,
        "license_link": "https://spdx.org/licenses/",
    }


def _eval_results(record: VersionRecord) -> list[EvalResult]:
    task_type = HUB_PIPELINE_TAGS.get(record.task, record.task)
    return [
        EvalResult(
            task_type=task_type,
            dataset_type=run.suite,
            dataset_name=f"{run.suite} {run.suite_version}",
            dataset_revision=run.artifact_digest or None,
            metric_type=f"{metric.task}.{metric.name}",
            metric_name=f"{metric.task} {metric.name}",
            metric_value=metric.value,
            source_name=f"Civitas evaluation run {run.run_id}",
            # Relative to the registry's address: the record knows no host name.
            source_url=f"/api/v1/evaluations/{run.run_id}/",
        )
        for run in record.evaluations
        for metric in run.metrics
    ]


def card_data(record: VersionRecord) -> ModelCardData:
    """The card's metadata (its YAML front matter)."""
    base = record.base
    extra = {}
    if base is not None:
        extra["base_model"] = f"{base.agency_slug}/{base.model_slug}"
        if relation := BASE_MODEL_RELATIONS.get(record.derivation):
            extra["base_model_relation"] = relation
    # The Hub's ``datasets`` are those the model was trained on.
    datasets = [
        d.ref for d in record.datasets if d.disclosed and d.role != "evaluation"
    ]
    return ModelCardData(
        model_name=record.model_name,
        language=[tag.split("-")[0].lower() for tag in record.languages] or None,
        datasets=datasets or None,
        pipeline_tag=HUB_PIPELINE_TAGS.get(record.task),
        library_name="onnx",
        tags=[tag for tag in ("civitas", record.domain) if tag],
        eval_results=_eval_results(record) or None,
        metrics=sorted(
            {f"{m.task}.{m.name}" for run in record.evaluations for m in run.metrics}
        )
        or None,
        **hub_licence(record),
        **extra,
    )


def _section(title: str, text: str) -> str:
    return f"## {title}\n\n{or_missing(text)}\n"


def _datasets_body(record: VersionRecord) -> str:
    if not record.datasets:
        return MISSING
    lines = []
    for d in record.datasets:
        if d.disclosed:
            lines.append(
                f"- `{d.ref}` ({d.role}; licence {d.licence}; personal data: "
                f"{d.personal_data}; sha256 {d.digest or MISSING})"
            )
        else:
            lines.append(
                f"- an undisclosed {d.role} dataset (licence {d.licence}; "
                f"personal data: {d.personal_data})"
            )
    return "\n".join(lines)


def _evaluations_body(record: VersionRecord) -> str:
    if not record.evaluations:
        return MISSING
    lines = ["| suite | metric | value | run |", "| --- | --- | --- | --- |"]
    for run in record.evaluations:
        for m in run.metrics:
            lines.append(
                f"| {run.suite} {run.suite_version} | {m.task}.{m.name} | "
                f"{m.value:.6g} | {run.run_id} |"
            )
    return "\n".join(lines)


def model_card(record: VersionRecord) -> str:
    """The model card of ``record``: YAML front matter and a Markdown body."""
    base = record.base
    lineage = (
        f"Derived ({record.derivation or 'derivation not stated'}) from "
        f"`{base.agency_slug}/{base.model_slug}` {base.version} "
        f"(sha256 {base.artifact_digest or MISSING})."
        if base
        else "No base model: trained from scratch or base not registered."
    )
    body = "\n".join(
        [
            f"# {record.model_name} {record.version}",
            "",
            f"Published by {record.agency.name} ({record.agency.slug}). "
            f"Artifact sha256: `{record.artifact_digest or MISSING}`. "
            f"Licence: {record.licence.expression}. Status: {record.status}.",
            "",
            _section("Description", record.description),
            _section("Intended use", record.intended_use),
            _section("Out-of-scope uses", record.out_of_scope_uses),
            _section("Limitations", record.limitations),
            _section("Risks", record.risks),
            _section("Ethical considerations", record.ethical_considerations),
            f"## Lineage\n\n{lineage}\n",
            f"## Data\n\n{_datasets_body(record)}\n",
            f"## Evaluation results\n\n{_evaluations_body(record)}\n",
        ]
    )
    return f"---\n{card_data(record).to_yaml()}\n---\n\n{body}"
