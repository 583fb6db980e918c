"""A maintainer configures the agency: a suite, a schedule and a webhook.

The flow runs in a real browser against the live server: the suite is built
over the agency's own dataset versions, the schedule ticks (the tick service,
as beat would call it) and its run history shows the run, and the webhook
receives a real signed delivery on an HTTP server the test starts. Every page
is screenshotted, and each main page passes axe-core in English and French.
"""

from __future__ import annotations

import pytest

from governance.models import EvaluationSchedule, EvaluationSuite
from governance.services import schedules as schedule_services
from governance.services import suites as suite_services
from notifications import services as notification_services
from notifications.models import Webhook, WebhookDelivery
from registry.models import ArtifactState, ModelKind, Role
from tests.e2e.conftest import PASSWORD, assert_accessible, sign_in, switch_language
from tests.factories import (
    AgencyFactory,
    LicenceFactory,
    MembershipFactory,
    ModelVersionFactory,
    UserFactory,
)
from tests.governance.test_suites import PROBES, QUESTIONS, _data
from tests.notifications.conftest import (  # noqa: F401
    local_webhooks,
    make_webhook,
    receiver,
    signatures_valid_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def maintainer(db):
    agency = AgencyFactory(slug="city-a", name="City A", jurisdiction="FR")
    user = UserFactory(username="mara", password=PASSWORD)
    MembershipFactory(user=user, agency=agency, role=Role.MAINTAINER)
    return user


def _create_suite(page, shot, answers, probes) -> EvaluationSuite:
    page.goto("/portal/suites/")
    assert page.get_by_role("heading", level=1).inner_text() == "Evaluation suites"
    assert_accessible(page)
    shot(page, "suites-list-en")
    page.get_by_role("link", name="New suite").click()
    page.locator("#id_name").fill("permit-answers")
    page.locator("#id_version").fill("1.0.0")
    page.locator("#id_description").fill("Questions our front desk answers.")
    page.locator("#id_licence").fill("CC0-1.0")
    page.locator("#id_metrics").fill("answers.f1")
    page.locator("#id_tasks-0-task").select_option("generation")
    page.locator("#id_tasks-0-name").fill("answers")
    page.locator("#id_tasks-0-dataset_version").select_option(str(answers.pk))
    page.locator("#id_tasks-0-options").fill('{"max_new_tokens": 4}')
    page.locator("#id_thresholds-0-metric").fill("answers.f1")
    page.locator("#id_thresholds-0-min").fill("0.9")
    page.locator("#id_thresholds-0-max").fill("0.1")
    assert_accessible(page)
    shot(page, "suite-form-en")
    page.get_by_role("button", name="Register the suite").click()
    # The API's rule, shown on the form: nothing is registered.
    assert "min is greater than max" in page.get_by_role("alert").inner_text()
    assert_accessible(page)
    shot(page, "suite-form-error-en")
    page.locator("#id_thresholds-0-max").fill("")
    page.locator("#id_thresholds-0-min").fill("0.5")
    page.locator("#id_tasks-1-task").select_option("poisoning")
    page.locator("#id_tasks-1-name").fill("probe")
    page.locator("#id_tasks-1-dataset_version").select_option(str(probes.pk))
    page.get_by_role("button", name="Register the suite").click()
    page.wait_for_url("**/portal/suites/*/")
    assert "Suite permit-answers, version 1.0.0" in page.locator("h1").inner_text()
    assert "at least 0.5" in page.locator("main").inner_text()
    assert_accessible(page)
    shot(page, "suite-detail-en")
    return EvaluationSuite.objects.get(name="permit-answers")


def _create_schedule(page, shot, version, suite) -> EvaluationSchedule:
    page.goto("/portal/schedules/")
    assert_accessible(page)
    shot(page, "schedules-empty-en")
    page.get_by_role("link", name="New schedule").click()
    page.get_by_label("Model version").select_option(str(version.pk))
    page.get_by_label("Suite").select_option(str(suite.pk))
    page.get_by_label("On a crontab").check()
    page.locator("#id_crontab").fill("30 2 * * 1")
    assert_accessible(page)
    shot(page, "schedule-form-en")
    page.get_by_role("button", name="Create the schedule").click()
    page.wait_for_url("**/portal/schedules/*/")
    schedule = EvaluationSchedule.objects.get()
    assert schedule.crontab == "30 2 * * 1"
    assert "crontab 30 2 * * 1" in page.locator("main").inner_text()
    return schedule


def _create_webhook(page, shot, url) -> tuple[Webhook, str]:
    page.goto("/portal/webhooks/")
    assert_accessible(page)
    shot(page, "webhooks-empty-en")
    page.get_by_role("link", name="New webhook").click()
    page.get_by_label("URL").fill(url)
    page.get_by_label("Description").fill("Front desk system")
    page.get_by_label("use_case.approved:").check()
    assert_accessible(page)
    shot(page, "webhook-form-en")
    page.get_by_role("button", name="Register the webhook").click()
    secret = page.get_by_label("Signing secret").input_value()
    assert secret.startswith("whsec_")
    assert_accessible(page)
    shot(page, "webhook-secret-en")
    page.get_by_role("link", name="Go to the webhook").click()
    assert secret not in page.content()
    return Webhook.objects.get(), secret


def test_a_maintainer_configures_suites_schedules_and_webhooks(
    page,
    shot,
    maintainer,
    receiver,  # noqa: F811
    local_webhooks,  # noqa: F811
):
    agency = maintainer.membership.agency
    LicenceFactory(expression="CC0-1.0")
    answers, probes = _data(agency, QUESTIONS), _data(agency, PROBES)
    version = ModelVersionFactory(
        model__agency=agency,
        kind=ModelKind.CAUSAL_LM_KV,
        artifact_state=ArtifactState.AVAILABLE,
        artifact_digest="a" * 64,
        artifact_format="zip",
    )
    sign_in(page, "mara")

    suite = _create_suite(page, shot, answers, probes)
    schedule = _create_schedule(page, shot, version, suite)

    # Beat's tick, as the worker runs it: a run is queued and shows in history.
    tick = schedule_services.schedule_tick(schedule_id=schedule.pk)
    page.reload()
    history = page.locator("table").last.inner_text()
    assert "run queued" in history and f"Run {tick.run_id}" in history
    assert_accessible(page)
    shot(page, "schedule-history-en")
    # The suite is now used: frozen, with "new version" instead of "edit".
    page.goto(f"/portal/suites/{suite.pk}/")
    assert "can no longer be changed" in page.locator("main").inner_text()
    assert page.get_by_role("link", name="Edit", exact=True).count() == 0
    shot(page, "suite-frozen-en")

    webhook, secret = _create_webhook(page, shot, receiver.url)
    page.get_by_role("button", name="Send a test event").click()
    delivery = WebhookDelivery.objects.get(webhook=webhook)
    notification_services.delivery_attempt(delivery_id=delivery.pk)
    assert receiver.received and receiver.received[0].headers["webhook-id"] == (
        delivery.event_id
    )
    # Signed with the secret the page showed once.
    assert signatures_valid_for(secret, receiver.received[0])
    page.reload()
    log = page.locator("table").last.inner_text()
    assert "webhook.ping" in log and "delivered" in log and "200" in log
    assert_accessible(page)
    shot(page, "webhook-deliveries-en")

    switch_language(page, "fr")
    for path, heading, name in [
        ("/portal/suites/", "Suites d'évaluation", "suites-list-fr"),
        (f"/portal/suites/{suite.pk}/", "permit-answers", "suite-detail-fr"),
        ("/portal/suites/new/", "Nouvelle suite", "suite-form-fr"),
        ("/portal/schedules/", "Planifications d'évaluation", "schedules-list-fr"),
        (f"/portal/schedules/{schedule.pk}/", "permit-answers", "schedule-fr"),
        ("/portal/schedules/new/", "Nouvelle planification", "schedule-form-fr"),
        ("/portal/webhooks/", "Webhooks", "webhooks-list-fr"),
        (f"/portal/webhooks/{webhook.pk}/", "Webhook", "webhook-fr"),
        ("/portal/webhooks/new/", "Nouveau webhook", "webhook-form-fr"),
    ]:
        page.goto(path)
        assert heading in page.locator("h1").inner_text(), path
        assert_accessible(page)
        shot(page, name)


def test_the_configuration_pages_fit_a_phone(
    phone,
    shot,
    maintainer,
    receiver,  # noqa: F811
    local_webhooks,  # noqa: F811
):
    agency = maintainer.membership.agency
    LicenceFactory(expression="CC0-1.0")
    answers = _data(agency, QUESTIONS)
    suite = suite_services.suite_register(
        actor=maintainer,
        name="permit-answers",
        version="1.0.0",
        licence=LicenceFactory(expression="MIT"),
        tasks=[{"task": "generation", "name": "answers", "dataset_version": answers}],
        thresholds={"answers.f1": {"min": 0.5}},
    )
    version = ModelVersionFactory(
        model__agency=agency,
        kind=ModelKind.CAUSAL_LM_KV,
        artifact_state=ArtifactState.AVAILABLE,
        artifact_digest="a" * 64,
        artifact_format="zip",
    )
    schedule = schedule_services.schedule_create(
        actor=maintainer, model_version=version, suite=suite, interval_seconds=3600
    )
    schedule_services.schedule_tick(schedule_id=schedule.pk)
    webhook, _secret = make_webhook(
        maintainer, None, receiver.url, ["use_case.approved"]
    )
    delivery = notification_services.webhook_ping(actor=maintainer, webhook=webhook)
    notification_services.delivery_attempt(delivery_id=delivery.pk)
    sign_in(phone, "mara")
    for path, name in [
        (f"/portal/suites/{suite.pk}/", "suite-phone"),
        (f"/portal/schedules/{schedule.pk}/", "schedule-phone"),
        (f"/portal/webhooks/{webhook.pk}/", "webhook-phone"),
    ]:
        phone.goto(path)
        overflow = phone.evaluate(
            "document.documentElement.scrollWidth"
            " - document.documentElement.clientWidth"
        )
        shot(phone, name)
        assert overflow <= 0, path
