"""A stored object's cheap fingerprint: has it changed since it was verified?

The worker's bundle cache (``engine.bundlecache``) serves a verified,
extracted bundle again only while the store still holds the very object it
was verified from. Rehashing the object would cost what the cache saves, so
the store is asked something cheap instead:

- on the local filesystem, a ``stat`` of the file: size, ``st_mtime_ns``,
  ``st_ino``, ``st_dev`` and ``st_ctime_ns``. The first three can be forged
  (``utime`` sets mtime back, a same-sized file can be written in place or
  land on a recycled inode), but the ctime cannot: every write, rename,
  ``chmod`` or ``utime`` sets it to the kernel's clock, and no unprivileged
  process can set it back (only changing the system clock or writing the
  raw block device could, which is root's, and root owns the store anyway);
- on S3 (``ArtifactS3Storage``), a ``HEAD``: ETag, size, LastModified and
  version id, within the storage's connect and read timeouts;
- any other store gives ``None``: nothing is reused, every run copies and
  verifies, as with the cache off.

A file changed within ``SETTLE_SECONDS`` of being fingerprinted is not
vouched for (``None``): timestamps have a granularity (a clock tick, or a
whole second on some filesystems and in S3's LastModified), and a second
write in the same tick as the last one, after the fingerprint, could leave
them equal. Git calls such entries "racily clean"; like git, the next run
checks the content again instead.
"""

from __future__ import annotations

import os
import time

from django.core.files.storage import FileSystemStorage

from registry.object_storage import ArtifactS3Storage
from registry.storage import artifact_storage

SETTLE_SECONDS = 2.0


def stored_fingerprint(key: str) -> tuple | None:
    """The artifact store's fingerprint of ``key`` now, or None (cannot tell)."""
    storage = artifact_storage()
    if isinstance(storage, ArtifactS3Storage):
        return storage.fingerprint(key, settle_s=SETTLE_SECONDS)
    if isinstance(storage, FileSystemStorage):
        return file_fingerprint(storage.path(key))
    return None


def file_fingerprint(path: str) -> tuple | None:
    """(size, mtime, inode, device, ctime) of the file at ``path`` (links
    followed, as ``open`` does), or None if missing or changed too lately."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    # ctime comes from the kernel's clock and cannot be set back from user
    # space: a replaced, rewritten, renamed-over or re-stamped file shows it.
    if time.time_ns() - info.st_ctime_ns < SETTLE_SECONDS * 1e9:
        return None
    return (
        "file",
        path,
        info.st_size,
        info.st_mtime_ns,
        info.st_ino,
        info.st_dev,
        info.st_ctime_ns,
    )
