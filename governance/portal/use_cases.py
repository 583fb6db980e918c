"""The agency's use cases: describe one, answer the impact questionnaire, submit it.

Writes go through ``governance.services.use_cases`` (create, update, assess)
and ``governance.services.lifecycle.use_case_submit``, the services the API
calls; their refusals are shown on the form or as a message, never as an
error page. Reads go through ``UseCase.objects.visible_to``: another agency's
use case answers 404. The reviewers' cross-agency pages are elsewhere
(``/portal/use-cases/``, ``/portal/review/``).
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from config.exceptions import DomainError
from governance.models import UseCase, UseCaseStatus
from governance.portal.evaluations import may_request
from governance.portal.forms.use_cases import (
    USE_CASE_FIELDS,
    QuestionnaireForm,
    UseCaseForm,
    add_domain_error,
)
from governance.portal.readable import (
    policy_outcome_rows,
    questionnaire_answer_rows,
    risk_reason_rows,
)
from governance.selectors import latest_policy_result
from governance.services.lifecycle import use_case_submit
from governance.services.use_cases import (
    WRITER_ROLES,
    questionnaire_get,
    use_case_assess,
    use_case_create,
    use_case_update,
)
from governance.templatetags.agency_portal import USE_CASE_STATUS
from registry.selectors import is_oversight, user_agency_id, user_role

PAGE_SIZE = 25


def _is_writer(user, use_case: UseCase | None = None) -> bool:
    """Members and maintainers of the owning agency write (as the services say)."""
    if user_role(user) not in WRITER_ROLES:
        return False
    return use_case is None or use_case.agency_id == user_agency_id(user)


def _use_case(request, pk: int) -> UseCase:
    return get_object_or_404(
        UseCase.objects.visible_to(request.user).select_related(
            "agency", "model_version__model__agency", "questionnaire", "assessed_by"
        ),
        pk=pk,
    )


@require_GET
@login_required
def use_case_list(request):
    """The agency's use cases, newest first, by status."""
    user = request.user
    use_cases = UseCase.objects.visible_to(user).select_related(
        "agency", "model_version__model"
    )
    if not is_oversight(user):
        use_cases = use_cases.filter(agency_id=user_agency_id(user))
    status = request.GET.get("status", "")
    if status in UseCaseStatus.values:
        use_cases = use_cases.filter(status=status)
    page = Paginator(use_cases.order_by("-created_at", "-pk"), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "portal/use_cases/list.html",
        {
            "page": page,
            "query": f"status={status}" if status else "",
            "status": status,
            "statuses": [
                (value, USE_CASE_STATUS[value][0]) for value in UseCaseStatus.values
            ],
            "may_write": _is_writer(user),
        },
    )


@require_http_methods(["GET", "POST"])
@login_required
def use_case_create_view(request):
    """Describe a new use case of a model version (a draft of the agency)."""
    if not _is_writer(request.user):
        raise PermissionDenied
    form = UseCaseForm(
        request.POST if request.method == "POST" else None, user=request.user
    )
    if request.method == "POST" and form.is_valid():
        try:
            use_case = use_case_create(actor=request.user, **form.cleaned_data)
        except DomainError as exc:
            add_domain_error(form, exc)
        else:
            messages.success(
                request,
                _("The use case is saved as a draft. Answer the questionnaire next."),
            )
            return redirect("governance_portal:my-use-case-assessment", pk=use_case.pk)
    return render(request, "portal/use_cases/form.html", {"form": form})


@require_http_methods(["GET", "POST"])
@login_required
def use_case_edit(request, pk: int):
    """Change what a draft (or sent-back) use case says."""
    use_case = _use_case(request, pk)
    if not _is_writer(request.user, use_case):
        raise PermissionDenied
    initial = {name: getattr(use_case, name) for name in USE_CASE_FIELDS}
    form = UseCaseForm(
        request.POST if request.method == "POST" else None,
        user=request.user,
        initial=initial,
    )
    if request.method == "POST" and form.is_valid():
        try:
            use_case_update(actor=request.user, use_case=use_case, **form.cleaned_data)
        except DomainError as exc:
            add_domain_error(form, exc)
        else:
            messages.success(request, _("The use case is saved."))
            return redirect("governance_portal:my-use-case-detail", pk=use_case.pk)
    return render(
        request, "portal/use_cases/form.html", {"form": form, "use_case": use_case}
    )


@require_GET
@login_required
def use_case_detail(request, pk: int):
    """One use case: what it says, its risk tier and reasons, its policy check."""
    use_case = _use_case(request, pk)
    writer = _is_writer(request.user, use_case)
    result = latest_policy_result(use_case)
    context: dict[str, Any] = {
        "use_case": use_case,
        "may_edit": writer and use_case.is_editable,
        "may_evaluate": may_request(request.user, use_case.model_version),
        "may_submit": writer
        and use_case.status
        in (
            UseCaseStatus.DRAFT,
            UseCaseStatus.CHANGES_REQUESTED,
            UseCaseStatus.EXPIRED,
        ),
        "reason_rows": risk_reason_rows(use_case),
        "answer_rows": questionnaire_answer_rows(use_case),
        "policy_result": result,
        "outcome_rows": policy_outcome_rows(result) if result else [],
        "submissions": use_case.submissions.select_related("submitted_by").order_by(
            "-number"
        ),
    }
    return render(request, "portal/use_cases/detail.html", context)


@require_http_methods(["GET", "POST"])
@login_required
def use_case_assessment(request, pk: int):
    """Answer the impact questionnaire; the service scores it and sets the tier."""
    use_case = _use_case(request, pk)
    if not _is_writer(request.user, use_case):
        raise PermissionDenied
    questionnaire = use_case.questionnaire or questionnaire_get()
    form = QuestionnaireForm(
        request.POST if request.method == "POST" else None,
        definition=questionnaire.definition,
        answers=use_case.answers,
    )
    if request.method == "POST" and form.is_valid():
        try:
            use_case_assess(
                actor=request.user,
                use_case=use_case,
                answers=form.answers(),
                questionnaire=questionnaire,
            )
        except DomainError as exc:
            add_domain_error(form, exc)
        else:
            messages.success(request, _("The answers are saved and the risk tier set."))
            return redirect("governance_portal:my-use-case-detail", pk=use_case.pk)
    return render(
        request,
        "portal/use_cases/assessment.html",
        {"use_case": use_case, "questionnaire": questionnaire, "form": form},
    )


@require_POST
@login_required
def use_case_submit_view(request, pk: int):
    """Submit the use case for review; its content is frozen from then on."""
    use_case = _use_case(request, pk)
    try:
        use_case_submit(actor=request.user, use_case=use_case)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request, _("The use case is submitted; the oversight body reviews it.")
        )
    return redirect("governance_portal:my-use-case-detail", pk=use_case.pk)
