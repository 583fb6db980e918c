"""Files in and out of the registry: uploads, the artifact store, references.

Receiving uploaded files: streamed to disk, hashed on the way, capped.

An upload never sits in memory whole. Django's multipart parser and the raw
body parser below hand the body over in chunks to ``DigestingUploadHandler``,
which writes each chunk to a temporary file under ``ARTIFACT_TMP_DIR``, feeds
it to SHA-256 and counts it; the count is checked against
``CIVITAS_UPLOAD_MAX_BYTES`` on every chunk, whatever ``Content-Length``
claimed, and the partial file is removed the moment the cap is passed.

The uploader's file name is never used as a path: it is kept only as escaped
metadata (``SpooledUpload.original_name``); storage keys are made by the
server (``registry.services.artifacts``).

Resumable uploads keep their staging files and read request bodies in
``registry.staging``.

The one ``artifacts`` storage (``artifact_storage``) holds every stored file;
``reference_target`` checks a ``file://`` or ``s3://`` reference against the
allow-list and ``open_reference`` copies it into a spool file the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import posixpath
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.core.files.storage import Storage, storages
from django.core.files.uploadedfile import TemporaryUploadedFile, UploadedFile
from django.core.files.uploadhandler import (
    FileUploadHandler,
    StopFutureHandlers,
    TemporaryFileUploadHandler,
)
from django.http.multipartparser import ChunkIter, TooManyFilesSent
from django.utils.datastructures import MultiValueDict
from django.utils.http import parse_header_parameters
from rest_framework import exceptions, status
from rest_framework.parsers import BaseParser, DataAndFiles, MultiPartParser

from config.exceptions import DomainError, PayloadTooLarge

CHUNK_SIZE = 1 << 20
# Multipart boundaries and part headers around the one file; a Content-Length
# this much above the cap may still carry a file under it.
_MULTIPART_ENVELOPE = 64 * 1024
_NAME_MAX = 255


class LengthRequired(exceptions.APIException):
    """A body sent without Content-Length (chunked); the cap needs the length."""

    status_code = status.HTTP_411_LENGTH_REQUIRED
    default_code = "length_required"
    default_detail = (
        "Send the upload with a Content-Length header; chunked request bodies "
        "are not accepted."
    )


def artifact_tmp_dir() -> Path:
    """The directory for spooled uploads and unpacked bundles, created on demand.

    It should sit on the filesystem of ``ARTIFACT_ROOT`` so that storing an
    accepted upload is a rename, not a second copy.
    """
    path = Path(settings.ARTIFACT_TMP_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


def escape_filename(raw: str | None) -> str:
    """The uploaded name as inert metadata: non-printables escaped, 255 chars max.

    The result is never joined to a path; it only tells people what the
    uploader called the file.
    """
    if not raw:
        return ""
    escaped = "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
        for ch in raw
    )
    return escaped[:_NAME_MAX]


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The upload is larger than the limit of {max_bytes} bytes "
        "(CIVITAS_UPLOAD_MAX_BYTES)."
    )


class SpooledUpload(TemporaryUploadedFile):
    """An upload written to a temporary file under ``ARTIFACT_TMP_DIR``.

    ``sha256`` and ``size`` are filled by ``finish()`` from the bytes actually
    written. Closing removes the file unless storage has moved it away.
    """

    def __init__(
        self,
        *,
        name: str | None,
        content_type: str = "application/octet-stream",
        charset: str | None = None,
        content_type_extra: dict | None = None,
    ) -> None:
        # A fixed suffix: the uploader's extension must not reach the disk.
        file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed by close()
            prefix="upload-", suffix=".part", dir=artifact_tmp_dir()
        )
        UploadedFile.__init__(
            self, file, name or "upload", content_type, 0, charset, content_type_extra
        )
        self.original_name = escape_filename(name)
        self.sha256 = ""
        self._digest = hashlib.sha256()
        self._written = 0

    def append(self, chunk: bytes, *, max_bytes: int) -> None:
        """Write and hash a chunk; past ``max_bytes`` remove the file, raise 413."""
        self._written += len(chunk)
        if self._written > max_bytes:
            self.close()
            raise _too_large(max_bytes)
        self._digest.update(chunk)
        self.file.write(chunk)

    def finish(self) -> SpooledUpload:
        """Fix ``size`` and ``sha256`` and rewind; returns self."""
        self.file.flush()
        self.file.seek(0)
        self.size = self._written
        self.sha256 = self._digest.hexdigest()
        return self


def spool(source: BinaryIO, *, name: str | None, max_bytes: int) -> SpooledUpload:
    """Copy a readable binary stream into a ``SpooledUpload``, hashing on the way.

    Raises ``PayloadTooLarge`` (and removes the partial copy) past ``max_bytes``.
    """
    upload = SpooledUpload(name=name)
    try:
        while chunk := source.read(CHUNK_SIZE):
            upload.append(chunk, max_bytes=max_bytes)
    except BaseException:
        upload.close()
        raise
    return upload.finish()


class DigestingUploadHandler(TemporaryFileUploadHandler):
    """Stream one uploaded file to ``ARTIFACT_TMP_DIR`` with its SHA-256 and a cap.

    Refuses a ``Content-Length`` above the cap before reading anything, counts
    the bytes actually received (a lying or absent length does not help), and
    refuses a second file part: an upload endpoint takes exactly one file.
    """

    chunk_size = CHUNK_SIZE

    def __init__(self, request=None) -> None:
        super().__init__(request)
        self.max_bytes = int(settings.CIVITAS_UPLOAD_MAX_BYTES)
        self.parts = 0

    def handle_raw_input(
        self, input_data, META, content_length, boundary, encoding=None
    ):
        """Refuse a declared length over the cap before the body is read."""
        envelope = 0 if boundary is None else _MULTIPART_ENVELOPE
        if content_length and content_length > self.max_bytes + envelope:
            raise _too_large(self.max_bytes)
        return None

    def new_file(
        self,
        field_name,
        file_name,
        content_type,
        content_length,
        charset=None,
        content_type_extra=None,
    ):
        """Open the spool file for the first file part; refuse any further part."""
        FileUploadHandler.new_file(
            self,
            field_name,
            file_name,
            content_type,
            content_length,
            charset,
            content_type_extra,
        )
        self.parts += 1
        if self.parts > 1:
            self.upload_interrupted()
            raise DomainError(
                "Send exactly one file, in the part named 'file'.",
                code="too_many_parts",
            )
        self.file = SpooledUpload(
            name=file_name,
            content_type=content_type or "application/octet-stream",
            charset=charset,
            content_type_extra=content_type_extra,
        )
        raise StopFutureHandlers()

    def receive_data_chunk(self, raw_data, start):
        """Count, hash and write the chunk; 413 as soon as the cap is passed."""
        self.file.append(raw_data, max_bytes=self.max_bytes)

    def file_complete(self, file_size):
        """Hand over the spooled file with its digest."""
        return self.file.finish()


def _disposition_filename(header: str) -> str | None:
    """The ``filename`` (or RFC 6266 ``filename*``) of a Content-Disposition."""
    if not header:
        return None
    try:
        _, params = parse_header_parameters(header)
    except ValueError:
        return None
    return params.get("filename") or None


class RawUploadParser(BaseParser):
    """The request body is the file (``PUT`` with ``application/octet-stream``).

    The name, optional, comes from ``Content-Disposition: attachment;
    filename=...``. The body goes through the request's upload handlers like
    a multipart file part does, so the same cap, digest and spooling apply.
    """

    media_type = "application/octet-stream"

    def parse(self, stream, media_type=None, parser_context=None):
        """Feed the body to the upload handlers; ``files["file"]`` is the result."""
        request = parser_context["request"]
        meta = request.META
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            content_length = int(meta.get("CONTENT_LENGTH") or 0)
        except ValueError:
            content_length = 0
        name = _disposition_filename(meta.get("HTTP_CONTENT_DISPOSITION", ""))
        handlers = list(request.upload_handlers)
        for handler in handlers:
            handler.handle_raw_input(stream, meta, content_length, None, encoding)
        try:
            for index, handler in enumerate(handlers):
                try:
                    handler.new_file(
                        "file", name or "", media_type, content_length, None
                    )
                except StopFutureHandlers:
                    handlers = handlers[: index + 1]
                    break
            received = 0
            chunk_size = min(h.chunk_size for h in handlers)
            for chunk in ChunkIter(stream, chunk_size):
                received += len(chunk)
                for handler in handlers:
                    if handler.receive_data_chunk(chunk, received - len(chunk)) is None:
                        break
            if received != content_length:
                raise exceptions.ParseError(
                    f"The body ended after {received} of the {content_length} "
                    "bytes announced by Content-Length.",
                    code="incomplete_body",
                )
            for handler in handlers:
                result = handler.file_complete(received)
                if result is not None:
                    return DataAndFiles({}, MultiValueDict({"file": [result]}))
        except BaseException:
            for handler in handlers:
                handler.upload_interrupted()
            raise
        raise exceptions.ParseError("No upload handler took the body.")


class SingleFileMultiPartParser(MultiPartParser):
    """``multipart/form-data`` with one part named ``file``; Django's limits as 400s.

    Django raises its own ``SuspiciousOperation`` subclasses when a multipart
    body has too many parts or oversized fields; they are turned into the
    API's JSON errors here instead of a bare HTML 400.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        """Parse with the request's upload handlers; map Django's limits to 400."""
        try:
            return super().parse(stream, media_type, parser_context)
        except (TooManyFilesSent, TooManyFieldsSent) as e:
            raise DomainError(
                "Send exactly one file, in the part named 'file', and no other fields.",
                code="too_many_parts",
            ) from e
        except RequestDataTooBig as e:
            raise DomainError(
                "The form fields beside the file are too large; send only the "
                "part named 'file'.",
                code="too_many_parts",
            ) from e


def install_upload_handler(request) -> None:
    """Make ``DigestingUploadHandler`` the only handler of this Django request.

    Must run before anything reads ``request.POST`` or ``request.FILES``.
    """
    request.upload_handlers = [DigestingUploadHandler(request)]


def received_upload(request) -> SpooledUpload:
    """The one spooled file of a parsed DRF request; 400/411 when there is none.

    Every other file the parser may have produced is closed (and so removed).
    """
    meta = request.META
    if not meta.get("CONTENT_LENGTH") and meta.get("HTTP_TRANSFER_ENCODING"):
        raise LengthRequired()
    files = request.FILES
    found = [f for _, group in files.lists() for f in group]
    upload = files.get("file")
    for other in found:
        if other is not upload:
            other.close()
    if not isinstance(upload, SpooledUpload) or len(found) != 1:
        if isinstance(upload, UploadedFile):
            upload.close()
        raise DomainError(
            "Send the file as the raw request body (Content-Type: "
            "application/octet-stream) or as the multipart part named 'file'.",
            code="missing_file",
        )
    return upload


def remove_spooled(upload: UploadedFile | None) -> None:
    """Close an upload and make sure its temporary file is gone."""
    if upload is None:
        return
    path = getattr(upload, "temporary_file_path", None)
    upload.close()
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path())


# --- The artifact store and references ----------------------------------------


CONTENT_TYPES = {
    "onnx": "application/octet-stream",
    "zip": "application/zip",
    "tar": "application/x-tar",
    "tar.gz": "application/gzip",
}
# Dataset files keep a recognisable suffix in their key and download name
# only when it is one of these; anything else is stored as ``.bin``.
DATASET_SUFFIXES = (
    ".jsonl.gz", ".csv.gz", ".tsv.gz", ".json.gz", ".tar.gz",
    ".jsonl", ".json", ".csv", ".tsv", ".parquet", ".arrow", ".txt",
    ".zip", ".tar", ".gz", ".zst",
)  # fmt: skip


def dataset_suffix(name: str) -> str:
    """The suffix a stored dataset file keeps: a known data format, else ``.bin``."""
    lowered = name.lower()
    return next((s for s in DATASET_SUFFIXES if lowered.endswith(s)), ".bin")


def artifact_storage() -> Storage:
    """The storage every model bundle and dataset file goes through."""
    return storages["artifacts"]


@dataclass(frozen=True)
class ReferenceTarget:
    """Where a referenced artifact is read from, after the allow-list check."""

    scheme: str  # "file" or "s3"
    path: str = ""  # file: the resolved absolute path
    bucket: str = ""  # s3
    key: str = ""  # s3


def _not_allowed(why: str) -> DomainError:
    return DomainError(
        f"The reference {why}; only files inside the directories listed in "
        "CIVITAS_REFERENCE_ROOTS can be registered by reference. Upload the file "
        "instead.",
        code="reference_not_allowed",
    )


def _scheme_not_allowed(scheme: str) -> DomainError:
    return DomainError(
        f"References with the scheme {scheme or '(none)'!r} are not accepted: use "
        "a file:// path inside CIVITAS_REFERENCE_ROOTS, or s3:// when an S3 "
        "endpoint is configured. HTTP(S) URLs are never fetched; upload the file "
        "instead.",
        code="reference_scheme_not_allowed",
    )


def _inside(path: str, root: str) -> bool:
    return path != root and os.path.commonpath([path, root]) == root


def _file_roots() -> list[str]:
    return [
        os.path.realpath(root)
        for root in settings.CIVITAS_REFERENCE_ROOTS
        if root.startswith("/")
    ]


def _file_target(parts) -> ReferenceTarget:
    if parts.netloc not in ("", "localhost"):
        raise _not_allowed("names a remote host")
    if parts.query or parts.fragment:
        raise _not_allowed("has a query or fragment")
    path = unquote(parts.path)
    if "\x00" in path or "\\" in path:
        raise _not_allowed("contains a NUL byte or a backslash")
    if not path.startswith("/"):
        raise _not_allowed("is not an absolute path")
    if ".." in path.split("/"):
        raise _not_allowed("contains a '..' component")
    real = os.path.realpath(path)
    if not any(_inside(real, root) for root in _file_roots()):
        raise _not_allowed("resolves outside the allowed directories")
    return ReferenceTarget(scheme="file", path=real)


def s3_enabled() -> bool:
    """True when an S3 endpoint is configured and boto3 is installed."""
    return bool(settings.CIVITAS_S3_ENDPOINT_URL) and (
        importlib.util.find_spec("boto3") is not None
    )


def _s3_target(parts) -> ReferenceTarget:
    if not s3_enabled():
        raise _scheme_not_allowed("s3")
    bucket, key = parts.netloc, unquote(parts.path).lstrip("/")
    if not bucket or not key or parts.query or parts.fragment:
        raise _not_allowed("does not name an object as s3://bucket/key")
    if "\x00" in key or ".." in key.split("/"):
        raise _not_allowed("contains a NUL byte or a '..' component")
    full = f"{bucket}/{key}"
    prefixes = [
        root.removeprefix("s3://").rstrip("/") + "/"
        for root in settings.CIVITAS_REFERENCE_ROOTS
        if root.startswith("s3://")
    ]
    if not any(full.startswith(prefix) for prefix in prefixes):
        raise _not_allowed("is outside the allowed S3 prefixes")
    return ReferenceTarget(scheme="s3", bucket=bucket, key=key)


def reference_target(uri: str) -> ReferenceTarget:
    """Check a reference URI against the allow-list and say where to read it.

    ``file://`` paths must resolve (symlinks followed) strictly inside one of
    the absolute directories of ``CIVITAS_REFERENCE_ROOTS`` and contain no
    ``..``; ``s3://bucket/key`` needs ``CIVITAS_S3_ENDPOINT_URL``, boto3 and
    an ``s3://bucket/prefix`` entry of the allow-list. Nothing else is ever
    fetched (no HTTP: the platform must not be a proxy to internal hosts).
    Raises ``DomainError`` (``reference_scheme_not_allowed``,
    ``reference_not_allowed``).
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return _file_target(parts)
    if scheme == "s3":
        return _s3_target(parts)
    raise _scheme_not_allowed(scheme)


def _open_file_reference(uri: str) -> SpooledUpload:
    """Copy a ``file://`` reference into a spool file, re-checking the allow-list.

    The path is resolved again here (the tree may have changed since the
    request) and opened without following a final symlink; on Linux the opened
    descriptor's real path is checked once more, so a swap between the check
    and the open cannot read outside the roots.
    """
    target = reference_target(uri)
    try:
        fd = os.open(
            target.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        )
    except FileNotFoundError:
        raise DomainError(f"No file at {uri}.", code="reference_not_found") from None
    except OSError as e:
        raise DomainError(
            f"The file at {uri} cannot be opened ({e.strerror}).",
            code="reference_unreadable",
        ) from None
    with os.fdopen(fd, "rb") as source:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DomainError(
                f"{uri} is not a regular file.", code="reference_not_file"
            )
        proc = f"/proc/self/fd/{fd}"
        if os.path.exists(proc) and not any(
            _inside(os.path.realpath(proc), root) for root in _file_roots()
        ):
            raise _not_allowed("resolves outside the allowed directories")
        return spool(
            source,
            name=os.path.basename(target.path),
            max_bytes=int(settings.CIVITAS_UPLOAD_MAX_BYTES),
        )


def _open_s3_reference(uri: str) -> SpooledUpload:
    """Copy an ``s3://`` reference into a spool file through boto3, streaming."""
    import boto3  # optional: only present where S3 references are enabled

    target = reference_target(uri)
    client = boto3.client("s3", endpoint_url=settings.CIVITAS_S3_ENDPOINT_URL)
    try:
        body = client.get_object(Bucket=target.bucket, Key=target.key)["Body"]
    except Exception as e:  # botocore's errors are dynamic classes
        raise DomainError(
            f"The object {uri} cannot be read ({e}).", code="reference_unreadable"
        ) from None
    try:
        return spool(
            body,
            name=posixpath.basename(target.key),
            max_bytes=int(settings.CIVITAS_UPLOAD_MAX_BYTES),
        )
    finally:
        body.close()


def open_reference(uri: str) -> SpooledUpload:
    """Copy a referenced file (``file://`` or ``s3://``) into a spool file.

    The reference is checked against the allow-list again; raises
    ``DomainError`` (``reference_not_found``, ``reference_unreadable``,
    ``reference_not_file``, ``reference_not_allowed``...).
    """
    if urlsplit(uri).scheme.lower() == "s3":
        return _open_s3_reference(uri)
    return _open_file_reference(uri)


def copy_verified(*, key: str, sha256: str, dest: Path) -> Path:
    """Stream a stored file to ``dest``, checking its SHA-256 on the way.

    Whatever the store (the local disk, or a bucket other hands could write
    to), a file is used only if its bytes are the ones registered. Nothing is
    held in memory whole. Raises ``DomainError`` (``digest_mismatch``) and
    removes ``dest`` when the bytes differ.
    """
    digest = hashlib.sha256()
    with artifact_storage().open(key, "rb") as source, open(dest, "wb") as target:
        while chunk := source.read(CHUNK_SIZE):
            digest.update(chunk)
            target.write(chunk)
    if digest.hexdigest() != sha256:
        dest.unlink(missing_ok=True)
        raise DomainError(
            f"The stored file {key} has SHA-256 {digest.hexdigest()}, not the "
            f"registered {sha256}: it was changed in the store and is refused.",
            code="digest_mismatch",
        )
    return dest
