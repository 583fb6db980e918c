"""A model version's status, derived from its use cases' statuses (issue 5)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from governance import selectors
from governance.models import UseCaseStatus
from governance.services import approvals, lifecycle
from governance.services import decisions as decision_services
from governance.services import use_cases as use_case_services
from governance.services.lifecycle import version_status_for
from registry.models import ModelVersion, VersionStatus
from tests.governance.conftest import RATIONALE, LifecycleKit

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

V = VersionStatus
S = UseCaseStatus


def _status(version) -> str:
    return ModelVersion.objects.get(pk=version.pk).status


def _changes(version) -> list[tuple[str, str]]:
    return [
        (event.payload_data["from"], event.payload_data["to"])
        for event in AuditEvent.objects.filter(
            action="model_version.status_changed",
            object_type="registry.modelversion",
            object_id=str(version.pk),
        ).order_by("seq")
    ]


def _second_use_case(kit) -> LifecycleKit:
    use_case = use_case_services.use_case_create(
        actor=kit.requester,
        model_version=kit.use_case.model_version,
        title="Summarising complaints",
        purpose="Summarise complaints about waste collection for staff.",
        public_service="Waste collection, City A",
        affected_people="Residents who complain",
        decision_informed="None: staff read every complaint.",
        human_oversight="A clerk reads every summary.",
        valid_until=timezone.localdate() + timedelta(days=365),
    )
    return LifecycleKit(
        use_case=use_case,
        requester=kit.requester,
        submitter=kit.submitter,
        reviewers=kit.reviewers,
        suite=kit.suite,
        policy=kit.policy,
    )


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], V.DRAFT),
        (["draft", "changes_requested"], V.DRAFT),
        (["approved", "rejected"], V.APPROVED),
        (["approved", "suspended", "in_review"], V.APPROVED),
        (["suspended", "submitted"], V.SUSPENDED),
        (["submitted", "retired"], V.IN_REVIEW),
        (["in_review"], V.IN_REVIEW),
        (["retired"], V.RETIRED),
        (["retired", "expired", "rejected"], V.RETIRED),
        (["retired", "draft"], V.DRAFT),
        (["expired"], V.DRAFT),
        (["expired", "rejected"], V.DRAFT),
    ],
)
def test_the_derivation_rule(statuses, expected):
    assert version_status_for(statuses) == expected


def test_the_version_follows_its_use_case_through_the_lifecycle(kit, reviewer):
    version = kit.use_case.model_version
    assert _status(version) == V.DRAFT

    kit.assess()
    kit.run()
    kit.submit()
    assert _status(version) == V.IN_REVIEW
    lifecycle.use_case_start_review(actor=reviewer, use_case=kit.use_case)
    assert _status(version) == V.IN_REVIEW

    decision_services.use_case_approve(
        actor=reviewer, use_case=kit.use_case, rationale=RATIONALE
    )
    assert _status(version) == V.APPROVED
    decision_services.use_case_suspend(
        actor=reviewer, use_case=kit.use_case, rationale=RATIONALE
    )
    assert _status(version) == V.SUSPENDED
    decision_services.use_case_reinstate(
        actor=reviewer, use_case=kit.use_case, rationale=RATIONALE
    )
    assert _status(version) == V.APPROVED
    decision_services.use_case_retire(
        actor=reviewer, use_case=kit.use_case, rationale=RATIONALE
    )
    assert _status(version) == V.RETIRED

    # One audited change per move of the version; submitted → in_review was none.
    assert _changes(version) == [
        (V.DRAFT, V.IN_REVIEW),
        (V.IN_REVIEW, V.APPROVED),
        (V.APPROVED, V.SUSPENDED),
        (V.SUSPENDED, V.APPROVED),
        (V.APPROVED, V.RETIRED),
    ]
    event = AuditEvent.objects.filter(action="model_version.status_changed").last()
    assert event.actor_id == reviewer.pk


def test_an_expired_only_version_goes_back_to_draft(kit):
    use_case = kit.approved()
    version = use_case.model_version
    assert _status(version) == V.APPROVED
    assert approvals.use_case_expire(
        use_case=use_case, now=selectors.approval_in_force(use_case).expires_at
    )
    assert kit.refresh().status == S.EXPIRED
    assert _status(version) == V.DRAFT
    event = AuditEvent.objects.filter(action="model_version.status_changed").last()
    assert event.actor_id is None  # the platform expired it


def test_changes_requested_puts_the_version_back_to_draft(kit, reviewer):
    kit.in_review()
    decision_services.use_case_request_changes(
        actor=reviewer, use_case=kit.use_case, rationale=RATIONALE
    )
    assert _status(kit.use_case.model_version) == V.DRAFT


def test_one_approved_use_case_makes_the_version_approved(kit, reviewer):
    version = kit.use_case.model_version
    other = _second_use_case(kit)
    other.in_review()
    decision_services.use_case_reject(
        actor=reviewer, use_case=other.use_case, rationale=RATIONALE
    )
    assert other.refresh().status == S.REJECTED
    assert _status(version) == V.DRAFT  # rejected only

    kit.in_review()
    assert _status(version) == V.IN_REVIEW
    decision_services.use_case_approve(
        actor=reviewer, use_case=kit.use_case, rationale=RATIONALE
    )
    assert _status(version) == V.APPROVED


def test_the_status_filter_finds_approved_versions(kit, api_a):
    use_case = kit.approved()
    version = use_case.model_version

    response = api_a.get("/api/v1/model-versions/", {"status": "approved"})
    assert response.status_code == 200, response.content
    body = response.json()
    rows = body["results"] if isinstance(body, dict) else body
    assert [row["id"] for row in rows] == [version.pk]
    assert rows[0]["status"] == V.APPROVED

    response = api_a.get("/api/v1/model-versions/", {"status": "draft"})
    body = response.json()
    rows = body["results"] if isinstance(body, dict) else body
    assert version.pk not in [row["id"] for row in rows]
