"""In a browser: an optimised version's trade, and a derivation that failed.

The version page of an optimised version shows its comparison with its base
(fused operators, the verification's largest change, the task table); the
page of a version whose optimisation found nothing to fuse says so in plain
words and offers neither an upload nor exports. Both pass axe-core in
English and French, and the table stays usable at phone width.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from engine import optimise
from governance.models import EvaluationRun, RunMetric, RunStatus
from registry.models import ArtifactState, Derivation, Role
from tests.e2e.conftest import (
    PASSWORD,
    accessible_in_both_languages,
    assert_accessible,
    new_page,
    sign_in,
)
from tests.factories import (
    AgencyFactory,
    MembershipFactory,
    ModelVersionFactory,
    UserFactory,
)
from tests.governance.conftest import small_suite  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _run(version, suite, user, metrics: dict[str, float]) -> None:
    finished = timezone.now() - timedelta(hours=1)
    run = EvaluationRun.objects.create(
        model_version=version,
        suite=suite,
        status=RunStatus.SUCCEEDED,
        requested_by=user,
        artifact_digest=version.artifact_digest,
        started_at=finished - timedelta(minutes=5),
        finished_at=finished,
    )
    for key, value in metrics.items():
        task, _, name = key.partition(".")
        RunMetric.objects.create(run=run, task=task, name=name, value=value)


@pytest.fixture
def derived(small_suite):  # noqa: F811
    """A maintainer's fp32 version, an optimised one with runs, and a failed one."""
    agency = AgencyFactory(name="City A", slug="city-a")
    user = UserFactory(username="mara", password=PASSWORD)
    MembershipFactory(user=user, agency=agency, role=Role.MAINTAINER)
    base = ModelVersionFactory(
        model__agency=agency, model__name="Requests assistant",
        model__slug="requests-assistant", version="1.0.0",
        artifact_state=ArtifactState.AVAILABLE, artifact_digest="b" * 64,
        quantisation="fp32", released_at=timezone.now(), created_by=user,
    )  # fmt: skip
    settings = {
        "method": "optimised", "tool": optimise.TOOL,
        "opt_level": 0, "model_type": "bert", "fused_ops": {"RotaryEmbedding": 4},
        "max_relative_diff": 2.1e-07, "tolerance": 0.0001, "verified_sequences": 5,
    }  # fmt: skip
    optimised = ModelVersionFactory(
        model=base.model, version="1.0.1", base_version=base,
        derivation=Derivation.OPTIMISED, derivation_settings=settings,
        artifact_state=ArtifactState.AVAILABLE, artifact_digest="c" * 64,
        quantisation="fp32", released_at=timezone.now(), created_by=user,
    )  # fmt: skip
    for version, speed in ((base, 100.0), (optimised, 112.0)):
        _run(
            version, small_suite, user,
            {"perplexity.perplexity": 40.0, "perplexity.tokens_per_s": speed,
             "perplexity.peak_rss_mb": 200.0, "mc.acc": 0.8},
        )  # fmt: skip
    failed = ModelVersionFactory(
        model=base.model, version="1.0.2", base_version=base,
        derivation=Derivation.OPTIMISED, artifact_state=ArtifactState.FAILED,
        derivation_settings={"method": "optimised", "failure_code": "not_fused"},
        artifact_error="The derivation failed (not_fused): the optimiser "
        "recognised no fusable pattern in this graph (optimiser model type "
        "bert); no copy of the parent was made",
        created_by=user,
    )  # fmt: skip
    return {"optimised": optimised, "failed": failed}


def test_an_optimised_version_shows_its_trade_and_a_failed_one_says_why(
    page, derived, shot, browser, live_server
):
    sign_in(page, "mara")
    page.goto(f"/portal/versions/{derived['optimised'].pk}/")
    page.get_by_role("link", name="Optimisation against the base version").click()
    panel = page.locator("section", has=page.locator("#quantisation"))
    assert "Optimisation against the base version" in panel.inner_text()
    assert "RotaryEmbedding" in panel.inner_text()
    assert panel.get_by_role("table").locator("tbody tr").count() == 2
    accessible_in_both_languages(page, shot, "optimised")

    page.goto(f"/portal/versions/{derived['failed'].pk}/")
    failure = page.locator("section", has=page.locator("#derivation-failure"))
    assert "recognised a pattern it can fuse" in failure.inner_text()
    assert "not_fused" in failure.inner_text()
    assert page.get_by_role("link", name="Upload the bundle").count() == 0
    assert page.get_by_role("link", name="Attach a dataset").count() == 0
    assert page.locator("a[href*='/exports/']").count() == 0
    accessible_in_both_languages(page, shot, "failed")

    phone = new_page(browser, live_server.url, width=360)
    sign_in(phone, "mara")
    phone.goto(f"/portal/versions/{derived['optimised'].pk}/")
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the page scrolls sideways at phone width ({width}px)"
    assert_accessible(phone)
    shot(phone, "optimised-phone")
    phone.context.close()
