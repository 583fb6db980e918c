"""Stored (uncompressed) zip members are copied straight from the archive.

The copy skips zipfile's reader, so the checks it made are made here: the
local header must match the central directory and the CRC-32 must hold.
"""

from __future__ import annotations

import zipfile

import pytest

from engine.archive import BundleError, extract_archive

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
