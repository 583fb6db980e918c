"""Inspecting an ONNX bundle before the registry accepts it.

The upload is unpacked by ``engine.bundle`` into a scratch directory under
``ARTIFACT_TMP_DIR`` (removed whatever happens), described without loading
the weights and, for a language model, self-tested in the sandbox.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from config.exceptions import DomainError
from engine.archive import BundleError, Limits, materialise_bundle
from engine.bundle import GraphFacts, inspect_bundle
from engine.selftest import SELFTEST_KINDS, SelftestFailure, run_selftest
from registry.storage import artifact_tmp_dir


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


@dataclass(frozen=True)
class InspectedBundle:
    """What the registry learnt from a bundle before accepting it."""

    facts: GraphFacts
    selftest: dict[str, Any]


def bundle_inspect(*, path: Path) -> InspectedBundle:
    """Unpack an uploaded bundle into a scratch directory, describe and test it.

    Language models (``causal_lm_kv``, ``causal_lm``) are then self-tested
    (``engine.selftest``) in the sandboxed child, limited by
    ``CIVITAS_EVAL_MEMORY_BYTES`` and ``CIVITAS_SELFTEST_TIMEOUT_SECONDS``;
    other kinds get empty ``selftest`` figures. The scratch directory is
    removed before returning. Raises ``DomainError`` with the engine's code
    (``unsafe_path``, ``link_member``, ``compression_ratio``,
    ``too_many_files``, ``invalid_onnx``, ``missing_tokenizer``...) when the
    bundle is refused, or ``selftest_failed`` when the self-test fails.
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
