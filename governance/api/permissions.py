"""Permission classes of the governance API."""

from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission

from registry.selectors import is_oversight


class IsOversightOrReadOnly(BasePermission):
    """Anyone signed in reads; only reviewers and platform administrators write."""

    message = "Only oversight reviewers and platform administrators write policies."

    def has_permission(self, request, view) -> bool:
        return request.method in SAFE_METHODS or is_oversight(request.user)
