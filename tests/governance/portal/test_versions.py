"""The version page: card, graph, datasets, lineage, evaluations, policy, decisions."""

from __future__ import annotations

import pytest
from django.test import Client

from registry.models import AIModel, ModelVersionDataset, Visibility
from tests.factories import DatasetVersionFactory, ModelVersionFactory
from tests.registry.portal.conftest import queries, signed_in

pytestmark = pytest.mark.django_db


def page_of(client, version) -> str:
    response = client.get(f"/portal/versions/{version.pk}/")
    assert response.status_code == 200
    return response.content.decode()


def test_anonymous_readers_are_sent_to_sign_in(governed_version):
    response = Client().get(f"/portal/versions/{governed_version.pk}/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_c1_another_agencys_private_version_is_not_found(member_b, governed_version):
    client = signed_in(member_b)
    assert client.get(f"/portal/versions/{governed_version.pk}/").status_code == 404
    AIModel.objects.filter(pk=governed_version.model_id).update(
        visibility=Visibility.PUBLIC
    )
    assert client.get(f"/portal/versions/{governed_version.pk}/").status_code == 200


def test_the_page_shows_card_graph_facts_and_datasets(member_a, governed_version):
    governed_version.graph_inputs = [
        {"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]}
    ]
    governed_version.graph_outputs = [
        {"name": "logits", "dtype": "float32", "shape": ["batch", "sequence", 320]}
    ]
    governed_version.opsets = {"ai.onnx": 18}
    governed_version.save()
    dv = DatasetVersionFactory(
        dataset__agency=governed_version.model.agency,
        dataset__name="Service questions",
        personal_data="pseudonymised",
        legal_basis="Public task.",
        licence__expression="CC-BY-4.0",
    )
    ModelVersionDataset.objects.create(
        model_version=governed_version, dataset_version=dv, role="training"
    )
    text = page_of(signed_in(member_a), governed_version)
    assert "Short answers only." in text and "May state wrong opening hours." in text
    assert "input_ids" in text and "logits" in text and "ai.onnx 18" in text
    assert "1,000,000" in text or "1000000" in text or "1 000 000" in text
    assert "Service questions 1.0.0" in text and "Pseudonymised" in text
    assert "CC-BY-4.0" in text
    assert f'href="/portal/dataset-versions/{dv.pk}/"' in text


def test_the_lineage_is_a_graph_of_links_with_a_list_of_edges(
    member_a, governed_version
):
    derived = ModelVersionFactory(
        model=governed_version.model,
        version="2.0.0",
        base_version=governed_version,
        derivation="fine-tuned",
    )
    text = page_of(signed_in(member_a), derived)
    svg = text.split('<svg class="lineage"', 1)[1].split("</svg>", 1)[0]
    assert f'<a href="/portal/versions/{governed_version.pk}/"' in svg
    assert "this version" in svg
    assert "is the base of" in text  # the text alternative
    assert text.count(f'href="/portal/versions/{governed_version.pk}/"') >= 2


def test_evaluations_policy_results_and_decisions(kit, member_a):
    use_case = kit.approved()
    version = use_case.model_version
    text = page_of(signed_in(member_a), version)
    evaluations = text.split('id="evaluations"', 1)[1]
    assert "<svg" in evaluations.split('id="policy"')[0]  # the chart
    assert "multiple_choice" in evaluations and "0.9" in evaluations
    policy = text.split('id="policy"', 1)[1].split('id="decisions"')[0]
    assert "baseline" in policy and "mc-acc" in policy and "Passed" in policy
    decisions = text.split('id="decisions"', 1)[1]
    assert "Approved" in decisions and "rita" in decisions
    assert f"/portal/versions/{version.pk}/evaluate/" in text


def test_c1_another_agency_reading_a_public_version_sees_no_private_evidence(
    kit, member_b
):
    use_case = kit.approved()
    version = use_case.model_version
    AIModel.objects.filter(pk=version.model_id).update(visibility=Visibility.PUBLIC)
    text = page_of(signed_in(member_b), version)
    # Policy results and decisions follow the use case, private to agency A.
    assert 'id="policy-result-' not in text and 'id="decision-' not in text
    assert "decision:" not in text and "rita" not in text
    assert "Upload the bundle" not in text and "Attach a dataset" not in text


def test_the_version_page_queries_do_not_grow(
    member_a, governed_version, make_run, small_suite
):
    suite = small_suite
    client = signed_in(member_a)
    url = f"/portal/versions/{governed_version.pk}/"

    def grow(n):
        for i in range(n):
            make_run(governed_version, suite, metrics={"t.acc": 0.5 + i / 100})
            dv = DatasetVersionFactory(dataset__agency=governed_version.model.agency)
            ModelVersionDataset.objects.create(
                model_version=governed_version, dataset_version=dv, role="evaluation"
            )
            ModelVersionFactory(
                model=governed_version.model,
                base_version=governed_version,
                derivation="quantised",
            )

    grow(2)
    small = queries(client, url)
    grow(8)
    assert queries(client, url) == small <= 30


def test_reviewers_read_every_agencys_evidence_but_get_no_write_links(kit, reviewer):
    use_case = kit.approved()
    text = page_of(signed_in(reviewer), use_case.model_version)
    assert 'id="policy-result-' in text and 'id="decision-' in text
    assert "Attach a dataset" not in text and "Request an evaluation" not in text
