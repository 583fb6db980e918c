"""The auditors' pages: an object's audit chain, verification, checkpoint, export.

Who sees what mirrors the audit API (``governance.api.audit``): the
oversight body (reviewers and platform administrators) reads every event,
verifies the whole chain and exports it; other signed-in people read their
own agency's events, and export a model version of theirs (a partial
export restricted to their agency's events). The public key is public.
The chain is verified in the page only up to ``PORTAL_VERIFY_MAX_EVENTS``
events; beyond that the page says so and points to ``verify_audit``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from django.views import View

from audit import services as audit
from audit import signing
from audit.models import AuditChainHead, AuditCheckpoint, AuditEvent
from audit.verify import GENESIS_HASH, VerificationError, open_checkpoint
from governance.api.audit import JSONL_MEDIA_TYPE, visible_events
from governance.portal.forms.audit import AuditSearchForm
from governance.portal.readable import humanise_key, readable_value
from registry.selectors import is_oversight, model_version_list, user_agency_ids

PORTAL_VERIFY_MAX_EVENTS = 20_000
EVENTS_PER_PAGE = 50
RECENT_EVENTS = 20


OBJECT_TYPE_LABELS = {
    "governance.usecase": _("Use case"),
    "governance.policy": _("Policy"),
    "governance.evaluationrun": _("Evaluation run"),
    "governance.evaluationsuite": _("Evaluation suite"),
    "governance.evaluationschedule": _("Evaluation schedule"),
    "registry.modelversion": _("Model version"),
    "registry.aimodel": _("Model"),
    "registry.dataset": _("Dataset"),
    "registry.datasetversion": _("Dataset version"),
    "registry.agency": _("Agency"),
    "registry.membership": _("Membership"),
    "audit.chain": _("Audit chain"),
}


def object_type_label(object_type: str) -> str:
    """``governance.usecase`` -> ``Use case``; unknown types by their model's name."""
    if object_type in OBJECT_TYPE_LABELS:
        return str(OBJECT_TYPE_LABELS[object_type])
    try:
        model = apps.get_model(object_type)
    except (LookupError, ValueError):
        return object_type
    name = str(model._meta.verbose_name)
    return name[:1].upper() + name[1:]


@dataclass(frozen=True)
class EventRow:
    """One event as the page shows it, with its own checks."""

    event: AuditEvent
    payload: list[tuple[str, str]]
    hash_ok: bool
    link_ok: bool | None  # None: the previous event is not shown to the reader


def _payload_rows(event: AuditEvent) -> list[tuple[str, str]]:
    try:
        payload = event.payload_data
    except ValueError:
        return [("payload", event.payload)]
    if not isinstance(payload, dict):
        return [("payload", readable_value(payload))]
    return [
        (humanise_key(key), readable_value(value)) for key, value in payload.items()
    ]


def event_rows(user, events: list[AuditEvent]) -> list[EventRow]:
    """Each event with its hash recomputed and its link to the previous one."""
    previous = dict(
        visible_events(user)
        .filter(seq__in=[event.seq - 1 for event in events if event.seq > 1])
        .values_list("seq", "hash")
    )
    rows = []
    for event in events:
        if event.seq == 1:
            link_ok: bool | None = event.prev_hash == GENESIS_HASH
        elif event.seq - 1 in previous:
            link_ok = event.prev_hash == previous[event.seq - 1]
        else:
            link_ok = None
        rows.append(
            EventRow(
                event=event,
                payload=_payload_rows(event),
                hash_ok=event.compute_hash() == event.hash,
                link_ok=link_ok,
            )
        )
    return rows


def chain_verification() -> dict[str, Any]:
    """``audit.verify_chain`` on a chain short enough for a page, else a skip."""
    head = AuditChainHead.objects.filter(pk=1).values_list("seq", flat=True).first()
    if (head or 0) > PORTAL_VERIFY_MAX_EVENTS:
        return {"skipped": True, "events": head, "limit": PORTAL_VERIFY_MAX_EVENTS}
    return {"skipped": False, "report": audit.verify_chain()}


def newest_checkpoint() -> dict[str, Any] | None:
    """The newest signed checkpoint and whether its signature verifies."""
    checkpoint = AuditCheckpoint.objects.order_by("-seq").first()
    if checkpoint is None:
        return None
    problem = ""
    try:
        open_checkpoint(
            checkpoint.envelope,
            signing.public_key(),
            stated_seq=checkpoint.seq,
            stated_head_hash=checkpoint.head_hash,
        )
    except VerificationError as exc:
        problem = str(exc)
    return {
        "checkpoint": checkpoint,
        "signatures": checkpoint.envelope.get("signatures", []),
        "payload_type": checkpoint.envelope.get("payloadType", ""),
        "authentic": not problem,
        "problem": problem,
    }


def _public_key() -> dict[str, str]:
    return {"pem": signing.public_key_pem(), "keyid": signing.platform_key_id()}


def _object_types(user) -> list[tuple[str, str]]:
    types = (
        visible_events(user)
        .exclude(object_type="")
        .order_by("object_type")
        .values_list("object_type", flat=True)
        .distinct()
    )
    return [(value, f"{object_type_label(value)} ({value})") for value in types]


class AuditHomeView(LoginRequiredMixin, View):
    """Search an object's chain; the chain's state, checkpoint and public key."""

    def get(self, request):
        types = _object_types(request.user)
        form = AuditSearchForm(request.GET or None, object_types=types)
        if request.GET and form.is_valid():
            return redirect(
                "governance_portal:audit_object",
                object_type=form.cleaned_data["object_type"],
                object_id=form.cleaned_data["object_id"],
            )
        oversight = is_oversight(request.user)
        recent = list(visible_events(request.user).order_by("-seq")[:RECENT_EVENTS])
        for event in recent:
            event.type_label = object_type_label(event.object_type)
        return render(
            request,
            "portal/audit/index.html",
            {
                "form": form,
                "oversight": oversight,
                "verification": chain_verification() if oversight else None,
                "newest": newest_checkpoint(),
                "public_key": _public_key(),
                "recent": recent,
            },
        )


class AuditObjectView(LoginRequiredMixin, View):
    """The events of one object, oldest first, each with its hashes and payload."""

    def get(self, request, object_type: str, object_id: str):
        oversight = is_oversight(request.user)
        events = visible_events(request.user).filter(
            object_type=object_type, object_id=object_id
        )
        page = Paginator(events.order_by("seq"), EVENTS_PER_PAGE).get_page(
            request.GET.get("page")
        )
        if not oversight and page.paginator.count == 0:
            raise Http404  # nothing the reader may see, as for a missing object
        newest = newest_checkpoint()
        return render(
            request,
            "portal/audit/object.html",
            {
                "object_type": object_type,
                "object_id": object_id,
                "type_label": object_type_label(object_type),
                "page": page,
                "rows": event_rows(request.user, list(page.object_list)),
                "oversight": oversight,
                "newest": newest,
                "public_key": _public_key(),
                "review_url": reverse("governance_portal:review", args=[object_id])
                if oversight
                and object_type == "governance.usecase"
                and object_id.isdigit()
                else "",
                "can_export": oversight
                or _may_export_version(request.user, object_type, object_id),
            },
        )


def _may_export_version(user, object_type: str, object_id: str) -> bool:
    """Agency staff export a model version of theirs, as through the API."""
    return (
        object_type == audit.MODEL_VERSION_TYPE
        and object_id.isdigit()
        and model_version_list(user).filter(pk=int(object_id)).exists()
    )


class AuditExportView(LoginRequiredMixin, View):
    """Download the chain (oversight) or one object's events as JSON Lines."""

    def get(self, request):
        object_type = request.GET.get("object_type") or None
        object_id = request.GET.get("object_id") or None
        oversight = is_oversight(request.user)
        if object_type is None or object_id is None:
            if not oversight:
                raise PermissionDenied
            export = audit.export_open(actor=request.user, via="portal")
        elif oversight:
            export = audit.export_open(
                actor=request.user,
                object_type=object_type,
                object_id=object_id,
                via="portal",
            )
        elif _may_export_version(request.user, object_type, object_id):
            export = audit.export_open(
                actor=request.user,
                object_type=object_type,
                object_id=object_id,
                agency_ids=user_agency_ids(request.user),
                via="portal",
            )
        else:
            raise Http404
        response = StreamingHttpResponse(export.lines(), content_type=JSONL_MEDIA_TYPE)
        response["Content-Disposition"] = (
            f'attachment; filename="civitas-audit-{export.up_to_seq}.jsonl"'
        )
        return response
