"""HTTP endpoints of the use case lifecycle: submissions, reviews, decisions.

Every transition is one POST view that validates its input, calls exactly
one service (``governance.services.lifecycle`` or ``decisions``) and answers
with a read serializer; the services enforce the state machine and the
four-eyes rules. Reads go through the tenancy querysets: an agency sees the
records of its own use cases, oversight sees all, anyone else gets 404 (no
existence oracle), and anonymous callers 401. Attestations download as the
bare DSSE envelope that
``python -m audit.verify attestation.json --key public.pem`` checks.
Nothing here deletes: the records are under legal hold.
"""

from __future__ import annotations

from datetime import UTC

from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import generics, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from config.exceptions import Conflict
from governance.api.examples import (
    APPROVE_EXAMPLE,
    ATTESTATION,
    DECISION,
    DECISION_ENVELOPE,
    ENVELOPE,
    IN_SERVICE,
    SUBMISSION,
    TRANSITION,
    WAIVER,
    WAIVER_EXAMPLE,
    request,
    response,
)
from governance.api.filters import DecisionFilter
from governance.api.serializers import (
    AttestationSerializer,
    DecisionInputSerializer,
    DecisionSerializer,
    InServiceResponseSerializer,
    SubmissionSerializer,
    TransitionSerializer,
    WaiverSerializer,
)
from governance.models import (
    Attestation,
    Decision,
    DecisionKind,
    EvaluationRun,
    Submission,
    UseCase,
    UseCaseStatus,
    UseCaseTransition,
    Waiver,
)
from governance.selectors import in_service_on
from governance.services.decisions import (
    use_case_approve,
    use_case_reinstate,
    use_case_reject,
    use_case_request_changes,
    use_case_retire,
    use_case_suspend,
)
from governance.services.lifecycle import use_case_start_review, use_case_submit
from registry.api.serializers import ApiErrorSerializer

ENVELOPE_MEDIA_TYPE = "application/json"


ERRORS = {
    400: OpenApiResponse(ApiErrorSerializer, description="Invalid input"),
    403: OpenApiResponse(
        ApiErrorSerializer,
        description="A rule forbids it (four eyes, policy failed, prohibited tier)",
    ),
    404: OpenApiResponse(ApiErrorSerializer, description="Not found or not visible"),
    409: OpenApiResponse(
        ApiErrorSerializer, description="Not allowed from the current status"
    ),
}


def _use_case(request, pk: int) -> UseCase:
    """The use case if the caller may see it; 404 otherwise (no oracle)."""
    return get_object_or_404(UseCase.objects.visible_to(request.user), pk=pk)


def _decision_out(decision: Decision) -> dict:
    decision = Decision.objects.select_related(
        "reviewer", "waiver__granted_by", "attestation"
    ).get(pk=decision.pk)
    return DecisionSerializer(decision).data


class UseCaseSubmitView(APIView):
    """Submit a use case for review; its content is frozen from then on."""

    @extend_schema(
        summary="Submit a use case for review",
        request=None,
        responses={201: SubmissionSerializer, **ERRORS},
        examples=[response("First submission", SUBMISSION, status=201)],
    )
    def post(self, request, pk: int):
        submission = use_case_submit(
            actor=request.user, use_case=_use_case(request, pk)
        )
        return Response(
            SubmissionSerializer(submission).data, status=status.HTTP_201_CREATED
        )


class UseCaseStartReviewView(APIView):
    """Take a submitted use case into review (reviewers)."""

    @extend_schema(
        summary="Start the review of a submitted use case",
        request=None,
        responses={201: TransitionSerializer, **ERRORS},
        examples=[response("In review", TRANSITION, status=201)],
    )
    def post(self, request, pk: int):
        transition = use_case_start_review(
            actor=request.user, use_case=_use_case(request, pk)
        )
        return Response(
            TransitionSerializer(transition).data, status=status.HTTP_201_CREATED
        )


class _DecisionView(APIView):
    """One reviewer decision: validate, call the one service, show the decision."""

    kind: str = ""
    takes_waiver = False

    def post(self, request, pk: int):
        use_case = _use_case(request, pk)
        data = DecisionInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        waiver = data.validated_data.get("waiver")
        if waiver is not None and not self.takes_waiver:
            raise ValidationError(
                {"waiver": ["Only an approval or a reinstatement takes a waiver."]}
            )
        arguments = {
            "actor": request.user,
            "use_case": use_case,
            "rationale": data.validated_data["rationale"],
        }
        if waiver is not None:
            arguments.update(
                waiver_rule_ids=waiver["rule_ids"],
                waiver_justification=waiver["justification"],
            )
        decision = _SERVICES[self.kind](**arguments)
        return Response(_decision_out(decision), status=status.HTTP_201_CREATED)


_SERVICES = {
    DecisionKind.APPROVE: use_case_approve,
    DecisionKind.REJECT: use_case_reject,
    DecisionKind.REQUEST_CHANGES: use_case_request_changes,
    DecisionKind.SUSPEND: use_case_suspend,
    DecisionKind.REINSTATE: use_case_reinstate,
    DecisionKind.RETIRE: use_case_retire,
}


def _decision_schema(summary: str, kind: str, to: str, *, waiver: bool = False):
    decided = {**DECISION, "kind": str(kind), "to_status": str(to)}
    if kind != DecisionKind.APPROVE:
        decided.update(waiver=None, approved_at=None, expires_at=None)
    if kind in (DecisionKind.SUSPEND, DecisionKind.RETIRE):
        decided["from_status"] = str(UseCaseStatus.APPROVED)
    if kind == DecisionKind.REINSTATE:
        decided["from_status"] = str(UseCaseStatus.SUSPENDED)
    examples = [
        request("Rationale only", APPROVE_EXAMPLE),
        response("Decided", decided, status=201),
    ]
    if waiver:
        examples.append(request("With a waiver", WAIVER_EXAMPLE))
    return extend_schema(
        summary=summary,
        request=DecisionInputSerializer,
        responses={201: DecisionSerializer, **ERRORS},
        examples=examples,
    )


@extend_schema_view(
    post=_decision_schema(
        "Approve (a high-risk case needs two reviewers)",
        DecisionKind.APPROVE,
        UseCaseStatus.APPROVED,
        waiver=True,
    )
)
class UseCaseApproveView(_DecisionView):
    """Approve a use case in review, with a waiver of failed rules if needed."""

    kind = DecisionKind.APPROVE
    takes_waiver = True


@extend_schema_view(
    post=_decision_schema(
        "Reject a use case in review", DecisionKind.REJECT, UseCaseStatus.REJECTED
    )
)
class UseCaseRejectView(_DecisionView):
    """Reject a use case in review for good."""

    kind = DecisionKind.REJECT


@extend_schema_view(
    post=_decision_schema(
        "Send a use case back for changes",
        DecisionKind.REQUEST_CHANGES,
        UseCaseStatus.CHANGES_REQUESTED,
    )
)
class UseCaseRequestChangesView(_DecisionView):
    """Send a use case in review back to its agency with what must change."""

    kind = DecisionKind.REQUEST_CHANGES


@extend_schema_view(
    post=_decision_schema(
        "Suspend an approved use case",
        DecisionKind.SUSPEND,
        UseCaseStatus.SUSPENDED,
    )
)
class UseCaseSuspendView(_DecisionView):
    """Take an approved use case out of service."""

    kind = DecisionKind.SUSPEND


@extend_schema_view(
    post=_decision_schema(
        "Reinstate a suspended use case",
        DecisionKind.REINSTATE,
        UseCaseStatus.APPROVED,
        waiver=True,
    )
)
class UseCaseReinstateView(_DecisionView):
    """Put a suspended use case back in service until its approval ends."""

    kind = DecisionKind.REINSTATE
    takes_waiver = True


@extend_schema_view(
    post=_decision_schema(
        "Retire a use case for good", DecisionKind.RETIRE, UseCaseStatus.RETIRED
    )
)
class UseCaseRetireView(_DecisionView):
    """Retire an approved, suspended or expired use case."""

    kind = DecisionKind.RETIRE


class UseCaseHistoryView(generics.ListAPIView):
    """Every status change of one use case, oldest first."""

    serializer_class = TransitionSerializer
    pagination_class = None
    filter_backends: list = []

    @extend_schema(
        summary="The status history of a use case",
        examples=[response("Taken into review", TRANSITION)],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return UseCaseTransition.objects.none()
        use_case = _use_case(self.request, self.kwargs["pk"])
        return (
            UseCaseTransition.objects.filter(use_case=use_case)
            .select_related("actor")
            .order_by("created_at", "id")
        )


def _envelope_response(attestation: Attestation, filename: str) -> Response:
    response = Response(attestation.envelope)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _envelope_responses(envelope: dict) -> dict:
    return {
        200: OpenApiResponse(
            OpenApiTypes.OBJECT,
            description="The DSSE envelope (payload, payloadType, signatures); "
            "check it with python -m audit.verify FILE --key public.pem",
            examples=[OpenApiExample("Signed envelope", value=envelope)],
        ),
        404: OpenApiResponse(
            ApiErrorSerializer, description="Not found or not visible"
        ),
    }


@extend_schema_view(
    list=extend_schema(examples=[response("Approved with a waiver", DECISION)]),
    retrieve=extend_schema(examples=[response("Approved with a waiver", DECISION)]),
)
class DecisionViewSet(viewsets.ReadOnlyModelViewSet):
    """Decisions on the use cases the caller may see, newest first."""

    serializer_class = DecisionSerializer
    filterset_class = DecisionFilter
    ordering_fields = ["decided_at", "id"]
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        return (
            Decision.objects.visible_to(self.request.user)
            .select_related("reviewer", "waiver__granted_by", "attestation")
            # The list shows the statement's digest, not the statement.
            .defer("attestation__statement", "attestation__envelope")
        )

    @extend_schema(
        summary="Download the signed decision",
        responses=_envelope_responses(DECISION_ENVELOPE),
    )
    @action(detail=True, methods=["get"])
    def attestation(self, request, pk=None):
        decision = self.get_object()
        return _envelope_response(
            decision.attestation, f"decision-{decision.pk}-attestation.json"
        )


@extend_schema_view(
    list=extend_schema(examples=[response("First submission", SUBMISSION)]),
    retrieve=extend_schema(examples=[response("First submission", SUBMISSION)]),
)
class SubmissionViewSet(viewsets.ReadOnlyModelViewSet):
    """Submissions of the use cases the caller may see, newest first."""

    serializer_class = SubmissionSerializer
    filterset_fields = ["use_case"]
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        return Submission.objects.filter(
            use_case__in=UseCase.objects.visible_to(self.request.user).values("pk")
        ).select_related("submitted_by")


@extend_schema_view(
    list=extend_schema(examples=[response("Energy rule waived", WAIVER)]),
    retrieve=extend_schema(examples=[response("Energy rule waived", WAIVER)]),
)
class WaiverViewSet(viewsets.ReadOnlyModelViewSet):
    """Waivers granted on the use cases the caller may see, newest first."""

    serializer_class = WaiverSerializer
    filterset_fields = ["use_case", "policy_result"]
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        return Waiver.objects.filter(
            use_case__in=UseCase.objects.visible_to(self.request.user).values("pk")
        ).select_related("granted_by")


@extend_schema_view(
    list=extend_schema(examples=[response("Evaluation attestation", ATTESTATION)]),
    retrieve=extend_schema(examples=[response("Evaluation attestation", ATTESTATION)]),
)
class AttestationViewSet(viewsets.ReadOnlyModelViewSet):
    """Attestations of the runs and decisions the caller may see, newest first."""

    serializer_class = AttestationSerializer
    filterset_fields = ["run", "decision", "payload_type"]
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        return Attestation.objects.visible_to(self.request.user)


class EvaluationAttestationView(APIView):
    """The signed attestation of a succeeded evaluation run."""

    @extend_schema(
        summary="Download the attestation of an evaluation run",
        responses={
            **_envelope_responses(ENVELOPE),
            409: OpenApiResponse(
                ApiErrorSerializer, description="The run has no attestation (yet)"
            ),
        },
    )
    def get(self, request, pk: int):
        run = get_object_or_404(EvaluationRun.objects.visible_to(request.user), pk=pk)
        attestation = Attestation.objects.filter(run=run).first()
        if attestation is None:
            raise Conflict(
                f"Run {run.pk} is {run.status}; only a succeeded or failed run "
                "has an attestation.",
                code="no_attestation",
            )
        return _envelope_response(attestation, f"evaluation-{run.pk}-attestation.json")


class InServiceView(APIView):
    """Which versions were approved for which use cases at an instant."""

    @extend_schema(
        summary="What was in service at an instant",
        parameters=[
            OpenApiParameter(
                "at",
                OpenApiTypes.DATETIME,
                description="An ISO 8601 instant with its offset, e.g. "
                "2026-11-28T12:00:00Z; now when absent",
            )
        ],
        responses={200: InServiceResponseSerializer, 400: ERRORS[400]},
        examples=[response("One use case in service", IN_SERVICE)],
    )
    def get(self, request):
        raw = request.query_params.get("at")
        when = timezone.now()
        if raw is not None:
            try:
                # A "+" left unencoded in a query string arrives as a space.
                when = parse_datetime(raw.replace(" ", "+"))
            except ValueError:
                when = None
            if when is None or timezone.is_naive(when):
                raise ValidationError(
                    {"at": ["Give an ISO 8601 instant with its offset, e.g. Z."]}
                )
            try:
                # PostgreSQL takes offsets up to 15:59 only; the instant is the
                # same in UTC.
                when = when.astimezone(UTC)
            except OverflowError:
                raise ValidationError(
                    {"at": ["The instant is outside the range of dates."]}
                ) from None
        entries = in_service_on(
            when, use_cases=UseCase.objects.visible_to(request.user)
        )
        return Response(
            InServiceResponseSerializer(
                {"at": when, "count": len(entries), "results": entries}
            ).data
        )
