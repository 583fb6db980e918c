"""Bundles for the artifact tests: real ONNX files and hand-made hostile archives.

Models are built with ``onnx.helper`` (or ``modelgen.lm`` for a
real language model); archives with ``zipfile``/``tarfile`` directly, so each
hostile member is exactly what the test says it is.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from onnx import TensorProto, helper

from registry.models import ModelVersion


def tiny_model_bytes() -> bytes:
    """A valid generic ONNX model (y = x + W) with its weight inline."""
    weight = helper.make_tensor("W", TensorProto.FLOAT, [2], [1.0, 2.0])
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "W"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model.SerializeToString()


def external_data_model_bytes(elements: int, location: str = "weights.bin") -> bytes:
    """A generic model whose one float32 initializer of ``elements`` lives in
    ``location`` (external data, offset 0, the whole file)."""
    weight = TensorProto()
    weight.name = "W"
    weight.data_type = TensorProto.FLOAT
    weight.dims.append(elements)
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (
        ("location", location),
        ("offset", "0"),
        ("length", str(elements * 4)),
    ):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "W"], ["y"])],
        "external",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [elements])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model.SerializeToString()


def write_pattern(path: Path, size: int) -> None:
    """Write ``size`` non-zero bytes (a repeating pattern), 1 MiB at a time."""
    block = bytes(range(1, 256)) * 4112  # ~1 MiB, no long zero runs
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n


def big_external_bundle(dest: Path, data_bytes: int) -> Path:
    """A stored (uncompressed) zip: model.onnx + ``data_bytes`` of external weights.

    ``data_bytes`` must be a multiple of 4 (float32 elements).
    """
    work = dest.parent / f"{dest.stem}-src"
    work.mkdir()
    (work / "model.onnx").write_bytes(external_data_model_bytes(data_bytes // 4))
    write_pattern(work / "weights.bin", data_bytes)
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.write(work / "model.onnx", "model.onnx")
        zf.write(work / "weights.bin", "weights.bin")
    for child in work.iterdir():
        child.unlink()
    work.rmdir()
    return dest


def zip_bytes(members: dict[str, bytes], *, deflate: bool = False) -> bytes:
    """A zip of ``members`` (name -> content); names are used verbatim."""
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", method) as zf:
        for name, content in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = method
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            zf.writestr(info, content)
    return buffer.getvalue()


def zip_with_symlink() -> bytes:
    """model.onnx plus a member whose mode says symbolic link to /etc/passwd."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("model.onnx", tiny_model_bytes())
        link = zipfile.ZipInfo("weights.bin")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    return buffer.getvalue()


def tar_bytes(build, *, gz: bool = True) -> bytes:
    """A tar(.gz) with model.onnx, then whatever ``build(tarfile)`` adds."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w") as tf:
        data = tiny_model_bytes()
        info = tarfile.TarInfo("model.onnx")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        build(tf)
    return buffer.getvalue()


def _tar_member(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def tar_with_symlink() -> bytes:
    return tar_bytes(lambda tf: tf.addfile(_tar_member("etc", tarfile.SYMTYPE, "/etc")))


def tar_with_hardlink() -> bytes:
    return tar_bytes(
        lambda tf: tf.addfile(_tar_member("passwd", tarfile.LNKTYPE, "/etc/passwd"))
    )


def tar_with_device() -> bytes:
    def build(tf):
        info = _tar_member("null", tarfile.CHRTYPE)
        info.devmajor, info.devminor = 1, 3
        tf.addfile(info)

    return tar_bytes(build)


def tar_with_traversal() -> bytes:
    def build(tf):
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"owned"))

    return tar_bytes(build)


def files_under(root: Path) -> list[str]:
    """Every file or link below ``root`` (relative), empty if it does not exist."""
    if not root.exists():
        return []
    found = []
    for top, dirs, names in os.walk(root):
        for name in [*names, *(d for d in dirs if os.path.islink(Path(top, d)))]:
            found.append(os.path.relpath(Path(top, name), root))
    return sorted(found)


@pytest.fixture(name="artifact_dirs")
def artifact_dirs_fixture(settings, tmp_path):
    """A private artifact store and scratch directory for the test."""
    store, scratch = tmp_path / "store", tmp_path / "scratch"
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(store)},
        },
    }
    settings.ARTIFACT_TMP_DIR = scratch
    return SimpleNamespace(store=store, scratch=scratch)


@pytest.fixture(autouse=True)
def fresh_throttles():
    """Throttle counters live in the process-wide cache; start each test at zero."""
    from django.core.cache import cache

    cache.clear()


def put_raw(client, url: str, body: bytes, *, filename: str | None = None, **extra):
    """PUT ``body`` as application/octet-stream, optionally naming it."""
    if filename is not None:
        extra["HTTP_CONTENT_DISPOSITION"] = f'attachment; filename="{filename}"'
    return client.put(url, data=body, content_type="application/octet-stream", **extra)


def row(version: ModelVersion) -> dict:
    """Every column of the version, as stored now."""
    return ModelVersion.objects.filter(pk=version.pk).values().get()
