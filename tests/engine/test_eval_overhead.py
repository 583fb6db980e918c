"""The worker's bundle cache: verified once, read-only, and never poisoned.

A cached extraction whose files were modified, replaced, added to or
re-permissioned is detected by its stamps (inode, size, mode, mtime, ctime
of every entry, held in the process's memory), removed and rebuilt from the
store; an entry this process did not verify is never adopted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from engine import bundlecache
from engine.archive import materialise_bundle
from engine.bundlecache import BundleCache, sweep_orphans
from engine.sandbox import EvaluationFailure, evaluate_bundle
from tests.engine.test_evaluate import build_lm_bundle
from tests.engine.test_sandbox import SUITE_LINE

FILES = {"model/model.onnx": b"not really onnx" * 100, "model/config.json": b"{}"}


def _zip(path: Path, files: dict[str, bytes]) -> tuple[Path, str]:
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


class Store:
    """A stand-in for the artifact store: counts fills, checks the digest."""

    def __init__(self, source: Path, digest: str) -> None:
        self.source, self.digest, self.fills = source, digest, 0

    def fill(self, dest: Path) -> None:
        self.fills += 1
        shutil.copyfile(self.source, dest)
        if hashlib.sha256(dest.read_bytes()).hexdigest() != self.digest:
            dest.unlink()
            raise ValueError("digest_mismatch")


def _extract(archive: Path, dest: Path) -> Path:
    # A fake "model.onnx" is enough: materialise only checks it is present.
    import zipfile as zf

    dest.mkdir()
    with zf.ZipFile(archive) as z:
        z.extractall(dest)
    return dest / "model"


@pytest.fixture
def cache(tmp_path):
    made = BundleCache(tmp_path / "cache-base", max_bytes=10**6)
    yield made
    made.clear()


@pytest.fixture
def store(tmp_path):
    return Store(*_zip(tmp_path / "artifact.zip", FILES))


def _prepare(cache, store):
    return cache.prepare(store.digest, store.fill, extract=_extract, suffix=".zip")


def test_a_bundle_is_verified_and_extracted_once_then_served_read_only(cache, store):
    root, first = _prepare(cache, store)
    again, second = _prepare(cache, store)

    assert root == again and store.fills == 1
    assert first["cache"] == "miss" and second["cache"] == "hit"
    assert (root / "model.onnx").read_bytes() == FILES["model/model.onnx"]
    assert (root / "model.onnx").stat().st_mode & 0o777 == 0o444
    assert not list(root.parent.parent.glob("*.zip"))  # the copy is gone
    assert cache.root.stat().st_mode & 0o777 == 0o700
    assert cache.stats() == {
        "hits": 1,
        "misses": 1,
        "rejected": 0,
        "store_changed": 0,
        "entries": 1,
        "bytes": sum(map(len, FILES.values())),
    }


def _rewrite_stealthily(path: Path, content: bytes) -> None:
    """Overwrite keeping size, mode and mtime: only the ctime can tell."""
    info = path.stat()
    os.chmod(path, 0o644)
    path.write_bytes(content)
    os.chmod(path, info.st_mode & 0o777)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


def _replace(path: Path, content: bytes) -> None:
    other = path.with_name(".swap")
    other.write_bytes(content)
    os.chmod(other, 0o444)
    os.replace(other, path)


def _add(path: Path, content: bytes) -> None:
    (path.parent / "extra.onnx").write_bytes(content)


def _chmod(path: Path, content: bytes) -> None:
    os.chmod(path, 0o666)


@pytest.mark.parametrize("poison", [_rewrite_stealthily, _replace, _add, _chmod])
def test_a_poisoned_cache_entry_is_detected_and_rebuilt(cache, store, poison):
    root, _ = _prepare(cache, store)
    target = root / "model.onnx"
    evil = b"X" * len(FILES["model/model.onnx"])

    poison(target, evil)

    assert cache.lookup(store.digest) is None  # detected, entry dropped
    assert cache.rejected == 1
    root, timings = _prepare(cache, store)
    assert timings["cache"] == "miss" and store.fills == 2
    assert (root / "model.onnx").read_bytes() == FILES["model/model.onnx"]
    assert not (root / "extra.onnx").exists()


def test_a_hit_is_served_only_while_the_store_vouches_for_its_object(cache, store):
    """``origin()`` is the store's fingerprint: taken before the fill, and
    asked again before every hit; a different (or no) answer refills."""
    answers = iter(["v1", "v1", "v2", None, None])

    def prepare():
        return cache.prepare(
            store.digest, store.fill, extract=_extract, suffix=".zip",
            origin=lambda: next(answers),
        )  # fmt: skip

    root, _ = prepare()  # v1: filled
    again, second = prepare()  # v1: the store has not changed
    assert root == again and store.fills == 1
    assert second["cache"] == "hit" and second["store_check_s"] >= 0
    _, third = prepare()  # v2: swapped in the store, fetched and verified again
    assert third["cache"] == "miss" and store.fills == 2
    assert cache.stats()["store_changed"] == 1
    _, fourth = prepare()  # the store cannot tell: verified again
    _, fifth = prepare()  # and an entry filled without a fingerprint is not reused
    assert fourth["cache"] == fifth["cache"] == "miss" and store.fills == 4


def test_an_object_swapped_in_the_store_is_refused_and_its_copy_discarded(cache, store):
    stamp = store.source.stat
    origin = lambda: (stamp().st_ino, stamp().st_size, stamp().st_ctime_ns)  # noqa: E731
    cache.prepare(store.digest, store.fill, extract=_extract, origin=origin)
    _replace(store.source, b"swapped behind the registry's back")

    with pytest.raises(ValueError, match="digest_mismatch"):
        cache.prepare(store.digest, store.fill, extract=_extract, origin=origin)

    assert cache.stats()["entries"] == 0 and cache.stats()["store_changed"] == 1
    assert list(cache.root.iterdir()) == []


def test_a_tampered_artifact_leaves_nothing_in_the_cache(cache, store, tmp_path):
    store.source.write_bytes(b"tampered in the store")

    with pytest.raises(ValueError, match="digest_mismatch"):
        _prepare(cache, store)

    assert cache.lookup(store.digest) is None
    assert list(cache.root.iterdir()) == []  # no staging, no entry


def test_an_entry_this_process_did_not_verify_is_never_adopted(cache, store):
    planted = cache.root / store.digest / "model"
    planted.mkdir(parents=True)
    (planted / "model.onnx").write_bytes(b"planted")

    root, timings = _prepare(cache, store)

    assert timings["cache"] == "miss" and store.fills == 1
    assert (root / "model.onnx").read_bytes() == FILES["model/model.onnx"]


def test_the_cache_is_bounded_least_recently_used_first(tmp_path):
    cache = BundleCache(tmp_path / "base", max_bytes=2500)
    stores = []
    for n in range(3):
        files = {"model/model.onnx": bytes([n]) * 1000}
        stores.append(Store(*_zip(tmp_path / f"a{n}.zip", files)))
    for one in stores:
        _prepare(cache, one)

    assert cache.lookup(stores[0].digest) is None  # evicted
    assert not (cache.root / stores[0].digest).exists()
    assert cache.lookup(stores[2].digest) is not None
    assert cache.stats()["entries"] == 2
    cache.clear()
    assert not cache.root.exists()


def dead_workers_cache(base: Path) -> Path:
    """A cache folder, read-only files inside, named after a process now dead."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = base / f"{bundlecache.CACHE_PREFIX}p{int(proc.stdout)}-cache"
    (dead / "abc").mkdir(parents=True)
    (dead / "abc" / "model.onnx").write_bytes(b"x")
    os.chmod(dead / "abc" / "model.onnx", 0o444)
    return dead


def test_the_cache_of_a_dead_worker_is_removed(tmp_path):
    base = tmp_path / "base"
    dead = dead_workers_cache(base)
    alive = base / f"{bundlecache.CACHE_PREFIX}p{os.getppid()}-cache"
    alive.mkdir()

    assert sweep_orphans(base) == [dead.name]
    assert not dead.exists() and alive.exists()


# --- The engine: a verified folder is not hashed again ----------------------


@pytest.fixture(scope="module")
def lm_zip(tmp_path_factory):
    folder = build_lm_bundle(tmp_path_factory.mktemp("eo") / "lm")[0]
    base = tmp_path_factory.mktemp("eozip")
    archive = Path(shutil.make_archive(str(base / "lm"), "zip", folder))
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("eodata") / "pp.jsonl"
    path.write_text("\n".join(SUITE_LINE.format(i) for i in range(3)) + "\n")
    return path


def test_a_verified_cached_folder_gives_the_archives_results(lm_zip, data, cache):
    archive, digest = lm_zip
    store = Store(archive, digest)
    root, _ = cache.prepare(
        digest, store.fill, extract=materialise_bundle, suffix=".zip"
    )

    fresh = evaluate_bundle(
        archive, task="perplexity", data=data, expected_digest=digest
    )
    cached = evaluate_bundle(
        root, task="perplexity", data=data, expected_digest=digest, verified=True
    )

    assert cached["bundle_sha256"] == fresh["bundle_sha256"] == digest
    quality = ("perplexity", "token_count")
    got = cached["results"][0]["metrics"]
    want = fresh["results"][0]["metrics"]
    assert {k: got[k] for k in quality} == {k: want[k] for k in quality}
    assert cached["facts"] == fresh["facts"]
    assert fresh["timings"]["digest_s"] > 0 and fresh["timings"]["extract_s"] > 0
    assert cached["timings"]["extract_s"] < fresh["timings"]["extract_s"]
    for key in ("child_start_s", "confine_s", "load_s", "tasks_s", "child_s"):
        assert cached["timings"][key] >= 0
    assert cached["timings"]["child_s"] >= cached["timings"]["tasks_s"]


def test_verified_is_ignored_for_an_archive_which_is_still_hashed(lm_zip, data):
    archive, _ = lm_zip
    with pytest.raises(EvaluationFailure) as info:
        evaluate_bundle(
            archive,
            task="perplexity",
            data=data,
            expected_digest="0" * 64,
            verified=True,
        )
    assert info.value.reason == "digest_mismatch"


def test_without_verified_a_folder_is_hashed_by_the_child(lm_zip, data, cache):
    archive, digest = lm_zip
    root, _ = cache.prepare(
        digest, Store(archive, digest).fill, extract=materialise_bundle, suffix=".zip"
    )
    with pytest.raises(EvaluationFailure) as info:
        evaluate_bundle(root, task="perplexity", data=data, expected_digest=digest)
    # A folder's digest is its manifest's, not the archive's: the child did
    # hash it, and refused it.
    assert info.value.reason == "digest_mismatch"
