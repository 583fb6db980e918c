"""Register entries made through the lifecycle services, for the portal's tests."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from governance.services import use_cases as use_case_services
from tests.governance.conftest import LifecycleKit


@pytest.fixture
def publish(kit, fast_passwords):
    """``publish(title=..., tier=...)``: a new use case of agency A, approved.

    Each runs the whole lifecycle (assess, evaluate, submit, review,
    approve) on ``kit``'s version through the services, as in production.
    """
    counter = iter(range(1, 10_000))

    def make(*, title: str | None = None, tier: str = "minimal", version=None):
        number = next(counter)
        use_case = use_case_services.use_case_create(
            actor=kit.requester,
            model_version=version or kit.use_case.model_version,
            title=title or f"Register entry {number}",
            purpose=f"Purpose of entry {number}: draft replies to residents.",
            public_service="Contact centre, City A",
            affected_people="Residents who write to the city",
            decision_informed="None: staff sign every reply.",
            human_oversight="A clerk reads every draft.",
            valid_until=timezone.localdate() + timedelta(days=365),
        )
        entry = LifecycleKit(
            use_case=use_case,
            requester=kit.requester,
            submitter=kit.submitter,
            reviewers=kit.reviewers,
            suite=kit.suite,
            policy=kit.policy,
        )
        return entry.approved(tier)

    return make
