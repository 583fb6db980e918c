"""C9: a strict Content-Security-Policy (django-csp) on the API, admin and docs."""

import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from django.contrib.staticfiles import finders


def policy(response) -> dict[str, list[str]]:
    header = response.headers["Content-Security-Policy"]
    directives = (part.split() for part in header.split(";") if part.strip())
    return {name: values for name, *values in directives}


def assert_strict(response) -> dict[str, list[str]]:
    rules = policy(response)
    assert rules["default-src"] == ["'self'"]
    assert rules["frame-ancestors"] == ["'none'"]
    assert rules["object-src"] == ["'none'"]
    for name in ("script-src", "style-src"):
        assert "'unsafe-inline'" not in rules[name]
        assert "'unsafe-eval'" not in rules[name]
        assert all(v == "'self'" or v.startswith("'nonce-") for v in rules[name])
    return rules


class _Page(HTMLParser):
    """Collects the asset URLs a page loads and its inline scripts and styles."""

    def __init__(self):
        super().__init__()
        self.assets: list[str] = []
        self.inline: list[tuple[str, str | None]] = []  # (tag, nonce)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        data = attrs.get("type") == "application/json"  # json_script: not run
        if tag == "style" or (tag == "script" and not attrs.get("src") and not data):
            self.inline.append((tag, attrs.get("nonce")))
        for key in ("src", "href"):
            if tag in ("script", "link", "img") and attrs.get(key):
                self.assets.append(attrs[key])


def page(response) -> _Page:
    parser = _Page()
    parser.feed(response.content.decode())
    return parser


@pytest.mark.django_db
def test_c9_csp_header_on_api_responses(client, admin_user):
    assert_strict(client.get("/api/v1/agencies/"))  # 401 answers carry it too
    client.force_login(admin_user)
    response = client.get("/api/v1/agencies/")
    assert response.status_code == 200
    assert_strict(response)
    assert_strict(client.get("/api/schema/"))
    assert_strict(client.get("/healthz"))


@pytest.mark.django_db
def test_c9_csp_header_on_admin_pages_whose_assets_are_same_origin(client, admin_user):
    for url in ("/admin/login/", "/admin/", "/admin/registry/agency/"):
        if url != "/admin/login/":
            client.force_login(admin_user)
        response = client.get(url)
        assert response.status_code == 200, url
        assert_strict(response)
        html = page(response)
        assert html.assets, url
        assert all(not urlsplit(a).netloc for a in html.assets), html.assets
        assert html.inline == [], f"{url} has an inline script or style"


@pytest.mark.django_db
def test_c9_swagger_ui_runs_under_the_csp_with_its_nonce(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    rules = assert_strict(response)
    nonce = re.fullmatch(r"'nonce-(.+)'", rules["script-src"][-1]).group(1)
    assert rules["style-src"] == ["'self'", f"'nonce-{nonce}'"]
    html = page(response)
    assert html.inline == [("style", nonce), ("script", nonce)]
    assert all(urlsplit(a).path.startswith("/static/") for a in html.assets)
    assert all(not urlsplit(a).netloc for a in html.assets)
    for asset in html.assets:  # shipped here (the sidecar), served by WhiteNoise
        assert finders.find(urlsplit(asset).path.removeprefix("/static/")), asset
    # A second response gets a fresh nonce.
    assert policy(client.get("/api/docs/"))["script-src"][-1] != f"'nonce-{nonce}'"


@pytest.mark.django_db
def test_c9_browsable_api_styles_carry_the_nonce(client, admin_user):
    client.force_login(admin_user)
    response = client.get("/api/v1/agencies/", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    nonce = assert_strict(response)["style-src"][-1].removeprefix("'nonce-")[:-1]
    html = page(response)
    assert html.inline and all(found == nonce for _, found in html.inline)
    assert all(not urlsplit(a).netloc for a in html.assets)
