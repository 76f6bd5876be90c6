"""One storage contract (runbook/storage/base.py), run against every backend.

The contract tests take a `backend`: the storage plus two peeks behind its back (leave an
unfinished put, list unfinished puts), which is all that differs between a folder and S3.
The S3-only tests at the end cover what only S3 has: prefixes, SSE, retries, credentials.
"""

# The fixtures imported from tests.support.s3 are requested by name, which ruff sees as F811.
# ruff: noqa: F811

from __future__ import annotations

import errno
import http.client
import os
import random
import threading
import time
import traceback
import tracemalloc
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from runbook.config import S3Storage as S3Settings
from runbook.storage import (
    ObjectNotFound,
    Storage,
    StorageError,
    TransientStorageError,
    open_storage,
)
from runbook.storage.local import LocalStorage
from runbook.storage.s3 import S3Storage
from tests.support.s3 import (  # noqa: F401 - fixtures: moto_server, s3_settings, faulty_s3_proxy
    FaultyS3Proxy,
    drop_bucket,
    faulty_s3_proxy,
    free_port,
    make_bucket,
    moto_server,
    moto_server_process,
    s3_client,
    s3_settings,
)

MIB = 1024 * 1024
PART = 5 * MIB  # part_size_mb of the S3 test settings


def random_bytes(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def chunked(data: bytes, size: int = MIB) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def dying_dump(data: bytes, error: BaseException) -> Iterator[bytes]:
    """A dump that streams `data` and then dies."""
    yield from chunked(data)
    raise error


# --- backends ------------------------------------------------------------------------------


class LocalBackend:
    def __init__(self, root: Path):
        self.root = root
        self.storage: Storage = LocalStorage(root)

    def leave_incomplete(self, key: str) -> datetime:
        """A temp file as a crashed put leaves it, two days old; returns when it was started."""
        final = self.root / key
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.with_name(f".{final.name}.tmp-abc")
        temp.write_bytes(b"half a dump")
        started = time.time() - 2 * 86400
        os.utime(temp, (started, started))
        return datetime.fromtimestamp(started, UTC)

    def incomplete(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(
            path.relative_to(self.root).as_posix()
            for path in self.root.rglob("*")
            if ".tmp-" in path.name
        )


class S3Backend:
    def __init__(self, settings: S3Settings):
        self.settings = settings
        self.storage: Storage = S3Storage(settings)
        self.client = s3_client(settings.endpoint_url)

    def leave_incomplete(self, key: str) -> datetime:
        """A multipart upload nobody completes; returns when S3 says it was initiated."""
        full_key = f"{self.settings.prefix}/{key}"
        self.client.create_multipart_upload(Bucket=self.settings.bucket, Key=full_key)
        uploads = self.client.list_multipart_uploads(Bucket=self.settings.bucket)["Uploads"]
        # moto reports a fixed Initiated date (2010-11-10); real S3 reports the time of creation.
        return next(upload["Initiated"] for upload in uploads if upload["Key"] == full_key)

    def incomplete(self) -> list[str]:
        uploads = self.client.list_multipart_uploads(Bucket=self.settings.bucket)
        return sorted(upload["Key"] for upload in uploads.get("Uploads", ()))


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "local":
        backend: Any = LocalBackend(tmp_path / "backups")
    else:
        backend = S3Backend(request.getfixturevalue("s3_settings"))
    yield backend
    backend.storage.close()


def keys(storage: Storage, prefix: str = "") -> list[str]:
    return [info.key for info in storage.list(prefix)]


# --- the contract --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [0, 1234, PART, 12 * MIB + 7], ids=["empty", "small", "one-part", "multipart"]
)
def test_put_then_get_returns_the_exact_bytes(backend: Any, size: int) -> None:
    store: Storage = backend.storage
    data = random_bytes(size)
    before = datetime.now(UTC) - timedelta(minutes=5)

    info = store.put("pg/app/full.dump", chunked(data))

    assert (info.key, info.size) == ("pg/app/full.dump", size)
    assert before < info.modified < datetime.now(UTC) + timedelta(minutes=5)
    assert store.stat("pg/app/full.dump") == info
    pieces = list(store.get("pg/app/full.dump", chunk_size=MIB))
    assert b"".join(pieces) == data
    assert all(len(piece) <= MIB for piece in pieces)
    assert backend.incomplete() == []


@pytest.mark.parametrize("streamed", [1000, 7 * MIB], ids=["in-first-part", "after-a-part"])
@pytest.mark.parametrize(
    "make_error",
    [lambda: RuntimeError("pg_dump exited with status 1"), lambda: OSError(errno.EIO, "EIO")],
    ids=["RuntimeError", "OSError"],
)
def test_put_from_a_dying_dump_propagates_its_error_and_stores_nothing(
    backend: Any, streamed: int, make_error: Any
) -> None:
    store: Storage = backend.storage
    old = random_bytes(2000, seed=1)
    store.put_bytes("pg/app/full.dump", old)

    for key in ("pg/app/full.dump", "pg/app/fresh.dump"):
        error = make_error()
        with pytest.raises(type(error)) as raised:
            store.put(key, dying_dump(random_bytes(streamed), error))
        assert raised.value is error, "the dump's own exception must come out unchanged"

    assert store.get_bytes("pg/app/full.dump") == old
    assert not store.exists("pg/app/fresh.dump")
    assert keys(store) == ["pg/app/full.dump"]
    assert backend.incomplete() == []


def test_overwrite_is_atomic(backend: Any) -> None:
    store: Storage = backend.storage
    old, new = random_bytes(3000, seed=1), random_bytes(12 * MIB, seed=2)
    store.put_bytes("redis/cache.rdb", old)
    seen_mid_put: list[bytes] = []

    def new_dump() -> Iterator[bytes]:
        yield from chunked(new[: 7 * MIB])
        seen_mid_put.append(store.get_bytes("redis/cache.rdb"))  # a reader during the put
        yield from chunked(new[7 * MIB :])

    info = store.put("redis/cache.rdb", new_dump())

    assert seen_mid_put == [old]
    assert info.size == len(new)
    assert store.get_bytes("redis/cache.rdb") == new
    assert keys(store) == ["redis/cache.rdb"]


def test_missing_key_is_object_not_found(backend: Any) -> None:
    store: Storage = backend.storage
    store.put_bytes("pg/app/full.dump", b"x")

    for key in ("pg/app/missing.dump", "pg/app", "pg/app/full.dump/deeper"):
        with pytest.raises(ObjectNotFound) as raised:
            store.get(key)  # at call time, before any iteration
        assert raised.value.key == key
        with pytest.raises(ObjectNotFound):
            store.stat(key)
        assert store.exists(key) is False


def test_list_is_sorted_and_filtered_by_prefix(backend: Any) -> None:
    store: Storage = backend.storage
    sizes = {"pg/b/2.dump": 3, "pg/a/10.dump": 2, "pgx/1.dump": 5, "pg/a/1.dump": 1, "r/1": 4}
    for key, size in sizes.items():
        store.put_bytes(key, b"z" * size)
    backend.leave_incomplete("pg/c/3.dump")

    listed = list(store.list("pg/"))

    assert [info.key for info in listed] == ["pg/a/1.dump", "pg/a/10.dump", "pg/b/2.dump"]
    assert [info.size for info in listed] == [1, 2, 3]
    assert all(info.modified.tzinfo is not None for info in listed)
    assert keys(store, "pg") == ["pg/a/1.dump", "pg/a/10.dump", "pg/b/2.dump", "pgx/1.dump"]
    assert keys(store) == sorted(sizes)
    assert keys(store, "nothing/") == []


def test_delete_is_idempotent(backend: Any) -> None:
    store: Storage = backend.storage
    store.put_bytes("pg/a/1.dump", b"one")
    store.put_bytes("pg/a/2.dump", b"two")

    store.delete("pg/a/1.dump")
    store.delete("pg/a/1.dump")
    store.delete("never/existed.dump")

    assert not store.exists("pg/a/1.dump")
    assert keys(store) == ["pg/a/2.dump"]
    assert store.get_bytes("pg/a/2.dump") == b"two"


def test_cleanup_incomplete_removes_only_leftovers_older_than_the_cutoff(backend: Any) -> None:
    store: Storage = backend.storage
    store.put_bytes("pg/app/done.dump", b"complete")
    started = backend.leave_incomplete("pg/app/half.dump")
    assert len(backend.incomplete()) == 1

    assert store.cleanup_incomplete(started - timedelta(minutes=1)) == 0
    assert len(backend.incomplete()) == 1, "a put started after the cutoff must survive"

    assert store.cleanup_incomplete(started + timedelta(minutes=1)) == 1
    assert backend.incomplete() == []
    assert store.cleanup_incomplete(started + timedelta(minutes=1)) == 0
    assert store.get_bytes("pg/app/done.dump") == b"complete"


@pytest.mark.parametrize("key", ["../x", "/abs", "a//b", "a/./b", "a/", ""])
def test_invalid_keys_are_rejected(backend: Any, key: str) -> None:
    store: Storage = backend.storage
    with pytest.raises(ValueError):
        store.put_bytes(key, b"x")
    with pytest.raises(ValueError):
        store.get(key)
    with pytest.raises(ValueError):
        store.stat(key)
    with pytest.raises(ValueError):
        store.delete(key)
    assert keys(store) == []


# --- S3 only -------------------------------------------------------------------------------


def with_settings(settings: S3Settings, **changes: Any) -> S3Settings:
    return S3Settings.model_validate({**settings.model_dump(), **changes})


def head(settings: S3Settings, full_key: str) -> dict[str, Any]:
    return s3_client(settings.endpoint_url).head_object(Bucket=settings.bucket, Key=full_key)


@pytest.mark.parametrize("prefix", ["runbook-test", ""])
def test_s3_keys_live_under_the_prefix(s3_settings: S3Settings, prefix: str) -> None:
    settings = with_settings(s3_settings, prefix=prefix)
    client = s3_client(settings.endpoint_url)
    for stranger in ("runbook-test2/pg/x.dump", "elsewhere/y", "runbook-test/folder/"):
        client.put_object(Bucket=settings.bucket, Key=stranger, Body=b"not ours")
    store = open_storage(settings)

    store.put_bytes("pg/app/full.dump", b"ours")

    full_key = f"{prefix}/pg/app/full.dump" if prefix else "pg/app/full.dump"
    assert head(settings, full_key)["ContentLength"] == 4
    assert store.describe() == f"s3://{settings.bucket}/{prefix}".rstrip("/")
    if prefix:
        assert keys(store) == ["pg/app/full.dump"]
    else:  # every key in the bucket is ours, except the folder marker no key can name
        assert keys(store) == ["elsewhere/y", "pg/app/full.dump", "runbook-test2/pg/x.dump"]


@pytest.mark.parametrize("size", [1000, 6 * MIB], ids=["put-object", "multipart"])
def test_s3_server_side_encryption_is_requested(s3_settings: S3Settings, size: int) -> None:
    store = S3Storage(with_settings(s3_settings, sse="AES256"))

    store.put("pg/app/full.dump", chunked(random_bytes(size)))

    assert head(s3_settings, "runbook-test/pg/app/full.dump")["ServerSideEncryption"] == "AES256"


def test_s3_put_retries_500s(s3_settings: S3Settings, faulty_s3_proxy: Any) -> None:
    proxy = faulty_s3_proxy(2, methods=("PUT",))
    store = S3Storage(with_settings(s3_settings, endpoint_url=proxy.endpoint_url, max_attempts=5))
    data = random_bytes(12 * MIB)

    info = store.put("pg/app/full.dump", chunked(data))

    assert proxy.injected == 2
    assert info.size == len(data)
    direct = S3Storage(s3_settings)  # read back around the proxy
    assert direct.get_bytes("pg/app/full.dump") == data


@pytest.mark.parametrize("size", [1000, 12 * MIB], ids=["put-object", "multipart"])
def test_s3_put_fails_transient_when_attempts_run_out_and_leaks_no_secret(
    s3_settings: S3Settings, faulty_s3_proxy: Any, size: int
) -> None:
    proxy = faulty_s3_proxy(1, methods=("PUT",))
    key_id, secret = f"AKIA{uuid.uuid4().hex[:16].upper()}", f"sEcReT-{uuid.uuid4().hex}"
    settings = with_settings(
        s3_settings,
        endpoint_url=proxy.endpoint_url,
        max_attempts=1,
        access_key_id=key_id,
        secret_access_key=secret,
    )
    store = S3Storage(settings)

    with pytest.raises(TransientStorageError) as raised:
        store.put("pg/app/full.dump", chunked(random_bytes(size)))

    assert proxy.injected == 1, "max_attempts=1 means one attempt, no retry"
    message = str(raised.value)
    assert "pg/app/full.dump" in message and "InternalError" in message
    assert ("PutObject" if size < PART else "UploadPart") in message
    printed = "".join(traceback.format_exception(raised.value))
    for leak in (secret, key_id, "Signature", "Authorization", "Credential="):
        assert leak not in printed
    assert not S3Storage(s3_settings).exists("pg/app/full.dump")
    assert S3Backend(s3_settings).incomplete() == [], "the failed multipart upload was aborted"


def test_s3_missing_bucket_is_a_permanent_error(s3_settings: S3Settings) -> None:
    store = S3Storage(with_settings(s3_settings, bucket=f"runbook-missing-{uuid.uuid4().hex}"))

    for attempt in (lambda: store.put_bytes("pg/x.dump", b"x"), lambda: list(store.list())):
        with pytest.raises(StorageError) as raised:
            attempt()
        assert not isinstance(raised.value, TransientStorageError)
        assert "NoSuchBucket" in str(raised.value)


def test_s3_connection_refused_is_transient(s3_settings: S3Settings) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    store = S3Storage(with_settings(s3_settings, endpoint_url=endpoint, max_attempts=1))

    with pytest.raises(TransientStorageError) as raised:
        store.put_bytes("pg/x.dump", b"x")
    assert "EndpointConnectionError" in str(raised.value)


def test_s3_cleanup_incomplete_stays_inside_the_prefix(s3_settings: S3Settings) -> None:
    client = s3_client(s3_settings.endpoint_url)
    for key in ("elsewhere/half.dump", "runbook-test/pg/half.dump"):
        client.create_multipart_upload(Bucket=s3_settings.bucket, Key=key)
    store = S3Storage(s3_settings)

    assert store.cleanup_incomplete(datetime.now(UTC) + timedelta(days=1)) == 1
    assert S3Backend(s3_settings).incomplete() == ["elsewhere/half.dump"]


def test_faulty_proxy_forwards_boto3_requests_unchanged(
    s3_settings: S3Settings, faulty_s3_proxy: Any
) -> None:
    proxy = faulty_s3_proxy(1, methods=("GET",))
    client = s3_client(proxy.endpoint_url, retries={"total_max_attempts": 1})
    bucket = s3_settings.bucket

    client.put_object(Bucket=bucket, Key="k", Body=b"through the proxy")
    with pytest.raises(ClientError) as raised:
        client.get_object(Bucket=bucket, Key="k")
    body = client.get_object(Bucket=bucket, Key="k")["Body"].read()
    client.delete_object(Bucket=bucket, Key="k")

    assert raised.value.response["Error"]["Code"] == "InternalError"
    assert body == b"through the proxy"
    assert (proxy.injected, proxy.forwarded) == (1, 3)
    assert "Contents" not in s3_client(s3_settings.endpoint_url).list_objects_v2(Bucket=bucket)


def test_faulty_proxy_forwards_host_header_and_body_unchanged() -> None:
    received: list[tuple[str, str, dict[str, str], bytes]] = []

    class Recorder(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.command, self.path, dict(self.headers), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=upstream.serve_forever, args=(0.05,), daemon=True).start()
    proxy = FaultyS3Proxy(f"http://127.0.0.1:{upstream.server_address[1]}", fail_first=0)
    signed = {
        "Host": "bucket.s3.example.test:9000",
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIA/x, SignedHeaders=host, Signature=ab",
        "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
    }
    try:
        connection = http.client.HTTPConnection(*proxy.endpoint_url[7:].split(":"))
        connection.request("PUT", "/key?partNumber=1&uploadId=u", body=b"part", headers=signed)
        status = connection.getresponse().status
        connection.close()
    finally:
        proxy.stop()
        upstream.shutdown()
        upstream.server_close()

    assert status == 200
    [(method, path, headers, body)] = received
    assert (method, path, body) == ("PUT", "/key?partNumber=1&uploadId=u", b"part")
    assert {name: headers[name] for name in signed} == signed
    assert (proxy.injected, proxy.forwarded) == (0, 1)


def test_s3_put_memory_stays_bounded(moto_server_process: str) -> None:
    settings = make_bucket(moto_server_process, part_size_mb=5, max_concurrency=4)
    store = S3Storage(settings)
    total = 200 * MIB

    block = os.urandom(MIB)

    def big_dump() -> Iterator[bytes]:
        # A fresh bytes object per chunk, as pipe reads give, and faster than the uploads:
        # without back-pressure the parts would pile up in memory.
        for number in range(total // MIB):
            yield number.to_bytes(8, "big") + block[8:]

    tracemalloc.start()
    try:
        info = store.put("pg/app/big.dump", big_dump())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        store.close()

    assert info.size == total
    assert 5 * MIB < peak < 60 * MIB, f"peak {peak / MIB:.1f} MiB"
    drop_bucket(moto_server_process, settings.bucket)
