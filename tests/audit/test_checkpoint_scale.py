"""Checkpoints and exports read the chain in bulk and give what the ORM reading gave.

A checkpoint verifies its segment (the events since the previous signed head)
with ``audit.rows``: a server-side cursor in this process, or seq ranges
checked by worker processes in a shared snapshot, as ``verify_chain`` does.
An export reads its events in keyset pages of raw rows. Each way must sign
the same tree head, refuse the same tampered chain and write the same bytes
as the one-process ORM reading (``audit.services._event_rows``, still the
SQLite path) did.
"""

from __future__ import annotations

import json

import pytest
from django.db import connection, transaction

from audit import services as audit
from audit import tree, verify
from audit.models import AuditCheckpoint, AuditEvent
from tests.audit.test_audit import (  # noqa: F401 - the autouse key fixtures
    _platform_key,
    committed_audit_rows,
    signing_key_file,
    triggers_disabled,
)
from tests.audit.test_merkle import mth
from tests.audit.test_verify_segments import TRICKY
from tests.factories import AgencyFactory

WAYS = ({"workers": 1}, {"workers": 1, "chunks": 4}, {"workers": 2, "chunks": 4})
TABLE = "governance_auditevent"


def _record(first: int, count: int, agency=None) -> None:
    for n in range(first, first + count):
        with transaction.atomic():
            audit.record(
                actor=None,
                action="dataset.registered",
                object_type="registry.dataset",
                object_id=str(n % 5),
                agency=agency if n % 2 else None,
                payload={"n": n, **TRICKY[n % len(TRICKY)]},
            )


def _orm_events(**scope) -> list[dict]:
    """The chain as the ORM reading gave it before (the reference)."""
    return list(audit._event_rows(AuditEvent.objects.filter(**scope).order_by("seq")))


def _statement(checkpoint: AuditCheckpoint) -> dict:
    return json.loads(verify.b64decode(checkpoint.envelope["payload"]))


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("committed_audit_rows")
@pytest.mark.parametrize("way", WAYS)
def test_a_checkpoint_signs_the_tree_head_the_orm_reading_gives(way):
    _record(1, 7)
    first = audit.checkpoint_create(**way)
    _record(8, 23)  # a segment of 23 events after the signed head at 7

    second = audit.checkpoint_create(**way)

    leaves = [verify.leaf_hash(event["hash"]) for event in _orm_events()]
    reference = verify.ChainVerifier()
    reference.add_many(_orm_events())
    assert reference.finish().ok
    for checkpoint, size in ((first, 7), (second, 30)):
        statement = _statement(checkpoint)
        assert (statement["seq"], statement["tree_size"]) == (size, size)
        assert statement["root_hash"] == checkpoint.root_hash == mth(leaves[:size])
        assert checkpoint.root_hash == tree.root_at(size)
    assert second.root_hash == reference.frontier.root()
    assert second.head_hash == reference.last_hash
    proof = audit.inclusion_proof(12, 30)
    assert verify.verify_inclusion(proof.leaf_hash, 11, 30, proof.path, mth(leaves))


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("committed_audit_rows")
@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("case", ["tampered", "link", "missing", "unparsable"])
def test_a_checkpoint_refuses_a_tampered_segment_every_way(case, way):
    _record(1, 6)
    audit.checkpoint_create()  # signed head at 6; the segment is 7..24
    _record(7, 18)
    # Four seq ranges with chunks=4: 7-10, 11-15, 16-19, 20-24.
    statement, bad = {
        "tampered": ("UPDATE {} SET payload = '{{\"n\":999}}' WHERE seq = 9", 9),
        "link": ("UPDATE {} SET prev_hash = repeat('a', 64) WHERE seq = 16", 16),
        "missing": ("DELETE FROM {} WHERE seq = 20", 20),
        "unparsable": ("UPDATE {} SET payload = 'not json' WHERE seq = 23", 23),
    }[case]
    with transaction.atomic(), triggers_disabled(TABLE), connection.cursor() as c:
        c.execute(statement.format(TABLE))

    with pytest.raises(audit.AuditChainBroken, match=rf"^seq {bad}\b"):
        audit.checkpoint_create(**way)

    assert list(AuditCheckpoint.objects.values_list("seq", flat=True)) == [6]


@pytest.mark.django_db
def test_inside_a_transaction_a_checkpoint_reads_the_chain_in_this_process():
    _record(1, 9)  # uncommitted: worker processes could not see these events

    checkpoint = audit.checkpoint_create(workers=2, chunks=3)

    leaves = [verify.leaf_hash(event["hash"]) for event in _orm_events()]
    assert (checkpoint.seq, checkpoint.root_hash) == (9, mth(leaves))


def _event_lines(export: audit.AuditExport) -> list[str]:
    return [line for line in export.lines() if line.startswith('{"type":"event"')]


def _reference_lines(**scope) -> list[str]:
    return [
        json.dumps(
            {"type": "event", **event}, ensure_ascii=False, separators=(",", ":")
        )
        + "\n"
        for event in _orm_events(**scope)
    ]


@pytest.mark.django_db
def test_export_lines_are_byte_identical_to_the_orm_reading(monkeypatch):
    agency = AgencyFactory()
    _record(1, 25, agency=agency)
    with triggers_disabled(TABLE), connection.cursor() as cursor:
        cursor.execute(f"UPDATE {TABLE} SET payload = 'not json' WHERE seq = 4")
    monkeypatch.setattr(audit.rows, "PAGE_ROWS", 7)  # pages end inside the chain
    full = audit.AuditExport(up_to_seq=22)
    one = audit.AuditExport(up_to_seq=25, object_type="registry.dataset", object_id="3")
    agency_only = audit.AuditExport(up_to_seq=25, agency_ids=frozenset({agency.pk}))

    assert _event_lines(full) == _reference_lines(seq__lte=22)
    assert len(_event_lines(full)) == 22
    assert _event_lines(one) == _reference_lines(object_type="registry.dataset",
                                                 object_id="3")  # fmt: skip
    assert len(_event_lines(one)) == 5
    assert _event_lines(agency_only) == _reference_lines(agency_id=agency.pk)
    assert len(_event_lines(agency_only)) == 13
    lines = list(full.lines())
    assert json.loads(lines[-1]) == {"type": "end", "events": 22, "up_to_seq": 22}
