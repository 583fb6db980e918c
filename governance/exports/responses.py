"""An export as an HTTP answer: the API and the public register serve it alike."""

from __future__ import annotations

from django.http import HttpResponse

from governance.exports.services import Export

# The HTML exports are standalone documents: their one inline stylesheet is
# all they need, never a script, a frame or a form.
DOCUMENT_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def export_response(export: Export, *, inline: bool = False) -> HttpResponse:
    """The document with its file name, digest and a strict CSP of its own."""
    response = HttpResponse(export.content, content_type=export.media_type)
    disposition = "inline" if inline else "attachment"
    response["Content-Disposition"] = f'{disposition}; filename="{export.filename}"'
    response["X-Content-SHA256"] = export.sha256
    response["Content-Security-Policy"] = DOCUMENT_CSP
    return response
