"""The reviewers' pages: the review queue, every use case, and the review page.

For the oversight body (reviewers and platform administrators, as
``registry.selectors.is_oversight``); anyone else signed in gets 403 and an
anonymous reader is sent to sign in. The review page shows the evidence
beside the decision form; the form calls the same services as the API's
decision actions (``governance.api.decisions``), whose refusals (four-eyes
rules, an evidence that fails, a wrong status) are shown as form errors.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, OuterRef, Q, Subquery
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views import View

from config.exceptions import DomainError
from governance.models import (
    Decision,
    DecisionKind,
    PolicyResult,
    Submission,
    UseCase,
    UseCaseStatus,
    UseCaseTransition,
)
from governance.portal.duties import duty_conflicts, explain_refusal
from governance.portal.evidence import review_evidence, review_use_case
from governance.portal.forms.review import (
    ACTIONS_BY_STATUS,
    START_REVIEW,
    STATUS_LABELS,
    DecisionForm,
    UseCaseFilterForm,
)
from governance.portal.readable import (
    DATASET_ROLE_LABELS,
    PERSONAL_DATA_LABELS,
    tier_label,
)
from governance.services.decisions import (
    use_case_approve,
    use_case_reinstate,
    use_case_reject,
    use_case_request_changes,
    use_case_retire,
    use_case_suspend,
)
from governance.services.lifecycle import use_case_start_review
from registry.models import Agency
from registry.selectors import is_oversight

PAGE_SIZE = 25
QUEUE_STATUSES = (UseCaseStatus.SUBMITTED, UseCaseStatus.IN_REVIEW)
# The same service per decision as governance.api.decisions._SERVICES.
DECISION_SERVICES = {
    DecisionKind.APPROVE: use_case_approve,
    DecisionKind.REJECT: use_case_reject,
    DecisionKind.REQUEST_CHANGES: use_case_request_changes,
    DecisionKind.SUSPEND: use_case_suspend,
    DecisionKind.REINSTATE: use_case_reinstate,
    DecisionKind.RETIRE: use_case_retire,
}


class OversightRequiredMixin(LoginRequiredMixin):
    """Signed in (else the sign-in page) and of the oversight body (else 403)."""

    def dispatch(self, request, *args, **kwargs):
        if request.user.is_authenticated and not is_oversight(request.user):
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)


def annotated_use_cases(user):
    """Use cases ``user`` may see, with what the lists show joined or annotated."""
    latest = PolicyResult.objects.filter(use_case=OuterRef("pk")).order_by(
        "-created_at", "-id"
    )
    rounds = UseCaseTransition.objects.filter(
        use_case=OuterRef("use_case_id"), to_status=UseCaseStatus.IN_REVIEW
    ).order_by("-id")
    approvals = (
        Decision.objects.filter(
            use_case=OuterRef("pk"),
            kind=DecisionKind.APPROVE,
            review_round=Subquery(rounds.values("pk")[:1]),
        )
        .values("use_case")
        .annotate(n=Count("pk"))
        .values("n")
    )
    submitted = Submission.objects.filter(use_case=OuterRef("pk")).order_by("-number")
    return (
        UseCase.objects.visible_to(user)
        .select_related("agency", "model_version__model")
        .annotate(
            latest_passed=Subquery(latest.values("passed")[:1]),
            round_approvals=Subquery(approvals[:1]),
            last_submitted_at=Subquery(submitted.values("submitted_at")[:1]),
        )
    )


def _page(request, queryset):
    return Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))


def _list_context(page) -> dict:
    for use_case in page.object_list:
        use_case.status_label = STATUS_LABELS.get(use_case.status, use_case.status)
        use_case.tier_label = tier_label(use_case.risk_tier)
    return {"page": page, "use_cases": page.object_list}


class ReviewQueueView(OversightRequiredMixin, View):
    """Use cases submitted or in review, the longest waiting first."""

    def get(self, request):
        queue = (
            annotated_use_cases(request.user)
            .filter(status__in=QUEUE_STATUSES)
            .order_by("last_submitted_at", "pk")
        )
        page = _page(request, queue)
        return render(request, "portal/review/queue.html", _list_context(page))


class UseCaseListView(OversightRequiredMixin, View):
    """Every use case across agencies, filtered by agency, status, tier, words."""

    def get(self, request):
        agencies = list(Agency.objects.order_by("name"))
        form = UseCaseFilterForm(request.GET or None, agencies=agencies)
        use_cases = annotated_use_cases(request.user).order_by("-created_at", "-pk")
        if form.is_valid():
            data = form.cleaned_data
            if data["q"]:
                use_cases = use_cases.filter(
                    Q(title__icontains=data["q"])
                    | Q(purpose__icontains=data["q"])
                    | Q(public_service__icontains=data["q"])
                )
            if data["agency"]:
                use_cases = use_cases.filter(agency__slug=data["agency"])
            if data["status"]:
                use_cases = use_cases.filter(status=data["status"])
            if data["risk_tier"] == "none":
                use_cases = use_cases.filter(risk_tier__isnull=True)
            elif data["risk_tier"]:
                use_cases = use_cases.filter(risk_tier=data["risk_tier"])
        query = request.GET.copy()
        query.pop("page", None)
        page = _page(request, use_cases)
        return render(
            request,
            "portal/review/use_cases.html",
            {**_list_context(page), "form": form, "query": query.urlencode()},
        )


class ReviewView(OversightRequiredMixin, View):
    """The evidence of one use case beside the decision form."""

    def _load(self, request, pk: int):
        try:
            use_case = review_use_case(UseCase.objects.visible_to(request.user), pk)
        except UseCase.DoesNotExist:
            raise Http404 from None
        return use_case, review_evidence(use_case)

    def _form(self, evidence, data=None) -> DecisionForm:
        return DecisionForm(
            data,
            actions=ACTIONS_BY_STATUS.get(evidence.use_case.status, []),
            failed_rules=evidence.failed_rules,
        )

    def _render(self, request, evidence, form, refusal=None, status=200):
        conflicts = duty_conflicts(
            request.user,
            evidence.use_case,
            submission=evidence.submission,
            result=evidence.result,
            round_approvals=evidence.round_approvals,
        )
        use_case = evidence.use_case
        for link in evidence.datasets:
            link.role_label = DATASET_ROLE_LABELS.get(link.role, link.role)
            link.personal_label = PERSONAL_DATA_LABELS.get(
                link.dataset_version.personal_data, link.dataset_version.personal_data
            )
        for transition in evidence.transitions:
            transition.from_label = STATUS_LABELS.get(transition.from_status, "")
            transition.to_label = STATUS_LABELS.get(transition.to_status, "")
        context = {
            "use_case": use_case,
            "evidence": evidence,
            "status_label": STATUS_LABELS.get(use_case.status, use_case.status),
            "tier_label": tier_label(use_case.risk_tier),
            "form": form,
            "conflicts": conflicts,
            "refusal": refusal,
            **evidence.rows,
        }
        return render(request, "portal/review/review.html", context, status=status)

    def get(self, request, pk: int):
        _, evidence = self._load(request, pk)
        return self._render(request, evidence, self._form(evidence))

    def post(self, request, pk: int):
        use_case, evidence = self._load(request, pk)
        form = self._form(evidence, request.POST)
        if not form.is_valid():
            return self._render(request, evidence, form, status=400)
        try:
            done = self._decide(request, use_case, form.cleaned_data)
        except DomainError as exc:
            refusal = {
                "rule": explain_refusal(exc.code),
                "message": exc.message,
                "code": exc.code,
            }
            form.add_error(None, exc.message)
            status = getattr(exc, "status_code", 400)
            return self._render(request, evidence, form, refusal, status=status)
        messages.success(request, done)
        return redirect("governance_portal:review", pk=use_case.pk)

    def _decide(self, request, use_case: UseCase, data: dict) -> str:
        """Call the one service of the chosen action; say what happened."""
        action = data["action"]
        if action == START_REVIEW:
            use_case_start_review(actor=request.user, use_case=use_case)
            return _("The review of “%(title)s” has started.") % {
                "title": use_case.title
            }
        arguments = {
            "actor": request.user,
            "use_case": use_case,
            "rationale": data["rationale"],
        }
        if data.get("waiver_rule_ids"):
            arguments.update(
                waiver_rule_ids=list(data["waiver_rule_ids"]),
                waiver_justification=data.get("waiver_justification", ""),
            )
        decision = DECISION_SERVICES[action](**arguments)
        if decision.to_status == decision.from_status:
            return _(
                "Your approval is recorded. This high-risk use case stays in "
                "review until a second reviewer approves it."
            )
        return _("Decision recorded: the use case is now “%(status)s”.") % {
            "status": STATUS_LABELS.get(decision.to_status, decision.to_status)
        }
