"""The standalone verifier: canonical JSON, golden hashes, DSSE, chain checks.

Pure functions, no database. The golden vectors pin the hashing: if one of
them changes, every chain ever written stops verifying (SECURITY D6).
"""

from __future__ import annotations

import ast
import base64
import datetime as dt
import decimal
import enum
import hashlib
import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from audit import verify
from audit.verify import (
    CHECKPOINT_PAYLOAD_TYPE,
    GENESIS_HASH,
    ChainVerifier,
    VerificationError,
    canonical_json,
    event_hash,
    open_checkpoint,
    pae,
    verify_envelope,
)

VERIFY_PY = Path(verify.__file__)
FORMATS_PY = VERIFY_PY.with_name("formats.py")

# --- Golden vectors (never edit the expected values) ----------------------------

GOLDEN_1 = {
    "seq": 1,
    "created_at": "2026-01-15T09:30:00.000000Z",
    "actor_label": "system",
    "agency_slug": "",
    "action": "audit.golden",
    "object_type": "",
    "object_id": "",
    "payload": {},
    "prev_hash": GENESIS_HASH,
}
GOLDEN_1_HASH = "c8499b2fc7e932e120eb4c316821b30d88e81e48df355e97ea3c4eed174ae197"
GOLDEN_2 = {
    "seq": 2,
    "created_at": "2026-01-15T09:30:00.123456Z",
    "actor_label": "alice#7",
    "agency_slug": "city-a",
    "action": "model_version.registered",
    "object_type": "registry.modelversion",
    "object_id": "42",
    "payload": {
        "version": "1.0.0",
        "params": 123456789,
        "accuracy": 0.875,
        "ratio": 1e-7,
        "big": 1e16,
        "name": "Modèle «civique» ✓",
        "tags": ["b", "a"],
        "nested": {"z": None, "a": True, "n": -0.5},
    },
    "prev_hash": GOLDEN_1_HASH,
}
GOLDEN_2_CANONICAL = (
    '{"action":"model_version.registered","actor_label":"alice#7",'
    '"agency_slug":"city-a","created_at":"2026-01-15T09:30:00.123456Z",'
    '"object_id":"42","object_type":"registry.modelversion","payload":'
    '{"accuracy":0.875,"big":1e+16,"name":"Modèle «civique» ✓","nested":'
    '{"a":true,"n":-0.5,"z":null},"params":123456789,"ratio":1e-07,'
    '"tags":["b","a"],"version":"1.0.0"},"prev_hash":'
    '"c8499b2fc7e932e120eb4c316821b30d88e81e48df355e97ea3c4eed174ae197","seq":2}'
)
GOLDEN_2_HASH = "81ff83fa1e56813d102c60ac3357503953da072957bc48d204c7996e7e7d3e9e"
# Ed25519 is deterministic: this key and payload always give this signature.
GOLDEN_SEED = bytes(range(32))
GOLDEN_KEYID = "a050837d85070582ccf7394b0988847cc312cb88259b894899f6f239cf1791a5"
GOLDEN_PUBLIC_PEM = (
    "-----BEGIN PUBLIC KEY-----\n"
    "MCowBQYDK2VwAyEAA6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=\n"
    "-----END PUBLIC KEY-----\n"
)
GOLDEN_CHECKPOINT = {
    "payload": (
        "eyJjcmVhdGVkX2F0IjoiMjAyNi0wMS0xNVQxMDowMDowMC4wMDAwMDBaIiwiaGVhZF9oYXNo"
        "IjoiODFmZjgzZmExZTU2ODEzZDEwMmM2MGFjMzM1NzUwMzk1M2RhMDcyOTU3YmM0OGQyMDRj"
        "Nzk5NmU3ZTdkM2U5ZSIsInNlcSI6Mn0="
    ),
    "payloadType": CHECKPOINT_PAYLOAD_TYPE,
    "signatures": [
        {
            "keyid": GOLDEN_KEYID,
            "sig": (
                "zNvQpmcA5TT/f9wXZZhiuLjgR6KNKkXDUc4ZXRNItX1TyCKMsb9kkxqMoH0Ft98i"
                "9vy5RokUNmP9qn8fCFY1Cw=="
            ),
        }
    ],
}


def test_d6_golden_event_hashes_are_stable():
    assert canonical_json(verify.hashed_document(GOLDEN_2)).decode() == (
        GOLDEN_2_CANONICAL
    )
    assert hashlib.sha256(GOLDEN_2_CANONICAL.encode()).hexdigest() == GOLDEN_2_HASH
    assert event_hash(GOLDEN_1) == GOLDEN_1_HASH
    assert event_hash(GOLDEN_2) == GOLDEN_2_HASH


def test_golden_hash_ignores_fields_outside_the_hashed_set():
    extended = {**GOLDEN_2, "hash": "x", "type": "event", "actor_id": 7}

    assert event_hash(extended) == GOLDEN_2_HASH


def test_d6_golden_checkpoint_signature_is_stable():
    key = Ed25519PrivateKey.from_private_bytes(GOLDEN_SEED)
    assert verify.public_key_pem_of(key.public_key()) == GOLDEN_PUBLIC_PEM
    assert verify.key_id(key.public_key()) == GOLDEN_KEYID
    payload = canonical_json(
        {
            "seq": 2,
            "head_hash": GOLDEN_2_HASH,
            "created_at": "2026-01-15T10:00:00.000000Z",
        }
    )
    signature = key.sign(pae(CHECKPOINT_PAYLOAD_TYPE, payload))

    assert base64.b64encode(payload).decode() == GOLDEN_CHECKPOINT["payload"]
    assert (
        base64.b64encode(signature).decode()
        == (GOLDEN_CHECKPOINT["signatures"][0]["sig"])
    )
    checkpoint = open_checkpoint(GOLDEN_CHECKPOINT, GOLDEN_PUBLIC_PEM)
    assert (checkpoint.seq, checkpoint.head_hash) == (2, GOLDEN_2_HASH)


# --- Canonical JSON ------------------------------------------------------------


def test_canonical_json_sorts_keys_drops_whitespace_and_keeps_utf8():
    value = {"b": 1, "a": [1, {"d": None, "c": False}], "é": "ü ✓"}

    assert canonical_json(value) == (
        '{"a":[1,{"c":false,"d":null}],"b":1,"é":"ü ✓"}'.encode()
    )


@pytest.mark.parametrize(
    "bad",
    [
        float("nan"),
        float("inf"),
        float("-inf"),
        decimal.Decimal("NaN"),
        decimal.Decimal("Infinity"),
    ],
)
def test_canonical_json_refuses_nan_and_infinity(bad):
    with pytest.raises(ValueError, match="NaN and Infinity"):
        canonical_json({"value": [bad]})


class Colour(enum.StrEnum):
    RED = "red"


class Size(enum.IntEnum):
    LARGE = 3


def test_canonical_json_converts_rich_values_explicitly():
    paris = dt.timezone(dt.timedelta(hours=2))
    value = {
        "at": dt.datetime(2026, 3, 1, 14, 5, 6, 7, tzinfo=paris),
        "day": dt.date(2026, 3, 1),
        "amount": decimal.Decimal("1.10"),
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "pair": (1, 2),
        "colour": Colour.RED,
        "size": Size.LARGE,
    }

    assert json.loads(canonical_json(value)) == {
        "at": "2026-03-01T12:05:06.000007Z",
        "day": "2026-03-01",
        "amount": "1.10",
        "id": "12345678-1234-5678-1234-567812345678",
        "pair": [1, 2],
        "colour": "red",
        "size": 3,
    }


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ({"at": dt.datetime(2026, 1, 1)}, ValueError),  # noqa: DTZ001
        ({"raw": b"bytes"}, TypeError),
        ({"set": {1, 2}}, TypeError),
        ({"obj": object()}, TypeError),
        ({1: "int key"}, TypeError),
        ({"lone": "\ud800"}, ValueError),
    ],
)
def test_canonical_json_refuses_values_without_one_meaning(bad, error):
    with pytest.raises(error):
        canonical_json(bad)


def test_parse_json_refuses_nan_literals():
    with pytest.raises(ValueError):
        verify.parse_json('{"x": NaN}')


# --- DSSE ----------------------------------------------------------------------


def test_pae_matches_the_dsse_specification_test_vector():
    message = pae("http://example.com/HelloWorld", b"hello world")
    assert message == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"

    # The spec's own ECDSA signature verifies over our PAE: the encoding is
    # byte-for-byte DSSE's, not merely similar.
    x = 46950820868899156662930047687818585632848591499744589407958293238635476079160
    y = 5640078356564379163099075877009565129882514886557779369047442380624545832820
    public = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    raw = base64.b64decode(
        "A3JqsQGtVsJ2O2xqrI5IcnXip5GToJ3F+FnZ+O88SjtR6rDAajabZKciJTfUiHqJPcIAriEGAHTVeC"
        "UjW2JIZA=="
    )
    der = encode_dss_signature(
        int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    )
    public.verify(der, message, ec.ECDSA(hashes.SHA256()))


def _envelope(key: Ed25519PrivateKey, payload: bytes, kind: str = "x/y") -> dict:
    return {
        "payload": base64.b64encode(payload).decode(),
        "payloadType": kind,
        "signatures": [
            {
                "keyid": verify.key_id(key.public_key()),
                "sig": base64.b64encode(key.sign(pae(kind, payload))).decode(),
            }
        ],
    }


def test_envelope_verifies_and_returns_its_payload():
    key = Ed25519PrivateKey.generate()
    envelope = _envelope(key, b'{"a":1}')

    assert verify_envelope(envelope, key.public_key()) == b'{"a":1}'
    pem = verify.public_key_pem_of(key.public_key())
    assert verify_envelope(envelope, pem, payload_type="x/y") == b'{"a":1}'


def test_envelope_accepts_url_safe_base64_as_dsse_requires():
    key = Ed25519PrivateKey.generate()
    payload = b"\xfb\xff\xfe" * 5  # encodes with + and / in standard base64
    envelope = _envelope(key, payload)
    envelope["payload"] = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    sig = envelope["signatures"][0]["sig"]
    envelope["signatures"][0]["sig"] = sig.replace("+", "-").replace("/", "_")

    assert verify_envelope(envelope, key.public_key()) == payload


def _tampered(envelope: dict, how: str, other: Ed25519PrivateKey) -> dict:
    changed = json.loads(json.dumps(envelope))
    if how == "payload":
        changed["payload"] = base64.b64encode(b'{"a":2}').decode()
    elif how == "payload_type":
        changed["payloadType"] = "x/z"
    elif how == "forged_sig":
        changed["signatures"][0]["sig"] = base64.b64encode(bytes(64)).decode()
    elif how == "other_key":
        changed = _envelope(other, b'{"a":1}')
    elif how == "other_key_with_our_keyid":
        changed = _envelope(other, b'{"a":1}')
        changed["signatures"][0]["keyid"] = envelope["signatures"][0]["keyid"]
    elif how == "no_signature":
        changed["signatures"] = []
    elif how == "bad_base64":
        changed["signatures"][0]["sig"] = "not base64 !"
    elif how == "not_an_object":
        changed = [changed]
    return changed


@pytest.mark.parametrize(
    "how",
    [
        "payload",
        "payload_type",
        "forged_sig",
        "other_key",
        "other_key_with_our_keyid",
        "no_signature",
        "bad_base64",
        "not_an_object",
    ],
)
def test_envelope_is_rejected_when_anything_was_changed(how):
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    envelope = _envelope(key, b'{"a":1}')

    with pytest.raises(VerificationError):
        verify_envelope(_tampered(envelope, how, other), key.public_key())


def test_envelope_of_another_payload_type_is_refused_when_a_type_is_required():
    key = Ed25519PrivateKey.generate()
    envelope = _envelope(key, b"{}", kind="application/vnd.civitas.decision+json")

    with pytest.raises(VerificationError, match="unexpected payloadType"):
        verify_envelope(
            envelope, key.public_key(), payload_type=CHECKPOINT_PAYLOAD_TYPE
        )


# --- Chains ----------------------------------------------------------------------


def make_chain(count: int) -> list[dict]:
    """A valid chain of ``count`` events, as export lines carry them."""
    events, prev = [], GENESIS_HASH
    for seq in range(1, count + 1):
        event = {
            "seq": seq,
            "created_at": f"2026-02-01T10:00:{seq:02d}.000000Z",
            "actor_label": "alice#1",
            "agency_slug": "city-a",
            "action": "dataset.registered",
            "object_type": "registry.dataset",
            "object_id": str(seq),
            "payload": {"n": seq},
            "prev_hash": prev,
        }
        event["hash"] = prev = event_hash(event)
        events.append(event)
    return events


def sign_checkpoint(key: Ed25519PrivateKey, seq: int, head_hash: str) -> dict:
    payload = canonical_json(
        {
            "seq": seq,
            "head_hash": head_hash,
            "created_at": "2026-02-01T11:00:00.000000Z",
        }
    )
    return _envelope(key, payload, kind=CHECKPOINT_PAYLOAD_TYPE)


def run(events, checkpoints=(), key=None, **finish):
    verifier = ChainVerifier()
    for envelope in checkpoints:
        try:
            verifier.add_checkpoint(open_checkpoint(envelope, key.public_key()))
        except VerificationError as exc:
            verifier.reject_checkpoint(str(exc))
    for event in events:
        verifier.add(event)
    return verifier.finish(**finish)


def test_intact_chain_verifies():
    report = run(make_chain(5))

    assert report.summary() == {
        "ok": True,
        "events": 5,
        "first_bad_seq": None,
        "reason": None,
        "checkpoints_ok": True,
    }


def test_altered_payload_names_its_seq():
    events = make_chain(5)
    events[2]["payload"] = {"n": 999}

    report = run(events)

    assert (report.ok, report.first_bad_seq) == (False, 3)
    assert "altered" in report.reason


def test_missing_event_is_a_gap():
    events = make_chain(5)
    del events[1]

    report = run(events)

    assert (report.ok, report.first_bad_seq) == (False, 2)
    assert "missing" in report.reason


def test_rewritten_and_rehashed_history_is_caught_by_an_older_checkpoint():
    key = Ed25519PrivateKey.generate()
    events = make_chain(6)
    checkpoint = sign_checkpoint(key, 4, events[3]["hash"])
    # Rewrite seq 2 and recompute every later hash: each link is now
    # consistent, only the signed head at seq 4 remembers the truth.
    events[1]["payload"] = {"n": "rewritten"}
    prev = events[0]["hash"]
    for event in events[1:]:
        event["prev_hash"] = prev
        event["hash"] = prev = event_hash(event)

    assert run(events).ok
    report = run(events, [checkpoint], key)

    assert (report.ok, report.first_bad_seq, report.checkpoints_ok) == (False, 4, True)
    assert "rewritten" in report.reason


def test_d3_truncation_below_a_signed_checkpoint_is_detected():
    key = Ed25519PrivateKey.generate()
    events = make_chain(6)
    checkpoint = sign_checkpoint(key, 6, events[5]["hash"])

    report = run(events[:4], [checkpoint], key)

    assert (report.ok, report.first_bad_seq) == (False, 5)
    assert "removed" in report.reason


def test_truncation_against_the_head_is_detected():
    report = run(make_chain(6)[:4], expected_last_seq=6)

    assert (report.ok, report.first_bad_seq) == (False, 5)


@pytest.mark.parametrize("how", ["wrong_key", "altered_head", "forged_sig"])
def test_d7_bad_checkpoint_is_rejected(how):
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    events = make_chain(3)
    if how == "wrong_key":
        checkpoint = sign_checkpoint(other, 3, events[2]["hash"])
    elif how == "altered_head":
        checkpoint = sign_checkpoint(key, 3, events[2]["hash"])
        body = json.loads(base64.b64decode(checkpoint["payload"]))
        body["head_hash"] = "f" * 64
        checkpoint["payload"] = base64.b64encode(canonical_json(body)).decode()
    else:
        checkpoint = sign_checkpoint(key, 3, events[2]["hash"])
        checkpoint["signatures"][0]["sig"] = base64.b64encode(b"\x01" * 64).decode()

    report = run(events, [checkpoint], key)

    assert (report.ok, report.checkpoints_ok) == (False, False)
    assert report.first_bad_seq is None  # the events themselves are intact


def test_d7_checkpoint_stating_another_head_than_it_signs_is_rejected():
    key = Ed25519PrivateKey.generate()
    events = make_chain(3)
    envelope = sign_checkpoint(key, 3, events[2]["hash"])

    with pytest.raises(VerificationError, match="does not cover"):
        open_checkpoint(envelope, key.public_key(), stated_head_hash="e" * 64)
    with pytest.raises(VerificationError, match="covers seq 3"):
        open_checkpoint(envelope, key.public_key(), stated_seq=2)


def test_partial_run_checks_each_event_alone():
    events = make_chain(6)
    subset = [events[1], events[4], events[5]]
    verifier = ChainVerifier(partial=True)
    for event in subset:
        verifier.add(event)
    assert verifier.finish().ok

    subset[1]["payload"] = {"n": "changed"}
    verifier = ChainVerifier(partial=True)
    for event in subset:
        verifier.add(event)
    report = verifier.finish()
    assert (report.ok, report.first_bad_seq) == (False, 5)


# --- The standalone program -------------------------------------------------------


def write_export(path: Path, events, checkpoints, key, *, partial=False) -> Path:
    lines = [
        {
            "type": "header",
            "format": verify.EXPORT_FORMAT,
            "version": verify.EXPORT_VERSION,
            "up_to_seq": events[-1]["seq"] if events else 0,
            "partial": partial,
            "public_key_pem": verify.public_key_pem_of(key.public_key()),
        },
        *(
            {"type": "checkpoint", "seq": seq, "head_hash": head, "envelope": env}
            for seq, head, env in checkpoints
        ),
        *({"type": "event", **event} for event in events),
        {"type": "end", "events": len(events)},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def standalone(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Run a copy of the verifier's two files alone: empty environment, no project."""
    copy = tmp_path / "audit"
    if not copy.exists():
        copy.mkdir()
        shutil.copy(VERIFY_PY, copy / "verify.py")
        shutil.copy(FORMATS_PY, copy / "formats.py")
    return subprocess.run(
        [sys.executable, "-E", "-s", "-m", "audit.verify", *args],
        cwd=tmp_path,
        env={},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_verify_py_imports_only_the_standard_library_and_cryptography():
    roots = set()
    for path in (VERIFY_PY, FORMATS_PY):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots.add(node.module or "")
    roots = {name if name == "audit.formats" else name.split(".")[0] for name in roots}

    assert roots - sys.stdlib_module_names == {"cryptography", "audit.formats"}


def test_standalone_verifier_accepts_a_sound_export_and_names_a_tampered_seq(
    tmp_path,
):
    key = Ed25519PrivateKey.generate()
    (tmp_path / "public.pem").write_text(verify.public_key_pem_of(key.public_key()))
    events = make_chain(4)
    checkpoint = (4, events[3]["hash"], sign_checkpoint(key, 4, events[3]["hash"]))
    chain = write_export(tmp_path / "chain.jsonl", events, [checkpoint], key)

    good = standalone(tmp_path, "chain.jsonl", "--key", "public.pem")
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.startswith("OK: chain of 4 events")

    text = chain.read_text().replace('"payload": {"n": 3}', '"payload": {"n": 33}')
    chain.write_text(text)
    bad = standalone(tmp_path, "chain.jsonl", "--key", "public.pem", "--json")
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["first_bad_seq"] == 3


def test_standalone_verifier_refuses_a_cut_short_export(tmp_path):
    key = Ed25519PrivateKey.generate()
    chain = write_export(tmp_path / "chain.jsonl", make_chain(3), [], key)
    chain.write_text("".join(chain.read_text().splitlines(keepends=True)[:-1]))

    result = standalone(tmp_path, "chain.jsonl")

    assert result.returncode == 1
    assert "cut short" in result.stdout


def test_standalone_verifier_checks_an_attestation_envelope(tmp_path):
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    (tmp_path / "public.pem").write_text(verify.public_key_pem_of(key.public_key()))
    (tmp_path / "other.pem").write_text(verify.public_key_pem_of(other.public_key()))
    kind = "application/vnd.civitas.evaluation-attestation+json"
    envelope = _envelope(key, canonical_json({"run": 7, "accuracy": 0.9}), kind)
    (tmp_path / "attestation.json").write_text(json.dumps(envelope))

    good = standalone(tmp_path, "attestation.json", "--key", "public.pem", "--json")
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["payload"] == {"accuracy": 0.9, "run": 7}

    wrong = standalone(tmp_path, "attestation.json", "--key", "other.pem")
    assert wrong.returncode == 1
    assert wrong.stdout.startswith("FAILED")

    no_key = standalone(tmp_path, "attestation.json")
    assert no_key.returncode == 2
