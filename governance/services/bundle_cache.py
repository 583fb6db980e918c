"""The evaluation worker's bundle cache (``engine.bundlecache``), one per process.

``prepared_bundle`` gives ``evaluation_execute`` the bundle to hand to the
engine: with the cache on (the setting ``CIVITAS_EVAL_BUNDLE_CACHE_BYTES``,
bytes per worker process, default 8 GiB; see docs/evaluation.md), the
extracted, read-only root of an artifact this process copied out of the store
and verified against its registered SHA-256, served again only while the
store's cheap fingerprint of the object (``registry.fingerprint``: a stat,
or an S3 HEAD) is the one taken when it was verified; otherwise it is
fetched and verified again, and bytes that are not the registered ones
refuse the run (``digest_mismatch``) as without the cache. With it off
(``0``), a fresh verified copy in the run's scratch folder, which the
engine's child hashes and extracts again (the behaviour before the cache).
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path

from django.conf import settings

from engine.archive import BundleError, materialise_bundle
from engine.bundlecache import DEFAULT_MAX_BYTES, BundleCache
from engine.sandbox import EvaluationFailure
from registry.fingerprint import stored_fingerprint

_caches: dict[int, BundleCache] = {}


def worker_bundle_cache() -> BundleCache | None:
    """This process's cache (a forked child gets its own), or None when off."""
    limit = int(
        getattr(settings, "CIVITAS_EVAL_BUNDLE_CACHE_BYTES", DEFAULT_MAX_BYTES) or 0
    )
    if limit <= 0:
        return None
    pid = os.getpid()
    cache = _caches.get(pid)
    if cache is None or cache.max_bytes != limit:
        cache = _caches[pid] = BundleCache(max_bytes=limit)
        # A process that exits normally (the ``evaluate`` command) removes
        # its cache; one killed leaves it to the sweep.
        atexit.register(cache.clear)
    return cache


def prepared_bundle(
    *, copy, key: str, digest: str, suffix: str, workdir: Path
) -> tuple[Path, bool, dict]:
    """(bundle path, verified, timings) for one run's artifact.

    ``copy(key, dest, sha256=...)`` streams the stored file to ``dest`` and
    refuses bytes that are not the registered ones. ``verified`` is true when
    the path is a cache entry whose digest was checked by this process.
    """
    cache = worker_bundle_cache() if digest else None
    if cache is None:
        return copy(key, workdir / f"bundle{suffix}", sha256=digest), False, {}
    try:
        root, timings = cache.prepare(
            digest,
            lambda dest: copy(key, dest, sha256=digest),
            extract=lambda archive, dest: materialise_bundle(archive, dest),
            suffix=suffix,
            origin=lambda: stored_fingerprint(key),
        )
    except BundleError as exc:  # what the child reported before the cache
        raise EvaluationFailure(
            "refused", f"{exc.code}: {exc.message}", reason=exc.code
        ) from exc
    return root, True, timings
