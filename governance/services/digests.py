"""What governance does when a stored artifact no longer matches its digest.

``artifact_digest_sweep`` (run daily by ``civitas.artifact_digest_sweep``)
hashes every stored model bundle and dataset file again through
``registry.services.digests``. For a model bundle that no longer matches,
in one transaction: every approved use case of the version is suspended by
the platform (``use_case.suspended``, the version's derived status follows
through the lifecycle and ``model_version.status_changed`` is recorded), the
bundle is refused (``model_version.digest_mismatch`` with the expected and
actual digests), and, once that commits, the reviewers who decided on the
version's use cases get an e-mail (Django's mail backend). Audit events
drive the webhook notifications as well.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from governance.models import Decision, UseCase, UseCaseStatus
from governance.services.lifecycle import _lock, _move
from registry.models import ModelVersion
from registry.services import digests as registry_digests

logger = logging.getLogger(__name__)


def _reviewer_addresses(version_id: int) -> list[str]:
    """E-mail addresses of the reviewers who decided on the version's use cases."""
    reviewer_ids = Decision.objects.filter(
        use_case__model_version_id=version_id
    ).values_list("reviewer_id", flat=True)
    return sorted(
        set(
            get_user_model()
            .objects.filter(pk__in=reviewer_ids, is_active=True)
            .exclude(email="")
            .values_list("email", flat=True)
        )
    )


def _mail_reviewers(mismatch, suspended: list[int], version_label: str) -> None:
    """Tell the reviewers; a mail server that fails never undoes the suspension."""
    recipients = _reviewer_addresses(mismatch.object_id)
    if not recipients:
        return
    cases = ", ".join(map(str, suspended)) or "none was approved"
    try:
        send_mail(
            subject=f"[Civitas] Artifact digest mismatch: {version_label}",
            message=(
                f"The stored bundle of model version {version_label} no longer "
                f"matches its recorded SHA-256.\n\nExpected: {mismatch.expected}\n"
                f"Found:    {mismatch.actual}\n\nThe bundle was refused and the "
                f"use cases relying on it were suspended ({cases}). Review them "
                "before reinstating any; the audit log records the event "
                "model_version.digest_mismatch.\n"
            ),
            from_email=getattr(settings, "DEFAULT_FROM_EMAIL", None),
            recipient_list=recipients,
        )
    except Exception:
        logger.exception(
            "digest_mismatch_mail_failed", extra={"version_id": mismatch.object_id}
        )


@transaction.atomic
def model_version_quarantine(*, mismatch) -> list[int]:
    """Suspend the approved use cases of a mismatched version; refuse its bundle.

    The platform acts (no actor). Locks each use case (then the version),
    as every lifecycle move does, before the version is refused. Returns
    the ids of the use cases suspended; none when the mismatch was already
    recorded (safe to call twice).
    """
    suspended = []
    reason = (
        f"The stored bundle no longer matches its digest (expected "
        f"{mismatch.expected}, found {mismatch.actual}); suspended by the platform."
    )
    now = timezone.now()
    use_cases = UseCase.objects.filter(
        model_version_id=mismatch.object_id, status=UseCaseStatus.APPROVED
    ).order_by("pk")
    for use_case in use_cases:
        locked = _lock(use_case)
        if locked.status != UseCaseStatus.APPROVED:
            continue
        _move(
            locked,
            to_status=UseCaseStatus.SUSPENDED,
            actor=None,
            now=now,
            reason=reason,
        )
        audit.record(
            actor=None,
            action="use_case.suspended",
            obj=locked,
            agency=locked.agency,
            payload={
                "use_case_id": locked.pk,
                "from": UseCaseStatus.APPROVED,
                "to": UseCaseStatus.SUSPENDED,
                "reason": "digest_mismatch",
                "expected": mismatch.expected,
                "actual": mismatch.actual,
            },
        )
        suspended.append(locked.pk)
    if not registry_digests.model_version_digest_mismatch(mismatch=mismatch):
        transaction.set_rollback(True)
        return []
    label = str(ModelVersion.objects.select_related("model").get(pk=mismatch.object_id))
    transaction.on_commit(lambda: _mail_reviewers(mismatch, suspended, label))
    return suspended


def artifact_digest_sweep() -> dict[str, int]:
    """Hash every stored model bundle and dataset file again; act on mismatches.

    Each model version in its own transaction (``model_version_quarantine``).
    Returns counts: ``checked`` bundles, ``mismatched`` bundles,
    ``suspended`` use cases, ``datasets_mismatched`` dataset files.
    """
    counts = {"checked": 0, "mismatched": 0, "suspended": 0}
    for version_id in registry_digests.model_version_digest_candidates():
        counts["checked"] += 1
        mismatch = registry_digests.model_version_digest_check(version_id=version_id)
        if mismatch is None:
            continue
        logger.warning(
            "artifact_digest_mismatch",
            extra={"version_id": version_id, "expected": mismatch.expected},
        )
        counts["mismatched"] += 1
        counts["suspended"] += len(model_version_quarantine(mismatch=mismatch))
    counts["datasets_mismatched"] = len(registry_digests.dataset_version_digest_sweep())
    return counts
