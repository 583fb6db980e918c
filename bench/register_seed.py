"""Seed and measure ``bench/register.py``'s database (runs inside Django).

``seed(n)`` writes the catalogue with ``bulk_create`` (benchmark set-up, not
the services) and a valid audit chain signed every 1,000 events;
``measure(...)`` times the register's pages with Django's test client.
"""

from __future__ import annotations

import hashlib
import random
import statistics
import time
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit import services as audit_services
from audit.models import AuditChainHead, AuditEvent, AuditMerkleNode
from audit.tree import BulkNodes
from audit.verify import GENESIS_HASH, event_hash
from governance.models import (
    Decision,
    DecisionKind,
    EvaluationRun,
    EvaluationSuite,
    PolicyResult,
    Questionnaire,
    RiskTier,
    RunMetric,
    RunStatus,
    Submission,
    UseCase,
    UseCaseStatus,
)
from governance.register import register_use_cases
from registry.models import (
    Agency,
    AIModel,
    ArtifactState,
    Dataset,
    DatasetRole,
    DatasetVersion,
    Licence,
    ModelKind,
    ModelVersion,
    ModelVersionDataset,
    PersonalData,
    Task,
    Visibility,
)

S = UseCaseStatus
EVENTS_PER_CHECKPOINT = 1000
WORDS = [
    "residents",
    "letters",
    "parking",
    "waste",
    "library",
    "housing",
    "benefits",
    "tax",
    "transport",
    "permits",
    "schools",
    "health",
    "planning",
    "roads",
    "council",
    "appointments",
]


def _hex(*parts) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def _catalogue(rng, entries: int, user):
    agencies = Agency.objects.bulk_create(
        Agency(
            name=f"Bench Agency {i:02d}",
            slug=f"bench-agency-{i:02d}",
            jurisdiction="FR",
        )
        for i in range(20)
    )
    licences = [
        Licence.objects.get_or_create(expression=e, defaults={"spdx_ids": [e]})[0]
        for e in ("Apache-2.0", "CC-BY-4.0", "CC-BY-NC-4.0")
    ]
    datasets = Dataset.objects.bulk_create(
        Dataset(
            agency=agencies[i % 20],
            name=f"Dataset {i}",
            slug=f"dataset-{i}",
            visibility=Visibility.PUBLIC if i % 2 else Visibility.PRIVATE,
            created_by=user,
        )
        for i in range(200)
    )
    personal = (PersonalData.NONE, PersonalData.PSEUDONYMISED, PersonalData.PERSONAL)
    data_versions = DatasetVersion.objects.bulk_create(
        DatasetVersion(
            dataset=d,
            version="1.0.0",
            motivation="m",
            composition="c",
            collection_process="p",
            intended_uses="u",
            record_count=1000,
            licence=licences[i % 3],
            origin_jurisdiction="FR",
            personal_data=personal[i % 3],
            legal_basis="Public task.",
            digest=_hex("data", i),
            created_by=user,
        )
        for i, d in enumerate(datasets)
    )
    count = max(1, entries // 10)
    models = AIModel.objects.bulk_create(
        AIModel(
            agency=agencies[i % 20],
            name=f"Bench Model {i}",
            slug=f"model-{i}",
            task=Task.TEXT_GENERATION,
            intended_use="Drafting replies.",
            visibility=Visibility.PUBLIC,
            created_by=user,
        )
        for i in range(count)
    )
    now = timezone.now()
    versions = ModelVersion.objects.bulk_create(
        ModelVersion(
            model=m,
            version="1.0.0",
            status="approved",
            licence=licences[0],
            artifact_state=ArtifactState.AVAILABLE,
            artifact_digest=_hex("model", i),
            kind=ModelKind.CAUSAL_LM_KV,
            created_by=user,
            released_at=now,
        )
        for i, m in enumerate(models)
    )
    ModelVersionDataset.objects.bulk_create(
        ModelVersionDataset(
            model_version=v,
            dataset_version=data_versions[(i * 2 + k) % 200],
            role=(DatasetRole.TRAINING, DatasetRole.EVALUATION)[k],
        )
        for i, v in enumerate(versions)
        for k in range(2)
    )
    return agencies, versions


def _runs(versions, user) -> None:
    licence = Licence.objects.get(expression="Apache-2.0")
    suites = EvaluationSuite.objects.bulk_create(
        EvaluationSuite(name=name, version="1.0.0", licence=licence, tasks=[])
        for name in ("civitas-core", "civitas-safety")
    )
    now = timezone.now()
    runs = EvaluationRun.objects.bulk_create(
        EvaluationRun(
            model_version=v,
            suite=s,
            status=RunStatus.SUCCEEDED,
            requested_by=user,
            artifact_digest=v.artifact_digest,
            started_at=now - timedelta(days=age, minutes=5),
            finished_at=now - timedelta(days=age),
        )
        for v in versions
        for s in suites
        for age in (30, 2)
    )
    RunMetric.objects.bulk_create(
        RunMetric(run=r, task=task, name=name, value=round(random.random(), 4))
        for r in runs
        for task, name in (
            ("perplexity", "perplexity"),
            ("multiple_choice", "acc"),
            ("refusal", "refusal_rate"),
        )
    )


def _use_cases(rng, entries, agencies, versions, user, reviewer):
    questionnaire = Questionnaire.objects.get(name="aia", version="1")
    tiers = (RiskTier.MINIMAL, RiskTier.LIMITED, RiskTier.HIGH)
    statuses = [S.APPROVED] * 8 + [S.SUSPENDED, S.RETIRED]
    today = timezone.localdate()

    def case(i: int, status: str) -> UseCase:
        version = versions[i % len(versions)]
        words = " ".join(rng.sample(WORDS, 3))
        return UseCase(
            agency=version.model.agency,
            model_version=version,
            title=f"Use case {i}: {words}",
            purpose=f"Helps staff with {words}.",
            public_service=f"Service {i % 50}",
            valid_until=today + timedelta(400),
            status=status,
            risk_tier=tiers[i % 3],
            risk_score=10 * (i % 3),
            questionnaire=questionnaire,
            created_by=user,
        )

    listed = UseCase.objects.bulk_create(
        case(i, statuses[i % 10]) for i in range(entries)
    )
    UseCase.objects.bulk_create(case(entries + i, S.DRAFT) for i in range(entries // 5))
    results = PolicyResult.objects.bulk_create(
        PolicyResult(
            use_case=u,
            model_version=u.model_version,
            artifact_digest=u.model_version.artifact_digest,
            risk_tier=u.risk_tier,
            trigger="submission",
            passed=True,
        )
        for u in listed
    )
    now = timezone.now()
    submissions = Submission.objects.bulk_create(
        Submission(
            use_case=u,
            number=1,
            submitted_by=user,
            submitted_at=now,
            model_version=u.model_version,
            artifact_digest=u.model_version.artifact_digest,
            policy_result=r,
            snapshot={},
            snapshot_sha256=_hex("s", u.pk),
        )
        for u, r in zip(listed, results, strict=True)
    )
    return _decisions(rng, listed, results, submissions, reviewer)


def _decisions(rng, listed, results, submissions, reviewer) -> list[Decision]:
    """An approval per use case, then its suspension or retirement if any."""
    now = timezone.now()
    rows = []
    for u, r, sub in zip(listed, results, submissions, strict=True):
        at = now - timedelta(days=rng.randint(20, 300))
        rows.append(
            Decision(
                use_case=u,
                submission=sub,
                model_version=u.model_version,
                artifact_digest=u.model_version.artifact_digest,
                kind=DecisionKind.APPROVE,
                reviewer=reviewer,
                rationale="Evidence complete.",
                policy_result=r,
                from_status=S.IN_REVIEW,
                to_status=S.APPROVED,
                decided_at=at,
                approved_at=at,
                expires_at=at + timedelta(days=365),
            )
        )
        if u.status != S.APPROVED:
            kind = (
                DecisionKind.SUSPEND
                if u.status == S.SUSPENDED
                else (DecisionKind.RETIRE)
            )
            rows.append(
                Decision(
                    use_case=u,
                    submission=sub,
                    model_version=u.model_version,
                    artifact_digest=u.model_version.artifact_digest,
                    kind=kind,
                    reviewer=reviewer,
                    rationale="Reports received.",
                    from_status=S.APPROVED,
                    to_status=u.status,
                    decided_at=at + timedelta(days=10),
                )
            )
    return Decision.objects.bulk_create(rows)


def _audit_chain(decisions) -> None:
    """One event per decision (after a filler), signed every 1,000 events."""
    actions = {
        DecisionKind.APPROVE: "use_case.approved",
        DecisionKind.SUSPEND: "use_case.suspended",
        DecisionKind.RETIRE: "use_case.retired",
    }
    head = AuditChainHead.objects.get_or_create(pk=1)[0]
    seq, prev = head.seq, head.hash or GENESIS_HASH
    batch = []
    for decision in sorted(decisions, key=lambda d: (d.decided_at, d.pk)):
        for action, object_type, object_id, payload in (
            (
                "policy.evaluated",
                "governance.policyresult",
                str(decision.policy_result_id or 0),
                {"passed": True},
            ),
            (
                actions[decision.kind],
                "governance.usecase",
                str(decision.use_case_id),
                {
                    "decision_id": decision.pk,
                    "use_case_id": decision.use_case_id,
                    "kind": decision.kind,
                },
            ),
        ):
            seq += 1
            fields = {
                "seq": seq,
                "created_at": decision.decided_at,
                "actor_label": "bench#1",
                "agency_slug": "",
                "action": action,
                "object_type": object_type,
                "object_id": object_id,
                "payload": payload,
                "prev_hash": prev,
            }
            digest = event_hash(fields)
            batch.append(
                AuditEvent(
                    **{
                        **fields,
                        "payload": audit_services.canonical_json(payload).decode(),
                    },
                    hash=digest,
                )
            )
            prev = digest
            if seq % EVENTS_PER_CHECKPOINT == 0:
                _flush(batch, seq, prev)
    _flush(batch, seq, prev)


def _flush(batch: list, seq: int, head_hash: str) -> None:
    if not batch:
        return
    with transaction.atomic():
        head = AuditChainHead.objects.select_for_update().get(pk=1)
        tree = BulkNodes(head)
        nodes = [
            AuditMerkleNode(id=key, level=level, index=index, hash=value)
            for event in batch
            for key, level, index, value in tree.add(event.hash)
        ]
        AuditEvent.objects.bulk_create(batch)
        AuditMerkleNode.objects.bulk_create(nodes)
        AuditChainHead.objects.filter(pk=1).update(
            seq=seq, hash=head_hash, frontier=tree.edge
        )
    batch.clear()
    audit_services.checkpoint_create()


def seed(entries: int) -> None:
    rng = random.Random(11)
    random.seed(11)
    users = get_user_model().objects
    user = users.create_user(username="bench", password=None)
    reviewer = users.create_user(username="bench-reviewer", password=None)
    agencies, versions = _catalogue(rng, entries, user)
    versions = list(ModelVersion.objects.select_related("model__agency"))
    _runs(versions, user)
    decisions = _use_cases(rng, entries, agencies, versions, user, reviewer)
    _audit_chain(decisions)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


# --- measuring -------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def summary(label: str, seconds: list[float], queries: int) -> dict:
    ms = [s * 1000 for s in seconds]
    return {
        "label": label,
        "requests": len(ms),
        "mean_ms": round(statistics.fmean(ms), 2),
        "p50_ms": round(percentile(ms, 0.50), 2),
        "p95_ms": round(percentile(ms, 0.95), 2),
        "p99_ms": round(percentile(ms, 0.99), 2),
        "queries": queries,
    }


def _timed(client: Client, url: str) -> tuple[float, int, int]:
    # The log is a bounded deque: once full, CaptureQueriesContext counts 0.
    connection.queries_log.clear()
    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        response = client.get(url)
        body = (
            b"".join(response.streaming_content)
            if response.streaming
            else (response.content)
        )
        elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"{url} answered {response.status_code}")
    return elapsed, len(queries), len(body)


def measure(*, requests: int, warmup: int, csv_repeats: int, pages) -> dict:
    """Each page's timings and queries; static names unhashed (no collectstatic)."""
    storages = {
        **settings.STORAGES,
        "staticfiles": {
            "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        },
    }
    with override_settings(STORAGES=storages):
        return _measure(
            requests=requests, warmup=warmup, csv_repeats=csv_repeats, pages=pages
        )


def _measure(*, requests: int, warmup: int, csv_repeats: int, pages) -> dict:
    listed = register_use_cases()
    entry = listed.filter(status=S.SUSPENDED).values_list("pk", flat=True).first()
    client = Client()
    report: dict = {"pages": {}}
    for name, url, label in pages:
        url = url.format(entry=entry)
        for _ in range(warmup):
            _timed(client, url)
        runs = [_timed(client, url) for _ in range(requests)]
        report["pages"][name] = {
            **summary(label, [r[0] for r in runs], max(r[1] for r in runs)),
            "url": url,
        }
    downloads = [_timed(client, "/register.csv") for _ in range(csv_repeats)]
    report["csv"] = {
        "rows": listed.count(),
        "bytes": downloads[0][2],
        "median_s": round(statistics.median(d[0] for d in downloads), 3),
        "queries": downloads[0][1],
    }
    report["listed"] = listed.count()
    report["unlisted"] = UseCase.objects.exclude(pk__in=listed.values("pk")).count()
    report["list_p95_ms"] = report["pages"]["list"]["p95_ms"]
    return report
