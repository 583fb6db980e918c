"""``bench/profile_ops.py`` on a tiny fp32 bundle and its dynamic int8 derivation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import modelgen
from engine.quantise import Derivation, quantise_graph

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "profile_ops.py"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("profile")
    cfg = modelgen.LMConfig(
        vocab_size=320, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
        intermediate_size=64, max_position_embeddings=256,
    )  # fmt: skip
    docs = [text for _, text in modelgen.corpus_documents()]
    tokenizer = modelgen.train_tokenizer(docs, 300)
    fp32 = modelgen.write_lm_bundle(
        root / "fp32", cfg, modelgen.init_weights(cfg, 3), tokenizer
    )
    int8 = root / "int8"
    int8.mkdir()
    for path in fp32.iterdir():
        if path.is_file() and not path.name.startswith("model.onnx"):
            (int8 / path.name).write_bytes(path.read_bytes())
    quantise_graph(
        fp32 / "model.onnx", int8 / "model.onnx", Derivation("dynamic-int8"),
        feeds=None,
    )  # fmt: skip
    return {"fp32": fp32, "int8": int8}


def _run(bundle: Path, rows: int) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(bundle), "--rows", str(rows), "--runs", "1"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_profile_lists_the_float_matmuls_of_an_fp32_bundle(bundles):
    out = _run(bundles["fp32"], 2)
    assert out.startswith("fp32: 2 x 128 tokens per run")
    shares = [line.split() for line in out.splitlines() if line.endswith("ms/run")]
    ops = {fields[0] for fields in shares}
    assert "MatMul" in ops and "DynamicQuantizeMatMul" not in ops
    total = sum(float(fields[1].rstrip("%")) for fields in shares)
    assert abs(total - 100.0) < 1.0


def test_profile_lists_the_int8_kernels_of_a_dynamic_int8_bundle(bundles):
    out = _run(bundles["int8"], 1)
    ops = {line.split()[0] for line in out.splitlines() if line.endswith("ms/run")}
    assert {"DynamicQuantizeMatMul", "MatMulIntegerToFloat"} & ops
    assert "heaviest nodes:" in out
