"""A read cache of the API's catalogue representations, exact by construction.

Reading a version (or a page of versions) costs the API a dozen milliseconds
of Python per request, most of it in the ORM compiling the same tenancy-scoped
queries and in the serializers (bench/README.md, "Load"). The catalogue is read
far more than it is written, so the representation is kept per process and
reused while nothing in the catalogue has changed:

- the key is the catalogue's generation (``registry_cataloguegeneration``, a
  counter PostgreSQL's own triggers bump on every statement that writes a
  catalogue table: migration 0006), the reader's scope (oversight, or the
  reader's agency: ``visible_to`` depends on nothing else), and the request's
  absolute URL (path, query, host: pagination links carry it);
- the generation is read first, then the data, so an entry never holds data
  older than its key; an entry is only ever made outside a transaction
  (autocommit reads of committed data) and only from a 200 answer;
- every entry of an older generation is unreachable the moment a write commits,
  whoever made it (a service, ``QuerySet.update()``, the admin, raw SQL).

Authentication, permissions, throttles and the audit of denials run as before:
only the query and the serialisation are skipped. The cache lives in each web
process's memory (no network round trip: that is the point), bounded by
``CIVITAS_READ_CACHE_ENTRIES`` (0 turns it off). On a database without the
generation table (SQLite, the laptop default) nothing is cached.

Django's cache framework keys by time-to-live or by explicit deletes; neither
is exact against writes made outside the services, hence this small module.
"""

from __future__ import annotations

import copy
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

from django.conf import settings
from django.db import connection
from django.db.utils import DatabaseError
from django.http import HttpResponse, HttpResponseBase
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from config.authentication import TokenAuthentication, invalid_token
from registry.models import is_oversight, user_agency_id

_GENERATION_SQL = "SELECT epoch, counter FROM registry_cataloguegeneration WHERE id = 1"


class _LRU:
    """A thread-safe bounded mapping that forgets the least recently used entry."""

    def __init__(self) -> None:
        self._entries: OrderedDict[Hashable, object] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable):
        with self._lock:
            try:
                self._entries.move_to_end(key)
            except KeyError:
                self.misses += 1
                return None
            self.hits += 1
            return self._entries[key]

    def put(self, key: Hashable, value: object, limit: int) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > limit:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0


_cache = _LRU()
_tokens = _LRU()  # token checks (GenerationTokenAuthentication)


def catalogue_generation() -> tuple[str, int] | None:
    """The catalogue's (epoch, counter), or None where there is no such table."""
    if connection.vendor != "postgresql":
        return None
    try:
        with connection.cursor() as cursor:
            cursor.execute(_GENERATION_SQL)
            row = cursor.fetchone()
    except DatabaseError:
        # A database migrated before 0006: read without the cache.
        return None
    return (str(row[0]), row[1]) if row else None


def _request_generation(request) -> tuple[str, int] | None:
    """The generation read once per request (by the token check, or here)."""
    request = getattr(request, "_request", request)
    if not hasattr(request, "_catalogue_generation"):
        request._catalogue_generation = catalogue_generation()
    return request._catalogue_generation


class GenerationTokenAuthentication(TokenAuthentication):
    """The API token check, remembered per process while the generation holds.

    Checking a token joins the token, its user, the membership and the agency:
    a third of a cached catalogue read's time (bench/README.md, "load.py").
    Every table that decides the answer (``knox_authtoken``: a token revoked
    or signed out; ``auth_user``: deactivated, superuser; the membership and
    agency: the role) bumps the catalogue generation (migrations 0006 and
    0008), so a remembered check is only reused while none of them has
    changed, and an expired token is still refused on its own expiry. Each
    request gets its own copy of the token and user objects. Nothing is kept
    inside a transaction or where there is no generation (SQLite).
    """

    def authenticate(self, request):
        self._request = request
        return super().authenticate(request)

    def authenticate_credentials(self, token: bytes):
        limit = settings.CIVITAS_READ_CACHE_ENTRIES
        request = getattr(self, "_request", None)
        if limit <= 0 or request is None or connection.in_atomic_block:
            return super().authenticate_credentials(token)
        generation = _request_generation(request)
        if generation is None:
            return super().authenticate_credentials(token)
        # The key is a hash of the whole token, never the token itself.
        key = ("token", generation, hashlib.sha256(token).hexdigest())
        remembered = _tokens.get(key)
        if remembered is not None:
            auth_token = copy.deepcopy(remembered)
            if self._cleanup_token(auth_token):
                raise invalid_token()
            return self.validate_user(auth_token)
        user, auth_token = super().authenticate_credentials(token)
        _tokens.put(key, copy.deepcopy(auth_token), limit)
        return user, auth_token


def reader_scope(user) -> str:
    """What a representation may depend on about its reader: ``visible_to``'s inputs."""
    if is_oversight(user):
        return "oversight"
    return f"agency:{user_agency_id(user)}"


def cached_response(request, compute: Callable[[], Response]) -> HttpResponseBase:
    """The view's answer for this request, from the cache when exact.

    ``compute`` is the view's normal read (selector, serializer). A 200 in
    JSON computed outside a transaction is rendered once and kept as bytes;
    every other answer (an error, the browsable API) is returned as computed.
    """
    limit = settings.CIVITAS_READ_CACHE_ENTRIES
    renderer = getattr(request, "accepted_renderer", None)
    if (
        limit <= 0
        or connection.in_atomic_block
        or not isinstance(renderer, JSONRenderer)
    ):
        return compute()
    generation = _request_generation(request)
    if generation is None:
        return compute()
    key = (
        generation,
        reader_scope(request.user),
        request.accepted_media_type,
        request.build_absolute_uri(),
    )
    body = _cache.get(key)
    if body is None:
        response = compute()
        if response.status_code != 200 or not isinstance(response, Response):
            return response
        body = renderer.render(
            response.data, request.accepted_media_type, {"request": request}
        )
        _cache.put(key, body, limit)
    return HttpResponse(body, content_type=renderer.media_type)


def clear() -> None:
    """Forget every entry (tests; never needed for correctness)."""
    _cache.clear()
    _tokens.clear()


def stats() -> dict[str, int]:
    """Hits and misses of this process since start (or the last ``clear``)."""
    return {"hits": _cache.hits, "misses": _cache.misses}
