"""Benchmark the audit chain: concurrent appends, then verification.

    python bench/audit.py --database-url postgres://postgres@127.0.0.1:5432/civitas_bench
    python bench/audit.py --events 200000 --json          # DATABASE_URL, no events yet

Appends ``--events`` events from ``--writers`` processes (default 4), each
with its own database connection, one event per transaction as services
append them; first a single writer appends ``--baseline-events`` as the
baseline. For context it also times a single writer putting 100 events in
each transaction, and bare durable commits (no audit) from one connection:
the storage's commit latency. One writer commits one append at a time, so
that bounds its rate; concurrent writers go past it when the head is busy,
their events being queued and chained in batches after they commit (one WAL
flush for many events, docs/audit.md "Appends under contention"). The
concurrent figures count an event once its writer's transaction and its own
sequencer pass have returned, so every counted event is chained. Then it signs a
checkpoint (a signed Merkle tree head), verifies the whole chain from the
database, exports it and verifies the export as an auditor would; last it
times ``--proof-samples`` inclusion and consistency proofs at the chain's full
size (about 1.1 million events by default; ``--verify-only`` writes
``--events`` with COPY instead of appending, then does the same) and reports
their sizes. Prints a table, or one JSON object with ``--json``.
``--orm-baseline`` also times the checkpoint's and the export's former ORM
reading in the same run.

With ``--database-url`` the database is a scratch one: it must not exist; it
is created, migrated, used and dropped (``--keep`` keeps it). Without it,
``DATABASE_URL`` is used only if it holds no audit events: events can never be
deleted from a real chain.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.audit_verify import export_figures, proof_figures, verify_figures  # noqa: E402

_SCRATCH_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _configure_environment(url: str, key_file: str | None) -> None:
    """Settings for a bench process: the target database and harmless defaults."""
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("SECRET_KEY", "bench-only-" + "k" * 50)
    os.environ.setdefault("ALLOWED_HOSTS", "localhost")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    if key_file:
        os.environ["CIVITAS_SIGNING_KEY_FILE"] = key_file


def _writer(
    url: str,
    key_file: str | None,
    index: int,
    count: int,
    per_transaction: int,
    barrier,
    results,
    code_root: str | None = None,
) -> None:
    """One writer process: own Django setup and connection, ``count`` appends.

    ``code_root`` (``--baseline-ref``) runs another checkout's code instead.
    Reports its own CPU time and its PostgreSQL backend's (read from /proc).
    """
    if code_root:
        # The settings put the working directory first on sys.path.
        os.chdir(code_root)
        sys.path.insert(0, code_root)
    _configure_environment(url, key_file)
    import django

    django.setup()
    from django.db import connection, transaction

    from audit import services as audit

    connection.ensure_connection()
    backend = connection.connection.info.backend_pid
    barrier.wait(timeout=300)
    profile = _profiler(index)
    started, queued = time.perf_counter(), 0
    cpu, backend_cpu = time.process_time(), _process_cpu(backend)
    for first in range(0, count, per_transaction):
        with transaction.atomic():
            for n in range(first, min(first + per_transaction, count)):
                event = audit.record(
                    actor=None,
                    action="bench.appended",
                    object_type="bench.item",
                    object_id=f"{index}-{n}",
                    payload={"writer": index, "n": n, "note": "benchmark event"},
                )
                queued += event.seq is None
    seconds = time.perf_counter() - started
    cpu, backend_cpu = time.process_time() - cpu, _process_cpu(backend) - backend_cpu
    if profile is not None:
        profile.disable()
        profile.dump_stats(f"{os.environ['CIVITAS_BENCH_PROFILE']}/writer-{index}.prof")
    code = str(Path(audit.__file__).resolve().parent.parent)
    results.put((index, count, seconds, queued, cpu, backend_cpu, code))
    connection.close()


def _queued_writer(url: str, key_file: str | None, count: int, code_root, results):
    """CPU of ``count`` queued appends: another connection holds the chain head
    and the sequencer's lock, so each append is queued and its pass refused."""
    if code_root:
        os.chdir(code_root)
        sys.path.insert(0, code_root)
    _configure_environment(url, key_file)
    import django

    django.setup()
    import psycopg
    from django.db import connection, transaction

    from audit import rows, sequencer
    from audit import services as audit

    with transaction.atomic():
        sequencer.lock_head()  # the head row exists before it is held
    holder = psycopg.connect(**rows.conninfo_of(connection.settings_dict))
    holder.execute("SELECT FROM governance_auditchainhead WHERE id = 1 FOR UPDATE")
    holder.execute("SELECT pg_advisory_xact_lock(%s)", [sequencer._SEQUENCER_LOCK])
    backend = connection.connection.info.backend_pid
    cpu, backend_cpu = time.process_time(), _process_cpu(backend)
    for n in range(count):
        with transaction.atomic():
            event = audit.record(
                actor=None,
                action="bench.appended",
                object_type="bench.item",
                object_id=f"queued-{n}",
                payload={"writer": 0, "n": n, "note": "benchmark event"},
            )
        assert event.seq is None
    cpu, backend_cpu = time.process_time() - cpu, _process_cpu(backend) - backend_cpu
    holder.close()
    audit.sequence_pending()
    code = str(Path(audit.__file__).resolve().parent.parent)
    results.put({
        "events": count,
        "code": code,
        "cpu_ms_per_event": {"writer": round(1000 * cpu / count, 3),
                             "backend": round(1000 * backend_cpu / count, 3)},
    })  # fmt: skip
    connection.close()


def _queued_cpu(url: str, key_file: str | None, count: int, code_root=None) -> dict:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    process = ctx.Process(
        target=_queued_writer, args=(url, key_file, count, code_root, results)
    )
    process.start()
    figures = results.get(timeout=600)
    process.join(60)
    return figures


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid``; 0 where /proc is absent."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _profiler(index: int):
    """cProfile of the writer's CPU time when CIVITAS_BENCH_PROFILE names a folder."""
    if not os.environ.get("CIVITAS_BENCH_PROFILE"):
        return None
    import cProfile

    profile = cProfile.Profile(time.process_time)
    profile.enable()
    return profile


def _head_seq() -> int:
    from audit.models import AuditChainHead

    return AuditChainHead.objects.values_list("seq", flat=True).first() or 0


def _append(
    url: str,
    key_file: str | None,
    writers: int,
    total: int,
    *,
    quiet: bool,
    per_transaction: int = 1,
    code_root: str | None = None,
) -> dict:
    """Run ``writers`` processes appending ``total`` events; wall-clock figures
    and CPU per event (the writers' processes, and their PostgreSQL backends)."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(writers + 1)
    results = ctx.Queue()
    shares = [
        total // writers + (1 if i < total % writers else 0) for i in range(writers)
    ]
    start_seq, start_commits = _head_seq(), _commits()
    processes = [
        ctx.Process(
            target=_writer,
            args=(url, key_file, i, shares[i], per_transaction, barrier, results),
            kwargs={"code_root": code_root},
        )
        for i in range(writers)
    ]
    for process in processes:
        process.start()
    barrier.wait(timeout=300)
    started = time.perf_counter()
    last_report = started
    while any(process.is_alive() for process in processes):
        time.sleep(0.2)
        if not quiet and time.perf_counter() - last_report >= 10:
            last_report = time.perf_counter()
            done = _head_seq() - start_seq
            rate = done / (last_report - started)
            print(
                f"  {writers} writer(s): {done:,}/{total:,} events, {rate:,.0f}/s",
                file=sys.stderr,
            )
    elapsed = time.perf_counter() - started
    failed = [p.exitcode for p in processes if p.exitcode != 0]
    if failed:
        raise SystemExit(f"a writer process failed (exit codes {failed})")
    per_writer = sorted(results.get(timeout=10) for _ in processes)
    return {
        "writers": writers,
        "events_per_transaction": per_transaction,
        "events": total,
        "seconds": round(elapsed, 3),
        "appends_per_second": round(total / elapsed, 1),
        "per_writer_appends_per_second": [
            round(row[1] / row[2], 1) for row in per_writer
        ],
        # Appends queued because another writer held the chain head, then
        # chained by a sequencer pass after their commit.
        # Committed transactions (the writers' and their sequencer passes')
        # per event; a writer's connection reports them when it closes.
        "commits_per_event": round((_commits() - start_commits) / total, 3),
        "code": sorted({row[6] for row in per_writer}),
        "queued": sum(row[3] for row in per_writer),
        "pending_after": _pending_count(),
        # Milliseconds of CPU per event: the writer processes (their own
        # sequencer passes included) and their PostgreSQL backends.
        "cpu_ms_per_event": {
            "writers": round(1000 * sum(row[4] for row in per_writer) / total, 3),
            "backends": round(1000 * sum(row[5] for row in per_writer) / total, 3),
        },
    }


def _commits() -> int:
    from django.db import connection

    time.sleep(0.6)  # the statistics of closed connections settle
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT xact_commit FROM pg_stat_database "
            "WHERE datname = current_database()"
        )
        return cursor.fetchone()[0]


def _pending_count() -> int:
    from audit.models import AuditPendingEvent

    return AuditPendingEvent.objects.count()


def _commit_probe(count: int = 500) -> dict:
    """Durable commits per second of a one-row UPDATE from one connection.

    A single writer's appends commit one at a time, so none can beat this;
    concurrent writers can, by the sequencer's batches. The probe rewrites the
    chain head with its own values.
    """
    from django.db import connection, transaction

    started = time.perf_counter()
    for _ in range(count):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "UPDATE governance_auditchainhead SET seq = seq WHERE id = 1"
            )
    seconds = time.perf_counter() - started
    return {"commits": count, "commits_per_second": round(count / seconds, 1)}


def _seed_chain(events: int) -> dict:
    """``--verify-only``: append ``events`` events with COPY, hashed as ``record``
    hashes them (bench/load_seed.py does the same), with varied payloads."""
    import datetime as dt

    from django.db import transaction
    from load_seed import copy_rows

    from audit.models import AuditChainHead
    from audit.tree import BulkNodes
    from audit.verify import GENESIS_HASH, canonical_json, event_hash

    started, nodes = time.perf_counter(), []
    AuditChainHead.objects.get_or_create(pk=1, defaults={"hash": GENESIS_HASH})
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with transaction.atomic():
        head = AuditChainHead.objects.select_for_update().get(pk=1)
        tree, state = BulkNodes(head), {"seq": head.seq, "prev": head.hash}

        def rows():
            for i in range(events):
                state["seq"] += 1
                payload = {"n": i, "name": f"modèle «{i % 97}»", "score": i / 7,
                           "tags": ["a", "b"][: i % 3], "big": 2**64 + i}
                event = {"seq": state["seq"], "created_at": at + dt.timedelta(
                    milliseconds=i), "actor_label": "bench#1", "agency_slug": "city-a",
                    "action": "model_version.registered", "object_type":
                    "registry.modelversion", "object_id": str(i % 1000),
                    "payload": payload, "prev_hash": state["prev"]}
                digest = event_hash(event)
                nodes.extend(tree.add(digest))
                yield (*(event[k] for k in _SEED_COLUMNS[:-3]),
                       canonical_json(payload).decode(), state["prev"], digest)
                state["prev"] = digest

        copy_rows("governance_auditevent", list(_SEED_COLUMNS), rows())
        copy_rows("audit_merklenode", ["id", "level", '"index"', "hash"], nodes)
        AuditChainHead.objects.filter(pk=1).update(
            seq=state["seq"], hash=state["prev"], frontier=tree.edge
        )
    return {"events": events, "seconds": round(time.perf_counter() - started, 1)}


_SEED_COLUMNS = ("seq", "created_at", "actor_label", "agency_slug", "action",
                 "object_type", "object_id", "payload", "prev_hash",
                 "hash")  # fmt: skip


def _maintenance_url(url: str) -> tuple[str, str]:
    """The server's ``postgres`` database URL and the scratch database name."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if parts.scheme not in ("postgres", "postgresql") or not _SCRATCH_NAME.match(name):
        raise SystemExit(
            "--database-url must be postgres://.../<name> with a plain lower-case "
            "database name"
        )
    return urlunsplit(parts._replace(path="/postgres")), name


def _create_scratch(url: str) -> None:
    import psycopg

    admin_url, name = _maintenance_url(url)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [name]
        ).fetchone()
        if exists:
            raise SystemExit(
                f"database {name!r} already exists: the bench creates its scratch "
                "database itself and drops it afterwards; choose a new name"
            )
        conn.execute(f'CREATE DATABASE "{name}"')


def _drop_scratch(url: str) -> None:
    import psycopg

    admin_url, name = _maintenance_url(url)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _ephemeral_key(workdir: Path) -> str:
    """A throwaway signing key, so the bench never creates one under var/."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = workdir / "bench-signing-key.pem"
    path.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return str(path)


def _append_rows(figures: dict) -> list[tuple[str, ...]]:
    if "baseline" not in figures:  # --verify-only
        seeded = figures["seeded"]
        return [("seeded with COPY (not an append figure)", f"{seeded['events']:,}",
                 f"{seeded['seconds']:.1f}", "")]  # fmt: skip
    base, conc = figures["baseline"], figures["concurrent"]
    probe, batched = figures["commit_probe"], figures["batched"]
    per_tx = batched["events_per_transaction"]
    return [
        ("durable commits, no audit, 1 connection", f"{probe['commits']:,}", "",
         f"{probe['commits_per_second']:,.0f}"),
        ("append, 1 writer (baseline)", f"{base['events']:,}",
         f"{base['seconds']:.1f}", f"{base['appends_per_second']:,.0f}"),
        (f"append, {conc['writers']} writers", f"{conc['events']:,}",
         f"{conc['seconds']:.1f}", f"{conc['appends_per_second']:,.0f}"),
        (f"append, 1 writer, {per_tx} per transaction", f"{batched['events']:,}",
         f"{batched['seconds']:.1f}", f"{batched['appends_per_second']:,.0f}"),
        *_before_rows(figures),
    ]  # fmt: skip


def _before_rows(figures: dict) -> list[tuple[str, ...]]:
    """The ``--baseline-ref`` code's appends, with CPU per event for both."""
    before = figures.get("before")
    if not before:
        return []
    rows = []
    for key, label in (("baseline", "1 writer"), ("concurrent", "writers")):
        old, new = before[key], figures[key]
        writers = f"{old['writers']} " if key == "concurrent" else ""
        ratio = new["appends_per_second"] / max(old["appends_per_second"], 1e-9)
        rate = f"{old['appends_per_second']:,.0f}"
        rows.append((f"append, {writers}{label}, code at {before['ref']} "
                     f"(this code {ratio:.2f}x)", f"{old['events']:,}",
                     f"{old['seconds']:.1f}", rate))  # fmt: skip
        for name, figs in ((before["ref"], old), ("this code", new)):
            cpu = figs["cpu_ms_per_event"]
            rows.append((f"  CPU ms/event, {writers}{label}, {name}: "
                         f"writers {cpu['writers']}, PostgreSQL {cpu['backends']}; "
                         f"commits/event {figs['commits_per_event']}",
                         "", "", ""))  # fmt: skip
    old, new = before["queued_cpu"], figures["queued_cpu"]
    for name, figs in ((before["ref"], old), ("this code", new)):
        cpu = figs["cpu_ms_per_event"]
        rows.append((f"  CPU ms/event, one queued append (head held), {name}: "
                     f"writer {cpu['writer']}, PostgreSQL {cpu['backend']}",
                     f"{figs['events']:,}", "", ""))  # fmt: skip
    return rows


def _verify_rows(label: str, figures: dict) -> list[tuple[str, ...]]:
    """The one-process baseline and the worker processes, side by side."""
    one, workers = figures["one_process"], figures["workers"]
    return [
        (f"{label}, 1 process", f"{one['events']:,}", f"{one['seconds']:.1f}",
         f"{one['events_per_second']:,.0f}"),
        (f"{label}, {workers} processes ({figures['ratio_to_one_process']}x)",
         f"{figures['events']:,}", f"{figures['seconds']:.1f}",
         f"{figures['events_per_second']:,.0f}"),
    ]  # fmt: skip


def _table(figures: dict) -> str:
    ver, exp = figures["verify"], figures.get("export")
    rows = [("", "events", "seconds", "per second"), *_append_rows(figures)]
    rows += _verify_rows("verify chain in the database", ver)
    if exp:
        rows += _verify_rows("verify exported JSONL (standalone)", exp)
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
            for i, cell in enumerate(row)
        )
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("")
    if "baseline" in figures:
        conc, base = figures["concurrent"], figures["baseline"]
        lines.append(
            f"{conc['writers']} writers / 1 writer: "
            f"{conc['appends_per_second'] / base['appends_per_second']:.2f}x  "
            f"queued and chained after commit: {conc['queued']:,} of "
            f"{conc['events']:,}  left pending: {conc['pending_after']}"
        )
    lines.append(
        f"chain ok: {ver['ok']}  checkpoints ok: {ver['checkpoints_ok']}  "
        f"first checkpoint signed in {ver['checkpoint_seconds']:.1f} s  "
        f"table size: {ver['table_bytes_per_event']:.0f} bytes/event"
    )
    orm = ver.get("checkpoint_orm")
    if orm:
        lines.append(
            f"  former ORM reading of the checkpoint's segment: {orm['seconds']:.1f} s"
            f" ({orm['ratio_to_checkpoint']}x the checkpoint)"
        )
    if exp:
        lines.append(
            f"export of {exp['events']:,} events written in "
            f"{exp['export_seconds']:.1f} s ({exp['export_bytes'] / 1e6:,.0f} MB)"
        )
    orm = (exp or {}).get("export_orm")
    if orm:
        lines.append(
            f"  former ORM export: {orm['seconds']:.1f} s ({orm['ratio_to_export']}x); "
            f"event lines identical: {orm['identical_event_lines']}"
        )
    proofs = figures.get("proofs")
    for kind in ("inclusion", "consistency") if proofs else ():
        p = proofs[kind]
        lines.append(
            f"{kind} proof at {proofs['tree_size']:,} events: median "
            f"{p['ms_median']} ms (max {p['ms_max']}), at most {p['hashes_max']} "
            f"hashes / {p['path_bytes_max']} bytes, {p['queries_max']} queries"
        )
    load = ", ".join(f"{x:.1f}" for x in figures["load"])
    end = ", ".join(f"{x:.1f}" for x in figures["load_end"])
    lines.append(
        f"database: {figures['database']}  load average at start: {load}, "
        f"at the end: {end}"
    )
    return "\n".join(lines)


def _measure(args, url: str, key_file, baseline_events: int, workdir: Path) -> dict:
    """Every figure of one run: appends (three ways) and the commit probe, or
    a COPY-written chain (``--verify-only``); then verification, the export
    and the proofs at the chain's full size."""
    figures = {"database": urlsplit(url).path.lstrip("/"), "load": os.getloadavg()}
    if args.verify_only:
        figures["seeded"] = _seed_chain(args.events)
    else:
        figures |= _appends(args, url, key_file, baseline_events, workdir)
        figures["commit_probe"] = _commit_probe()
    figures["verify"] = verify_figures(args.orm_baseline)
    if not args.no_export:
        figures["export"] = export_figures(workdir, args.orm_baseline)
    if args.proof_samples:
        figures["proofs"] = proof_figures(args.proof_samples)
    return figures


def _appends(args, url: str, key_file, baseline_events: int, workdir: Path) -> dict:
    """Appends by 1 writer, by ``--writers`` and 100 per transaction (and,
    with ``--baseline-ref``, by the code before, interleaved)."""
    quiet, figures = args.quiet, {}
    before = _baseline_code(args.baseline_ref, workdir) if args.baseline_ref else None
    if before:
        figures["before"] = {
            "ref": args.baseline_ref,
            "baseline": _append(url, key_file, 1, baseline_events, quiet=quiet,
                                code_root=before),
        }  # fmt: skip
    figures["baseline"] = _append(url, key_file, 1, baseline_events, quiet=quiet)
    if before:
        figures["before"]["queued_cpu"] = _queued_cpu(
            url, key_file, baseline_events, before
        )
        figures["queued_cpu"] = _queued_cpu(url, key_file, baseline_events)
        figures["before"]["concurrent"] = _append(
            url, key_file, args.writers, args.events, quiet=quiet, code_root=before
        )
    return figures | {
        "writers": args.writers,
        "concurrent": _append(url, key_file, args.writers, args.events, quiet=quiet),
        "batched": _append(
            url,
            key_file,
            1,
            min(10_000, baseline_events),
            quiet=quiet,
            per_transaction=100,
        ),
    }


def _baseline_code(ref: str, workdir: Path) -> str:
    """The project's files at git ``ref``, extracted under ``workdir``: the
    writers of the "before" figures run them against the same database."""
    import subprocess

    target = workdir / "baseline-code"
    target.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return str(target)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument(
        "--baseline-events",
        type=int,
        help="events appended by the single-writer baseline (default: events/10)",
    )
    parser.add_argument(
        "--database-url", help="a scratch PostgreSQL database to create"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--no-export", action="store_true", help="skip export figures")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--orm-baseline",
        action="store_true",
        help="also time the checkpoint's and the export's former ORM reading",
    )
    parser.add_argument(
        "--proof-samples",
        type=int,
        default=200,
        help="random inclusion and consistency proofs timed at the end (0: none)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress lines on stderr"
    )
    parser.add_argument(
        "--baseline-ref",
        help="also time 1 and --writers writers running this git commit's code "
        "(the code before a change), interleaved with this code's, same database",
    )
    parser.add_argument(
        "--verify-only",
        action="store_true",
        help="no appends: write --events events with COPY, then verification only",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    baseline_events = args.baseline_events or max(1000, args.events // 10)
    scratch = args.database_url is not None
    url = args.database_url or os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        print(
            "error: the bench measures PostgreSQL: set DATABASE_URL or pass "
            "--database-url",
            file=sys.stderr,
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="civitas-bench-") as tmp:
        workdir = Path(tmp)
        key_file = None
        if not os.environ.get("CIVITAS_SIGNING_KEY_FILE"):
            key_file = _ephemeral_key(workdir)
        if scratch:
            _create_scratch(url)
        is_set_up = False
        try:
            _configure_environment(url, key_file)
            import django

            django.setup()
            is_set_up = True
            from django.core.management import call_command
            from django.db import connections

            from audit.models import AuditEvent

            if scratch:
                call_command("migrate", verbosity=0, interactive=False)
            elif AuditEvent.objects.exists():
                print(
                    "error: this database already holds audit events, which can "
                    "never be removed; pass --database-url with a scratch database",
                    file=sys.stderr,
                )
                return 2
            connections.close_all()
            figures = _measure(args, url, key_file, baseline_events, workdir)
            figures["load_end"] = os.getloadavg()
            connections.close_all()
        finally:
            if scratch and not args.keep:
                if is_set_up:
                    from django.db import connections

                    connections.close_all()
                _drop_scratch(url)
    if args.json:
        print(json.dumps(figures))
    else:
        print(_table(figures))
    return 0 if figures["verify"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
