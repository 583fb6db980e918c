"""Uploading a model version's bundle from the portal, with a progress bar.

The page (``version_upload.html``) posts one multipart part ``file``. With
JavaScript, config/static/portal/upload.js uses the API's resumable upload
instead (docs/artifacts.md): parts of ``part_size`` hashed with Web Crypto,
three in flight, the bytes sent drawn in a ``<progress>``, the session kept
in ``localStorage`` so the same file resumes after a reload; once completed
it fetches this page's result fragment (``?result=1``). A browser without
``fetch`` or Web Crypto sends the form with XMLHttpRequest as one request.
Without JavaScript the form is a plain multipart POST and the answer is the
whole page.

The body is streamed exactly as the API's upload (registry/api/artifacts.py):
``DigestingUploadHandler`` is made the request's only upload handler before
anything reads the body, so the file goes to a temporary file under
``ARTIFACT_TMP_DIR`` in 1 MiB chunks, hashed on the way and capped by
``CIVITAS_UPLOAD_MAX_BYTES``; it never sits in memory whole. That is why the
view is ``csrf_exempt`` and checks the CSRF token itself only after the
handler is installed: the CSRF middleware would otherwise parse the body with
Django's default handlers first (Django's documented pattern for upload
handlers). A refusal while the body is read has written nothing, so it is
answered without the token check; the write itself (``_store``) is
``csrf_protect``-ed.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.http import Http404
from django.http.multipartparser import MultiPartParserError, TooManyFilesSent
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_http_methods

from config.exceptions import DomainError
from registry import selectors
from registry.models import ArtifactState, ModelVersion
from registry.portal.forms import ArtifactUploadForm
from registry.services import artifacts
from registry.storage import install_upload_handler, received_upload, remove_spooled

_PARSE_ERRORS = (
    RequestDataTooBig,
    TooManyFieldsSent,
    TooManyFilesSent,
    MultiPartParserError,
)


def _editable_version(user, pk: int) -> ModelVersion:
    """The version if the user's agency owns it (as the API's upload), else 404."""
    version = (
        ModelVersion.objects.editable_by(user)
        .select_related("model__agency", "licence")
        .filter(pk=pk)
        .first()
    )
    if version is None:
        raise Http404
    return version


def _is_xhr(request) -> bool:
    return request.headers.get("X-Requested-With") == "XMLHttpRequest"


def _part_size() -> int:
    """The portal's resumable part size: 8 MiB within the configured bounds."""
    low = int(settings.CIVITAS_UPLOAD_PART_MIN)
    return max(low, min(8 * 1024 * 1024, int(settings.CIVITAS_UPLOAD_PART_MAX)))


def _answer(request, version, *, error: DomainError | None = None, status: int = 200):
    """The result (digest, state) or the refusal: a fragment for upload.js or a page."""
    # upload.js asks for the result of a completed resumable upload by GET.
    done = request.GET.get("result") == "1" and bool(version.artifact_digest)
    context = {
        "version": version,
        "error": error,
        "uploaded": error is None and (request.method == "POST" or done),
        "form": ArtifactUploadForm(),
        "max_bytes": int(settings.CIVITAS_UPLOAD_MAX_BYTES),
        "part_size": _part_size(),
    }
    template = (
        "portal/registry/_upload_result.html"
        if _is_xhr(request)
        else "portal/registry/version_upload.html"
    )
    return render(request, template, context, status=status)


@csrf_exempt
@require_http_methods(["GET", "POST"])
def version_artifact(request, pk: int):
    """The upload page (GET) and the streaming upload endpoint (POST)."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    version = _editable_version(request.user, pk)
    if request.method == "GET":
        return _answer(request, version)
    try:
        # Refuse early, before a byte of the body is read, as the API does.
        artifacts.model_version_artifact_check(version=version)
        install_upload_handler(request)
        request.FILES  # noqa: B018 - streams the body through the handler now
    except DomainError as error:
        return _answer(request, version, error=error, status=error.status_code)
    except _PARSE_ERRORS:
        error = DomainError(
            _("Send exactly one file, in the field named 'file'."),
            code="too_many_parts",
        )
        return _answer(request, version, error=error, status=400)
    return _store(request, version)


@csrf_protect
def _store(request, version: ModelVersion):
    """Hand the spooled file to ``model_version_artifact_upload``; always remove it."""
    upload = None
    try:
        upload = received_upload(request)
        version = artifacts.model_version_artifact_upload(
            actor=request.user, version=version, upload=upload
        )
    except DomainError as error:
        return _answer(request, version, error=error, status=error.status_code)
    finally:
        remove_spooled(upload)
    return _answer(request, version)


@require_GET
def version_artifact_status(request, pk: int):
    """The artifact's state as a fragment; polled by htmx while it is pending."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    version = selectors.model_version_list(request.user).filter(pk=pk).first()
    if version is None:
        raise Http404
    return render(
        request,
        "portal/registry/_artifact_state.html",
        {"version": version, "pending": ArtifactState.PENDING},
    )
