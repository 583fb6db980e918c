"""Scratch folders of evaluations (``civitas-eval-*``), and the sweep of orphans.

Every folder that holds a copy of a bundle or of dataset rows for a run is
made by ``make_scratch``: its name carries the id of the process that owns
it (``civitas-eval-<label>-p<pid>-<random>``). The owner removes it when the
child dies, whatever way it dies; a worker killed outright cannot, so
``sweep_scratch`` (run periodically by celery beat) removes the folders whose
owner is dead and that are older than the longest run time.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

SCRATCH_PREFIX = "civitas-eval-"
_OWNER = re.compile(r"-p(\d+)-[A-Za-z0-9_]+$")


def make_scratch(label: str = "", *, root: str | Path | None = None) -> Path:
    """Create a private scratch folder named after the calling process."""
    name = f"{SCRATCH_PREFIX}{label}-" if label else SCRATCH_PREFIX
    return Path(tempfile.mkdtemp(prefix=f"{name}p{os.getpid()}-", dir=root))


def scratch_owner(path: str | Path) -> int | None:
    """The owning process id written in a scratch folder's name, if any."""
    match = _OWNER.search(Path(path).name)
    return int(match.group(1)) if match else None


def _started_at(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), Linux only."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    ticks = float(stat.rsplit(")", 1)[1].split()[19])
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def _is_zombie(pid: int) -> bool:
    """Whether process ``pid`` has exited but not been reaped (Linux only)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def owner_alive(pid: int, *, since: float) -> bool:
    """Whether process ``pid`` is alive and is the one that existed at ``since``.

    A pid the kernel gave to a new process after ``since`` (pid reuse) does
    not count as the owner.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if _is_zombie(pid):  # dead, waiting for a parent that may never reap it
        return False
    started = _started_at(pid)
    return started is None or started <= since + 1.0


def sweep_scratch(
    *,
    min_age_s: float,
    root: str | Path | None = None,
    now: float | None = None,
    prefix: str = SCRATCH_PREFIX,
) -> list[str]:
    """Remove the orphaned scratch folders under ``root`` (the temporary directory).

    A folder goes when it was last written more than ``min_age_s`` ago and
    its owner (named in the folder's name) is dead; a folder that names no
    owner goes on age alone. Returns the removed folder names. ``prefix`` selects
    other folders named the same way (``engine.bundlecache``'s caches).
    """
    base = Path(root or tempfile.gettempdir())
    now = time.time() if now is None else now
    removed = []
    for path in sorted(base.glob(f"{prefix}*")):
        try:
            if path.is_symlink() or not path.is_dir():
                continue
            modified = path.stat().st_mtime
        except OSError:
            continue
        if now - modified < min_age_s:
            continue
        pid = scratch_owner(path)
        if pid is not None and owner_alive(pid, since=modified):
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(path)
            removed.append(path.name)
    return removed
