"""Fused attention and ONNX Runtime's optimiser as a derived, verified graph.

``optimise_bundle`` runs ``engine.attention.fuse_attention`` (each layer's
attention of a Llama-shaped causal LM becomes one ``GroupQueryAttention``;
hand-written, as the optimiser does not match that pattern), then
``engine.packing.pack_projections`` (each kernel's query, key and value
projections become one ``MatMul``, and so do the MLP's gate and up), then
``onnxruntime.transformers.optimizer`` (offline fusions only,
``opt_level=0``: rotary embeddings, GELU variants) over a bundle's graph and
writes the fused bundle beside it; ``verify_fused`` then scores token
sequences with both graphs through the engine and accepts the fused one
only if every token's log-likelihood agrees within ``TOLERANCE`` (relative).

The layer-norm fusions are left off: the optimiser writes the RMS norm as
``SimplifiedLayerNormalization`` in the default ONNX domain, which the ONNX
checker (and so ``engine.bundle``) refuses below opset 23, and ONNX Runtime
has no ``com.microsoft`` kernel of that name to move it to. A family whose
graph the optimiser does not recognise is reported ``not_fused``, not an
error. Run it on trusted bundles, or inside ``sandbox.run_isolated``:
``derive_optimised_bundle`` does the whole platform derivation there
(unpack and inspect the hostile parent, fuse, verify on ``VERIFY_TEXTS``,
zip), refusing ``not_fused`` and ``fusion_not_verified`` with their reason.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from engine.sandbox import EvaluationFailure, run_isolated

TOLERANCE = 1e-4
METHOD = "optimised"
# What makes the graph: Civitas's attention and packing passes, then ONNX
# Runtime's optimiser.
TOOL = "engine.attention+engine.packing+onnxruntime.transformers.optimizer"
OUTPUT_NAME = "derived.zip"
_CAUSAL_KINDS = frozenset({"causal_lm_kv", "causal_lm"})
# What the fused graph is scored on against the unfused one (the parent's
# tokenizer encodes them in the child).
VERIFY_TEXTS = (
    "The library opens at nine and closes at six on weekdays.",
    "Apply for a parking permit online or at the town hall.",
    "Household waste is collected every Tuesday morning; glass on Fridays.",
    "You can renew your passport at the civil registry office.",
    "Le service des eaux répond du lundi au vendredi, de 8 h à 17 h.",
)


def _ort_model_type(root: Path) -> str:
    """The optimiser's model type: GPT-2's own, else the generic fusions."""
    return "gpt2" if _config(root).get("model_type") == "gpt2" else "bert"


def _config(root: Path) -> dict:
    try:
        config = json.loads((root / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def optimise_bundle(
    root: Path, dest: Path, *, model_file: str = "model.onnx"
) -> dict[str, Any]:
    """Fuse the graph of the bundle at ``root`` into a new bundle at ``dest``.

    First ``engine.attention.fuse_attention`` (each layer's attention of a
    Llama-shaped causal LM becomes one ``GroupQueryAttention``), then
    ``engine.packing.pack_projections``, then ONNX Runtime's optimiser over
    the result. Returns ``{"status": "fused", "fused_ops": {op: count},
    "model_type", "attention", "packing"}`` (``attention`` and ``packing``:
    those passes' reports, with their counts or the reason they changed
    nothing), or ``{"status": "not_fused", "reason"}`` (nothing written)
    when neither attention pass nor optimiser recognised a pattern.
    """
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    from engine.attention import fuse_attention
    from engine.packing import pack_projections

    model_type = _ort_model_type(root)
    options = FusionOptions(model_type)
    options.enable_layer_norm = False
    options.enable_skip_layer_norm = False
    source = onnx.load(str(root / model_file))
    before = Counter(n.op_type for n in source.graph.node)
    attention = fuse_attention(source, _config(root))
    packing = pack_projections(source)
    logging.disable(logging.WARNING)  # the optimiser's advice on num_heads
    try:
        optimised = optimize_model(
            source, model_type=model_type, num_heads=0,
            hidden_size=0, opt_level=0, optimization_options=options,
        )  # fmt: skip
    finally:
        logging.disable(logging.NOTSET)
    after = Counter(
        n.op_type for n in optimised.model.graph.node if n.domain == "com.microsoft"
    )
    fused = {op: count for op, count in sorted(after.items()) if op not in before}
    if not fused:
        return {
            "status": "not_fused",
            "model_type": model_type,
            "attention": attention,
            "reason": "the optimiser recognised no fusable pattern in this graph "
            f"(attention: {attention['reason']})",
        }
    dest.mkdir(parents=True)
    for path in root.iterdir():
        if path.is_file() and not path.name.startswith(model_file):
            shutil.copy2(path, dest / path.name)
    optimised.save_model_to_file(str(dest / model_file))
    return {
        "status": "fused",
        "fused_ops": fused,
        "model_type": model_type,
        "attention": attention,
        "packing": packing,
    }


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


def _refuse(reason: str, message: str) -> EvaluationFailure:
    return EvaluationFailure("refused", message, reason=reason)


def derive_optimised_in_child(spec: dict) -> dict:
    """Unpack and inspect the parent, fuse, verify and zip (in the child).

    Raises ``EvaluationFailure`` (``refused``) with reason ``not_causal_lm``,
    ``not_fp32``, ``not_fused`` (nothing recognised: no copy is made) or
    ``fusion_not_verified`` (a log-likelihood moved past ``TOLERANCE``).
    """
    from engine import archive, bundle
    from engine.quantise import zip_bundle
    from engine.runtime import load_tokenizer

    work = Path.cwd()
    root = archive.materialise_bundle(Path(spec["bundle_path"]), work / "parent")
    facts = bundle.inspect_bundle(root)
    if facts.kind not in _CAUSAL_KINDS:
        raise _refuse("not_causal_lm", "only causal language models are optimised")
    if facts.quantisation != "fp32":
        raise _refuse("not_fp32", f"the parent's weights are {facts.quantisation}")
    model_file = archive.find_model(root)
    report = optimise_bundle(root, work / "derived", model_file=model_file)
    if report["status"] == "not_fused":
        raise _refuse(
            "not_fused",
            f"{report['reason']} (optimiser model type {report['model_type']}); "
            "no copy of the parent was made",
        )
    tokenizer = load_tokenizer(root / "tokenizer.json")
    encoded = (tokenizer.encode(text).ids for text in VERIFY_TEXTS)
    sequences = [ids for ids in encoded if ids]
    verdict = verify_fused(
        root, work / "derived", sequences, tolerance=spec.get("tolerance", TOLERANCE)
    )
    if not verdict["verified"]:
        raise _refuse(
            "fusion_not_verified",
            f"a log-likelihood moved by {verdict['max_relative_diff']:.3g} "
            f"relative, above the tolerance {verdict['tolerance']:g}",
        )
    zip_bundle(work / "derived", work / OUTPUT_NAME)
    return {
        "model_type": report["model_type"],
        "fused_ops": report["fused_ops"],
        "packing": report["packing"],
        "max_relative_diff": verdict["max_relative_diff"],
        "tolerance": verdict["tolerance"],
        "verified_sequences": len(sequences),
        "output": OUTPUT_NAME,
    }


def derive_optimised_bundle(
    bundle_path: Path,
    dest: Path,
    *,
    memory_bytes: int,
    timeout_s: float,
    tolerance: float = TOLERANCE,
) -> dict:
    """Derive the fused, verified bundle of ``bundle_path`` into ``dest`` (a zip).

    Runs ``derive_optimised_in_child`` in the sandboxed child with these
    limits and ``tolerance`` (relative, per token); returns its report
    (model type, fused ops, largest relative difference). Raises
    ``EvaluationFailure`` as that function does, or for a crash or a limit
    reached.
    """
    spec = {"bundle_path": str(Path(bundle_path).resolve()), "tolerance": tolerance}
    return run_isolated(
        derive_optimised_in_child,
        (spec,),
        memory_bytes=memory_bytes,
        timeout_s=timeout_s,
        inputs=[bundle_path],
        collect={OUTPUT_NAME: Path(dest)},
    )
