"""'The right model for the job': versions compared on one suite."""

from __future__ import annotations

import pytest
from django.test import Client

from registry.models import ModelKind, Visibility
from tests.factories import ModelVersionFactory

pytestmark = pytest.mark.django_db


def client_of(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _performance(tokens_per_s: float, joules_per_1k: float, rss_mb: float) -> dict:
    return {
        "tokens": 1000,
        "wall_s": 1000 / tokens_per_s,
        "energy_j": joules_per_1k,
        "energy_method": "estimate_cpu_time",
        "peak_rss_bytes": rss_mb * 2**20,
    }


def _version(agency, name, params, *, quantisation="", visibility="private"):
    return ModelVersionFactory(
        model__agency=agency,
        model__name=name,
        model__visibility=visibility,
        parameter_count=params,
        quantisation=quantisation,
        artifact_digest="e" * 64,
        kind=ModelKind.CAUSAL_LM_KV,
    )


@pytest.fixture
def compared(member_a, member_b, small_suite, make_run):
    """Three versions of A (one quantised), one private and one public of B."""
    agency_a = member_a.membership.agency
    agency_b = member_b.membership.agency
    big = _version(agency_a, "Big", 7_000_000)
    small = _version(agency_a, "Small", 1_000_000)
    quantised = _version(agency_a, "Small", 1_000_000, quantisation="int8")
    hidden = _version(agency_b, "Secret", 3_000_000)
    public = _version(agency_b, "Open", 2_000_000, visibility=Visibility.PUBLIC)
    make_run(big, small_suite, metrics={"multiple_choice.acc": 0.5}, days_ago=5)
    for version, acc, perf in (
        (big, 0.9, _performance(100, 40, 800)),
        (small, 0.85, _performance(400, 9, 200)),
        (quantised, 0.84, _performance(900, 4, 90)),
        (hidden, 0.99, _performance(10, 100, 900)),
        (public, 0.7, _performance(300, 12, 300)),
    ):
        make_run(
            version,
            small_suite,
            metrics={"multiple_choice.acc": acc, "perplexity.tokens_per_s": 1.0},
            performance=perf,
        )
    return {"big": big, "small": small, "quantised": quantised, "hidden": hidden}


def test_anonymous_is_sent_to_sign_in(client):
    response = client.get("/portal/compare/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_picking_a_suite_compares_the_latest_run_of_each_visible_version(
    member_a, small_suite, compared
):
    page = client_of(member_a).get(f"/portal/compare/?suite={small_suite.pk}")
    assert page.status_code == 200
    rows = page.context["rows"]
    # Smallest first; agency B's private version is not there, its public one is.
    assert [r["label"] for r in rows] == [
        "Small " + compared["small"].version,
        "Small " + compared["quantised"].version,
        rows[2]["label"],
        "Big " + compared["big"].version,
    ]
    assert rows[2]["label"].startswith("Open ")
    assert page.context["metric"] == "multiple_choice.acc"  # speed is not quality
    big = rows[3]
    assert big["quality"] == 0.9  # the latest run, not the older 0.5
    quantised = rows[1]
    assert quantised["quantised"] is True
    assert quantised["tokens_per_s"] == pytest.approx(900)
    assert quantised["energy_j_per_1k_tokens"] == pytest.approx(4)
    assert quantised["peak_rss_mb"] == pytest.approx(90)
    html = page.content.decode()
    assert "Secret" not in html
    assert html.count('<svg role="img"') == 3
    assert "<caption>" in html and "int8" in html


def test_a_threshold_on_the_metric_says_which_versions_are_good_enough(
    member_a, small_suite, compared
):
    small_suite.thresholds = {"multiple_choice.acc": {"min": 0.8}}
    small_suite.save()
    page = client_of(member_a).get(
        f"/portal/compare/?suite={small_suite.pk}&metric=multiple_choice.acc"
    )
    meets = {
        r["label"].split()[0] + str(r["quantised"]): r["meets"]
        for r in page.context["rows"]
    }
    assert meets == {
        "SmallFalse": True,
        "SmallTrue": True,
        "OpenFalse": False,
        "BigFalse": True,
    }


def test_c1_another_agencys_private_suite_cannot_be_chosen(
    member_a, member_b, small_suite
):
    from governance.models import EvaluationSuite

    private = EvaluationSuite.objects.create(
        name="private-a",
        version="1.0.0",
        licence=small_suite.licence,
        tasks=small_suite.tasks,
        agency=member_a.membership.agency,
    )
    page = client_of(member_b).get(f"/portal/compare/?suite={private.pk}")
    assert page.status_code == 200
    assert page.context["form"].errors["suite"]
    assert "rows" not in page.context
    own = client_of(member_a).get(f"/portal/compare/?suite={private.pk}")
    assert own.context["rows"] == []


@pytest.mark.parametrize("size", [2, 20])
def test_compare_issues_a_constant_number_of_queries(
    member_a, small_suite, make_run, django_assert_max_num_queries, size
):
    for n in range(size):
        version = _version(member_a.membership.agency, f"M{n}", 1000 * (n + 1))
        make_run(
            version,
            small_suite,
            metrics={"multiple_choice.acc": 0.5 + n / 100},
            performance=_performance(100 + n, 5, 100),
        )
    client = client_of(member_a)
    client.get("/portal/compare/")
    # The session, its user, the session generation (sign out everywhere),
    # then the page's own reads: the same whatever the number of versions.
    with django_assert_max_num_queries(9):
        response = client.get(f"/portal/compare/?suite={small_suite.pk}")
    assert len(response.context["rows"]) == size
