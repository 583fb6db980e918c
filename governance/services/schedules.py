"""Evaluation schedules: their beat entries, their ticks, and what each run compared.

A schedule is a model version, a suite and an interval or a crontab. The
service keeps one django-celery-beat ``PeriodicTask`` in step with each
schedule; beat (``DatabaseScheduler``) fires ``civitas.schedule_tick``, and
``schedule_tick`` queues a normal evaluation through
``governance.services.evaluations.evaluation_request``, requested by the
schedule's owner.

A schedule never runs twice at once: a tick finds the schedule row locked
by another tick (``SELECT ... FOR UPDATE``), then skips while a run it
queued is still queued or running (a lock that expires after
``CIVITAS_SCHEDULE_LOCK_MINUTES``, by when the evaluation sweep has settled
a lost run). A missed tick runs once: beat fires a task whose
``last_run_at`` is far behind once, not once per missed slot, and a tick
arriving less than half a period after the last queued one (a duplicate
message, a second beat, a restart on a slot boundary) is the same slot and
is skipped. Every tick, queued or skipped, is kept (``ScheduleTick``).

Once a scheduled run finished (a link of its evaluation task, or the
periodic ``schedules_settle`` for a run queued again without it),
``schedule_settle`` compares it with the
version's previous succeeded run on the same suite: on the same artifact,
engine version and instruction-set features the quality metrics must be
identical; on another processor within ``CIVITAS_REPRODUCIBILITY_RTOL``
(relative). A difference beyond that is a reproducibility failure
(``evaluation.reproducibility_failed``), not a regression. A metric that
moved past its policy bound, from within it, is a regression
(``evaluation.regression``); the use cases relying on it are re-checked
through ``civitas.usecase_recheck``.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from typing import Any

from celery.schedules import crontab as celery_crontab
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from audit import services as audit
from config.celery import app
from config.exceptions import DomainError, PolicyViolation
from engine.evaluate import PERFORMANCE_METRICS
from engine.perf import processor
from governance.models import (
    Comparison,
    EvaluationRun,
    EvaluationSchedule,
    EvaluationSuite,
    PolicyResult,
    RuleStatus,
    RunStatus,
    ScheduleOrigin,
    ScheduleTick,
    TickOutcome,
    UseCase,
    UseCaseStatus,
)
from governance.services.evaluations import evaluation_request
from governance.services.use_cases import use_case_recheck_enqueue
from registry.models import ModelVersion
from registry.selectors import user_agency_id
from registry.services.changes import UNSET
from registry.services.releases import refuse_failed_derivation

TICK_TASK = "civitas.schedule_tick"
SETTLE_TICK_TASK = "civitas.schedule_settle_run"
MIN_INTERVAL_SECONDS = 60


def _field_error(field: str, code: str, message: str) -> DomainError:
    return DomainError(
        message, code=code, fields={field: [{"code": code, "message": message}]}
    )


# --- timing --------------------------------------------------------------------


def _celery_crontab(expression: str):
    """celery's crontab for five cron fields; ``DomainError`` naming ``crontab``."""
    parts = expression.split()
    if len(parts) != 5:
        raise _field_error(
            "crontab",
            "invalid_crontab",
            "A crontab has five fields: minute hour day-of-month month day-of-week.",
        )
    minute, hour, day_of_month, month, day_of_week = parts
    try:
        return celery_crontab(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month,
            day_of_week=day_of_week,
        )
    except (ValueError, IndexError) as exc:
        raise _field_error(
            "crontab", "invalid_crontab", f"Not a crontab: {exc}."
        ) from exc


def _check_timing(interval_seconds: int | None, crontab: str) -> tuple[int | None, str]:
    """Exactly one of an interval (at least a minute) and a valid crontab."""
    crontab = " ".join((crontab or "").split())
    if (interval_seconds is None) == (not crontab):
        raise _field_error(
            "interval_seconds",
            "interval_or_crontab",
            "Give either interval_seconds or crontab, not both and not neither.",
        )
    if interval_seconds is not None and interval_seconds < MIN_INTERVAL_SECONDS:
        raise _field_error(
            "interval_seconds",
            "interval_too_short",
            f"A schedule runs at most once a minute ({MIN_INTERVAL_SECONDS} s).",
        )
    if crontab:
        _celery_crontab(crontab)
    return interval_seconds, crontab


def schedule_period(schedule: EvaluationSchedule, *, after: datetime) -> timedelta:
    """The time from ``after`` to the schedule's next slot (its period)."""
    if schedule.interval_seconds:
        return timedelta(seconds=schedule.interval_seconds)
    start, ffwd, _ = _celery_crontab(schedule.crontab).remaining_delta(after)
    return (start + ffwd) - after


def _beat_entry(schedule: EvaluationSchedule) -> dict[str, Any]:
    """The interval or crontab row of django-celery-beat that the schedule names."""
    if schedule.interval_seconds:
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=schedule.interval_seconds, period=IntervalSchedule.SECONDS
        )
        return {"interval": interval, "crontab": None}
    minute, hour, day_of_month, month, day_of_week = schedule.crontab.split()
    cron, _ = CrontabSchedule.objects.get_or_create(
        minute=minute,
        hour=hour,
        day_of_month=day_of_month,
        month_of_year=month,
        day_of_week=day_of_week,
        timezone=settings.CELERY_TIMEZONE,
    )
    return {"interval": None, "crontab": cron}


def _sync_periodic_task(schedule: EvaluationSchedule) -> None:
    """Create or update the schedule's ``PeriodicTask`` to match it."""
    fields = {
        **_beat_entry(schedule),
        "task": TICK_TASK,
        "kwargs": json.dumps({"schedule_id": schedule.pk}),
        "enabled": schedule.is_enabled,
        # A tick that waited this long in the queue is dropped: the next
        # slot queues the run instead of a late pile of old ticks.
        "expire_seconds": 600,
        "description": f"Evaluation schedule {schedule.pk} (Civitas).",
    }
    if schedule.periodic_task_id is None:
        task = PeriodicTask.objects.create(
            name=f"civitas-evaluation-schedule-{schedule.pk}", **fields
        )
        EvaluationSchedule.objects.filter(pk=schedule.pk).update(periodic_task=task)
        schedule.periodic_task = task
        return
    task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    for name, value in fields.items():
        setattr(task, name, value)
    task.save()


# --- create and edit -----------------------------------------------------------


def _require_owner(actor, model_version: ModelVersion) -> None:
    """Only the owning agency's people edit its schedules; oversight reads."""
    if user_agency_id(actor) != model_version.model.agency_id:
        raise PolicyViolation(
            "Only the agency that owns the model version edits its schedules.",
            code="not_allowed",
        )


def _check_suite(actor, model_version: ModelVersion, suite: EvaluationSuite) -> None:
    if (
        actor is not None
        and not EvaluationSuite.objects.visible_to(actor).filter(pk=suite.pk).exists()
    ):
        raise _field_error("suite", "not_found", "No such suite.")
    reason = suite.unsupported_reason(model_version.kind)
    if reason:
        raise _field_error("suite", "suite_not_applicable", reason)


def _payload(schedule: EvaluationSchedule, **extra: Any) -> dict[str, Any]:
    return {
        "schedule_id": schedule.pk,
        "model_version_id": schedule.model_version_id,
        "suite": str(schedule.suite),
        "interval_seconds": schedule.interval_seconds,
        "crontab": schedule.crontab,
        "is_enabled": schedule.is_enabled,
        "origin": schedule.origin,
        **extra,
    }


@transaction.atomic
def schedule_create(
    *,
    actor,
    model_version: ModelVersion,
    suite: EvaluationSuite,
    interval_seconds: int | None = None,
    crontab: str = "",
    is_enabled: bool = True,
    origin: str = ScheduleOrigin.AGENCY,
    owner=None,
) -> EvaluationSchedule:
    """Schedule evaluations of a version on a suite, and its beat entry.

    ``actor`` is a person of the owning agency, or None for the platform
    (a policy's freshness limit, ``origin="policy"``), which then names the
    ``owner`` that the runs are requested by. Raises ``DomainError`` with
    field codes for bad timing (``interval_or_crontab``,
    ``interval_too_short``, ``invalid_crontab``) or an unfit suite, and
    ``Conflict`` (``derivation_failed``) for a version whose platform
    derivation failed. Records ``evaluation_schedule.created``.
    """
    if actor is not None:
        _require_owner(actor, model_version)
    refuse_failed_derivation(model_version, "scheduled for evaluation")
    _check_suite(actor, model_version, suite)
    interval_seconds, crontab = _check_timing(interval_seconds, crontab)
    schedule = EvaluationSchedule.objects.create(
        model_version=model_version,
        suite=suite,
        interval_seconds=interval_seconds,
        crontab=crontab,
        is_enabled=is_enabled,
        origin=origin,
        created_by=owner or actor,
    )
    _sync_periodic_task(schedule)
    audit.record(
        actor=actor,
        action="evaluation_schedule.created",
        obj=schedule,
        agency=model_version.model.agency,
        payload=_payload(schedule),
    )
    return schedule


@transaction.atomic
def schedule_update(
    *,
    actor,
    schedule: EvaluationSchedule,
    interval_seconds: int | None = UNSET,
    crontab: str = UNSET,
    is_enabled: bool = UNSET,
) -> EvaluationSchedule:
    """Change a schedule's timing or switch it on or off; its beat entry follows.

    Giving ``interval_seconds`` clears the crontab and the reverse. A
    schedule kept for a policy's freshness limit is changed by the platform
    only (``policy_schedule`` for its agency): it is timed by the limit and
    ends with the approvals that need it.
    ``actor`` None is the platform. Records ``evaluation_schedule.updated``.
    """
    locked = (
        EvaluationSchedule.objects.select_for_update(of=("self",))
        .select_related("model_version__model__agency", "suite")
        .get(pk=schedule.pk)
    )
    if actor is not None:
        _require_owner(actor, locked.model_version)
        if locked.origin == ScheduleOrigin.POLICY:
            given = {
                "interval_seconds": interval_seconds,
                "crontab": crontab,
                "is_enabled": is_enabled,
            }
            raise _field_error(
                next((k for k, v in given.items() if v is not UNSET), "is_enabled"),
                "policy_schedule",
                "This schedule keeps the evidence an approval needs fresh: the "
                "platform times it and ends it with the approvals that need it. "
                "Add a schedule of your own for more runs.",
            )
    if interval_seconds is not UNSET or crontab is not UNSET:
        interval = None if interval_seconds is UNSET else interval_seconds
        cron = "" if crontab is UNSET else crontab
        locked.interval_seconds, locked.crontab = _check_timing(interval, cron)
    if is_enabled is not UNSET:
        locked.is_enabled = bool(is_enabled)
    before = _payload(schedule)
    locked.save()
    _sync_periodic_task(locked)
    audit.record(
        actor=actor,
        action="evaluation_schedule.updated",
        obj=locked,
        agency=locked.model_version.model.agency,
        payload=_payload(locked, before=before),
    )
    return locked


# --- ticks ---------------------------------------------------------------------


def _busy_run(schedule: EvaluationSchedule, now: datetime) -> EvaluationRun | None:
    """A run of this schedule still queued or running, within the lock's expiry."""
    since = now - timedelta(minutes=settings.CIVITAS_SCHEDULE_LOCK_MINUTES)
    return (
        EvaluationRun.objects.filter(
            schedule_tick__schedule=schedule,
            status__in=[RunStatus.QUEUED, RunStatus.RUNNING],
            requested_at__gte=since,
        )
        .order_by("-pk")
        .first()
    )


def _skip_reason(schedule: EvaluationSchedule, now: datetime) -> tuple[str, str]:
    """(outcome, reason) when the tick must not queue a run; ("", "") if it may."""
    busy = _busy_run(schedule, now)
    if busy is not None:
        return (
            TickOutcome.SKIPPED_BUSY,
            f"Run {busy.pk} of this schedule is still {busy.status}.",
        )
    last = schedule.last_tick_at
    if last is not None and now - last < schedule_period(schedule, after=last) / 2:
        return (
            TickOutcome.SKIPPED_SAME_SLOT,
            f"A run was queued for this slot at {last.isoformat()}.",
        )
    return "", ""


def _enqueue_with_settle(*, run_id: int, tick_id: int) -> None:
    """Queue the run on commit; its comparison follows as soon as it ends.

    The comparison is a Celery link of the evaluation task, so it runs when
    the task returns; a run the sweep queued again has no link, and the
    periodic ``civitas.schedule_settle`` compares it instead.
    """
    settle = app.signature(
        SETTLE_TICK_TASK, kwargs={"tick_id": tick_id}, immutable=True
    )
    transaction.on_commit(
        lambda: app.send_task(
            "civitas.evaluation_run", kwargs={"run_id": run_id}, link=settle
        )
    )


@transaction.atomic
def schedule_tick(
    *, schedule_id: int, now: datetime | None = None
) -> ScheduleTick | None:
    """Queue the schedule's evaluation unless it is busy or this slot already ran.

    Safe to run twice and at once: the schedule row is locked first. None
    when the schedule is gone or switched off. Otherwise the recorded tick:
    ``queued`` with its run (``evaluation.requested``, by the schedule's
    owner), ``skipped_busy``, ``skipped_same_slot``, or ``refused`` with the
    evaluation service's reason (an artifact no longer available, an owner
    who left the agency). Records ``evaluation_schedule.ticked``.
    """
    now = now or timezone.now()
    schedule = (
        EvaluationSchedule.objects.select_for_update(of=("self",))
        .select_related("model_version__model__agency", "suite", "created_by")
        .filter(pk=schedule_id, is_enabled=True)
        .first()
    )
    if schedule is None:
        return None
    outcome, reason = _skip_reason(schedule, now)
    run = None
    if not outcome:
        try:
            with transaction.atomic():
                run = evaluation_request(
                    actor=schedule.created_by,
                    model_version=schedule.model_version,
                    suite=schedule.suite,
                    enqueue=False,  # queued below, with its comparison linked
                )
            outcome = TickOutcome.QUEUED
            EvaluationSchedule.objects.filter(pk=schedule.pk).update(last_tick_at=now)
        except DomainError as exc:
            outcome, reason = TickOutcome.REFUSED, f"{exc.code}: {exc.message}"
    tick = ScheduleTick.objects.create(
        schedule=schedule,
        ticked_at=now,
        outcome=outcome,
        reason=reason[:4000],
        run=run,
        comparison=Comparison.PENDING if run is not None else Comparison.NOT_COMPARED,
    )
    if run is not None:
        _enqueue_with_settle(run_id=run.pk, tick_id=tick.pk)
    audit.record(
        actor=None,
        action="evaluation_schedule.ticked",
        obj=schedule,
        agency=schedule.model_version.model.agency,
        payload={
            "schedule_id": schedule.pk,
            "tick_id": tick.pk,
            "outcome": outcome,
            "run_id": run.pk if run is not None else None,
            "reason": reason[:500],
        },
    )
    return tick


# --- comparison ----------------------------------------------------------------


def processor_of(environment: dict) -> dict[str, Any]:
    """The processor model, its signature (family, model and stepping: a cloud
    guest's model name may be masked) and the instruction-set features a run
    recorded."""
    cpu = processor(environment)
    return {
        "cpu_model": cpu["model"],
        "cpu_signature": cpu["signature"],
        "isa_features": cpu["flags"],
    }


def _quality_metrics(run: EvaluationRun) -> dict[str, float]:
    """``task.metric`` → value, without the timing and energy figures."""
    return {
        f"{m.task}.{m.name}": m.value
        for m in run.metrics.all()
        if m.name not in PERFORMANCE_METRICS
    }


def _baseline(run: EvaluationRun) -> EvaluationRun | None:
    """The version's previous succeeded run on the same suite."""
    return (
        EvaluationRun.objects.filter(
            model_version_id=run.model_version_id,
            suite_id=run.suite_id,
            status=RunStatus.SUCCEEDED,
            pk__lt=run.pk,
        )
        .prefetch_related("metrics")
        .order_by("-pk")
        .first()
    )


def _differences(
    now: dict[str, float], then: dict[str, float], *, rtol: float
) -> list[dict[str, Any]]:
    """The metrics that differ beyond ``rtol`` (0: any difference), or are missing."""
    found = []
    for name in sorted(set(now) | set(then)):
        new, old = now.get(name), then.get(name)
        if new is None or old is None:
            found.append({"metric": name, "value": new, "baseline": old})
        elif new != old and not math.isclose(new, old, rel_tol=rtol, abs_tol=0.0):
            relative = abs(new - old) / max(abs(new), abs(old))
            found.append(
                {"metric": name, "value": new, "baseline": old, "relative": relative}
            )
    return found


def compare_runs(run: EvaluationRun, baseline: EvaluationRun | None) -> dict[str, Any]:
    """How ``run`` compares with ``baseline``: the verdict and its evidence."""
    mine = processor_of(run.environment or {})
    detail: dict[str, Any] = {"processor": mine}
    if baseline is None:
        return {"comparison": Comparison.NO_BASELINE, "detail": detail}
    theirs = processor_of(baseline.environment or {})
    detail["baseline_processor"] = theirs
    if (run.artifact_digest, run.engine_version) != (
        baseline.artifact_digest,
        baseline.engine_version,
    ):
        detail["engine_versions"] = [baseline.engine_version, run.engine_version]
        return {"comparison": Comparison.ENGINE_CHANGED, "detail": detail}
    same_isa = mine["isa_features"] == theirs["isa_features"]
    rtol = 0.0 if same_isa else settings.CIVITAS_REPRODUCIBILITY_RTOL
    differences = _differences(
        _quality_metrics(run), _quality_metrics(baseline), rtol=rtol
    )
    detail.update(rtol=rtol, same_isa_features=same_isa, differences=differences)
    if differences:
        verdict = Comparison.REPRODUCIBILITY_FAILED
    else:
        verdict = Comparison.IDENTICAL if same_isa else Comparison.WITHIN_TOLERANCE
    return {"comparison": verdict, "detail": detail}


def _outside(bounds: dict[str, Any], value: float | None) -> bool:
    if value is None:
        return False
    return ("min" in bounds and value < bounds["min"]) or (
        "max" in bounds and value > bounds["max"]
    )


def regressions_of(
    run: EvaluationRun, baseline: EvaluationRun
) -> list[tuple[PolicyResult, dict[str, Any]]]:
    """The policy bounds the run's metrics crossed, from within them at baseline.

    Read from the newest policy result of each live use case of the version
    that relied on ``run`` (the evaluation's own policy check).
    """
    before = {f"{m.task}.{m.name}": m.value for m in baseline.metrics.all()}
    found = []
    use_cases = UseCase.objects.filter(model_version_id=run.model_version_id).exclude(
        status__in=[UseCaseStatus.RETIRED, UseCaseStatus.REJECTED]
    )
    for use_case in use_cases.order_by("pk"):
        result = PolicyResult.objects.filter(use_case=use_case).order_by("-pk").first()
        if result is None:
            continue
        for outcome in result.outcomes:
            evidence = outcome.get("evidence") or {}
            if (
                outcome.get("kind") != "required_evaluation"
                or outcome.get("status") != RuleStatus.FAILED
                or evidence.get("run_id") != run.pk
                or evidence.get("stale")
                or not _outside(evidence, evidence.get("value"))
                or _outside(evidence, before.get(evidence.get("metric")))
                or before.get(evidence.get("metric")) is None
            ):
                continue
            found.append(
                (
                    result,
                    {
                        "use_case_id": use_case.pk,
                        "policy_result_id": result.pk,
                        "rule": f"{outcome.get('policy')}/{outcome.get('rule_id')}",
                        "metric": evidence["metric"],
                        "value": evidence["value"],
                        "baseline": before[evidence["metric"]],
                        **{k: evidence[k] for k in ("min", "max") if k in evidence},
                    },
                )
            )
    return found


def _record_regressions(tick: ScheduleTick, run, baseline, agency) -> list[dict]:
    found = regressions_of(run, baseline)
    for result, regression in found:
        audit.record(
            actor=None,
            action="evaluation.regression",
            obj=run,
            agency=agency,
            payload={"run_id": run.pk, "baseline_run_id": baseline.pk, **regression},
        )
        # The use case goes back to review through the usual re-check.
        use_case_recheck_enqueue(result=result)
    return [regression for _, regression in found]


@transaction.atomic
def schedule_settle(*, tick_id: int) -> str:
    """Compare a tick's finished run with its baseline; the comparison recorded.

    Safe to run twice: only a ``pending`` tick whose run finished is
    settled, under its row lock. A failed or cancelled run is
    ``not_compared``. Records ``evaluation.reproducibility_failed`` for a
    difference beyond the tolerance, else one ``evaluation.regression`` per
    policy bound crossed (and queues the use case's re-check).
    """
    tick = (
        ScheduleTick.objects.select_for_update(of=("self",))
        .select_related("run__model_version__model__agency")
        .get(pk=tick_id)
    )
    run = tick.run
    if tick.comparison != Comparison.PENDING or run is None:
        return tick.comparison
    if run.status in (RunStatus.QUEUED, RunStatus.RUNNING):
        return tick.comparison
    agency = run.model_version.model.agency
    if run.status != RunStatus.SUCCEEDED:
        verdict: dict[str, Any] = {"comparison": Comparison.NOT_COMPARED, "detail": {}}
        baseline = None
    else:
        baseline = _baseline(run)
        verdict = compare_runs(run, baseline)
    if verdict["comparison"] == Comparison.REPRODUCIBILITY_FAILED:
        audit.record(
            actor=None,
            action="evaluation.reproducibility_failed",
            obj=run,
            agency=agency,
            payload={
                "run_id": run.pk,
                "baseline_run_id": baseline.pk,
                **verdict["detail"],
            },
        )
    elif baseline is not None:
        verdict["detail"]["regressions"] = _record_regressions(
            tick, run, baseline, agency
        )
    ScheduleTick.objects.filter(pk=tick.pk).update(
        comparison=verdict["comparison"],
        baseline_run=baseline,
        detail=verdict["detail"],
        compared_at=timezone.now(),
    )
    return verdict["comparison"]


def schedules_settle() -> dict[str, int]:
    """Settle every pending tick whose run has finished; counts by comparison.

    Run by the ``civitas.schedule_settle`` periodic task, each tick in its
    own transaction.
    """
    pending = ScheduleTick.objects.filter(
        comparison=Comparison.PENDING,
        run__status__in=[RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED],
    ).values_list("pk", flat=True)
    counts: dict[str, int] = {}
    for tick_id in list(pending):
        verdict = schedule_settle(tick_id=tick_id)
        counts[verdict] = counts.get(verdict, 0) + 1
    return counts
