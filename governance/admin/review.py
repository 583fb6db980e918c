"""Use cases, policies, the review queue and the decision records in the admin."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Count, OuterRef, Q, Subquery
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from config.admin import ReadOnlyAdmin, ReadOnlyInline
from config.exceptions import DomainError
from governance.models import (
    Attestation,
    Decision,
    DecisionKind,
    EvaluationRun,
    Policy,
    PolicyResult,
    Questionnaire,
    ReviewQueueItem,
    Submission,
    UseCase,
    UseCaseStatus,
    UseCaseTransition,
    Waiver,
)
from governance.selectors import review_round_of
from governance.services.attestations import attestation_is_authentic, evidence_run_ids
from governance.services.decisions import (
    use_case_approve,
    use_case_reject,
    use_case_request_changes,
)
from governance.services.lifecycle import (
    RATIONALE_MAX_LENGTH,
    WAIVER_MAX_JUSTIFICATION,
    WAIVER_MIN_JUSTIFICATION,
    use_case_start_review,
)
from registry.selectors import is_oversight

# --- Use cases, questionnaires, policies and results --------------------------
# Read-only: every write goes through governance.services (API or portal), so
# the audit chain sees it; questionnaires, policy versions and policy results
# are immutable anyway (database triggers refuse UPDATE and DELETE).


@admin.register(Questionnaire)
class QuestionnaireAdmin(ReadOnlyAdmin):
    list_display = ["name", "version", "title", "created_at"]
    search_fields = ["name", "title"]
    fields = ["name", "version", "title", "definition", "created_at"]
    readonly_fields = fields


class PolicyResultInline(ReadOnlyInline):
    """The verdicts on a use case, newest first, beside its content."""

    model = PolicyResult
    fields = ["id", "created_at", "trigger", "passed", "artifact_digest"]
    ordering = ["-created_at"]
    show_change_link = True


@admin.register(UseCase)
class UseCaseAdmin(ReadOnlyAdmin):
    list_display = [
        "title",
        "agency",
        "model_version",
        "status",
        "risk_tier",
        "risk_score",
        "valid_until",
    ]
    list_filter = ["status", "risk_tier", "agency"]
    list_select_related = ["agency", "model_version__model__agency"]
    search_fields = ["title", "purpose", "public_service"]
    fields = [
        "agency",
        "model_version",
        "title",
        "purpose",
        "public_service",
        "affected_people",
        "decision_informed",
        "human_oversight",
        "valid_until",
        "status",
        "risk_tier",
        "risk_score",
        "questionnaire",
        "answers",
        "risk_reasons",
        "assessed_at",
        "assessed_by",
        "created_by",
        "created_at",
        "updated_at",
    ]
    readonly_fields = fields
    inlines = [PolicyResultInline]


@admin.register(Policy)
class PolicyAdmin(ReadOnlyAdmin):
    list_display = [
        "name",
        "version",
        "title",
        "scope",
        "agency",
        "risk_tier",
        "is_active",
    ]
    list_filter = ["scope", "risk_tier", "is_active"]
    list_select_related = ["agency"]
    search_fields = ["name", "title"]
    fields = [
        "name",
        "version",
        "title",
        "description",
        "scope",
        "agency",
        "risk_tier",
        "rules",
        "is_active",
        "created_by",
        "created_at",
    ]
    readonly_fields = fields


@admin.register(PolicyResult)
class PolicyResultAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "use_case",
        "model_version",
        "trigger",
        "passed",
        "created_at",
    ]
    list_filter = ["passed", "trigger", "risk_tier"]
    list_select_related = ["use_case", "model_version__model__agency"]
    fields = [
        "use_case",
        "model_version",
        "artifact_digest",
        "risk_tier",
        "trigger",
        "passed",
        "policies",
        "outcomes",
        "requested_by",
        "created_at",
    ]
    readonly_fields = fields


# --- The review queue and the decision records --------------------------------
# The review queue lists use cases submitted or in review. Its page shows the
# submission, the latest policy result, the evaluation runs it relied on (with
# their metrics and attestations) and the approvals of the current round
# beside a decision form; the form calls the governance.services.lifecycle and
# decisions services as the signed-in reviewer, so the four-eyes rules and the
# audit chain apply exactly as through the API. Submissions, status changes,
# waivers, decisions and attestations are records under legal hold.


QUEUE_STATUSES = [UseCaseStatus.SUBMITTED, UseCaseStatus.IN_REVIEW]


class _Record(ReadOnlyAdmin):
    """Read-only for oversight; never added, changed or deleted (legal hold)."""

    def has_module_permission(self, request) -> bool:
        return is_oversight(request.user)

    def has_view_permission(self, request, obj=None) -> bool:
        return is_oversight(request.user)


class DecisionForm(forms.Form):
    """What a reviewer decides; the service checks everything that matters."""

    ACTIONS = [
        ("start_review", "Start the review"),
        (DecisionKind.APPROVE, "Approve"),
        (DecisionKind.REQUEST_CHANGES, "Request changes"),
        (DecisionKind.REJECT, "Reject"),
    ]

    action = forms.ChoiceField(choices=ACTIONS)
    rationale = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 80}),
        required=False,
        max_length=RATIONALE_MAX_LENGTH,
        help_text="Required for a decision; the signed statement carries it.",
    )
    waiver_rule_ids = forms.CharField(
        required=False,
        label="Waive failed rules",
        help_text="policy/rule_id, separated by commas; approvals only.",
    )
    waiver_justification = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        required=False,
        max_length=WAIVER_MAX_JUSTIFICATION,
        help_text=f"At least {WAIVER_MIN_JUSTIFICATION} characters.",
    )


@admin.register(ReviewQueueItem)
class ReviewQueueAdmin(admin.ModelAdmin):
    """Use cases waiting for oversight, with the evidence beside the decision."""

    change_form_template = "admin/governance/reviewqueueitem/change_form.html"
    list_display = [
        "title",
        "agency",
        "model_version",
        "risk_tier",
        "status",
        "submitted_at",
        "policy_verdict",
        "approvals_in_round",
    ]
    list_filter = ["status", "risk_tier", "agency"]
    list_select_related = ["agency", "model_version__model__agency"]
    search_fields = ["title", "purpose", "public_service"]
    ordering = ["updated_at"]
    actions = ["start_review"]
    fieldsets = [
        (
            "Use case",
            {
                "fields": [
                    "agency",
                    "model_version",
                    "title",
                    "purpose",
                    "public_service",
                    "affected_people",
                    "decision_informed",
                    "human_oversight",
                    "valid_until",
                    "status",
                    "risk_tier",
                    "risk_score",
                    "risk_reasons",
                ]
            },
        ),
        ("Submission", {"fields": ["submission_panel"]}),
        ("Latest policy result", {"fields": ["policy_panel"]}),
        ("Evaluation evidence", {"fields": ["evidence_panel"]}),
        ("This review round", {"fields": ["round_panel"]}),
    ]
    readonly_fields = [name for _, options in fieldsets for name in options["fields"]]

    # Who may open the queue: oversight only; the services decide the rest.
    def has_module_permission(self, request) -> bool:
        return is_oversight(request.user)

    def has_view_permission(self, request, obj=None) -> bool:
        return is_oversight(request.user)

    def has_change_permission(self, request, obj=None) -> bool:
        return is_oversight(request.user)

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
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
        submitted = Submission.objects.filter(use_case=OuterRef("pk")).order_by(
            "-number"
        )
        return (
            super()
            .get_queryset(request)
            .filter(status__in=QUEUE_STATUSES)
            .annotate(
                latest_passed=Subquery(latest.values("passed")[:1]),
                round_approvals=Subquery(approvals[:1]),
                last_submitted_at=Subquery(submitted.values("submitted_at")[:1]),
            )
        )

    @admin.display(description="submitted", ordering="last_submitted_at")
    def submitted_at(self, item) -> object:
        return item.last_submitted_at

    @admin.display(description="policy", boolean=True)
    def policy_verdict(self, item) -> bool | None:
        return item.latest_passed

    @admin.display(description="approvals")
    def approvals_in_round(self, item) -> int:
        return item.round_approvals or 0

    # --- evidence panels ---

    @admin.display(description="submission")
    def submission_panel(self, item) -> str:
        submission = item.submissions.select_related("submitted_by").first()
        if submission is None:
            return "—"
        return format_html(
            "Submission {} by <b>{}</b> at {}; artifact <code>{}</code>; "
            "snapshot SHA-256 <code>{}</code>",
            submission.number,
            submission.submitted_by,
            submission.submitted_at,
            submission.artifact_digest,
            submission.snapshot_sha256,
        )

    def _latest_result(self, item) -> PolicyResult | None:
        if not hasattr(item, "_latest_result"):
            item._latest_result = (
                PolicyResult.objects.filter(use_case=item)
                .order_by("-created_at", "-id")
                .first()
            )
        return item._latest_result

    @admin.display(description="verdict")
    def policy_panel(self, item) -> str:
        result = self._latest_result(item)
        if result is None:
            return "No policy result."
        rows = format_html_join(
            "",
            "<tr><td><code>{}/{}</code></td><td><b>{}</b></td><td>{}</td></tr>",
            (
                (o["policy"], o["rule_id"], o["status"], o["message"])
                for o in result.outcomes
            ),
        )
        failed = [f"{p}/{r}" for p, r in result.failed_rules()]
        return format_html(
            "<p>Result {} ({}, {}) on artifact <code>{}</code>: <b>{}</b>{}</p>"
            "<table><tr><th>rule</th><th>status</th><th>why</th></tr>{}</table>",
            result.pk,
            result.trigger,
            result.created_at,
            result.artifact_digest,
            "passed" if result.passed else "failed",
            f" — to waive: {', '.join(failed)}" if failed else "",
            rows,
        )

    @admin.display(description="runs relied on")
    def evidence_panel(self, item) -> str:
        runs = (
            EvaluationRun.objects.filter(
                pk__in=evidence_run_ids(self._latest_result(item))
            )
            .select_related("suite", "requested_by")
            .prefetch_related("metrics")
            .order_by("pk")
        )
        attested = dict(
            Attestation.objects.filter(run__in=runs).values_list(
                "run_id", "statement_sha256"
            )
        )
        if not runs:
            return "No evaluation run is referenced."
        return format_html_join(
            "",
            "<p>Run {} — {} — requested by {} — finished {}<br>{}<br>"
            "attestation <code>{}</code></p>",
            (
                (
                    run.pk,
                    run.suite,
                    run.requested_by,
                    run.finished_at,
                    ", ".join(
                        f"{m.task}.{m.name}={m.value:.4g}" for m in run.metrics.all()
                    ),
                    attested.get(run.pk, "none"),
                )
                for run in runs
            ),
        )

    @admin.display(description="decisions")
    def round_panel(self, item) -> str:
        decisions = Decision.objects.filter(use_case=item).select_related("reviewer")
        current = review_round_of(item)
        decisions = decisions.filter(
            Q(review_round=current) if current else Q(pk__in=[])
        )
        if not decisions:
            return "No decision in this round yet."
        return format_html_join(
            "",
            "<p>{} by {} at {}: {}</p>",
            ((d.kind, d.reviewer, d.decided_at, d.rationale) for d in decisions),
        )

    # --- writing through the services ---

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        item = self.get_object(request, unquote(object_id)) if object_id else None
        form = DecisionForm(prefix="decision")
        if request.method == "POST" and item is not None:
            if not self.has_change_permission(request, item):
                raise PermissionDenied
            form = DecisionForm(request.POST, prefix="decision")
            if form.is_valid():
                try:
                    done = self._decide(request, item, form.cleaned_data)
                except DomainError as exc:
                    form.add_error(None, f"{exc.message} [{exc.code}]")
                else:
                    self.message_user(request, done, messages.SUCCESS)
                    return HttpResponseRedirect(
                        reverse("admin:governance_reviewqueueitem_changelist")
                    )
            # Shown again with its errors; the admin's own POST handling would
            # try to save the model, which never happens here.
            request.method = "GET"
        context = {
            **(extra_context or {}),
            "decision_form": form,
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
            "show_delete": False,
        }
        return super().changeform_view(request, object_id, form_url, context)

    def _decide(self, request, item, data: dict) -> str:
        """Call the one service the reviewer chose; return what happened."""
        action = data["action"]
        if action == "start_review":
            use_case_start_review(actor=request.user, use_case=item)
            return f"Review of “{item.title}” started."
        rule_ids = [r.strip() for r in data["waiver_rule_ids"].split(",") if r.strip()]
        if action == DecisionKind.APPROVE:
            decision = use_case_approve(
                actor=request.user,
                use_case=item,
                rationale=data["rationale"],
                waiver_rule_ids=rule_ids or None,
                waiver_justification=data["waiver_justification"],
            )
        elif rule_ids:
            raise DomainError(
                "Only an approval takes a waiver.", code="waiver_not_allowed"
            )
        elif action == DecisionKind.REQUEST_CHANGES:
            decision = use_case_request_changes(
                actor=request.user, use_case=item, rationale=data["rationale"]
            )
        else:
            decision = use_case_reject(
                actor=request.user, use_case=item, rationale=data["rationale"]
            )
        return (
            f"Decision {decision.pk} ({decision.get_kind_display().lower()}) "
            f"recorded on “{item.title}”: now {decision.to_status}."
        )

    @admin.action(description="Start the review of the selected submitted use cases")
    def start_review(self, request, queryset) -> None:
        for item in queryset:
            try:
                use_case_start_review(actor=request.user, use_case=item)
            except DomainError as exc:
                self.message_user(
                    request, f"{item.title}: {exc.message}", messages.ERROR
                )
            else:
                self.message_user(
                    request, f"{item.title}: review started.", messages.SUCCESS
                )


@admin.register(Submission)
class SubmissionAdmin(_Record):
    list_display = ["use_case", "number", "submitted_by", "submitted_at"]
    list_select_related = ["use_case", "submitted_by"]
    fields = [
        "use_case",
        "number",
        "submitted_by",
        "submitted_at",
        "model_version",
        "artifact_digest",
        "policy_result",
        "snapshot",
        "snapshot_sha256",
    ]
    readonly_fields = fields


@admin.register(UseCaseTransition)
class UseCaseTransitionAdmin(_Record):
    list_display = ["use_case", "from_status", "to_status", "actor", "created_at"]
    list_filter = ["to_status"]
    list_select_related = ["use_case", "actor"]
    fields = [
        "use_case",
        "from_status",
        "to_status",
        "actor",
        "reason",
        "submission",
        "decision",
        "created_at",
    ]
    readonly_fields = fields


@admin.register(Waiver)
class WaiverAdmin(_Record):
    list_display = ["id", "use_case", "policy_result", "granted_by", "granted_at"]
    list_select_related = ["use_case", "granted_by"]
    fields = [
        "use_case",
        "policy_result",
        "rule_ids",
        "justification",
        "granted_by",
        "granted_at",
    ]
    readonly_fields = fields


@admin.register(Decision)
class DecisionAdmin(_Record):
    list_display = ["id", "use_case", "kind", "reviewer", "to_status", "decided_at"]
    list_filter = ["kind", "to_status"]
    list_select_related = ["use_case", "reviewer"]
    fields = [
        "use_case",
        "submission",
        "review_round",
        "model_version",
        "artifact_digest",
        "kind",
        "reviewer",
        "rationale",
        "policy_result",
        "waiver",
        "from_status",
        "to_status",
        "decided_at",
        "approved_at",
        "expires_at",
    ]
    readonly_fields = fields


@admin.register(Attestation)
class AttestationAdmin(_Record):
    list_display = ["id", "run", "decision", "payload_type", "created_at"]
    list_filter = ["payload_type"]
    fields = [
        "run",
        "decision",
        "payload_type",
        "statement_sha256",
        "key_id",
        "authentic",
        "statement",
        "envelope",
        "created_at",
    ]
    readonly_fields = fields

    @admin.display(description="signature verifies", boolean=True)
    def authentic(self, attestation: Attestation) -> bool:
        return attestation_is_authentic(attestation)
