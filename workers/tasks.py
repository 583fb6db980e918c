"""Celery tasks: thin, idempotent, arguments are ids and JSON only.

Each task has an explicit ``name`` so queued messages survive a refactor.
"""

from __future__ import annotations

import os
import socket

import structlog
from celery import shared_task
from django.db import InterfaceError, OperationalError


@shared_task(name="civitas.ping", acks_late=True, ignore_result=False)
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


@shared_task(
    name="civitas.evaluation_run",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    retry_jitter=True,
    max_retries=3,
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


@shared_task(name="civitas.evaluation_sweep", acks_late=True)
def evaluation_sweep() -> dict:
    """Re-queue runs whose message was lost; fail runs whose worker died."""
    from governance.services import evaluations

    return evaluations.evaluation_sweep()


@shared_task(name="civitas.audit_checkpoint", acks_late=True)
def audit_checkpoint() -> int | None:
    """Sign the head of the audit chain; None when nothing was appended since.

    Scheduled every ``AUDIT_CHECKPOINT_MINUTES`` by celery beat. A broken
    chain raises ``AuditChainBroken`` and the task fails loudly, unretried:
    signing over tampered history is exactly what must not happen.
    """
    from governance import audit

    checkpoint = audit.checkpoint_create()
    return checkpoint.seq if checkpoint is not None else None


@shared_task(
    name="civitas.artifact_verify",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    retry_jitter=True,
    max_retries=5,
    # Copying and unpacking an 8 GiB bundle takes minutes, not hours.
    soft_time_limit=3600,
    time_limit=3660,
)
def artifact_verify(version_id: int) -> str:
    """Fetch, hash and inspect a referenced model artifact; release or fail it.

    Safe to run twice (the service only changes a row still pending on the
    same reference). Retries only on a lost database connection.
    """
    from registry import artifacts

    return artifacts.artifact_verify(version_id=version_id)


@shared_task(name="civitas.usecase_expire", acks_late=True)
def usecase_expire() -> int:
    """Expire the use cases whose approval has ended; the count expired.

    Scheduled by celery beat. Safe to run twice: each use case is expired
    under its row lock only if still approved or suspended and past its end.
    """
    from governance.services import approvals

    return approvals.use_case_expire_due()


@shared_task(
    name="civitas.usecase_recheck",
    acks_late=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    max_retries=5,
)
def usecase_recheck(policy_result_id: int) -> bool:
    """Return an approved use case to review if its newest policy result fails.

    Queued on commit after an evaluation-triggered policy check failed;
    safe to run twice (a use case no longer approved is left alone).
    """
    from governance.models import PolicyResult
    from governance.services import approvals

    result = PolicyResult.objects.select_related("use_case").get(pk=policy_result_id)
    return approvals.use_case_recheck(use_case=result.use_case, result=result)


@shared_task(name="civitas.usecase_recheck_stale", acks_late=True)
def usecase_recheck_stale() -> int:
    """Re-check approved use cases whose evaluation evidence has gone stale."""
    from governance.services import approvals

    return approvals.use_case_recheck_stale()


@shared_task(name="civitas.artifact_sweep", acks_late=True)
def artifact_sweep() -> dict:
    """Re-queue verification of referenced artifacts whose message was lost."""
    from registry import artifacts

    return artifacts.artifact_sweep()


@shared_task(
    name="civitas.dataset_file_verify",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    retry_jitter=True,
    max_retries=5,
    soft_time_limit=3600,
    time_limit=3660,
)
def dataset_file_verify(dataset_version_id: int) -> str:
    """Fetch and hash a referenced dataset file; store it or fail the version.

    Safe to run twice (the service only changes a row still pending on the
    same reference). Retries only on a lost database connection.
    """
    from registry import artifacts

    return artifacts.dataset_file_verify(dataset_version_id=dataset_version_id)
