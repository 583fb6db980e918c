"""Every route of the governance API, included under /api/v1/ by config/urls.py.

Three routers, in the order the routes were always matched: evaluations,
then use cases and policies, then the lifecycle, decisions and attestations;
the audit chain's routes (``governance.api.audit``) come last.
"""

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from governance.api import (
    decisions,
    derivations,
    evaluations,
    exports,
    federation,
    modifications,
    openlineage,
    policies,
    register,
    schedules,
    suites,
    use_cases,
)

evaluation_router = SimpleRouter()
evaluation_router.register("suites", suites.EvaluationSuiteViewSet, basename="suite")
evaluation_router.register(
    "evaluations", evaluations.EvaluationRunViewSet, basename="evaluation"
)
evaluation_router.register(
    "evaluation-schedules",
    schedules.EvaluationScheduleViewSet,
    basename="evaluation-schedule",
)

use_case_router = SimpleRouter()
use_case_router.register("use-cases", use_cases.UseCaseViewSet, basename="use-case")
use_case_router.register(
    "questionnaires", use_cases.QuestionnaireViewSet, basename="questionnaire"
)
use_case_router.register("policies", policies.PolicyViewSet, basename="policy")
use_case_router.register(
    "policy-results", policies.PolicyResultViewSet, basename="policy-result"
)

decision_router = SimpleRouter()
decision_router.register("decisions", decisions.DecisionViewSet, basename="decision")
decision_router.register(
    "submissions", decisions.SubmissionViewSet, basename="submission"
)
decision_router.register("waivers", decisions.WaiverViewSet, basename="waiver")
decision_router.register(
    "attestations", decisions.AttestationViewSet, basename="attestation"
)

_TRANSITIONS = [
    ("submit", decisions.UseCaseSubmitView),
    ("start-review", decisions.UseCaseStartReviewView),
    ("approve", decisions.UseCaseApproveView),
    ("reject", decisions.UseCaseRejectView),
    ("request-changes", decisions.UseCaseRequestChangesView),
    ("suspend", decisions.UseCaseSuspendView),
    ("reinstate", decisions.UseCaseReinstateView),
    ("retire", decisions.UseCaseRetireView),
]

urlpatterns = [
    # Evaluations.
    path(
        "model-versions/<int:pk>/evaluations/",
        evaluations.ModelVersionEvaluationsView.as_view(),
        name="model-version-evaluations",
    ),
    path(
        "model-versions/<int:pk>/modification/",
        modifications.ModelVersionModificationView.as_view(),
        name="model-version-modification",
    ),
    path(
        "model-versions/<int:pk>/derive/",
        derivations.ModelVersionDeriveView.as_view(),
        name="model-version-derive",
    ),
    path(
        "model-versions/<int:pk>/quantisation-evidence/",
        derivations.ModelVersionQuantisationEvidenceView.as_view(),
        name="model-version-quantisation-evidence",
    ),
    path(
        "model-versions/<int:pk>/derivation-evidence/",
        derivations.ModelVersionDerivationEvidenceView.as_view(),
        name="model-version-derivation-evidence",
    ),
    path("", include(evaluation_router.urls)),
    # Use cases, questionnaires, policies and policy results.
    path(
        "policies/schema/",
        policies.PolicySchemaView.as_view(),
        name="policy-schema",
    ),
    path("", include(use_case_router.urls)),
    # The lifecycle, decisions and attestations.
    *(
        path(f"use-cases/<int:pk>/{name}/", view.as_view(), name=f"use-case-{name}")
        for name, view in _TRANSITIONS
    ),
    path(
        "use-cases/<int:pk>/history/",
        decisions.UseCaseHistoryView.as_view(),
        name="use-case-history",
    ),
    path(
        "evaluations/<int:pk>/attestation/",
        decisions.EvaluationAttestationView.as_view(),
        name="evaluation-attestation",
    ),
    path(
        "evaluations/<int:pk>/openlineage/",
        openlineage.EvaluationOpenLineageView.as_view(),
        name="evaluation-openlineage",
    ),
    path("in-service/", decisions.InServiceView.as_view(), name="in-service"),
    # The public transparency register (no account needed).
    path("register/", register.RegisterView.as_view(), name="register"),
    path("", include(decision_router.urls)),
    # The audit chain (namespace ``audit``).
    path("audit/", include("governance.api.audit")),
    # Standard exports (model card, ML-BOM, Annex IV, transparency record).
    path(
        "model-versions/<int:pk>/exports/<slug:kind>/",
        exports.ModelVersionExportView.as_view(),
        name="model-version-export",
    ),
    path(
        "use-cases/<int:pk>/exports/<slug:kind>/",
        exports.UseCaseExportView.as_view(),
        name="use-case-export",
    ),
    # Its Merkle tree heads and proofs (namespace ``audit_proofs``).
    path("audit/", include("governance.api.audit_proofs")),
    # Federation: signed bundles between Civitas platforms.
    path(
        "federation/peers/", federation.PeerListView.as_view(), name="federation-peers"
    ),
    path(
        "federation/exports/",
        federation.ExportView.as_view(),
        name="federation-exports",
    ),
    path(
        "federation/imports/",
        federation.ImportView.as_view(),
        name="federation-imports",
    ),
]
