"""Every route under /api/v1/ needs authentication (SECURITY C4).

The test walks the URL configuration, so a view added tomorrow is checked
without anyone remembering to list it: each route must be a DRF view with
authentication classes, permission classes of which none is ``AllowAny``,
and throttles, for every HTTP method it serves; an anonymous request to each
method must answer 401; a generic view over a tenant-owned model must build
its queryset per request (``get_queryset``), never from a class attribute
shared by every caller. Public routes are listed, with the reason, in
``PUBLIC``.
"""

from __future__ import annotations

import re
import uuid

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from rest_framework.generics import GenericAPIView
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.test import APIClient, APIRequestFactory
from rest_framework.views import APIView

PREFIX = "/api/v1/"

# Routes anyone may call, and why.
PUBLIC = {
    # Auditors verify exported checkpoints without an account.
    "/api/v1/audit/public-key/": "the audit signing key is public by design",
}

_CONVERTERS = {
    "int": "1",
    "str": "x",
    "slug": "x",
    "path": "x",
    "uuid": str(uuid.UUID(int=1)),
}


def _sample(route: str) -> str:
    """A concrete path matching a route or a regex pattern."""
    route = re.sub(r"\(\?P<\w+>[^)]*\)", "1", route)
    route = re.sub(
        r"<(?:(\w+):)?\w+>", lambda m: _CONVERTERS.get(m.group(1) or "str", "x"), route
    )
    return route.replace("^", "").replace("$", "").replace("\\", "")


def _walk(resolver: URLResolver, prefix: str = "/"):
    for entry in resolver.url_patterns:
        route = prefix + _sample(str(entry.pattern))
        if isinstance(entry, URLResolver):
            yield from _walk(entry, route)
        elif isinstance(entry, URLPattern):
            yield route, entry


def api_routes() -> list[tuple[str, URLPattern]]:
    """Every (sample path, pattern) under /api/v1/, format-suffix variants aside."""
    return [
        (path, pattern)
        for path, pattern in _walk(get_resolver())
        if path.startswith(PREFIX) and "." not in path.removeprefix(PREFIX)
    ]


def _methods(callback) -> list[str]:
    """The methods a route serves; HEAD and OPTIONS follow GET and the metadata."""
    actions = getattr(callback, "actions", None)
    if actions:
        names = set(actions)
    else:
        names = {m for m in callback.cls.http_method_names if hasattr(callback.cls, m)}
    return sorted(names - {"head", "options"})


def _view(callback, method: str, path: str) -> APIView:
    """The view instance DRF would build for this method, ready for inspection."""
    view = callback.cls(**callback.initkwargs)
    actions = getattr(callback, "actions", None) or {}
    view.action_map = actions
    view.action = actions.get(method)
    view.request = Request(APIRequestFactory().generic(method.upper(), path))
    view.args, view.kwargs, view.format_kwarg = (), resolve(path).kwargs, None
    return view


def test_the_walk_finds_the_catalogue_routes():
    paths = {path for path, _ in api_routes()}
    assert {"/api/v1/models/", "/api/v1/auth/tokens/", "/api/v1/me/"} <= paths
    assert len(paths) > 20


ROUTES = api_routes()


@pytest.mark.parametrize(("path", "pattern"), ROUTES, ids=[p for p, _ in ROUTES])
def test_route_requires_authentication(path, pattern):
    callback = pattern.callback
    cls = getattr(callback, "cls", None)
    assert cls is not None and issubclass(cls, APIView), (
        f"{path} is not a DRF view: it would bypass authentication and throttling"
    )
    if path in PUBLIC:
        return
    for method in _methods(callback):
        view = _view(callback, method, path)
        assert view.get_authenticators(), f"{method.upper()} {path}: no authentication"
        permissions = view.get_permissions()
        assert permissions, f"{method.upper()} {path}: no permission classes"
        assert not any(isinstance(p, AllowAny) for p in permissions), (
            f"{method.upper()} {path}: AllowAny"
        )
        assert view.get_throttles(), f"{method.upper()} {path}: no throttles"


@pytest.mark.parametrize(("path", "pattern"), ROUTES, ids=[p for p, _ in ROUTES])
def test_tenant_data_is_scoped_per_request(path, pattern):
    cls = pattern.callback.cls
    if not issubclass(cls, GenericAPIView) or cls.get_queryset is not (
        GenericAPIView.get_queryset
    ):
        return
    model = cls.queryset.model
    assert not hasattr(model._default_manager.get_queryset(), "visible_to"), (
        f"{path} serves {model.__name__} from a class-level queryset"
    )


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "pattern"), ROUTES, ids=[p for p, _ in ROUTES])
def test_anonymous_request_answers_401(path, pattern):
    if path in PUBLIC:
        return
    client = APIClient()
    for method in _methods(pattern.callback):
        response = getattr(client, method)(path)
        assert response.status_code == 401, f"{method.upper()} {path}"
        assert response.json()["code"] == "not_authenticated"
