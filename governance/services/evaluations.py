"""Governed writes of the governance app: evaluation runs and their lifecycle.

The database row is the source of truth for an evaluation, not the broker: a
run is written ``queued`` and its task is queued on commit; the worker claims
it with a conditional update, so a duplicate or late delivery changes
nothing; the sweeper finds runs whose message was lost or whose worker died.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.db import DatabaseError, connections, transaction
from django.db.models import F, Q
from django.utils import timezone

from audit import services as audit
from config.celery import send_on_commit
from config.exceptions import Conflict, DomainError
from governance import tracking
from governance.models import (
    EvaluationRun,
    EvaluationSuite,
    OutboxKind,
    RunMetric,
    RunStatus,
)
from governance.services.attestations import attestation_for_run
from governance.services.bundle_cache import prepared_bundle
from governance.services.outbox import (
    dataset_ref,
    evaluation_outbox_key,
    outbox_enqueue,
)
from governance.services.policies import policy_evaluate_for_version
from registry.models import ArtifactState, DatasetVersion, ModelVersion
from registry.selectors import is_oversight, user_agency_id
from registry.services.releases import refuse_failed_derivation
from registry.storage import copy_verified

logger = logging.getLogger(__name__)

FINISHED = {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}


@transaction.atomic
def evaluation_request(
    *, actor, model_version: ModelVersion, suite: EvaluationSuite, enqueue: bool = True
) -> EvaluationRun:
    """Ask for an evaluation of a released version on a suite.

    The owning agency's people and oversight reviewers may ask. Raises
    ``Conflict`` when the artifact is not verified and ``DomainError`` when
    the suite's tasks do not fit the model's kind. The task is queued on
    commit, so a rolled-back request queues nothing; ``enqueue=False`` leaves
    the run for a foreground ``evaluation_execute`` (the ``evaluate`` command).
    """
    owner = model_version.model.agency_id
    if not (is_oversight(actor) or user_agency_id(actor) == owner):
        raise DomainError(
            "Only the owning agency or an oversight reviewer may ask for an "
            "evaluation of this version.",
            code="not_allowed",
        )
    if not EvaluationSuite.objects.visible_to(actor).filter(pk=suite.pk).exists():
        # Another agency's private suite: as if it did not exist.
        raise DomainError(
            f"No suite '{suite.name}' is available.",
            code="does_not_exist",
            fields={"suite": [{"code": "does_not_exist", "message": "No such suite."}]},
        )
    refuse_failed_derivation(model_version, "evaluated")
    if model_version.artifact_state != ArtifactState.AVAILABLE:
        raise Conflict(
            "The version has no verified artifact yet; upload or verify it first.",
            code="artifact_not_available",
        )
    reason = suite.unsupported_reason(model_version.kind)
    if reason:
        raise DomainError(
            f"Suite {suite} does not apply: {reason}.",
            code="suite_not_applicable",
            fields={"suite": [{"code": "suite_not_applicable", "message": reason}]},
        )
    run = EvaluationRun.objects.create(
        model_version=model_version,
        suite=suite,
        requested_by=actor,
        artifact_digest=model_version.artifact_digest,
    )
    audit.record(
        actor=actor,
        action="evaluation.requested",
        obj=run,
        agency=model_version.model.agency,
        payload={
            "model_version_id": model_version.pk,
            "suite": f"{suite.name}@{suite.version}",
            "artifact_sha256": model_version.artifact_digest,
        },
    )
    if enqueue:
        _enqueue_on_commit(run.pk)
    return run


def _enqueue_on_commit(run_id: int) -> None:
    send_on_commit("civitas.evaluation_run", run_id=run_id)


@transaction.atomic
def evaluation_cancel(*, actor, run: EvaluationRun) -> EvaluationRun:
    """Cancel a queued or running evaluation; a finished one is left as it is.

    The row is the truth: the worker running the evaluation asks for the
    run's status every ``CIVITAS_EVAL_CANCEL_POLL_SECONDS`` while the child
    runs, and kills the child's process group (and removes its scratch
    folder) as soon as the run is no longer ``running``; a result that
    arrives anyway is discarded, because the worker only records results on
    a ``running`` row. Raises ``Conflict`` for a finished run.
    """
    changed = EvaluationRun.objects.filter(
        pk=run.pk, status__in=[RunStatus.QUEUED, RunStatus.RUNNING]
    ).update(status=RunStatus.CANCELLED, finished_at=timezone.now())
    if not changed:
        raise Conflict(
            f"The evaluation is already {run.status}.", code="evaluation_finished"
        )
    run.refresh_from_db()
    audit.record(
        actor=actor,
        action="evaluation.cancelled",
        obj=run,
        agency=run.model_version.model.agency,
        payload={"run_id": run.pk},
    )
    return run


def _worker_label() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _fail(
    run_id: int,
    *,
    code: str,
    message: str,
    from_status=RunStatus.RUNNING,
    track: bool = False,
    worker: str | None = None,
):
    """Mark a run failed if it is still in ``from_status``; record and attest it.

    ``track`` also owes MLflow the failed run (the engine's refusals), in the
    same transaction through the outbox. With ``worker``, only while that
    worker still holds the run: a worker whose run was taken back (stale
    heartbeat) cannot fail the new attempt.
    """
    held = {} if worker is None else {"worker": worker}
    with transaction.atomic():
        changed = EvaluationRun.objects.filter(
            pk=run_id, status=from_status, **held
        ).update(
            status=RunStatus.FAILED,
            failure_code=code,
            failure_reason=message[:4000],
            finished_at=timezone.now(),
        )
        if changed:
            run = EvaluationRun.objects.select_related(
                "model_version__model__agency", "suite"
            ).get(pk=run_id)
            if track:
                _owe_mlflow(run, _failure_record(run, code, message))
            audit.record(
                actor=None,
                action="evaluation.failed",
                obj=run,
                agency=run.model_version.model.agency,
                payload={"run_id": run_id, "code": code, "message": message[:500]},
            )
            # A failure is evidence too: it is signed with the run, or neither.
            attestation_for_run(run=run)
    return changed


def _stopped(run_id: int, heartbeat: _Heartbeat | None = None):
    """``should_stop`` for the sandbox: true once this worker no longer holds the run.

    The run was cancelled, or taken back by the sweep (its heartbeat went
    stale) and perhaps claimed by another worker: either way this attempt's
    child is killed and its result would be discarded.
    """

    def check() -> bool:
        if heartbeat is not None and heartbeat.lost.is_set():
            return True
        return not EvaluationRun.objects.filter(
            pk=run_id, status=RunStatus.RUNNING, worker=_worker_label()
        ).exists()

    return check


class _Heartbeat:
    """Write a claimed run's ``heartbeat_at`` from a thread while this worker runs it.

    Every ``CIVITAS_EVAL_HEARTBEAT_SECONDS``, whatever the worker is doing
    (copying the bundle, waiting for the engine's child, logging to MLflow),
    so a run is taken as lost only when its worker really stopped. The update
    is conditional on this worker still holding the run; when it no longer
    does, ``lost`` is set and the beating stops. A database error skips one
    beat rather than ending the thread.
    """

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.worker = _worker_label()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"heartbeat-{run_id}", daemon=True
        )

    def __enter__(self) -> _Heartbeat:
        # A run claimed inside the caller's open transaction (a foreground
        # run in a test or a script) is invisible to any other connection:
        # no beat could be seen, and none is needed.
        if not transaction.get_connection().in_atomic_block:
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _beat(self) -> None:
        interval = settings.CIVITAS_EVAL_HEARTBEAT_SECONDS
        try:
            while not self._stop.wait(interval):
                try:
                    held = EvaluationRun.objects.filter(
                        pk=self.run_id, status=RunStatus.RUNNING, worker=self.worker
                    ).update(heartbeat_at=timezone.now())
                except DatabaseError:
                    logger.warning("heartbeat_failed", extra={"run_id": self.run_id})
                    continue
                if not held:
                    self.lost.set()
                    return
        finally:
            # This thread's own connection: close it, never leave one per run.
            connections.close_all()


def _copy_from_storage(key: str, dest: Path, *, sha256: str = "") -> Path:
    """Stream one stored file to ``dest``, checking its registered SHA-256.

    The store may be a bucket that other hands can write to: bytes that are
    not the registered ones are refused (``refused``, reason
    ``digest_mismatch``) before anything runs them. A file registered without
    a digest is copied as it is.
    """
    from engine.sandbox import EvaluationFailure

    if not sha256:
        with storages["artifacts"].open(key, "rb") as source, open(dest, "wb") as out:
            shutil.copyfileobj(source, out, length=1 << 20)
        return dest
    try:
        return copy_verified(key=key, sha256=sha256, dest=dest)
    except DomainError as exc:
        raise EvaluationFailure(
            "refused", f"{exc.code}: {exc.message}", reason=exc.code
        ) from exc


def _suite_spec(suite: EvaluationSuite, workdir: Path) -> tuple[dict, list]:
    """The engine's suite dict with each task's data copied out of the store."""
    versions = DatasetVersion.objects.select_related("dataset").in_bulk(
        [entry["dataset_version"] for entry in suite.tasks]
    )
    tasks, refs = [], []
    for n, entry in enumerate(suite.tasks):
        dataset_version = versions[entry["dataset_version"]]
        data = _copy_from_storage(
            dataset_version.storage_key,
            workdir / f"data-{n}.jsonl",
            sha256=dataset_version.digest,
        )
        tasks.append(
            {
                "task": entry["task"],
                "name": entry.get("name") or entry["task"],
                "data": str(data),
                "options": entry.get("options", {}),
            }
        )
        refs.append(dataset_ref(dataset_version))
    spec = {
        "name": suite.name,
        "version": suite.version,
        "licence": suite.licence.expression,
        "description": suite.description,
        "tasks": tasks,
    }
    return spec, refs


class _Progress:
    """Write progress and a heartbeat at most every few seconds.

    The sandbox calls it from its pipe-reader thread, so it writes through
    that thread's own (autocommit) database connection.
    """

    def __init__(self, run_id: int, total_tasks: int, forward=None) -> None:
        self.run_id = run_id
        self.forward = forward
        self.total_tasks = max(total_tasks, 1)
        self.tasks_seen: list[str] = []
        self.last = 0.0

    def __call__(self, event: dict) -> None:
        task = str(event.get("task", ""))
        if task not in self.tasks_seen:
            self.tasks_seen.append(task)
        if self.forward is not None:
            self.forward(event)
        now = time.monotonic()
        if now - self.last < 2.0:
            return
        self.last = now
        done, total = event.get("done", 0), max(event.get("total", 1), 1)
        index = self.tasks_seen.index(task)
        fraction = min((index + done / total) / self.total_tasks, 1.0)
        try:
            EvaluationRun.objects.filter(
                pk=self.run_id, status=RunStatus.RUNNING, worker=_worker_label()
            ).update(
                progress=fraction,
                progress_note=task[:200],
                heartbeat_at=timezone.now(),
            )
        finally:
            # Called on the sandbox's reader thread, which has a connection of
            # its own: close it rather than leave one behind per run.
            connections.close_all()


def _claim(run_id: int) -> int:
    """Claim a ``queued`` run for this worker process; 1 if claimed, else 0."""
    return EvaluationRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(
        status=RunStatus.RUNNING,
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
        attempts=F("attempts") + 1,
        worker=_worker_label(),
    )


def _worker_gone(label: str) -> bool:
    """Whether the worker process ``label`` (``host:pid``) is known to be dead.

    Only a process on this host can be checked. This very process counts as
    gone: it runs one task at a time, and it is not running that one now.
    """
    host, _, pid = label.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, as another user
        return False
    return False


def _heartbeat_stale(run: EvaluationRun) -> bool:
    """Whether ``run`` missed its heartbeats: older than ``CIVITAS_EVAL_STALE_SECONDS``.

    A run without any heartbeat counts from its start (or is stale at once).
    """
    beat = run.heartbeat_at or run.started_at
    if beat is None:
        return True
    age = timezone.now() - beat
    return age > timedelta(seconds=settings.CIVITAS_EVAL_STALE_SECONDS)


def _run_lost(run: EvaluationRun) -> bool:
    """A running run is lost when its worker process on this host is dead, or
    when its heartbeat went stale (a worker anywhere that stopped)."""
    return _worker_gone(run.worker) or _heartbeat_stale(run)


@transaction.atomic
def evaluation_requeue_lost(*, run_id: int, enqueue: bool = True) -> bool:
    """Put a ``running`` run whose worker is gone back to ``queued``.

    The database row is the truth, not the broker: a worker killed mid-run
    leaves its run ``running`` and its message unacknowledged (Redis hands it
    out again only after its visibility timeout; the embedded broker never
    does). A worker that starts, a redelivered message, or the sweep calls
    this; the run is lost when its worker process on this host is dead or its
    heartbeat is older than ``CIVITAS_EVAL_STALE_SECONDS``. Under the row lock,
    so a worker still heartbeating keeps its run: its conditional heartbeat
    waits for the lock and then finds the run no longer its own. The run is
    then claimed and run again from the start, so it completes once. A run
    that already took ``CIVITAS_EVAL_MAX_ATTEMPTS`` attempts (a model that
    kills its worker every time) is failed ``worker_lost`` instead. Returns
    True when the run was put back; False when it is not running, its worker
    is alive, or it was failed.
    """
    run = (
        EvaluationRun.objects.select_for_update()
        .filter(pk=run_id, status=RunStatus.RUNNING)
        .select_related("model_version__model__agency")
        .first()
    )
    if run is None or not _run_lost(run):
        return False
    if run.attempts >= settings.CIVITAS_EVAL_MAX_ATTEMPTS:
        _fail(
            run_id,
            code="worker_lost",
            message=f"The worker running this evaluation stopped {run.attempts} "
            "times before it finished; ask for a new evaluation.",
        )
        return False
    EvaluationRun.objects.filter(pk=run_id, status=RunStatus.RUNNING).update(
        status=RunStatus.QUEUED, heartbeat_at=None, worker=""
    )
    audit.record(
        actor=None,
        action="evaluation.requeued",
        obj=run,
        agency=run.model_version.model.agency,
        payload={"run_id": run_id, "lost_worker": run.worker},
    )
    if enqueue:
        _enqueue_on_commit(run_id)
    return True


def evaluation_recover_lost() -> int:
    """Re-queue every ``running`` run whose worker process on this host is gone.

    Queued by a worker that starts (``workers.tasks``): what a killed worker
    was running is run again. Returns how many runs were put back.
    """
    host = f"{socket.gethostname()}:"
    running = EvaluationRun.objects.filter(
        status=RunStatus.RUNNING, worker__startswith=host
    ).values_list("pk", flat=True)
    return sum(evaluation_requeue_lost(run_id=run_id) for run_id in running)


def evaluation_execute(*, run_id: int, progress=None) -> EvaluationRun | None:
    """Run one claimed evaluation to its end: engine, metrics, MLflow, audit.

    Safe to call twice: only a ``queued`` run is claimed. A ``running`` run
    found here is a redelivery (``acks_late``, a visibility timeout): when its
    worker is gone it is run again (``evaluation_requeue_lost``), or failed
    ``worker_lost`` after ``CIVITAS_EVAL_MAX_ATTEMPTS``; while its worker is
    still heartbeating it is left to that worker. The engine runs in a
    child process with memory and time limits; its refusals and crashes
    become a failed run with the engine's reason.
    """
    claimed = _claim(run_id)
    if not claimed and evaluation_requeue_lost(run_id=run_id, enqueue=False):
        claimed = _claim(run_id)  # redelivered after its worker died: run again
    if not claimed:
        return EvaluationRun.objects.filter(pk=run_id).first()
    with _Heartbeat(run_id) as heartbeat:
        return _execute_claimed(run_id, progress, heartbeat)


def _execute_claimed(run_id: int, progress, heartbeat: _Heartbeat):
    """Engine, metrics, MLflow and audit for a run this worker has claimed."""
    from engine.sandbox import EvaluationFailure, evaluate_bundle
    from engine.scratch import make_scratch

    run = EvaluationRun.objects.select_related(
        "model_version__model__agency", "suite__licence"
    ).get(pk=run_id)
    version = run.model_version
    workdir = make_scratch(str(run_id))
    started = time.perf_counter()
    try:
        suite_spec, dataset_refs = _suite_spec(run.suite, workdir)
        suffix = {"zip": ".zip", "tar.gz": ".tar.gz"}.get(
            version.artifact_format, ".onnx"
        )
        t0 = time.perf_counter()
        bundle, verified, timings = prepared_bundle(
            copy=_copy_from_storage,
            key=version.artifact_key,
            digest=run.artifact_digest,
            suffix=suffix,
            workdir=workdir,
        )
        timings["bundle_s"] = time.perf_counter() - t0
        result = evaluate_bundle(
            bundle,
            suite=suite_spec,
            expected_digest=run.artifact_digest,
            verified=verified,
            memory_bytes=settings.CIVITAS_EVAL_MEMORY_BYTES,
            timeout_s=settings.CIVITAS_EVAL_TIMEOUT_SECONDS,
            progress=_Progress(run_id, len(suite_spec["tasks"]), progress),
            should_stop=_stopped(run_id, heartbeat),
            poll_s=settings.CIVITAS_EVAL_CANCEL_POLL_SECONDS,
            settings={"spin_within_runs": settings.CIVITAS_EVAL_SPIN_IN_RUNS},
        )
    except EvaluationFailure as exc:
        if exc.code == "cancelled":
            logger.info("evaluation_child_killed", extra={"run_id": run_id})
            return EvaluationRun.objects.get(pk=run_id)
        _fail(
            run_id, code=exc.code, message=str(exc), track=True, worker=_worker_label()
        )
        return EvaluationRun.objects.get(pk=run_id)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    t0 = time.perf_counter()
    _record_success(run, result, dataset_refs, wall_s=time.perf_counter() - started)
    timings.update(result.get("timings") or {}, record_s=time.perf_counter() - t0)
    logger.info("evaluation_timings", extra={"run_id": run_id, "timings": timings})
    return EvaluationRun.objects.get(pk=run_id)


def _flat_metrics(results: list[dict]) -> list[tuple[str, str, float]]:
    """(task name, metric, value) for every finite numeric metric."""
    rows = []
    for result in results:
        name = result.get("name") or result["task"]
        for metric, value in result.get("metrics", {}).items():
            if (
                isinstance(value, int | float)
                and value == value
                and abs(value) != float("inf")
            ):
                rows.append((name, metric, float(value)))
    return rows


def _record_success(run: EvaluationRun, result: dict, refs, *, wall_s: float) -> None:
    """Store metrics and per-item results and finish the run; owe MLflow its log.

    MLflow is not called here: the record it is owed is written to the
    outbox in the transaction that finishes the run, and delivered after
    commit, so an unreachable MLflow never holds or fails a finished run.
    """
    results = result["results"]
    items_text = "".join(
        json.dumps({"task": r.get("name") or r["task"], **item}, sort_keys=True) + "\n"
        for r in results
        for item in r.get("items", [])
    )
    items_key = storages["artifacts"].save(
        f"evaluations/{run.pk}/items.jsonl", ContentFile(items_text.encode("utf-8"))
    )
    summary = [
        {key: r.get(key) for key in ("task", "name", "metrics", "performance")}
        for r in results
    ]
    # Pass or fail per thresholded metric, stored with the task's metrics.
    summary = run.suite.with_threshold_verdicts(summary)
    environment = results[0].get("environment", {}) if results else {}
    metric_rows = _flat_metrics(results)
    with transaction.atomic():
        # Only while the attempt that loaded ``run`` (just after its claim)
        # still holds it: a run taken back meanwhile is another attempt's.
        changed = EvaluationRun.objects.filter(
            pk=run.pk, status=RunStatus.RUNNING, worker=run.worker
        ).update(
            status=RunStatus.SUCCEEDED,
            finished_at=timezone.now(),
            progress=1.0,
            results=summary,
            environment=environment,
            items_key=items_key,
            engine_version=result.get("engine_version", ""),
            wall_seconds=wall_s,
        )
        if not changed:
            # Cancelled, or taken back from this worker, while the child ran:
            # the result is discarded.
            storages["artifacts"].delete(items_key)
            return
        RunMetric.objects.bulk_create(
            RunMetric(run=run, task=task, name=name, value=value)
            for task, name, value in metric_rows
        )
        _owe_mlflow(
            run,
            _success_record(
                run,
                metrics={f"{t}.{n}": v for t, n, v in metric_rows},
                environment=environment,
                summary=summary,
                refs=refs,
                items_key=items_key,
                facts=result.get("facts", {}),
            ),
        )
        audit.record(
            actor=None,
            action="evaluation.succeeded",
            obj=run,
            agency=run.model_version.model.agency,
            payload={
                "run_id": run.pk,
                "artifact_sha256": run.artifact_digest,
                "metrics": {f"{t}.{n}": v for t, n, v in metric_rows},
            },
        )
        # Imported here: the policy engine imports this module's suite rules.
        # Every use case of the version gets a fresh verdict on the new run.
        policy_evaluate_for_version(
            model_version=run.model_version, trigger="evaluation", actor=None
        )
        # The signed attestation commits with the run, or neither does.
        attestation_for_run(run=run)


def _owe_mlflow(run: EvaluationRun, record: tracking.EvaluationRecord) -> None:
    """Write the run's MLflow record to the outbox, in the caller's transaction."""
    outbox_enqueue(
        kind=OutboxKind.EVALUATION_RUN,
        dedupe_key=evaluation_outbox_key(run.pk),
        payload={"evaluation_run_id": run.pk, "record": record.to_json()},
    )


def _success_record(
    run: EvaluationRun,
    *,
    metrics: dict[str, float],
    environment: dict,
    summary: list,
    refs: list,
    items_key: str,
    facts: dict | None = None,
) -> tracking.EvaluationRecord:
    """What MLflow keeps of a succeeded run (per-item results streamed from storage)."""
    json_artifacts = {"environment.json": environment, "results.json": summary}
    if facts is not None:
        json_artifacts["facts.json"] = facts
    return tracking.EvaluationRecord(
        run_name=f"{run.model_version} {run.suite.name}@{run.suite.version}",
        tags=_tags(run),
        params=_params(run, environment),
        metrics=metrics,
        datasets=refs,
        json_artifacts=json_artifacts,
        stored_artifacts={"items.jsonl": items_key} if items_key else {},
    )


def evaluation_tracking_record(run: EvaluationRun) -> tracking.EvaluationRecord:
    """Rebuild a succeeded run's MLflow record from its row (``mlflow_sync``).

    The engine's ``facts`` are not kept on the row, so ``facts.json`` is
    left out of a rebuilt record.
    """
    versions = DatasetVersion.objects.select_related("dataset").in_bulk(
        [entry["dataset_version"] for entry in run.suite.tasks]
    )
    return _success_record(
        run,
        metrics={f"{m.task}.{m.name}": m.value for m in run.metrics.all()},
        environment=run.environment or {},
        summary=run.results or [],
        refs=[dataset_ref(versions[e["dataset_version"]]) for e in run.suite.tasks],
        items_key=run.items_key,
    )


def _tags(run: EvaluationRun) -> dict[str, str]:
    version = run.model_version
    return {
        "civitas.evaluation_run_id": str(run.pk),
        "civitas.model_version_id": str(version.pk),
        "civitas.model": str(version.model),
        "civitas.agency": version.model.agency.slug,
        "civitas.suite": f"{run.suite.name}@{run.suite.version}",
    }


def _params(run: EvaluationRun, environment: dict) -> dict[str, str]:
    params = {
        "suite": f"{run.suite.name}@{run.suite.version}",
        "artifact_sha256": run.artifact_digest,
        "model_version": str(run.model_version),
    }
    runtime = environment.get("runtime_settings") or environment.get("settings") or {}
    for key, value in runtime.items():
        params[f"runtime.{key}"] = str(value)
    return params


def _failure_record(
    run: EvaluationRun, code: str, message: str
) -> tracking.EvaluationRecord:
    """Failed runs are kept in MLflow too: the lineage record shows the refusal."""
    return tracking.EvaluationRecord(
        run_name=f"{run.model_version} {run.suite.name}@{run.suite.version}",
        tags=_tags(run),
        params={**_params(run, {}), "failure_code": code},
        metrics={},
        text_artifacts={"failure.txt": message},
        failed=True,
    )


def evaluation_scratch_sweep(*, root: str | None = None) -> dict[str, int]:
    """Remove the scratch folders (``civitas-eval-*``) that killed workers left.

    A folder under ``root`` (default: the temporary directory) goes when its
    owning process is dead and it was last written more than
    ``CIVITAS_SCRATCH_SWEEP_AGE_SECONDS`` ago (the longest an evaluation may
    run); the owner removes its own folders otherwise. The bundle caches of
    dead workers (``civitas-bundles-p<pid>-cache``) go too. Returns
    ``{"removed": n}``.
    """
    from engine.bundlecache import sweep_orphans
    from engine.scratch import sweep_scratch

    removed = sweep_scratch(
        min_age_s=settings.CIVITAS_SCRATCH_SWEEP_AGE_SECONDS, root=root
    )
    removed += sweep_orphans(root)  # and the bundle caches of dead workers
    if removed:
        logger.info("scratch_swept", extra={"folders": removed})
    return {"removed": len(removed)}


def evaluation_sweep() -> dict[str, int]:
    """Find runs the broker lost or whose worker died, and settle them.

    Scheduled every ``CIVITAS_EVAL_SWEEP_SECONDS`` on the housekeeping queue.
    A running run whose worker process on this host is gone, or whose
    heartbeat is older than ``CIVITAS_EVAL_STALE_SECONDS`` (a worker anywhere
    that stopped), is queued again, or failed ``worker_lost`` once it used
    ``CIVITAS_EVAL_MAX_ATTEMPTS``; a run queued for longer than
    ``CIVITAS_EVAL_REQUEUE_MINUTES`` is queued again (its message was lost).
    Returns ``{"requeued": n, "failed": m}``.
    """
    now = timezone.now()
    requeue_before = now - timedelta(minutes=settings.CIVITAS_EVAL_REQUEUE_MINUTES)
    stale_before = now - timedelta(seconds=settings.CIVITAS_EVAL_STALE_SECONDS)
    requeued = failed = 0
    for run_id in (
        EvaluationRun.objects.filter(status=RunStatus.RUNNING)
        .filter(
            Q(worker__startswith=f"{socket.gethostname()}:")
            | Q(heartbeat_at__lt=stale_before)
            | Q(heartbeat_at__isnull=True)
        )
        .values_list("pk", flat=True)
    ):
        if evaluation_requeue_lost(run_id=run_id):
            requeued += 1
        else:
            failed += EvaluationRun.objects.filter(
                pk=run_id, status=RunStatus.FAILED, failure_code="worker_lost"
            ).exists()
    for run_id in EvaluationRun.objects.filter(
        status=RunStatus.QUEUED, requested_at__lt=requeue_before
    ).values_list("pk", flat=True):
        _enqueue_on_commit(run_id)
        requeued += 1
    return {"requeued": requeued, "failed": failed}
