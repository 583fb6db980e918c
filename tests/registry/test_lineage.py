"""Lineage graphs: shape, depth, visibility, licence warnings, queries and the API."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import include, path
from django.utils import timezone
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema

from registry import lineage, services
from registry.api.urls import lineage_patterns
from registry.models import (
    DatasetRole,
    DatasetVersion,
    Derivation,
    ModelVersion,
    ModelVersionDataset,
    Visibility,
)
from tests.factories import (
    AIModelFactory,
    DatasetFactory,
    DatasetVersionFactory,
    ModelVersionFactory,
)
from tests.registry.api_catalogue import _fast_password_hashing  # noqa: F401

MV = lineage.model_version_node_id
DV = lineage.dataset_version_node_id


@dataclass
class Catalogue:
    """Two agencies' models and datasets with lineage between them.

    City A: a private corpus (CC-BY) and private requests (CC-BY-NC); a tiny
    base trained on the corpus, evaluated on the requests; a fine-tuned
    version of it on the requests (Apache: the licence conflict); a public
    small base trained on the corpus. Region B: a private quantised version
    of A's small base.
    """

    apache: object
    nc: object
    corpus: DatasetVersion
    requests: DatasetVersion
    tiny: ModelVersion
    tuned: ModelVersion
    small: ModelVersion
    quantised: ModelVersion


def _link(version, dataset_version, role):
    ModelVersionDataset.objects.create(
        model_version=version, dataset_version=dataset_version, role=role
    )


def _version(model, licence, **fields):
    return ModelVersionFactory(
        model=model, licence=licence, released_at=timezone.now(), **fields
    )


@pytest.fixture
def licences(platform_admin):
    return {
        expression: services.licence_register(
            actor=platform_admin, expression=expression
        )[0]
        for expression in ("Apache-2.0", "CC-BY-4.0", "CC-BY-NC-4.0")
    }


@pytest.fixture
def catalogue(agency_a, agency_b, licences):
    apache, cc_by, nc = (
        licences["Apache-2.0"],
        licences["CC-BY-4.0"],
        licences["CC-BY-NC-4.0"],
    )
    corpus = DatasetVersionFactory(
        dataset=DatasetFactory(agency=agency_a, slug="corpus"), licence=cc_by
    )
    requests = DatasetVersionFactory(
        dataset=DatasetFactory(agency=agency_a, slug="requests"), licence=nc
    )
    tiny = _version(
        AIModelFactory(agency=agency_a, slug="tiny"),
        apache,
        version="1.0.0",
        training_run="runs:/abc123/model",
    )
    _link(tiny, corpus, DatasetRole.TRAINING)
    # Evaluating on NC data makes no derivative: no warning expected.
    _link(tiny, requests, DatasetRole.EVALUATION)
    tuned = _version(
        AIModelFactory(agency=agency_a, slug="tuned"),
        apache,
        version="1.0.0",
        base_version=tiny,
        derivation=Derivation.FINE_TUNED,
    )
    _link(tuned, requests, DatasetRole.FINE_TUNING)
    small = _version(
        AIModelFactory(agency=agency_a, slug="small", visibility=Visibility.PUBLIC),
        apache,
        version="1.0.0",
    )
    _link(small, corpus, DatasetRole.TRAINING)
    quantised = _version(
        AIModelFactory(agency=agency_b, slug="small-int8"),
        apache,
        version="1.0.0",
        base_version=small,
        derivation=Derivation.QUANTISED,
    )
    return Catalogue(apache, nc, corpus, requests, tiny, tuned, small, quantised)


def _nodes(graph):
    return {node["id"]: node for node in graph["nodes"]}


def _edges(graph):
    return {(e["source"], e["target"], e["relation"]) for e in graph["edges"]}


# --- the graph ---------------------------------------------------------------------


def test_fine_tuned_version_shows_base_datasets_and_training_run(catalogue, member_a):
    c = catalogue

    graph = lineage.model_version_lineage(c.tuned, user=member_a)

    nodes = _nodes(graph)
    run = lineage.training_run_node_id("runs:/abc123/model")
    assert graph["root"] == MV(c.tuned.pk)
    assert set(nodes) == {
        MV(c.tuned.pk),
        MV(c.tiny.pk),
        DV(c.requests.pk),
        DV(c.corpus.pk),
        run,
    }
    assert _edges(graph) == {
        (MV(c.tiny.pk), MV(c.tuned.pk), "base_of"),
        (MV(c.tuned.pk), DV(c.requests.pk), "fine_tuned_on"),
        (MV(c.tiny.pk), DV(c.corpus.pk), "trained_on"),
        (MV(c.tiny.pk), DV(c.requests.pk), "evaluated_on"),
        (MV(c.tiny.pk), run, "produced_by_run"),
    }
    root = nodes[MV(c.tuned.pk)]
    assert (root["direction"], root["distance"]) == ("root", 0)
    assert root["type"] == "model_version"
    assert root["agency"] == "city-a"
    assert root["licence"] == "Apache-2.0"
    assert root["derivation"] == "fine-tuned"
    assert nodes[DV(c.corpus.pk)]["direction"] == "upstream"
    assert nodes[DV(c.corpus.pk)]["distance"] == 2
    assert nodes[DV(c.requests.pk)]["licence"] == "CC-BY-NC-4.0"
    assert nodes[run]["type"] == "training_run"
    assert (nodes[run]["agency"], nodes[run]["licence"]) == (None, None)
    assert graph["truncated"] is False


def test_nc_training_data_under_apache_model_is_a_licence_warning(catalogue, member_a):
    c = catalogue

    graph = lineage.model_version_lineage(c.tuned, user=member_a)

    assert len(graph["warnings"]) == 1
    warning = graph["warnings"][0]
    assert warning["node"] == MV(c.tuned.pk)
    assert warning["related"] == DV(c.requests.pk)
    assert warning["code"] == "licence_incompatible"
    assert "fine-tuning data city-a/requests@1.0.0" in warning["message"]
    assert "CC-BY-NC-4.0 forbids commercial use" in warning["message"]
    assert "licensed Apache-2.0" in warning["message"]


def test_evaluation_data_is_not_checked_against_the_model_licence(catalogue, member_a):
    graph = lineage.model_version_lineage(catalogue.tiny, user=member_a, depth=1)

    assert DV(catalogue.requests.pk) in _nodes(graph)
    assert graph["warnings"] == []


def test_a_base_under_a_stricter_licence_is_a_licence_warning(
    catalogue, member_a, agency_a
):
    nc_base = _version(AIModelFactory(agency=agency_a), catalogue.nc)
    derived = _version(
        AIModelFactory(agency=agency_a),
        catalogue.apache,
        base_version=nc_base,
        derivation=Derivation.DISTILLED,
    )

    graph = lineage.model_version_lineage(derived, user=member_a, depth=1)

    [warning] = graph["warnings"]
    assert (warning["node"], warning["related"]) == (MV(derived.pk), MV(nc_base.pk))
    assert warning["message"].startswith(f"Base version {nc_base} is licensed")


def test_downstream_derived_versions_are_followed(catalogue, member_a):
    c = catalogue

    graph = lineage.model_version_lineage(c.tiny, user=member_a)

    assert _nodes(graph)[MV(c.tuned.pk)]["direction"] == "downstream"
    assert (MV(c.tiny.pk), MV(c.tuned.pk), "base_of") in _edges(graph)
    # A descendant is expanded downstream only: its own fine-tuning data (and
    # so its licence conflict) is its lineage, not the root's.
    assert (MV(c.tuned.pk), DV(c.requests.pk), "fine_tuned_on") not in _edges(graph)
    assert graph["warnings"] == []


def test_siblings_and_cousins_stay_out(catalogue, member_a, agency_a):
    sibling = _version(
        AIModelFactory(agency=agency_a),
        catalogue.apache,
        base_version=catalogue.tiny,
        derivation=Derivation.QUANTISED,
    )

    graph = lineage.model_version_lineage(catalogue.tuned, user=member_a)

    assert MV(sibling.pk) not in _nodes(graph)


def test_depth_bounds_the_walk_and_truncated_says_more_exists(catalogue, member_a):
    c = catalogue

    shallow = lineage.model_version_lineage(c.tuned, user=member_a, depth=1)
    deep = lineage.model_version_lineage(c.tuned, user=member_a, depth=2)

    assert DV(c.corpus.pk) not in _nodes(shallow)
    assert max(n["distance"] for n in shallow["nodes"]) == 1
    assert shallow["truncated"] is True
    assert DV(c.corpus.pk) in _nodes(deep)
    assert deep["truncated"] is False


@pytest.mark.parametrize("depth", [0, 11, -1])
def test_depth_outside_one_to_ten_is_refused(catalogue, member_a, depth):
    with pytest.raises(ValueError, match="between 1 and 10"):
        lineage.model_version_lineage(catalogue.tuned, user=member_a, depth=depth)


def test_invisible_neighbours_leave_no_trace(catalogue, member_b, reviewer):
    c = catalogue

    seen_by_b = lineage.model_version_lineage(c.quantised, user=member_b, depth=1)
    seen_by_reviewer = lineage.model_version_lineage(
        c.quantised, user=reviewer, depth=1
    )

    # B sees A's public base, not the private corpus it was trained on, and
    # nothing (edge, warning or truncation) hints that the corpus exists.
    assert set(_nodes(seen_by_b)) == {MV(c.quantised.pk), MV(c.small.pk)}
    assert seen_by_b["truncated"] is False
    full = lineage.model_version_lineage(c.quantised, user=member_b, depth=10)
    assert set(_nodes(full)) == {MV(c.quantised.pk), MV(c.small.pk)}
    assert all(DV(c.corpus.pk) not in (e["source"], e["target"]) for e in full["edges"])
    # Oversight sees the corpus one level further down.
    assert seen_by_reviewer["truncated"] is True


def test_a_private_root_of_another_agency_does_not_exist(catalogue, member_b):
    with pytest.raises(ModelVersion.DoesNotExist):
        lineage.model_version_lineage(catalogue.tuned, user=member_b)
    with pytest.raises(DatasetVersion.DoesNotExist):
        lineage.dataset_version_lineage(catalogue.corpus, user=member_b)


def test_dataset_lineage_lists_the_models_that_used_it_and_their_descendants(
    catalogue, member_a
):
    c = catalogue

    graph = lineage.dataset_version_lineage(c.requests, user=member_a)

    assert graph["root"] == DV(c.requests.pk)
    assert _edges(graph) == {
        (MV(c.tiny.pk), DV(c.requests.pk), "evaluated_on"),
        (MV(c.tuned.pk), DV(c.requests.pk), "fine_tuned_on"),
        (MV(c.tiny.pk), MV(c.tuned.pk), "base_of"),
    }
    assert {n["direction"] for n in graph["nodes"]} == {"root", "downstream"}
    [warning] = graph["warnings"]
    assert warning["related"] == DV(c.requests.pk)


def test_dataset_lineage_hides_models_the_user_may_not_see(
    agency_a, agency_b, member_a, licences
):
    public_data = DatasetVersionFactory(
        dataset=DatasetFactory(agency=agency_a, visibility=Visibility.PUBLIC),
        licence=licences["CC-BY-4.0"],
    )
    own = _version(AIModelFactory(agency=agency_a), licences["Apache-2.0"])
    other = _version(AIModelFactory(agency=agency_b), licences["Apache-2.0"])
    _link(own, public_data, DatasetRole.TRAINING)
    _link(other, public_data, DatasetRole.TRAINING)

    graph = lineage.dataset_version_lineage(public_data, user=member_a)

    assert set(_nodes(graph)) == {DV(public_data.pk), MV(own.pk)}
    assert graph["truncated"] is False


def test_queries_per_level_do_not_grow_with_the_graph_width(
    agency_a, member_a, licences
):
    def build(width: int) -> ModelVersion:
        root = _version(AIModelFactory(agency=agency_a), licences["Apache-2.0"])
        for _ in range(width):
            _version(
                AIModelFactory(agency=agency_a),
                licences["Apache-2.0"],
                base_version=root,
                derivation=Derivation.FINE_TUNED,
            )
            _link(
                root,
                DatasetVersionFactory(
                    dataset=DatasetFactory(agency=agency_a),
                    licence=licences["CC-BY-4.0"],
                ),
                DatasetRole.TRAINING,
            )
        return root

    narrow, wide = build(2), build(8)
    # The first call also caches the user's membership; measure after it.
    lineage.model_version_lineage(narrow, user=member_a)
    counts = []
    for root in (narrow, wide):
        with CaptureQueriesContext(connection) as queries:
            graph = lineage.model_version_lineage(root, user=member_a, depth=3)
        counts.append(len(queries))
    assert len(graph["nodes"]) == 1 + 8 + 8
    assert counts[0] == counts[1]
    assert counts[1] <= 12


@pytest.fixture
def provider():
    """A downstream provider standing in for governance's evaluations."""
    calls = []

    def evaluations(*, model_version_ids, user):
        calls.append(set(model_version_ids))
        return lineage.Contribution(
            nodes=[
                {
                    "id": f"evaluation:{pk}",
                    "type": "evaluation",
                    "label": f"suite on {pk}",
                    "agency": None,
                    "licence": None,
                }
                for pk in sorted(model_version_ids)
            ],
            edges=[
                {
                    "source": MV(pk),
                    "target": f"evaluation:{pk}",
                    "relation": "evaluated_on",
                }
                for pk in sorted(model_version_ids)
            ],
        )

    lineage.register_downstream_provider(evaluations)
    lineage.register_downstream_provider(evaluations)
    yield calls
    lineage.DOWNSTREAM_PROVIDERS.remove(evaluations)


def test_downstream_providers_add_nodes_once_per_level(catalogue, member_a, provider):
    c = catalogue

    graph = lineage.model_version_lineage(c.tiny, user=member_a, depth=2)

    assert provider == [{c.tiny.pk}, {c.tuned.pk}]
    nodes = _nodes(graph)
    assert nodes[f"evaluation:{c.tiny.pk}"]["direction"] == "downstream"
    assert nodes[f"evaluation:{c.tuned.pk}"]["distance"] == 2
    assert (MV(c.tuned.pk), f"evaluation:{c.tuned.pk}", "evaluated_on") in _edges(graph)


# --- licence_warnings ----------------------------------------------------------------


def test_licence_warnings_of_a_version(catalogue, member_a):
    [warning] = lineage.licence_warnings(catalogue.tuned)

    assert warning["code"] == "licence_incompatible"
    assert warning["related"] == DV(catalogue.requests.pk)
    assert lineage.licence_warnings(catalogue.tuned, user=member_a) == [warning]
    assert lineage.licence_warnings(catalogue.tiny) == []


def test_licence_warnings_for_a_user_never_name_what_they_may_not_see(
    catalogue, member_b, agency_b
):
    private_nc = catalogue.requests
    own = _version(AIModelFactory(agency=agency_b), catalogue.apache)
    _link(own, private_nc, DatasetRole.TRAINING)

    assert lineage.licence_warnings(own, user=member_b) == []
    [warning] = lineage.licence_warnings(own)
    assert warning["related"] == DV(private_nc.pk)


# --- API ---------------------------------------------------------------------------


def test_api_returns_the_lineage_of_a_model_version(catalogue, api_a):
    c = catalogue

    response = api_a.get(f"/api/v1/model-versions/{c.tuned.pk}/lineage/?depth=1")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["root"] == MV(c.tuned.pk)
    assert {n["id"] for n in body["nodes"]} == {
        MV(c.tuned.pk),
        MV(c.tiny.pk),
        DV(c.requests.pk),
    }
    assert body["truncated"] is True
    assert body["warnings"][0]["code"] == "licence_incompatible"
    tiny = next(n for n in body["nodes"] if n["id"] == MV(c.tiny.pk))
    assert tiny["released_at"] is not None
    assert "personal_data" not in tiny


def test_api_returns_the_lineage_of_a_dataset_version(catalogue, api_a):
    c = catalogue

    response = api_a.get(f"/api/v1/dataset-versions/{c.requests.pk}/lineage/")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["root"] == DV(c.requests.pk)
    assert MV(c.tuned.pk) in {n["id"] for n in body["nodes"]}


def test_api_lineage_needs_credentials(catalogue, anon):
    response = anon.get(f"/api/v1/model-versions/{catalogue.tuned.pk}/lineage/")

    assert response.status_code == 401


def test_api_lineage_of_an_invisible_version_is_not_found(catalogue, api_b):
    c = catalogue

    for url in (
        f"/api/v1/model-versions/{c.tuned.pk}/lineage/",
        f"/api/v1/dataset-versions/{c.corpus.pk}/lineage/",
        "/api/v1/model-versions/999999/lineage/",
    ):
        response = api_b.get(url)
        assert response.status_code == 404, url
        assert response.json()["code"] == "not_found"


@pytest.mark.parametrize("depth", ["0", "11", "deep"])
def test_api_refuses_a_depth_outside_one_to_ten(catalogue, api_a, depth):
    response = api_a.get(
        f"/api/v1/model-versions/{catalogue.tuned.pk}/lineage/?depth={depth}"
    )

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "validation_error"
    assert list(body["fields"]) == ["depth"]


def test_openapi_schema_of_the_lineage_endpoints_validates_without_warnings():
    generator = SchemaGenerator(
        patterns=[path("api/v1/", include(lineage_patterns))]
    )
    GENERATOR_STATS.reset()

    schema = generator.get_schema(request=None, public=True)

    assert not GENERATOR_STATS, "drf-spectacular warned about the lineage views"
    validate_schema(schema)
    for url in (
        "/api/v1/model-versions/{id}/lineage/",
        "/api/v1/dataset-versions/{id}/lineage/",
    ):
        operation = schema["paths"][url]["get"]
        assert {"200", "400", "401", "404"} <= set(operation["responses"])
        assert [p["name"] for p in operation["parameters"] if p["in"] == "query"] == [
            "depth"
        ]
        assert operation["responses"]["200"]["content"]["application/json"]["examples"]
