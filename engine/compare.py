"""Comparing a derived ONNX bundle with its base: graph, weights, tokenizer.

Pure Python, no Django. ``compare_bundles`` describes how a derived bundle
differs from the bundle it names as its base, and ``classify`` turns that
description into modification classes:

- the graph: operator counts, the signature (inputs and outputs with their
  dtypes and shapes), opsets and the static facts of ``engine.bundle``;
- the weights: for every parameter tensor matched by name, the relative
  change ``||derived - base|| / ||base||`` (Frobenius norms, float64),
  computed by streaming both tensors in element-aligned chunks from their
  files, so memory holds a chunk of each, never a model. A base tensor that
  a quantiser replaced (``W`` -> ``W_quantized``, ``W_scale``,
  ``W_zero_point``, ONNX Runtime's naming) is compared with the dequantised
  values ``(q - zero_point) * scale``; one a block quantiser packed under the
  same name (``MatMulNBits``, ``GatherBlockQuantized``) is listed as packed,
  not compared. Unmatched tensors are listed;
- the tokenizer: ``tokenizer.json`` read as JSON (vocabulary, merges,
  normalizer, pre-tokenizer, post-processor, decoder, added tokens).

Both bundles are hostile until proven otherwise: each passes
``inspect_bundle`` (the same gate as an upload) before a byte of weight is
read, and the service runs the comparison through ``run_compare``, in the
sandboxed child of ``engine.sandbox`` with a memory and a time limit.

Classes, most substantial first (``PRECEDENCE``): ``architecture_change``
(the signature, the operators beyond what quantisation rewrites, a weight's
shape, or the set of weight tensors differ), ``tokenizer_change``,
``quantisation`` (the weights' numeric scheme differs), ``fine_tune`` (the
same architecture with changed weight values) and ``unchanged``. Several may
hold; ``primary`` is the first that holds in that order.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from engine.archive import DEFAULT_LIMITS, BundleError, Limits
from engine.bundle import (
    _DTYPES,
    _PACKED_OPS,
    _QUANT_OPS,
    _load,
    _tensor_size,
    _Walker,
    inspect_bundle,
)
from engine.sandbox import EvaluationFailure, run_isolated

COMPARE_VERSION = 1
PRECEDENCE = (
    "architecture_change",
    "tokenizer_change",
    "quantisation",
    "fine_tune",
    "unchanged",
)
CHUNK_ELEMENTS = 1 << 18  # elements read from each tensor at a time (2 MiB as float64)
_LISTED_TENSORS = 200
_TOKENIZER_MAX_BYTES = 256 << 20
# Ops a quantiser rewrites into their quantised form, and the rescaling ops it
# adds: when the derived weights are quantised, these are not an architecture
# change.
_QUANTISED_FORM = {
    "MatMulInteger": "MatMul",
    "QLinearMatMul": "MatMul",
    "DynamicQuantizeMatMul": "MatMul",
    "MatMulNBits": "MatMul",
    "MatMulIntegerToFloat": "MatMul",
    "ConvInteger": "Conv",
    "QLinearConv": "Conv",
    "QGemm": "Gemm",
    "GatherBlockQuantized": "Gather",
    "QAttention": "Attention",
}
_QUANTISER_OPS = frozenset(
    {"DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear"}
)
_RESCALING_OPS = frozenset({"Mul", "Cast", "Add"})
_FACT_KEYS = (
    "kind",
    "layout",
    "num_layers",
    "parameter_count",
    "weight_bytes",
    "quantisation",
)
_QUANT_SUFFIXES = ("_quantized", "_scale", "_zero_point")


class CompareFailure(Exception):
    """The comparison could not run or was refused; ``code`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- reading one bundle -------------------------------------------------------


class _Side:
    """One bundle: its facts, its operators and its parameter tensors by name."""

    def __init__(self, root: Path, limits: Limits) -> None:
        self.root = Path(os.path.realpath(root))
        self.facts = inspect_bundle(self.root, limits=limits)
        model = _load(self.root, self.facts.model_file)
        walker = _Walker(model, limits)
        walker.run(model)
        self.ops = Counter(
            f"{node.domain or 'ai.onnx'}:{node.op_type}" for node in walker.nodes
        )
        self.dequantise_axis = {
            node.input[0]: next((a.i for a in node.attribute if a.name == "axis"), 1)
            for node in walker.nodes
            if node.op_type == "DequantizeLinear" and node.input
        }
        # Weights packed by a block quantiser (same name, packed shape), and
        # every initializer a quantised operator reads (scales, zero points).
        self.packed = {
            node.input[_PACKED_OPS[node.op_type][0]]
            for node in walker.nodes
            if node.op_type in _PACKED_OPS
            and len(node.input) > _PACKED_OPS[node.op_type][0]
        }
        self.quant_inputs = {
            name
            for node in walker.nodes
            if node.op_type in _QUANT_OPS
            for name in node.input
        }
        self.tensors: dict[str, tuple[TensorProto, int, int, str | None]] = {}
        for tensor, is_param in walker.tensors:
            if is_param and tensor.name and tensor.name not in self.tensors:
                n, nbytes, loc = _tensor_size(tensor, self.root)
                self.tensors[tensor.name] = (tensor, n, nbytes, loc)
        self._model = model  # keeps the inline tensors alive; external data stays out

    def chunks(self, name: str, count: int) -> Iterator[np.ndarray]:
        """The tensor's elements as float64 arrays of at most ``count`` each."""
        tensor, _, nbytes, loc = self.tensors[name]
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
        if loc is not None:
            info = {e.key: e.value for e in tensor.external_data}
            with open(self.root / loc, "rb") as f:
                f.seek(int(info.get("offset", "0")))
                left = nbytes
                while left > 0:
                    data = f.read(min(count * dtype.itemsize, left))
                    if not data:
                        break
                    left -= len(data)
                    yield np.frombuffer(data, dtype).astype(np.float64)
        elif tensor.HasField("raw_data"):
            view = memoryview(tensor.raw_data)
            step = count * dtype.itemsize
            for start in range(0, nbytes, step):
                part = view[start : start + step]
                yield np.frombuffer(part, dtype).astype(np.float64)
        else:
            values = numpy_helper.to_array(tensor).reshape(-1).astype(np.float64)
            for start in range(0, values.size, count):
                yield values[start : start + count]

    def small(self, name: str) -> np.ndarray:
        """A small tensor (a scale, a zero point) read whole."""
        parts = list(self.chunks(name, CHUNK_ELEMENTS))
        return np.concatenate(parts) if parts else np.zeros(0)

    def dims(self, name: str) -> list[int]:
        return [int(d) for d in self.tensors[name][0].dims]

    def dtype(self, name: str) -> str:
        return _DTYPES[self.tensors[name][0].data_type][0]

    def numeric(self, name: str) -> bool:
        """Whole-byte numbers (sub-byte and string tensors are not compared)."""
        bits = _DTYPES[self.tensors[name][0].data_type][1]
        return bits is not None and bits >= 8


# --- weights ------------------------------------------------------------------


def _sums(base: _Side, name: str, derived_chunks: Iterator[np.ndarray]):
    """(sum of base squares, sum of squared differences) over aligned chunks."""
    base_sq = diff_sq = 0.0
    for a, b in zip(base.chunks(name, CHUNK_ELEMENTS), derived_chunks, strict=True):
        a64 = np.asarray(a, dtype=np.float64)
        base_sq += float(np.dot(a64, a64))
        delta = a64 - b
        diff_sq += float(np.dot(delta, delta))
    return base_sq, diff_sq


def _dequantised(derived: _Side, name: str) -> Iterator[np.ndarray]:
    """The dequantised values of ``name``'s quantised replacement, in chunks."""
    quantised = f"{name}_quantized"
    scale = derived.small(f"{name}_scale")
    zero_name = f"{name}_zero_point"
    zero = derived.small(zero_name) if zero_name in derived.tensors else np.zeros(1)
    dims = derived.dims(quantised)
    axis = derived.dequantise_axis.get(quantised, 1)
    per_channel = scale.size > 1 and dims
    inner = math.prod(dims[axis + 1 :]) if per_channel else 1
    start = 0
    for q in derived.chunks(quantised, CHUNK_ELEMENTS):
        if per_channel:
            channel = (np.arange(start, start + q.size) // inner) % dims[axis]
            yield (q - zero[channel % zero.size]) * scale[channel]
        else:
            yield (q - zero[0]) * scale[0]
        start += q.size


def _relative(base_sq: float, diff_sq: float) -> float | None:
    if base_sq == 0.0:
        return 0.0 if diff_sq == 0.0 else None
    return math.sqrt(diff_sq) / math.sqrt(base_sq)


def _quantised_pair(base: _Side, derived: _Side, name: str) -> bool:
    return (
        name not in derived.tensors
        and f"{name}_quantized" in derived.tensors
        and f"{name}_scale" in derived.tensors
    )


def compare_weights(base: _Side, derived: _Side) -> dict[str, Any]:
    """Per-tensor relative change of the matched tensors; the unmatched listed."""
    rows: list[dict[str, Any]] = []
    shape_changes: list[dict[str, Any]] = []
    total_base = total_diff = 0.0
    used: set[str] = set()
    unmatched_base: list[str] = []
    packed: list[dict[str, Any]] = []
    for name in base.tensors:
        if name in derived.packed and name not in base.packed:
            used.add(name)
            packed.append(
                {"name": name, "base": base.dims(name), "derived": derived.dims(name)}
            )
            continue
        if name in derived.tensors:
            how, other = "name", name
        elif _quantised_pair(base, derived, name):
            how, other = "dequantised", f"{name}_quantized"
            used |= {f"{name}{suffix}" for suffix in _QUANT_SUFFIXES}
        else:
            unmatched_base.append(name)
            continue
        used.add(other)
        if base.dims(name) != derived.dims(other):
            shape_changes.append(
                {"name": name, "base": base.dims(name), "derived": derived.dims(other)}
            )
            continue
        if not (base.numeric(name) and derived.numeric(other)):
            continue
        chunks = (
            _dequantised(derived, name)
            if how == "dequantised"
            else derived.chunks(name, CHUNK_ELEMENTS)
        )
        base_sq, diff_sq = _sums(base, name, chunks)
        total_base, total_diff = total_base + base_sq, total_diff + diff_sq
        rows.append(
            {
                "name": name,
                "matched_by": how,
                "elements": base.tensors[name][1],
                "base_dtype": base.dtype(name),
                "derived_dtype": derived.dtype(other),
                "base_norm": math.sqrt(base_sq),
                "diff_norm": math.sqrt(diff_sq),
                "relative_change": _relative(base_sq, diff_sq),
            }
        )
    # Scales and zero points a quantised operator reads are not new weights.
    unmatched_derived = [
        n
        for n in derived.tensors
        if n not in used and not (n in derived.quant_inputs and n not in base.tensors)
    ]
    summary = _weights_summary(
        rows, shape_changes, unmatched_base, unmatched_derived, total_base, total_diff
    )
    summary["tensors_packed"] = len(packed)
    summary["packed"] = packed[:_LISTED_TENSORS]
    return summary


def _weights_summary(
    rows, shape_changes, unmatched_base, unmatched_derived, total_base, total_diff
) -> dict[str, Any]:
    def change(row: dict[str, Any]) -> float:
        value = row["relative_change"]
        return math.inf if value is None else value

    by_name = [r for r in rows if r["matched_by"] == "name"]
    dequantised = [r for r in rows if r["matched_by"] == "dequantised"]
    finite = [change(r) for r in rows if r["relative_change"] is not None]
    listed = sorted(rows, key=change, reverse=True)[:_LISTED_TENSORS]
    return {
        "tensors_compared": len(rows),
        "tensors_dequantised": len(dequantised),
        "tensors_changed": sum(1 for r in rows if change(r) > 0.0),
        "values_changed_by_name": sum(1 for r in by_name if change(r) > 0.0),
        "max_relative_change": max(finite) if finite else None,
        "max_relative_change_by_name": max(
            (change(r) for r in by_name if r["relative_change"] is not None),
            default=None,
        ),
        "overall_relative_change": _relative(total_base, total_diff),
        "elements_compared": sum(r["elements"] for r in rows),
        "shape_changes": shape_changes,
        "unmatched_base": sorted(unmatched_base),
        "unmatched_derived": sorted(unmatched_derived),
        "tensors": listed,
    }


# --- graph --------------------------------------------------------------------


def _signature(side: _Side) -> dict[str, Any]:
    facts = side.facts.to_dict()
    return {"inputs": facts["inputs"], "outputs": facts["outputs"]}


def _normalised_ops(ops: Counter, quantised: bool) -> Counter:
    if not quantised:
        return Counter(ops)
    out: Counter = Counter()
    for key, count in ops.items():
        op = key.partition(":")[2]
        if op in _QUANTISER_OPS:
            continue
        if op in _QUANTISED_FORM:
            key = f"ai.onnx:{_QUANTISED_FORM[op]}"
        out[key] += count
    return out


def compare_graphs(base: _Side, derived: _Side, quantised: bool) -> dict[str, Any]:
    """Operator counts, signature and facts of both graphs, and what differs."""
    base_ops = _normalised_ops(base.ops, quantised)
    derived_ops = _normalised_ops(derived.ops, quantised)
    added = {
        k: derived_ops[k] - base_ops[k]
        for k in derived_ops
        if derived_ops[k] > base_ops[k]
    }
    removed = {
        k: base_ops[k] - derived_ops[k]
        for k in base_ops
        if base_ops[k] > derived_ops[k]
    }
    if quantised:  # the rescaling a quantiser adds is not a new architecture
        added = {
            k: v for k, v in added.items() if k.partition(":")[2] not in _RESCALING_OPS
        }
    facts = {
        key: [getattr(base.facts, key), getattr(derived.facts, key)]
        for key in _FACT_KEYS
    }
    return {
        "base_ops": dict(sorted(base.ops.items())),
        "derived_ops": dict(sorted(derived.ops.items())),
        "ops_added": dict(sorted(added.items())),
        "ops_removed": dict(sorted(removed.items())),
        "signature_changed": _signature(base) != _signature(derived),
        "base_signature": _signature(base),
        "derived_signature": _signature(derived),
        "opsets": [base.facts.opsets, derived.facts.opsets],
        "facts": facts,
    }


# --- tokenizer ----------------------------------------------------------------


def _read_tokenizer(root: Path) -> dict[str, Any] | None:
    path = root / "tokenizer.json"
    if not path.is_file() or path.is_symlink():
        return None
    if path.stat().st_size > _TOKENIZER_MAX_BYTES:
        raise BundleError("tokenizer_too_large", "tokenizer.json is over 256 MiB.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError("invalid_tokenizer", f"tokenizer.json: {exc}") from None
    return data if isinstance(data, dict) else {}


def _vocab(tokenizer: dict[str, Any]) -> dict[str, int]:
    vocab = (tokenizer.get("model") or {}).get("vocab") or {}
    if isinstance(vocab, list):  # Unigram: [[piece, score], ...]
        return {str(item[0]): i for i, item in enumerate(vocab) if item}
    return {str(k): int(v) for k, v in vocab.items()} if isinstance(vocab, dict) else {}


def compare_tokenizers(base_root: Path, derived_root: Path) -> dict[str, Any]:
    """What differs between the two ``tokenizer.json`` files, if any."""
    base, derived = _read_tokenizer(base_root), _read_tokenizer(derived_root)
    if base is None and derived is None:
        return {"present": [False, False], "changed": False}
    if base is None or derived is None:
        return {"present": [base is not None, derived is not None], "changed": True}
    va, vb = _vocab(base), _vocab(derived)
    merges_a = (base.get("model") or {}).get("merges") or []
    merges_b = (derived.get("model") or {}).get("merges") or []
    parts = ("normalizer", "pre_tokenizer", "post_processor", "decoder")
    report: dict[str, Any] = {
        "present": [True, True],
        "model_type": [
            (base.get("model") or {}).get("type"),
            (derived.get("model") or {}).get("type"),
        ],
        "vocab_size": [len(va), len(vb)],
        "tokens_added": len(vb.keys() - va.keys()),
        "tokens_removed": len(va.keys() - vb.keys()),
        "tokens_renumbered": sum(1 for t in va.keys() & vb.keys() if va[t] != vb[t]),
        "merges": [len(merges_a), len(merges_b)],
        "merges_changed": merges_a != merges_b,
        "components_changed": [p for p in parts if base.get(p) != derived.get(p)],
        "added_tokens_changed": base.get("added_tokens") != derived.get("added_tokens"),
    }
    report["changed"] = bool(
        report["model_type"][0] != report["model_type"][1]
        or report["tokens_added"]
        or report["tokens_removed"]
        or report["tokens_renumbered"]
        or report["merges_changed"]
        or report["components_changed"]
        or report["added_tokens_changed"]
    )
    return report


# --- classification -----------------------------------------------------------


def _architecture_reasons(graph: dict[str, Any], weights: dict[str, Any]) -> list[str]:
    reasons = []
    if graph["signature_changed"]:
        reasons.append("the inputs or outputs differ")
    if graph["ops_added"] or graph["ops_removed"]:
        reasons.append(
            f"operators added {graph['ops_added']}, removed {graph['ops_removed']}"
        )
    if weights["shape_changes"]:
        reasons.append(f"{len(weights['shape_changes'])} weight tensors changed shape")
    if weights["unmatched_base"] or weights["unmatched_derived"]:
        reasons.append(
            f"{len(weights['unmatched_base'])} base tensors have no match, "
            f"{len(weights['unmatched_derived'])} derived tensors are new"
        )
    return reasons


def classify(report: dict[str, Any]) -> dict[str, Any]:
    """The classes that hold (in ``PRECEDENCE`` order), the primary one, reasons."""
    graph, weights = report["graph"], report["weights"]
    base_scheme, derived_scheme = graph["facts"]["quantisation"]
    reasons = {
        "architecture_change": _architecture_reasons(graph, weights),
        "tokenizer_change": (
            ["tokenizer.json differs"] if report["tokenizer"]["changed"] else []
        ),
        "quantisation": (
            [f"weights {base_scheme} -> {derived_scheme}"]
            if base_scheme != derived_scheme
            or weights["tensors_dequantised"]
            or weights.get("tensors_packed")
            else []
        ),
        "fine_tune": (
            [f"{weights['values_changed_by_name']} tensors changed value"]
            if weights["values_changed_by_name"]
            else []
        ),
    }
    classes = [name for name in PRECEDENCE[:-1] if reasons[name]] or ["unchanged"]
    return {
        "classes": classes,
        "primary": classes[0],
        "reasons": {k: v for k, v in reasons.items() if v},
    }


def compare_bundles(
    base_root: str | Path,
    derived_root: str | Path,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """Compare an unpacked derived bundle with its unpacked base; plain JSON.

    Both pass ``inspect_bundle`` first (raises its ``BundleError``). Returns
    ``{version, graph, weights, tokenizer, classes, primary, reasons}``.
    """
    base = _Side(Path(base_root), limits)
    derived = _Side(Path(derived_root), limits)
    weights = compare_weights(base, derived)
    quantised = (
        base.facts.quantisation != derived.facts.quantisation
        or weights["tensors_dequantised"] > 0
        or weights["tensors_packed"] > 0
    )
    report = {
        "version": COMPARE_VERSION,
        "graph": compare_graphs(base, derived, quantised),
        "weights": weights,
        "tokenizer": compare_tokenizers(base.root, derived.root),
    }
    return {**report, **classify(report)}


def compare_in_child(base_root: str, derived_root: str) -> dict[str, Any]:
    """Run in the sandboxed child: the comparison, or the refusal as data."""
    try:
        return {"ok": True, **compare_bundles(base_root, derived_root)}
    except BundleError as exc:
        return {"ok": False, "code": exc.code, "message": exc.message}


def run_compare(
    base_root: str | Path,
    derived_root: str | Path,
    *,
    memory_bytes: int,
    timeout_s: float,
) -> dict[str, Any]:
    """Compare two unpacked bundles in a limited, confined child.

    Raises ``CompareFailure`` when a bundle is refused (the engine's code) or
    the child ran out of memory or time, crashed or was refused.
    """
    base, derived = str(Path(base_root).resolve()), str(Path(derived_root).resolve())
    try:
        result = run_isolated(
            compare_in_child,
            (base, derived),
            memory_bytes=memory_bytes,
            timeout_s=timeout_s,
            inputs=(base, derived),
        )
    except EvaluationFailure as exc:
        raise CompareFailure(exc.code, exc.message) from None
    if not isinstance(result, dict) or not result.get("ok"):
        result = result if isinstance(result, dict) else {}
        raise CompareFailure(
            str(result.get("code") or "compare_failed"),
            str(result.get("message") or "The comparison returned nothing."),
        )
    result.pop("ok")
    return result
