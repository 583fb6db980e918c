"""Evaluations and decisions in a model version's lineage, as each user may see them."""

from __future__ import annotations

import pytest

from governance.lineage import decision_node_id, evaluation_node_id
from governance.models import Decision, DecisionKind
from registry.lineage import model_version_node_id
from registry.models import AIModel, Visibility

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


def _lineage(client, version):
    response = client.get(f"/api/v1/model-versions/{version.pk}/lineage/?depth=1")
    assert response.status_code == 200, response.content
    body = response.json()
    return (
        {node["id"]: node for node in body["nodes"]},
        {(e["source"], e["target"], e["relation"]) for e in body["edges"]},
    )


@pytest.fixture
def approved(kit):
    """Agency A's version with a succeeded run and Rita's approval on its use case."""
    kit.approved()
    run = kit.use_case.model_version.evaluations.get()
    decision = Decision.objects.get(use_case=kit.use_case, kind=DecisionKind.APPROVE)
    return kit.use_case.model_version, run, decision


def test_lineage_shows_the_versions_evaluations_and_decisions(approved, api_a):
    version, run, decision = approved

    nodes, edges = _lineage(api_a, version)

    root = model_version_node_id(version.pk)
    evaluation = nodes[evaluation_node_id(run.pk)]
    assert evaluation["type"] == "evaluation"
    assert evaluation["label"] == "small@1.0.0 succeeded multiple_choice.acc=0.9"
    assert evaluation["status"] == "succeeded"
    assert evaluation["direction"] == "downstream"
    assert evaluation["distance"] == 1
    assert (root, evaluation_node_id(run.pk), "evaluated_by") in edges
    approval = nodes[decision_node_id(decision.pk)]
    assert approval["type"] == "decision"
    day = decision.decided_at.date().isoformat()
    assert approval["label"] == f"approve by oversight on {day}"
    assert approval["reviewer_agency"] == "oversight"
    assert (root, decision_node_id(decision.pk), "decided_by") in edges


def test_another_agency_sees_neither_a_private_version_nor_its_evidence(
    approved, api_b
):
    version, _, _ = approved
    AIModel.objects.filter(pk=version.model_id).update(  # set-up
        visibility=Visibility.PRIVATE
    )

    response = api_b.get(f"/api/v1/model-versions/{version.pk}/lineage/")

    assert response.status_code == 404


def test_another_agency_never_sees_decisions_on_a_public_version(approved, api_b):
    version, run, decision = approved
    AIModel.objects.filter(pk=version.model_id).update(  # set-up
        visibility=Visibility.PUBLIC
    )

    nodes, edges = _lineage(api_b, version)

    # Runs follow their version's visibility; decisions their use case's.
    assert evaluation_node_id(run.pk) in nodes
    assert decision_node_id(decision.pk) not in nodes
    assert not [edge for edge in edges if edge[2] == "decided_by"]
