"""Producing an export for a reader, and recording it in the audit chain.

``export_create`` is the one governed entry point (API, portal links and
``manage.py export_version`` call it): it renders one format from the record
the actor may read and appends one ``export.created`` event carrying the
format, the SHA-256 and the size of what was handed out, so an auditor can
later match a document to the moment it left the registry.

``register_transparency_record`` serves the public register's ATRS
downloads. It records nothing: anyone may ask for them without an account,
and an event per anonymous request would let anyone grow the audit chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from django.contrib.auth.models import AnonymousUser
from django.db import transaction

from audit import services as audit
from governance.exports.annex_iv import annex_iv_html, annex_iv_pdf
from governance.exports.atrs import atrs_html, atrs_record
from governance.exports.bom import ml_bom
from governance.exports.model_card import model_card
from governance.exports.record import use_case_record, version_record
from governance.models import UseCase
from registry.models import ModelVersion
from registry.services.releases import refuse_failed_derivation


@dataclass(frozen=True)
class ExportFormat:
    """One published format: what it renders from and how it is served."""

    name: str
    scope: str  # "version" or "use_case"
    media_type: str
    extension: str
    render: Callable[..., str | bytes]


def _json(document) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


FORMATS = {
    f.name: f
    for f in (
        ExportFormat(
            "model-card", "version", "text/markdown; charset=utf-8", "md", model_card
        ),
        ExportFormat(
            "ml-bom", "version", "application/vnd.cyclonedx+json", "cdx.json", ml_bom
        ),
        ExportFormat(
            "annex-iv", "version", "text/html; charset=utf-8", "html", annex_iv_html
        ),
        ExportFormat("annex-iv-pdf", "version", "application/pdf", "pdf", annex_iv_pdf),
        ExportFormat(
            "transparency-record",
            "use_case",
            "application/json",
            "json",
            lambda record: _json(atrs_record(record)),
        ),
        ExportFormat(
            "transparency-record-html",
            "use_case",
            "text/html; charset=utf-8",
            "html",
            atrs_html,
        ),
    )
}
VERSION_FORMATS = tuple(n for n, f in FORMATS.items() if f.scope == "version")
USE_CASE_FORMATS = tuple(n for n, f in FORMATS.items() if f.scope == "use_case")


@dataclass(frozen=True)
class Export:
    """A rendered export: its bytes, media type, file name and digest."""

    format: str
    content: bytes
    media_type: str
    filename: str
    sha256: str


def _render(fmt: ExportFormat, record, stem: str) -> Export:
    output = fmt.render(record)
    content = output.encode() if isinstance(output, str) else output
    return Export(
        format=fmt.name,
        content=content,
        media_type=fmt.media_type,
        filename=f"{stem}.{fmt.name}.{fmt.extension}",
        sha256=hashlib.sha256(content).hexdigest(),
    )


def _version_stem(version: ModelVersion) -> str:
    return f"{version.model.agency.slug}-{version.model.slug}-{version.version}"


@transaction.atomic
def export_create(
    *,
    actor,
    format: str,
    version: ModelVersion | None = None,
    use_case: UseCase | None = None,
) -> Export:
    """Render ``format`` of ``version`` (or ``use_case``) as ``actor`` may read it.

    The caller has found the object among those ``actor`` may read. Records
    one ``export.created`` audit event (format, sha256, bytes).
    Raises ValueError for an unknown format or one of the other scope, and
    ``Conflict`` (``derivation_failed``) for a version whose platform
    derivation failed: a document about a model that does not exist.
    """
    fmt = FORMATS.get(format)
    if fmt is None:
        raise ValueError(f"unknown export format {format!r}")
    if fmt.scope == "version":
        if version is None:
            raise ValueError(f"{format} is an export of a model version")
        refuse_failed_derivation(version, "exported")
        export = _render(
            fmt, version_record(version, user=actor), _version_stem(version)
        )
        obj, agency = version, version.model.agency
    else:
        if use_case is None:
            raise ValueError(f"{format} is an export of a use case")
        export = _render(
            fmt, use_case_record(use_case, user=actor), f"use-case-{use_case.pk}"
        )
        obj, agency = use_case, use_case.agency
    audit.record(
        actor=actor,
        action="export.created",
        obj=obj,
        agency=agency,
        payload={
            "format": export.format,
            "sha256": export.sha256,
            "bytes": len(export.content),
        },
    )
    return export


def register_transparency_record(*, use_case: UseCase, format: str) -> Export:
    """The ATRS of a public register entry, as the public may read it (not audited).

    ``use_case`` comes from ``governance.register.register_use_case``: only an
    entry the register lists, whose model is public. Private datasets stay
    unnamed, as on the register page.
    """
    if format not in USE_CASE_FORMATS:
        raise ValueError(f"unknown transparency record format {format!r}")
    record = use_case_record(use_case, user=AnonymousUser())
    return _render(FORMATS[format], record, f"register-{use_case.pk}")
