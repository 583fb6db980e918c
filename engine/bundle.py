"""Bundle intake: safe archive extraction and static inspection of ONNX bundles.

Pure Python, no Django. The registry calls this when an agency uploads a bundle and
the engine calls it again before any ONNX Runtime session exists, so nothing here
runs a model, reads weights into memory or opens a file outside the bundle root.

Written by hand only where no library does the job:

* Archive handling. The stdlib's tarfile ``data`` filter is not used because links
  must be refused outright rather than checked against the destination, and zipfile
  has no filter at all. Both formats are pre-scanned in full, then extracted member
  by member with an own byte counter; ``extractall`` is never called.
* External-data locations, byte ranges and tensor sizes are checked from the path
  string and ``lstat`` before ``onnx.checker`` runs: these rules are stricter than the
  checker's (no links, no hard links, no ``_ORT_MEM_ADDR_``, dims capped, declared
  sizes matched) and must hold before any code resolves a location.

Parsing (``onnx.load``), the ONNX checker and gzip/zip/tar decoding are the libraries'.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import hashlib
import lzma
import os
import re
import shutil
import stat
import struct
import tarfile
import zipfile
import zlib
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from zipfile import ZIP_BZIP2, ZIP_DEFLATED, ZIP_LZMA, ZIP_STORED

import onnx
from onnx import AttributeProto, TensorProto


class BundleError(Exception):
    """A bundle was refused. `code` is machine-readable, str(e) is a sentence a person
    can act on; `member` names the archive member or tensor at fault, if any."""

    def __init__(self, code: str, message: str, *, member: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.member = member


@dataclass(frozen=True)
class Limits:
    max_files: int = 256
    max_total_bytes: int = 8 * 1024**3  # unpacked
    max_ratio: float = 100.0  # unpacked / packed, per member and for the whole archive
    max_nodes: int = 200_000
    max_graph_depth: int = 8  # nested subgraphs (If/Loop/Scan) and function nesting


_DEFAULT_LIMITS = Limits()
_CHUNK = 1 << 20
_PROTOBUF_MAX = 2**31  # protobuf cannot parse a message of 2 GiB or more
_MAX_ELEMENTS = 2**40
# Below this many unpacked bytes a member (or archive) is not checked for ratio:
# tiny JSON files compress far beyond 100x, and max_files of them stay harmless.
_RATIO_FLOOR = 1 << 20
# tarfile reads a pax or GNU long-name block in a single read(); bound it.
_MAX_HEADER_READ = 16 << 20
# A zip central directory is parsed into memory whole; bound it by max_files.
_CD_BYTES_PER_ENTRY = 4096
_MAX_NAME_BYTES = 1024
_WEIGHT_SLACK = 64 << 10
_ARCHIVES = ("zip", "gzip", "tar")
_ZIP_METHODS = {ZIP_STORED, ZIP_DEFLATED, ZIP_BZIP2, ZIP_LZMA}
_ALLOWED_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})
_MODEL_FILES = ("model.onnx", "decoder_model_merged.onnx", "decoder_model.onnx")
_LM_KINDS = frozenset({"causal_lm_kv", "causal_lm", "seq_classifier"})
_PAST = re.compile(r"past_key_values\.(\d+)\.(key|value)")
_DRIVE = re.compile(r"^[A-Za-z]:")
_DIGITS = re.compile(r"[0-9]+")
_LOOKS = {
    "zip": "a ZIP archive (a PyTorch checkpoint is one)",
    "gzip": "a gzip file",
    "tar": "a tar archive",
    "pickle": "a Python pickle",
    "html": "an HTML page",
    "json": "a JSON document",
    "safetensors": "a safetensors file",
}
# Member kinds an archive may hold but that are never extracted.
_MEMBER_REFUSALS = {
    "link": ("link_member", "is a link; links are never extracted"),
    "special": ("special_member", "is a device, FIFO or other special file"),
    "encrypted": ("special_member", "is encrypted; upload an unencrypted archive"),
    "method": ("not_an_archive", "uses an unsupported compression method"),
}
# Decoder errors: the archive is damaged or hostile, not the server at fault.
_CORRUPT = (zipfile.BadZipFile, tarfile.TarError, gzip.BadGzipFile, EOFError)
_CORRUPT += (zlib.error, lzma.LZMAError, RecursionError, NotImplementedError)


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


# --------------------------------------------------------------------- archives


def _sniff(path: Path) -> str | None:
    """Name the container format from magic bytes, or None for anything else."""
    with open(path, "rb") as f:
        head = f.read(520)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head[257:262] == b"ustar":
        return "tar"
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    # Leading whitespace or a BOM can never start an ONNX protobuf (bad wire types).
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"<"):
        return "html"
    if text.startswith((b"{", b"[")):
        return "json"
    # safetensors: u64 little-endian header length, then the JSON header itself.
    return "safetensors" if head[4:8] == bytes(4) and head[8:10] == b'{"' else None


def _clean_name(raw: str, is_dir: bool) -> str:
    """Normalise a member name to 'a/b/c', or refuse it with unsafe_path."""
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    encoded = [len(p.encode("utf-8", "surrogateescape")) for p in parts]
    why = None
    if not raw:
        why = "has an empty name"
    elif any(ord(c) < 32 for c in raw):
        why = "contains a NUL or control character"
    elif "\\" in raw:
        why = "contains a backslash"
    elif raw.startswith("/") or _DRIVE.match(raw):
        why = "is an absolute path"
    elif ".." in parts:
        why = "contains a '..' component"
    elif sum(encoded) + len(parts) > _MAX_NAME_BYTES or max(encoded, default=0) > 255:
        why = "is too long"
    elif not parts and not is_dir:
        why = "does not name a file"
    if why:
        message = f"Archive member {raw!r} {why}; use plain relative names."
        raise BundleError("unsafe_path", message, member=raw)
    return "/".join(parts)


@dataclass
class _Entry:
    name: str
    is_dir: bool
    size: int
    ref: object  # the ZipInfo or TarInfo to extract from


class _Prescan:
    """Collects members one at a time and refuses as soon as a rule is broken."""

    def __init__(self, limits: Limits, packed_size: int):
        self.limits, self.packed = limits, max(packed_size, 1)
        self.entries: list[_Entry] = []
        self.count = self.total = 0
        self.names: set[str] = set()
        self.files: set[str] = set()
        self.dirs: set[str] = set()

    def add(self, raw: str, kind: str, size: int, packed: int | None, ref) -> None:
        """kind is "file", "dir" or a key of _MEMBER_REFUSALS."""
        lim = self.limits
        self.count += 1
        if self.count > lim.max_files:
            message = f"The archive holds more than {lim.max_files} members."
            raise BundleError("too_many_files", message)
        if kind in _MEMBER_REFUSALS:
            code, why = _MEMBER_REFUSALS[kind]
            raise BundleError(code, f"Archive member {raw!r} {why}.", member=raw)
        is_dir = kind == "dir"
        name = _clean_name(raw, is_dir)
        if not name:  # the archive's own root entry, e.g. "./"
            return
        parts = name.split("/")
        parents = {"/".join(parts[:i]) for i in range(1, len(parts))}
        clash = name in self.names or (not is_dir and name in self.dirs)
        if clash or parents & self.files:
            message = f"Archive member {raw!r} appears twice or clashes with a file."
            raise BundleError("unsafe_path", message, member=raw)
        self.names.add(name)
        (self.dirs if is_dir else self.files).add(name)
        self.dirs |= parents
        size = 0 if is_dir else size
        if size < 0:
            message = f"Member {raw!r} has a negative size; the archive is corrupt."
            raise BundleError("not_an_archive", message, member=raw)
        self.total += size
        if self.total > lim.max_total_bytes:
            message = f"The archive unpacks to more than {lim.max_total_bytes} bytes."
            raise BundleError("too_large", message, member=raw)
        member_bomb = packed is not None and size > lim.max_ratio * max(packed, 1)
        whole_bomb = self.total > lim.max_ratio * self.packed
        if (member_bomb and size > _RATIO_FLOOR) or (
            whole_bomb and self.total > _RATIO_FLOOR
        ):
            message = (
                f"Member {raw!r} or the whole archive expands more than "
                f"{lim.max_ratio:g} times; this looks like a compression bomb."
            )
            raise BundleError("compression_ratio", message, member=raw)
        self.entries.append(_Entry(name, is_dir, size, ref))


def _check_zip_directory(archive: Path, size: int, limits: Limits) -> None:
    """Refuse a central directory larger than max_files allows, before zipfile
    builds one object per entry from it."""
    bad = BundleError("not_an_archive", "The ZIP end-of-directory record is damaged.")
    with open(archive, "rb") as f:
        f.seek(max(0, size - 65557))
        tail = f.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < 22:
            raise bad
        entries, cd_size = struct.unpack_from("<HI", tail, at + 10)
        if entries == 0xFFFF or cd_size == 0xFFFFFFFF:  # ZIP64: real values elsewhere
            loc = at - 20
            if loc < 0 or tail[loc : loc + 4] != b"PK\x06\x07":
                raise bad
            f.seek(struct.unpack_from("<Q", tail, loc + 8)[0])
            record = f.read(56)
            if len(record) < 56 or record[:4] != b"PK\x06\x06":
                raise bad
            entries, cd_size = struct.unpack_from("<QQ", record, 32)
    if entries > limits.max_files or cd_size > limits.max_files * _CD_BYTES_PER_ENTRY:
        message = f"The archive lists more than {limits.max_files} members."
        raise BundleError("too_many_files", message)


def _zip_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "special"
    if info.flag_bits & 0x1:
        return "encrypted"
    if info.compress_type not in _ZIP_METHODS:
        return "method"
    # ZipInfo.is_dir() raises IndexError on an empty name.
    return "dir" if info.filename.endswith("/") or stat.S_ISDIR(mode) else "file"


def _scan_zip(archive: Path, limits: Limits, packed: int):
    _check_zip_directory(archive, packed, limits)
    zf = zipfile.ZipFile(archive)
    scan = _Prescan(limits, packed)
    try:
        for info in zf.infolist():
            size, packed_size = info.file_size, info.compress_size
            scan.add(info.orig_filename, _zip_kind(info), size, packed_size, info)
    except BaseException:
        zf.close()
        raise
    return zf, scan


class _BoundedStream:
    """Read-only, seekable view of a (decompressed) tar stream that refuses to move
    past `cap` bytes or to serve one oversized read, so no header can balloon."""

    def __init__(self, raw, cap: int):
        self.raw, self.cap = raw, cap

    def _refuse(self) -> BundleError:
        message = "The tar stream runs past the sizes its headers declare."
        return BundleError("too_large", message)

    def read(self, n: int = -1) -> bytes:
        if n is None or not 0 <= n <= _MAX_HEADER_READ:
            raise self._refuse()
        if self.raw.tell() + n > self.cap:
            raise self._refuse()
        return self.raw.read(n)

    def seek(self, pos: int, whence: int = 0) -> int:
        target = pos if whence == 0 else self.raw.tell() + pos
        if whence not in (0, 1) or target > self.cap:
            raise self._refuse()
        return self.raw.seek(target)

    def tell(self) -> int:
        return self.raw.tell()

    def close(self) -> None:
        self.raw.close()


def _tar_kind(m: tarfile.TarInfo) -> str:
    if m.issym() or m.islnk():
        return "link"
    if m.issparse() or not (m.isreg() or m.isdir()):
        return "special"
    return "dir" if m.isdir() else "file"


def _scan_tar(archive: Path, kind: str, limits: Limits, packed: int):
    opener = gzip.open if kind == "gzip" else open
    cap = min(limits.max_total_bytes, max(limits.max_ratio * packed, _RATIO_FLOOR))
    cap = int(cap) + (limits.max_files + 2) * 4096 + _MAX_HEADER_READ
    stream = _BoundedStream(opener(archive, "rb"), cap)
    try:
        # A TarFile never closes a passed-in fileobj; the stream is closed instead.
        tf = tarfile.open(fileobj=stream, mode="r:")  # noqa: SIM115
        scan = _Prescan(limits, packed)
        while (m := tf.next()) is not None:
            scan.add(m.name, _tar_kind(m), m.size, None, m)
    except BaseException:
        stream.close()
        raise
    return tf, stream, scan


class _Writer:
    """Creates files and directories under dest only, counting every byte, and can
    undo all of it."""

    def __init__(self, dest: Path, limits: Limits):
        self.dest, self.limits = dest, limits
        self.files: list[str] = []
        self.paths: list[Path] = []
        self.dirs: list[Path] = []
        self.total = 0

    def mkdir(self, name: str) -> None:
        path = self.dest
        for part in name.split("/"):
            path = path / part
            if path not in self.dirs:
                os.mkdir(path, 0o755)
                self.dirs.append(path)
                os.chmod(path, 0o755)  # the umask must not decide the mode

    def write(self, name: str, size: int, src) -> None:
        if "/" in name:
            self.mkdir(name.rpartition("/")[0])
        path = self.dest / name
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o644)
        self.paths.append(path)
        written = 0
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o644)
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                self.total += len(chunk)
                if written > size or self.total > self.limits.max_total_bytes:
                    message = f"Member {name!r} unpacks past its declared size."
                    raise BundleError("too_large", message, member=name)
                out.write(chunk)
        if written != size:
            message = f"Member {name!r} holds {written} bytes but declares {size}."
            raise BundleError("not_an_archive", message, member=name)
        self.files.append(name)

    def undo(self) -> None:
        for path in reversed(self.paths):
            path.unlink(missing_ok=True)
        for path in reversed(self.dirs):
            path.rmdir()


@contextlib.contextmanager
def _writing_into(dest: Path, limits: Limits):
    """Yield a _Writer for dest, which must be new or empty; on any error remove
    what was written (and dest itself, if it was created here)."""
    created = not os.path.lexists(dest)
    if created:
        dest.mkdir(mode=0o755, parents=True)
    elif dest.is_symlink() or not dest.is_dir() or any(dest.iterdir()):
        raise FileExistsError(f"{dest} must be a new or empty directory")
    writer = _Writer(dest, limits)
    try:
        yield writer
    except BaseException:
        writer.undo()
        if created:
            dest.rmdir()
        raise


def extract_archive(
    archive: Path, dest: Path, *, limits: Limits = _DEFAULT_LIMITS
) -> list[str]:
    """Extract a zip or tar(.gz) archive into dest and return the file names written.

    The format is sniffed from magic bytes. Every member is checked before anything
    is written (names, links, special files, duplicates, count, declared size and
    ratio); extraction then counts actual bytes, creates files with O_EXCL and mode
    0o644 and directories with 0o755, under dest only. Nested archives stay plain
    files. dest must be new or empty. Raises BundleError (unsafe_path, link_member,
    special_member, too_many_files, too_large, compression_ratio, not_an_archive),
    after removing everything written.
    """
    archive, dest = Path(archive), Path(dest)
    kind = _sniff(archive)
    if kind not in _ARCHIVES:
        message = "The upload is not a ZIP, tar or tar.gz archive."
        raise BundleError("not_an_archive", message)
    packed = archive.stat().st_size
    handles = []
    with _writing_into(dest, limits) as writer:
        try:
            if kind == "zip":
                zf, scan = _scan_zip(archive, limits, packed)
                handles.append(zf)
            else:
                tf, stream, scan = _scan_tar(archive, kind, limits, packed)
                handles.append(stream)
            for entry in scan.entries:
                if entry.is_dir:
                    writer.mkdir(entry.name)
                    continue
                if kind == "zip":
                    # zipfile stops at the declared size and then fails the CRC;
                    # widen its window so the own counter sees any excess.
                    info = copy.copy(entry.ref)
                    info.file_size = entry.size + _CHUNK + 1
                    src = zf.open(info)
                else:
                    src = tf.extractfile(entry.ref)
                with src:
                    writer.write(entry.name, entry.size, src)
        except _CORRUPT as e:
            message = f"The archive could not be read ({e}); re-create it."
            raise BundleError("not_an_archive", message) from e
        finally:
            for handle in handles:
                handle.close()
    return writer.files


# ----------------------------------------------------------------------- bundles


def _find_model(root: Path) -> str:
    for name in _MODEL_FILES:
        if os.path.lexists(root / name):
            return name
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    deeper = [
        os.path.relpath(os.path.join(top, f), root)
        for top, _, names in os.walk(root)
        for f in sorted(names)
        if f.endswith(".onnx")
    ]
    message = (
        f"The bundle root has no {' or '.join(_MODEL_FILES)}; it holds "
        f"{', '.join(found[:20]) or 'nothing'} (.onnx files: "
        f"{', '.join(deeper[:10]) or 'none'}). Put model.onnx at the top of the "
        "archive or in its single top-level folder."
    )
    raise BundleError("missing_model", message)


def _empty(dest: Path) -> None:
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def materialise_bundle(
    upload: Path, dest: Path, *, limits: Limits = _DEFAULT_LIMITS
) -> Path:
    """Turn an upload (one .onnx file, or a zip/tar(.gz) bundle) into a directory and
    return the bundle root.

    Archives are recognised by magic bytes and go through extract_archive; if they
    hold exactly one top-level directory, that directory is the root. Anything else
    is copied to dest/model.onnx unless it is recognisably not ONNX. The root must
    contain model.onnx, decoder_model_merged.onnx or decoder_model.onnx (first wins).
    dest must be new or empty and is left empty on refusal. Raises BundleError
    (invalid_onnx, missing_model, too_large and every extract_archive code).
    """
    upload, dest = Path(upload), Path(dest)
    kind = _sniff(upload)
    if kind in _ARCHIVES:
        extract_archive(upload, dest, limits=limits)
    elif kind is not None:
        message = f"Not an ONNX protobuf: the upload looks like {_LOOKS[kind]}."
        raise BundleError("invalid_onnx", message)
    else:
        size = upload.stat().st_size
        if size > limits.max_total_bytes:
            message = f"The upload exceeds {limits.max_total_bytes} bytes."
            raise BundleError("too_large", message)
        with _writing_into(dest, limits) as writer, open(upload, "rb") as src:
            writer.write("model.onnx", size, src)
    children = list(dest.iterdir())
    root = dest
    if len(children) == 1 and children[0].is_dir() and not children[0].is_symlink():
        root = children[0]
    try:
        _find_model(root)
    except BundleError:
        _empty(dest)
        raise
    return root


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
    # count as stored.
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

    def run(self, model: onnx.ModelProto) -> None:
        for fn in model.functions:
            _check_domain(fn.domain, fn.name)
            for opset in fn.opset_import:
                _check_domain(opset.domain, None)
        for opset in model.opset_import:
            _check_domain(opset.domain, None)
        self.graph(model.graph, 0)
        for key in self.functions:  # uncalled functions must be clean too
            self.function(key, 0)

    def graph(self, graph: onnx.GraphProto, depth: int) -> tuple[int, int]:
        self.tensors += [(t, True) for t in graph.initializer]
        for sparse in graph.sparse_initializer:
            self.tensors += [(sparse.values, True), (sparse.indices, False)]
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
    if loc.startswith("/") or _DRIVE.match(loc):
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


def _account(walker: _Walker, root: Path, files: dict[str, int]):
    """Size every tensor; return (parameter_count, weight_bytes, external_files,
    [(parameter tensor, elements, bytes)])."""
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
    if mapped > sum(files.values()) + _WEIGHT_SLACK:
        message = (
            f"The tensors declare {mapped} bytes of data but the bundle's files hold "
            "fewer; external ranges overlap or sizes are forged."
        )
        raise BundleError("tensor_too_large", message)
    return params, weight, sorted(externals), sized


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
    kind = _sniff(path)
    if kind is not None:
        raise refuse(f"is not an ONNX protobuf: it looks like {_LOOKS[kind]}")
    try:
        model = onnx.load(os.fspath(path), format="protobuf", load_external_data=False)
    except Exception as e:
        raise refuse(f"is not an ONNX protobuf: it does not parse ({e})") from e
    if not model.HasField("graph") or model.ir_version <= 0:
        raise refuse("parses but holds no ONNX graph or IR version")
    return model


def inspect_bundle(root: Path, *, limits: Limits = _DEFAULT_LIMITS) -> GraphFacts:
    """Validate a bundle directory statically and describe its model.

    Weights are never read and no file outside root is opened: the model is parsed
    with load_external_data=False, and every external-data location is vetted from
    its string and lstat before the path-based onnx.checker runs. Refuses custom
    domains, oversized or deeply nested graphs, recursive functions, forged tensor
    sizes and unrecognised signatures. Raises BundleError (missing_model,
    link_member, invalid_onnx, op_not_allowed, graph_too_large,
    external_data_outside, external_data_range, tensor_too_large, too_many_files,
    unsupported_model, missing_tokenizer).
    """
    root = Path(os.path.realpath(root))
    model_file = _find_model(root)
    model = _load(root, model_file)
    walker = _Walker(model, limits)
    walker.run(model)
    files = _bundle_files(root, limits)
    params, weight, externals, sized = _account(walker, root, files)
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
        kind=kind,
        layout=layout,
        num_layers=layers,
        quantisation=_quantisation(sized, walker.nodes),
        external_files=externals,
        has_tokenizer=has_tokenizer,
        has_config="config.json" in files,
        has_genai_config=has_genai,
    )
