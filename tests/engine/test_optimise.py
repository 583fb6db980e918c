"""ONNX Runtime's transformer optimiser on the ten family fixtures.

Each family is optimised (offline fusions); where the optimiser fused
something, the fused bundle passes the engine's validation and gives the
same per-token log-likelihoods as the unfused one within 1e-4 relative on
the fixture's reference texts. A family it cannot fuse is recorded as
``not_fused`` with a reason, never an error.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.bundle import inspect_bundle
from engine.optimise import TOLERANCE, optimise_bundle, verify_fused
from tests.engine.test_families import FAMILIES, FIXTURES

# What the optimiser of onnxruntime 1.32 fuses in each family's export.
EXPECTED_FUSIONS = {
    "llama": "GroupQueryAttention",
    "mistral": "GroupQueryAttention",
    "qwen2": "GroupQueryAttention",
    "gpt2": "FastGelu",
}


@pytest.mark.parametrize("family", FAMILIES)
def test_fused_graph_scores_like_the_unfused_one(family, tmp_path):
    root = FIXTURES / family
    reference = json.loads((root / "reference.json").read_text())
    report = optimise_bundle(root, tmp_path / "fused")
    if report["status"] == "not_fused":
        assert report["reason"]
        assert not (tmp_path / "fused").exists()
        assert family not in EXPECTED_FUSIONS
        return
    assert report["fused_ops"]
    if family in EXPECTED_FUSIONS:
        assert EXPECTED_FUSIONS[family] in report["fused_ops"]
    facts = inspect_bundle(tmp_path / "fused")  # the engine's own validation
    assert facts.kind == inspect_bundle(Path(root)).kind
    sequences = [text["token_ids"] for text in reference["texts"]]
    verdict = verify_fused(root, tmp_path / "fused", sequences)
    assert verdict["verified"], verdict
    assert verdict["max_relative_diff"] <= TOLERANCE
