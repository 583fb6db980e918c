"""Artifacts on S3-compatible object storage (MinIO, Ceph, a cloud's).

``ARTIFACT_STORAGE_BACKEND=s3`` makes ``ArtifactS3Storage`` the ``artifacts``
storage (config/settings.py), so workers on other hosts read the same
bundles and dataset files. It is django-storages' ``S3Storage`` with two
changes:

- every call has connect and read timeouts and a bounded number of attempts
  (``ARTIFACT_S3_CONNECT_TIMEOUT``, ``ARTIFACT_S3_READ_TIMEOUT``,
  ``ARTIFACT_S3_MAX_ATTEMPTS``, botocore's standard retry mode): an endpoint
  that accepts connections and never answers fails the call;
- a file opened for reading is the object's response body, read as a stream.
  django-storages' own ``S3File`` first downloads the whole object into a
  spooled temporary file (held in memory unless ``AWS_S3_MAX_MEMORY_SIZE``
  is set), which an 8 GiB bundle must never be. No maintained library
  offers a streaming read-only ``File`` over ``get_object``; it is a few
  lines here.

Uploads already stream: ``S3Storage._save`` hands the spooled upload to
boto3's ``upload_fileobj``, which sends it in parts.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime

from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError
from django.conf import settings
from django.core.files.base import File
from storages.backends.s3 import S3Storage
from storages.utils import clean_name


def client_config(*, path_style: bool) -> Config:
    """botocore's client configuration: timeouts and bounded retries."""
    return Config(
        connect_timeout=settings.ARTIFACT_S3_CONNECT_TIMEOUT,
        read_timeout=settings.ARTIFACT_S3_READ_TIMEOUT,
        retries={"max_attempts": settings.ARTIFACT_S3_MAX_ATTEMPTS, "mode": "standard"},
        signature_version="s3v4",
        # MinIO, Ceph and moto serve buckets under the path of one host name.
        s3={"addressing_style": "path" if path_style else "auto"},
    )


def transfer_config() -> TransferConfig:
    """Uploads in 8 MiB parts, two at a time: at most 16 MiB in memory per upload.

    s3transfer reads ahead up to ``max_in_memory_upload_chunks`` parts (ten by
    default, 80 MiB); two keeps the reader level with the senders.
    """
    config = TransferConfig(
        multipart_threshold=8 * 1024**2, multipart_chunksize=8 * 1024**2,
        max_concurrency=2,
    )  # fmt: skip
    # s3transfer's own option, which boto3's constructor does not take.
    config.max_in_memory_upload_chunks = 2
    return config


class StreamingObject(File):
    """A stored object opened for reading: chunks come from the response body.

    Not seekable; ``read(n)`` reads ``n`` bytes from the network, each read
    bounded by the client's read timeout.
    """

    def __init__(self, body, name: str, size: int) -> None:
        super().__init__(body, name)
        self.size = size

    def seekable(self) -> bool:
        return False


class ArtifactS3Storage(S3Storage):
    """The artifact store on S3: bounded calls, streamed reads, no overwrite."""

    def __init__(self, **options) -> None:
        options.setdefault(
            "client_config",
            client_config(path_style=bool(options.get("endpoint_url"))),
        )
        options.setdefault("transfer_config", transfer_config())
        super().__init__(**options)

    def _open(self, name: str, mode: str = "rb") -> File:
        if mode != "rb":
            return super()._open(name, mode)
        key = self._normalize_name(clean_name(name))
        try:
            response = self.connection.meta.client.get_object(
                Bucket=self.bucket_name, Key=key
            )
        except ClientError as err:
            if err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                raise FileNotFoundError(f"No stored object {name}.") from None
            raise
        return StreamingObject(response["Body"], name, response["ContentLength"])

    def fingerprint(self, name: str, *, settle_s: float) -> tuple | None:
        """What a HEAD says of the object: ETag, size, LastModified (and the
        version id where the bucket keeps versions), with the client's
        timeouts; ``None`` when there is no such object, or when it was
        written less than ``settle_s`` before the server's own ``Date``
        (LastModified has whole seconds: a second write in the same second
        could keep it, so so fresh an object is not vouched for)."""
        key = self._normalize_name(clean_name(name))
        try:
            head = self.connection.meta.client.head_object(
                Bucket=self.bucket_name, Key=key
            )
        except ClientError as err:
            if err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise
        modified = head["LastModified"]
        served = head.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        if (
            not served
            or (parsedate_to_datetime(served) - modified).total_seconds() < settle_s
        ):
            return None
        return (
            "s3",
            self.bucket_name,
            key,
            head.get("ETag"),
            head.get("ContentLength"),
            modified.isoformat(),
            head.get("VersionId"),
        )
