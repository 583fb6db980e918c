"""The standard exports: each format checked by its own standard's tools.

The model card is parsed by ``huggingface_hub``; the ML-BOM validated against
the CycloneDX 1.6 schema by cyclonedx-python-lib; the Annex IV PDF read back
with pypdf; the transparency record validated against its JSON Schema. One
record feeds them all: a changed field shows in every export.
"""

from __future__ import annotations

import hashlib
import io
import json

import jsonschema
import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from huggingface_hub import ModelCard, ModelCardData
from pypdf import PdfReader

from audit.models import AuditEvent
from governance.exports.annex_iv import HEADINGS
from governance.exports.atrs import SCHEMA_PATH
from governance.exports.record import version_record
from governance.exports.services import FORMATS, export_create
from governance.exports.text import MISSING
from registry.models import (
    DatasetRole,
    Licence,
    ModelVersion,
    ModelVersionDataset,
    Visibility,
)
from tests.factories import DatasetVersionFactory, ModelVersionFactory

SCHEMA = json.loads(SCHEMA_PATH.read_text())


@pytest.fixture
def exported(governed_version, member_a, small_suite, make_run):
    """``governed_version`` fine-tuned from a base, on a public and a private
    dataset, with one succeeded run of ``small``."""
    agency = member_a.membership.agency
    base = ModelVersionFactory(
        model__agency=agency,
        model__name="City base",
        model__slug="city-base",
        version="1.0.0",
        artifact_digest="b" * 64,
    )
    ModelVersion.objects.filter(pk=governed_version.pk).update(
        base_version=base, derivation="fine-tuned", training_run=""
    )
    public = DatasetVersionFactory(
        dataset__agency=agency,
        dataset__slug="service-faq",
        dataset__name="Service FAQ",
        dataset__visibility=Visibility.PUBLIC,
        languages=["fr-FR", "en"],
        digest="c" * 64,
        source_uri="https://data.example.gov/faq.jsonl",
    )
    private = DatasetVersionFactory(
        dataset__agency=agency,
        dataset__slug="letters",
        dataset__name="Citizens letters",
        personal_data="pseudonymised",
    )
    ModelVersionDataset.objects.create(
        model_version=governed_version, dataset_version=public, role="training"
    )
    ModelVersionDataset.objects.create(
        model_version=governed_version,
        dataset_version=private,
        role=DatasetRole.FINE_TUNING,
    )
    make_run(
        governed_version,
        small_suite,
        metrics={"multiple_choice.acc": 0.875, "perplexity.ppl": 12.5},
    )
    governed_version.refresh_from_db()
    return governed_version


def _export(actor, kind, version=None, use_case=None) -> bytes:
    return export_create(
        actor=actor, format=kind, version=version, use_case=use_case
    ).content


def _of_type(bom: dict, kind: str) -> list[dict]:
    return [c for c in bom["components"] if c["type"] == kind]


def _pdf_text(content: bytes) -> str:
    reader = PdfReader(io.BytesIO(content))
    return "\n".join(page.extract_text() for page in reader.pages)


def test_model_card_loads_with_huggingface_hub_and_its_metadata_validates(
    exported, member_a
):
    held_out = DatasetVersionFactory(
        dataset__agency=member_a.membership.agency, dataset__slug="held-out"
    )
    ModelVersionDataset.objects.create(
        model_version=exported, dataset_version=held_out, role="evaluation"
    )
    text = _export(member_a, "model-card", exported).decode()

    card = ModelCard(text)
    data = card.data
    assert data.license == "apache-2.0"
    assert data.base_model == "city-a/city-base"
    assert data.base_model_relation == "finetune"
    # Agency A's own member sees its private dataset too (fine-tuning first);
    # the Hub's datasets are training data, the evaluation set is in the body.
    assert data.datasets == ["city-a/letters@1.0.0", "city-a/service-faq@1.0.0"]
    assert "city-a/held-out@1.0.0` (evaluation" in card.text
    assert sorted(data.language) == ["en", "fr"]
    assert data.pipeline_tag == "text-generation"
    # The metadata round-trips through the Hub's own parser, strictly: a
    # malformed model-index raises instead of being dropped.
    strict = ModelCardData(ignore_metadata_errors=False, **data.to_dict())
    values = {r.metric_type: r.metric_value for r in strict.eval_results}
    assert values == {"multiple_choice.acc": 0.875, "perplexity.ppl": 12.5}
    assert {r.dataset_type for r in strict.eval_results} == {"small"}
    assert "Short answers only." in card.text


def test_model_card_of_an_other_licence_names_it(exported, member_a):
    licence, _ = Licence.objects.get_or_create(
        expression="Apache-2.0 AND LicenseRef-city",
        defaults={"spdx_ids": ["Apache-2.0", "LicenseRef-city"]},
    )
    ModelVersion.objects.filter(pk=exported.pk).update(licence=licence)

    data = ModelCard(_export(member_a, "model-card", exported).decode()).data

    assert data.license == "other"
    assert data.license_name == "Apache-2.0 AND LicenseRef-city"


def test_ml_bom_is_valid_cyclonedx_1_6_with_model_card_data_and_pedigree(
    exported, member_a
):
    text = _export(member_a, "ml-bom", exported).decode()

    validator = JsonStrictValidator(SchemaVersion.V1_6)
    assert validator.validate_str(text) is None
    bom = json.loads(text)
    assert bom["specVersion"] == "1.6"
    (model,) = _of_type(bom, "machine-learning-model")
    data = _of_type(bom, "data")
    assert model["type"] == "machine-learning-model"
    assert model["hashes"] == [{"alg": "SHA-256", "content": "a" * 64}]
    assert model["licenses"] == [{"expression": "Apache-2.0"}]
    (ancestor,) = model["pedigree"]["ancestors"]
    assert ancestor["hashes"][0]["content"] == "b" * 64
    assert model["pedigree"]["notes"] == "fine-tuned"
    card = model["modelCard"]
    metrics = card["quantitativeAnalysis"]["performanceMetrics"]
    assert {m["type"]: m["value"] for m in metrics} == {
        "multiple_choice.acc": "0.875",
        "perplexity.ppl": "12.5",
    }
    assert card["considerations"]["technicalLimitations"] == ["Short answers only."]
    assert [d["type"] for d in data] == ["data", "data"]
    assert {d["data"][0]["type"] for d in data} == {"dataset"}
    refs = {r["ref"] for r in card["modelParameters"]["datasets"]}
    assert refs == {d["bom-ref"] for d in data}
    depends = {d["ref"]: set(d.get("dependsOn", [])) for d in bom["dependencies"]}
    assert depends[model["bom-ref"]] == refs
    # The validator does refuse a broken BOM (the check above means something).
    del model["name"]
    assert validator.validate_str(json.dumps(bom)) is not None


def test_annex_iv_pdf_has_every_heading_and_calls_out_missing_evidence(
    exported, member_a
):
    content = _export(member_a, "annex-iv-pdf", exported)

    assert content.startswith(b"%PDF-")
    text = " ".join(_pdf_text(content).split())
    for heading in HEADINGS:
        assert heading in text, heading
    # Blank fields: the training hardware and the standards applied.
    assert f"Training hardware {MISSING}" in text
    assert f"Harmonised standards or other solutions applied {MISSING}" in text
    # Filled fields carry their values, not the marker.
    assert "Limitations Short answers only." in text
    assert "Base model city-a/city-base 1.0.0" in text


def test_annex_iv_html_marks_each_blank_field(exported, member_a):
    html = _export(member_a, "annex-iv", exported).decode()

    assert html.count(f'<td class="missing">{MISSING}</td>') >= 2
    assert 'Training hardware</th><td class="missing">' in html
    assert "0.875" in html


def test_transparency_record_validates_against_its_json_schema(
    exported, draft_use_case, member_a
):
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    document = json.loads(
        _export(member_a, "transparency-record", use_case=draft_use_case)
    )

    jsonschema.validate(document, SCHEMA)
    tier_1, tier_2 = document["tier_1"], document["tier_2"]
    assert tier_1["organisation_name"] == "City A"
    assert tier_1["phase"] == "pre-deployment"
    assert tier_1["website_url"] == MISSING
    assert "/tier_1/website_url" in document["missing_evidence"]
    assert "/tier_2/owner_and_responsibility/team" in document["missing_evidence"]
    assert tier_2["decision_making_process"]["human_decisions_and_review"] == (
        "A clerk reads and edits every draft."
    )
    (model,) = tier_2["tool_specification"]["models"]
    assert "multiple_choice.acc = 0.875" in model["model_performance"]
    names = [d["source_data_name"] for d in tier_2["data"]]
    assert names == ["Citizens letters 1.0.0", "Service FAQ 1.0.0"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**document, "tier_1": {}}, SCHEMA)


def test_write_once_one_changed_field_shows_in_every_export(
    exported, draft_use_case, member_a
):
    marker = "Unreliable for questions about parking permits."
    mit, _ = Licence.objects.get_or_create(
        expression="MIT", defaults={"spdx_ids": ["MIT"], "name": "MIT License"}
    )
    ModelVersion.objects.filter(pk=exported.pk).update(limitations=marker, licence=mit)
    exported.refresh_from_db()

    texts = {}
    for kind, fmt in FORMATS.items():
        target = {"version": exported} if fmt.scope == "version" else {}
        content = _export(member_a, kind, use_case=draft_use_case, **target)
        texts[kind] = (
            " ".join(_pdf_text(content).split())
            if kind == "annex-iv-pdf"
            else content.decode()
        )

    assert set(texts) == {
        "model-card",
        "ml-bom",
        "annex-iv",
        "annex-iv-pdf",
        "transparency-record",
        "transparency-record-html",
    }
    for kind, text in texts.items():
        assert marker in text, kind
        assert "MIT" in text or "mit" in text, kind
    assert ModelCard(texts["model-card"]).data.license == "mit"
    bom = json.loads(texts["ml-bom"])
    assert _of_type(bom, "machine-learning-model")[0]["licenses"] == [
        {"expression": "MIT"}
    ]
    atrs = json.loads(texts["transparency-record"])
    assert atrs["tier_2"]["tool_specification"]["models"][0]["licence"] == "MIT"


def _export_events():
    return AuditEvent.objects.filter(action="export.created").order_by("seq")


VERSION_KINDS = ["model-card", "ml-bom", "annex-iv", "annex-iv-pdf"]


@pytest.mark.parametrize("kind", VERSION_KINDS)
def test_each_api_export_of_a_version_is_recorded_with_its_digest(
    exported, api_a, kind
):
    before = _export_events().count()

    response = api_a.get(f"/api/v1/model-versions/{exported.pk}/exports/{kind}/")

    assert response.status_code == 200, response.content
    digest = hashlib.sha256(response.content).hexdigest()
    assert response["X-Content-SHA256"] == digest
    assert response["Content-Type"] == FORMATS[kind].media_type
    assert "attachment;" in response["Content-Disposition"]
    events = list(_export_events())
    assert len(events) == before + 1
    payload = json.loads(events[-1].payload)
    assert payload == {"format": kind, "sha256": digest, "bytes": len(response.content)}
    assert events[-1].object_id == str(exported.pk)
    assert events[-1].agency_id == exported.model.agency_id


def test_the_use_case_exports_answer_json_and_html_and_are_recorded(
    exported, draft_use_case, api_a
):
    base = f"/api/v1/use-cases/{draft_use_case.pk}/exports"

    as_json = api_a.get(f"{base}/transparency-record/")
    as_html = api_a.get(f"{base}/transparency-record-html/")

    assert as_json.status_code == as_html.status_code == 200
    jsonschema.validate(json.loads(as_json.content), SCHEMA)
    assert b"Tier 1: summary information" in as_html.content
    assert "script-src" not in as_html["Content-Security-Policy"]
    assert "default-src 'none'" in as_html["Content-Security-Policy"]
    assert [
        e.payload and json.loads(e.payload)["format"] for e in _export_events()
    ] == [
        "transparency-record",
        "transparency-record-html",
    ]


def test_c1_another_agency_gets_404_on_the_exports_of_private_objects(
    exported, draft_use_case, api_a, api_b, api_reviewer, anon
):
    version_path = f"/api/v1/model-versions/{exported.pk}/exports/model-card/"
    use_case_path = (
        f"/api/v1/use-cases/{draft_use_case.pk}/exports/transparency-record/"
    )

    for path in (version_path, use_case_path):
        response = api_b.get(path)
        assert response.status_code == 404, path
        assert response.json()["code"] == "not_found"
        assert anon.get(path).status_code == 401
        assert api_reviewer.get(path).status_code == 200
    # Unknown formats, and formats of the other scope, are not routes.
    assert api_a.get(version_path.replace("model-card", "pdf")).status_code == 404
    assert (
        api_a.get(version_path.replace("model-card", "transparency-record")).status_code
        == 404
    )
    assert (
        api_a.get(use_case_path.replace("transparency-record", "ml-bom")).status_code
        == 404
    )
    # Refusals leave no export event; the reviewer's two reads left one each.
    assert _export_events().count() == 2


def test_a_public_version_is_exported_for_another_agency_without_private_datasets(
    exported, api_b
):
    type(exported.model).objects.filter(pk=exported.model_id).update(
        visibility=Visibility.PUBLIC
    )

    response = api_b.get(f"/api/v1/model-versions/{exported.pk}/exports/ml-bom/")

    assert response.status_code == 200
    names = [c["name"] for c in json.loads(response.content)["components"]]
    assert "Service FAQ" in names and "Citizens letters" not in names
    assert "undisclosed fine-tuning data" in names


def test_export_version_command_writes_stdout_or_a_file(
    exported, draft_use_case, platform_admin, tmp_path
):
    out = io.StringIO()
    call_command(
        "export_version", str(exported.pk), "--format", "model-card", stdout=out
    )
    assert ModelCard(out.getvalue()).data.license == "apache-2.0"

    target = tmp_path / "annex.pdf"
    reference = f"city-a/{exported.model.slug}@{exported.version}"
    call_command(
        "export_version",
        reference,
        "--format",
        "annex-iv-pdf",
        "--output",
        str(target),
        stderr=io.StringIO(),
    )
    assert target.read_bytes().startswith(b"%PDF-")

    with pytest.raises(CommandError, match="needs --use-case"):
        call_command(
            "export_version", str(exported.pk), "--format", "transparency-record"
        )
    atrs = tmp_path / "atrs.json"
    call_command(
        "export_version",
        str(exported.pk),
        "--format",
        "transparency-record",
        "--use-case",
        str(draft_use_case.pk),
        "--output",
        str(atrs),
        stderr=io.StringIO(),
    )
    jsonschema.validate(json.loads(atrs.read_text()), SCHEMA)
    assert [json.loads(e.payload)["format"] for e in _export_events()] == [
        "model-card",
        "annex-iv-pdf",
        "transparency-record",
    ]
    assert all(e.actor_id == platform_admin.pk for e in _export_events())


# --- The public register's transparency records -----------------------------


def test_the_register_links_and_serves_the_atrs_publicly_and_unaudited(
    kit, exported, client
):
    use_case = kit.approved()
    entry = client.get(f"/register/{use_case.pk}/")
    json_path = f"/register/{use_case.pk}/transparency-record.json"
    html_path = f"/register/{use_case.pk}/transparency-record.html"
    assert json_path in entry.content.decode()
    assert html_path in entry.content.decode()
    events = AuditEvent.objects.count()

    as_json = client.get(json_path)
    as_html = client.get(html_path)

    assert as_json.status_code == as_html.status_code == 200
    document = json.loads(as_json.content)
    jsonschema.validate(document, SCHEMA)
    assert document["tier_1"]["phase"] == "production"
    assert document["status"] == "approved"
    # The public sees the private dataset only by its role, as on the page.
    names = [d["source_data_name"] for d in document["tier_2"]["data"]]
    assert names == ["undisclosed fine-tuning dataset", "Service FAQ 1.0.0"]
    assert b"Citizens letters" not in as_json.content + as_html.content
    assert b"Tier 2: Risks and mitigations" in as_html.content
    # Anonymous downloads do not grow the audit chain.
    assert AuditEvent.objects.count() == events


def test_the_register_serves_no_atrs_for_a_use_case_it_does_not_list(
    draft_use_case, exported, client
):
    type(exported.model).objects.filter(pk=exported.model_id).update(
        visibility=Visibility.PUBLIC
    )
    for suffix in ("json", "html", "xml"):
        path = f"/register/{draft_use_case.pk}/transparency-record.{suffix}"
        assert client.get(path).status_code == 404, suffix


def _record_queries(version, user) -> int:
    with CaptureQueriesContext(connection) as queries:
        version_record(version, user=user)
    return len(queries)


def test_the_record_takes_a_fixed_number_of_queries(
    exported, draft_use_case, member_a, small_suite, make_run
):
    before = _record_queries(exported, member_a)
    for n in range(3):
        link = DatasetVersionFactory(dataset__agency=member_a.membership.agency)
        ModelVersionDataset.objects.create(
            model_version=exported, dataset_version=link, role="evaluation"
        )
        draft_use_case.pk = None
        draft_use_case.title = f"Another use {n}"
        draft_use_case.save()
    make_run(exported, small_suite, metrics={"multiple_choice.acc": 0.5})

    assert _record_queries(exported, member_a) == before
    assert len(version_record(exported, user=member_a).use_cases) == 4
