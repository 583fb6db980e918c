"""Stored (uncompressed) zip members are copied straight from the archive.

The copy skips zipfile's reader, so the checks it made are made here: the
local header must match the central directory and the CRC-32 must hold. For
a static inspection (``materialise_for_inspection``) large stored members are
not copied at all: they are read where they lie in the upload.
"""

from __future__ import annotations

import zipfile

import onnx
import pytest

from engine import archive
from engine.archive import (
    BundleError,
    extract_archive,
    materialise_bundle,
    materialise_for_inspection,
)
from engine.bundle import inspect_bundle
from tests.engine.test_bundle import repeated_weights_model

WEIGHTS = bytes(range(256)) * 4096 + b"tail"  # 1 MiB and a bit: several blocks


def _stored_zip(path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def test_a_stored_member_is_extracted_byte_for_byte(tmp_path):
    archive = tmp_path / "b.zip"
    _stored_zip(archive, {"model.onnx": b"m", "data/weights.bin": WEIGHTS, "e": b""})

    written = extract_archive(archive, tmp_path / "out")

    assert sorted(written) == ["data/weights.bin", "e", "model.onnx"]
    assert (tmp_path / "out/data/weights.bin").read_bytes() == WEIGHTS
    assert (tmp_path / "out/e").read_bytes() == b""
    assert (tmp_path / "out/data/weights.bin").stat().st_mode & 0o777 == 0o644


def test_a_flipped_byte_in_a_stored_member_fails_its_crc(tmp_path):
    archive = tmp_path / "b.zip"
    _stored_zip(archive, {"model.onnx": b"m", "weights.bin": WEIGHTS})
    raw = bytearray(archive.read_bytes())
    at = raw.index(WEIGHTS[:4096]) + 700_000
    raw[at] ^= 0xFF
    archive.write_bytes(bytes(raw))

    with pytest.raises(BundleError) as refused:
        extract_archive(archive, tmp_path / "out")

    assert refused.value.code == "not_an_archive"
    assert not (tmp_path / "out").exists()  # everything written was undone


def test_a_local_header_naming_another_file_is_refused(tmp_path):
    archive = tmp_path / "b.zip"
    _stored_zip(archive, {"model.onnx": b"m", "weights.bin": WEIGHTS})
    raw = archive.read_bytes()
    # Rename the member in its local header only (same length): the central
    # directory still says weights.bin.
    first = raw.index(b"weights.bin")
    archive.write_bytes(raw[:first] + b"weights.bim" + raw[first + 11 :])

    with pytest.raises(BundleError) as refused:
        extract_archive(archive, tmp_path / "out")

    assert refused.value.code == "not_an_archive"
    assert not (tmp_path / "out").exists()


def test_inspection_leaves_large_stored_members_in_the_upload(tmp_path):
    archive_path = tmp_path / "b.zip"
    members = {
        "top/model.onnx": b"m" * (2 << 20),  # parsed: always a real copy
        "top/config.json": b"{}",
        "top/data/weights.bin": WEIGHTS,
        "top/small.bin": b"s" * 1000,
    }
    _stored_zip(archive_path, members)

    root, stored = materialise_for_inspection(archive_path, tmp_path / "out")

    assert root == tmp_path / "out" / "top"
    assert stored.archive == archive_path
    assert list(stored.offsets) == ["data/weights.bin"]
    placeholder = root / "data/weights.bin"
    assert placeholder.stat().st_size == len(WEIGHTS)
    assert placeholder.stat().st_blocks == 0  # sparse: nothing was written
    assert placeholder.stat().st_mode & 0o777 == 0o644
    with open(archive_path, "rb") as f:
        f.seek(stored.offsets["data/weights.bin"])
        assert f.read(len(WEIGHTS)) == WEIGHTS
    assert (root / "model.onnx").read_bytes() == members["top/model.onnx"]
    assert (root / "small.bin").read_bytes() == b"s" * 1000


def test_inspection_still_checks_a_member_it_does_not_copy(tmp_path):
    archive_path = tmp_path / "b.zip"
    _stored_zip(archive_path, {"model.onnx": b"m", "weights.bin": WEIGHTS})
    raw = bytearray(archive_path.read_bytes())
    raw[raw.index(WEIGHTS[:4096]) + 700_000] ^= 0xFF
    archive_path.write_bytes(bytes(raw))

    with pytest.raises(BundleError) as refused:
        materialise_for_inspection(archive_path, tmp_path / "out")

    assert refused.value.code == "not_an_archive"
    assert not (tmp_path / "out").exists()


def test_inspection_in_place_finds_the_same_facts_as_after_a_copy(
    tmp_path, monkeypatch
):
    # Identical matrices are found by reading their bytes: from the upload
    # when the member stays there, from the copy otherwise.
    monkeypatch.setattr(archive, "_IN_PLACE_MIN_BYTES", 1)
    source = tmp_path / "src"
    source.mkdir()
    onnx.save_model(
        repeated_weights_model(typed=False),
        source / "model.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    archive_path = tmp_path / "b.zip"
    _stored_zip(archive_path, {p.name: p.read_bytes() for p in source.iterdir()})

    copied = inspect_bundle(materialise_bundle(archive_path, tmp_path / "copy"))
    root, stored = materialise_for_inspection(archive_path, tmp_path / "in_place")
    in_place = inspect_bundle(root, stored=stored)

    assert list(stored.offsets) == ["weights.bin"]
    assert (root / "weights.bin").stat().st_blocks == 0
    assert in_place == copied
    assert in_place.shared_initializers == [["A", "A_copy"]]
