"""Portal pages of an agency's webhooks and their deliveries.

As the API: maintainers manage their agency's webhooks and platform
administrators every agency's (``notifications.selectors.webhook_list``);
to anyone else a webhook does not exist (404). Writes validate with the
API's serializers and call one service of ``notifications.services``. A new
or rotated secret is shown once, on the page that answers the POST, never
stored in the session or shown again.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from config.exceptions import DomainError, PolicyViolation
from notifications import selectors, services
from notifications.api.serializers import (
    WebhookCreateSerializer,
    WebhookUpdateSerializer,
)
from notifications.models import DeliveryStatus, Webhook
from notifications.portal.forms import WebhookForm, add_domain_error, validated
from registry.models import Role, user_role

PAGE_SIZE = 50
DELIVERIES_PER_PAGE = 25
DELIVERY_STATES = {
    DeliveryStatus.PENDING: (gettext_lazy("waiting for its next attempt"), "info"),
    DeliveryStatus.SENDING: (gettext_lazy("sending"), "info"),
    DeliveryStatus.DELIVERED: (gettext_lazy("delivered"), "ok"),
    DeliveryStatus.FAILED: (gettext_lazy("failed: given up"), "bad"),
}


def may_manage(user) -> bool:
    """Whether to offer the write buttons; the service decides for real."""
    return user_role(user) in (Role.MAINTAINER, Role.ADMIN)


def _status(exc: DomainError) -> int:
    return 403 if isinstance(exc, PolicyViolation) else 200


@login_required
def webhook_list(request: HttpRequest) -> HttpResponse:
    """The webhooks the reader manages, with their delivery counts."""
    webhooks = selectors.webhook_list(request.user).annotate(
        delivered=Count(
            "deliveries", filter=Q(deliveries__status=DeliveryStatus.DELIVERED)
        ),
        failed=Count("deliveries", filter=Q(deliveries__status=DeliveryStatus.FAILED)),
        waiting=Count(
            "deliveries",
            filter=Q(
                deliveries__status__in=[DeliveryStatus.PENDING, DeliveryStatus.SENDING]
            ),
        ),
    )
    page = Paginator(webhooks.order_by("id"), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "portal/webhooks/list.html",
        {"page": page, "may_manage": may_manage(request.user)},
    )


@login_required
def webhook_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """One webhook and its delivery log, newest first."""
    webhook = get_object_or_404(selectors.webhook_list(request.user), pk=pk)
    deliveries = selectors.delivery_list(request.user, webhook).order_by("-id")
    page = Paginator(deliveries, DELIVERIES_PER_PAGE).get_page(request.GET.get("page"))
    rows = [
        {
            "delivery": delivery,
            "state": DELIVERY_STATES.get(delivery.status, (delivery.status, "muted")),
            "codes": [
                str(code) if code is not None else _("no response")
                for code in delivery.status_codes
            ],
        }
        for delivery in page
    ]
    return render(
        request,
        "portal/webhooks/detail.html",
        {"webhook": webhook, "page": page, "rows": rows},
    )


def _secret_page(request, webhook: Webhook, secret: str, *, created: bool):
    response = render(
        request,
        "portal/webhooks/secret.html",
        {"webhook": webhook, "secret": secret, "created": created},
    )
    response["Cache-Control"] = "no-store"
    return response


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def webhook_create(request: HttpRequest) -> HttpResponse:
    """Register a webhook of the reader's agency; its secret is shown once."""
    form = WebhookForm(request.POST or None, initial={"is_enabled": True})
    status = 200
    if request.method == "POST" and form.is_valid():
        data = validated(WebhookCreateSerializer, form, form.payload())
        if data is not None:
            try:
                webhook, secret = services.webhook_create(
                    actor=request.user, agency=None, **data
                )
            except DomainError as exc:
                add_domain_error(form, exc)
                status = _status(exc)
            else:
                return _secret_page(request, webhook, secret, created=True)
    return render(
        request,
        "portal/webhooks/form.html",
        {"form": form, "webhook": None},
        status=status,
    )


@login_required
@require_http_methods(["GET", "POST"])
def webhook_edit(request: HttpRequest, pk: int) -> HttpResponse:
    """Change a webhook's URL, events, description or switch."""
    webhook = get_object_or_404(selectors.webhook_list(request.user), pk=pk)
    initial = {
        "url": webhook.url,
        "description": webhook.description,
        "event_types": webhook.event_types,
        "is_enabled": webhook.is_enabled,
    }
    form = WebhookForm(request.POST or None, initial=initial)
    status = 200
    if request.method == "POST" and form.is_valid():
        data = validated(WebhookUpdateSerializer, form, form.payload())
        if data is not None:
            try:
                services.webhook_update(actor=request.user, webhook=webhook, **data)
            except DomainError as exc:
                add_domain_error(form, exc)
                status = _status(exc)
            else:
                messages.success(request, _("Webhook changed."))
                return redirect("notifications_portal:webhook-detail", pk=webhook.pk)
    return render(
        request,
        "portal/webhooks/form.html",
        {"form": form, "webhook": webhook},
        status=status,
    )


def _managed(request, pk: int) -> Webhook:
    return get_object_or_404(selectors.webhook_list(request.user), pk=pk)


@login_required
@require_POST
def webhook_toggle(request: HttpRequest, pk: int) -> HttpResponse:
    """Enable or disable a webhook."""
    webhook = _managed(request, pk)
    try:
        updated = services.webhook_update(
            actor=request.user, webhook=webhook, is_enabled=not webhook.is_enabled
        )
    except PolicyViolation as exc:
        raise PermissionDenied(exc.message) from exc
    messages.success(
        request,
        _("Webhook enabled.") if updated.is_enabled else _("Webhook disabled."),
    )
    return redirect("notifications_portal:webhook-detail", pk=webhook.pk)


@never_cache
@login_required
@require_POST
def webhook_rotate(request: HttpRequest, pk: int) -> HttpResponse:
    """Give the webhook a new secret, shown once; the old one signs on a while."""
    webhook = _managed(request, pk)
    try:
        webhook, secret = services.webhook_rotate_secret(
            actor=request.user, webhook=webhook
        )
    except PolicyViolation as exc:
        raise PermissionDenied(exc.message) from exc
    return _secret_page(request, webhook, secret, created=False)


@login_required
@require_POST
def webhook_ping(request: HttpRequest, pk: int) -> HttpResponse:
    """Queue a signed ``webhook.ping`` delivery now."""
    webhook = _managed(request, pk)
    try:
        services.webhook_ping(actor=request.user, webhook=webhook)
    except PolicyViolation as exc:
        raise PermissionDenied(exc.message) from exc
    messages.success(request, _("Test event queued; its delivery appears below."))
    return redirect("notifications_portal:webhook-detail", pk=webhook.pk)
