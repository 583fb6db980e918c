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

import json
import re
import uuid

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django_filters.filters import BooleanFilter
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.filters import OrderingFilter
from rest_framework.generics import GenericAPIView, ListAPIView
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.test import APIClient, APIRequestFactory
from rest_framework.views import APIView

from tests.factories import AgencyFactory

PREFIX = "/api/v1/"

# Routes anyone may call, and why.
PUBLIC = {
    # Auditors verify exported checkpoints without an account.
    "/api/v1/audit/public-key/": "the audit signing key is public by design",
    # The transparency register is for the public (issue 11); throttled per
    # client address by the anonymous rate.
    "/api/v1/register/": "the public transparency register needs no account",
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
def test_c4_route_requires_authentication(path, pattern):
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
def test_c4_tenant_data_is_scoped_per_request(path, pattern):
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


# --- Unknown routes and unusable query parameters (issue 8, defects 6 and 7) ----


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "post", "patch", "delete"])
@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/no-such-thing/",
        "/api/v1/models/1/no-such-action/",
        "/api/v1/audit/nowhere/",
        "/api/v2/",
    ],
)
def test_unknown_api_routes_answer_the_json_error_shape(path, method, admin_user):
    client = APIClient()
    client.force_authenticate(admin_user)

    response = getattr(client, method)(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"code": "not_found", "message": "Not found."}


@pytest.mark.django_db
def test_unknown_routes_outside_the_api_keep_the_html_page_and_slashes_redirect():
    client = APIClient()

    assert client.get("/no-such-page/")["Content-Type"].startswith("text/html")
    redirect = client.get("/api/v1/models")
    assert redirect.status_code == 301
    assert redirect["Location"] == "/api/v1/models/"


def test_a_server_error_under_the_api_answers_the_json_error_shape():
    from config.urls import server_error

    factory = APIRequestFactory()
    api = server_error(factory.get("/api/v1/models/"))
    page = server_error(factory.get("/admin/"))

    assert api.status_code == page.status_code == 500
    assert api["Content-Type"] == "application/json"
    assert json.loads(api.content)["code"] == "server_error"
    assert page["Content-Type"].startswith("text/html")


def _list_views() -> list[tuple[str, APIView]]:
    """Every list endpoint under /api/v1/, as the view DRF would build for GET."""
    found = []
    for path, pattern in ROUTES:
        callback = pattern.callback
        actions = getattr(callback, "actions", None)
        is_list = (
            actions.get("get") == "list"
            if actions
            else issubclass(callback.cls, ListAPIView)
        )
        if is_list:
            found.append((path, _view(callback, "get", path)))
    return found


def _orders(view: APIView) -> bool:
    return any(
        isinstance(b, type) and issubclass(b, OrderingFilter)
        for b in view.filter_backends
    )


LISTS = _list_views()
# Lists kept in one fixed order (audit events, checkpoints, a use case's
# history) take no ordering parameter.
ORDERED = [(path, view) for path, view in LISTS if _orders(view)]


def _boolean_filters(view: APIView) -> list[str]:
    names = []
    for backend in view.filter_backends:
        if isinstance(backend, type) and issubclass(backend, DjangoFilterBackend):
            view.swagger_fake_view = True
            filterset = backend().get_filterset_class(view, view.get_queryset())
            if filterset is not None:
                names += [
                    name
                    for name, f in filterset.base_filters.items()
                    if isinstance(f, BooleanFilter)
                ]
    return names


def test_both_apps_have_list_endpoints_with_ordering_and_boolean_filters():
    ordered = {p for p, _ in ORDERED}
    with_booleans = {p for p, v in LISTS if _boolean_filters(v)}
    assert {"/api/v1/models/", "/api/v1/use-cases/"} <= ordered
    assert {"/api/v1/model-versions/", "/api/v1/licences/"} <= with_booleans
    assert "/api/v1/policies/" in with_booleans


@pytest.fixture
def platform_client(admin_user):
    AgencyFactory(slug="x")
    client = APIClient()
    client.force_authenticate(admin_user)
    return client


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "view"), ORDERED, ids=[p for p, _ in ORDERED])
def test_every_list_refuses_an_unknown_ordering_field(path, view, platform_client):
    response = platform_client.get(path, {"ordering": "-no_such_field"})

    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "validation_error"
    assert list(body["fields"]) == ["ordering"]
    assert "no_such_field" in body["fields"]["ordering"][0]["message"]


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "view"), LISTS, ids=[p for p, _ in LISTS])
def test_every_list_refuses_an_unreadable_boolean_filter(path, view, platform_client):
    for name in _boolean_filters(view):
        response = platform_client.get(path, {name: "maybe"})

        assert response.status_code == 400, (name, response.content)
        body = response.json()
        assert body["code"] == "validation_error"
        assert list(body["fields"]) == [name]
        assert platform_client.get(path, {name: "true"}).status_code == 200


@pytest.mark.django_db
def test_valid_filters_and_ordering_still_narrow_and_sort(platform_client):
    response = platform_client.get(
        "/api/v1/agencies/", {"ordering": "-slug", "is_oversight_body": "false"}
    )

    assert response.status_code == 200
    slugs = [row["slug"] for row in response.json()["results"]]
    assert slugs == sorted(slugs, reverse=True) and "x" in slugs
    assert platform_client.get("/api/v1/models/", {"ordering": ""}).status_code == 200
