"""The MLflow outbox: what the platform owes MLflow, and its delivery.

A governed change that owes MLflow something (an evaluation finishing) writes
an ``OutboxMessage`` in its own transaction with ``outbox_enqueue``; nothing
waits on MLflow. ``outbox_deliver`` (the ``civitas.mlflow_outbox_deliver``
task, queued on commit and swept by beat every minute) sends due messages in
the order they were written. Each kind has a handler: ``send`` talks to
MLflow and must be safe to repeat (it finds what an earlier attempt made by
the message's key), ``settle`` writes the outcome back in the transaction
that marks the message delivered. A failed attempt is retried after an
exponential backoff; the pass stops at the first failure, since MLflow is
most likely down for the messages behind it too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from audit import services as audit
from config.celery import send_on_commit
from governance import tracking
from governance.models import EvaluationRun, OutboxKind, OutboxMessage
from registry.models import DatasetRole, DatasetVersion, ModelVersion

logger = logging.getLogger(__name__)

DELIVER_TASK = "civitas.mlflow_outbox_deliver"
# A claimed message is left alone by other deliverers for this long: longer
# than any one delivery (each MLflow call is bounded by the HTTP settings),
# short enough that a message whose worker was killed is soon tried again.
_LEASE = timedelta(minutes=10)


@dataclass(frozen=True)
class Handler:
    """How one kind of message is delivered (``send``) and recorded (``settle``)."""

    send: Callable[[OutboxMessage], str]
    settle: Callable[[OutboxMessage, str], None]


HANDLERS: dict[str, Handler] = {}


def outbox_handler(kind: str, *, settle: Callable[[OutboxMessage, str], None]):
    """Register ``send`` (the decorated function) and ``settle`` for ``kind``."""

    def register(send: Callable[[OutboxMessage], str]):
        HANDLERS[kind] = Handler(send=send, settle=settle)
        return send

    return register


def outbox_enqueue(*, kind: str, dedupe_key: str, payload: dict) -> OutboxMessage:
    """Write what MLflow is owed, in the caller's transaction; deliver on commit.

    The same ``dedupe_key`` is written once: a second call returns the first
    message unchanged. Raises ``TransactionManagementError`` outside
    ``transaction.atomic``, since a message written apart from its change
    could be lost or sent for a change that rolled back.
    """
    if not transaction.get_connection().in_atomic_block:
        raise transaction.TransactionManagementError(
            "outbox_enqueue must run inside the caller's transaction.atomic block"
        )
    message, _ = OutboxMessage.objects.get_or_create(
        dedupe_key=dedupe_key, defaults={"kind": kind, "payload": payload}
    )
    send_on_commit(DELIVER_TASK)
    return message


def outbox_requeue(*, kind: str, dedupe_key: str, payload: dict) -> OutboxMessage:
    """Owe MLflow a message again (its record there went missing); deliver on commit.

    A delivered message is made due again with a fresh payload; a pending one
    is left as it is; a missing one is written.
    """
    with transaction.atomic():
        message = (
            OutboxMessage.objects.select_for_update()
            .filter(dedupe_key=dedupe_key)
            .first()
        )
        if message is None:
            return outbox_enqueue(kind=kind, dedupe_key=dedupe_key, payload=payload)
        if message.delivered_at is not None:
            OutboxMessage.objects.filter(pk=message.pk).update(
                payload=payload,
                delivered_at=None,
                remote_id="",
                attempts=0,
                last_error="",
                next_attempt_at=timezone.now(),
            )
        send_on_commit(DELIVER_TASK)
    message.refresh_from_db()
    return message


def _backoff(attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failure: doubling, capped."""
    base = settings.MLFLOW_OUTBOX_BACKOFF_SECONDS
    seconds = base * 2 ** max(attempts - 1, 0)
    seconds = min(seconds, settings.MLFLOW_OUTBOX_BACKOFF_MAX_SECONDS)
    return timedelta(seconds=seconds)


def _claim_next(after: int) -> OutboxMessage | None:
    """Claim the oldest due message past id ``after`` with a conditional update.

    Two deliverers never send the same message at once: the one whose update
    moves ``next_attempt_at`` past the lease has it; the other goes on.
    """
    while True:
        now = timezone.now()
        due = OutboxMessage.objects.filter(
            delivered_at__isnull=True, next_attempt_at__lte=now, pk__gt=after
        ).order_by("pk")
        pk = due.values_list("pk", flat=True).first()
        if pk is None:
            return None
        claimed = due.filter(pk=pk).update(next_attempt_at=now + _LEASE)
        if claimed:
            return OutboxMessage.objects.get(pk=pk)
        after = pk


def _deliver_one(message: OutboxMessage) -> bool:
    """Send one claimed message; mark it delivered, or schedule its next attempt."""
    handler = HANDLERS.get(message.kind)
    try:
        if handler is None:
            raise LookupError(f"no outbox handler for kind {message.kind!r}")
        remote_id = handler.send(message)
    except Exception as exc:  # every failure is retried later, none is lost
        attempts = message.attempts + 1
        OutboxMessage.objects.filter(pk=message.pk, delivered_at__isnull=True).update(
            attempts=attempts,
            next_attempt_at=timezone.now() + _backoff(attempts),
            last_error=f"{type(exc).__name__}: {exc}"[:2000],
        )
        logger.warning(
            "mlflow_outbox_failed",
            extra={"message_id": message.pk, "attempts": attempts},
        )
        return False
    with transaction.atomic():
        changed = OutboxMessage.objects.filter(
            pk=message.pk, delivered_at__isnull=True
        ).update(
            delivered_at=timezone.now(),
            remote_id=remote_id[:64],
            attempts=F("attempts") + 1,
            last_error="",
        )
        if changed:
            handler.settle(message, remote_id)
    return True


def outbox_deliver(*, budget_s: float | None = None) -> dict[str, int]:
    """Deliver due messages oldest first; the counts delivered and failed.

    Stops when none is due, at the first failure, or once ``budget_s``
    (default ``MLFLOW_OUTBOX_PASS_SECONDS``) has passed, so a pass never
    holds a worker for long; the next pass (beat, every minute) goes on.
    Safe to run twice at once.
    """
    budget = settings.MLFLOW_OUTBOX_PASS_SECONDS if budget_s is None else budget_s
    deadline = time.monotonic() + budget
    counts = {"delivered": 0, "failed": 0}
    after = 0
    while time.monotonic() < deadline:
        message = _claim_next(after)
        if message is None:
            break
        after = message.pk
        if not _deliver_one(message):
            counts["failed"] += 1
            break
        counts["delivered"] += 1
    return counts


def outbox_backlog() -> dict[str, int]:
    """How many messages are undelivered, and how many of those have failed.

    For ``/metrics``: ``undelivered`` grows while MLflow is down; ``failing``
    counts the messages whose last attempt failed.
    """
    return OutboxMessage.objects.filter(delivered_at__isnull=True).aggregate(
        undelivered=Count("id"), failing=Count("id", filter=Q(attempts__gt=0))
    )


def evaluation_outbox_key(run_id: int) -> str:
    """The dedupe key of what MLflow is owed for evaluation run ``run_id``."""
    return f"evaluation_run:{run_id}"


def _evaluation_settle(message: OutboxMessage, mlflow_run_id: str) -> None:
    """Link the evaluation run to its MLflow run, and record the link."""
    run = (
        EvaluationRun.objects.select_related("model_version__model__agency")
        .filter(pk=message.payload["evaluation_run_id"])
        .first()
    )
    if run is None or run.mlflow_run_id == mlflow_run_id:
        return
    EvaluationRun.objects.filter(pk=run.pk).update(mlflow_run_id=mlflow_run_id)
    # The version's registered record lists its runs: owe it the new one.
    model_version_owed(version_id=run.model_version_id)
    audit.record(
        actor=None,
        action="evaluation.tracked",
        obj=run,
        agency=run.model_version.model.agency,
        payload={"run_id": run.pk, "mlflow_run_id": mlflow_run_id},
    )


@outbox_handler(OutboxKind.EVALUATION_RUN, settle=_evaluation_settle)
def _evaluation_send(message: OutboxMessage) -> str:
    """Log the evaluation's record to MLflow once; the MLflow run id."""
    record = tracking.EvaluationRecord.from_json(message.payload["record"])
    return tracking.log_evaluation(record, key=message.dedupe_key).run_id


# --- the catalogue: model versions, dataset versions, decisions ------------------

# Audit actions after which a version's record in MLflow is owed again: the
# registry announces them on commit (``audit.signals``), since it may not
# import governance; governance's own moves (status changes, decisions)
# enqueue in their own transaction.
MODEL_VERSION_ACTIONS = frozenset(
    {
        "model_version.created",
        "model_version.updated",
        "model_version.artifact_verified",
    }
)
DATASET_VERSION_ACTIONS = frozenset(
    {"dataset_version.created", "dataset_version.file_verified"}
)
_TRAINING_ROLES = frozenset({DatasetRole.TRAINING, DatasetRole.FINE_TUNING})


def dataset_ref(
    dataset_version: DatasetVersion, *, context: str = "evaluation"
) -> tracking.DatasetRef:
    """The MLflow dataset of a dataset version, as every run that read it shows it."""
    return tracking.DatasetRef(
        name=str(dataset_version),
        digest=dataset_version.digest,
        source=f"civitas://dataset-versions/{dataset_version.pk}",
        context=context,
    )


def registered_model_name(version: ModelVersion) -> str:
    """The registered model of a version in MLflow: ``<agency-slug>.<model-slug>``."""
    return f"{version.model.agency.slug}.{version.model.slug}"


def model_version_spec(version_id: int) -> tracking.VersionSpec:
    """What a model version is owed in MLflow's registry, read from the database now.

    Read at delivery, so a message sent late carries the latest state.
    Empty values are left out (MLflow holds no tag for them).
    """
    version = ModelVersion.objects.select_related("model__agency", "licence").get(
        pk=version_id
    )
    runs = EvaluationRun.objects.filter(model_version=version).exclude(mlflow_run_id="")
    run_ids = ",".join(runs.order_by("pk").values_list("mlflow_run_id", flat=True))
    tags = {
        "civitas.version": version.version,
        "civitas.artifact_sha256": version.artifact_digest,
        "civitas.licence": version.licence.expression,
        "civitas.training_jurisdiction": version.training_jurisdiction,
        "civitas.hosting_jurisdiction": version.hosting_jurisdiction,
        tracking.STATUS_TAG: version.status,
        "civitas.training_run": version.training_run,
        # MLflow caps a tag value at 5,000 characters: the oldest runs first.
        "civitas.evaluation_runs": run_ids[:4999].rsplit(",", 1)[0]
        if len(run_ids) > 4999
        else run_ids,
    }
    links = version.dataset_links.select_related("dataset_version__dataset__agency")
    return tracking.VersionSpec(
        name=registered_model_name(version),
        model_version_id=version.pk,
        source=version.source_uri
        or f"civitas://model-versions/{version.pk}/{version.artifact_digest}",
        description=f"{version.model} {version.version}",
        tags={key: value for key, value in tags.items() if value},
        training_run_id=version.training_run,
        training_datasets=[
            dataset_ref(link.dataset_version, context="training")
            for link in links
            if link.role in _TRAINING_ROLES and link.dataset_version.digest
        ],
    )


def model_version_outbox_key(version_id: int) -> str:
    """The dedupe key of a model version's record in MLflow's registry."""
    return f"model_version:{version_id}"


def dataset_version_outbox_key(version_id: int) -> str:
    """The dedupe key of a dataset version's MLflow dataset."""
    return f"dataset_version:{version_id}"


def decision_outbox_key(decision_id: int) -> str:
    """The dedupe key of a decision's tag on its MLflow model version."""
    return f"decision:{decision_id}"


def model_version_owed(*, version_id: int) -> OutboxMessage:
    """Owe MLflow a version's current state (in the caller's transaction if any)."""
    return outbox_requeue(
        kind=OutboxKind.MODEL_VERSION,
        dedupe_key=model_version_outbox_key(version_id),
        payload={"model_version_id": version_id},
    )


def dataset_version_owed(*, version_id: int) -> OutboxMessage:
    """Owe MLflow a dataset version's MLflow dataset."""
    return outbox_requeue(
        kind=OutboxKind.DATASET_VERSION,
        dedupe_key=dataset_version_outbox_key(version_id),
        payload={"dataset_version_id": version_id},
    )


def decision_owed(*, decision_id: int, model_version_id: int, tag: dict) -> None:
    """Owe MLflow a decision's tag, in the decision's transaction."""
    outbox_enqueue(
        kind=OutboxKind.DECISION,
        dedupe_key=decision_outbox_key(decision_id),
        payload={
            "decision_id": decision_id,
            "model_version_id": model_version_id,
            "tag": tag,
        },
    )


def on_catalogue_event(sender, *, event, **kwargs) -> None:
    """``audit.signals.event_recorded`` receiver: owe MLflow the changed version.

    Runs after the registry's transaction committed; a crash in between is
    found by ``manage.py mlflow_sync --check`` (``missing``) and repaired by
    ``manage.py mlflow_sync``.
    """
    if event.action in MODEL_VERSION_ACTIONS:
        model_version_owed(version_id=int(event.object_id))
    elif event.action in DATASET_VERSION_ACTIONS:
        dataset_version_owed(version_id=int(event.object_id))


def is_catalogue_event(action: str, payload) -> bool:
    """Whether an audit event makes MLflow owed a catalogue record."""
    return action in MODEL_VERSION_ACTIONS or action in DATASET_VERSION_ACTIONS


# The remote id of a message whose record no longer exists in Civitas.
_GONE = "gone"


def _nothing_to_settle(message: OutboxMessage, remote_id: str) -> None:
    """The MLflow side is the record; Civitas keeps the id on the message."""


@outbox_handler(OutboxKind.MODEL_VERSION, settle=_nothing_to_settle)
def _model_version_send(message: OutboxMessage) -> str:
    """Register or update the version in MLflow's registry; ``name/number``."""
    try:
        spec = model_version_spec(message.payload["model_version_id"])
    except ModelVersion.DoesNotExist:
        return _GONE  # nothing to register; never hold the queue up for it
    registered = tracking.register_version(spec)
    return f"{registered.name}/{registered.version}"


@outbox_handler(OutboxKind.DATASET_VERSION, settle=_nothing_to_settle)
def _dataset_version_send(message: OutboxMessage) -> str:
    """Log the dataset version as an MLflow dataset; its registration run id."""
    version = (
        DatasetVersion.objects.select_related("dataset__agency")
        .filter(pk=message.payload["dataset_version_id"])
        .first()
    )
    if version is None:
        return _GONE
    return tracking.log_dataset_version(
        dataset_ref(version, context="registration"),
        dataset_version_id=version.pk,
        key=message.dedupe_key,
    ).run_id


@outbox_handler(OutboxKind.DECISION, settle=_nothing_to_settle)
def _decision_send(message: OutboxMessage) -> str:
    """Tag the decision (with its audit event's hash) on the MLflow version."""
    payload = message.payload
    try:
        spec = model_version_spec(payload["model_version_id"])
    except ModelVersion.DoesNotExist:
        return _GONE
    registered = tracking.set_decision_tag(
        spec, decision_id=payload["decision_id"], value=payload["tag"]
    )
    return f"{registered.name}/{registered.version}"
