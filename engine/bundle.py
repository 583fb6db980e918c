"""Static inspection of ONNX bundles: the graph's safety gate and its facts.

Pure Python, no Django. The registry calls this when an agency uploads a bundle
(after ``engine.archive`` has unpacked it) and the engine calls it again before
any ONNX Runtime session exists, so nothing here runs a model, reads weights
into memory or opens a file outside the bundle root.

External-data locations, byte ranges and tensor sizes are checked from the path
string and ``lstat`` before ``onnx.checker`` runs: these rules are stricter than
the checker's (no links, no hard links, no ``_ORT_MEM_ADDR_``, dims capped,
declared sizes matched) and must hold before any code resolves a location.
Parsing (``onnx.load``) and the ONNX checker are the library's.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import stat
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, numpy_helper

from engine.archive import (
    DEFAULT_LIMITS,
    LOOKS_LIKE,
    WINDOWS_DRIVE,
    BundleError,
    Limits,
    StoredMembers,
    find_model,
    sniff,
)

_PROTOBUF_MAX = 2**31  # protobuf cannot parse a message of 2 GiB or more
_MAX_ELEMENTS = 2**40
_WEIGHT_SLACK = 64 << 10
_ALLOWED_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})
# The com.microsoft kernels a bundle may use, by name: what modelgen.genai and the
# onnxruntime-genai builder emit (GroupQueryAttention, MatMulNBits, the RMS norms,
# rotary), what onnxruntime.transformers' optimizer fuses (attention, layer norms,
# GELU variants, FusedMatMul) and what onnxruntime.quantization writes (dynamic
# int8, QOperator and QDQ formats). Anything else in the domain (beam search and
# sampling loops, tokenizers, paged/sparse attention, MoE, FFT, ...) is refused.
_MS_ALLOWED_OPS = frozenset(
    {
        "GroupQueryAttention", "MultiHeadAttention", "Attention", "RotaryEmbedding",
        "MatMulNBits", "GatherBlockQuantized", "SimplifiedLayerNormalization",
        "SkipSimplifiedLayerNormalization", "SkipLayerNormalization",
        "EmbedLayerNormalization", "Gelu", "FastGelu", "BiasGelu", "QuickGelu",
        "GemmFastGelu", "BiasAdd", "BiasSoftmax", "FusedMatMul",
        "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "DynamicQuantizeLSTM",
        "QAttention", "QGemm", "QEmbedLayerNormalization", "QuantizeLinear",
        "DequantizeLinear", "QLinearAdd", "QLinearMul", "QLinearSigmoid",
        "QLinearLeakyRelu", "QLinearSoftmax", "QLinearConcat", "QLinearWhere",
        "QLinearAveragePool", "QLinearGlobalAveragePool",
    }
)  # fmt: skip
_LM_KINDS = frozenset({"causal_lm_kv", "causal_lm", "seq_classifier"})
_PAST = re.compile(r"past_key_values\.(\d+)\.(key|value)")
_DIGITS = re.compile(r"[0-9]+")
_HASH_CHUNK = 1 << 20
_HASH_HEAD = 64 << 10  # bytes compared first when looking for repeated tensors


def _dtype(enum: str) -> tuple[str, int | None]:
    """(dtype name, bits per element) for a TensorProto enum name; None = strings."""
    fixed = {"FLOAT": ("float32", 32), "DOUBLE": ("float64", 64)}
    fixed |= {"BOOL": ("bool", 8), "STRING": ("string", None)}
    if enum in fixed:
        return fixed[enum]
    bits = re.search(r"\d+", enum)  # INT4, FLOAT8E4M3FN, BFLOAT16, COMPLEX64, ...
    return enum.lower(), int(bits.group()) if bits else None


_DTYPES = {v: _dtype(k) for k, v in TensorProto.DataType.items() if v}
_FLOAT_KINDS = {TensorProto.FLOAT: "fp32", TensorProto.FLOAT16: "fp16"}
_FLOAT_KINDS[TensorProto.BFLOAT16] = "bf16"
_INT_KINDS = {TensorProto.INT8: "int8", TensorProto.UINT8: "int8"}
_INT_KINDS |= {TensorProto.INT4: "int4", TensorProto.UINT4: "int4"}
# com.microsoft ops with packed sub-byte weights: (packed input, zero-point input).
_PACKED_OPS = {"MatMulNBits": (1, 3), "GatherBlockQuantized": (0, 3)}
_QUANT_OPS = {"DequantizeLinear", "QuantizeLinear", "DynamicQuantizeLinear", "QGemm"}
_QUANT_OPS |= {"MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv"}
_QUANT_OPS |= {"MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QAttention"}
_QUANT_OPS |= set(_PACKED_OPS)


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Return the hex SHA-256 of a file, read in chunks so memory stays flat."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # "float32", "int64", "bool", ...; "sequence"/"map" for non-tensors
    shape: list[int | str | None]  # ints, symbolic names, None; [] if rank unknown


@dataclass(frozen=True)
class GraphFacts:
    model_file: str  # relative to the bundle root
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    opsets: dict[str, int]  # "ai.onnx" stands for the default domain ""
    ir_version: int
    # Element count of every initializer (subgraphs and sparse values included,
    # Constant nodes not); MatMulNBits packed weights count as their logical K*N,
    # GatherBlockQuantized uint8 data as unpacked elements; scales and zero points
    # count as stored. Dense matrices holding identical data (same dtype, dims
    # and bytes, e.g. a tied embedding stored twice) count once, unless all
    # their elements hold one value (see _shared_initializers).
    parameter_count: int
    weight_bytes: int  # declared bytes of those initializers as stored
    kind: str  # causal_lm_kv | causal_lm | seq_classifier | generic
    layout: str  # optimum | optimum_merged | genai | plain | classifier | tensor
    num_layers: int | None  # distinct N in past_key_values.N.*
    quantisation: str  # fp32 | fp16 | bf16 | int8 | int4 | mixed
    external_files: list[str]
    has_tokenizer: bool
    has_config: bool
    has_genai_config: bool
    # Names of initializers holding identical data, one list per group; all but
    # the first of each group are left out of parameter_count.
    shared_initializers: list[list[str]] = field(default_factory=list)
    # Cache tensors [past key, past value, present key, present value] of each
    # top-level com.microsoft GroupQueryAttention: the ones its kernel can
    # update in one buffer (engine.decode).
    gqa_cache: list[list[str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Return the facts as plain JSON-serialisable dicts and lists."""
        return asdict(self)


def _graph_error(message: str) -> BundleError:
    return BundleError("graph_too_large", message)


class _Walker:
    """Visits every node once (graphs, subgraphs, functions), enforcing the domain
    allowlist, node cap and nesting cap, and collects tensors and nodes."""

    def __init__(self, model: onnx.ModelProto, limits: Limits):
        self.limits = limits
        self.functions = {(f.domain, f.name, f.overload): f for f in model.functions}
        self.done: dict[tuple, tuple[int, int]] = {}  # key -> (inlined nodes, height)
        self.stack: list[tuple] = []
        self.nodes: list[onnx.NodeProto] = []
        self.tensors: list[tuple[TensorProto, bool]] = []  # (tensor, is_parameter)
        self.sparse_values: set[int] = set()  # ids of sparse initializers' values

    def run(self, model: onnx.ModelProto) -> None:
        for fn in model.functions:
            _check_domain(fn.domain, fn.name)
            for opset in fn.opset_import:
                _check_domain(opset.domain, None)
        for opset in model.opset_import:
            _check_domain(opset.domain, None)
        for domain, name, _ in self.functions:  # a function may not shadow a kernel
            if domain == "com.microsoft" and _shadows_kernel(name):
                _refuse_op(domain, name)
        self.graph(model.graph, 0)
        for key in self.functions:  # uncalled functions must be clean too
            self.function(key, 0)

    def graph(self, graph: onnx.GraphProto, depth: int) -> tuple[int, int]:
        self.tensors += [(t, True) for t in graph.initializer]
        for sparse in graph.sparse_initializer:
            values = sparse.values
            self.tensors += [(values, True), (sparse.indices, False)]
            self.sparse_values.add(id(values))
        return self.body(graph.node, depth)

    def body(self, nodes, depth: int) -> tuple[int, int]:
        """Return (nodes with functions inlined, nesting height) of a node list."""
        if depth > self.limits.max_graph_depth:
            raise self.too_deep()
        count = height = 0
        for node in nodes:
            self.nodes.append(node)
            _check_domain(node.domain, node.op_type)
            count += 1
            key = (node.domain, node.op_type, node.overload)
            if key in self.functions:
                inner, h = self.function(key, depth)
                count, height = count + inner, max(height, h)
            elif node.domain == "com.microsoft" and node.op_type not in _MS_ALLOWED_OPS:
                _refuse_op(node.domain, node.op_type)
            for attr in node.attribute:
                for sub in ([attr.g] if attr.HasField("g") else []) + [*attr.graphs]:
                    inner, h = self.graph(sub, depth + 1)
                    count, height = count + inner, max(height, h + 1)
                self.tensors += [(t, False) for t in _attr_tensors(attr)]
            if count > self.limits.max_nodes:
                limit = self.limits.max_nodes
                raise _graph_error(f"The graph has more than {limit} nodes.")
        return count, height

    def function(self, key: tuple, depth: int) -> tuple[int, int]:
        if key in self.stack:
            message = f"Function {key[0]}::{key[1]} calls itself; recursion is refused."
            raise _graph_error(message)
        if key not in self.done:
            self.stack.append(key)
            fn = self.functions[key]
            for attr in fn.attribute_proto:
                self.tensors += [(t, False) for t in _attr_tensors(attr)]
            inner, h = self.body(fn.node, depth + 1)
            self.stack.pop()
            self.done[key] = (inner, h + 1)
        if depth + self.done[key][1] > self.limits.max_graph_depth:
            raise self.too_deep()
        return self.done[key]

    def too_deep(self) -> BundleError:
        limit = self.limits.max_graph_depth
        return _graph_error(f"Subgraphs and functions nest more than {limit} deep.")


def _check_domain(domain: str, op: str | None) -> None:
    if domain not in _ALLOWED_DOMAINS:
        what = f"operator {domain}::{op}" if op else f"opset {domain!r}"
        message = (
            f"The model uses {what}; only the standard ONNX, ai.onnx.ml and "
            "com.microsoft domains run here, and no custom op library is loaded."
        )
        raise BundleError("op_not_allowed", message)


def _refuse_op(domain: str, op: str) -> None:
    message = (
        f"The model uses operator {domain}::{op}, which is not on the list of "
        "com.microsoft kernels allowed here (the ones the genai builder, the "
        "transformer optimizer and the quantiser emit)."
    )
    raise BundleError("op_not_allowed", message)


def _shadows_kernel(name: str) -> bool:
    """Whether a com.microsoft function named ``name`` would run a refused kernel.

    ONNX Runtime resolves a registered kernel before a model-local function of
    the same name, so such a function would run the kernel, not its body.
    """
    kernels = _ms_kernels()
    return name not in _MS_ALLOWED_OPS and (kernels is None or name in kernels)


@functools.cache
def _ms_kernels() -> frozenset[str] | None:
    """Names of the com.microsoft operators ONNX Runtime registers; None if unknown."""
    import onnxruntime.capi.onnxruntime_pybind11_state as ort_c

    if not hasattr(ort_c, "get_all_operator_schema"):
        return None
    schemas = ort_c.get_all_operator_schema()
    return frozenset(s.name for s in schemas if s.domain == "com.microsoft")


def _attr_tensors(attr: AttributeProto) -> list[TensorProto]:
    tensors = ([attr.t] if attr.HasField("t") else []) + [*attr.tensors]
    sparse = [attr.sparse_tensor] if attr.HasField("sparse_tensor") else []
    for s in [*sparse, *attr.sparse_tensors]:
        tensors += [s.values, s.indices]
    return tensors


def _bundle_files(root: Path, limits: Limits) -> dict[str, int]:
    """Regular files under root (links not followed) -> size."""
    files: dict[str, int] = {}
    seen = 0
    for top, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            seen += 1
            if seen > limits.max_files:
                message = f"The bundle holds more than {limits.max_files} entries."
                raise BundleError("too_many_files", message)
            st = os.lstat(os.path.join(top, name))
            if stat.S_ISREG(st.st_mode):
                files[os.path.relpath(os.path.join(top, name), root)] = st.st_size
    return files


def _unsafe_location(loc: str) -> str | None:
    """Why an external-data location string is refused, decided before any stat."""
    if not loc:
        return "is empty"
    if "\x00" in loc or "\\" in loc:
        return "contains a NUL byte or a backslash"
    if "_ORT_MEM_ADDR_" in loc:
        return "asks ONNX Runtime to read raw process memory"
    if loc.startswith("/") or WINDOWS_DRIVE.match(loc):
        return "is an absolute path"
    return "contains a '..' component" if ".." in loc.split("/") else None


def _external_size(root: Path, t: TensorProto, loc: str) -> int:
    """Size of the external file, after proving it is a plain file inside root."""

    def refuse(why: str) -> BundleError:
        message = (
            f"Tensor {t.name!r} keeps its data in {loc!r}, which {why}; external "
            "data must be a plain relative file inside the bundle."
        )
        return BundleError("external_data_outside", message, member=t.name)

    why = _unsafe_location(loc)
    if why:
        raise refuse(why)
    parts = [p for p in loc.split("/") if p not in ("", ".")]
    if not parts:
        raise refuse("names no file")
    path = root
    for i, part in enumerate(parts):
        path = path / part
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise refuse("does not exist in the bundle") from None
        last = i == len(parts) - 1
        if stat.S_ISLNK(st.st_mode):
            raise refuse("is or goes through a symbolic link")
        if not (stat.S_ISREG if last else stat.S_ISDIR)(st.st_mode):
            raise refuse("is not a regular file in a directory")
        if last and st.st_nlink > 1:
            raise refuse("is a hard link")
    if not os.path.realpath(path).startswith(str(root) + os.sep):
        raise refuse("resolves outside the bundle")
    return st.st_size


def _tensor_size(t: TensorProto, root: Path) -> tuple[int, int, str | None]:
    """Return (elements, declared bytes, external location) after checking dims,
    inline data length and the external file range."""

    def refuse(why: str, code: str = "tensor_too_large") -> BundleError:
        return BundleError(code, f"Tensor {t.name!r} {why}.", member=t.name)

    n = 1
    for d in t.dims:
        if d < 0:
            raise refuse(f"has a negative dimension in {list(t.dims)}")
        n *= d
        if n > _MAX_ELEMENTS or d > _MAX_ELEMENTS:
            raise refuse(f"declares dims {list(t.dims)}, over 2**40 elements")
    if t.data_type not in _DTYPES:
        raise refuse(f"has unknown data type {t.data_type}", "invalid_onnx")
    bits = _DTYPES[t.data_type][1]
    nbytes = (n * (bits or 0) + 7) // 8
    if t.data_location == TensorProto.EXTERNAL:
        if bits is None:
            raise refuse("is a string tensor with external data", "invalid_onnx")
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        size = _external_size(root, t, loc)
        raw_offset, raw_length = info.get("offset", "0"), info.get("length", "")
        if not _DIGITS.fullmatch(raw_offset) or not _DIGITS.fullmatch(
            raw_length or "0"
        ):
            why = "has a malformed or negative external offset or length"
            raise refuse(why, "external_data_range")
        offset = int(raw_offset)
        # A missing length means "to the end of the file", as the onnx loader reads it.
        length = int(raw_length) if raw_length else size - offset
        if length < 0 or offset + length > size:
            why = f"reads bytes {offset}..{offset + length} of {loc!r} ({size} bytes)"
            raise refuse(why, "external_data_range")
        if length != nbytes:
            raise refuse(f"declares {nbytes} bytes but its external length is {length}")
        return n, nbytes, "/".join(p for p in loc.split("/") if p not in ("", "."))
    if t.HasField("raw_data"):
        if bits is None or len(t.raw_data) != nbytes:
            why = f"holds {len(t.raw_data)} raw bytes but dims {list(t.dims)} say"
            raise refuse(f"{why} {nbytes}")
        return n, nbytes, None
    fields = (t.float_data, t.int32_data, t.int64_data, t.double_data, t.uint64_data)
    held = sum(len(f) for f in fields) + len(t.string_data)
    if bits is None:
        want, nbytes = n, sum(len(s) for s in t.string_data)
    elif t.data_type in (TensorProto.COMPLEX64, TensorProto.COMPLEX128):
        want = 2 * n
    else:  # sub-byte types are packed one byte per int32_data entry
        want = n if bits >= 8 else nbytes
    if held != want:
        raise refuse(f"holds {held} values but dims {list(t.dims)} declare {want}")
    return n, nbytes, None


def _account(
    walker: _Walker,
    root: Path,
    files: dict[str, int],
    stored: StoredMembers | None = None,
):
    """Size every tensor; return (parameter_count, weight_bytes, external_files,
    [(parameter tensor, elements, bytes)], shared initializer names).

    parameter_count counts initializers holding identical data once (a tied
    embedding exported twice); weight_bytes stays what is stored."""
    logical: dict[str, int] = {}  # MatMulNBits packed weight -> K*N
    unpack: dict[str, int] = {}  # GatherBlockQuantized uint8 data -> bits
    for node in walker.nodes:
        if node.domain != "com.microsoft" or node.op_type not in _PACKED_OPS:
            continue
        idx = _PACKED_OPS[node.op_type][0]
        if len(node.input) <= idx:
            continue
        attrs = {a.name: a.i for a in node.attribute}
        bits = attrs.get("bits", 4)
        if node.op_type == "MatMulNBits" and attrs.get("K", 0) > 0 < attrs.get("N", 0):
            logical.setdefault(node.input[idx], attrs["K"] * attrs["N"])
        elif node.op_type == "GatherBlockQuantized" and 0 < bits <= 8:
            unpack.setdefault(node.input[idx], bits)
    params = weight = mapped = 0
    externals: set[str] = set()
    sized: list[tuple[TensorProto, int, int]] = []
    dense: list[tuple[TensorProto, int, int, str | None]] = []
    for t, is_param in walker.tensors:
        n, nbytes, loc = _tensor_size(t, root)
        if loc is not None:
            externals.add(loc)
        if loc is not None or t.HasField("raw_data"):
            mapped += nbytes
        if is_param:
            if t.name in unpack and t.data_type == TensorProto.UINT8:
                n_logical = n * (8 // unpack[t.name])
            else:
                n_logical = logical.get(t.name, n)
            params += n_logical
            weight += nbytes
            sized.append((t, n, nbytes))
            if id(t) not in walker.sparse_values:
                dense.append((t, n_logical, nbytes, loc))
    if mapped > sum(files.values()) + _WEIGHT_SLACK:
        message = (
            f"The tensors declare {mapped} bytes of data but the bundle's files hold "
            "fewer; external ranges overlap or sizes are forged."
        )
        raise BundleError("tensor_too_large", message)
    shared, repeated = _shared_initializers(dense, _Data(root, stored))
    return params - repeated, weight, sorted(externals), sized, shared


@dataclass(frozen=True)
class _Data:
    """Where external data is read: the bundle root, or the upload itself for
    the files ``materialise_for_inspection`` left there (``stored``)."""

    root: Path
    stored: StoredMembers | None = None

    def open(self, loc: str) -> tuple[BinaryIO, int]:
        """The file holding ``loc``'s bytes, and where they start in it."""
        member = os.path.normpath(loc)
        if self.stored is not None and member in self.stored.offsets:
            return open(self.stored.archive, "rb"), self.stored.offsets[member]
        return open(self.root / loc, "rb"), 0


def _tensor_chunks(
    t: TensorProto, nbytes: int, loc: str | None, data: _Data, limit: int | None
):
    """Yield a tensor's data in chunks (its first ``limit`` bytes, if given).

    External data is streamed from the range ``_tensor_size`` has already
    vetted, so memory stays flat whatever the tensor's size.
    """
    left = nbytes if limit is None else min(nbytes, limit)
    if loc is not None:
        info = {e.key: e.value for e in t.external_data}
        f, base = data.open(loc)
        with f:
            f.seek(base + int(info.get("offset", "0")))
            while left > 0 and (chunk := f.read(min(_HASH_CHUNK, left))):
                yield chunk
                left -= len(chunk)
    elif t.HasField("raw_data"):
        yield t.raw_data[:left]
    else:
        try:
            yield numpy_helper.to_array(t).tobytes()[:left]
        except (TypeError, ValueError, NotImplementedError):
            # A type NumPy cannot hold: compare the stored values as serialised.
            values = TensorProto()
            values.CopyFrom(t)
            values.ClearField("name")
            values.ClearField("doc_string")
            yield values.SerializeToString(deterministic=True)


def _tensor_digest(
    t: TensorProto, nbytes: int, loc: str | None, data: _Data, limit: int | None
) -> tuple[bytes, bool]:
    """(SHA-256 of the data read, whether every element read has one value)."""
    digest = hashlib.sha256()
    width = max(1, (_DTYPES[t.data_type][1] or 8) // 8)
    first: bytes | None = None
    uniform = True
    for chunk in _tensor_chunks(t, nbytes, loc, data, limit):
        digest.update(chunk)
        if uniform and len(chunk) >= width:
            first = first if first is not None else chunk[:width]
            rows = np.frombuffer(chunk[: len(chunk) // width * width], np.uint8)
            reference = np.frombuffer(first, np.uint8)
            uniform = bool((rows.reshape(-1, width) == reference).all())
    return digest.digest(), uniform


def _shared_initializers(
    dense: list[tuple[TensorProto, int, int, str | None]], data: _Data
) -> tuple[list[list[str]], int]:
    """Groups of initializers holding identical data, and the elements repeated.

    Only matrices (rank 2 and up) alike in dtype, dims and size are compared:
    first by a digest of their leading bytes, then, where those agree, of all
    their bytes. Tensors of one repeated value (norm gains of ones, zeroed
    adapters) are separate parameters that merely start equal and are never
    merged. Each group keeps its first tensor's count; the others are the
    repeated elements.
    """
    alike: dict[tuple, list[tuple[TensorProto, int, int, str | None]]] = {}
    for entry in dense:
        t, n_logical, nbytes, _ = entry
        if len(t.dims) < 2 or _DTYPES[t.data_type][1] is None:
            continue
        key = (t.data_type, tuple(t.dims), n_logical, nbytes)
        alike.setdefault(key, []).append(entry)
    groups: list[list[str]] = []
    repeated = 0
    for candidates in alike.values():
        by_head: dict[bytes, list] = {}
        for t, n, nbytes, loc in candidates if len(candidates) > 1 else ():
            head, _ = _tensor_digest(t, nbytes, loc, data, _HASH_HEAD)
            by_head.setdefault(head, []).append((t, n, nbytes, loc))
        for same_head in by_head.values():
            by_data: dict[bytes, list[tuple[str, int]]] = {}
            for t, n, nbytes, loc in same_head if len(same_head) > 1 else ():
                digest, uniform = _tensor_digest(t, nbytes, loc, data, None)
                if not uniform:
                    by_data.setdefault(digest, []).append((t.name, n))
            for members in by_data.values():
                if len(members) > 1:
                    groups.append([name for name, _ in members])
                    repeated += sum(n for _, n in members[1:])
    return sorted(groups), repeated


def _tensor_info(vi: onnx.ValueInfoProto) -> TensorInfo:
    which = vi.type.WhichOneof("value")
    if which != "tensor_type":
        return TensorInfo(vi.name, (which or "undefined").removesuffix("_type"), [])
    tt = vi.type.tensor_type
    shape: list[int | str | None] = []
    for d in tt.shape.dim if tt.HasField("shape") else []:
        kind = d.WhichOneof("value")
        shape.append(getattr(d, kind) if kind else None)
    return TensorInfo(vi.name, _DTYPES.get(tt.elem_type, ("undefined", 0))[0], shape)


def _classify(inputs, outputs, nodes, has_genai: bool) -> tuple[str, str, int | None]:
    """(kind, layout, num_layers) from the signature; refuses unsupported ones."""
    names = {i.name for i in inputs}
    layers = {int(m.group(1)) for n in names if (m := _PAST.fullmatch(n))}
    if "input_ids" not in names:
        if not inputs:
            message = "The graph has no inputs; expected input_ids or a feature tensor."
            raise BundleError("unsupported_model", message)
        return "generic", "tensor", None
    logits = next((o for o in outputs if o.name == "logits"), None)
    if logits is None:
        message = (
            "The model takes input_ids but has no 'logits' output (it has "
            f"{', '.join(o.name for o in outputs)}); expected logits "
            "[batch, sequence, vocab] or [batch, labels]."
        )
        raise BundleError("unsupported_model", message)
    if layers:
        gqa = any(
            n.domain == "com.microsoft" and n.op_type == "GroupQueryAttention"
            for n in nodes
        )
        if "use_cache_branch" in names:
            return "causal_lm_kv", "optimum_merged", len(layers)
        return "causal_lm_kv", "genai" if has_genai or gqa else "optimum", len(layers)
    if len(logits.shape) == 3:
        return "causal_lm", "plain", None
    if len(logits.shape) == 2:
        return "seq_classifier", "classifier", None
    message = (
        f"'logits' has shape {logits.shape}; expected rank 3 [batch, sequence, "
        "vocab] for a causal LM or rank 2 [batch, labels] for a classifier."
    )
    raise BundleError("unsupported_model", message)


def _quantisation(sized, nodes) -> str:
    """Quantised weights win over float ones; mixed when two schemes or two float
    precisions (each >= 10% of float weight bytes) coexist."""
    quant, floats, packed = set(), Counter(), set()
    has_quant_op = False
    for node in nodes:
        has_quant_op |= node.op_type in _QUANT_OPS
        if node.domain == "com.microsoft" and node.op_type in _PACKED_OPS:
            bits = next((a.i for a in node.attribute if a.name == "bits"), 4)
            quant.add("int4" if bits <= 4 else "int8")
            packed |= {
                node.input[i] for i in _PACKED_OPS[node.op_type] if i < len(node.input)
            }
    for t, n, nbytes in sized:
        if n < 1024 or t.name in packed:  # biases, scales and shapes say little
            continue
        if t.data_type in _INT_KINDS and has_quant_op:
            quant.add(_INT_KINDS[t.data_type])
        elif t.data_type in _FLOAT_KINDS:
            floats[_FLOAT_KINDS[t.data_type]] += nbytes
    if quant:
        return quant.pop() if len(quant) == 1 else "mixed"
    major = {k for k, b in floats.items() if b * 10 >= sum(floats.values())}
    return "mixed" if len(major) > 1 else major.pop() if major else "fp32"


def _load(root: Path, model_file: str) -> onnx.ModelProto:
    """Parse the model file without its external data, refusing non-ONNX files."""
    path = root / model_file

    def refuse(why: str, code: str = "invalid_onnx") -> BundleError:
        return BundleError(code, f"{model_file} {why}.", member=model_file)

    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise refuse("is a symbolic link; ship the file itself", "link_member")
    if not stat.S_ISREG(st.st_mode) or st.st_size >= _PROTOBUF_MAX:
        raise refuse("is not a regular file under 2 GiB; use external data")
    kind = sniff(path)
    if kind is not None:
        raise refuse(f"is not an ONNX protobuf: it looks like {LOOKS_LIKE[kind]}")
    try:
        model = onnx.load(os.fspath(path), format="protobuf", load_external_data=False)
    except Exception as e:
        raise refuse(f"is not an ONNX protobuf: it does not parse ({e})") from e
    if not model.HasField("graph") or model.ir_version <= 0:
        raise refuse("parses but holds no ONNX graph or IR version")
    return model


def inspect_bundle(
    root: Path,
    *,
    limits: Limits = DEFAULT_LIMITS,
    stored: StoredMembers | None = None,
) -> GraphFacts:
    """Validate a bundle directory statically and describe its model.

    Weights are never loaded and no file outside root is opened but the upload
    that ``stored`` (``materialise_for_inspection``) names, whose bytes stand
    in for those files' placeholders: the model is parsed with
    load_external_data=False, and every external-data location is vetted from
    its string and lstat before the path-based onnx.checker runs. Only
    matrices alike in dtype and dims are read, in chunks, to find identical
    ones (counted once in parameter_count, named in shared_initializers),
    within the vetted ranges of their files. Refuses custom domains,
    com.microsoft operators off the allow-list (_MS_ALLOWED_OPS), oversized or
    deeply nested graphs, recursive functions, forged tensor sizes and
    unrecognised signatures. Raises BundleError (missing_model,
    link_member, invalid_onnx, op_not_allowed, graph_too_large,
    external_data_outside, external_data_range, tensor_too_large, too_many_files,
    unsupported_model, missing_tokenizer).
    """
    root = Path(os.path.realpath(root))
    model_file = find_model(root)
    model = _load(root, model_file)
    walker = _Walker(model, limits)
    walker.run(model)
    files = _bundle_files(root, limits)
    params, weight, externals, sized, shared = _account(walker, root, files, stored)
    try:
        onnx.checker.check_model(os.fspath(root / model_file))
    except Exception as e:
        detail = (str(e).strip().splitlines() or [repr(e)])[0][:500]
        message = f"The ONNX checker refused {model_file}: {detail}"
        raise BundleError("invalid_onnx", message, member=model_file) from e
    initializers = {t.name for t in model.graph.initializer}
    inputs = [_tensor_info(v) for v in model.graph.input if v.name not in initializers]
    outputs = [_tensor_info(v) for v in model.graph.output]
    has_genai = "genai_config.json" in files
    kind, layout, layers = _classify(inputs, outputs, walker.nodes, has_genai)
    has_tokenizer = "tokenizer.json" in files
    if kind in _LM_KINDS and not has_tokenizer:
        message = f"This {kind} model needs tokenizer.json next to the model file."
        raise BundleError("missing_tokenizer", message)
    opsets: dict[str, int] = {}
    for o in model.opset_import:
        domain = o.domain or "ai.onnx"
        opsets[domain] = max(opsets.get(domain, 0), o.version)
    return GraphFacts(
        model_file=model_file,
        inputs=inputs,
        outputs=outputs,
        opsets=opsets,
        ir_version=model.ir_version,
        parameter_count=params,
        weight_bytes=weight,
        shared_initializers=shared,
        kind=kind,
        layout=layout,
        num_layers=layers,
        quantisation=_quantisation(sized, walker.nodes),
        external_files=externals,
        has_tokenizer=has_tokenizer,
        has_config="config.json" in files,
        has_genai_config=has_genai,
        gqa_cache=gqa_cache_tensors(model.graph),
    )


def gqa_cache_tensors(graph: onnx.GraphProto) -> list[list[str]]:
    """``[past_key, past_value, present_key, present_value]`` of each top-level
    ``com.microsoft`` ``GroupQueryAttention`` that has all four."""
    quads = []
    for node in graph.node:
        cache = [*node.input[3:5], *node.output[1:3]]
        gqa = (node.domain, node.op_type) == ("com.microsoft", "GroupQueryAttention")
        if gqa and len(cache) == 4 and all(cache):
            quads.append(cache)
    return quads
