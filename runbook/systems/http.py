"""HTTP as Runbook talks to it: secrets kept out of URLs and text, one request whose failure
is described in an operator's words, a server's TLS certificate read without verifying it, and
a fresh event loop to run async clients from any thread.

Secrets: header values, URL userinfo (and the Basic credential httpx derives from it) and
secret-looking query values. `redact_url` is the form of a URL to show; `scrub` replaces every
secret of `secrets_of(url, headers)` in a text. `request` scrubs the failures it returns.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import httpx
from cryptography import x509
from pydantic import SecretStr

MAX_BODY = 2 << 20  # bytes read of a response body; health endpoints answer a few hundred
_SECRET_KEY = re.compile(r"token|key|secret|pass|pwd|auth|sig|credential|session|code", re.I)
_MIN_SECRET = 3  # shorter "secrets" would mangle every message when scrubbed
_T = TypeVar("_T")


# --- secrets ---------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """The URL without userinfo, query values or fragment: https://host/health?token=***."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "<unparsable URL>"
    query = "&".join(f"{key}=***" for key, _ in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def url_secrets(url: str) -> set[str]:
    """Userinfo and secret-looking query values of a URL, raw and percent-decoded."""
    found: set[str] = set()
    try:
        parts = urlsplit(url)
    except ValueError:
        return found
    for raw in (parts.username, parts.password):
        if raw:
            found |= {raw, unquote(raw)}
    if parts.username or parts.password:  # the Basic credential httpx derives from them
        pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        found.add(base64.b64encode(pair.encode()).decode())
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if value and _SECRET_KEY.search(key):
            found |= {value, urlencode({"v": value})[2:]}
    return found


def secrets_of(url: str, headers: Mapping[str, SecretStr]) -> set[str]:
    """Everything of an endpoint's config that must never appear in a text."""
    secrets = url_secrets(url)
    for value in headers.values():
        raw = value.get_secret_value()
        secrets.add(raw)
        # "Bearer abc123": the credential alone must not leak either
        secrets.update(part for part in raw.split() if len(part) >= 8)
    return secrets


def scrub(text: str, secrets: set[str]) -> str:
    """`text` with every secret (longest first) replaced by ***."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= _MIN_SECRET:
            text = text.replace(secret, "***")
    return text


def plain_headers(headers: Mapping[str, SecretStr]) -> dict[str, str]:
    """The header values to send (config keeps them as SecretStr)."""
    return {name: value.get_secret_value() for name, value in headers.items()}


def request_url(url: str, headers: Mapping[str, str]) -> str:
    """`url` as requested: without its userinfo when an explicit Authorization header is set,
    which httpx would otherwise replace with Basic credentials made from the userinfo."""
    parts = urlsplit(url)
    if "@" not in parts.netloc or not any(k.lower() == "authorization" for k in headers):
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


# --- failures --------------------------------------------------------------------------------


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """exc, its __cause__/__context__ chain and the members of exception groups."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                stack.append(linked)


def verification_error(exc: BaseException) -> str | None:
    """The certificate verification error inside exc, e.g. 'self-signed certificate'."""
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause.verify_message or cause.reason or str(cause)
    return None


def describe_failure(exc: BaseException, timeout: float, host: str) -> str:
    """Why no answer came, in an operator's words: 'connection refused', 'timed out after 5s'."""
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return f"timed out after {timeout:g}s"
    for cause in _causes(exc):
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve host {host}: {cause.strerror or cause}"
        if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) in (
            errno.ECONNREFUSED,
        ):
            return "connection refused"
        if isinstance(cause, ConnectionResetError):
            return "connection reset by the server"
        if isinstance(cause, ssl.SSLError) and not isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS handshake failed: {cause.reason or cause}"
        if isinstance(cause, OSError) and cause.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return f"host unreachable: {cause.strerror}"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"no valid HTTP answer: {exc}"
    text = str(exc) or type(exc).__name__
    return f"cannot connect: {text}"


# --- one request -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """What to ask: `headers` and secrets in `url` are kept out of every text returned."""

    url: str
    method: str = "GET"
    headers: Mapping[str, SecretStr] = field(default_factory=dict)
    timeout: float = 10.0
    content: bytes | None = field(default=None, repr=False)  # the request body
    content_type: str | None = None  # sent unless `headers` has a Content-Type


@dataclass
class Answer:
    status_code: int
    body: bytes  # decoded (gzip...), at most MAX_BODY bytes
    encoding: str
    truncated: bool  # the body was longer than MAX_BODY
    seconds: float  # until the body was read


@dataclass
class NoAnswer:
    message: str  # why, with no secret in it: 'connection refused', 'timed out after 5s'
    verification: bool  # the server's certificate failed verification
    seconds: float


async def request(endpoint: Endpoint, client: httpx.AsyncClient) -> Answer | NoAnswer:
    """One request with `client`, its body read up to MAX_BODY; a failure is a NoAnswer."""
    headers = plain_headers(endpoint.headers)
    sent = dict(headers)
    if endpoint.content_type and not any(k.lower() == "content-type" for k in headers):
        sent["Content-Type"] = endpoint.content_type
    outgoing = client.build_request(
        endpoint.method,
        request_url(endpoint.url, headers),
        headers=sent,
        content=endpoint.content,
        timeout=httpx.Timeout(endpoint.timeout),
    )
    started = time.perf_counter()
    try:
        response = await client.send(outgoing, stream=True)
        try:
            chunks, size, truncated = [], 0, False
            async for chunk in response.aiter_bytes():  # decoded (gzip...)
                chunks.append(chunk)
                size += len(chunk)
                if size >= MAX_BODY:
                    truncated = True
                    break
        finally:
            await response.aclose()
    except httpx.HTTPError as exc:
        seconds = time.perf_counter() - started
        secrets = secrets_of(endpoint.url, endpoint.headers)
        verify = verification_error(exc)
        if verify is not None:
            message = f"TLS certificate verification failed: {verify}"
            return NoAnswer(scrub(message, secrets), True, seconds)
        host = urlsplit(endpoint.url).hostname or ""
        message = describe_failure(exc, endpoint.timeout, host)
        return NoAnswer(scrub(message, secrets), False, seconds)
    body = b"".join(chunks)[:MAX_BODY]
    seconds = time.perf_counter() - started
    return Answer(response.status_code, body, response.encoding or "utf-8", truncated, seconds)


@dataclass(frozen=True)
class TlsVerification:
    """How a client verifies servers: not at all, against the system CAs, or a CA file.
    Hashable, so endpoints that verify alike can share one client."""

    verify: bool = True
    ca_file: str | None = None

    @classmethod
    def of(cls, verify_tls: bool, ca_file: Path | str | None) -> TlsVerification:
        if not verify_tls:
            return cls(False)
        return cls(True, str(ca_file) if ca_file is not None else None)

    def setting(self) -> bool | ssl.SSLContext:
        """httpx's `verify`; raises OSError or ssl.SSLError when the CA file cannot be read."""
        if not self.verify:
            return False
        if self.ca_file is not None:
            return ssl.create_default_context(cafile=self.ca_file)
        return True


def async_client(verification: TlsVerification, connections: int) -> httpx.AsyncClient:
    """A client for many requests, at most `connections` at once, redirects not followed
    (a health endpoint that redirects says so). Raises as TlsVerification.setting does."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(verify=verification.setting(), limits=limits, follow_redirects=False)


# --- certificates ----------------------------------------------------------------------------


def _unverified_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def read_certificate(host: str, port: int, timeout: float) -> x509.Certificate:
    """The server's leaf certificate, read without verifying it (expired, self-signed...).
    Raises OSError, TimeoutError or ValueError (describe_failure says why in words)."""
    async with asyncio.timeout(timeout):
        _, writer = await asyncio.open_connection(
            host, port, ssl=_unverified_context(), server_hostname=host
        )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        try:
            async with asyncio.timeout(1):
                await writer.wait_closed()
        except (TimeoutError, OSError):
            pass
    if not der:
        raise ssl.SSLError("the server sent no certificate")
    return x509.load_der_x509_certificate(der)


# --- running async clients -------------------------------------------------------------------


def _run_in_fresh_loop(make: Callable[[], Awaitable[_T]]) -> _T:
    """asyncio.run, except that closing does not wait for the default executor: a DNS lookup
    stuck in getaddrinfo must not hold the run after its deadline has passed."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(make())
    finally:
        try:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()  # shuts the default executor down with wait=False


def run_async(make: Callable[[], Awaitable[_T]], thread_name: str = "runbook-http") -> _T:
    """`await make()` from synchronous code, safe from any thread: in a fresh event loop, in a
    worker thread when this thread already runs a loop (an async Prefect flow or task)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_in_fresh_loop(make)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name) as pool:
        return pool.submit(_run_in_fresh_loop, make).result()
