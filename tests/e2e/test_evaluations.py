"""In a browser: request an evaluation of a real model and watch it finish.

The version's artifact is a tiny ONNX causal LM built by ``modelgen``; a real
Celery worker (over Redis) runs the suite with ONNX Runtime while the run
page polls its progress, then shows the metrics, their chart and the speed,
memory and energy figures. The comparison page then places the version.
"""

from __future__ import annotations

import time

import pytest
from django.conf import settings

from governance.models import EvaluationRun, RunStatus
from registry.models import Role
from tests.conftest import celery_worker, database_url, process_env, worker_queues
from tests.e2e.conftest import PASSWORD, assert_accessible, sign_in, switch_language
from tests.factories import (
    AgencyFactory,
    MembershipFactory,
    ModelVersionFactory,
    UserFactory,
)
from tests.governance.conftest import (  # noqa: F401
    lm_bundle_zip,
    small_suite,
    stored_lm_artifact,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def alice(db):
    agency = AgencyFactory(slug="city-a", name="City A", jurisdiction="FR")
    user = UserFactory(username="alice", password=PASSWORD)
    MembershipFactory(user=user, agency=agency, role=Role.MEMBER)
    return user


@pytest.fixture
def tiny_lm(alice, lm_bundle_zip):  # noqa: F811
    """A released version of City A whose artifact is the generated bundle."""
    return ModelVersionFactory(
        model__agency=alice.membership.agency,
        model__name="Tiny helper",
        version="0.1.0",
        **stored_lm_artifact("tests/e2e-tiny-lm.zip", lm_bundle_zip),
        parameter_count=40_000,
    )


def watch_until_finished(page, shot, timeout: float = 300) -> list[str]:
    """The statuses the run page showed, in order, until the run ended.

    A short run may go from queued to succeeded between two polls, so
    "Running" is screenshotted when seen, not required.
    """
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        badge = page.locator("#run-status .badge").inner_text()
        if not seen or seen[-1] != badge:
            seen.append(badge)
            if badge == "Running":
                shot(page, "running")
        if badge in ("Succeeded", "Failed", "Cancelled"):
            return seen
        page.wait_for_timeout(250)
    pytest.fail(f"the run page never showed the end of the run: {seen}")


@pytest.mark.slow
def test_request_an_evaluation_and_watch_it_finish(
    page,
    shot,
    alice,
    tiny_lm,
    small_suite,  # noqa: F811
    mlflow_store,
):
    sign_in(page, "alice")
    page.goto(f"/portal/versions/{tiny_lm.pk}/evaluate/")
    assert page.get_by_role("heading", level=1).inner_text() == (
        "Evaluate Tiny helper 0.1.0"
    )
    assert_accessible(page)
    shot(page, "request")
    page.get_by_role("button", name="Request the evaluation").click()
    assert page.get_by_role("alert").is_visible()  # no suite chosen
    shot(page, "request-error")
    page.get_by_label("Suite").select_option(label="small 1.0.0 (built-in)")
    page.get_by_role("button", name="Request the evaluation").click()

    run = EvaluationRun.objects.get()
    assert page.url.endswith(f"/portal/evaluations/{run.pk}/")
    status = page.locator("#run-status")
    assert "Queued" in status.inner_text()
    assert page.locator("#run-progress").is_visible()
    assert_accessible(page)
    shot(page, "queued")
    page.goto("/portal/")
    panel = page.locator("#runs-in-progress")
    assert "Tiny helper 0.1.0 on small@1.0.0" in panel.inner_text()
    assert panel.get_attribute("hx-trigger") == "every 3s"
    shot(page, "dashboard-queued")
    page.goto(f"/portal/evaluations/{run.pk}/")
    page.evaluate("window.sameDocument = true")  # gone if the page reloads

    env = process_env(
        DATABASE_URL=database_url(),
        MLFLOW_TRACKING_URI=settings.MLFLOW_TRACKING_URI,
        MLFLOW_ARTIFACT_ROOT=settings.MLFLOW_ARTIFACT_ROOT,
        MLFLOW_EXPERIMENT=settings.MLFLOW_EXPERIMENT,
    )
    with celery_worker(env, worker_queues()):
        # The page is never reloaded: htmx polls the run until it ends.
        seen = watch_until_finished(page, shot)

    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.failure_reason
    assert seen[-1] == "Succeeded" and seen[0] == "Queued", seen
    assert page.evaluate("window.sameDocument") is True
    assert "Succeeded" in status.inner_text()
    assert page.locator("#run-progress").count() == 0
    metrics = page.get_by_role("table", name="Metrics of task multiple_choice")
    assert "acc" in metrics.inner_text()
    assert page.locator('figure.chart svg[role="img"]').count() == 2
    # Drawn in colour under the CSP (which drops inline styles): the first
    # shape, the white background, keeps its fill.
    background = page.locator("figure.chart svg path").first
    assert background.evaluate("e => getComputedStyle(e).fill") == "rgb(255, 255, 255)"
    assert "Tokens per second" in page.locator("dl.facts").last.inner_text()
    assert_accessible(page)
    shot(page, "succeeded")
    switch_language(page, "fr")
    assert "Réussie" in page.locator("#run-status").inner_text()
    assert_accessible(page)
    shot(page, "succeeded-fr")

    page.goto("/portal/evaluations/")
    assert_accessible(page)
    shot(page, "list-fr")
    page.goto(f"/portal/compare/?suite={small_suite.pk}")
    assert "Tiny helper 0.1.0" in page.locator("#comparison").inner_text()
    assert_accessible(page)
    shot(page, "compare-fr")
    page.goto("/portal/")
    assert_accessible(page)
    shot(page, "dashboard-fr")
    switch_language(page, "en")
    assert_accessible(page)
    shot(page, "dashboard-en")
    page.goto("/portal/evaluations/")
    assert_accessible(page)
    page.goto(f"/portal/compare/?suite={small_suite.pk}")
    assert page.locator("figure.chart svg").count() >= 1
    assert_accessible(page)
    shot(page, "compare-en")
