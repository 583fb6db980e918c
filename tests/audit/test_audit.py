"""The audit chain on real PostgreSQL: append, refuse changes, verify, sign, export."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction
from kombu import Connection

from audit import services as audit
from audit import signing, verify
from audit.models import AuditChainHead, AuditCheckpoint, AuditEvent
from registry.models import Agency, Visibility
from tests.conftest import ROOT, celery_worker, database_url, process_env, wait_until
from tests.factories import AgencyFactory, ModelVersionFactory, UserFactory

AUDIT_TABLES = (
    "governance_auditevent",
    "governance_auditcheckpoint",
    "audit_merklenode",
)


@pytest.fixture(scope="session")
def signing_key_file(tmp_path_factory) -> Path:
    """A platform key for the tests, outside var/ (never the developer's key)."""
    path = tmp_path_factory.mktemp("keys") / "signing-key.pem"
    path.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


@pytest.fixture(autouse=True)
def _platform_key(settings, signing_key_file):
    settings.CIVITAS_SIGNING_KEY_FILE = str(signing_key_file)


@contextlib.contextmanager
def triggers_disabled(*tables: str):
    """What a database superuser can do: switch the append-only triggers off."""
    tables = tables or AUDIT_TABLES
    with connection.cursor() as cursor:
        # Rows inserted in this transaction have deferred foreign-key checks
        # pending; ALTER TABLE refuses to run until they have fired.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for table in tables:
            cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            for table in tables:
                cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")


@pytest.fixture
def committed_audit_rows(transactional_db):
    """For tests that commit: empty the audit tables before the runner's flush.

    The TRUNCATE trigger refuses to empty a table holding rows, so the rows a
    committing test leaves are deleted first, as a superuser.
    """
    yield
    connection.close()
    with triggers_disabled(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM governance_auditevent")
        cursor.execute("DELETE FROM governance_auditcheckpoint")
        cursor.execute("DELETE FROM governance_auditchainhead")
        cursor.execute("DELETE FROM audit_merklenode")


def record_n(count: int, **kwargs) -> list[AuditEvent]:
    events = []
    for index in range(count):
        with transaction.atomic():
            events.append(
                audit.record(
                    actor=kwargs.get("actor"),
                    action=kwargs.get("action", "dataset.registered"),
                    object_type=kwargs.get("object_type", "registry.dataset"),
                    object_id=str(index + 1),
                    agency=kwargs.get("agency"),
                    payload={"n": index + 1},
                )
            )
    return events


# --- record() -------------------------------------------------------------------


@pytest.mark.django_db
def test_record_appends_a_hashed_event_linked_to_genesis(agency_a):
    user = UserFactory(username="alice")
    version = ModelVersionFactory(model__agency=agency_a)

    with transaction.atomic():
        event = audit.record(
            actor=user,
            action="model_version.registered",
            obj=version,
            agency=agency_a,
            payload={"version": version.version},
        )

    event.refresh_from_db()
    assert event.seq == 1
    assert event.prev_hash == verify.GENESIS_HASH
    assert event.actor_label == f"alice#{user.pk}"
    assert (event.agency_id, event.agency_slug) == (agency_a.pk, "city-a")
    assert (event.object_type, event.object_id) == (
        "registry.modelversion",
        str(version.pk),
    )
    assert event.created_at.tzinfo is not None
    assert event.compute_hash() == event.hash
    expected = verify.event_hash(
        {
            "seq": 1,
            "created_at": event.created_at,
            "actor_label": f"alice#{user.pk}",
            "agency_slug": "city-a",
            "action": "model_version.registered",
            "object_type": "registry.modelversion",
            "object_id": str(version.pk),
            "payload": {"version": version.version},
            "prev_hash": verify.GENESIS_HASH,
        }
    )
    assert event.hash == expected


@pytest.mark.django_db
def test_events_form_a_gap_free_chain_and_the_head_follows():
    events = record_n(4)

    assert [e.seq for e in events] == [1, 2, 3, 4]
    for previous, event in itertools.pairwise(events):
        assert event.prev_hash == previous.hash
    head = AuditChainHead.objects.get()
    assert (head.seq, head.hash) == (4, events[-1].hash)


@pytest.mark.django_db
def test_agency_is_taken_from_the_object_when_not_given(agency_a):
    with transaction.atomic():
        about_agency = audit.record(actor=None, action="agency.updated", obj=agency_a)

    assert about_agency.agency_id == agency_a.pk
    assert about_agency.actor_label == audit.SYSTEM_ACTOR_LABEL
    assert about_agency.object_type == "registry.agency"


@pytest.mark.django_db
def test_payload_is_stored_as_the_canonical_json_that_was_hashed():
    with transaction.atomic():
        event = audit.record(
            actor=None,
            action="policy.evaluated",
            payload={
                "z": Decimal("0.10"),
                "at": datetime(2026, 5, 1, 8, 0, tzinfo=UTC),
                "id": uuid.UUID(int=1),
                "a": "é",
            },
        )

    event.refresh_from_db()
    assert event.payload == (
        '{"a":"é","at":"2026-05-01T08:00:00.000000Z",'
        '"id":"00000000-0000-0000-0000-000000000001","z":"0.10"}'
    )
    assert event.compute_hash() == event.hash


@pytest.mark.django_db
def test_d5_rolled_back_business_transaction_leaves_no_event():
    with pytest.raises(RuntimeError), transaction.atomic():
        agency = AgencyFactory(slug="doomed")
        audit.record(actor=None, action="agency.created", obj=agency)
        raise RuntimeError("the business rule failed after recording")

    assert not Agency.objects.filter(slug="doomed").exists()
    assert AuditEvent.objects.count() == 0
    with transaction.atomic():
        event = audit.record(actor=None, action="agency.created")
    assert (event.seq, event.prev_hash) == (1, verify.GENESIS_HASH)


@pytest.mark.django_db(transaction=True)
def test_record_outside_a_transaction_is_refused():
    with pytest.raises(transaction.TransactionManagementError):
        audit.record(actor=None, action="agency.created")

    assert AuditEvent.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"payload": {"score": float("nan")}}, ValueError),
        ({"payload": {"at": datetime(2026, 1, 1)}}, ValueError),  # noqa: DTZ001
        ({"payload": {"blob": b"\x00"}}, TypeError),
        ({"payload": {"big": "x" * (audit.MAX_PAYLOAD_BYTES + 1)}}, ValueError),
        ({"payload": ["not", "a", "dict"]}, TypeError),
        ({"action": "Model Version Registered"}, ValueError),
        ({"action": "registered"}, ValueError),
        ({"object_id": "9" * 101}, ValueError),
    ],
)
def test_malformed_events_are_refused_and_leave_nothing(kwargs, error):
    arguments = {"actor": None, "action": "dataset.registered", **kwargs}

    with pytest.raises(error), transaction.atomic():
        audit.record(**arguments)

    assert AuditEvent.objects.count() == 0
    assert not AuditChainHead.objects.filter(seq__gt=0).exists()


@pytest.mark.django_db
def test_unsaved_objects_and_anonymous_actors_are_refused(agency_a):
    from django.contrib.auth.models import AnonymousUser

    with pytest.raises(ValueError), transaction.atomic():
        audit.record(actor=AnonymousUser(), action="dataset.registered")
    with pytest.raises(ValueError), transaction.atomic():
        audit.record(actor=None, action="agency.created", obj=Agency(slug="x"))


@pytest.mark.django_db
def test_head_row_lost_to_a_flush_is_rebuilt_from_the_last_event():
    events = record_n(2)
    AuditChainHead.objects.all().delete()

    with transaction.atomic():
        event = audit.record(actor=None, action="dataset.registered")

    assert (event.seq, event.prev_hash) == (3, events[-1].hash)
    assert audit.verify_chain().ok


# --- Append-only at the database (D1) --------------------------------------------


def _snapshot(model) -> list[tuple]:
    return list(model.objects.order_by("pk").values_list())


@pytest.fixture
def chain_with_checkpoint(db):
    record_n(3)
    audit.checkpoint_create()


@pytest.mark.django_db
@pytest.mark.parametrize("model", [AuditEvent, AuditCheckpoint])
@pytest.mark.parametrize("how", ["orm_update", "orm_delete", "save", "truncate"])
def test_database_refuses_to_change_the_audit_record(chain_with_checkpoint, model, how):
    before = _snapshot(model)
    table = model._meta.db_table

    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        if how == "orm_update":
            model.objects.update(created_at=datetime(2000, 1, 1, tzinfo=UTC))
        elif how == "orm_delete":
            model.objects.all().delete()
        elif how == "save":
            row = model.objects.first()
            row.created_at = datetime(2000, 1, 1, tzinfo=UTC)
            row.save()
        else:
            with connection.cursor() as cursor:
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
                cursor.execute(f"TRUNCATE {table} CASCADE")

    assert _snapshot(model) == before
    assert len(before) >= 1


@pytest.mark.django_db
def test_raw_sql_update_and_delete_are_refused_too(chain_with_checkpoint):
    for statement in (
        "UPDATE governance_auditevent SET action = 'x.y' WHERE seq = 2",
        "DELETE FROM governance_auditevent WHERE seq = 3",
    ):
        with (
            pytest.raises(IntegrityError),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(statement)

    assert list(AuditEvent.objects.values_list("seq", flat=True)) == [1, 2, 3]
    assert AuditEvent.objects.get(seq=2).action == "dataset.registered"


@pytest.mark.django_db
def test_truncating_an_empty_audit_table_is_allowed_so_test_runners_can_flush():
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE governance_auditcheckpoint")

    assert AuditCheckpoint.objects.count() == 0


# --- Verification: tampering and truncation (D2, D3) -----------------------------


@pytest.mark.django_db
def test_intact_chain_verifies_by_command_and_api(api_reviewer):
    record_n(5)
    audit.checkpoint_create()
    out = StringIO()

    call_command("verify_audit", stdout=out)

    expected = {
        "ok": True,
        "events": 5,
        "first_bad_seq": None,
        "reason": None,
        "checkpoints_ok": True,
    }
    assert json.loads(out.getvalue()) == expected
    response = api_reviewer.get("/api/v1/audit/verify/")
    assert response.status_code == 200
    assert response.json() == expected


@pytest.mark.django_db
def test_d2_edited_payload_is_reported_at_its_seq_by_command_and_api(api_reviewer):
    record_n(5)
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(
            "ALTER TABLE governance_auditevent "
            "DISABLE TRIGGER governance_auditevent_no_update_delete"
        )
        cursor.execute(
            "UPDATE governance_auditevent SET payload = '{\"n\":999}' WHERE seq = 3"
        )
        cursor.execute(
            "ALTER TABLE governance_auditevent "
            "ENABLE TRIGGER governance_auditevent_no_update_delete"
        )
    out = StringIO()

    with pytest.raises(CommandError) as failure:
        call_command("verify_audit", stdout=out)

    assert failure.value.returncode == 1
    report = json.loads(out.getvalue())
    assert (report["ok"], report["first_bad_seq"]) == (False, 3)
    assert "altered" in report["reason"]
    assert api_reviewer.get("/api/v1/audit/verify/").json()["first_bad_seq"] == 3


@pytest.mark.django_db
def test_d3_deleting_the_last_events_is_caught_by_the_signed_checkpoint():
    record_n(6)
    audit.checkpoint_create()
    # A careful superuser removes seq 5 and 6 and moves the head back, so the
    # remaining chain is perfectly linked.
    with triggers_disabled():
        AuditEvent.objects.filter(seq__gt=4).delete()
    last = AuditEvent.objects.get(seq=4)
    AuditChainHead.objects.update(seq=4, hash=last.hash)

    report = audit.verify_chain()

    assert (report.ok, report.events, report.first_bad_seq) == (False, 4, 5)
    assert report.checkpoints_ok is True
    assert "signed checkpoint covers seq 6" in report.reason


@pytest.mark.django_db
def test_d3_checkpoint_kept_outside_catches_deletion_of_events_and_checkpoints(
    tmp_path,
):
    record_n(6)
    kept = audit.checkpoint_create()
    (tmp_path / "kept.json").write_text(json.dumps(kept.envelope))
    with triggers_disabled():
        AuditEvent.objects.filter(seq__gt=4).delete()
        AuditCheckpoint.objects.all().delete()
    AuditChainHead.objects.update(seq=4, hash=AuditEvent.objects.get(seq=4).hash)

    assert audit.verify_chain().ok  # the database alone no longer knows
    out = StringIO()
    with pytest.raises(CommandError):
        call_command(
            "verify_audit", "--checkpoint", str(tmp_path / "kept.json"), stdout=out
        )

    assert json.loads(out.getvalue())["first_bad_seq"] == 5


@pytest.mark.django_db
def test_rewritten_history_with_recomputed_hashes_fails_at_the_checkpoint():
    record_n(5)
    audit.checkpoint_create()  # signs seq 5
    with triggers_disabled():
        prev = AuditEvent.objects.get(seq=1).hash
        for event in AuditEvent.objects.filter(seq__gte=2).order_by("seq"):
            if event.seq == 2:
                event.payload = '{"n":"rewritten"}'
            event.prev_hash = prev
            event.hash = prev = event.compute_hash()
            event.save()
    AuditChainHead.objects.update(hash=prev)

    report = audit.verify_chain()

    assert (report.ok, report.first_bad_seq) == (False, 5)
    assert "rewritten" in report.reason


def _insert_checkpoint(envelope: dict, seq: int, head_hash: str) -> None:
    AuditCheckpoint.objects.create(
        seq=seq, head_hash=head_hash, created_at=datetime.now(UTC), envelope=envelope
    )


@pytest.mark.django_db
@pytest.mark.parametrize("how", ["wrong_key", "altered_head", "forged_signature"])
def test_d7_bad_checkpoints_are_rejected(how):
    events = record_n(3)
    head = events[-1].hash
    statement = verify.canonical_json(
        {"seq": 3, "head_hash": head, "created_at": "2026-01-01T00:00:00.000000Z"}
    )
    if how == "wrong_key":
        other = Ed25519PrivateKey.generate()
        envelope = {
            "payload": base64.b64encode(statement).decode(),
            "payloadType": verify.CHECKPOINT_PAYLOAD_TYPE,
            "signatures": [
                {
                    "keyid": verify.key_id(other.public_key()),
                    "sig": base64.b64encode(
                        other.sign(
                            verify.pae(verify.CHECKPOINT_PAYLOAD_TYPE, statement)
                        )
                    ).decode(),
                }
            ],
        }
        _insert_checkpoint(envelope, 3, head)
    elif how == "altered_head":
        envelope = signing.sign_envelope(statement, verify.CHECKPOINT_PAYLOAD_TYPE)
        _insert_checkpoint(envelope, 3, "a" * 64)
    else:
        envelope = signing.sign_envelope(statement, verify.CHECKPOINT_PAYLOAD_TYPE)
        envelope["signatures"][0]["sig"] = base64.b64encode(b"\x07" * 64).decode()
        _insert_checkpoint(envelope, 3, head)

    report = audit.verify_chain()

    assert (report.ok, report.checkpoints_ok) == (False, False)
    assert report.first_bad_seq is None
    assert "checkpoint at seq 3 rejected" in report.reason


# --- Checkpoints -------------------------------------------------------------------


@pytest.mark.django_db
def test_checkpoint_signs_the_head_and_skips_when_nothing_changed():
    assert audit.checkpoint_create() is None  # empty chain
    events = record_n(3)

    checkpoint = audit.checkpoint_create()

    assert (checkpoint.seq, checkpoint.head_hash) == (3, events[-1].hash)
    payload = signing.verify_envelope(
        checkpoint.envelope,
        signing.public_key_pem(),
        payload_type="application/vnd.civitas.audit-checkpoint+json",
    )
    assert json.loads(payload)["head_hash"] == events[-1].hash
    assert audit.checkpoint_create() is None
    record_n(1)
    assert audit.checkpoint_create().seq == 4


@pytest.mark.django_db
def test_checkpoint_refuses_to_sign_over_a_broken_segment():
    record_n(2)
    audit.checkpoint_create()
    record_n(2)
    with triggers_disabled():
        AuditEvent.objects.filter(seq=3).update(action="forged.action")

    with pytest.raises(audit.AuditChainBroken, match="seq 3"):
        audit.checkpoint_create()
    assert list(AuditCheckpoint.objects.values_list("seq", flat=True)) == [2]

    out = StringIO()
    with pytest.raises(CommandError, match="no checkpoint signed"):
        call_command("audit_checkpoint", stdout=out)


@pytest.mark.django_db
def test_audit_checkpoint_command_prints_the_envelope_to_keep():
    record_n(2)
    out = StringIO()

    call_command("audit_checkpoint", stdout=out)

    printed = json.loads(out.getvalue())
    assert printed["seq"] == 2
    assert (
        verify.open_checkpoint(printed["envelope"], signing.public_key_pem()).seq == 2
    )


def test_checkpoint_task_is_named_and_asked_every_minute_by_beat():
    from workers import tasks

    assert tasks.audit_checkpoint.name == "civitas.audit_checkpoint"
    entry = django_settings.CELERY_BEAT_SCHEDULE["audit-checkpoint"]
    assert entry["task"] == "civitas.audit_checkpoint"
    # The task decides whether a checkpoint is due (tests/audit/test_checkpoints).
    assert entry["schedule"] == timedelta(minutes=1)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_checkpoint_task_runs_in_a_real_worker(committed_audit_rows, signing_key_file):
    record_n(3)
    queue = f"civitas-test-audit-{uuid.uuid4().hex[:8]}"
    env = process_env(
        DATABASE_URL=database_url(), CIVITAS_SIGNING_KEY_FILE=str(signing_key_file)
    )
    from workers import tasks

    with celery_worker(env, queue):
        tasks.audit_checkpoint.apply_async(queue=queue)
        checkpoint = wait_until(
            lambda: AuditCheckpoint.objects.filter(seq=3).first(),
            timeout=90,
            what="the checkpoint signed by the worker",
        )

    assert checkpoint.head_hash == AuditEvent.objects.get(seq=3).hash
    with Connection(django_settings.CELERY_BROKER_URL) as conn:
        conn.default_channel.queue_delete(queue)


# --- Signing key -------------------------------------------------------------------


def test_key_is_generated_once_under_var_dir_with_mode_0600(settings, tmp_path):
    settings.CIVITAS_SIGNING_KEY_FILE = ""
    settings.VAR_DIR = tmp_path

    first = signing.public_key_pem()

    path = tmp_path / "signing-key.pem"
    assert path.stat().st_mode & 0o777 == 0o600
    signing._load.cache_clear()
    assert signing.public_key_pem() == first  # loaded again, not regenerated


def test_configured_key_file_must_exist_and_be_ed25519(settings, tmp_path):
    settings.CIVITAS_SIGNING_KEY_FILE = str(tmp_path / "missing.pem")
    with pytest.raises(ImproperlyConfigured, match="cannot read"):
        signing.public_key_pem()
    assert not (tmp_path / "missing.pem").exists()

    ecdsa = tmp_path / "ecdsa.pem"
    ecdsa.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    settings.CIVITAS_SIGNING_KEY_FILE = str(ecdsa)
    with pytest.raises(ImproperlyConfigured, match="not Ed25519"):
        signing.public_key_pem()


def test_sign_envelope_round_trips_and_binds_the_payload_type(signing_key_file):
    envelope = signing.sign_envelope(b'{"decision":"approved"}', "application/x.test")
    private = serialization.load_pem_private_key(
        signing_key_file.read_bytes(), password=None
    )

    assert envelope["payloadType"] == "application/x.test"
    assert envelope["signatures"][0]["keyid"] == verify.key_id(private.public_key())
    assert signing.verify_envelope(envelope, signing.public_key_pem()) == (
        b'{"decision":"approved"}'
    )
    with pytest.raises(signing.VerificationError):
        signing.verify_envelope(
            envelope, signing.public_key_pem(), payload_type="application/x.other"
        )
    with pytest.raises(TypeError):
        signing.sign_envelope("text, not bytes", "application/x.test")


# --- Export --------------------------------------------------------------------------


def run_standalone_verifier(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """The verifier's two files copied alone to a directory, run with no environment."""
    (tmp_path / "audit").mkdir(exist_ok=True)
    for name in ("verify.py", "formats.py"):
        shutil.copy(ROOT / "audit" / name, tmp_path / "audit" / name)
    return subprocess.run(
        [sys.executable, "-E", "-s", "-m", "audit.verify", *args],
        cwd=tmp_path,
        env={},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.django_db
def test_export_verifies_standalone_and_a_tampered_line_names_its_seq(tmp_path, anon):
    record_n(4)
    audit.checkpoint_create()
    record_n(2)
    out = StringIO()
    call_command("export_audit", stdout=out)
    chain = tmp_path / "chain.jsonl"
    chain.write_text(out.getvalue(), encoding="utf-8")
    public = anon.get("/api/v1/audit/public-key/")
    (tmp_path / "public.pem").write_bytes(public.content)

    good = run_standalone_verifier(tmp_path, "chain.jsonl", "--key", "public.pem")

    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.startswith("OK: chain of 6 events")
    lines = chain.read_text(encoding="utf-8").splitlines(keepends=True)
    fifth = next(i for i, line in enumerate(lines) if '"seq":5,' in line)
    event = json.loads(lines[fifth])
    event["payload"]["n"] += 100  # one edited value, everything else intact
    lines[fifth] = json.dumps(event, separators=(",", ":")) + "\n"
    chain.write_text("".join(lines), encoding="utf-8")

    bad = run_standalone_verifier(tmp_path, "chain.jsonl", "--key", "public.pem")

    assert bad.returncode == 1
    assert "first bad seq: 5" in bad.stdout


@pytest.mark.django_db
def test_export_is_audited_after_its_snapshot():
    record_n(3)
    out = StringIO()

    call_command("export_audit", stdout=out)

    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["type"] == "header"
    assert lines[0]["up_to_seq"] == 3
    assert [line["seq"] for line in lines if line["type"] == "event"] == [1, 2, 3]
    assert lines[-1] == {"type": "end", "events": 3, "up_to_seq": 3}
    exported = AuditEvent.objects.get(seq=4)
    assert exported.action == "audit.exported"
    assert exported.payload_data["up_to_seq"] == 3
    assert exported.payload_data["via"].startswith("cli:")


@pytest.mark.django_db
def test_partial_export_of_a_model_version_verifies_its_events_alone(
    tmp_path, agency_a
):
    version, other = ModelVersionFactory(model__agency=agency_a), ModelVersionFactory()
    with transaction.atomic():
        for action, obj in [
            ("model_version.registered", version),
            ("model_version.registered", other),
            ("model_version.released", version),
        ]:
            audit.record(actor=None, action=action, obj=obj)
    audit.checkpoint_create()
    out = StringIO()

    call_command("export_audit", "--model-version", str(version.pk), stdout=out)

    path = tmp_path / "version.jsonl"
    path.write_text(out.getvalue(), encoding="utf-8")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["partial"] is True
    assert [line["seq"] for line in lines if line["type"] == "event"] == [1, 3]
    report = verify.verify_export(path)
    assert report.ok and report.partial
    assert "every event is proven" in report.notes[0]
    assert all("proof" in line for line in lines if line["type"] == "event")
    path.write_text(out.getvalue().replace("model_version.released", "model_version.x"))
    assert verify.verify_export(path).first_bad_seq == 3


# --- API --------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/audit/events/",
        "/api/v1/audit/events/1/",
        "/api/v1/audit/verify/",
        "/api/v1/audit/export/",
        "/api/v1/audit/checkpoints/",
    ],
)
def test_anonymous_callers_get_401(anon, path):
    response = anon.get(path)

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


@pytest.mark.django_db
def test_public_key_is_served_to_anyone_as_pem_or_json(anon):
    pem = anon.get("/api/v1/audit/public-key/")
    as_json = anon.get("/api/v1/audit/public-key/", HTTP_ACCEPT="application/json")

    assert pem.status_code == 200
    assert pem["Content-Type"].startswith("application/x-pem-file")
    assert pem.content.decode() == signing.public_key_pem()
    assert as_json.json() == {
        "algorithm": "ed25519",
        "keyid": signing.platform_key_id(),
        "public_key_pem": signing.public_key_pem(),
    }


@pytest.fixture
def two_agency_events(agency_a, agency_b):
    record_n(2, agency=agency_a, action="dataset.registered")
    record_n(
        1, agency=agency_b, action="model.registered", object_type="registry.aimodel"
    )
    record_n(1)  # a platform event with no agency


def _seqs(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [event["seq"] for event in response.json()["results"]]


@pytest.mark.django_db
def test_members_see_their_agency_events_and_oversight_sees_all(
    two_agency_events, api_a, api_b, api_reviewer, api_admin
):
    assert _seqs(api_a.get("/api/v1/audit/events/")) == [2, 1]
    assert _seqs(api_b.get("/api/v1/audit/events/")) == [3]
    assert _seqs(api_reviewer.get("/api/v1/audit/events/")) == [4, 3, 2, 1]
    assert _seqs(api_admin.get("/api/v1/audit/events/")) == [4, 3, 2, 1]
    assert api_b.get("/api/v1/audit/events/1/").status_code == 404
    assert api_b.get("/api/v1/audit/events/?agency=city-a").json()["results"] == []


@pytest.mark.django_db
def test_event_list_filters_and_pages_with_a_cursor(two_agency_events, api_reviewer):
    url = "/api/v1/audit/events/"

    assert _seqs(api_reviewer.get(url + "?action=model.registered")) == [3]
    assert _seqs(api_reviewer.get(url + "?agency=city-a")) == [2, 1]
    query = "?object_type=registry.dataset&object_id=2"
    assert _seqs(api_reviewer.get(url + query)) == [2]
    first = api_reviewer.get(url + "?page_size=3")
    assert _seqs(first) == [4, 3, 2]
    assert _seqs(api_reviewer.get(first.json()["next"])) == [1]
    event = api_reviewer.get(url + "2/").json()
    assert event["payload"] == {"n": 2}
    assert event["agency_slug"] == "city-a"
    assert event["hash"] == AuditEvent.objects.get(seq=2).hash


@pytest.mark.django_db
def test_event_list_reads_a_full_page_in_constant_queries(
    two_agency_events, api_reviewer, django_assert_max_num_queries
):
    record_n(30)
    with django_assert_max_num_queries(6):
        response = api_reviewer.get("/api/v1/audit/events/?page_size=50")
    assert len(response.json()["results"]) == 34


@pytest.mark.django_db
def test_only_oversight_verifies_or_exports_the_whole_chain(
    two_agency_events, api_a, api_reviewer
):
    assert api_a.get("/api/v1/audit/verify/").status_code == 403
    assert api_a.get("/api/v1/audit/export/").status_code == 403

    response = api_reviewer.get("/api/v1/audit/export/")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson"
    lines = [
        json.loads(line) for line in b"".join(response.streaming_content).splitlines()
    ]
    assert [line["seq"] for line in lines if line["type"] == "event"] == [1, 2, 3, 4]
    exported = AuditEvent.objects.order_by("-seq").first()
    assert (exported.seq, exported.action) == (5, "audit.exported")
    assert exported.actor_label.startswith("rita#")


@pytest.mark.django_db
def test_member_exports_a_model_version_only_within_their_agency(
    agency_a, agency_b, api_a, api_b
):
    version = ModelVersionFactory(model__agency=agency_a)
    with transaction.atomic():
        audit.record(
            actor=None, action="model_version.registered", obj=version, agency=agency_a
        )

    def events(client) -> list[int]:
        response = client.get(f"/api/v1/audit/export/?model_version={version.pk}")
        assert response.status_code == 200
        body = b"".join(response.streaming_content).splitlines()
        return [json.loads(x)["seq"] for x in body if b'"type":"event"' in x]

    assert events(api_a) == [1]
    version.model.visibility = Visibility.PUBLIC
    version.model.save(update_fields=["visibility"])
    assert events(api_b) == []
    # "²" passes str.isdigit() but is no integer; 1e30 is out of the id range.
    for value in ("abc", "\u00b2", "1e30", str(2**63), "0", "-1"):
        bad = api_a.get("/api/v1/audit/export/", {"model_version": value})
        assert bad.status_code == 400, value
        assert bad.json()["code"] == "validation_error"


@pytest.mark.django_db
def test_export_of_a_version_the_caller_cannot_see_is_404_and_records_nothing(
    agency_a, api_a, api_b
):
    version = ModelVersionFactory(model__agency=agency_a)
    with transaction.atomic():
        audit.record(
            actor=None, action="model_version.registered", obj=version, agency=agency_a
        )
    missing = api_b.get("/api/v1/audit/export/?model_version=999999")

    hidden = api_b.get(f"/api/v1/audit/export/?model_version={version.pk}")

    assert hidden.status_code == missing.status_code == 404
    assert hidden.json() == missing.json()
    assert hidden.json()["code"] == "not_found"
    assert b"up_to_seq" not in hidden.content
    assert not AuditEvent.objects.filter(action="audit.exported").exists()
    own = api_a.get(f"/api/v1/audit/export/?model_version={version.pk}")
    assert own.status_code == 200


@pytest.mark.django_db
def test_checkpoints_are_listed_for_auditors_to_keep(api_b):
    record_n(2)
    audit.checkpoint_create()

    response = api_b.get("/api/v1/audit/checkpoints/")

    assert response.status_code == 200
    [checkpoint] = response.json()["results"]
    assert checkpoint["seq"] == 2
    assert verify.open_checkpoint(checkpoint["envelope"], signing.public_key_pem())


# --- Admin ------------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_shows_the_chain_read_only(client, admin_user):
    record_n(2)
    audit.checkpoint_create()
    client.force_login(admin_user)

    listing = client.get("/admin/audit/auditevent/?q=dataset")
    assert listing.status_code == 200
    assert "dataset.registered" in listing.content.decode()
    assert client.get("/admin/audit/auditevent/?q=not-a-number").status_code == 200
    assert client.get("/admin/audit/auditevent/1/change/").status_code == 200
    assert client.get("/admin/audit/auditevent/add/").status_code == 403
    assert client.get("/admin/audit/auditevent/1/delete/").status_code == 403
    assert (
        client.post(
            "/admin/audit/auditevent/1/change/", {"action": "forged.action"}
        ).status_code
        == 403
    )
    assert client.get("/admin/audit/auditcheckpoint/").status_code == 200
    assert client.get("/admin/audit/auditcheckpoint/add/").status_code == 403
    assert AuditEvent.objects.get(seq=1).action == "dataset.registered"


# --- Concurrency (D4) ----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_d4_concurrent_writers_on_separate_connections_build_one_chain(
    committed_audit_rows,
):
    writers, per_writer = 6, 20
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(index: int) -> None:
        try:
            barrier.wait()
            for n in range(per_writer):
                with transaction.atomic():
                    audit.record(
                        actor=None,
                        action="bench.appended",
                        object_id=f"{index}-{n}",
                        payload={"writer": index, "n": n},
                    )
        except BaseException as exc:  # reported to the test thread below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    total = writers * per_writer
    seqs = list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, total + 1))
    prev_hashes = AuditEvent.objects.values_list("prev_hash", flat=True)
    assert len(set(prev_hashes)) == total
    report = audit.verify_chain()
    assert (report.ok, report.events) == (True, total)


@pytest.mark.slow
def test_d4_bench_appends_from_four_processes_into_one_verified_chain():
    scratch = f"civitas_bench_test_{uuid.uuid4().hex[:8]}"
    url = database_url().rsplit("/", 1)[0] + f"/{scratch}"

    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "audit.py"),
            "--events",
            "400",
            "--baseline-events",
            "100",
            "--database-url",
            url,
            "--json",
        ],
        cwd=ROOT,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["writers"] == 4
    assert figures["verify"]["ok"] is True
    assert figures["concurrent"]["events"] == 400
    assert figures["baseline"]["events"] == 100
    assert figures["batched"]["events"] == 100  # 100 events in one transaction
    assert figures["verify"]["events"] == 600
    assert figures["export"]["ok"] is True
    assert figures["concurrent"]["appends_per_second"] > 0


@pytest.mark.slow
def test_embedded_sqlite_configuration_records_and_verifies(tmp_path):
    env = process_env(CIVITAS_VAR_DIR=str(tmp_path), LOG_LEVEL="ERROR")
    for name in ("DATABASE_URL", "CIVITAS_SIGNING_KEY_FILE"):
        env.pop(name, None)
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run(
        [*manage, "migrate", "--noinput"],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    script = (
        "from django.db import transaction\n"
        "from audit import services as audit\n"
        "for n in range(3):\n"
        "    with transaction.atomic():\n"
        "        audit.record(actor=None, action='dataset.registered',\n"
        "                     payload={'n': n})\n"
        "audit.checkpoint_create()\n"
        "print(audit.verify_chain().ok)\n"
    )

    result = subprocess.run(
        [*manage, "shell", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("True")
    assert (tmp_path / "signing-key.pem").stat().st_mode & 0o777 == 0o600
