"""The missing-evidence marker every export writes where a record field is blank."""

from __future__ import annotations

MISSING = "MISSING EVIDENCE"


def is_blank(value) -> bool:
    """None, an empty or blank string, or an empty collection."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list | tuple | dict | set):
        return not value
    return False


def or_missing(value) -> str:
    """``value`` as text, or the missing-evidence marker when it is blank."""
    return MISSING if is_blank(value) else str(value)
