"""S3 or an S3-compatible service: the object with key K lives at `s3://<bucket>/<prefix>/K`.

put streams. Below one part it is a single PutObject; otherwise a multipart upload whose parts
(`part_size_mb` each) go up in parallel on `max_concurrency` threads, with at most
`max_concurrency + 1` parts in memory whatever the object's size. S3 shows a multipart object
only once it is completed, so readers see the old object or the new one; a failed put aborts its
upload, and uploads a crash left behind are aborted by `cleanup_incomplete`.

Error messages name the operation, the key and S3's error code; they never carry credentials,
request signatures or URLs with query strings, and are raised without the botocore exception
chained to them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import boto3
import urllib3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
    SSLError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from runbook import config as cfg
from runbook.errors import ConfigError
from runbook.storage.base import (
    CHUNK_SIZE,
    ObjectInfo,
    ObjectNotFound,
    Storage,
    StorageError,
    TransientStorageError,
    check_key,
)

MIB = 1024 * 1024
MAX_PARTS = 10_000  # S3's limit per multipart upload

_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}
# Error codes worth retrying besides any 5xx (botocore's transient and throttling lists).
_TRANSIENT_CODES = {
    "BandwidthLimitExceeded",
    "EC2ThrottledException",
    "InternalError",
    "LimitExceededException",
    "PriorRequestNotComplete",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "RequestTimeout",
    "RequestTimeoutException",
    "ServiceUnavailable",
    "SlowDown",
    "ThrottledException",
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "TransactionInProgressException",
}
_TRANSIENT_STATUS = {408, 429}
_MESSAGE_LIMIT = 300


class S3Storage(Storage):
    def __init__(self, settings: cfg.S3Storage):
        self.settings = settings
        self.bucket = settings.bucket
        self._root = f"{settings.prefix}/" if settings.prefix else ""
        self._part_size = settings.part_size_mb * MIB
        self._concurrency = settings.max_concurrency
        # Scrubbed from any text a server sends back, in case it echoes them.
        self._secrets = [
            secret.get_secret_value()
            for secret in (settings.access_key_id, settings.secret_access_key)
            if secret is not None and secret.get_secret_value()
        ]
        self._client = _make_client(settings)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.settings.prefix}".rstrip("/")

    def close(self) -> None:
        self._client.close()

    # --- objects ------------------------------------------------------------------------

    def put(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        full_key = self._full_key(key)
        parts = _split_parts(chunks, self._part_size)
        first = next(parts, bytearray())
        if len(first) < self._part_size:  # the whole object fits in one part
            self._call(
                "PutObject", key, Bucket=self.bucket, Key=full_key, Body=first, **self._sse()
            )
            size = len(first)
        else:
            parts = itertools.chain([first], parts)
            del first  # the upload releases each part once sent
            size = self._put_multipart(key, full_key, parts)
        info = self.stat(key)
        if info.size != size:
            raise StorageError(
                f"S3 put of {key!r} in {self.describe()}: sent {size} bytes but the stored "
                f"object has {info.size} (another writer, or a faulty S3 service)"
            )
        return info

    def get(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        response = self._call("GetObject", key, Bucket=self.bucket, Key=self._full_key(key))
        return self._stream_body(response["Body"], key, chunk_size)

    def stat(self, key: str) -> ObjectInfo:
        response = self._call("HeadObject", key, Bucket=self.bucket, Key=self._full_key(key))
        return ObjectInfo(key, response["ContentLength"], _utc(response["LastModified"]))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        found = []
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._root + prefix}
        while True:
            page = self._call("ListObjectsV2", prefix or None, **params)
            for item in page.get("Contents", ()):
                key = item["Key"].removeprefix(self._root)
                if _is_valid_key(key):  # skips "folder/" markers that consoles create
                    found.append(ObjectInfo(key, item["Size"], _utc(item["LastModified"])))
            if not page.get("IsTruncated"):
                break
            params["ContinuationToken"] = page["NextContinuationToken"]
        return iter(sorted(found, key=lambda info: info.key))

    def delete(self, key: str) -> None:
        # S3 answers 204 for an absent key too.
        self._call("DeleteObject", key, Bucket=self.bucket, Key=self._full_key(key))

    def cleanup_incomplete(self, older_than: datetime) -> int:
        cutoff = _utc(older_than)
        removed = 0
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._root}
        while True:
            page = self._call("ListMultipartUploads", None, **params)
            for upload in page.get("Uploads", ()):
                if _utc(upload["Initiated"]) >= cutoff:
                    continue
                if self._abort_leftover(upload["Key"], upload["UploadId"]):
                    removed += 1
            if not page.get("IsTruncated"):
                break
            params["KeyMarker"] = page["NextKeyMarker"]
            params["UploadIdMarker"] = page["NextUploadIdMarker"]
        return removed

    def _abort_leftover(self, full_key: str, upload_id: str) -> bool:
        key = full_key.removeprefix(self._root)
        error: StorageError | None = None
        try:
            self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=full_key, UploadId=upload_id
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchUpload":
                return False  # completed or aborted meanwhile
            error = self._storage_error(exc, "AbortMultipartUpload", key)
        except BotoCoreError as exc:
            error = self._storage_error(exc, "AbortMultipartUpload", key)
        if error is not None:
            raise error
        return True

    # --- multipart ----------------------------------------------------------------------

    def _put_multipart(self, key: str, full_key: str, parts: Iterator[bytearray]) -> int:
        created = self._call(
            "CreateMultipartUpload", key, Bucket=self.bucket, Key=full_key, **self._sse()
        )
        upload_id = created["UploadId"]
        try:
            size, uploaded = self._upload_parts(key, full_key, upload_id, parts)
            self._call(
                "CompleteMultipartUpload",
                key,
                Bucket=self.bucket,
                Key=full_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": uploaded},
            )
        except BaseException:
            self._abort_quietly(full_key, upload_id)
            raise
        return size

    def _upload_parts(
        self, key: str, full_key: str, upload_id: str, parts: Iterator[bytearray]
    ) -> tuple[int, list[dict[str, Any]]]:
        """Upload parts in parallel; the iterator's or a part's exception propagates as is."""
        size = 0
        uploaded: list[dict[str, Any]] = []
        pending: set[Future[dict[str, Any]]] = set()
        pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="runbook-s3-part")
        try:
            for number, part in enumerate(parts, start=1):
                if number > MAX_PARTS:
                    raise StorageError(
                        f"S3 put of {key!r} in {self.describe()}: more than {MAX_PARTS} parts "
                        f"of {self.settings.part_size_mb} MiB; raise storage.part_size_mb"
                    )
                # Wait for a free worker before queueing, so memory holds at most
                # max_concurrency parts in flight plus the one just read.
                while len(pending) >= self._concurrency:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    uploaded.extend(future.result() for future in finished)
                size += len(part)
                pending.add(pool.submit(self._upload_part, key, full_key, upload_id, number, part))
                del part
            uploaded.extend(future.result() for future in wait(pending).done)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        uploaded.sort(key=lambda part: part["PartNumber"])
        return size, uploaded

    def _upload_part(
        self, key: str, full_key: str, upload_id: str, number: int, data: bytearray
    ) -> dict[str, Any]:
        response = self._call(
            "UploadPart",
            key,
            Bucket=self.bucket,
            Key=full_key,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
        )
        return {"PartNumber": number, "ETag": response["ETag"]}

    def _abort_quietly(self, full_key: str, upload_id: str) -> None:
        # Never hide the put's own exception; cleanup_incomplete aborts what this leaves.
        try:
            self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=full_key, UploadId=upload_id
            )
        except (BotoCoreError, ClientError):
            pass

    # --- helpers ------------------------------------------------------------------------

    def _full_key(self, key: str) -> str:
        return self._root + check_key(key)

    def _sse(self) -> dict[str, str]:
        params = {}
        if self.settings.sse:
            params["ServerSideEncryption"] = self.settings.sse
        if self.settings.sse_kms_key_id:
            params["SSEKMSKeyId"] = self.settings.sse_kms_key_id
        return params

    def _call(self, operation: str, key: str | None, **params: Any) -> dict[str, Any]:
        """Run one S3 operation, mapping botocore's exceptions onto the storage errors."""
        method = getattr(self._client, _snake_case(operation))
        try:
            return method(**params)
        except (BotoCoreError, ClientError) as exc:
            error = self._storage_error(exc, operation, key)
        # Raised outside the except block so no botocore exception is chained to it.
        raise error

    def _storage_error(
        self, exc: BotoCoreError | ClientError, operation: str, key: str | None
    ) -> StorageError:
        if isinstance(exc, ClientError):
            details = exc.response.get("Error", {})
            code = str(details.get("Code") or "Unknown")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            if code in _NOT_FOUND_CODES and key is not None and operation != "ListObjectsV2":
                return ObjectNotFound(key)
            message = self._scrub(str(details.get("Message") or ""))
            detail = f"{code} (HTTP {status})" + (f": {message}" if message else "")
            transient = code in _TRANSIENT_CODES or status >= 500 or status in _TRANSIENT_STATUS
        else:
            detail, transient = _describe_botocore_error(exc, self.settings)
        cls = TransientStorageError if transient else StorageError
        target = f" {key!r}" if key is not None else ""
        return cls(f"S3 {operation}{target} in {self.describe()} failed: {detail}")

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "**********")
        if len(text) > _MESSAGE_LIMIT:
            text = text[:_MESSAGE_LIMIT] + "..."
        return text

    def _stream_body(self, body: Any, key: str, chunk_size: int) -> Iterator[bytes]:
        error: StorageError | None = None
        try:
            yield from body.iter_chunks(chunk_size)
        except (BotoCoreError, urllib3.exceptions.HTTPError, OSError) as exc:
            error = TransientStorageError(
                f"S3 GetObject {key!r} in {self.describe()} failed while reading: "
                f"{type(exc).__name__}"
            )
        finally:
            body.close()
        if error is not None:
            raise error


def _make_client(settings: cfg.S3Storage) -> Any:
    if (settings.access_key_id is None) != (settings.secret_access_key is None):
        raise ConfigError(
            "storage.access_key_id and storage.secret_access_key: set both, or neither to use "
            "the default AWS credential chain (environment, ~/.aws, instance role)"
        )
    timeout = settings.timeout.total_seconds()
    config = Config(
        signature_version="s3v4",
        # total_max_attempts counts the first try; botocore's max_attempts would not.
        retries={"total_max_attempts": settings.max_attempts, "mode": "standard"},
        connect_timeout=timeout,
        read_timeout=timeout,
        max_pool_connections=max(10, settings.max_concurrency + 2),
        # S3-compatible services (MinIO, Ceph, moto) rarely resolve bucket subdomains.
        s3={"addressing_style": "path"} if settings.endpoint_url else None,
    )
    secret_id = settings.access_key_id.get_secret_value() if settings.access_key_id else None
    secret = settings.secret_access_key.get_secret_value() if settings.secret_access_key else None
    # A session of our own: boto3's default session is not safe to share between threads.
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        aws_access_key_id=secret_id,
        aws_secret_access_key=secret,
        config=config,
    )


def _describe_botocore_error(exc: BotoCoreError, settings: cfg.S3Storage) -> tuple[str, bool]:
    """A message without the exception's text (it may hold URLs), and whether it is transient."""
    name = type(exc).__name__
    where = _endpoint_host(settings)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return (
            f"{name}: no usable AWS credentials (set storage.access_key_id and "
            "storage.secret_access_key, or configure the default AWS credential chain)",
            False,
        )
    if isinstance(exc, SSLError):
        return f"{name}: TLS verification with {where} failed", False
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
        seconds = settings.timeout.total_seconds()
        return f"{name}: no answer from {where} within {seconds:g}s", True
    if isinstance(exc, BotoConnectionError | HTTPClientError | IncompleteReadError):
        return f"{name}: connection to {where} failed", True
    return name, False


def _endpoint_host(settings: cfg.S3Storage) -> str:
    if not settings.endpoint_url:
        return "the AWS S3 endpoint"
    parts = urlsplit(settings.endpoint_url)
    return parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else "?"


def _split_parts(chunks: Iterable[bytes], part_size: int) -> Iterator[bytearray]:
    """Regroup chunks into parts of exactly part_size bytes (the last one may be shorter)."""
    buffer = bytearray()
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            take = min(part_size - len(buffer), len(view))
            buffer += view[:take]
            view = view[take:]
            if len(buffer) == part_size:
                part, buffer = buffer, bytearray()
                yield part
                del part
    if buffer:
        yield buffer


def _is_valid_key(key: str) -> bool:
    try:
        check_key(key)
    except ValueError:
        return False
    return True


def _snake_case(operation: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in operation).lstrip("_")


def _utc(moment: datetime) -> datetime:
    # A naive datetime means local time, as in LocalStorage.cleanup_incomplete.
    return moment.astimezone(UTC)
