"""Derive a quantised bundle from an fp32 one with ONNX Runtime's own tools.

Three methods, each recorded with its settings on the derived version:

``dynamic-int8``
    ``onnxruntime.quantization.quantize_dynamic``: int8 weights, activations
    quantised at run time (``DynamicQuantizeLinear`` + ``MatMulInteger``).
``static-int8``
    ``quantize_static`` in the QDQ format, calibrated (min-max) on the texts
    of a dataset version: the fp32 model scores each text once and the feeds
    it was given are what the ``CalibrationDataReader`` yields.
``int4``
    Weight-only 4-bit blocks (``MatMulNBitsQuantizer``: ``MatMulNBits``),
    symmetric, ``block_size`` columns per scale.

Only the weight MatMuls (second input an initializer) are quantised: the
attention products of activations stay in float, as ONNX Runtime's own
transformer recipes do.

The parent bundle is hostile input, so ``derive_bundle`` runs the whole
derivation in the sandboxed child (``engine.sandbox.run_isolated``) with the
caller's memory and time limits; the child unpacks and inspects the parent
(``engine.bundle``), refuses a parent that is not fp32, quantises, and
writes the derived bundle as one zip into its scratch folder, which the
parent collects. The zip is hostile too: the registry inspects and
self-tests it like any upload.
"""

from __future__ import annotations

import json
import logging
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.sandbox import EvaluationFailure, run_isolated

METHODS = ("dynamic-int8", "static-int8", "int4")
BLOCK_SIZES = (16, 32, 64, 128, 256)
DEFAULT_BLOCK_SIZE = 32
CALIBRATION_MAX_TEXTS = 64
CALIBRATION_MAX_TOKENS = 128
OUTPUT_NAME = "derived.zip"
_QUANTISABLE_FROM = frozenset({"fp32"})
# Above this the graph keeps its weights in an external data file.
_EXTERNAL_DATA_BYTES = 1 << 30


class QuantiseError(Exception):
    """A derivation that cannot be made; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Derivation:
    """What to derive: the method and its settings (JSON-able)."""

    method: str
    block_size: int | None = None

    def settings(self) -> dict[str, Any]:
        """The settings recorded on the derived version."""
        if self.method == "dynamic-int8":
            return {
                "method": self.method,
                "weight_type": "QInt8",
                "per_channel": False,
                "reduce_range": True,
            }
        if self.method == "static-int8":
            return {
                "method": self.method,
                "format": "QDQ",
                "activation_type": "QUInt8",
                "weight_type": "QInt8",
                "reduce_range": True,
                "calibration": "MinMax",
                "max_texts": CALIBRATION_MAX_TEXTS,
                "max_tokens": CALIBRATION_MAX_TOKENS,
            }
        return {
            "method": self.method,
            "bits": 4,
            "block_size": self.block_size or DEFAULT_BLOCK_SIZE,
            "is_symmetric": True,
            "accuracy_level": 4,
        }

    def check(self) -> None:
        """Raise ``QuantiseError`` for an unknown method or block size."""
        if self.method not in METHODS:
            raise QuantiseError("unknown_method", f"unknown method '{self.method}'")
        if self.method == "int4" and (self.block_size or DEFAULT_BLOCK_SIZE) not in (
            BLOCK_SIZES
        ):
            raise QuantiseError(
                "bad_block_size", f"block size must be one of {list(BLOCK_SIZES)}"
            )


def calibration_texts(path: Path, limit: int = CALIBRATION_MAX_TEXTS) -> list[str]:
    """The texts of a JSON-lines dataset file (``text``, else ``context``/``prompt``).

    Raises ``QuantiseError`` (``calibration_empty``) when no line has one.
    """
    texts: list[str] = []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            if len(texts) >= limit:
                break
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict):
                continue
            for field in ("text", "context", "prompt"):
                value = record.get(field)
                if isinstance(value, str) and value.strip():
                    texts.append(value)
                    break
    if not texts:
        raise QuantiseError(
            "calibration_empty", "the calibration dataset holds no text records"
        )
    return texts


def weight_matmuls(model: Any) -> list[str]:
    """Names of the MatMul nodes whose second input is an initializer."""
    weights = {t.name for t in model.graph.initializer}
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul" and len(node.input) > 1 and node.input[1] in weights
    ]


def _named(model: Any) -> Any:
    """Give every unnamed node a unique name (the quantisers select by name)."""
    used = {node.name for node in model.graph.node if node.name}
    for index, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_q{index}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)
    return model


class _Recorder:
    """A session proxy that keeps a copy of every feed it runs."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.feeds: list[dict] = []

    def run(self, wanted, feed, *args, **kwargs):
        self.feeds.append({name: value.copy() for name, value in feed.items()})
        return self._session.run(wanted, feed, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def calibration_feeds(root: Path, texts: list[str]) -> list[dict]:
    """The feeds the fp32 model at ``root`` is given while scoring ``texts``."""
    from engine.causal_lm import CausalLM
    from engine.runtime import load_model

    model = load_model(root)
    if not isinstance(model, CausalLM):
        raise QuantiseError(
            "unsupported_model", "static calibration needs a causal language model"
        )
    recorder = _Recorder(model.session)
    model.session = recorder
    for text in texts:
        ids = model.encode(text)[:CALIBRATION_MAX_TOKENS]
        if ids:
            model.logits([ids])
    return recorder.feeds


class _Reader:
    """``CalibrationDataReader`` over recorded feeds."""

    def __init__(self, feeds: list[dict]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict | None:
        return next(self._feeds, None)


def _save(model: Any, path: Path) -> None:
    import onnx

    external = model.ByteSize() > _EXTERNAL_DATA_BYTES
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=external,
        all_tensors_to_one_file=True,
        location=f"{path.name}.data",
    )


def quantise_graph(
    source: Path, dest: Path, derivation: Derivation, *, feeds: list[dict] | None
) -> None:
    """Write the quantised graph of ``source`` (an fp32 ``.onnx``) to ``dest``."""
    # ONNX Runtime logs a pre-processing hint for vision models on every call.
    logging.disable(logging.WARNING)
    try:
        _quantise_graph(source, dest, derivation, feeds=feeds)
    finally:
        logging.disable(logging.NOTSET)


def _quantise_graph(
    source: Path, dest: Path, derivation: Derivation, *, feeds: list[dict] | None
) -> None:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    model = _named(onnx.load(str(source)))
    nodes = weight_matmuls(model)
    if not nodes:
        raise QuantiseError("nothing_to_quantise", "the graph has no weight MatMul")
    if derivation.method == "int4":
        from onnxruntime.quantization.matmul_nbits_quantizer import (
            MatMulNBitsQuantizer,
        )

        settings = derivation.settings()
        quantiser = MatMulNBitsQuantizer(
            model,
            bits=4,
            block_size=settings["block_size"],
            is_symmetric=True,
            accuracy_level=settings["accuracy_level"],
            nodes_to_include=nodes,
        )
        quantiser.process()
        _save(quantiser.model.model, dest)
        return
    # 7-bit weights (``reduce_range``): on x86 CPUs without VNNI (AVX2 only)
    # ONNX Runtime multiplies uint8 activations by int8 weights with
    # VPMADDUBSW, whose int16 pair sums saturate with full 8-bit weights (ONNX
    # Runtime's quantisation guide); measured on an AVX2 EPYC, a cached step
    # then moved 4x further from the full recompute and failed the self-test.
    # Seven bits keep every pair sum in range, so the derived graph computes
    # the same on every worker's processor, for one bit of weight precision.
    reduce_range = derivation.settings()["reduce_range"]
    named = dest.with_name("named-fp32.onnx")
    _save(model, named)
    large = named.stat().st_size > _EXTERNAL_DATA_BYTES
    if derivation.method == "dynamic-int8":
        quantize_dynamic(
            named, dest, weight_type=QuantType.QInt8, nodes_to_quantize=nodes,
            use_external_data_format=large, reduce_range=reduce_range,
        )  # fmt: skip
    else:
        reader = _Reader(feeds or [])
        CalibrationDataReader.register(_Reader)
        quantize_static(
            named, dest, reader, quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_quantize=nodes, use_external_data_format=large,
            reduce_range=reduce_range,
        )  # fmt: skip
    for leftover in named.parent.glob("named-fp32.onnx*"):
        leftover.unlink()


def zip_bundle(root: Path, dest: Path) -> None:
    """Store the bundle folder as one zip (stored, not deflated: weights)."""
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED) as archive:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(root).as_posix())


def derive_in_child(spec: dict) -> dict:
    """Unpack, inspect, quantise and zip (runs inside the sandboxed child)."""
    try:
        return _derive(spec)
    except QuantiseError as exc:
        raise EvaluationFailure(
            "refused", f"{exc.code}: {exc.message}", reason=exc.code
        ) from None


def _derive(spec: dict) -> dict:
    from engine import archive, bundle

    derivation = Derivation(spec["method"], spec.get("block_size"))
    derivation.check()
    work = Path.cwd()
    root = archive.materialise_bundle(Path(spec["bundle_path"]), work / "parent")
    facts = bundle.inspect_bundle(root)
    if facts.quantisation not in _QUANTISABLE_FROM:
        raise QuantiseError(
            "not_fp32", f"the parent's weights are {facts.quantisation}, not fp32"
        )
    out = work / "derived"
    out.mkdir()
    model_file = archive.find_model(root)
    for path in root.iterdir():
        if path.is_file() and not path.name.startswith(model_file):
            shutil.copy2(path, out / path.name)
    feeds = None
    if derivation.method == "static-int8":
        texts = calibration_texts(Path(spec["calibration_path"]))
        feeds = calibration_feeds(root, texts)
    quantise_graph(root / model_file, out / model_file, derivation, feeds=feeds)
    zip_bundle(out, work / OUTPUT_NAME)
    return {
        "settings": derivation.settings(),
        "parent_quantisation": facts.quantisation,
        "calibration_batches": len(feeds) if feeds is not None else None,
        "output": OUTPUT_NAME,
    }


def derive_bundle(
    bundle_path: Path,
    dest: Path,
    derivation: Derivation,
    *,
    calibration_path: Path | None = None,
    memory_bytes: int,
    timeout_s: float,
) -> dict:
    """Derive ``derivation`` from the bundle at ``bundle_path`` into ``dest`` (a zip).

    Runs in the sandboxed child; returns its report (settings, figures).
    Raises ``QuantiseError`` for a refused request and ``EvaluationFailure``
    for a refused parent (``refused``, the reason says why: ``not_fp32``,
    ``calibration_empty``, a bundle code...), a crash, or the memory or time
    limit.
    """
    derivation.check()
    if derivation.method == "static-int8" and calibration_path is None:
        raise QuantiseError("calibration_required", "static-int8 needs a dataset")
    inputs = [bundle_path, *([calibration_path] if calibration_path else [])]
    spec = {
        "bundle_path": str(Path(bundle_path).resolve()),
        "calibration_path": str(calibration_path) if calibration_path else None,
        "method": derivation.method,
        "block_size": derivation.block_size,
    }
    return run_isolated(
        derive_in_child,
        (spec,),
        memory_bytes=memory_bytes,
        timeout_s=timeout_s,
        inputs=inputs,
        collect={OUTPUT_NAME: Path(dest)},
    )
