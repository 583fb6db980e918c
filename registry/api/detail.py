"""A model version's detail without the ORM compiler or DRF's field machinery.

``GET /api/v1/model-versions/{id}/`` is the API's most read answer. When the
catalogue read cache (``registry.read_cache``) misses, which is nearly always
on a large catalogue read uniformly, the reference path costs about 10 ms of
Python per request: Django compiling the tenancy-scoped 7-way join and the
dataset links' prefetch, building the row objects, then DRF building the
``ModelVersionSerializer``'s fields and walking them. The SQL itself runs in
a fraction of a millisecond (bench/README.md, "detail.py").

This module answers the same request with two fixed SQL statements (the
version with everything it names, then its dataset links), each with the
reader's scope written out as ``TenantQuerySet.visible_to`` and
``model_version_list`` would compile it; PostgreSQL prepares them once per
connection (``DATABASE_PREPARE_THRESHOLD``). The rows are turned into the
representation by hand, flat, in the serializer's field order. It is written
by hand because no library does this: DRF has no compiled or cached
serializer, and tools that render JSON in the database would have to copy
DRF's formats (decimals, datetimes in the active time zone) in SQL.

``ModelVersionSerializer`` stays the reference: the only values not copied
through are converted by the serializer's own DecimalField and DateTimeField
instances, and ``tests/registry/test_api_detail_fast.py`` holds the two paths
to the same output, byte for byte, over many varied versions and every kind
of reader. Anything unusual takes the reference path: a database other than
PostgreSQL, a renderer other than JSON, an id that is not plain digits, a
permission class that checks objects, ``CIVITAS_FAST_VERSION_DETAIL`` off.
"""

from __future__ import annotations

import json
import re
from functools import cache

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework.permissions import BasePermission
from rest_framework.renderers import JSONRenderer

from registry.api.serializers import ModelVersionSerializer
from registry.models import (
    Agency,
    AIModel,
    Dataset,
    DatasetVersion,
    Licence,
    ModelVersion,
    ModelVersionDataset,
    Visibility,
    is_oversight,
    user_agency_id,
)
from registry.selectors import is_visible_to

_T = {
    "mv": ModelVersion._meta.db_table,
    "model": AIModel._meta.db_table,
    "agency": Agency._meta.db_table,
    "licence": Licence._meta.db_table,
    "user": get_user_model()._meta.db_table,
    "link": ModelVersionDataset._meta.db_table,
    "dv": DatasetVersion._meta.db_table,
    "dataset": Dataset._meta.db_table,
}

# The version's own columns shown as stored, in the serializer's order; each
# group below is placed where the serializer shows it.
_TEXT_HEAD = ("version", "status")
_DERIVATION = ("derivation",)
_TRAINING = ("training_run", "training_jurisdiction", "training_hardware")
_CARD = (
    "hosting_jurisdiction",
    "limitations",
    "risks",
    "ethical_considerations",
    "artifact_state",
    "artifact_error",
    "artifact_digest",
    "artifact_size",
    "artifact_format",
)
_GRAPH_JSON = ("graph_inputs", "graph_outputs", "opsets")
_GRAPH = (
    "parameter_count",
    "weight_bytes",
    "kind",
    "layout",
    "num_layers",
    "quantisation",
)
_LICENCE = (
    "expression",
    "is_osi_approved",
    "allows_commercial_use",
    "allows_derivatives",
    "requires_share_alike",
)
_OWN = (
    *_TEXT_HEAD,
    *_DERIVATION,
    "derivation_settings",
    *_TRAINING,
    "training_energy_kwh",
    *_CARD,
    *_GRAPH_JSON,
    *_GRAPH,
    "selftest",
    "released_at",
    "created_at",
    "updated_at",
)

_VERSION_SQL = f"""
SELECT mv.id, mv.model_id, m.slug, a.slug, m.agency_id, u.username,
       {", ".join(f"mv.{name}" for name in _OWN)},
       {", ".join(f"l.{name}" for name in _LICENCE)},
       b.id, b.model_id, bm.slug, ba.slug, b.version, bm.agency_id, bm.visibility
FROM {_T["mv"]} mv
JOIN {_T["model"]} m ON m.id = mv.model_id
JOIN {_T["agency"]} a ON a.id = m.agency_id
JOIN {_T["licence"]} l ON l.id = mv.licence_id
JOIN {_T["user"]} u ON u.id = mv.created_by_id
LEFT JOIN {_T["mv"]} b ON b.id = mv.base_version_id
LEFT JOIN {_T["model"]} bm ON bm.id = b.model_id
LEFT JOIN {_T["agency"]} ba ON ba.id = bm.agency_id
WHERE mv.id = %s"""
_LINKS_SQL = f"""
SELECT l.dataset_version_id, d.slug, da.slug, dv.version, l.role
FROM {_T["link"]} l
JOIN {_T["dv"]} dv ON dv.id = l.dataset_version_id
JOIN {_T["dataset"]} d ON d.id = dv.dataset_id
JOIN {_T["agency"]} da ON da.id = d.agency_id
WHERE l.model_version_id = %s"""
# The scopes of ``visible_to``: oversight reads everything; anyone else their
# agency's objects and public ones (no agency: ``= NULL`` matches no row, as
# the ORM's ``IS NULL`` on a column that is never null).
_SCOPED = " AND ({alias}.agency_id = %s OR {alias}.visibility = %s)"
_LINKS_ORDER = " ORDER BY l.role, l.id"  # ModelVersionDataset.Meta.ordering
STATEMENTS = {
    "oversight": (_VERSION_SQL, _LINKS_SQL + _LINKS_ORDER),
    "agency": (
        _VERSION_SQL + _SCOPED.format(alias="m"),
        _LINKS_SQL + _SCOPED.format(alias="d") + _LINKS_ORDER,
    ),
}
_DIGITS = re.compile(r"[0-9]{1,18}")


def applies(view, request) -> bool:
    """Whether this request may take the fast path (else the serializer's)."""
    return (
        settings.CIVITAS_FAST_VERSION_DETAIL
        and connection.vendor == "postgresql"
        and isinstance(getattr(request, "accepted_renderer", None), JSONRenderer)
        and _DIGITS.fullmatch(str(view.lookup_value())) is not None
        and all(
            type(permission).has_object_permission
            is BasePermission.has_object_permission
            for permission in view.get_permissions()
        )
    )


def version_detail(user, pk: int) -> dict | None:
    """The version as ``ModelVersionSerializer`` shows it to ``user``, or None.

    None when the version does not exist or ``user`` may not read it: the
    caller answers 404 as the reference path does.
    """
    oversight = is_oversight(user)
    agency_id = user_agency_id(user)
    version_sql, links_sql = STATEMENTS["oversight" if oversight else "agency"]
    scope = () if oversight else (agency_id, Visibility.PUBLIC)
    with connection.cursor() as cursor:
        cursor.execute(version_sql, (pk, *scope))
        row = cursor.fetchone()
        if row is None:
            return None
        cursor.execute(links_sql, (pk, *scope))
        links = cursor.fetchall()
    return _representation(user, oversight, agency_id, row, links)


@cache
def _fields() -> dict:
    """The reference serializer's fields, built once: their formats follow settings."""
    return ModelVersionSerializer().fields


def _representation(user, oversight, agency_id, row, links) -> dict:
    """The flat twin of ``ModelVersionSerializer.to_representation``."""
    fields = _fields()
    (pk, model_id, model_slug, agency_slug, model_agency_id, username) = row[:6]
    own = dict(zip(_OWN, row[6 : 6 + len(_OWN)], strict=True))
    licence = row[6 + len(_OWN) : 6 + len(_OWN) + len(_LICENCE)]
    base = row[6 + len(_OWN) + len(_LICENCE) :]
    energy = own["training_energy_kwh"]
    data = {"id": pk, "model": model_id, "model_slug": model_slug}
    data["agency"] = agency_slug
    data.update((name, own[name]) for name in _TEXT_HEAD)
    data["licence"] = dict(zip(_LICENCE, licence, strict=True))
    data["base_version"] = _base_version(user, base)
    data.update((name, own[name]) for name in _DERIVATION)
    data["derivation_settings"] = json.loads(own["derivation_settings"])
    data["datasets"] = [
        {
            "dataset_version": link[0],
            "dataset": link[1],
            "agency": link[2],
            "version": link[3],
            "role": link[4],
        }
        for link in links
    ]
    data.update((name, own[name]) for name in _TRAINING)
    data["training_energy_kwh"] = (
        None
        if energy is None
        else fields["training_energy_kwh"].to_representation(energy)
    )
    data.update((name, own[name]) for name in _CARD)
    data.update((name, json.loads(own[name])) for name in _GRAPH_JSON)
    data.update((name, own[name]) for name in _GRAPH)
    data["selftest"] = json.loads(own["selftest"])
    released_at = own["released_at"]
    data["is_released"] = released_at is not None
    data["released_at"] = (
        None
        if released_at is None
        else fields["released_at"].to_representation(released_at)
    )
    shown = oversight or (agency_id is not None and agency_id == model_agency_id)
    data["created_by"] = username if shown else None
    for name in ("created_at", "updated_at"):
        data[name] = fields[name].to_representation(own[name])
    return data


def _base_version(user, base) -> dict | None:
    """``get_base_version``: the base named when its model is readable, else None."""
    base_id, model_id, model_slug, agency_slug, version, agency_id, visibility = base
    if base_id is None or not is_visible_to(
        user, agency_id=agency_id, visibility=visibility
    ):
        return None
    return {
        "id": base_id,
        "model": model_id,
        "model_slug": model_slug,
        "agency": agency_slug,
        "version": version,
    }
