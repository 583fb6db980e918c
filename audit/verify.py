"""Standalone verifier of the Civitas audit chain and of signed envelopes.

An auditor copies this file and ``audit/formats.py`` into a folder ``audit/``
and runs, with Python 3.11+ and ``cryptography`` only,
``python -m audit.verify chain.jsonl [--key public.pem] [--checkpoint cp.json ...]``
or ``python -m audit.verify attestation.json --key public.pem``. Neither file
imports Django or the project: the platform imports them, so the chain's
verification is defined once, here (docs/audit.md). A large full export is
verified in contiguous segments by worker processes, one per core
(``--workers``); the report is the one a single process gives. Exit status:
0 verified, 1 verification failed, 2 unusable input or usage.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import itertools
import json
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from audit.formats import (  # re-exported: the platform imports them from here
    CHECKPOINT_PAYLOAD_TYPE,
    EMPTY_ROOT,
    EXPORT_FORMAT,
    EXPORT_VERSION,
    GENESIS_HASH,
    HASHED_FIELDS,
    Checkpoint,
    TreeEdge,
    VerificationError,
    b64decode,
    canonical_json,
    canonical_value,
    event_digest,
    event_hash,
    format_timestamp,
    hashed_document,
    is_hash,
    key_id,
    leaf_hash,
    line_digest,
    load_public_key,
    node_hash,
    open_checkpoint,
    pae,
    parse_json,
    public_key_pem_of,
    spliced_digest,
    verify_consistency,
    verify_envelope,
    verify_inclusion,
    written_event,
)

__all__ = [
    "CHECKPOINT_PAYLOAD_TYPE",
    "EMPTY_ROOT",
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "GENESIS_HASH",
    "HASHED_FIELDS",
    "ChainReport",
    "ChainVerifier",
    "Checkpoint",
    "Segment",
    "TreeEdge",
    "VerificationError",
    "b64decode",
    "canonical_json",
    "canonical_value",
    "event_digest",
    "event_hash",
    "format_timestamp",
    "hashed_document",
    "is_hash",
    "key_id",
    "leaf_hash",
    "line_digest",
    "load_public_key",
    "main",
    "node_hash",
    "open_checkpoint",
    "pae",
    "parse_json",
    "public_key_pem_of",
    "scan",
    "spliced_digest",
    "verify_consistency",
    "verify_envelope",
    "verify_export",
    "verify_inclusion",
    "written_event",
]


# --- Chain verification ------------------------------------------------------

def _missing(expected: int, seq: int) -> tuple[int, str]:
    return expected, f"seq {expected} is missing (found seq {seq} next)"


def _broken(seq: int) -> tuple[int, str]:
    what = "the genesis hash" if seq == 1 else f"the hash of seq {seq - 1}"
    return seq, f"seq {seq}: prev_hash is not {what} (link broken)"


@dataclass
class Segment:
    """What a run of consecutive events showed (``scan``), for ``ChainVerifier.join``.

    A ``head`` segment was verified apart from the events before it (in a
    worker process): the seq and link of its first event are left to ``join``.
    """

    head: bool = False
    first_seq: int | None = None
    first_prev: Any = None
    events: int = 0
    last_seq: int | None = None
    last_hash: Any = None
    hashes: bytearray = field(default_factory=bytearray)  # 32 bytes per event
    leaves: bytearray = field(default_factory=bytearray)  # their Merkle leaves
    proven: int = 0
    fail: tuple[int, str] | None = None  # seq -1: a head event without seq
    lines: int = 0  # lines of an export file read
    bad_line: tuple[int, str] | None = None


def scan(
    seg: Segment,
    events: Iterable[Mapping[str, Any]],
    last_seq: int | None,
    last_hash: Any,
    heads: Mapping[int, str],
    *,
    partial: bool = False,
    proofs: Mapping[int, str] | None = None,
    require_proofs: bool = False,
    digest_of: Callable[[Mapping[str, Any]], bytes] | None = None,
) -> Segment:
    """Check ``events`` after (last_seq, last_hash), or as a head segment if
    last_seq is None; stop at the first failure. With ``proofs`` (the signed
    roots), each event's inclusion proof is checked instead of keeping leaves.
    ``digest_of`` gives an event's SHA-256 (default ``event_digest``)."""
    digest_of = digest_of or event_digest
    sha, count, fail = hashlib.sha256, 0, None
    hashes, leaves = seg.hashes, seg.leaves
    for event in events:
        seq = event.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            after = f"event after seq {last_seq} has no seq"
            fail = (-1, "") if last_seq is None else (last_seq + 1, after)
            break
        count += 1
        prev = event.get("prev_hash")
        if last_seq is None:
            seg.first_seq, seg.first_prev = seq, prev
            last_seq, last_hash = seq - 1, prev
        expected = last_seq + 1
        if partial and seq <= last_seq:
            fail = (seq, f"seq {seq} is out of order (after {last_seq})")
            break
        if not partial and seq != expected:
            fail = _missing(expected, seq)
            break
        if seq == expected and prev != last_hash:
            fail = _broken(seq)
            break
        try:
            digest = digest_of(event)
        except (KeyError, TypeError, ValueError) as exc:
            fail = (seq, f"seq {seq}: cannot be hashed ({exc})")
            break
        computed = digest.hex()
        if computed != event.get("hash"):
            fail = (seq, f"seq {seq}: content does not match its hash (event altered)")
            break
        if heads.get(seq, computed) != computed:
            fail = (
                seq,
                f"seq {seq}: recomputed head differs from the signed checkpoint "
                "(history up to this seq was rewritten)",
            )
            break
        last_seq, last_hash = seq, computed
        leaf = sha(b"\x00" + digest).digest()
        if proofs is None:
            hashes += digest
            leaves += leaf
            continue
        fail = _proof_problem(seq, leaf, event.get("proof"), proofs, require_proofs)
        if fail is not None:
            break
        seg.proven += event.get("proof") is not None
    seg.events, seg.fail, seg.last_seq, seg.last_hash = count, fail, last_seq, last_hash
    return seg


def _proof_problem(
    seq: int, leaf: bytes, proof: Any, roots: Mapping[int, str], required: bool
) -> tuple[int, str] | None:
    """Check an event's inclusion proof in a signed tree head, if it has one."""
    if proof is None:
        return (seq, f"seq {seq}: the inclusion proof is missing") if required else None
    size = proof.get("tree_size") if isinstance(proof, Mapping) else None
    root = roots.get(size) if isinstance(size, int) else None
    if root is None or not verify_inclusion(
        leaf.hex(), seq - 1, size, proof.get("path") or [], root
    ):
        return seq, f"seq {seq}: no valid inclusion proof to a signed head"
    return None


@dataclass
class ChainReport:
    """The outcome of verifying a chain (or a partial export of one)."""

    ok: bool
    events: int
    first_bad_seq: int | None
    reason: str | None
    checkpoints_ok: bool
    checkpoints: int = 0
    last_seq: int = 0
    head_hash: str | None = None
    partial: bool = False
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The five figures the API and ``verify_audit`` report."""
        return {
            "ok": self.ok,
            "events": self.events,
            "first_bad_seq": self.first_bad_seq,
            "reason": self.reason,
            "checkpoints_ok": self.checkpoints_ok,
        }

    def to_dict(self) -> dict[str, Any]:
        """Every figure, for ``--json`` output."""
        return asdict(self)


class ChainVerifier:
    """Recompute a chain fed event by event, in seq order."""

    def __init__(
        self,
        *,
        partial: bool = False,
        start_seq: int = 0,
        start_hash: str = GENESIS_HASH,
        start_frontier: TreeEdge | None = None,
    ) -> None:
        self.partial = partial
        # Full runs recompute the Merkle tree's right edge, to check signed roots.
        self.frontier = start_frontier
        if self.frontier is None and start_seq == 0 and not partial:
            self.frontier = TreeEdge()
        self._roots: dict[int, str] = {}
        self.proven = 0
        self.require_proofs = False  # a partial export that says it carries them
        self.events = 0
        # A run may resume after a trusted point (a verified checkpoint).
        self.last_seq = start_seq
        self.last_hash = start_hash
        self.first_bad_seq: int | None = None
        self.reason: str | None = None
        self.checkpoint_problems: list[str] = []
        self._checkpoints: dict[int, str] = {}
        self._checkpoint_count = 0

    @property
    def heads(self) -> dict[int, str]:
        """The signed head hash of each checkpointed seq (for ``scan``)."""
        return self._checkpoints

    @property
    def failed(self) -> bool:
        """True once a link or hash failed."""
        return self.first_bad_seq is not None

    def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Hold an authenticated checkpoint to compare with the chain."""
        self._checkpoint_count += 1
        known = self._checkpoints.get(checkpoint.seq)
        if known is not None and known != checkpoint.head_hash:
            self.checkpoint_problems.append(
                f"two signed checkpoints disagree on the head at seq {checkpoint.seq}"
            )
        self._checkpoints.setdefault(checkpoint.seq, checkpoint.head_hash)
        if checkpoint.root_hash is not None:
            self._roots.setdefault(checkpoint.seq, checkpoint.root_hash)

    def reject_checkpoint(self, problem: str) -> None:
        """Count a checkpoint that failed authentication."""
        self._checkpoint_count += 1
        self.checkpoint_problems.append(problem)

    def _check_end(self, last_seq: int | None, head_hash: str | None) -> None:
        beyond = [seq for seq in self._checkpoints if seq > self.last_seq]
        if beyond:
            self._fail(
                self.last_seq + 1,
                f"chain ends at seq {self.last_seq} but a signed checkpoint "
                f"covers seq {max(beyond)} (events were removed)",
            )
        elif last_seq is not None and last_seq > self.last_seq:
            self._fail(
                self.last_seq + 1,
                f"chain ends at seq {self.last_seq} but its head says "
                f"{last_seq} (events were removed)",
            )
        elif last_seq is not None and last_seq < self.last_seq:
            self._fail(
                last_seq + 1,
                f"events continue past seq {last_seq}, where the head says the "
                "chain ends",
            )
        elif head_hash is not None and head_hash != self.last_hash:
            self._fail(
                self.last_seq,
                f"the head hash differs from the hash of seq {self.last_seq}",
            )

    def _fail(self, seq: int, reason: str) -> None:
        if self.first_bad_seq is None:
            self.first_bad_seq = seq
            self.reason = reason

    def add(self, event: Mapping[str, Any]) -> None:
        """Check one event; the first failure is kept as ``first_bad_seq``."""
        self.add_many((event,))

    def add_many(
        self,
        events: Iterable[Mapping[str, Any]],
        batch: int = 50000,
        digest_of: Callable[[Mapping[str, Any]], bytes] | None = None,
    ) -> None:
        """Check events in seq order, as ``add`` each, ``batch`` at a time
        (``digest_of``: as ``scan``'s)."""
        items = iter(events)
        proofs = self._roots if self.partial or self.frontier is None else None
        while not self.failed:
            seg = scan(
                Segment(),
                itertools.islice(items, batch),
                self.last_seq,
                self.last_hash,
                self._checkpoints,
                partial=self.partial,
                proofs=proofs,
                require_proofs=self.require_proofs,
                digest_of=digest_of,
            )
            self.join(seg)
            if not seg.events:
                return

    def join(self, seg: Segment) -> None:
        """Take in the segment that follows the events checked so far."""
        if self.failed:
            return
        if seg.fail is not None and seg.fail[0] == -1:
            self._fail(self.last_seq + 1, f"event after seq {self.last_seq} has no seq")
            return
        if seg.head and seg.first_seq is not None:
            boundary = None
            if seg.first_seq != self.last_seq + 1:
                boundary = _missing(self.last_seq + 1, seg.first_seq)
            elif seg.first_prev != self.last_hash:
                boundary = _broken(seg.first_seq)
            if boundary is not None:
                self.events += 1
                self._fail(*boundary)
                return
        first = self.last_seq + 1
        if self.frontier is not None and not self.partial and seg.leaves:
            bad = self.frontier.extend(seg.leaves, self._roots, first)
            if bad is not None:
                k = bad - first
                self.events += k + 1
                self.last_seq = bad
                self.last_hash = seg.hashes[32 * k : 32 * k + 32].hex()
                self._fail(bad, f"seq {bad}: Merkle root differs from signed tree head")
                return
        self.events += seg.events
        self.proven += seg.proven
        if seg.last_seq is not None:
            self.last_seq, self.last_hash = seg.last_seq, seg.last_hash
        if seg.fail is not None:
            self._fail(*seg.fail)

    def finish(
        self,
        *,
        expected_last_seq: int | None = None,
        expected_head_hash: str | None = None,
    ) -> ChainReport:
        """Close the run: check the end of the chain and return the report."""
        checkpoints_ok = not self.checkpoint_problems
        if not self.failed and not self.partial:
            self._check_end(expected_last_seq, expected_head_hash)
        reason = self.reason
        if reason is None and not checkpoints_ok:
            reason = self.checkpoint_problems[0]
        notes = []
        if self.partial and self.proven and self.proven == self.events:
            notes.append(
                "partial export: every event is proven by an inclusion proof to a "
                "signed tree head of the whole log; completeness is not proven"
            )
        elif self.partial:
            notes.append(
                "partial export: each event matches its own hash and the "
                "checkpoints are authentic; membership in the signed chain and "
                "completeness are not proven (see docs/audit.md)"
            )
        return ChainReport(
            ok=not self.failed and checkpoints_ok,
            events=self.events,
            first_bad_seq=self.first_bad_seq,
            reason=reason,
            checkpoints_ok=checkpoints_ok,
            checkpoints=self._checkpoint_count,
            last_seq=self.last_seq,
            head_hash=None if self.partial else self.last_hash,
            partial=self.partial,
            notes=notes,
        )


# --- Worker processes ----------------------------------------------------------

# Below this much work a single process is faster than starting workers.
PARALLEL_MIN_EVENTS = 20_000
PARALLEL_MIN_BYTES = 8 << 20
_SEGMENT_BYTES = 16 << 20  # at most this much of an export per segment


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def segments(
    work: Callable[[Any], Segment],
    tasks: list[Any],
    workers: int,
    init: tuple[Callable[..., None], tuple] | None = None,
) -> Iterator[Segment]:
    """``work`` over ``tasks``, results in order; in ``workers`` processes when
    more than one can start (not in a daemon, say), else in this one."""
    pool = None
    if workers > 1 and len(tasks) > 1:
        methods = multiprocessing.get_all_start_methods()
        method = "forkserver" if "forkserver" in methods else "spawn"
        initializer, initargs = init or (None, ())
        try:
            pool = multiprocessing.get_context(method).Pool(
                min(workers, len(tasks)), initializer, initargs
            )
        except (AssertionError, OSError, ImportError, RuntimeError, ValueError):
            pool = None
    if pool is None:
        if init is not None:
            init[0](*init[1])
        yield from map(work, tasks)
        return
    with pool:  # leaving early (a failure) terminates the workers
        yield from pool.imap(work, tasks)
        pool.close()
        pool.join()


def _file_segment(task: tuple[str, int, int, dict[int, str]]) -> Segment:
    """Check the events in one byte range of an export (a worker's share)."""
    path, start, end, heads = task
    with open(path, "rb") as handle:
        handle.seek(start)
        data = handle.read(end - start)
    seg = Segment(head=True)
    # Lines as the text-mode file gives them (universal newlines).
    lines = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
    return scan(seg, _events_of(lines, seg), None, None, heads, digest_of=line_digest)


def _events_of(lines: Iterable[str], seg: Segment) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(lines, start=1):
        seg.lines = number
        item = written_event(line)
        if item is not None:
            yield item
            continue
        if not line.strip():
            continue
        try:
            item = parse_json(line)
        except ValueError:
            seg.bad_line = (number, "is not JSON")
            return
        if not isinstance(item, dict):
            seg.bad_line = (number, "is not a JSON object")
            return
        if item.get("type") == "event":
            yield item


def _file_ranges(path: Path, count: int) -> list[tuple[int, int]]:
    """``count`` byte ranges of about equal size, each made of whole lines."""
    size = path.stat().st_size
    cuts = {0, size}
    with path.open("rb") as handle:
        for i in range(1, count):
            handle.seek(i * size // count)
            handle.readline()
            cuts.add(min(handle.tell(), size))
    edges = sorted(cuts)
    return list(itertools.pairwise(edges))


def _verify_events_parallel(
    verifier: ChainVerifier, path: Path, workers: int, chunks: int | None
) -> None:
    """Check a full export's events in segments (``verify_export``)."""
    count = chunks or max(workers * 4, -(-path.stat().st_size // _SEGMENT_BYTES))
    heads = dict(verifier.heads)
    tasks = [(str(path), a, b, heads) for a, b in _file_ranges(path, count)]
    base = 0
    for seg in segments(_file_segment, tasks, workers):
        verifier.join(seg)
        if verifier.failed:
            return
        if seg.bad_line is not None:
            number, problem = seg.bad_line
            raise VerificationError(f"line {base + number} {problem}")
        base += seg.lines


# --- Export files ------------------------------------------------------------


def _lines(path: Path, skip: str = "\0") -> Iterator[tuple[int, dict[str, Any]]]:
    """The file's objects; lines starting with ``skip`` are not even parsed."""
    with path.open("r", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip() or line.startswith(skip):
                continue
            item = written_event(line)
            if item is not None:
                yield number, item
                continue
            try:
                item = parse_json(line)
            except ValueError as exc:
                raise VerificationError(f"line {number} is not JSON") from exc
            if not isinstance(item, dict):
                raise VerificationError(f"line {number} is not a JSON object")
            yield number, item


def _envelope_of(item: Mapping[str, Any]) -> Any:
    """A checkpoint file may hold the bare envelope or an export line."""
    return item.get("envelope", item)


def verify_export(
    path: Path,
    *,
    public_key_pem: str | bytes | None = None,
    extra_checkpoints: Iterable[Mapping[str, Any]] = (),
    workers: int | None = None,
    chunks: int | None = None,
) -> ChainReport:
    """Verify an export file (JSONL) as written by ``export_audit``.

    A full export is checked in ``chunks`` segments by ``workers`` processes
    (default: one per core for a large file, else this process alone).
    """
    header: dict[str, Any] | None = None
    end: dict[str, Any] | None = None
    checkpoint_lines = []
    for number, item in _lines(path, skip='{"type":"event"'):  # events: 2nd pass
        kind = item.get("type")
        if number == 1 or header is None:
            if kind != "header" or item.get("format") != EXPORT_FORMAT:
                raise VerificationError("the first line is not a Civitas export header")
            if item.get("version") != EXPORT_VERSION:
                version = item.get("version")
                raise VerificationError(f"unsupported export version {version!r}")
            header = item
        elif kind == "checkpoint":
            checkpoint_lines.append(item)
        elif kind == "end":
            end = item
    if header is None:
        raise VerificationError("the file is empty")
    key = load_public_key(public_key_pem or header.get("public_key_pem", ""))
    verifier = ChainVerifier(partial=bool(header.get("partial")))
    verifier.require_proofs = (
        verifier.partial and header.get("inclusion_proofs") is True
    )
    for item in [*checkpoint_lines, *extra_checkpoints]:
        try:
            verifier.add_checkpoint(
                open_checkpoint(
                    _envelope_of(item),
                    key,
                    stated_seq=item.get("seq"),
                    stated_head_hash=item.get("head_hash"),
                )
            )
        except VerificationError as exc:
            where = item.get("seq", "?")
            verifier.reject_checkpoint(f"checkpoint at seq {where} rejected: {exc}")
    if workers is None:
        big = path.stat().st_size >= PARALLEL_MIN_BYTES
        workers = default_workers() if big else 1
    if verifier.partial or (workers <= 1 and chunks is None):
        events = (item for _, item in _lines(path) if item.get("type") == "event")
        verifier.add_many(events, digest_of=line_digest)
    else:
        _verify_events_parallel(verifier, path, workers, chunks)
    up_to = header.get("up_to_seq")
    report = verifier.finish(expected_last_seq=up_to if not verifier.partial else None)
    if end is None and report.ok:
        report.ok = False
        report.reason = "the export has no end line (the file was cut short)"
    elif end is not None and not verifier.failed and end.get("events") != report.events:
        report.ok = False
        report.reason = (
            f"the end line counts {end.get('events')} events, the file holds "
            f"{report.events}"
        )
    if public_key_pem is None:
        report.notes.append(
            "checked against the public key inside the export; pass --key with a "
            "key obtained independently to prove who signed it"
        )
    return report


def _read_json_file(path: Path) -> Any:
    try:
        return parse_json(path.read_bytes())
    except ValueError as exc:
        raise VerificationError(f"{path} is not a JSON document") from exc


def _first_object(path: Path) -> Any:
    with path.open("r", encoding="utf-8") as handle:
        first = handle.readline()
    try:
        return parse_json(first)
    except ValueError:
        return None


def _print_report(report: ChainReport) -> None:
    if report.ok:
        scope = "partial export" if report.partial else "chain"
        print(
            f"OK: {scope} of {report.events} events verified "
            f"(last seq {report.last_seq}); {report.checkpoints} checkpoints authentic"
        )
    else:
        print(f"FAILED: {report.reason}")
        if report.first_bad_seq is not None:
            print(f"first bad seq: {report.first_bad_seq}")
        print(f"checkpoints authentic: {'yes' if report.checkpoints_ok else 'no'}")
    for note in report.notes:
        print(f"note: {note}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m audit.verify",
        description="Verify a Civitas audit export (JSONL) or a signed envelope.",
    )
    parser.add_argument("file", type=Path, help="chain.jsonl or an envelope .json")
    parser.add_argument("--key", type=Path, help="the platform public key (PEM)")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        default=[],
        help="a checkpoint kept from earlier (envelope JSON); repeatable",
    )
    parser.add_argument(
        "--payload-type", help="for an envelope: the payloadType it must carry"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON report")
    parser.add_argument(
        "--workers", type=int, help="processes for a large export (default: cores)"
    )
    args = parser.parse_args(argv)
    try:
        key_pem = args.key.read_bytes() if args.key else None
        first = _first_object(args.file)
        if isinstance(first, dict) and first.get("type") == "header":
            extra = [_read_json_file(path) for path in args.checkpoint]
            report = verify_export(
                args.file,
                public_key_pem=key_pem,
                extra_checkpoints=extra,
                workers=args.workers,
            )
            if args.json:
                print(json.dumps(report.to_dict(), indent=2))
            else:
                _print_report(report)
            return 0 if report.ok else 1
        envelope = _read_json_file(args.file)
        if not isinstance(envelope, dict) or "payloadType" not in envelope:
            raise VerificationError(f"{args.file} is neither an export nor an envelope")
        if key_pem is None:
            raise VerificationError("an envelope is verified against --key public.pem")
        key = load_public_key(key_pem)
    except (OSError, UnicodeDecodeError, VerificationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        payload = verify_envelope(envelope, key, payload_type=args.payload_type)
    except VerificationError as exc:
        if args.json:
            print(json.dumps({"ok": False, "reason": str(exc)}))
        else:
            print(f"FAILED: {exc}")
        return 1
    try:
        body: Any = parse_json(payload)
    except (ValueError, UnicodeDecodeError):
        body = base64.b64encode(payload).decode("ascii")
    if args.json:
        out = {"ok": True, "payloadType": envelope["payloadType"]}
        print(json.dumps({**out, "keyid": key_id(key), "payload": body}, indent=2))
    else:
        print(f"OK: signature by key {key_id(key)} over {envelope['payloadType']}")
        print(json.dumps(body, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
