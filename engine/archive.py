"""Safe extraction of uploaded bundles: zip, tar and tar.gz archives, or one file.

Pure Python, no Django. The registry calls this when an agency uploads a bundle
and the engine's sandboxed child calls it again before inspecting the graph
(``engine.bundle``), so nothing here runs a model or writes outside ``dest``.

Written by hand only where no library does the job: the stdlib's tarfile ``data``
filter is not used because links must be refused outright rather than checked
against the destination, and zipfile has no filter at all. Both formats are
pre-scanned in full, then extracted member by member with an own byte counter;
``extractall`` is never called. gzip/zip/tar decoding is the libraries'.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import lzma
import os
import re
import shutil
import stat
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from zipfile import ZIP_BZIP2, ZIP_DEFLATED, ZIP_LZMA, ZIP_STORED


class BundleError(Exception):
    """A bundle was refused. `code` is machine-readable, str(e) is a sentence a person
    can act on; `member` names the archive member or tensor at fault, if any."""

    def __init__(self, code: str, message: str, *, member: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.member = member


@dataclass(frozen=True)
class StoredMembers:
    """Stored zip members that ``materialise_for_inspection`` left in the archive.

    Each has a placeholder of its size in the bundle directory (a sparse file,
    nothing written); ``offsets`` maps its path, relative to the bundle root,
    to where its bytes start in ``archive``. Their CRC-32 has been checked.
    """

    archive: Path
    offsets: dict[str, int]


@dataclass(frozen=True)
class Limits:
    """Caps on what an archive may unpack to and on the graph inspected from it."""

    max_files: int = 256
    max_total_bytes: int = 8 * 1024**3  # unpacked
    max_ratio: float = 100.0  # unpacked / packed, per member and for the whole archive
    max_nodes: int = 200_000
    max_graph_depth: int = 8  # nested subgraphs (If/Loop/Scan) and function nesting


DEFAULT_LIMITS = Limits()
_CHUNK = 1 << 20
# Stored (uncompressed) zip members are copied in blocks of this size.
_STORED_BLOCK = 256 << 10
_ZIP_LOCAL_HEADER = 30
# Below this many unpacked bytes a member (or archive) is not checked for ratio:
# tiny JSON files compress far beyond 100x, and max_files of them stay harmless.
_RATIO_FLOOR = 1 << 20
# tarfile reads a pax or GNU long-name block in a single read(); bound it.
_MAX_HEADER_READ = 16 << 20
# A zip central directory is parsed into memory whole; bound it by max_files.
_CD_BYTES_PER_ENTRY = 4096
_MAX_NAME_BYTES = 1024
_ARCHIVES = ("zip", "gzip", "tar")
_ZIP_METHODS = {ZIP_STORED, ZIP_DEFLATED, ZIP_BZIP2, ZIP_LZMA}
MODEL_FILES = ("model.onnx", "decoder_model_merged.onnx", "decoder_model.onnx")
# ``materialise_for_inspection`` leaves stored zip members at least this big
# in their archive, except graphs and JSON, which inspection parses.
_IN_PLACE_MIN_BYTES = 1 << 20
_PARSED_SUFFIXES = (".onnx", ".json")
WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")
LOOKS_LIKE = {
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


def sniff(path: Path) -> str | None:
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
    elif raw.startswith("/") or WINDOWS_DRIVE.match(raw):
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


def _stored_offset(fd: int, info: zipfile.ZipInfo) -> int:
    """Where a stored member's bytes start, after its local header.

    The header is checked as ``ZipFile.open`` does (signature, the same name
    as in the central directory, no patched or encrypted data); raises
    ``zipfile.BadZipFile`` otherwise.
    """
    header = os.pread(fd, _ZIP_LOCAL_HEADER, info.header_offset)
    if len(header) != _ZIP_LOCAL_HEADER or header[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"Bad local header for {info.orig_filename!r}")
    (flags,) = struct.unpack_from("<H", header, 6)
    name_len, extra_len = struct.unpack_from("<HH", header, 26)
    start = info.header_offset + _ZIP_LOCAL_HEADER
    raw = os.pread(fd, name_len, start)
    name = raw.decode("utf-8" if flags & 0x800 else "cp437", "replace")
    if (flags | info.flag_bits) & 0x61 or name != info.orig_filename:
        raise zipfile.BadZipFile(f"Bad local header for {info.orig_filename!r}")
    return start + name_len + extra_len


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

    def __init__(self, dest: Path, limits: Limits, in_place: dict | None = None):
        self.dest, self.limits = dest, limits
        # Member name -> archive offset of stored members left in the archive
        # (``materialise_for_inspection``); None: every member is copied.
        self.in_place = in_place
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

    def _create(self, name: str) -> int:
        if "/" in name:
            self.mkdir(name.rpartition("/")[0])
        path = self.dest / name
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o644)
        self.paths.append(path)
        return fd

    def write(self, name: str, size: int, src) -> None:
        fd = self._create(name)
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

    def copy_stored(self, name: str, size: int, src: int, offset: int, crc: int):
        """Copy a stored zip member: ``size`` bytes of ``src`` from ``offset``.

        One reused buffer, no per-chunk allocation; the CRC-32 is checked as
        zipfile would. With ``in_place``, a member of at least
        ``_IN_PLACE_MIN_BYTES`` that inspection does not parse is read for its
        CRC only and written as a placeholder of its size. Raises BundleError
        (too_large, not_an_archive).
        """
        fd = self._create(name)
        placeholder = (
            self.in_place is not None
            and size >= _IN_PLACE_MIN_BYTES
            and not name.endswith(_PARSED_SUFFIXES)
        )
        with os.fdopen(fd, "wb", buffering=0) as out:
            os.fchmod(fd, 0o644)
            for view in self._stored_blocks(name, size, src, offset, crc):
                while view and not placeholder:
                    view = view[out.write(view) :]
            if placeholder:
                out.truncate(size)
                self.in_place[name] = offset
        self.files.append(name)

    def _stored_blocks(self, name: str, size: int, src: int, offset: int, crc: int):
        """The member's bytes in blocks of one reused buffer, counted against
        the limits; raises BundleError after the last when the size or the
        CRC-32 is wrong."""
        buffer = memoryview(bytearray(min(_STORED_BLOCK, max(size, 1))))
        done, check = 0, 0
        while done < size:
            n = os.preadv(src, [buffer[: size - done]], offset + done)
            if not n:
                break
            check = zlib.crc32(buffer[:n], check)
            done += n
            self.total += n
            if self.total > self.limits.max_total_bytes:
                message = f"Member {name!r} unpacks past its declared size."
                raise BundleError("too_large", message, member=name)
            yield buffer[:n]
        if done != size or check != crc:
            message = f"Member {name!r} is truncated or fails its CRC-32 check."
            raise BundleError("not_an_archive", message, member=name)

    def undo(self) -> None:
        for path in reversed(self.paths):
            path.unlink(missing_ok=True)
        for path in reversed(self.dirs):
            path.rmdir()


@contextlib.contextmanager
def _writing_into(dest: Path, limits: Limits, in_place: dict | None = None):
    """Yield a _Writer for dest, which must be new or empty; on any error remove
    what was written (and dest itself, if it was created here)."""
    created = not os.path.lexists(dest)
    if created:
        dest.mkdir(mode=0o755, parents=True)
    elif dest.is_symlink() or not dest.is_dir() or any(dest.iterdir()):
        raise FileExistsError(f"{dest} must be a new or empty directory")
    writer = _Writer(dest, limits, in_place)
    try:
        yield writer
    except BaseException:
        writer.undo()
        if created:
            dest.rmdir()
        raise


def extract_archive(
    archive: Path,
    dest: Path,
    *,
    limits: Limits = DEFAULT_LIMITS,
    in_place: dict[str, int] | None = None,
) -> list[str]:
    """Extract a zip or tar(.gz) archive into dest and return the file names written.

    The format is sniffed from magic bytes. Every member is checked before anything
    is written (names, links, special files, duplicates, count, declared size and
    ratio); extraction then counts actual bytes, creates files with O_EXCL and mode
    0o644 and directories with 0o755, under dest only. Nested archives stay plain
    files. dest must be new or empty. Given ``in_place`` (a dict it fills),
    large stored zip members become placeholders (``_Writer.copy_stored``).
    Raises BundleError (unsafe_path, link_member,
    special_member, too_many_files, too_large, compression_ratio, not_an_archive),
    after removing everything written.
    """
    archive, dest = Path(archive), Path(dest)
    kind = sniff(archive)
    if kind not in _ARCHIVES:
        message = "The upload is not a ZIP, tar or tar.gz archive."
        raise BundleError("not_an_archive", message)
    packed = archive.stat().st_size
    handles = []
    with _writing_into(dest, limits, in_place) as writer:
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
                if kind == "zip" and entry.ref.compress_type == ZIP_STORED:
                    at = _stored_offset(zf.fp.fileno(), entry.ref)
                    writer.copy_stored(
                        entry.name, entry.size, zf.fp.fileno(), at, entry.ref.CRC
                    )
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


def find_model(root: Path) -> str:
    """The model file at the bundle root (first of ``MODEL_FILES``), else refuse.

    Raises BundleError (missing_model) listing what the root and its folders hold.
    """
    for name in MODEL_FILES:
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
        f"The bundle root has no {' or '.join(MODEL_FILES)}; it holds "
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


def materialise_for_inspection(
    upload: Path, dest: Path, *, limits: Limits = DEFAULT_LIMITS
) -> tuple[Path, StoredMembers]:
    """``materialise_bundle`` for a static inspection (``inspect_bundle``) only.

    Stored zip members of at least 1 MiB, other than graphs and JSON, are not
    copied: their CRC-32 is checked and a placeholder of their size stands in
    the directory, while ``StoredMembers`` says where their bytes are in the
    upload (a 1 GiB weights file then costs one read, not a copy). Nothing
    may run a model from that directory. Same checks and errors otherwise.
    """
    offsets: dict[str, int] = {}
    root = _materialise(Path(upload), Path(dest), limits, offsets)
    relative = {
        os.path.relpath(Path(dest) / name, root): offset
        for name, offset in offsets.items()
    }
    return root, StoredMembers(archive=Path(upload), offsets=relative)


def materialise_bundle(
    upload: Path, dest: Path, *, limits: Limits = DEFAULT_LIMITS
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
    return _materialise(Path(upload), Path(dest), limits, None)


def _materialise(
    upload: Path, dest: Path, limits: Limits, in_place: dict[str, int] | None
) -> Path:
    kind = sniff(upload)
    if kind in _ARCHIVES:
        extract_archive(upload, dest, limits=limits, in_place=in_place)
    elif kind is not None:
        message = f"Not an ONNX protobuf: the upload looks like {LOOKS_LIKE[kind]}."
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
        find_model(root)
    except BundleError:
        _empty(dest)
        raise
    return root
