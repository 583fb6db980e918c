"""Verification in segments and worker processes gives the single process's report.

The chain is cut into contiguous segments (byte ranges of an export, seq
ranges in the database); each is checked apart, its first link and seq at the
join. Every case runs three ways: one process streaming, one process in
segments, two worker processes in segments; the reports must be identical and
name the right seq.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.db import connection, transaction

from audit import formats, rows, verify
from audit import services as audit
from audit.formats import _ENCODER, canonical_json, event_hash
from tests.audit.test_audit import signing_key_file, triggers_disabled
from tests.audit.test_verify import _envelope, make_chain, write_export

WAYS = ({"workers": 1}, {"workers": 1, "chunks": 4}, {"workers": 2, "chunks": 4})
TRICKY = [
    {"text": 'é ü ß 中文 😀 \u2028 \u2029 \x00 \x1f \\ " / \t\n'},
    {"floats": [0.1, -0.5, 1e16, 1.5e300, 5e-324, 123456789.123456789, -0.0]},
    {"ints": [2**63, -(2**64) - 1, 10**40, 0]},
    {"nested": {"b": [1, {"d": None, "c": True}], "a": {"z": [], "y": {}}}},
    {"keys": {"é": 1, "E": 2, "e\u0301": 3, "a\u0000": 4, "😀": 5, "~": 6}},
]


# --- canonical bytes -----------------------------------------------------------


@pytest.mark.parametrize("payload", TRICKY)
def test_the_prebuilt_encoder_gives_the_canonical_bytes(payload):
    doc = {"seq": 1, "payload": payload, "prev_hash": "0" * 64}
    parsed = json.loads(json.dumps(doc))  # what an export line gives back

    fast = "".join(formats._C_ENCODE(parsed, 0)).encode("utf-8")
    assert fast == canonical_json(parsed) == _ENCODER.encode(parsed).encode("utf-8")


# --- the standalone verifier -------------------------------------------------------


def _signed_head(key: Ed25519PrivateKey, events: list[dict], size: int) -> dict:
    edge = verify.TreeEdge()
    for event in events[:size]:
        edge.push(verify.leaf_hash(event["hash"]))
    payload = canonical_json(
        {
            "seq": size,
            "head_hash": events[size - 1]["hash"],
            "created_at": "2026-02-01T11:00:00.000000Z",
            "tree_size": size,
            "root_hash": edge.root(),
        }
    )
    return _envelope(key, payload, kind=verify.CHECKPOINT_PAYLOAD_TYPE)


def _chain(count: int = 60, every_seventh: dict | None = None) -> list[dict]:
    events = make_chain(count)
    for event in events:  # tricky payloads, then rehash the chain
        event["payload"] = {"n": event["seq"], **TRICKY[event["seq"] % len(TRICKY)]}
        if event["seq"] % 7 == 0:
            event.update(every_seventh or {})
    prev = verify.GENESIS_HASH
    for event in events:
        event["prev_hash"] = prev
        event["hash"] = prev = event_hash(event)
    return events


def _export(tmp_path: Path, events: list[dict], key, size: int = 50) -> Path:
    head = (size, events[size - 1]["hash"], _signed_head(key, events, size))
    return write_export(tmp_path / "chain.jsonl", events, [head], key)


def _first_seq_of_range(path: Path, index: int) -> int:
    start, _ = verify._file_ranges(path, 4)[index]
    with path.open("rb") as handle:
        handle.seek(start)
        return json.loads(handle.readline())["seq"]


def _reports(path: Path) -> list[dict]:
    return [verify.verify_export(path, **way).to_dict() for way in WAYS]


def test_a_sound_export_verifies_the_same_every_way(tmp_path):
    key = Ed25519PrivateKey.generate()
    reports = _reports(_export(tmp_path, _chain(), key))

    assert reports[0]["ok"] and reports[0]["events"] == 60, reports[0]
    assert reports[0]["checkpoints"] == 1
    assert reports[1:] == [reports[0]] * 2


def _rewrite(events: list[dict], seq: int, **changes) -> None:
    """Change event ``seq`` and give it a matching hash (its link may break)."""
    event = events[seq - 1]
    event.update(changes)
    event["hash"] = event_hash(event)


@pytest.mark.parametrize("case", ["tampered", "link", "missing", "root"])
def test_a_fault_is_reported_at_its_seq_every_way(tmp_path, case):
    key = Ed25519PrivateKey.generate()
    events = _chain()
    path = _export(tmp_path, events, key)
    boundary = _first_seq_of_range(path, 2)  # first event of the third segment
    assert 20 < boundary < 50
    expected = {"tampered": 24, "link": boundary, "missing": boundary, "root": 50}
    if case == "tampered":  # in the middle of the second segment
        events[23]["payload"] = {"n": "changed"}
    elif case == "link":
        _rewrite(events, boundary, prev_hash="a" * 64)
    elif case == "missing":
        del events[boundary - 1]
    head = (50, events[49]["hash"], _signed_head(key, events, 50))
    if case == "root":  # the signed tree head names another tree of 50 events
        other = _chain()
        _rewrite(other, 3, payload={"n": "other"})
        forged = [*events[:2], other[2], *events[3:]]
        head = (50, events[49]["hash"], _signed_head(key, forged, 50))
    write_export(path, events, [head], key)

    reports = _reports(path)

    assert reports[0]["first_bad_seq"] == expected[case], reports[0]
    assert not reports[0]["ok"]
    assert reports[1:] == [reports[0]] * 2


def _compact(path: Path) -> list[str]:
    """The export's lines in the platform's form: compact, UTF-8 as is, each
    payload as parsed from its stored canonical text (keys sorted)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        if "payload" in item:
            item["payload"] = json.loads(canonical_json(item["payload"]))
        out.append(json.dumps(item, ensure_ascii=False, separators=(",", ":")))
    return out


def _no_reencoding(monkeypatch, module=formats) -> None:
    """Fail when ``module``'s shortcut falls back to parsing and re-encoding."""

    def parsed_digest(event):
        raise AssertionError(f"seq {event['seq']} was parsed and re-encoded")

    monkeypatch.setattr(module, "event_digest", parsed_digest)


def test_platform_export_lines_are_hashed_as_written(tmp_path, monkeypatch):
    key = Ed25519PrivateKey.generate()
    strings = 'quote " backslash \\ \\" é 😀 \u2028 \x01 \\u0041'
    path = _export(tmp_path, _chain(every_seventh={"object_id": strings}), key)
    path.write_text("\n".join(_compact(path)) + "\n", encoding="utf-8")
    _no_reencoding(monkeypatch)

    reports = [verify.verify_export(path, **way).to_dict() for way in WAYS[:2]]

    assert reports[0]["ok"] and reports[0]["events"] == 60, reports[0]
    assert reports[1] == reports[0]


def test_a_second_payload_in_an_export_line_is_the_one_checked(tmp_path):
    key = Ed25519PrivateKey.generate()
    path = _export(tmp_path, _chain(), key)
    lines = _compact(path)
    index = next(
        i for i, line in enumerate(lines) if line.startswith('{"type":"event","seq":5,')
    )
    # The hashed payload stays in the line; a parser keeps the second one.
    lines[index] = lines[index].replace(
        ',"prev_hash":', ',"payload":{"n":5},"prev_hash":', 1
    )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    reports = _reports(path)

    assert json.loads(lines[index])["payload"] == {"n": 5}
    assert reports[0]["first_bad_seq"] == 5, reports[0]
    assert "altered" in reports[0]["reason"]
    assert reports[1:] == [reports[0]] * 2


def test_an_unreadable_line_is_named_the_same_every_way(tmp_path):
    key = Ed25519PrivateKey.generate()
    path = _export(tmp_path, _chain(), key)
    lines = path.read_text().splitlines(keepends=True)
    lines[45] = "{not json\n"
    path.write_text("".join(lines))

    for way in WAYS:
        with pytest.raises(verify.VerificationError, match=r"^line 46 is not JSON$"):
            verify.verify_export(path, **way)


def test_one_process_when_workers_cannot_start(tmp_path, monkeypatch):
    key = Ed25519PrivateKey.generate()
    path = _export(tmp_path, _chain(), key)
    expected = verify.verify_export(path, workers=1).to_dict()

    def refuse(*args, **kwargs):
        raise AssertionError("daemonic processes are not allowed to have children")

    context = types.SimpleNamespace(Pool=refuse)
    monkeypatch.setattr(verify.multiprocessing, "get_context", lambda m: context)

    assert verify.verify_export(path, workers=2, chunks=4).to_dict() == expected


# --- the in-database verifier ------------------------------------------------------

__all__ = ["signing_key_file"]  # the fixture, for platform_key


@pytest.fixture
def platform_key(settings, signing_key_file):
    settings.CIVITAS_SIGNING_KEY_FILE = str(signing_key_file)


def _record(count: int) -> None:
    for index in range(count):
        with transaction.atomic():
            audit.record(
                actor=None,
                action="dataset.registered",
                object_type="registry.dataset",
                object_id=str(index + 1),
                payload={"n": index + 1, **TRICKY[index % len(TRICKY)]},
            )


def _db_reports() -> list[dict]:
    return [audit.verify_chain(**way).to_dict() for way in WAYS]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("case", [None, "tampered", "link", "missing"])
def test_the_database_chain_is_reported_the_same_every_way(case, platform_key):
    _record(24)
    audit.checkpoint_create()  # a signed tree head at 24
    # Four seq ranges: 1-6, 7-12, 13-18, 19-24.
    statement, expected = {
        None: (None, None),
        "tampered": ("UPDATE {} SET payload = '{{\"n\":999}}' WHERE seq = 9", 9),
        "link": ("UPDATE {} SET prev_hash = repeat('a', 64) WHERE seq = 13", 13),
        "missing": ("DELETE FROM {} WHERE seq = 19", 19),
    }[case]
    if statement:
        table = "governance_auditevent"
        with transaction.atomic(), triggers_disabled(table), connection.cursor() as c:
            c.execute(statement.format(table))

    reports = _db_reports()

    assert reports[0]["first_bad_seq"] == expected, reports[0]
    assert reports[0]["ok"] is (case is None)
    assert reports[0]["events"] == (24 if case is None else expected)
    assert reports[1:] == [reports[0]] * 2


@pytest.mark.django_db
def test_stored_payloads_are_hashed_as_stored_not_parsed(platform_key, monkeypatch):
    _record(len(TRICKY) * 2)
    with transaction.atomic():
        events = list(rows.event_rows(connection.connection, "governance_auditevent"))

    _no_reencoding(monkeypatch, rows)
    assert [rows.stored_digest(e).hex() for e in events] == [e["hash"] for e in events]
    assert all(isinstance(e["payload"], str) for e in events)


@pytest.mark.django_db
def test_exports_the_platform_writes_are_hashed_as_written(
    platform_key, tmp_path, monkeypatch
):
    _record(len(TRICKY) * 2)
    path = tmp_path / "chain.jsonl"
    path.write_text("".join(audit.AuditExport(up_to_seq=10).lines()), "utf-8")
    _no_reencoding(monkeypatch)

    reports = [verify.verify_export(path, **way).to_dict() for way in WAYS[:2]]

    assert reports[0]["ok"] and reports[0]["events"] == 10, reports[0]
    assert reports[1] == reports[0]


@pytest.mark.django_db(transaction=True)
def test_a_payload_stored_in_another_json_form_verifies_every_way(platform_key):
    _record(12)
    table = "governance_auditevent"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT payload FROM {table} WHERE seq = 7")
        stored = cursor.fetchone()[0]
    spaced = json.dumps(json.loads(stored), indent=2, ensure_ascii=True)
    with transaction.atomic(), triggers_disabled(table), connection.cursor() as c:
        c.execute(f"UPDATE {table} SET payload = %s WHERE seq = 7", [spaced])

    reports = _db_reports()

    assert spaced != stored
    assert reports[0]["ok"] is True, reports[0]
    assert reports == [reports[0]] * 3


@pytest.mark.django_db
def test_inside_a_transaction_the_database_chain_is_read_by_this_process(platform_key):
    _record(6)
    with transaction.atomic():  # no snapshot to share: workers would not see these
        report = audit.verify_chain(workers=2, chunks=3)

    assert (report.ok, report.events) == (True, 6), report.reason


def test_timestamps_formatted_by_postgresql_match_format_timestamp(db):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT v, to_char(v AT TIME ZONE 'UTC', "
            '\'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\') FROM (VALUES '
            "('2026-12-04 20:00:00+00'::timestamptz),"
            "('2026-01-01 00:00:00.000001+05'),"
            "('1999-12-31 23:59:59.999999-08'), ('1000-01-01 00:00:00+00')) AS t(v)"
        )
        for value, text in cursor.fetchall():
            assert verify.format_timestamp(value) == text
