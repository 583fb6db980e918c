"""The audit log's Merkle tree (RFC 9162): proofs, signed tree heads, exports, API.

Every proof is checked against an independent brute-force computation of
the Merkle Tree Hash from the leaves (``mth`` below, the RFC's definition
written out recursively) and against the RFC's published test vectors.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import threading
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from audit import merkle, signing, tree, verify
from audit import services as audit
from audit.models import AuditEvent, AuditMerkleNode
from tests.audit.test_audit import (  # noqa: F401 - the autouse key fixtures
    _platform_key,
    committed_audit_rows,
    record_n,
    run_standalone_verifier,
    signing_key_file,
    triggers_disabled,
)
from tests.conftest import ROOT, database_url, process_env


def mth(leaves: list[str]) -> str:
    """MTH(D[n]) of RFC 9162 2.1.1, straight from the definition."""
    if not leaves:
        return hashlib.sha256(b"").hexdigest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    left, right = bytes.fromhex(mth(leaves[:k])), bytes.fromhex(mth(leaves[k:]))
    return hashlib.sha256(b"\x01" + left + right).hexdigest()


def leaves_of(n: int) -> list[str]:
    return [merkle.leaf_hash(hashlib.sha256(b"%d" % i).hexdigest()) for i in range(n)]


def stored(leaves: list[str]) -> merkle.Subtree:
    """A subtree reader over the nodes a Frontier emits, as the database stores them."""
    edge, nodes = merkle.Frontier(), {}
    for leaf in leaves:
        for level, index, value in edge.append(leaf):
            nodes[(level, index)] = value
    return lambda s, e: merkle.fold([nodes[p] for p in merkle.perfect_parts(s, e)])


# --- Pure algorithms ---------------------------------------------------------------

# RFC 6962 / 9162 reference leaves and roots (certificate-transparency test data).
RFC_LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
              "606162636465666768696a6b6c6d6e6f"]  # fmt: skip
RFC_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def test_roots_match_the_rfc_test_vectors():
    leaves = [
        hashlib.sha256(b"\x00" + bytes.fromhex(d)).hexdigest() for d in RFC_LEAVES
    ]
    for size in range(1, 9):
        edge = merkle.Frontier()
        for leaf in leaves[:size]:
            edge.append(leaf)
        assert edge.root() == RFC_ROOTS[size - 1] == mth(leaves[:size])
        read = stored(leaves[:size])
        for first in range(1, size):
            path = merkle.consistency_path(first, size, read)
            assert verify.verify_consistency(
                first, size, RFC_ROOTS[first - 1], RFC_ROOTS[size - 1], path
            )


@pytest.mark.parametrize("size", range(1, 71))
def test_inclusion_proofs_agree_with_brute_force_for_every_leaf(size):
    leaves = leaves_of(size)
    root, read = mth(leaves), stored(leaves)
    brute = lambda s, e: mth(leaves[s:e])  # noqa: E731
    for index in range(size):
        path = merkle.inclusion_path(index, size, read)
        assert path == merkle.inclusion_path(index, size, brute)
        assert len(path) <= (size - 1).bit_length()
        assert verify.verify_inclusion(leaves[index], index, size, path, root)
        # Tampering: another leaf, index, size, root or a flipped path hash.
        other = leaves[(index + 1) % size]
        assert size == 1 or not verify.verify_inclusion(other, index, size, path, root)
        assert not verify.verify_inclusion(leaves[index], index, size, path, "0" * 64)
        if path:
            bad = [*path[:-1], "f" * 64]
            assert not verify.verify_inclusion(leaves[index], index, size, bad, root)
            assert not verify.verify_inclusion(
                leaves[index], index, size, path[:-1], root
            )
        if size > 1:
            wrong = (index + 1) % size
            assert not verify.verify_inclusion(leaves[index], wrong, size, path, root)


@pytest.mark.parametrize("second", range(1, 71))
def test_consistency_proofs_agree_with_brute_force_for_every_prefix(second):
    leaves = leaves_of(second)
    read = stored(leaves)
    brute = lambda s, e: mth(leaves[s:e])  # noqa: E731
    second_root = mth(leaves)
    for first in range(1, second + 1):
        first_root = mth(leaves[:first])
        path = merkle.consistency_path(first, second, read)
        assert path == merkle.consistency_path(first, second, brute)
        assert verify.verify_consistency(first, second, first_root, second_root, path)
        if first < second:
            assert not verify.verify_consistency(
                first, second, mth(leaves_of(first + 1)[1:]), second_root, path
            )
            assert not verify.verify_consistency(
                first, second, first_root, second_root, [*path[:-1], "e" * 64]
            )


def test_consistency_between_random_pairs_and_the_edge_cases():
    rng = random.Random(9162)
    leaves = leaves_of(300)
    read = stored(leaves)
    for _ in range(300):
        first, second = sorted(rng.sample(range(1, 301), 2))
        path = merkle.consistency_path(first, second, read)
        assert verify.verify_consistency(
            first, second, mth(leaves[:first]), mth(leaves[:second]), path
        )
    empty = merkle.EMPTY_ROOT
    assert verify.verify_consistency(0, 5, empty, mth(leaves[:5]), [])
    assert not verify.verify_consistency(0, 5, "1" * 64, mth(leaves[:5]), [])
    assert not verify.verify_consistency(5, 3, mth(leaves[:5]), mth(leaves[:3]), [])
    assert not verify.verify_consistency(3, 5, mth(leaves[:3]), mth(leaves[:5]), [])
    assert not verify.verify_consistency(2, 5, "x", mth(leaves[:5]), ["a" * 64])
    assert not verify.verify_inclusion(leaves[0], 0, 1, "not a list", leaves[0])


# --- The database-backed tree ------------------------------------------------------


def chain_leaves() -> list[str]:
    hashes = AuditEvent.objects.order_by("seq").values_list("hash", flat=True)
    return [merkle.leaf_hash(h) for h in hashes]


@pytest.mark.django_db
def test_appends_store_every_perfect_subtree_and_proofs_match_brute_force():
    record_n(37)
    leaves = chain_leaves()
    # Leaves + the interior perfect subtrees: 37 + 18 + 9 + 4 + 2 + 1.
    assert AuditMerkleNode.objects.count() == 37 + 18 + 9 + 4 + 2 + 1
    for size in (1, 2, 5, 16, 33, 37):
        assert tree.root_at(size) == mth(leaves[:size])
    for seq in range(1, 38):
        proof = audit.inclusion_proof(seq, tree_size=37)
        assert proof.root_hash == mth(leaves)
        assert proof.path == merkle.inclusion_path(
            seq - 1, 37, lambda s, e: mth(leaves[s:e])
        )
        assert verify.verify_inclusion(
            proof.leaf_hash, proof.leaf_index, 37, proof.path, proof.root_hash
        )
    for first in range(0, 38):
        proof = audit.consistency_proof(first, 37)
        assert proof.first_root == mth(leaves[:first])
        assert verify.verify_consistency(
            first, 37, proof.first_root, proof.second_root, proof.path
        )


@pytest.mark.django_db
def test_a_proof_is_a_constant_number_of_queries(django_assert_max_num_queries):
    record_n(40)
    event = AuditEvent.objects.get(seq=3)
    with django_assert_max_num_queries(3):
        tree.inclusion_proof(event, 40)
    with django_assert_max_num_queries(2):
        tree.consistency_proof(7, 40)


@pytest.mark.django_db
def test_signed_tree_heads_and_the_default_proof_target():
    record_n(5)
    assert audit.tree_head_latest() is None
    proof = audit.inclusion_proof(2)  # signs the head first
    head = audit.tree_head_latest()
    assert (head.tree_size, proof.tree_size) == (5, 5)
    assert proof.tree_head == head and head.root_hash == mth(chain_leaves())
    signed = verify.open_checkpoint(head.envelope, signing.public_key())
    assert (signed.seq, signed.root_hash) == (5, head.root_hash)
    record_n(3)
    first = audit.tree_head_latest()
    audit.checkpoint_create()
    second = audit.tree_head_latest()
    proof = audit.consistency_proof(first.tree_size)
    assert (proof.first, proof.second) == (5, 8)
    assert verify.verify_consistency(
        5, 8, first.root_hash, second.root_hash, proof.path
    )
    with pytest.raises(audit.ProofError):
        audit.inclusion_proof(7, tree_size=5)
    with pytest.raises(audit.ProofError):
        audit.consistency_proof(3, 9)


@pytest.mark.django_db
def test_a_signed_root_that_differs_from_the_chain_fails_verification():
    record_n(4)
    statement = {
        "seq": 4,
        "head_hash": AuditEvent.objects.get(seq=4).hash,
        "created_at": "2026-01-01T00:00:00.000000Z",
        "tree_size": 4,
        "root_hash": "ab" * 32,
    }
    envelope = signing.sign_envelope(
        verify.canonical_json(statement), verify.CHECKPOINT_PAYLOAD_TYPE
    )

    report = audit.verify_chain(extra_checkpoints=[envelope])

    assert not report.ok and report.first_bad_seq == 4
    assert "Merkle root" in report.reason


@pytest.mark.django_db
def test_a_tampered_node_stops_the_next_checkpoint():
    record_n(6)
    audit.checkpoint_create()
    record_n(2)
    with triggers_disabled("audit_merklenode"), connection.cursor() as cursor:
        cursor.execute("UPDATE audit_merklenode SET hash = %s WHERE id = %s",
                       ["cd" * 32, merkle.node_key(2, 0)])  # fmt: skip

    with pytest.raises(audit.AuditChainBroken, match="Merkle tree"):
        audit.checkpoint_create()
    with pytest.raises(audit.ProofError, match="no tree head can be signed"):
        audit.inclusion_proof(8)  # newer than the newest signed head


@pytest.mark.django_db
def test_the_node_table_is_append_only():
    record_n(2)
    for sql in (
        "UPDATE audit_merklenode SET hash = 'x'",
        "DELETE FROM audit_merklenode",
    ):
        with (
            pytest.raises(Exception, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(sql)


# --- Partial exports carry inclusion proofs --------------------------------------


def _version_export(tmp_path, agency):
    from tests.factories import ModelVersionFactory

    version, other = ModelVersionFactory(model__agency=agency), ModelVersionFactory()
    with transaction.atomic():
        for obj in (version, other, version, other, other):
            audit.record(actor=None, action="model_version.updated", obj=obj)
    out = StringIO()
    call_command("export_audit", "--model-version", str(version.pk), stdout=out)
    path = tmp_path / "version.jsonl"
    path.write_text(out.getvalue(), encoding="utf-8")
    return path, [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.django_db
def test_a_partial_export_proves_its_events_belong_to_the_signed_log(
    tmp_path, agency_a, anon
):
    path, lines = _version_export(tmp_path, agency_a)
    header, events = lines[0], [line for line in lines if line["type"] == "event"]
    assert header["inclusion_proofs"] is True and header["up_to_seq"] == 5
    assert [e["proof"]["tree_size"] for e in events] == [5, 5]
    report = verify.verify_export(path)
    assert report.ok and "every event is proven" in report.notes[0]
    (tmp_path / "public.pem").write_bytes(anon.get("/api/v1/audit/public-key/").content)
    alone = run_standalone_verifier(tmp_path, "version.jsonl", "--key", "public.pem")
    assert alone.returncode == 0, alone.stdout + alone.stderr

    # A forged event with a recomputed hash: its own hash checks, its proof not.
    forged = dict(events[1], action="model_version.deleted")
    forged["hash"] = verify.event_hash(forged)
    compact = {"separators": (",", ":")}
    text = path.read_text().replace(
        json.dumps(events[1], **compact), json.dumps(forged, **compact)
    )
    path.write_text(text)
    bad = verify.verify_export(path)
    assert not bad.ok and bad.first_bad_seq == 3 and "inclusion proof" in bad.reason

    # Proofs stripped from a file that announces them.
    stripped = [{k: v for k, v in line.items() if k != "proof"} for line in lines]
    path.write_text("".join(json.dumps(line) + "\n" for line in stripped))
    assert "missing" in verify.verify_export(path).reason


# --- API ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_api_serves_tree_heads_and_proofs_that_verify(api_reviewer, agency_a):
    record_n(6, agency=agency_a)
    audit.checkpoint_create()
    record_n(3)
    audit.checkpoint_create()

    heads = api_reviewer.get("/api/v1/audit/tree-heads/").json()["results"]
    assert [h["tree_size"] for h in heads] == [9, 6]
    inclusion = api_reviewer.get("/api/v1/audit/proofs/inclusion?event=4").json()
    assert (
        inclusion["tree_size"] == 9 and inclusion["root_hash"] == heads[0]["root_hash"]
    )
    assert verify.verify_inclusion(inclusion["leaf_hash"], 3, 9, inclusion["path"],
                                   heads[0]["root_hash"])  # fmt: skip
    at6 = api_reviewer.get("/api/v1/audit/proofs/inclusion?event=4&tree_size=6").json()
    assert at6["root_hash"] == heads[1]["root_hash"]
    consistency = api_reviewer.get(
        "/api/v1/audit/proofs/consistency?first=6&second=9"
    ).json()
    assert verify.verify_consistency(
        6, 9, heads[1]["root_hash"], heads[0]["root_hash"], consistency["path"]
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("proofs/inclusion", "event"),
        ("proofs/inclusion?event=x", "event"),
        ("proofs/inclusion?event=2&tree_size=1", "tree_size"),
        ("proofs/inclusion?event=2&tree_size=99", "tree_size"),
        ("proofs/consistency", "first"),
        ("proofs/consistency?first=-1", "first"),
        ("proofs/consistency?first=4&second=2", "second"),
        ("proofs/consistency?first=1&second=99", "second"),
    ],
)
def test_api_bad_sizes_are_400_with_field_messages(api_reviewer, query, field):
    record_n(4)
    answer = api_reviewer.get(f"/api/v1/audit/{query}")
    assert answer.status_code == 400
    assert answer.json()["code"] == "validation_error"
    assert list(answer.json()["fields"]) == [field]


@pytest.mark.django_db
def test_api_inclusion_proofs_only_for_events_the_caller_may_read(
    api_a, api_b, agency_a, agency_b
):
    record_n(2, agency=agency_a)
    record_n(1, agency=agency_b)

    assert api_a.get("/api/v1/audit/proofs/inclusion?event=1").status_code == 200
    assert api_b.get("/api/v1/audit/proofs/inclusion?event=1").status_code == 404
    assert api_b.get("/api/v1/audit/proofs/inclusion?event=3").status_code == 200
    assert api_b.get("/api/v1/audit/proofs/inclusion?event=99").status_code == 404
    # Whole-log hashes are for every signed user.
    assert api_b.get("/api/v1/audit/tree-heads/").status_code == 200
    assert api_b.get("/api/v1/audit/proofs/consistency?first=1").status_code == 200


# --- Concurrency: four writer processes, visibility at commit only ---------------

WRITER = """
import django, sys
django.setup()
from django.db import transaction
from audit import services as audit
index, count = int(sys.argv[1]), int(sys.argv[2])
for n in range(count):
    with transaction.atomic():
        audit.record(actor=None, action="bench.appended", object_id=f"{index}-{n}",
                     payload={"writer": index, "n": n})
"""


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("committed_audit_rows")
def test_four_writer_processes_build_one_chain_and_one_tree():
    env = process_env(DATABASE_URL=database_url(), LOG_LEVEL="ERROR")
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(i), "40"],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    for writer in writers:
        assert writer.wait(timeout=300) == 0, writer.stderr.read()

    seqs = list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, 161))
    assert AuditEvent.objects.values("prev_hash").distinct().count() == 160
    assert audit.verify_chain().ok
    leaves = chain_leaves()
    assert tree.root_at(160) == mth(leaves)
    assert AuditMerkleNode.objects.count() == 160 + 80 + 40 + 20 + 10 + 5 + 2 + 1
    checkpoint = audit.checkpoint_create()
    assert checkpoint.root_hash == mth(leaves)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("committed_audit_rows")
def test_an_event_and_its_nodes_are_invisible_until_commit():
    recorded, release = threading.Event(), threading.Event()
    second_done = threading.Event()

    def first_writer():
        try:
            with transaction.atomic():
                audit.record(actor=None, action="bench.first")
                recorded.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    def second_writer():
        try:
            with transaction.atomic():
                audit.record(actor=None, action="bench.second")
            second_done.set()
        finally:
            connection.close()

    first = threading.Thread(target=first_writer)
    first.start()
    assert recorded.wait(timeout=30)
    second = threading.Thread(target=second_writer)
    second.start()
    time.sleep(0.5)
    # Nothing of the open transaction is visible, and the next writer waits.
    assert AuditEvent.objects.count() == 0
    assert AuditMerkleNode.objects.count() == 0
    assert tree.committed_size() == 0
    assert not second_done.is_set()
    release.set()
    first.join(timeout=30)
    second.join(timeout=30)

    events = list(AuditEvent.objects.order_by("seq").values_list("action", flat=True))
    assert events == ["bench.first", "bench.second"]
    assert audit.verify_chain().ok
    assert tree.root_at(2) == mth(chain_leaves())
