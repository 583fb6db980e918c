"""Inspecting an ONNX bundle before the registry accepts it.

The upload is unpacked by ``engine.bundle`` into a scratch directory under
``ARTIFACT_TMP_DIR`` (removed whatever happens) and described without loading
the weights (``bundle_check``, cheap enough for a web request); on a worker,
every kind of model is then self-tested in the sandbox (``bundle_inspect``)
before it is released.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from config.exceptions import DomainError
from engine.archive import (
    BundleError,
    Limits,
    materialise_bundle,
    materialise_for_inspection,
)
from engine.bundle import GraphFacts, inspect_bundle
from engine.selftest import SELFTEST_KINDS, SelftestFailure, run_selftest
from registry.storage import artifact_storage, artifact_tmp_dir


def bundle_limits() -> Limits:
    """The archive caps of the settings, as the engine's ``Limits``."""
    return Limits(
        max_files=settings.CIVITAS_BUNDLE_MAX_FILES,
        max_total_bytes=settings.CIVITAS_BUNDLE_MAX_UNPACKED_BYTES,
        max_ratio=settings.CIVITAS_BUNDLE_MAX_RATIO,
    )


@contextmanager
def _scratch_dir() -> Iterator[Path]:
    """A private directory under ``ARTIFACT_TMP_DIR``, removed whatever happens."""
    path = Path(tempfile.mkdtemp(prefix="bundle-", dir=artifact_tmp_dir()))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def graph_fields(facts: GraphFacts) -> dict[str, Any]:
    """The model version's fields that hold a bundle's graph facts."""
    data = facts.to_dict()
    return {
        "graph_inputs": data["inputs"],
        "graph_outputs": data["outputs"],
        "opsets": data["opsets"],
        "parameter_count": facts.parameter_count,
        "weight_bytes": facts.weight_bytes,
        "kind": facts.kind,
        "layout": facts.layout,
        "num_layers": facts.num_layers,
        "quantisation": facts.quantisation,
    }


@dataclass(frozen=True)
class InspectedBundle:
    """What the registry learnt from a bundle before accepting it."""

    facts: GraphFacts
    selftest: dict[str, Any]


def bundle_check(*, path: Path) -> GraphFacts:
    """Unpack a bundle into a scratch directory and describe it; no model runs.

    What the upload checks before it answers: the archive caps, the graph
    validation and its facts. Large stored zip members (weights) are read in
    the upload itself rather than copied (``materialise_for_inspection``).
    The scratch directory is removed before returning. Raises ``DomainError``
    with the engine's code (``unsafe_path``, ``link_member``,
    ``compression_ratio``, ``too_many_files``, ``invalid_onnx``,
    ``missing_tokenizer``...) when the bundle is refused.
    """
    limits = bundle_limits()
    with _scratch_dir() as scratch:
        try:
            root, stored = materialise_for_inspection(
                path, scratch / "bundle", limits=limits
            )
            return inspect_bundle(root, limits=limits, stored=stored)
        except BundleError as e:
            raise DomainError(e.message, code=e.code) from e


def bundle_inspect(*, path: Path) -> InspectedBundle:
    """Unpack a bundle into a scratch directory, describe and self-test it.

    Runs on a worker, never in a web request. Every kind of model is
    self-tested (``engine.selftest``: language models' checks, a classifier's
    or a tensor model's one forward pass) in the sandboxed child, limited by
    ``CIVITAS_EVAL_MEMORY_BYTES`` and ``CIVITAS_SELFTEST_TIMEOUT_SECONDS``, so
    a graph that never ends is refused at the time limit. The scratch
    directory is removed before returning. Raises ``DomainError`` with the
    engine's code (see ``bundle_check``) when the bundle is refused, or
    ``selftest_failed`` when the self-test fails or cannot finish.
    """
    limits = bundle_limits()
    with _scratch_dir() as scratch:
        try:
            root = materialise_bundle(path, scratch / "bundle", limits=limits)
            facts = inspect_bundle(root, limits=limits)
        except BundleError as e:
            raise DomainError(e.message, code=e.code) from e
        if facts.kind not in SELFTEST_KINDS:
            return InspectedBundle(facts=facts, selftest={})
        try:
            figures = run_selftest(
                root,
                facts=facts,
                memory_bytes=settings.CIVITAS_EVAL_MEMORY_BYTES,
                timeout_s=settings.CIVITAS_SELFTEST_TIMEOUT_SECONDS,
            )
        except SelftestFailure as e:
            raise DomainError(e.message, code="selftest_failed") from e
        return InspectedBundle(facts=facts, selftest=figures)


@contextmanager
def stored_copy(*, key: str, sha256: str) -> Iterator[Path]:
    """Copy a stored bundle into a scratch file, checking its SHA-256 on the way.

    The copy, not the stored object, is what a worker inspects. Raises
    ``DomainError`` (``digest_mismatch``) when the stored bytes are not the
    ones uploaded; the scratch file is removed whatever happens.
    """
    with _scratch_dir() as scratch:
        dest = scratch / "stored"
        digest = hashlib.sha256()
        with artifact_storage().open(key, "rb") as source, open(dest, "wb") as out:
            while chunk := source.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            raise DomainError(
                f"The stored bundle's SHA-256 is {digest.hexdigest()}, not the "
                f"uploaded {sha256}.",
                code="digest_mismatch",
            )
        yield dest


def upload_format(path: Path) -> str:
    """Name the stored format of an accepted upload from its magic bytes."""
    with open(path, "rb") as f:
        head = f.read(262)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz"
    if head[257:262] == b"ustar":
        return "tar"
    return "onnx"
