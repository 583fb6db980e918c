"""The chain read straight from PostgreSQL for verification (``verify_chain``).

Free of Django, so that worker processes can import it: each opens its own
connection, joins the verifying transaction's snapshot (``pg_export_snapshot``,
so every process sees the same chain), reads a seq range with a server-side
cursor and checks it as one segment (``audit.verify.scan``); the verifying
process joins the segments in order (``ChainVerifier.join``). Timestamps come
formatted by PostgreSQL (``to_char``, the form ``format_timestamp`` gives for
years 1000 to 9999; other years go through ``format_timestamp`` itself).
"""

from __future__ import annotations

import datetime as dt
import multiprocessing.util
from collections.abc import Iterator, Mapping
from typing import Any

import psycopg
from psycopg import sql

from audit.verify import (
    HASHED_FIELDS,
    ChainVerifier,
    Segment,
    event_digest,
    format_timestamp,
    parse_json,
    scan,
    segments,
    spliced_digest,
)

_COLUMNS = (*HASHED_FIELDS, "hash")
_SELECT = (
    "SELECT seq, to_char(created_at AT TIME ZONE 'UTC', "
    '\'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\'), actor_label, agency_slug, action, '
    "object_type, object_id, payload, prev_hash, hash FROM {} "
    "WHERE seq > %s AND seq <= %s ORDER BY seq"
)
_LAST = 2**63 - 1
_ROWS_PER_SEGMENT = 50_000
PAGE_ROWS = 10_000  # rows per keyset page (``event_pages``)
# Django's own OPTIONS, not libpq's.
_DJANGO_OPTIONS = {"isolation_level", "pool", "server_side_binding", "assume_role"}
_connection: psycopg.Connection | None = None


def _parsed(payload: str) -> Any:
    try:
        return parse_json(payload)
    except ValueError:  # not JSON: passed on as text, which then fails its hash
        return payload


def _chain_event(row: tuple, parse: bool = True) -> dict[str, Any]:
    """A selected row as a chain dict (``_SELECT``'s columns); the payload
    stays the stored text unless ``parse``."""
    event = dict(zip(_COLUMNS, row, strict=True))
    stamp = event["created_at"]
    if len(stamp) != 27 or stamp[0] == "0":
        event["created_at"] = format_timestamp(dt.datetime.fromisoformat(stamp))
    if parse:
        event["payload"] = _parsed(event["payload"])
    return event


def stored_digest(event: Mapping[str, Any]) -> bytes:
    """``event_digest`` of a row whose payload is the stored text: hashed as it
    stands (``spliced_digest``), parsed only when that does not match, so a
    payload stored in another JSON form still verifies."""
    digest = spliced_digest(event, event["payload"])
    if digest is not None:
        return digest
    return event_digest({**event, "payload": _parsed(event["payload"])})


def event_rows(
    conn: psycopg.Connection, table: str, after: int = 0, upto: int | None = None
) -> Iterator[dict[str, Any]]:
    """Events with ``after`` < seq <= ``upto`` in seq order, as chain dicts.

    Read through a server-side cursor, so memory stays flat; needs an open
    transaction. Payloads stay the stored text: check them with
    ``stored_digest``.
    """
    query = sql.SQL(_SELECT).format(sql.Identifier(table))
    with conn.cursor(name=f"civitas_audit_rows_{after}") as cursor:
        cursor.itersize = 10_000
        cursor.execute(query, (after, _LAST if upto is None else upto))
        for row in cursor:
            yield _chain_event(row, parse=False)


def event_pages(
    conn: psycopg.Connection,
    table: str,
    upto: int,
    scope: Mapping[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """Events with seq <= ``upto`` matching ``scope`` in seq order, as chain dicts.

    ``scope`` maps a column to a value (equal) or a list (any of). Read in
    windows of ``PAGE_ROWS`` seqs, one query each, so memory stays flat and no
    transaction is needed (an export streams its response after the view has
    returned). Windows rather than ``LIMIT`` pages: with stale statistics
    (events just written with COPY) PostgreSQL sorts the whole rest of the
    chain for each ``ORDER BY seq LIMIT`` page.
    """
    where = [sql.SQL("")]
    values: list[Any] = []
    for column, value in (scope or {}).items():
        test = "= ANY(%s)" if isinstance(value, list) else "= %s"
        where.append(sql.SQL(" AND {} " + test).format(sql.Identifier(column)))
        values.append(value)
    query = sql.SQL(_SELECT.replace(" ORDER BY", "{} ORDER BY"))
    query = query.format(sql.Identifier(table), sql.Composed(where))
    with conn.cursor() as cursor:
        for after in range(0, upto, PAGE_ROWS):
            end = min(after + PAGE_ROWS, upto)
            for row in cursor.execute(query, (after, end, *values)).fetchall():
                yield _chain_event(row)


def conninfo_of(settings_dict: Mapping[str, Any]) -> dict[str, Any]:
    """psycopg connection arguments from a Django DATABASES entry."""
    info = {
        "dbname": settings_dict.get("NAME"),
        "user": settings_dict.get("USER"),
        "password": settings_dict.get("PASSWORD"),
        "host": settings_dict.get("HOST"),
        "port": settings_dict.get("PORT"),
    }
    for key, value in (settings_dict.get("OPTIONS") or {}).items():
        if key not in _DJANGO_OPTIONS and isinstance(value, str | int):
            info[key] = value
    return {key: value for key, value in info.items() if value not in ("", None)}


def connect(conninfo: Mapping[str, Any], snapshot: str) -> None:
    """Open this process's connection, inside the verifying snapshot."""
    global _connection
    _connection = psycopg.connect(**conninfo)
    _connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    _connection.execute(
        sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot))
    )
    multiprocessing.util.Finalize(None, disconnect, exitpriority=10)


def disconnect() -> None:
    """Close the connection ``connect`` opened, if any."""
    global _connection
    if _connection is not None:
        _connection.close()
        _connection = None


def segment(task: tuple[str, int, int | None, dict[int, str]]) -> Segment:
    """Check the events of one seq range (a worker's share)."""
    table, after, upto, heads = task
    events = event_rows(_connection, table, after, upto)
    return scan(Segment(head=True), events, None, None, heads, digest_of=stored_digest)


def verify_segments(
    verifier: ChainVerifier,
    *,
    table: str,
    last_seq: int,
    conninfo: Mapping[str, Any],
    snapshot: str,
    workers: int,
    chunks: int | None = None,
    after: int = 0,
    upto: int | None = None,
) -> None:
    """Check the chain from ``after`` to ``last_seq`` in seq ranges, ``workers``
    processes reading from ``snapshot``; stops at the first failure. The last
    range reads past ``last_seq``, up to ``upto`` (None: to the end)."""
    size = last_seq - after
    count = chunks or max(workers * 4, size // _ROWS_PER_SEGMENT)
    cuts = sorted({after + size * i // count for i in range(count)})
    ranges = zip(cuts, [*cuts[1:], upto], strict=True)
    tasks = [(table, start, end, dict(verifier.heads)) for start, end in ranges]
    try:
        for seg in segments(segment, tasks, workers, (connect, (conninfo, snapshot))):
            verifier.join(seg)
            if verifier.failed:
                return
    finally:
        disconnect()
