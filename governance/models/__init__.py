"""Governance records, one module per sub-domain, re-exported here.

The audit chain's records live in the ``audit`` app.
``evaluations`` suites and runs; ``use_cases`` use cases and questionnaires;
``policies`` policies and their results; ``decisions`` submissions,
transitions, waivers, decisions and attestations; ``schedules``
evaluation schedules and their ticks; ``outbox`` what MLflow is owed;
``incidents`` citizens' incident reports on register entries;
``modifications`` how a derived model version differs from its base.
"""

from governance.models.decisions import (
    Attestation,
    AttestationQuerySet,
    Decision,
    DecisionKind,
    DecisionQuerySet,
    ReviewQueueItem,
    Submission,
    UseCaseTransition,
    Waiver,
)
from governance.models.evaluations import (
    LM_KINDS,
    LM_TASKS,
    EvaluationRun,
    EvaluationRunQuerySet,
    EvaluationSuite,
    EvaluationSuiteQuerySet,
    RunMetric,
    RunStatus,
    SuiteDataset,
)
from governance.models.federation import (
    FederatedAttestation,
    FederatedVersion,
    FederationImport,
    FederationPeer,
)
from governance.models.incidents import (
    IncidentReport,
    IncidentReportQuerySet,
    IncidentStatus,
)
from governance.models.modifications import (
    AssessmentStatus,
    ModificationAssessment,
    ModificationAssessmentQuerySet,
    ModificationClass,
)
from governance.models.outbox import OutboxKind, OutboxMessage
from governance.models.policies import (
    Policy,
    PolicyQuerySet,
    PolicyResult,
    PolicyResultQuerySet,
    PolicyScope,
    PolicyTrigger,
    RuleStatus,
)
from governance.models.schedules import (
    Comparison,
    EvaluationSchedule,
    EvaluationScheduleQuerySet,
    ScheduleOrigin,
    ScheduleTick,
    TickOutcome,
)
from governance.models.use_cases import (
    EDITABLE_USE_CASE_STATUSES,
    Questionnaire,
    RiskTier,
    UseCase,
    UseCaseQuerySet,
    UseCaseStatus,
)

__all__ = [
    "EDITABLE_USE_CASE_STATUSES",
    "LM_KINDS",
    "LM_TASKS",
    "AssessmentStatus",
    "Attestation",
    "AttestationQuerySet",
    "Comparison",
    "Decision",
    "DecisionKind",
    "DecisionQuerySet",
    "EvaluationRun",
    "EvaluationRunQuerySet",
    "EvaluationSchedule",
    "EvaluationScheduleQuerySet",
    "EvaluationSuite",
    "EvaluationSuiteQuerySet",
    "FederatedAttestation",
    "FederatedVersion",
    "FederationImport",
    "FederationPeer",
    "IncidentReport",
    "IncidentReportQuerySet",
    "IncidentStatus",
    "ModificationAssessment",
    "ModificationAssessmentQuerySet",
    "ModificationClass",
    "OutboxKind",
    "OutboxMessage",
    "Policy",
    "PolicyQuerySet",
    "PolicyResult",
    "PolicyResultQuerySet",
    "PolicyScope",
    "PolicyTrigger",
    "Questionnaire",
    "ReviewQueueItem",
    "RiskTier",
    "RuleStatus",
    "RunMetric",
    "RunStatus",
    "ScheduleOrigin",
    "ScheduleTick",
    "Submission",
    "SuiteDataset",
    "TickOutcome",
    "UseCase",
    "UseCaseQuerySet",
    "UseCaseStatus",
    "UseCaseTransition",
    "Waiver",
]
