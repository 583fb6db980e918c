"""Badges and labels of the agency portal: statuses and tiers in words, translated.

The models' choice labels are plain English strings; the portal shows the
same states through these translated labels, each badge carrying its word
(never colour alone).
"""

from __future__ import annotations

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

register = template.Library()

RUN_STATUS = {
    "queued": (_("Queued"), "info"),
    "running": (_("Running"), "info"),
    "succeeded": (_("Succeeded"), "ok"),
    "failed": (_("Failed"), "bad"),
    "cancelled": (_("Cancelled"), "muted"),
}
VERSION_STATUS = {
    "draft": (_("Draft"), "muted"),
    "in_review": (_("In review"), "info"),
    "approved": (_("Approved"), "ok"),
    "suspended": (_("Suspended"), "bad"),
    "retired": (_("Retired"), "muted"),
}
USE_CASE_STATUS = {
    "draft": (_("Draft"), "muted"),
    "submitted": (_("Submitted"), "info"),
    "in_review": (_("In review"), "info"),
    "approved": (_("Approved"), "ok"),
    "changes_requested": (_("Changes requested"), "warn"),
    "rejected": (_("Rejected"), "bad"),
    "suspended": (_("Suspended"), "bad"),
    "retired": (_("Retired"), "muted"),
    "expired": (_("Expired"), "warn"),
}
RISK_TIER = {
    "minimal": (_("Minimal risk"), "ok"),
    "limited": (_("Limited risk (transparency duties)"), "info"),
    "high": (_("High risk"), "warn"),
    "prohibited": (_("Prohibited practice"), "bad"),
    None: (_("Not assessed"), "muted"),
    "": (_("Not assessed"), "muted"),
}


def _badge(table: dict, value) -> SafeString:
    label, tone = table.get(value, (value, "muted"))
    return format_html('<span class="badge badge--{}">{}</span>', tone, label)


@register.simple_tag
def run_status_badge(status: str) -> SafeString:
    """An evaluation run's status as a worded badge."""
    return _badge(RUN_STATUS, status)


@register.simple_tag
def version_status_badge(status: str) -> SafeString:
    """A model version's lifecycle status as a worded badge."""
    return _badge(VERSION_STATUS, status)


@register.simple_tag
def use_case_status_badge(status: str) -> SafeString:
    """A use case's status as a worded badge."""
    return _badge(USE_CASE_STATUS, status)


@register.simple_tag
def risk_tier_badge(tier: str | None) -> SafeString:
    """A use case's risk tier as a worded badge ("Not assessed" when empty)."""
    return _badge(RISK_TIER, tier)


@register.filter
def percent(value) -> int:
    """A 0-1 progress fraction as a whole percentage, clamped."""
    try:
        return max(0, min(100, round(float(value) * 100)))
    except (TypeError, ValueError):
        return 0
