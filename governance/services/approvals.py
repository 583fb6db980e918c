"""What keeps an approval in force: its expiry and the re-checks of its evidence.

The platform's own moves on approved use cases (no actor), and the
evaluation schedules that keep their evidence fresh
(``use_case_schedules_sync``).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from audit import services as audit
from config.exceptions import DomainError
from governance.models import (
    Decision,
    EvaluationRun,
    EvaluationSchedule,
    EvaluationSuite,
    PolicyResult,
    PolicyTrigger,
    RuleStatus,
    ScheduleOrigin,
    UseCase,
)
from governance.selectors import (
    approval_in_force,
    evidence_fresh_until,
    failed_rule_ids,
    latest_policy_result,
    latest_submission,
    waiver_uncovered_rules,
)
from governance.services.lifecycle import TRANSITIONS, S, _lock, _move
from governance.services.policies import policy_evaluate
from governance.services.schedules import schedule_create, schedule_update
from registry.selectors import user_agency_id

logger = logging.getLogger(__name__)


@transaction.atomic
def use_case_expire(*, use_case: UseCase, now: datetime | None = None) -> bool:
    """Expire an approved or suspended use case whose approval has ended.

    The platform acts (no actor). True if it expired now; False when the
    approval in force still runs at ``now`` or the status moved meanwhile
    (safe to call twice). Records ``use_case.expired``.
    """
    now = now or timezone.now()
    locked = _lock(use_case)
    if locked.status not in TRANSITIONS["expire"][0]:
        return False
    approval = approval_in_force(locked)
    if approval is None or approval.expires_at > now:
        return False
    from_status = locked.status
    _move(
        locked,
        to_status=S.EXPIRED,
        actor=None,
        now=now,
        reason=f"The approval given by decision {approval.pk} ended at "
        f"{approval.expires_at.isoformat()}.",
    )
    audit.record(
        actor=None,
        action="use_case.expired",
        obj=locked,
        agency=locked.agency,
        payload={
            "use_case_id": locked.pk,
            "from": from_status,
            "to": S.EXPIRED,
            "decision_id": approval.pk,
            "expires_at": approval.expires_at,
        },
    )
    use_case_schedules_sync(use_case=locked, now=now)
    return True


def use_case_expire_due(*, now: datetime | None = None) -> int:
    """Expire every use case whose approval ended by ``now``; the count expired.

    Each in its own transaction, so one failure leaves the others done. Run
    by the ``civitas.usecase_expire`` periodic task.
    """
    now = now or timezone.now()
    ends = (
        Decision.objects.filter(use_case=OuterRef("pk"), expires_at__isnull=False)
        .order_by("-decided_at", "-id")
        .values("expires_at")[:1]
    )
    due = (
        UseCase.objects.filter(status__in=TRANSITIONS["expire"][0])
        .annotate(approval_ends=Subquery(ends))
        .filter(approval_ends__lte=now)
        .values_list("pk", flat=True)
    )
    return sum(use_case_expire(use_case=UseCase(pk=pk), now=now) for pk in list(due))


def _return_to_review(
    locked: UseCase,
    *,
    result: PolicyResult,
    failed: list[str],
    now: datetime,
    notes: dict[str, str] | None = None,
) -> None:
    """Move a locked approved use case back to review because ``result`` failed.

    ``notes`` adds a sentence to a failed rule's message (a lapsed waiver).
    """
    notes = notes or {}
    messages = {
        f"{o['policy']}/{o['rule_id']}": o["message"]
        for o in result.outcomes
        if o["status"] == RuleStatus.FAILED
    }
    reason = f"Policy result {result.pk} failed: " + " ".join(
        " ".join(filter(None, (f"{rule}: {messages.get(rule, '')}", notes.get(rule))))
        for rule in failed
    )
    transition = _move(
        locked,
        to_status=S.IN_REVIEW,
        actor=None,
        now=now,
        reason=reason,
        submission=latest_submission(locked),
    )
    audit.record(
        actor=None,
        action="use_case.returned_to_review",
        obj=locked,
        agency=locked.agency,
        payload={
            "use_case_id": locked.pk,
            "from": S.APPROVED,
            "to": S.IN_REVIEW,
            "policy_result_id": result.pk,
            "trigger": result.trigger,
            "failed": failed,
            "reason": reason[:4000],
            "review_round_id": transition.pk,
        },
    )


@transaction.atomic
def use_case_recheck(*, use_case: UseCase, result: PolicyResult) -> bool:
    """Return an approved use case to review when its newest policy result fails.

    The newest result of the use case counts (``result`` or a later one).
    Rules waived by the approval in force do not count while their measured
    value is no worse than the waived one (``waiver_uncovered_rules``), on this
    result or a later one; any other failed rule (stale evidence, a
    regression below a bound, a licence that no longer fits) moves the use
    case to ``in_review``, opening a new review round, and records
    ``use_case.returned_to_review`` with the reason (naming the waived and
    the new value when a waived rule got worse). True if it moved; False
    when not approved or nothing unwaived failed. Safe to call twice.
    """
    locked = _lock(use_case)
    if locked.status != S.APPROVED:
        return False
    latest = latest_policy_result(locked) or result
    if latest.passed:
        return False
    approval = approval_in_force(locked)
    failed, notes = waiver_uncovered_rules(
        approval.waiver if approval is not None else None,
        result=latest,
        failed=failed_rule_ids(latest),
    )
    if not failed:
        return False
    _return_to_review(
        locked, result=latest, failed=failed, now=timezone.now(), notes=notes
    )
    return True


def use_case_recheck_stale(*, now: datetime | None = None) -> int:
    """Re-check approved use cases whose evidence outgrew its freshness limit.

    For each approved use case whose newest policy result relied on a run
    that is now older than its rule allows, the policy engine runs again
    (trigger ``on_demand``, by the platform) and ``use_case_recheck`` acts
    on the verdict, in one transaction per use case with the use case
    locked first. Returns how many went back to review. Run by the
    ``civitas.usecase_recheck_stale`` periodic task.
    """
    now = now or timezone.now()
    returned = 0
    approved = UseCase.objects.filter(status=S.APPROVED).order_by("pk")
    for use_case in approved.iterator():
        fresh_until = evidence_fresh_until(latest_policy_result(use_case))
        if fresh_until is None or fresh_until > now:
            continue
        with transaction.atomic():
            locked = _lock(use_case)
            if locked.status != S.APPROVED:
                continue
            result = policy_evaluate(
                use_case=locked, trigger=PolicyTrigger.ON_DEMAND, actor=None
            )
            returned += use_case_recheck(use_case=locked, result=result)
    return returned


# --- schedules that keep evidence fresh ------------------------------------------

# A freshness limit of N days is met by a run every N / 2 days (at least hourly).
FRESHNESS_SAFETY = 2
MIN_FRESH_INTERVAL_SECONDS = 3600


def _needed_suites(use_case: UseCase, now: datetime) -> dict[int, tuple[int, Any]]:
    """Suite id → (interval in s, owner) the approval in force of ``use_case`` needs.

    From the ``required_evaluation`` rules with a ``max_age_days`` in the
    policy result the approval relied on; empty when the approval ended or
    the use case did. The owner, who requests the scheduled runs, is the
    person who requested the evidence run (already barred by the four-eyes
    rules from submitting what relies on it), else the use case's author.
    """
    approval = approval_in_force(use_case)
    if (
        approval is None
        or approval.expires_at <= now
        or use_case.status not in TRANSITIONS["expire"][0] | {S.IN_REVIEW}
    ):
        return {}
    result = approval.policy_result or latest_policy_result(use_case)
    needed: dict[int, tuple[int, Any]] = {}
    for outcome in result.outcomes if result is not None else []:
        evidence = outcome.get("evidence") or {}
        if (
            outcome.get("kind") != "required_evaluation"
            or outcome.get("status") == RuleStatus.NOT_APPLICABLE
            or not evidence.get("max_age_days")
        ):
            continue
        suite_id, requester = _suite_of(evidence)
        if suite_id is None:
            continue
        interval = max(
            int(evidence["max_age_days"] * 86400 / FRESHNESS_SAFETY),
            MIN_FRESH_INTERVAL_SECONDS,
        )
        if requester is None or user_agency_id(requester) != use_case.agency_id:
            requester = use_case.created_by
        if suite_id not in needed or interval < needed[suite_id][0]:
            needed[suite_id] = (interval, requester)
    return needed


def _suite_of(evidence: dict) -> tuple[int | None, Any]:
    """The suite a rule's evidence measured and who asked for that run.

    Without a run: the newest suite of the name the rule names, no one.
    """
    if evidence.get("run_id"):
        run = (
            EvaluationRun.objects.select_related("requested_by")
            .filter(pk=evidence["run_id"])
            .first()
        )
        if run is not None:
            return run.suite_id, run.requested_by
    name, _, version = str(evidence.get("suite", "")).partition("@")
    suites = EvaluationSuite.objects.filter(name=name)
    if version:
        suites = suites.filter(version=version)
    return suites.order_by("-created_at").values_list("pk", flat=True).first(), None


@transaction.atomic
def use_case_schedules_sync(
    *, use_case: UseCase, now: datetime | None = None
) -> list[EvaluationSchedule]:
    """Keep the policy schedules of a use case's version in step with its approvals.

    Called when a decision or the platform moves a use case. Every use case
    of the version whose approval still runs contributes the suites its
    freshness limits need (``_needed_suites``); each gets one enabled
    ``origin=policy`` schedule, created (runs requested by the owner
    ``_needed_suites`` names) or re-timed, and the version's other policy schedules are
    switched off. The platform acts (no actor); each change is audited by
    the schedule services. Returns the enabled policy schedules.
    """
    now = now or timezone.now()
    version = use_case.model_version
    needed: dict[int, tuple[int, Any]] = {}
    siblings = UseCase.objects.filter(model_version_id=version.pk).select_related(
        "created_by"
    )
    for sibling in siblings.order_by("pk"):
        for suite_id, (interval, owner) in _needed_suites(sibling, now).items():
            if suite_id not in needed or interval < needed[suite_id][0]:
                needed[suite_id] = (interval, owner)
    existing = {
        s.suite_id: s
        for s in EvaluationSchedule.objects.filter(
            model_version_id=version.pk, origin=ScheduleOrigin.POLICY
        ).select_related("suite")
    }
    enabled = []
    for suite_id, (interval, owner) in needed.items():
        schedule = existing.get(suite_id)
        if schedule is None:
            try:
                with transaction.atomic():
                    schedule = schedule_create(
                        actor=None,
                        model_version=version,
                        suite=EvaluationSuite.objects.get(pk=suite_id),
                        interval_seconds=interval,
                        origin=ScheduleOrigin.POLICY,
                        owner=owner,
                    )
            except DomainError as exc:
                # A schedule that cannot be made never undoes the decision;
                # the stale-evidence re-check still guards the approval.
                logger.warning(
                    "fresh_evidence_schedule_refused",
                    extra={
                        "version_id": version.pk,
                        "suite_id": suite_id,
                        "code": exc.code,
                    },
                )
                continue
        elif not schedule.is_enabled or schedule.interval_seconds != interval:
            schedule = schedule_update(
                actor=None,
                schedule=schedule,
                interval_seconds=interval,
                is_enabled=True,
            )
        enabled.append(schedule)
    for suite_id, schedule in existing.items():
        if suite_id not in needed and schedule.is_enabled:
            schedule_update(actor=None, schedule=schedule, is_enabled=False)
    return enabled
