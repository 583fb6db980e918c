"""Scratch folders: removed when the child dies any way, swept when the owner died.

Real child processes; every folder lives under the test's own directory
(``TMPDIR``), never the shared temporary directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import psutil
import pytest

from engine.sandbox import EvaluationFailure, run_isolated
from engine.scratch import make_scratch, scratch_owner, sweep_scratch


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """A temporary directory of this test's own, for every scratch folder."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _age(path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_scratch_folder_names_its_owner(private_tmp):
    path = make_scratch("12")

    assert path.parent == private_tmp
    assert path.name.startswith(f"civitas-eval-12-p{os.getpid()}-")
    assert scratch_owner(path) == os.getpid()


def test_b10_sweep_removes_old_folders_of_dead_owners_only(private_tmp):
    dead = private_tmp / f"civitas-eval-7-p{_dead_pid()}-abc123"
    dead.mkdir()
    (dead / "bundle.zip").write_bytes(b"rows")
    young_dead = private_tmp / f"civitas-eval-8-p{_dead_pid()}-def456"
    young_dead.mkdir()
    # An owner alive since before its folder was last written: pid 1.
    alive = private_tmp / "civitas-eval-9-p1-ghi789"
    alive.mkdir()
    since_init = time.time() - psutil.Process(1).create_time()
    if since_init < 120:
        pytest.skip("pid 1 started too recently to own an old folder")
    _age(alive, since_init - 5)
    unnamed = private_tmp / "civitas-eval-legacy"
    unnamed.mkdir()
    other = private_tmp / "not-ours"
    other.mkdir()
    for path in (dead, unnamed, other):
        _age(path, 7200)

    removed = sweep_scratch(min_age_s=60, root=private_tmp)

    assert sorted(removed) == sorted([dead.name, unnamed.name])
    assert not dead.exists() and not unnamed.exists()
    assert young_dead.exists() and alive.exists() and other.exists()


def test_b10_a_reused_pid_does_not_keep_an_orphan(private_tmp):
    # The folder names this (live) process, which started after the folder
    # was last written: the pid was reused, the real owner is gone.
    folder = private_tmp / f"civitas-eval-p{os.getpid()}-zzz"
    folder.mkdir()
    started = psutil.Process().create_time()
    past = started - 3600
    os.utime(folder, (past, past))

    assert sweep_scratch(min_age_s=60, root=private_tmp) == [folder.name]


def test_b5_timeout_kills_the_group_and_removes_the_scratch(private_tmp):
    with pytest.raises(EvaluationFailure) as caught:
        run_isolated("time:sleep", (60,), timeout_s=1.5, memory_bytes=1024**3)

    assert caught.value.code == "timeout"
    assert list(private_tmp.glob("civitas-eval-*")) == []


def test_b10_should_stop_kills_the_child_within_a_second_and_cleans_up(private_tmp):
    seen: list[psutil.Process] = []
    # Children this process already had (a multiprocessing forkserver left by
    # an earlier test's parallel audit verification) are not the sandbox's.
    before = {p.pid for p in psutil.Process().children()}
    started = time.monotonic()

    def should_stop() -> bool:
        seen.extend(p for p in psutil.Process().children() if p.pid not in before)
        return time.monotonic() - started > 1.0

    with pytest.raises(EvaluationFailure) as caught:
        run_isolated(
            "time:sleep", (60,), should_stop=should_stop, poll_s=0.2,
            memory_bytes=1024**3,
        )  # fmt: skip
    elapsed = time.monotonic() - started

    assert caught.value.code == "cancelled"
    assert elapsed < 5
    assert seen, "the child was never seen running"
    assert not any(p.is_running() and p.status() != "zombie" for p in seen)
    assert list(private_tmp.glob("civitas-eval-*")) == []


def test_a_failing_should_stop_does_not_stop_the_child(private_tmp):
    def broken() -> bool:
        raise RuntimeError("database away")

    assert run_isolated("math:sqrt", (16,), should_stop=broken, poll_s=0.1) == 4.0
