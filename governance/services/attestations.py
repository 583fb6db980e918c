"""Signed evidence: attestations of finished evaluation runs and of decisions.

Every finished evaluation run is attested: a succeeded one with what it
measured, a failed one with its failure code and reason (a failure is
evidence too). A cancelled run measured nothing and is not attested.

An attestation is an in-toto Statement v1 (``_type``, ``subject``,
``predicateType``, ``predicate``) serialised as canonical JSON
(``audit.verify.canonical_json``) and signed with the platform's Ed25519
key in a DSSE envelope (``audit.signing.sign_envelope``). The subject is
the model artifact, named by its SHA-256; the predicate says what was measured
(a run) or decided (a decision) and by whom. Each kind has its own
``payloadType``, so a signature over one can never be passed off as the other.

Anyone holding the platform public key checks an attestation offline with
``python -m audit.verify attestation.json --key public.pem``: the
envelope stored here is exactly that file.
"""

from __future__ import annotations

import hashlib
import math
from datetime import date, datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from audit import services as audit
from audit import signing
from audit.verify import VerificationError, canonical_json, parse_json
from config.exceptions import Conflict
from governance.models import (
    Attestation,
    Decision,
    EvaluationRun,
    PolicyResult,
    RunStatus,
)
from registry.models import DatasetVersion
from registry.selectors import user_membership

__all__ = [
    "ATTESTED_RUN_STATUSES",
    "DECISION_PAYLOAD_TYPE",
    "DECISION_PREDICATE_TYPE",
    "RUN_PAYLOAD_TYPE",
    "RUN_PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "attestation_for_decision",
    "attestation_for_run",
    "attestation_is_authentic",
    "evidence_run_ids",
]

RUN_PAYLOAD_TYPE = "application/vnd.civitas.evaluation-attestation+json"
DECISION_PAYLOAD_TYPE = "application/vnd.civitas.decision-attestation+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
RUN_PREDICATE_TYPE = "urn:civitas:attestation:evaluation:v1"
DECISION_PREDICATE_TYPE = "urn:civitas:attestation:decision:v1"
# A cancelled run measured nothing, so there is nothing to vouch for.
ATTESTED_RUN_STATUSES = (RunStatus.SUCCEEDED, RunStatus.FAILED)


def _plain(value: Any) -> Any:
    """``value`` with only values canonical JSON accepts.

    Non-finite floats become None (a metric that could not be computed) and
    anything without a JSON form its ``str()``, so building a statement never
    fails on an odd value in a run's environment.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, datetime):
        # A naive time has no instant; its text at least keeps what was known.
        return value if value.tzinfo is not None else value.isoformat()
    if isinstance(value, date):
        return value
    return str(value)


def _person(user) -> dict[str, Any]:
    """Who acted, as a statement names them: id, login, full name, audit label."""
    if user is None:
        return {"label": audit.SYSTEM_ACTOR_LABEL}
    return {
        "id": user.pk,
        "username": user.get_username(),
        "name": user.get_full_name() or user.get_username(),
        "label": audit.actor_label_of(user),
    }


def _issue(
    *,
    statement: dict[str, Any],
    payload_type: str,
    run: EvaluationRun | None = None,
    decision: Decision | None = None,
) -> Attestation:
    """Sign ``statement`` and store it with its envelope."""
    payload = canonical_json(statement)
    envelope = signing.sign_envelope(payload, payload_type)
    return Attestation.objects.create(
        run=run,
        decision=decision,
        payload_type=payload_type,
        statement=parse_json(payload),
        statement_sha256=hashlib.sha256(payload).hexdigest(),
        envelope=envelope,
        key_id=envelope["signatures"][0]["keyid"],
        created_at=timezone.now(),
    )


# --- evaluation runs ---------------------------------------------------------------


def _suite_tasks(run: EvaluationRun) -> list[dict[str, Any]]:
    """The suite's tasks with the dataset version and SHA-256 each one read."""
    ids = [entry["dataset_version"] for entry in run.suite.tasks]
    versions = DatasetVersion.objects.select_related("dataset__agency").in_bulk(ids)
    tasks = []
    for entry in run.suite.tasks:
        dataset_version = versions.get(entry["dataset_version"])
        tasks.append(
            {
                "name": entry.get("name") or entry["task"],
                "task": entry["task"],
                "options": entry.get("options", {}),
                "dataset_version_id": entry["dataset_version"],
                "dataset": str(dataset_version) if dataset_version else None,
                "sha256": dataset_version.digest if dataset_version else None,
            }
        )
    return tasks


def run_statement(run: EvaluationRun, *, issued_at) -> dict[str, Any]:
    """The statement of a finished run: what was measured, on what, where, how.

    Binds the artifact digest (the subject), the suite and its dataset
    digests, the engine and ONNX Runtime versions, the runtime settings, the
    whole environment and every metric. For a failed run ``evaluation_run``
    also carries ``failure_code`` and ``failure_reason``, and ``metrics`` and
    ``results`` are empty: nothing it measured is vouched for.
    """
    version = run.model_version
    environment = run.environment or {}
    failed = run.status == RunStatus.FAILED
    failure = (
        {"failure_code": run.failure_code, "failure_reason": run.failure_reason}
        if failed
        else {}
    )
    return _plain(
        {
            "_type": STATEMENT_TYPE,
            "subject": [
                {"name": str(version), "digest": {"sha256": run.artifact_digest}}
            ],
            "predicateType": RUN_PREDICATE_TYPE,
            "predicate": {
                "evaluation_run": {
                    "id": run.pk,
                    "status": run.status,
                    "requested_by": _person(run.requested_by),
                    "requested_at": run.requested_at,
                    "started_at": run.started_at,
                    "finished_at": run.finished_at,
                    "wall_seconds": run.wall_seconds,
                    "worker": run.worker,
                    **failure,
                },
                "model_version": {
                    "id": version.pk,
                    "name": str(version),
                    "agency": version.model.agency.slug,
                    "artifact_sha256": run.artifact_digest,
                },
                "suite": {
                    "id": run.suite.pk,
                    "name": run.suite.name,
                    "version": run.suite.version,
                    "licence": run.suite.licence.expression,
                    "tasks": _suite_tasks(run),
                },
                "engine": {
                    "version": run.engine_version
                    or environment.get("engine_version", ""),
                    "onnxruntime": environment.get("onnxruntime"),
                },
                "settings": environment.get("runtime_settings")
                or environment.get("settings")
                or {},
                "environment": environment,
                "metrics": []
                if failed
                else [
                    {"task": m.task, "name": m.name, "value": m.value}
                    for m in run.metrics.all()
                ],
                "results": [] if failed else run.results or [],
                "issuer": {"platform_key_id": signing.platform_key_id()},
                "issued_at": issued_at,
            },
        }
    )


@transaction.atomic
def attestation_for_run(*, run: EvaluationRun) -> Attestation:
    """Sign and store the attestation of a succeeded or failed evaluation run.

    Called by ``services._record_success`` and ``services._fail`` at the end
    of the transaction that finishes the run, so a finished run and its
    attestation commit together. Idempotent: a run already attested returns
    its attestation. Records ``evaluation.attested`` with the statement's
    SHA-256 and the run's status, binding the signed statement into the
    audit chain. Raises ``Conflict`` (``run_not_finished``) for a run that is
    queued, running or cancelled (a cancelled run measured nothing);
    ``ImproperlyConfigured`` when the platform key is unusable.
    """
    existing = Attestation.objects.filter(run_id=run.pk).first()
    if existing is not None:
        return existing
    # Reloaded: the caller's instance predates the update that finished it.
    run = (
        EvaluationRun.objects.select_related(
            "model_version__model__agency", "suite__licence", "requested_by"
        )
        .prefetch_related("metrics")
        .get(pk=run.pk)
    )
    if run.status not in ATTESTED_RUN_STATUSES:
        raise Conflict(
            f"Run {run.pk} is {run.status}; only a succeeded or failed run is "
            "attested.",
            code="run_not_finished",
        )
    attestation = _issue(
        statement=run_statement(run, issued_at=timezone.now()),
        payload_type=RUN_PAYLOAD_TYPE,
        run=run,
    )
    audit.record(
        actor=None,
        action="evaluation.attested",
        obj=attestation,
        agency=run.model_version.model.agency,
        payload={
            "run_id": run.pk,
            "status": run.status,
            "attestation_id": attestation.pk,
            "artifact_sha256": run.artifact_digest,
            "payload_type": RUN_PAYLOAD_TYPE,
            "statement_sha256": attestation.statement_sha256,
            "key_id": attestation.key_id,
        },
    )
    return attestation


# --- decisions ---------------------------------------------------------------------


def evidence_run_ids(result: PolicyResult | None) -> list[int]:
    """The evaluation runs a policy result relied on (``evidence.run_id``), sorted."""
    if result is None:
        return []
    found = set()
    for outcome in result.outcomes:
        run_id = (outcome.get("evidence") or {}).get("run_id")
        if isinstance(run_id, int) and not isinstance(run_id, bool):
            found.add(run_id)
    return sorted(found)


def _evaluation_evidence(result: PolicyResult | None) -> list[dict[str, Any]]:
    """Each run a policy result relied on, with its attestation's digest."""
    run_ids = evidence_run_ids(result)
    run_attestations = dict(
        Attestation.objects.filter(run_id__in=run_ids).values_list(
            "run_id", "statement_sha256"
        )
    )
    return [
        {"run_id": run_id, "attestation_statement_sha256": run_attestations.get(run_id)}
        for run_id in run_ids
    ]


def _prior_approvals(decision: Decision) -> list[dict[str, Any]]:
    """The other approvals of the decision's review round, oldest first."""
    if decision.review_round_id is None:
        return []
    return [
        {"decision_id": pk, "reviewer": f"{username}#{user_id}"}
        for pk, username, user_id in (
            Decision.objects.filter(
                review_round_id=decision.review_round_id, kind="approve"
            )
            .exclude(pk=decision.pk)
            .order_by("pk")
            .values_list("pk", "reviewer__username", "reviewer_id")
        )
    ]


def _reviewer(user) -> dict[str, Any]:
    """A reviewer as a decision statement names them, with agency and role."""
    membership = user_membership(user)
    return {
        **_person(user),
        "agency": membership.agency.slug if membership else None,
        "role": membership.role if membership else None,
    }


def decision_statement(decision: Decision, *, issued_at) -> dict[str, Any]:
    """The statement of a decision: what was decided, on which evidence, by whom.

    Names the reviewer, carries the rationale, the submission's snapshot
    digest, the policy result and any waiver, and the statement digest of
    each evaluation attestation the policy result relied on, so the decision
    is chained to the signed evidence behind it.
    """
    use_case = decision.use_case
    submission = decision.submission
    result = decision.policy_result
    waiver = decision.waiver
    version = decision.model_version
    return _plain(
        {
            "_type": STATEMENT_TYPE,
            "subject": [
                {"name": str(version), "digest": {"sha256": decision.artifact_digest}}
            ],
            "predicateType": DECISION_PREDICATE_TYPE,
            "predicate": {
                "decision": {
                    "id": decision.pk,
                    "kind": decision.kind,
                    "from_status": decision.from_status,
                    "to_status": decision.to_status,
                    "decided_at": decision.decided_at,
                    "rationale": decision.rationale,
                    "approved_at": decision.approved_at,
                    "expires_at": decision.expires_at,
                },
                "reviewer": _reviewer(decision.reviewer),
                "use_case": {
                    "id": use_case.pk,
                    "title": use_case.title,
                    "agency": use_case.agency.slug,
                    "risk_tier": use_case.risk_tier,
                    "valid_until": use_case.valid_until,
                },
                "model_version": {
                    "id": version.pk,
                    "name": str(version),
                    "artifact_sha256": decision.artifact_digest,
                },
                "submission": {
                    "id": submission.pk,
                    "number": submission.number,
                    "submitted_at": submission.submitted_at,
                    "submitted_by": _person(submission.submitted_by),
                    "snapshot_sha256": submission.snapshot_sha256,
                },
                "policy_result": None
                if result is None
                else {
                    "id": result.pk,
                    "passed": result.passed,
                    "created_at": result.created_at,
                    "artifact_sha256": result.artifact_digest,
                    "failed_rules": [f"{p}/{r}" for p, r in result.failed_rules()],
                },
                "waiver": None
                if waiver is None
                else {
                    "id": waiver.pk,
                    "rule_ids": waiver.rule_ids,
                    "justification": waiver.justification,
                    "granted_by": _person(waiver.granted_by),
                    "granted_at": waiver.granted_at,
                },
                "evaluation_evidence": _evaluation_evidence(result),
                "prior_approvals_in_round": _prior_approvals(decision),
                "issuer": {"platform_key_id": signing.platform_key_id()},
                "issued_at": issued_at,
            },
        }
    )


def attestation_for_decision(*, decision: Decision) -> Attestation:
    """Sign and store the statement of a decision, naming its reviewer.

    Runs inside the deciding service's transaction, which records the one
    audit event of the decision (with this statement's SHA-256); it records
    none itself. Raises ``ImproperlyConfigured`` when the key is unusable.
    """
    return _issue(
        statement=decision_statement(decision, issued_at=decision.decided_at),
        payload_type=DECISION_PAYLOAD_TYPE,
        decision=decision,
    )


def attestation_is_authentic(attestation: Attestation) -> bool:
    """True if the stored envelope verifies with the platform key and its type."""
    try:
        signing.verify_envelope(
            attestation.envelope,
            signing.public_key(),
            payload_type=attestation.payload_type,
        )
    except VerificationError:
        return False
    return True
