"""int4 generation for ``eval_throughput.py``: the engine against genai, same weights.

* the engine runs the platform's own int4 derivation of the benchmark model
  (``engine.quantise``, method ``int4``: ``MatMulNBitsQuantizer``, symmetric,
  block 32, ``accuracy_level`` 4; every weight MatMul, the head included),
  cached as ``<bundle>-int4``;
* onnxruntime-genai runs its own layout (``GroupQueryAttention``, the
  ``genai_gqa`` bundle) with each weight ``MatMul`` replaced by the very
  ``MatMulNBits`` node of the engine's derivation: the same quantised
  weights, scales and kernel attributes, node for node, except that genai's
  packed ``qkv_proj`` gets the q, k and v nodes' blocks and scales side by
  side along N (blockwise quantisation is per output column, so these are
  the bytes quantising the packed weight gives) (``<genai bundle>-int4``);
* the limit: read bandwidth / int4 bytes per token (half a byte per weight
  plus one float32 scale per block of 32).

Greedy batch 1, the fp32 generation workload (``bench.baselines``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from bench.baselines import (
    NEW_TOKENS,
    ensure_quantised,
    rate,
    ratio,
    run_worker,
    source_stamp,
    timed,
)

BLOCK_SIZE = 32
BYTES_PER_WEIGHT = 0.5 + 4 / BLOCK_SIZE


def _packed_source(parts: list, packed: dict, name: str):
    """One ``MatMulNBits`` (and its initializers) of ``parts`` side by side."""
    from onnx import helper, numpy_helper

    attributes = [
        {a.name: helper.get_attribute_value(a) for a in p.attribute} for p in parts
    ]
    if {len(p.input) for p in parts} != {3} or any(
        {**a, "N": 0} != {**attributes[0], "N": 0} for a in attributes
    ):  # weights and scales only (symmetric), the same K, bits and block
        raise RuntimeError(f"the parts of {name} are not quantised alike")
    tensors = [
        numpy_helper.from_array(
            np.concatenate([numpy_helper.to_array(packed[p.input[k]]) for p in parts]),
            name + suffix,
        )
        for k, suffix in ((1, "_Q4"), (2, "_scales"))
    ]
    width = sum(a["N"] for a in attributes)
    node = helper.make_node(
        "MatMulNBits", ["", *(t.name for t in tensors)], [""], **attributes[0]
    )
    node.attribute[[a.name for a in node.attribute].index("N")].i = width
    return node, {t.name: t for t in tensors}


def ensure_genai_int4(int4_bundle: Path, genai_bundle: Path) -> Path:
    """genai's graph with the engine derivation's ``MatMulNBits`` nodes, cached.

    Raises ``RuntimeError`` when the two graphs do not quantise the same
    weights (every derived node must replace exactly one genai ``MatMul``,
    or be one part of its packed ``qkv_proj``).
    """
    import onnx

    from modelgen.genai import qkv_parts

    dest = genai_bundle.with_name(genai_bundle.name + "-int4")
    marker = dest / "bench_int4.json"
    stamp = source_stamp(int4_bundle, genai_bundle)
    record = {"source": int4_bundle.name, "stamp": stamp}
    if marker.is_file() and json.loads(marker.read_text()) == record:
        return dest
    derived = onnx.load(str(int4_bundle / "model.onnx"))
    nbits = {
        node.input[1].removesuffix("_Q4"): node
        for node in derived.graph.node
        if node.op_type == "MatMulNBits"
    }
    packed = {t.name: t for t in derived.graph.initializer}
    model = onnx.load(str(genai_bundle / "model.onnx"))
    swapped: set[str] = set()
    for node in model.graph.node:
        weight = node.input[1] if node.op_type == "MatMul" else ""
        parts = [p for p in qkv_parts(weight) or () if p in nbits]
        if weight in nbits:
            source = nbits[weight]
            swapped.add(weight)
        elif parts and len(parts) == len(qkv_parts(weight)):
            source, tensors = _packed_source([nbits[p] for p in parts], packed, weight)
            packed.update(tensors)
            swapped.update(parts)
        else:
            continue
        node.op_type, node.domain = "MatMulNBits", "com.microsoft"
        del node.input[1:]
        node.input.extend(source.input[1:])
        node.attribute.extend(source.attribute)
    if swapped != set(nbits):
        raise RuntimeError(f"int4 weights not in genai's graph: {set(nbits) - swapped}")
    read = {name for node in model.graph.node for name in node.input}
    kept = [t for t in model.graph.initializer if t.name in read]
    missing = read - {t.name for t in kept}
    kept += [packed[name] for name in sorted(missing) if name in packed]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for path in genai_bundle.iterdir():
        if path.is_file() and not path.name.startswith(("model.onnx", "bench_")):
            shutil.copy2(path, dest / path.name)
    onnx.save_model(model, str(dest / "model.onnx"))
    marker.write_text(json.dumps(record) + "\n")
    return dest


def _engine_generation(bundle: Path, settings, repeats: int, work: dict) -> dict:
    from engine.runtime import load_model

    model = load_model(bundle, settings=settings)

    def generate() -> list[int]:
        return model.generate(work["prompt"], max_new_tokens=NEW_TOKENS, stop_ids=())

    return {"generation_times_s": timed(generate, repeats), "tokens": generate()}


def int4_figures(phases, bundles: dict, settings, args, work: dict, genai_python):
    """Engine and genai generation times on the same int4 weights, or why not."""
    int4 = ensure_quantised(bundles["optimum"], "int4")
    runs: dict = {
        "bundle": str(int4),
        "engine": phases.measure(
            "engine_int4",
            lambda: _engine_generation(int4, settings, args.repeats, work),
        ),
        "genai": None,
        "reason": "onnxruntime_genai not available",
    }
    if genai_python and "genai_gqa" in bundles:
        genai_int4 = ensure_genai_int4(int4, bundles["genai_gqa"])
        try:
            runs["genai"] = phases.measure(
                "genai_int4",
                lambda: run_worker(genai_python, "genai", genai_int4, args),
            )
        except RuntimeError as exc:
            runs["reason"] = str(exc)
    return runs


def int4_summary(runs: dict, bandwidth_gb_s: float, matmul_params: int) -> dict:
    """int4 generation: engine and genai tokens/s, the ratio, the limit."""
    int4 = runs["int4"]
    engine = rate(NEW_TOKENS, int4["engine"]["generation_times_s"])
    genai = int4["genai"]
    genai_rate = rate(NEW_TOKENS, genai and genai["generation_times_s"])
    limit = bandwidth_gb_s * 1e9 / (BYTES_PER_WEIGHT * matmul_params)
    return {
        "generation_tokens_per_s": engine,
        "genai_generation_tokens_per_s": genai_rate,
        "ratio_vs_genai": ratio(engine, genai_rate),
        "generation_limit_tokens_per_s": limit,
        "generation_fraction_of_limit": engine / limit,
        "genai_fraction_of_limit": ratio(genai_rate, limit),
        "genai_matches_engine": (
            genai["generated_tokens"] == int4["engine"]["tokens"] if genai else None
        ),
        "matches_fp32_engine": int4["engine"]["tokens"]
        == runs["engine"]["generated_tokens"],
        "bytes_per_generated_token": BYTES_PER_WEIGHT * matmul_params,
        "derivation": f"engine.quantise int4 (block {BLOCK_SIZE}, symmetric)",
        "genai_status": None if genai else int4["reason"],
        "times_s": {
            "engine": int4["engine"]["generation_times_s"],
            "genai": genai["generation_times_s"] if genai else None,
        },
    }


def int4_lines(r: dict) -> list[str]:
    """The table's int4 generation line."""
    int4 = r["int4"]

    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    return [
        f"int4 generation (MatMulNBits): engine "
        f"{int4['generation_tokens_per_s']:.1f} tok/s, genai "
        f"{fmt(int4['genai_generation_tokens_per_s'], '.1f')} (engine "
        f"{fmt(int4['ratio_vs_genai'], '.2f')}x, target 1.0); limit "
        f"{int4['generation_limit_tokens_per_s']:.1f}: engine "
        f"{int4['generation_fraction_of_limit']:.2f}, genai "
        f"{fmt(int4['genai_fraction_of_limit'], '.2f')}; greedy tokens equal: "
        f"{int4['genai_matches_engine']}"
    ]
