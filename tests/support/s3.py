"""S3 for tests: moto's server on 127.0.0.1, fresh buckets, and a proxy that answers 500.

Import the fixtures into a test module with
`from tests.support.s3 import moto_server, s3_settings, faulty_s3_proxy  # noqa: F401`.
Credentials are passed explicitly everywhere; the environment is never touched.
"""

from __future__ import annotations

import http.client
import logging
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

from runbook.config import S3Storage

FAKE_KEY_ID = "testing"
FAKE_SECRET = "testing"
REGION = "us-east-1"
TEST_PREFIX = "runbook-test"


_SESSION = boto3.session.Session()  # clients are cheap from a session that loaded the model
_SESSION_LOCK = threading.Lock()  # creating clients from one session is not thread-safe


def s3_client(endpoint_url: str, **config: Any) -> Any:
    """A plain boto3 client for setting up and inspecting buckets behind the storage's back."""
    with _SESSION_LOCK:
        return _SESSION.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=REGION,
            aws_access_key_id=FAKE_KEY_ID,
            aws_secret_access_key=FAKE_SECRET,
            config=Config(s3={"addressing_style": "path"}, **config),
        )


def make_bucket(endpoint_url: str, **overrides: Any) -> S3Storage:
    """Create a bucket with a unique name and return storage settings pointing at it."""
    bucket = f"runbook-test-{uuid.uuid4().hex[:12]}"
    s3_client(endpoint_url).create_bucket(Bucket=bucket)
    values: dict[str, Any] = {
        "kind": "s3",
        "bucket": bucket,
        "prefix": TEST_PREFIX,
        "endpoint_url": endpoint_url,
        "region": REGION,
        "access_key_id": FAKE_KEY_ID,
        "secret_access_key": FAKE_SECRET,
        "part_size_mb": 5,
        "max_concurrency": 4,
    }
    values.update(overrides)
    return S3Storage.model_validate(values)


def drop_bucket(endpoint_url: str, bucket: str) -> None:
    """Empty and delete a bucket, so moto's memory does not grow test after test."""
    client = s3_client(endpoint_url)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", ()):
            client.delete_object(Bucket=bucket, Key=item["Key"])
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", ()):
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    client.delete_bucket(Bucket=bucket)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's S3 in a thread of the test process; yields its endpoint URL."""
    access_log = logging.getLogger("werkzeug")  # one line per request otherwise
    level = access_log.level
    access_log.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        access_log.setLevel(level)


@pytest.fixture(scope="session")
def moto_server_process() -> Iterator[str]:
    """moto's S3 in a child process, for tests that measure the test process's own memory.

    In-process moto holds every part and joins them on CompleteMultipartUpload, which
    tracemalloc would count against the code under test.
    """
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def s3_settings(moto_server: str) -> Iterator[S3Storage]:
    """Settings for a fresh, empty bucket on the moto server (prefix runbook-test, 5 MiB parts)."""
    settings = make_bucket(moto_server)
    yield settings
    drop_bucket(moto_server, settings.bucket)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"moto server did not listen on 127.0.0.1:{port} within {timeout}s")


# --- a proxy that makes S3 fail ------------------------------------------------------------

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",  # the proxy answers 100-continue itself; not part of the SigV4 signature
}
_COPY_SIZE = 256 * 1024
_INTERNAL_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>InternalError</Code>"
    b"<Message>We encountered an internal error. Please try again.</Message>"
    b"<RequestId>faulty-s3-proxy</RequestId></Error>"
)


class FaultyS3Proxy:
    """A reverse proxy on 127.0.0.1 in front of an S3 endpoint.

    Forwards requests unchanged (the Host header too: SigV4 signs it) except the first
    `fail_first` whose method is in `methods`: those get HTTP 500 InternalError without reaching
    S3. `injected` counts those answers, `forwarded` the requests passed on.
    """

    def __init__(self, upstream_url: str, fail_first: int, methods: tuple[str, ...] = ("PUT",)):
        upstream = urlsplit(upstream_url)
        self.upstream = (upstream.hostname or "127.0.0.1", upstream.port or 80)
        self.fail_first = fail_first
        self.methods = {method.upper() for method in methods}
        self.injected = 0
        self.forwarded = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # so that stop() returns quickly
            name="faulty-s3-proxy",
            daemon=True,
        )
        self._thread.start()

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def should_fail(self, method: str) -> bool:
        with self._lock:
            if method in self.methods and self.injected < self.fail_first:
                self.injected += 1
                return True
            self.forwarded += 1
            return False

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _make_handler(proxy: FaultyS3Proxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_request(self) -> None:
            if proxy.should_fail(self.command):
                self._drain_body()
                self._answer_internal_error()
                return
            self._forward()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_request

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep pytest output clean

        def _chunked(self) -> bool:
            return "chunked" in self.headers.get("Transfer-Encoding", "").lower()

        def _body_chunks(self) -> Iterator[bytes]:
            """The request body as it arrives, whether sized or chunked."""
            if self._chunked():
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return
                    yield self.rfile.read(size)
                    self.rfile.readline()
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining > 0:
                data = self.rfile.read(min(_COPY_SIZE, remaining))
                if not data:
                    return
                remaining -= len(data)
                yield data

        def _drain_body(self) -> None:
            for _ in self._body_chunks():
                pass

        def _answer_internal_error(self) -> None:
            self.send_response_only(500, "Internal Server Error")
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(_INTERNAL_ERROR)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(_INTERNAL_ERROR)

        def _forward(self) -> None:
            upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
            try:
                upstream.putrequest(
                    self.command, self.path, skip_host=True, skip_accept_encoding=True
                )
                for name, value in self.headers.items():
                    if name.lower() not in _HOP_BY_HOP:
                        upstream.putheader(name, value)
                chunked = self._chunked()
                if chunked:
                    upstream.putheader("Transfer-Encoding", "chunked")
                upstream.endheaders()
                for data in self._body_chunks():
                    upstream.send(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
                if chunked:
                    upstream.send(b"0\r\n\r\n")
                response = upstream.getresponse()
                self._relay(response)
            finally:
                upstream.close()

        def _relay(self, response: http.client.HTTPResponse) -> None:
            self.send_response_only(response.status, response.reason)
            sized = response.getheader("Content-Length") is not None
            for name, value in response.getheaders():
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            body = b""
            if not sized and self.command != "HEAD" and response.status not in (204, 304):
                body = response.read()  # rare: moto sizes its answers
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command == "HEAD":
                return
            if body:
                self.wfile.write(body)
                return
            while data := response.read(_COPY_SIZE):
                self.wfile.write(data)

    return Handler


@pytest.fixture
def faulty_s3_proxy(moto_server: str) -> Iterator[Callable[..., FaultyS3Proxy]]:
    """A factory: `faulty_s3_proxy(fail_first, methods=("PUT",))` starts a proxy to moto."""
    started: list[FaultyS3Proxy] = []

    def start(fail_first: int, methods: tuple[str, ...] = ("PUT",)) -> FaultyS3Proxy:
        proxy = FaultyS3Proxy(moto_server, fail_first, methods)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()
