"""A worker's cache of verified, extracted bundles, keyed by their SHA-256.

Every evaluation used to copy the stored artifact (hashing it), have the
child hash it again and extract it again before loading the model. A worker
evaluating the same version twice now does that work once:

* ``BundleCache.prepare(digest, fill)`` returns the extracted bundle root for
  ``digest``. On a miss, ``fill(path)`` writes the artifact to ``path`` and
  must check its SHA-256 on the way (the worker's ``copy_verified``); the
  archive is then extracted by ``archive.materialise_bundle`` (the hardened,
  trusted extractor the registry uses on upload), the copy removed, and the
  tree made read-only (files 0444) before it is published by
  an atomic rename under ``<root>/<digest>``.
* What was published is remembered **in this process's memory only**: the
  relative path, device, inode, size, mode, mtime and ctime of every entry.
  A hit is served only if the tree on disk still matches that record
  exactly; a file rewritten, replaced, renamed, added or ``chmod``-ed
  changes its inode or its ctime (which no unprivileged process can set
  back), so a poisoned entry is detected, removed and rebuilt from the
  store. Nothing on disk is trusted that this process did not verify itself,
  so an entry left by another process (or a previous life of this one) is
  rebuilt, never adopted.
* The store is asked too, before a hit is served: ``prepare``'s ``origin()``
  returns the store's cheap fingerprint of the object (a ``stat`` of the
  file, an S3 ``HEAD``'s ETag, size and LastModified), taken before the
  object is copied and hashed and kept with the entry. A hit whose store
  fingerprint differs (or which the store could not give) is discarded and
  the object fetched and verified again, so bytes swapped in the store
  behind the registry's back are refused by the next run, exactly as
  without the cache. The fingerprint is taken *before* the copy: a change
  after it changes the fingerprint, a change before it is in the bytes
  that are hashed.
* The sandboxed child is given only its own entry as input (Landlock makes
  it read-only and hides the siblings), so one run's child never sees
  another agency's bundle; the child never writes to the cache.

The cache is bounded (``max_bytes``); least recently used entries go first.
It imports nothing of the project outside ``engine``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.scratch import sweep_scratch

DEFAULT_MAX_BYTES = 8 * 1024**3
# ``civitas-bundles-p<pid>-cache``: not a run's scratch folder (it outlives
# runs); a new cache removes those of dead processes (``sweep_orphans``).
CACHE_PREFIX = "civitas-bundles-"

Stamp = tuple[str, int, int, int, int, int, int]


@dataclass
class _Entry:
    path: Path
    root: Path
    stamps: list[Stamp]
    size: int
    origin: object = None  # the store's fingerprint when it was verified
    timings: dict = field(default_factory=dict)


def _stamp_tree(path: Path) -> tuple[list[Stamp], int]:
    """(rel path, dev, ino, size, mode, mtime_ns, ctime_ns) of every entry."""
    stamps, total = [], 0
    for top, dirs, files in os.walk(path, followlinks=False):
        dirs.sort()
        for name in sorted([*dirs, *files]):
            full = os.path.join(top, name)
            info = os.lstat(full)
            rel = os.path.relpath(full, path)
            stamps.append(
                (
                    rel,
                    info.st_dev,
                    info.st_ino,
                    info.st_size,
                    info.st_mode,
                    info.st_mtime_ns,
                    info.st_ctime_ns,
                )
            )
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    info = os.lstat(path)
    stamps.append(
        (
            ".",
            info.st_dev,
            info.st_ino,
            0,
            info.st_mode,
            info.st_mtime_ns,
            info.st_ctime_ns,
        )
    )
    return stamps, total


def _freeze(path: Path) -> None:
    """Make the files read-only (0444; folders 0755 so the sweep can remove
    them); symlinks are dropped. Any later change shows in the stamps."""
    for top, dirs, files in os.walk(path, topdown=False, followlinks=False):
        for name in files:
            full = os.path.join(top, name)
            if os.path.islink(full):
                os.unlink(full)
            else:
                os.chmod(full, 0o444)
        for name in dirs:
            os.chmod(os.path.join(top, name), 0o755)
    os.chmod(path, 0o755)


def remove_tree(path: str | Path) -> None:
    """Remove a (possibly read-only) tree; a missing one is fine."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    for top, dirs, _files in os.walk(path, followlinks=False):
        for name in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(top, name), 0o700)
    shutil.rmtree(path, ignore_errors=True)


def sweep_orphans(base: str | Path | None = None) -> list[str]:
    """Remove the caches under ``base`` (default: the temporary directory)
    whose owning process is dead."""
    return sweep_scratch(min_age_s=0, root=base, prefix=CACHE_PREFIX)


class BundleCache:
    """Verified, extracted, read-only bundles of one worker process."""

    def __init__(
        self, root: str | Path | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        base = Path(root) if root is not None else Path(tempfile.gettempdir())
        self.root = base / f"{CACHE_PREFIX}p{os.getpid()}-cache"
        sweep_orphans(base)
        remove_tree(self.root)  # a previous life of this pid: never adopted
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.RLock()
        self.hits = self.misses = self.rejected = self.store_changed = 0

    def _valid(self, entry: _Entry) -> bool:
        try:
            return _stamp_tree(entry.path)[0] == entry.stamps
        except OSError:
            return False

    def lookup(self, digest: str) -> Path | None:
        """The bundle root for ``digest`` if cached and untouched, else None.

        An entry whose tree no longer matches what was verified is removed.
        """
        digest = digest.lower().removeprefix("sha256:")
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if not self._valid(entry):
                self.rejected += 1
                del self._entries[digest]
                remove_tree(entry.path)
                return None
            self._entries.move_to_end(digest)
            return entry.root

    def prepare(
        self,
        digest: str,
        fill: Callable[[Path], object],
        *,
        extract: Callable[[Path, Path], Path],
        suffix: str = "",
        origin: Callable[[], object] | None = None,
    ) -> tuple[Path, dict]:
        """The extracted root for ``digest``, and what was done (``timings``).

        ``fill(dest)`` must write the artifact to ``dest`` and verify its
        SHA-256 (raising if it differs); ``extract(archive, dest)`` returns
        the bundle root under ``dest``. ``origin()``, when given, returns the
        store's current fingerprint of the object (``None``: it cannot tell,
        and nothing is reused): a hit is served only while it equals the one
        taken when the entry was filled. Whatever ``fill``, ``extract`` or
        ``origin`` raises propagates, and nothing is left behind.
        """
        digest = digest.lower().removeprefix("sha256:")
        with self._lock:  # one fill at a time per process: no half entries
            return self._prepare(digest, fill, extract, suffix, origin)

    def _store_unchanged(self, digest: str, current: object) -> bool:
        """Whether the store still holds what the entry was filled from;
        a changed (or unknown) object drops the entry."""
        entry = self._entries.get(digest)
        if entry is None:
            return False
        if current is not None and current == entry.origin:
            return True
        self.store_changed += 1
        del self._entries[digest]
        remove_tree(entry.path)
        return False

    def _prepare(
        self, digest: str, fill, extract, suffix: str, origin
    ) -> tuple[Path, dict]:
        started = time.perf_counter()
        current = origin() if origin is not None else None
        checked = time.perf_counter()
        if origin is None or self._store_unchanged(digest, current):
            hit = self.lookup(digest)
            if hit is not None:
                self.hits += 1
                timings = {"cache": "hit", "store_check_s": checked - started}
                timings["cache_check_s"] = time.perf_counter() - checked
                return hit, timings
        self.misses += 1
        root, timings = self._fill(digest, fill, extract, suffix)
        self._entries[digest].origin = current
        timings["store_check_s"] = checked - started
        self._evict(keep=digest)
        return root, timings

    def _fill(self, digest: str, fill, extract, suffix: str) -> tuple[Path, dict]:
        """Copy (verified), extract, freeze and publish ``digest``'s entry."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{digest[:16]}-", dir=self.root))
        try:
            archive = staging / f"artifact{suffix}"
            t0 = time.perf_counter()
            fill(archive)
            t1 = time.perf_counter()
            root = Path(extract(archive, staging / "bundle"))
            archive.unlink(missing_ok=True)
            _freeze(staging)
            t2 = time.perf_counter()
            final = self.root / digest
            remove_tree(final)  # never adopt what this process did not verify
            os.rename(staging, final)
            root = final / root.relative_to(staging)
            stamps, size = _stamp_tree(final)
        except BaseException:
            remove_tree(staging)
            raise
        self._entries[digest] = _Entry(final, root, stamps, size)
        timings = {"cache": "miss", "copy_verify_s": t1 - t0}
        timings["cache_extract_s"] = t2 - t1
        return root, timings

    def _evict(self, *, keep: str) -> None:
        total = sum(e.size for e in self._entries.values())
        for digest in list(self._entries):
            if total <= self.max_bytes or digest == keep:
                continue
            entry = self._entries.pop(digest)
            total -= entry.size
            remove_tree(entry.path)

    def clear(self) -> None:
        """Remove every entry and the cache folder."""
        with self._lock:
            self._entries.clear()
            remove_tree(self.root)

    def stats(self) -> dict:
        """Hits, misses, rejected (poisoned) entries, entries dropped because
        the store's object changed, entries and bytes held."""
        return {
            "hits": self.hits,
            "misses": self.misses,
            "rejected": self.rejected,
            "store_changed": self.store_changed,
            "entries": len(self._entries),
            "bytes": sum(e.size for e in self._entries.values()),
        }
