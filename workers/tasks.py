"""Celery tasks: thin, idempotent, arguments are ids and JSON only.

Each task has an explicit ``name`` so queued messages survive a refactor.
Every task acknowledges late (a task lost with its worker runs again); the
retry policy is declared once, ``RETRY_ON_LOST_DATABASE``, and a task that
takes it retries only when its database connection was lost: the services'
refusals and the engine's failures are final.
"""

from __future__ import annotations

import os
import socket

import structlog
from celery import shared_task
from celery.signals import worker_ready
from django.db import InterfaceError, OperationalError

# The one retry policy: exponential backoff with jitter on a lost connection.
RETRY_ON_LOST_DATABASE = {
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": True,
    "retry_jitter": True,
    "max_retries": 5,
}
# Copying and unpacking an 8 GiB bundle takes minutes, not hours.
ARTIFACT_TIME_LIMITS = {"soft_time_limit": 3600, "time_limit": 3660}


def _task(name: str, *, retried: bool = False, **options):
    """``shared_task`` with the house policy: late acks, and the retry policy."""
    policy = {"acks_late": True, **(RETRY_ON_LOST_DATABASE if retried else {})}
    return shared_task(name=name, **{**policy, **options})


@_task("civitas.ping", ignore_result=False)
def ping() -> dict:
    """Answer with the worker's identity and the request id it inherited.

    Used by the worker round-trip check and by the tests that prove a task
    queued by the web process runs in a separate worker process.
    """
    context = structlog.contextvars.get_contextvars()
    return {
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "request_id": context.get("request_id"),
    }


@_task(
    "civitas.evaluation_run", retried=True, reject_on_worker_lost=True, max_retries=3
)
def evaluation_run(run_id: int) -> str | None:
    """Execute one queued evaluation; a finished or claimed run is left alone.

    Retries only on a lost database connection; the engine's refusals and
    crashes are final and end the run ``failed``. Time limits come from
    ``CELERY_TASK_ANNOTATIONS`` in the settings.
    """
    from governance.services import evaluations

    run = evaluations.evaluation_execute(run_id=run_id)
    return run.status if run is not None else None


@_task("civitas.evaluation_sweep")
def evaluation_sweep() -> dict:
    """Queue again runs whose message was lost or whose worker stopped beating.

    Beat runs it every ``CIVITAS_EVAL_SWEEP_SECONDS`` on the housekeeping
    queue (``CELERY_TASK_ROUTES``), never behind an evaluation.
    """
    from governance.services import evaluations

    return evaluations.evaluation_sweep()


@_task("civitas.evaluation_scratch_sweep")
def evaluation_scratch_sweep() -> dict:
    """Remove the scratch folders of evaluations whose worker was killed."""
    from governance.services import evaluations

    return evaluations.evaluation_scratch_sweep()


@_task("civitas.audit_checkpoint")
def audit_checkpoint(when: str = "due") -> int | None:
    """Sign the head of the audit chain; None when nothing is to be signed.

    ``when="due"`` (beat, every minute) signs only if a checkpoint is due
    (``AUDIT_CHECKPOINT_EVENTS`` or ``AUDIT_CHECKPOINT_MINUTES``); ``"now"``
    (a worker starting, an append crossing the event count) signs any unsigned
    events. Safe to run twice at once. A broken chain raises
    ``AuditChainBroken`` and the task fails loudly, unretried: signing over
    tampered history is exactly what must not happen.
    """
    from audit import services as audit

    if when == "now":
        checkpoint = audit.checkpoint_create()
    else:
        checkpoint = audit.checkpoint_if_due()
    return checkpoint.seq if checkpoint is not None else None


@_task("civitas.audit_sequence_sweep")
def audit_sequence_sweep() -> int:
    """Chain queued audit events whose writer died before its own pass; how many.

    Beat runs it every minute on the housekeeping queue. Safe to run twice
    at once: passes take turns on an advisory lock.
    """
    from audit import services as audit

    return audit.sequence_pending()


@worker_ready.connect
def _checkpoint_at_start(sender=None, **kwargs) -> None:
    """A starting worker queues a checkpoint of any unsigned events for itself.

    Queued on the worker's own first queue, so the worker that starts is the
    one that signs, even where beat runs elsewhere or not yet.
    """
    queues = [queue.name for queue in getattr(sender.task_consumer, "queues", [])]
    audit_checkpoint.apply_async(
        kwargs={"when": "now"}, queue=queues[0] if queues else None, expires=3600
    )


@_task("civitas.evaluation_recover")
def evaluation_recover() -> int:
    """Run again what a killed worker on this host left ``running``."""
    from governance.services import evaluations

    return evaluations.evaluation_recover_lost()


@worker_ready.connect
def _recover_evaluations_at_start(sender=None, **kwargs) -> None:
    """A starting worker re-queues the runs a dead worker on its host left running.

    The embedded broker never redelivers a message whose worker was killed, so
    the database row decides; queued on the worker's own first queue.
    """
    queues = [queue.name for queue in getattr(sender.task_consumer, "queues", [])]
    evaluation_recover.apply_async(queue=queues[0] if queues else None, expires=3600)


@_task(
    "civitas.artifact_verify",
    retried=True,
    reject_on_worker_lost=True,
    **ARTIFACT_TIME_LIMITS,
)
def artifact_verify(version_id: int) -> str:
    """Fetch, hash and inspect a referenced model artifact; release or fail it.

    Safe to run twice (the service only changes a row still pending on the
    same reference). Retries only on a lost database connection.
    """
    from registry.services import artifacts

    return artifacts.artifact_verify(version_id=version_id)


@_task("civitas.usecase_expire")
def usecase_expire() -> int:
    """Expire the use cases whose approval has ended; the count expired.

    Scheduled by celery beat. Safe to run twice: each use case is expired
    under its row lock only if still approved or suspended and past its end.
    """
    from governance.services import approvals

    return approvals.use_case_expire_due()


@_task("civitas.usecase_recheck", retried=True)
def usecase_recheck(policy_result_id: int) -> bool:
    """Return an approved use case to review if its newest policy result fails.

    Queued on commit after an evaluation-triggered policy check failed;
    safe to run twice (a use case no longer approved is left alone).
    """
    from governance.models import PolicyResult
    from governance.services import approvals

    result = PolicyResult.objects.select_related("use_case").get(pk=policy_result_id)
    return approvals.use_case_recheck(use_case=result.use_case, result=result)


@_task("civitas.usecase_recheck_stale")
def usecase_recheck_stale() -> int:
    """Re-check approved use cases whose evaluation evidence has gone stale."""
    from governance.services import approvals

    return approvals.use_case_recheck_stale()


@_task("civitas.artifact_sweep")
def artifact_sweep() -> dict:
    """Re-queue verification of referenced artifacts whose message was lost.

    Derivations of quantised versions whose message was lost are queued
    again in the same pass (``governance.services.derivations``).
    """
    from governance.services import derivations
    from registry.services import artifacts

    swept = artifacts.artifact_sweep()
    derived = derivations.model_version_derive_sweep()
    return {**swept, "derivations_requeued": derived["requeued"]}


@_task(
    "civitas.dataset_file_verify",
    retried=True,
    reject_on_worker_lost=True,
    **ARTIFACT_TIME_LIMITS,
)
def dataset_file_verify(dataset_version_id: int) -> str:
    """Fetch and hash a referenced dataset file; store it or fail the version.

    Safe to run twice (the service only changes a row still pending on the
    same reference). Retries only on a lost database connection.
    """
    from registry.services import artifacts

    return artifacts.dataset_file_verify(dataset_version_id=dataset_version_id)


# --- Notifications ---------------------------------------------------------------


@_task("civitas.webhook_deliver", retried=True)
def webhook_deliver(delivery_id: int) -> str | None:
    """Make one signed attempt at a webhook delivery; queue the next if it failed.

    The service owns the backoff (the row's ``next_attempt_at``); this task
    queues the next attempt with that countdown. A duplicate message finds the
    row claimed or not yet due and does nothing.
    """
    from notifications import services

    delay = services.delivery_attempt(delivery_id=delivery_id)
    if delay is not None:
        webhook_deliver.apply_async(
            kwargs={"delivery_id": delivery_id}, countdown=delay
        )
        return "retry"
    return None


@_task("civitas.webhook_sweep")
def webhook_sweep() -> dict:
    """Re-queue webhook deliveries whose message was lost or whose worker died."""
    from notifications import services

    return services.delivery_sweep()


@_task("civitas.notification_email", retried=True)
def notification_email(event_seq: int) -> int:
    """E-mail the people concerned by one audit event (once per event)."""
    from notifications import mail

    return mail.notification_email_send(event_seq=event_seq)


# --- Evaluation schedules and digest re-verification ---------------------------
# No queue here: the routing (CELERY_TASK_ROUTES) decides where they run.


@_task("civitas.schedule_tick")
def schedule_tick(schedule_id: int) -> str | None:
    """Queue a schedule's evaluation unless it is busy or its slot already ran.

    Fired by celery beat (django-celery-beat's ``PeriodicTask``). Safe to
    run twice and at once: the schedule row is locked and the slot checked.
    Not retried: a tick lost to the database is made up by the next slot.
    """
    from governance.services import schedules

    tick = schedules.schedule_tick(schedule_id=schedule_id)
    return tick.outcome if tick is not None else None


@_task("civitas.schedule_settle")
def schedule_settle() -> dict:
    """Compare finished scheduled runs with their baseline; audit what differs."""
    from governance.services import schedules

    return schedules.schedules_settle()


@_task("civitas.artifact_digest_sweep", **ARTIFACT_TIME_LIMITS)
def artifact_digest_sweep() -> dict:
    """Hash every stored artifact again; suspend what no longer matches."""
    from governance.services import digests

    return digests.artifact_digest_sweep()


@_task("civitas.schedule_settle_run")
def schedule_settle_run(tick_id: int) -> str:
    """Compare one scheduled run with its baseline, linked to its evaluation."""
    from governance.services import schedules

    return schedules.schedule_settle(tick_id=tick_id)


@_task("civitas.token_purge")
def token_purge() -> int:
    """Delete expired API tokens (beat, hourly). Safe to run twice."""
    from config.authentication import expired_tokens_purge

    return expired_tokens_purge()


@_task("civitas.idempotency_purge")
def idempotency_purge() -> int:
    """Delete expired Idempotency-Key answers (beat, hourly). Safe to run twice."""
    from idempotency import services

    return services.purge_expired()


@_task("civitas.mlflow_outbox_deliver")
def mlflow_outbox_deliver() -> dict:
    """Deliver what MLflow is owed, oldest first; the counts delivered and failed.

    Queued on commit by every change that owes MLflow something and swept
    by celery beat every minute. Safe to run twice at once (each message is
    claimed with a conditional update and found again in MLflow by its key).
    A pass stops at the first failure or after ``MLFLOW_OUTBOX_PASS_SECONDS``,
    and each MLflow call is bounded by ``MLFLOW_HTTP_REQUEST_*``, so it never
    holds a worker slot for long. Not retried: what a pass leaves, the next
    one (at most a minute later) takes.
    """
    from governance.services import outbox

    return outbox.outbox_deliver()


@_task(
    "civitas.modification_assess",
    retried=True,
    reject_on_worker_lost=True,
    **ARTIFACT_TIME_LIMITS,
)
def modification_assess(version_id: int) -> str | None:
    """Compare a released derived version with its base (evaluation queue).

    Queued on commit when a version naming a base is released. Safe to run
    twice: an assessment of the same pair of digests is kept as it is.
    """
    from governance.services import modifications

    assessment = modifications.modification_assess(version_id=version_id)
    return assessment.primary or assessment.status if assessment else None


@_task(
    "civitas.model_version_derive",
    retried=True,
    reject_on_worker_lost=True,
    **ARTIFACT_TIME_LIMITS,
)
def model_version_derive(version_id: int) -> str:
    """Derive a pending quantised version in the sandbox; release or fail it.

    Runs on the default (evaluation) queue. Safe to run twice (only a version
    still pending with no artifact is touched). Retries only on a lost
    database connection; the engine's refusals are final.
    """
    from governance.services import derivations

    return derivations.model_version_derive_execute(version_id=version_id)


@_task("civitas.upload_cleanup")
def upload_cleanup() -> dict:
    """Remove expired resumable uploads and their staging files."""
    from registry.services import uploads

    return uploads.upload_session_cleanup()
