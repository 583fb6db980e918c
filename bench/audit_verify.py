"""The audit benchmark's read side: checkpoint, verification, export, proofs.

Split from ``bench/audit.py`` (which runs them after its appends, see its
docstring); every function here runs inside that script's configured Django
process against the scratch database.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path


def timed(run, events_of=lambda report: report.events) -> dict:
    """Wall time and events/s of one verification run."""
    started = time.perf_counter()
    report = run()
    seconds = time.perf_counter() - started
    return {
        "ok": report.ok,
        "events": report.events,
        "seconds": round(seconds, 3),
        "events_per_second": round(report.events / seconds, 1),
        "reason": report.reason,
    }


def side_by_side(run) -> dict:
    """One process (the baseline) and one worker per core, in the same run."""
    from audit.verify import default_workers

    workers = default_workers()
    one, many = timed(lambda: run(1)), timed(lambda: run(workers))
    rate = many["events_per_second"] / max(one["events_per_second"], 1e-9)
    return {
        **many,
        "workers": workers,
        "one_process": one,
        "ratio_to_one_process": round(rate, 2),
    }


def verify_figures(orm_baseline: bool = False) -> dict:
    from django.db import connection

    from audit import services as audit

    started = time.perf_counter()
    checkpoint = audit.checkpoint_create()
    checkpoint_seconds = time.perf_counter() - started
    figures = side_by_side(lambda workers: audit.verify_chain(workers=workers))
    report = audit.verify_chain(workers=1)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_total_relation_size('governance_auditevent')")
        table_bytes = cursor.fetchone()[0]
    figures |= {
        "checkpoints_ok": report.checkpoints_ok,
        "checkpoint_seq": checkpoint.seq if checkpoint else None,
        "checkpoint_seconds": round(checkpoint_seconds, 3),
        "checkpoint_to_verify": round(checkpoint_seconds / figures["seconds"], 2),
        "table_bytes_per_event": round(table_bytes / max(report.events, 1), 1),
    }
    if orm_baseline:
        figures["checkpoint_orm"] = checkpoint_orm(checkpoint_seconds)
    return figures


def checkpoint_orm(checkpoint_seconds: float) -> dict:
    """``--orm-baseline``: the segment read as checkpoints read it before
    2026-12-05 (ORM keyset pages, one process), verified the same way."""
    from audit import services as audit
    from audit.models import AuditEvent
    from audit.verify import ChainVerifier

    started = time.perf_counter()
    verifier = ChainVerifier()
    verifier.add_many(audit._event_rows(AuditEvent.objects.all()))
    seconds = time.perf_counter() - started
    return {
        "ok": verifier.finish().ok,
        "seconds": round(seconds, 3),
        "ratio_to_checkpoint": round(seconds / checkpoint_seconds, 2),
    }


def export_figures(workdir: Path, orm_baseline: bool = False) -> dict:
    from audit import services as audit
    from audit import verify

    path = workdir / "chain.jsonl"
    started = time.perf_counter()
    export = audit.export_open(actor=None, via="bench")
    with path.open("w", encoding="utf-8") as handle:
        for line in export.lines():
            handle.write(line)
    export_seconds = time.perf_counter() - started
    figures = side_by_side(lambda workers: verify.verify_export(path, workers=workers))
    figures |= {
        "export_seconds": round(export_seconds, 3),
        "export_bytes": path.stat().st_size,
        "verify_seconds": figures["seconds"],
        "export_to_verify_one_process": round(
            export_seconds / figures["one_process"]["seconds"], 2
        ),
    }
    if orm_baseline:
        figures["export_orm"] = export_orm(export, path, export_seconds)
    return figures


def export_orm(export, path: Path, export_seconds: float) -> dict:
    """``--orm-baseline``: the export's event lines written as before 2026-12-05
    (ORM keyset pages, ``json.dumps`` per line), compared byte for byte."""
    from audit import services as audit
    from audit.models import AuditEvent

    other = path.with_name("chain-orm.jsonl")
    started = time.perf_counter()
    with other.open("w", encoding="utf-8") as handle:
        events = AuditEvent.objects.filter(seq__lte=export.up_to_seq)
        for event in audit._event_rows(events):
            item = {"type": "event", **event}
            handle.write(json.dumps(item, ensure_ascii=False, separators=(",", ":")))
            handle.write("\n")
    seconds = time.perf_counter() - started
    with path.open("rb") as new, other.open("rb") as old:
        lines = (line for line in new if line.startswith(b'{"type":"event"'))
        same = all(a == b for a, b in itertools.zip_longest(lines, old))
    other.unlink()
    return {
        "seconds": round(seconds, 3),
        "ratio_to_export": round(seconds / export_seconds, 2),
        "identical_event_lines": same,
    }


def one_proof(kind: str, at: int, head) -> tuple:
    """One proof built from the database and checked as an auditor would."""
    from audit import services as audit
    from audit import verify

    size, root = head.tree_size, head.root_hash
    if kind == "inclusion":
        p = audit.inclusion_proof(at, size)
        return p, verify.verify_inclusion(p.leaf_hash, at - 1, size, p.path, root)
    p = audit.consistency_proof(at, size)
    return p, verify.verify_consistency(at, size, p.first_root, root, p.path)


def proof_figures(samples: int) -> dict:
    """Inclusion and consistency proofs at the chain's size: time, hashes, bytes."""
    import random
    import statistics

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from audit import services as audit

    head = audit.tree_head_latest()
    size, rng = head.tree_size, random.Random(9162)
    figures: dict = {"tree_size": size, "samples": samples}
    for kind in ("inclusion", "consistency"):
        times, hashes, sizes, queries = [], [], [], []
        for _ in range(samples):
            with CaptureQueriesContext(connection) as captured:
                started = time.perf_counter()
                proof, ok = one_proof(kind, rng.randint(1, size), head)
                times.append(time.perf_counter() - started)
            if not ok:
                raise SystemExit(f"a {kind} proof failed verification")
            queries.append(len(captured))
            hashes.append(len(proof.path))
            sizes.append(len(json.dumps(proof.path)))
        figures[kind] = {
            "ms_median": round(statistics.median(times) * 1000, 2),
            "ms_max": round(max(times) * 1000, 2),
            "hashes_max": max(hashes),
            "path_bytes_max": max(sizes),
            "queries_max": max(queries),
        }
    return figures
