"""Evaluation schedules: the API and beat entry, ticks, comparison, regressions."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from audit.models import AuditEvent
from governance.models import (
    Comparison,
    EvaluationRun,
    EvaluationSchedule,
    RunMetric,
    RunStatus,
    ScheduleOrigin,
    ScheduleTick,
    TickOutcome,
    UseCaseStatus,
)
from governance.services import approvals
from governance.services import decisions as decision_services
from governance.services import policies as policy_services
from governance.services import schedules as schedule_services
from tests.conftest import celery_worker, database_url, process_env, wait_until
from tests.registry.conftest import token_client

pytestmark = pytest.mark.django_db

SAPPHIRE = {
    "cpu_model": "Intel(R) Xeon(R) Platinum 8480+",
    "cpu_signature": "GenuineIntel family 6 model 143 stepping 8",
    "cpu_flags": ["sse4_2", "avx", "avx2", "avx512f", "avx512_vnni", "amx_int8"],
}
ZEN3 = {"cpu_model": "AMD EPYC 7763 64-Core Processor", "cpu_flags": ["avx", "avx2"]}


def _events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("seq"))


def _schedule(version, suite, owner, **timing):
    timing = timing or {"interval_seconds": 3600}
    return schedule_services.schedule_create(
        actor=owner, model_version=version, suite=suite, **timing
    )


def _finish(run, *, metrics, environment=None, engine="1.0.0"):
    """Test set-up: finish a queued run as a worker would (rows written directly)."""
    EvaluationRun.objects.filter(pk=run.pk).update(
        status=RunStatus.SUCCEEDED,
        finished_at=timezone.now(),
        engine_version=engine,
        environment={"engine_version": engine, **(environment or SAPPHIRE)},
    )
    for key, value in metrics.items():
        task, _, name = key.partition(".")
        RunMetric.objects.create(run=run, task=task, name=name, value=value)
    run.refresh_from_db()
    return run


# --- API, tenancy and the beat entry --------------------------------------------


def test_api_creates_edits_and_keeps_the_periodic_task_in_step(
    governed_version, small_suite, member_a, member_b, reviewer
):
    api = token_client(member_a)
    body = {"model_version": governed_version.pk, "suite": small_suite.pk}

    created = api.post(
        "/api/v1/evaluation-schedules/",
        {**body, "interval_seconds": 21600},
        format="json",
    )

    assert created.status_code == 201, created.content
    schedule = EvaluationSchedule.objects.get(pk=created.json()["id"])
    task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    assert task.task == "civitas.schedule_tick"
    assert json.loads(task.kwargs) == {"schedule_id": schedule.pk}
    assert task.interval.every == 21600 and task.interval.period == "seconds"
    assert task.enabled and task.crontab is None

    path = f"/api/v1/evaluation-schedules/{schedule.pk}/"
    retimed = api.patch(path, {"crontab": "30 2 * * 1"}, format="json")
    assert retimed.status_code == 200, retimed.content
    assert retimed.json()["interval_seconds"] is None
    task.refresh_from_db()
    assert task.interval is None
    assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_week) == (
        "30",
        "2",
        "1",
    )
    assert api.patch(path, {"is_enabled": False}, format="json").status_code == 200
    task.refresh_from_db()
    assert not task.enabled
    assert [
        e.payload_data["schedule_id"] for e in _events("evaluation_schedule.created")
    ]
    assert len(_events("evaluation_schedule.updated")) == 2

    # Oversight reads; another agency sees nothing; neither writes.
    reviewer_api, other = token_client(reviewer), token_client(member_b)
    assert reviewer_api.get(path).status_code == 200
    assert reviewer_api.patch(
        path, {"is_enabled": True}, format="json"
    ).status_code == (403)
    assert other.get(path).status_code == 404
    assert other.patch(path, {"is_enabled": True}, format="json").status_code == 404
    assert other.get("/api/v1/evaluation-schedules/").json()["results"] == []
    refused = other.post(
        "/api/v1/evaluation-schedules/",
        {**body, "interval_seconds": 3600},
        format="json",
    )
    assert refused.status_code == 400
    assert "model_version" in refused.json()["fields"]
    assert other.get(f"{path}ticks/").status_code == 404


@pytest.mark.parametrize(
    ("timing", "field", "code"),
    [
        ({"interval_seconds": 3600, "crontab": "0 3 * * *"}, "interval_seconds",
         "interval_or_crontab"),
        ({}, "interval_seconds", "interval_or_crontab"),
        ({"crontab": "61 3 * * *"}, "crontab", "invalid_crontab"),
        ({"crontab": "0 3 * *"}, "crontab", "invalid_crontab"),
        ({"interval_seconds": 10}, "interval_seconds", "min_value"),
    ],
)  # fmt: skip
def test_api_refuses_bad_timing_with_field_codes(
    governed_version, small_suite, member_a, timing, field, code
):
    response = token_client(member_a).post(
        "/api/v1/evaluation-schedules/",
        {"model_version": governed_version.pk, "suite": small_suite.pk, **timing},
        format="json",
    )

    assert response.status_code == 400, response.content
    assert response.json()["fields"][field][0]["code"] == code
    assert not EvaluationSchedule.objects.exists()


# --- ticks: one at a time, a missed tick once -------------------------------------


def test_e8_a_tick_queues_one_run_and_never_two_at_once(
    governed_version, small_suite, member_a, django_capture_on_commit_callbacks
):
    schedule = _schedule(governed_version, small_suite, member_a)
    now = timezone.now()

    with django_capture_on_commit_callbacks() as queued:
        first = schedule_services.schedule_tick(schedule_id=schedule.pk, now=now)
    # Fired again and again (a duplicate message, a second beat, a late tick).
    later = [
        schedule_services.schedule_tick(
            schedule_id=schedule.pk, now=now + timedelta(minutes=m)
        )
        for m in (0, 15, 45)
    ]

    assert first.outcome == TickOutcome.QUEUED and first.run.requested_by == member_a
    assert len(queued) == 1  # one evaluation_run message
    assert [t.outcome for t in later] == [TickOutcome.SKIPPED_BUSY] * 3
    assert f"Run {first.run.pk}" in later[0].reason
    assert EvaluationRun.objects.filter(model_version=governed_version).count() == 1
    assert len(_events("evaluation_schedule.ticked")) == 4

    # The lock expires: a run stuck queued past it no longer blocks the schedule.
    expired = now + timedelta(minutes=settings.CIVITAS_SCHEDULE_LOCK_MINUTES + 1)
    EvaluationRun.objects.filter(pk=first.run.pk).update(
        requested_at=now - timedelta(minutes=1)
    )
    again = schedule_services.schedule_tick(schedule_id=schedule.pk, now=expired)
    assert again.outcome == TickOutcome.QUEUED


def test_e8_a_finished_slot_is_not_run_again_before_the_next_one(
    governed_version, small_suite, member_a
):
    schedule = _schedule(governed_version, small_suite, member_a)
    now = timezone.now()
    first = schedule_services.schedule_tick(schedule_id=schedule.pk, now=now)
    _finish(first.run, metrics={"multiple_choice.acc": 0.8})

    same_slot = schedule_services.schedule_tick(
        schedule_id=schedule.pk, now=now + timedelta(minutes=10)
    )
    next_slot = schedule_services.schedule_tick(
        schedule_id=schedule.pk, now=now + timedelta(minutes=59)
    )

    assert same_slot.outcome == TickOutcome.SKIPPED_SAME_SLOT
    assert next_slot.outcome == TickOutcome.QUEUED
    history = token_client(member_a).get(
        f"/api/v1/evaluation-schedules/{schedule.pk}/ticks/"
    )
    assert [t["outcome"] for t in history.json()["results"]] == [
        "queued",
        "skipped_same_slot",
        "queued",
    ]
    # The history is ordered by its own fields; an unknown one is refused.
    path = f"/api/v1/evaluation-schedules/{schedule.pk}/ticks/"
    oldest_first = token_client(member_a).get(f"{path}?ordering=ticked_at,id")
    assert [t["outcome"] for t in oldest_first.json()["results"]] == [
        "queued",
        "skipped_same_slot",
        "queued",
    ][::-1]
    assert token_client(member_a).get(f"{path}?ordering=created_at").status_code == 400


def test_a_disabled_schedule_or_a_refused_request_queues_nothing(
    governed_version, small_suite, member_a
):
    schedule = _schedule(governed_version, small_suite, member_a)
    schedule_services.schedule_update(
        actor=member_a, schedule=schedule, is_enabled=False
    )
    assert schedule_services.schedule_tick(schedule_id=schedule.pk) is None

    schedule_services.schedule_update(
        actor=member_a, schedule=schedule, is_enabled=True
    )
    type(governed_version).objects.filter(pk=governed_version.pk).update(
        artifact_state="failed"
    )
    tick = schedule_services.schedule_tick(schedule_id=schedule.pk)
    assert tick.outcome == TickOutcome.REFUSED
    assert tick.reason.startswith("artifact_not_available")
    assert not EvaluationRun.objects.exists()


def test_e8_beat_fires_a_long_missed_schedule_once(
    governed_version, small_suite, member_a
):
    from django_celery_beat.schedulers import ModelEntry

    from config.celery import app

    schedule = _schedule(governed_version, small_suite, member_a)
    task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    # Beat was down for thirty days: 720 hourly slots were missed.
    task.last_run_at = timezone.now() - timedelta(days=30)
    task.save()

    entry = ModelEntry(PeriodicTask.objects.get(pk=task.pk), app=app)
    due, _ = entry.is_due()
    fired = next(entry)  # what beat does when it sends the task
    due_again, wait = fired.is_due()

    assert due and not due_again
    assert wait > 3000  # the next slot is an hour away, not now again


# --- comparison with the previous run ----------------------------------------------


def _settled(schedule, *, metrics, environment=None, engine="1.0.0", now=None):
    tick = schedule_services.schedule_tick(
        schedule_id=schedule.pk, now=now or timezone.now()
    )
    _finish(tick.run, metrics=metrics, environment=environment, engine=engine)
    schedule_services.schedule_settle(tick_id=tick.pk)
    tick.refresh_from_db()
    return tick


@pytest.fixture
def hourly(governed_version, small_suite, member_a):
    return _schedule(governed_version, small_suite, member_a)


def _next(hours: int):
    return timezone.now() + timedelta(hours=hours)


def test_same_processor_features_must_give_identical_metrics(hourly):
    metrics = {"multiple_choice.acc": 0.75, "perplexity.perplexity": 41.25}
    first = _settled(hourly, metrics=metrics)
    # Timing differs from run to run; it is not a quality metric.
    second = _settled(
        hourly, metrics={**metrics, "multiple_choice.wall_s": 9.0}, now=_next(2)
    )
    drifted = _settled(
        hourly,
        metrics={**metrics, "perplexity.perplexity": 41.25 * (1 + 1e-9)},
        now=_next(4),
    )

    assert first.comparison == Comparison.NO_BASELINE
    assert first.detail["processor"]["isa_features"] == [
        "sse4_2",
        "avx",
        "avx2",
        "avx512f",
        "avx512_vnni",
        "amx_int8",
    ]
    assert second.comparison == Comparison.IDENTICAL
    assert second.baseline_run_id == first.run_id
    assert drifted.comparison == Comparison.REPRODUCIBILITY_FAILED
    assert drifted.detail["rtol"] == 0.0
    assert [d["metric"] for d in drifted.detail["differences"]] == [
        "perplexity.perplexity"
    ]
    (event,) = _events("evaluation.reproducibility_failed")
    assert event.payload_data["run_id"] == drifted.run_id
    assert event.payload_data["baseline_run_id"] == second.run_id
    assert not _events("evaluation.regression")


def test_another_processor_is_held_to_the_relative_tolerance(hourly):
    assert settings.CIVITAS_REPRODUCIBILITY_RTOL == 1e-5
    _settled(hourly, metrics={"perplexity.perplexity": 40.0})
    close = _settled(
        hourly,
        metrics={"perplexity.perplexity": 40.0 * (1 + 5e-6)},
        environment=ZEN3,
        now=_next(2),
    )
    far = _settled(
        hourly,
        metrics={"perplexity.perplexity": 40.0 * (1 + 5e-5)},
        environment=SAPPHIRE,
        now=_next(4),
    )
    new_engine = _settled(
        hourly, metrics={"perplexity.perplexity": 39.0}, engine="1.1.0", now=_next(6)
    )

    assert close.comparison == Comparison.WITHIN_TOLERANCE
    assert close.detail["processor"]["cpu_model"] == ZEN3["cpu_model"]
    assert close.detail["baseline_processor"]["isa_features"][-1] == "amx_int8"
    baseline_processor = close.detail["baseline_processor"]
    assert baseline_processor["cpu_signature"] == SAPPHIRE["cpu_signature"]
    assert close.detail["processor"]["cpu_signature"] is None  # not recorded
    assert far.comparison == Comparison.REPRODUCIBILITY_FAILED
    assert far.detail["differences"][0]["relative"] == pytest.approx(4.5e-5, rel=1e-2)
    assert new_engine.comparison == Comparison.ENGINE_CHANGED
    assert len(_events("evaluation.reproducibility_failed")) == 1


def test_a_failed_run_is_not_compared_and_settling_twice_changes_nothing(hourly):
    tick = schedule_services.schedule_tick(schedule_id=hourly.pk)
    EvaluationRun.objects.filter(pk=tick.run_id).update(status=RunStatus.FAILED)

    assert schedule_services.schedules_settle() == {"not_compared": 1}
    assert schedule_services.schedules_settle() == {}
    tick.refresh_from_db()
    assert tick.comparison == Comparison.NOT_COMPARED and tick.compared_at


# --- fresh evidence: policy schedules and regressions ------------------------------


def test_approval_creates_the_schedule_its_freshness_limit_needs(kit, member_a):
    from registry.models import Role
    from tests.factories import MembershipFactory, UserFactory

    # Carl asks for the evidence; Alice wrote the use case.
    kit.requester = MembershipFactory(
        user=UserFactory(username="carl"),
        agency=member_a.membership.agency,
        role=Role.MEMBER,
    ).user
    use_case = kit.approved()

    (schedule,) = EvaluationSchedule.objects.filter(origin=ScheduleOrigin.POLICY)
    assert schedule.model_version_id == use_case.model_version_id
    assert schedule.suite == kit.suite and schedule.is_enabled
    assert schedule.interval_seconds == 15 * 86400  # half the 30-day limit
    # Its runs are requested by whoever requested the evidence (four eyes
    # already bar them from submitting it), not by the use case's author.
    assert schedule.created_by == kit.requester != use_case.created_by
    assert PeriodicTask.objects.get(pk=schedule.periodic_task_id).enabled

    # The agency cannot switch it off; it ends with the approval.
    refused = token_client(member_a).patch(
        f"/api/v1/evaluation-schedules/{schedule.pk}/",
        {"is_enabled": False},
        format="json",
    )
    assert refused.status_code == 400
    assert refused.json()["fields"]["is_enabled"][0]["code"] == "policy_schedule"
    retimed = token_client(member_a).patch(
        f"/api/v1/evaluation-schedules/{schedule.pk}/",
        {"interval_seconds": 600},
        format="json",
    )
    assert retimed.json()["fields"]["interval_seconds"][0]["code"] == (
        "policy_schedule"
    )
    decision_services.use_case_retire(
        actor=kit.reviewers[0], use_case=use_case, rationale="The service closed."
    )
    schedule.refresh_from_db()
    assert not schedule.is_enabled
    assert not PeriodicTask.objects.get(pk=schedule.periodic_task_id).enabled


def test_expiry_switches_the_policy_schedule_off(kit):
    use_case = kit.approved()
    schedule = EvaluationSchedule.objects.get(origin=ScheduleOrigin.POLICY)

    assert approvals.use_case_expire(
        use_case=use_case, now=timezone.now() + timedelta(days=400)
    )
    schedule.refresh_from_db()
    assert not schedule.is_enabled


def test_a_metric_past_its_policy_bound_is_a_regression_and_returns_to_review(
    kit, django_capture_on_commit_callbacks
):
    use_case = kit.approved()
    schedule = EvaluationSchedule.objects.get(origin=ScheduleOrigin.POLICY)
    tick = schedule_services.schedule_tick(schedule_id=schedule.pk)
    # The new engine scores lower; the run is measured and checked as usual.
    run = _finish(tick.run, metrics={"multiple_choice.acc": 0.3}, engine="1.1.0")
    with django_capture_on_commit_callbacks(execute=False):
        policy_services.policy_evaluate_for_version(
            model_version=run.model_version, trigger="evaluation", actor=None
        )

    with django_capture_on_commit_callbacks() as queued:
        verdict = schedule_services.schedule_settle(tick_id=tick.pk)

    assert verdict == Comparison.ENGINE_CHANGED
    (event,) = _events("evaluation.regression")
    assert event.payload_data["metric"] == "multiple_choice.acc"
    assert (event.payload_data["value"], event.payload_data["baseline"]) == (0.3, 0.9)
    assert (
        event.payload_data["min"] == 0.5
        and event.payload_data["use_case_id"] == use_case.pk
    )
    tick.refresh_from_db()
    assert tick.detail["regressions"][0]["rule"] == "baseline/mc-acc"
    # civitas.usecase_recheck, and the regression's announcement to the
    # notifications (audit.signals.event_recorded), both on commit.
    assert len(queued) == 2
    # What that task does:
    result = use_case.policy_results.order_by("-pk").first()
    assert approvals.use_case_recheck(use_case=use_case, result=result)
    use_case.refresh_from_db()
    assert use_case.status == UseCaseStatus.IN_REVIEW


# --- the real path: beat's task → worker → engine → comparison ---------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_scheduled_runs_on_a_real_worker_reproduce_exactly(
    released_lm_version, small_suite, member_a, mlflow_store
):
    from config.celery import app

    schedule = _schedule(released_lm_version, small_suite, member_a)
    env = process_env(
        DATABASE_URL=database_url(),
        MLFLOW_TRACKING_URI=settings.MLFLOW_TRACKING_URI,
        MLFLOW_ARTIFACT_ROOT=settings.MLFLOW_ARTIFACT_ROOT,
        MLFLOW_EXPERIMENT=settings.MLFLOW_EXPERIMENT,
    )

    def tick_and_wait(count: int) -> None:
        queue = settings.CELERY_TASK_DEFAULT_QUEUE
        app.send_task(
            "civitas.schedule_tick", kwargs={"schedule_id": schedule.pk}, queue=queue
        )
        wait_until(
            lambda: (
                EvaluationRun.objects.filter(status=RunStatus.SUCCEEDED).count()
                == count
            ),
            timeout=240,
            interval=1,
            what=f"scheduled run {count}",
        )

    # The comparison task is housekeeping (CELERY_TASK_ROUTES): consume both.
    queues = ",".join(
        (settings.CELERY_TASK_DEFAULT_QUEUE, settings.CELERY_HOUSEKEEPING_QUEUE)
    )
    with celery_worker(env, queues):
        tick_and_wait(1)
        # The next slot: an hour later.
        EvaluationSchedule.objects.filter(pk=schedule.pk).update(
            last_tick_at=timezone.now() - timedelta(hours=1)
        )
        tick_and_wait(2)
        # The comparison is linked to the evaluation task: no beat needed.
        wait_until(
            lambda: (
                not ScheduleTick.objects.filter(comparison=Comparison.PENDING).exists()
            ),
            timeout=60,
            what="the linked comparisons",
        )

    assert schedule_services.schedules_settle() == {}  # nothing left for beat
    first = ScheduleTick.objects.filter(outcome=TickOutcome.QUEUED).order_by("pk")[0]
    assert first.comparison == Comparison.NO_BASELINE

    second = ScheduleTick.objects.filter(outcome=TickOutcome.QUEUED).order_by("pk")[1]
    assert second.comparison == Comparison.IDENTICAL
    assert second.detail["processor"]["cpu_model"]
    assert second.detail["differences"] == []
    assert second.run.requested_by == member_a


@pytest.mark.django_db(transaction=True)
def test_e8_four_ticks_at_once_on_four_connections_queue_one_run(
    governed_version, small_suite, member_a
):
    from tests.governance.test_concurrency import _race

    # The one run's message is left for a worker: none runs here, and a
    # later worker finds no such run and leaves it.
    schedule = _schedule(governed_version, small_suite, member_a)
    now = timezone.now()

    ticks = _race(
        *[
            lambda: schedule_services.schedule_tick(schedule_id=schedule.pk, now=now)
            for _ in range(4)
        ]
    )

    outcomes = sorted(t.outcome for t in ticks)
    assert outcomes == [TickOutcome.QUEUED] + [TickOutcome.SKIPPED_BUSY] * 3
    assert EvaluationRun.objects.count() == 1


# --- the admin goes through the same services ---------------------------------------


def test_the_admin_creates_and_switches_off_through_the_services(
    client, governed_version, small_suite, member_a
):
    from django.contrib.auth import get_user_model

    get_user_model().objects.filter(pk=member_a.pk).update(is_staff=True)
    client.force_login(member_a)

    added = client.post(
        "/admin/governance/evaluationschedule/add/",
        {
            "model_version": governed_version.pk,
            "suite": small_suite.pk,
            "interval_seconds": "7200",
            "crontab": "",
            "is_enabled": "on",
        },
    )

    assert added.status_code == 302, added.content[:2000]
    schedule = EvaluationSchedule.objects.get()
    assert schedule.interval_seconds == 7200 and schedule.created_by == member_a
    assert PeriodicTask.objects.get(pk=schedule.periodic_task_id).interval.every == (
        7200
    )
    changed = client.post(
        f"/admin/governance/evaluationschedule/{schedule.pk}/change/",
        {
            "interval_seconds": "",
            "crontab": "0 4 * * *",
            # is_enabled left unticked: switched off
            **{
                f"ticks-{k}": v
                for k, v in {
                    "TOTAL_FORMS": "0",
                    "INITIAL_FORMS": "0",
                    "MIN_NUM_FORMS": "0",
                    "MAX_NUM_FORMS": "0",
                }.items()
            },
        },
    )
    assert changed.status_code == 302, changed.content[:3000]
    schedule.refresh_from_db()
    assert (schedule.crontab, schedule.interval_seconds) == ("0 4 * * *", None)
    assert not schedule.is_enabled
    assert not PeriodicTask.objects.get(pk=schedule.periodic_task_id).enabled
    assert len(_events("evaluation_schedule.created")) == 1
    assert len(_events("evaluation_schedule.updated")) == 1


def test_a_rule_that_does_not_apply_schedules_nothing_and_never_blocks_approval(
    kit, reviewer
):
    from governance.models import EvaluationSuite

    classifier_suite = EvaluationSuite.objects.create(
        name="intents",
        version="1.0.0",
        licence=kit.suite.licence,
        tasks=[
            {
                "task": "classification",
                "name": "classification",
                "dataset_version": kit.suite.tasks[0]["dataset_version"],
                "options": {},
            }
        ],
    )
    policy_services.policy_create(
        actor=reviewer,
        name="classifiers",
        title="Classifier quality",
        scope="platform",
        rules=[
            {
                "id": "intent-acc",
                "kind": "required_evaluation",
                "suite": "intents",
                "metric": "classification.acc",
                "min": 0.8,
                "max_age_days": 7,
            }
        ],
    )

    use_case = kit.approved()

    assert use_case.status == UseCaseStatus.APPROVED
    schedules = EvaluationSchedule.objects.filter(origin=ScheduleOrigin.POLICY)
    assert [s.suite for s in schedules] == [kit.suite]
    assert classifier_suite.pk not in {s.suite_id for s in schedules}


@pytest.mark.parametrize(
    ("timing", "period"),
    [
        ({"interval_seconds": 5400}, timedelta(minutes=90)),
        ({"crontab": "0 3 * * *"}, timedelta(days=1)),
        ({"crontab": "30 2 * * 1"}, timedelta(days=7)),  # 2026-12-07 is a Monday
    ],
)
def test_a_slot_lasts_one_period_of_the_interval_or_the_crontab(timing, period):
    from datetime import UTC, datetime

    schedule = EvaluationSchedule(**timing)
    last = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    if "crontab" in timing and timing["crontab"].startswith("30"):
        last = datetime(2026, 12, 7, 2, 30, tzinfo=UTC)

    assert schedule_services.schedule_period(schedule, after=last) == period
