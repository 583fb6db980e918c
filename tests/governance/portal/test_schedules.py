"""The schedule pages: tenancy, validation shown, the service's effects, history."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from audit.models import AuditEvent
from governance.models import EvaluationSchedule, ScheduleOrigin, TickOutcome
from governance.services import schedules as schedule_services
from tests.factories import ModelVersionFactory

pytestmark = pytest.mark.django_db

LIST = reverse("governance_portal:schedule-list")
NEW = reverse("governance_portal:schedule-create")


def _detail(schedule) -> str:
    return reverse("governance_portal:schedule-detail", args=[schedule.pk])


@pytest.fixture
def schedule(governed_version, small_suite, member_a):
    return schedule_services.schedule_create(
        actor=member_a,
        model_version=governed_version,
        suite=small_suite,
        interval_seconds=6 * 3600,
    )


def test_anonymous_readers_are_sent_to_sign_in(client, schedule):
    for url in (LIST, NEW, _detail(schedule), f"{_detail(schedule)}edit/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


def test_c1_another_agency_gets_404_and_an_empty_list(client, member_b, schedule):
    client.force_login(member_b)
    assert client.get(_detail(schedule)).status_code == 404
    assert client.get(f"{_detail(schedule)}edit/").status_code == 404
    assert client.post(f"{_detail(schedule)}toggle/").status_code == 404
    assert f'href="{_detail(schedule)}"' not in client.get(LIST).content.decode()
    schedule.refresh_from_db()
    assert schedule.is_enabled


def test_oversight_reads_but_may_not_switch_a_schedule(client, reviewer, schedule):
    client.force_login(reviewer)
    page = client.get(_detail(schedule)).content.decode()
    assert "every 6 hours" in page
    assert "Disable" not in page
    assert client.post(f"{_detail(schedule)}toggle/").status_code == 403
    schedule.refresh_from_db()
    assert schedule.is_enabled


def test_a_member_creates_a_schedule_on_a_crontab(
    client, member_a, governed_version, small_suite
):
    client.force_login(member_a)
    form = client.get(NEW).content.decode()
    assert str(governed_version) in form and str(small_suite) in form
    response = client.post(
        NEW,
        {
            "model_version": governed_version.pk,
            "suite": small_suite.pk,
            "timing": "crontab",
            "crontab": "30 2 * * 1",
            "is_enabled": "on",
        },
    )
    schedule = EvaluationSchedule.objects.get()
    assert response.status_code == 302
    assert response["Location"] == _detail(schedule)
    assert schedule.crontab == "30 2 * * 1" and schedule.interval_seconds is None
    assert schedule.created_by == member_a
    task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    assert task.crontab.minute == "30" and task.enabled
    assert AuditEvent.objects.filter(
        action="evaluation_schedule.created", object_id=str(schedule.pk)
    ).exists()
    page = client.get(_detail(schedule)).content.decode()
    assert "crontab 30 2 * * 1" in page
    assert "No tick yet" in page


@pytest.mark.parametrize(
    ("timing", "message"),
    [
        ({"timing": "crontab", "crontab": "every monday"}, "five fields"),
        ({"timing": "crontab", "crontab": "99 2 * * 1"}, "Not a crontab"),
        ({"timing": "interval", "every": "30", "unit": "1"}, "greater than or equal"),
        ({"timing": "interval", "every": "", "unit": "60"}, "not both and not neither"),
    ],
)
def test_bad_timings_are_form_errors(
    client, member_a, governed_version, small_suite, timing, message
):
    client.force_login(member_a)
    response = client.post(
        NEW, {"model_version": governed_version.pk, "suite": small_suite.pk, **timing}
    )
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not EvaluationSchedule.objects.exists()


def test_another_agencys_version_cannot_be_scheduled(
    client, member_b, governed_version, small_suite
):
    client.force_login(member_b)
    form = client.get(NEW).content.decode()
    assert str(governed_version) not in form
    response = client.post(
        NEW,
        {
            "model_version": governed_version.pk,
            "suite": small_suite.pk,
            "timing": "interval",
            "every": "1",
            "unit": "3600",
        },
    )
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not EvaluationSchedule.objects.exists()


def test_retime_and_switch_off_through_the_service(client, member_a, schedule):
    client.force_login(member_a)
    edit = f"{_detail(schedule)}edit/"
    assert 'value="6"' in client.get(edit).content.decode()  # 6 hours
    response = client.post(
        edit, {"timing": "interval", "every": "2", "unit": "86400", "is_enabled": "on"}
    )
    assert response.status_code == 302
    schedule.refresh_from_db()
    assert schedule.interval_seconds == 2 * 86400 and schedule.crontab == ""

    assert client.post(f"{_detail(schedule)}toggle/").status_code == 302
    schedule.refresh_from_db()
    assert not schedule.is_enabled
    assert not PeriodicTask.objects.get(pk=schedule.periodic_task_id).enabled
    assert AuditEvent.objects.filter(action="evaluation_schedule.updated").count() == 2
    page = client.get(_detail(schedule)).content.decode()
    assert "none: the schedule is disabled" in page
    assert "Enable" in page


def test_a_policy_schedule_is_shown_but_not_offered_for_edit(
    client, member_a, governed_version, small_suite
):
    kept = schedule_services.schedule_create(
        actor=None,
        owner=member_a,
        model_version=governed_version,
        suite=small_suite,
        interval_seconds=86400,
        origin=ScheduleOrigin.POLICY,
    )
    client.force_login(member_a)
    page = client.get(_detail(kept)).content.decode()
    assert "The platform keeps this schedule" in page
    assert "Change the timing" not in page
    response = client.post(
        f"{_detail(kept)}edit/", {"timing": "interval", "every": "1", "unit": "3600"}
    )
    assert response.status_code == 200
    assert "Add a schedule of your own" in response.content.decode()
    kept.refresh_from_db()
    assert kept.interval_seconds == 86400


def test_the_run_history_shows_each_tick_and_its_run(client, member_a, schedule):
    now = timezone.now()
    queued = schedule_services.schedule_tick(schedule_id=schedule.pk, now=now)
    busy = schedule_services.schedule_tick(
        schedule_id=schedule.pk, now=now + timedelta(minutes=1)
    )
    assert queued.outcome == TickOutcome.QUEUED
    assert busy.outcome == TickOutcome.SKIPPED_BUSY
    client.force_login(member_a)
    page = client.get(_detail(schedule)).content.decode()
    assert f'href="/api/v1/evaluations/{queued.run_id}/"' in page
    assert "run queued" in page
    assert "skipped: a run was unfinished" in page
    assert f"Run {queued.run_id} of this schedule is still queued" in page


def test_pages_take_a_constant_number_of_queries(
    client, member_a, governed_version, small_suite, django_assert_max_num_queries
):
    def add(count):
        for _ in range(count):
            version = ModelVersionFactory(
                model__agency=member_a.membership.agency, kind=governed_version.kind
            )
            made = schedule_services.schedule_create(
                actor=member_a, model_version=version, suite=small_suite,
                interval_seconds=3600,
            )  # fmt: skip
            schedule_services.schedule_tick(schedule_id=made.pk)
        return made

    client.force_login(member_a)
    first = add(2)
    with django_assert_max_num_queries(20) as few:
        client.get(LIST)
        client.get(_detail(first))
    last = add(18)
    with django_assert_max_num_queries(len(few.captured_queries)):
        listed = client.get(LIST)
        client.get(_detail(last))
    assert listed.content.decode().count("every hour") == 20
