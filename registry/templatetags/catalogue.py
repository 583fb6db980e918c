"""Template filters of the catalogue pages."""

from __future__ import annotations

from django import template

from registry.portal.choices import label

register = template.Library()


@register.filter
def choice_label(value: str, kind: str) -> str:
    """``{{ model.task|choice_label:"task" }}``: the value's label in the reader's
    language (registry.portal.choices)."""
    return label(value, kind)
