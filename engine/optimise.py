"""ONNX Runtime's transformer optimiser as a derived, verified graph.

``optimise_bundle`` runs ``onnxruntime.transformers.optimizer`` (offline
fusions only, ``opt_level=0``: rotary embeddings, GELU variants, attention
where the pattern is recognised) over a bundle's graph and writes the fused
bundle beside it; ``verify_fused`` then scores token sequences with both
graphs through the engine and accepts the fused one only if every token's
log-likelihood agrees within ``TOLERANCE`` (relative).

The layer-norm fusions are left off: the optimiser writes the RMS norm as
``SimplifiedLayerNormalization`` in the default ONNX domain, which the ONNX
checker (and so ``engine.bundle``) refuses below opset 23, and ONNX Runtime
has no ``com.microsoft`` kernel of that name to move it to. A family whose
graph the optimiser does not recognise is reported ``not_fused``, not an
error. Run it on trusted bundles, or inside ``sandbox.run_isolated``.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

TOLERANCE = 1e-4


def _ort_model_type(root: Path) -> str:
    """The optimiser's model type: GPT-2's own, else the generic fusions."""
    try:
        config = json.loads((root / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    return "gpt2" if config.get("model_type") == "gpt2" else "bert"


def optimise_bundle(root: Path, dest: Path) -> dict[str, Any]:
    """Fuse the graph of the bundle at ``root`` into a new bundle at ``dest``.

    Returns ``{"status": "fused", "fused_ops": {op: count}, "model_type"}``,
    or ``{"status": "not_fused", "reason"}`` (nothing written) when no
    pattern was recognised.
    """
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = _ort_model_type(root)
    options = FusionOptions(model_type)
    options.enable_layer_norm = False
    options.enable_skip_layer_norm = False
    before = Counter(n.op_type for n in onnx.load(str(root / "model.onnx")).graph.node)
    logging.disable(logging.WARNING)  # the optimiser's advice on num_heads
    try:
        optimised = optimize_model(
            str(root / "model.onnx"), model_type=model_type, num_heads=0,
            hidden_size=0, opt_level=0, optimization_options=options,
        )  # fmt: skip
    finally:
        logging.disable(logging.NOTSET)
    after = Counter(n.op_type for n in optimised.model.graph.node)
    fused = {op: count for op, count in sorted(after.items()) if op not in before}
    if not fused:
        return {
            "status": "not_fused",
            "model_type": model_type,
            "reason": "the optimiser recognised no fusable pattern in this graph",
        }
    dest.mkdir(parents=True)
    for path in root.iterdir():
        if path.is_file() and not path.name.startswith("model.onnx"):
            shutil.copy2(path, dest / path.name)
    optimised.save_model_to_file(str(dest / "model.onnx"))
    return {"status": "fused", "fused_ops": fused, "model_type": model_type}


def verify_fused(
    root: Path, fused: Path, sequences: list[list[int]], *, tolerance: float = TOLERANCE
) -> dict[str, Any]:
    """Compare per-token log-likelihoods of the two graphs on ``sequences``.

    Returns ``{"max_relative_diff", "tolerance", "verified"}``; both bundles
    go through ``engine.runtime.load_model`` (and so ``engine.bundle``'s
    validation) first.
    """
    import numpy as np

    from engine.runtime import load_model

    original, candidate = load_model(root), load_model(fused)
    worst = 0.0
    for ids in sequences:
        a = np.asarray(original.loglikelihood_rolling(ids), dtype=np.float64)
        b = np.asarray(candidate.loglikelihood_rolling(ids), dtype=np.float64)
        relative = np.abs(b - a) / np.maximum(np.abs(a), 1e-12)
        worst = max(worst, float(relative.max(initial=0.0)))
    return {
        "max_relative_diff": worst,
        "tolerance": tolerance,
        "verified": worst <= tolerance,
    }
