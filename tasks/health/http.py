"""HTTP health checks: status, latency, JSON body conditions, body text and certificate expiry.

One endpoint yields, in this order:
  http.status     the status code is one of `expect.status`; unreachable endpoints (refused,
                  DNS, timeout, TLS handshake) get the configured `unreachable` status
  http.latency    seconds until the whole body was read, graded with `latency_seconds`
  http.json       only with `expect.json`: dotted paths -> expected values, '*' = every item
  http.body       only with `expect.body_contains`
  tls.days_left   https only: days until the server certificate's notAfter, read over a
                  separate unverified TLS connection so self-signed and expired certs still
                  tell their expiry

`check_http` runs many endpoints concurrently in a private event loop, each under a hard
deadline, so one hung server cannot stall the run. No header value, URL userinfo or
secret-looking query value ever appears in a message: URLs are shown redacted and every
message is scrubbed of the target's secrets before it is returned.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import httpx
from cryptography import x509
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from runbook.config import HttpTarget
from runbook.health import CheckResult, Status, measured, timer

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


def request_url(url: str, headers: dict[str, str]) -> str:
    """`url` as requested: without its userinfo when an explicit Authorization header is set,
    which httpx would otherwise replace with Basic credentials made from the userinfo."""
    parts = urlsplit(url)
    if "@" not in parts.netloc or not any(k.lower() == "authorization" for k in headers):
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def scrub(text: str, secrets: set[str]) -> str:
    """`text` with every secret (longest first) replaced by ***."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= _MIN_SECRET:
            text = text.replace(secret, "***")
    return text


def scrub_results(results: list[CheckResult], secrets: set[str]) -> list[CheckResult]:
    clean = []
    for result in results:
        update: dict[str, Any] = {"message": scrub(result.message, secrets)}
        if isinstance(result.value, str):
            update["value"] = scrub(result.value, secrets)
        clean.append(result.model_copy(update=update))
    return clean


def secrets_of(url: str, headers: dict[str, SecretStr]) -> set[str]:
    """Everything of a target that must never appear in a result."""
    secrets = url_secrets(url)
    for value in headers.values():
        raw = value.get_secret_value()
        secrets.add(raw)
        # "Bearer abc123": the credential alone must not leak either
        secrets.update(part for part in raw.split() if len(part) >= 8)
    return secrets


def _target_secrets(target: HttpTarget) -> set[str]:
    return secrets_of(target.url, target.headers)


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


# --- JSON conditions -------------------------------------------------------------------------


_MISSING = "missing"
_NOT_CONTAINER = "not a list or mapping"
_EMPTY = "empty"


def _walk(node: Any, segments: list[str], prefix: str) -> Iterator[tuple[str, str | None, Any]]:
    """(concrete path, problem or None, value) for every match of the dotted path."""

    def join(key: str) -> str:
        return f"{prefix}.{key}" if prefix else key

    if not segments:
        yield prefix, None, node
        return
    head, rest = segments[0], segments[1:]
    if head == "*":
        if isinstance(node, dict):
            items = [(str(k), v) for k, v in node.items()]
        elif isinstance(node, list):
            items = [(str(i), v) for i, v in enumerate(node)]
        else:
            yield prefix or "<root>", _NOT_CONTAINER, node
            return
        if not items:
            yield join("*"), _EMPTY, node
        for key, child in items:
            yield from _walk(child, rest, join(key))
        return
    if isinstance(node, dict) and head in node:
        yield from _walk(node[head], rest, join(head))
    elif (
        isinstance(node, list)
        and re.fullmatch(r"-?\d+", head)
        and -len(node) <= int(head) < len(node)
    ):
        yield from _walk(node[int(head)], rest, join(head))
    else:
        yield ".".join([join(head), *rest]), _MISSING, None


def _same(actual: Any, expected: Any) -> bool:
    # JSON true is not 1 and 1 is not true, although Python says they are equal
    if isinstance(actual, bool) or isinstance(expected, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and actual == expected
    return actual == expected


def _show(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_failures(document: Any, conditions: dict[str, Any]) -> list[str]:
    """One sentence per failing condition: 'checks.cache is false, expected true'."""
    failures = []
    for path, expected in conditions.items():
        for where, problem, value in _walk(document, path.split("."), ""):
            if problem == _MISSING:
                failures.append(f"{where} is missing")
            elif problem == _EMPTY:
                failures.append(f"{where} matched nothing ({_show(value)})")
            elif problem == _NOT_CONTAINER:
                failures.append(f"{where} is {_show(value)}, not a list or mapping for {path}")
            elif not _same(value, expected):
                failures.append(f"{where} is {_show(value)}, expected {_show(expected)}")
    return failures


# --- one endpoint ----------------------------------------------------------------------------


@dataclass
class _Answer:
    status_code: int
    body: bytes
    encoding: str
    truncated: bool
    seconds: float


@dataclass
class _NoAnswer:
    message: str
    verification: bool  # the certificate failed verification: a finding, always critical
    seconds: float


@dataclass
class _Certificate:
    days_left: float | None  # None: could not be read
    message: str
    seconds: float


async def _request(target: HttpTarget, client: httpx.AsyncClient) -> _Answer | _NoAnswer:
    timeout = target.timeout.total_seconds()
    headers = {name: value.get_secret_value() for name, value in target.headers.items()}
    url = request_url(target.url, headers)
    request = client.build_request(
        target.method, url, headers=headers, timeout=httpx.Timeout(timeout)
    )
    with timer() as elapsed:
        try:
            response = await client.send(request, stream=True)
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
            verify = verification_error(exc)
            if verify is not None:
                return _NoAnswer(f"TLS certificate verification failed: {verify}", True, elapsed())
            host = urlsplit(target.url).hostname or ""
            return _NoAnswer(describe_failure(exc, timeout, host), False, elapsed())
        body = b"".join(chunks)[:MAX_BODY]
        return _Answer(
            response.status_code, body, response.encoding or "utf-8", truncated, elapsed()
        )


def _unverified_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def read_certificate(host: str, port: int, timeout: float) -> x509.Certificate:
    """The server's leaf certificate, read without verifying it (expired, self-signed...)."""
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


async def _certificate(target: HttpTarget) -> _Certificate:
    parts = urlsplit(target.url)
    host, port = parts.hostname or "", parts.port or 443
    with timer() as elapsed:
        try:
            cert = await read_certificate(host, port, target.timeout.total_seconds())
        except (OSError, TimeoutError, ValueError) as exc:
            reason = describe_failure(exc, target.timeout.total_seconds(), host)
            return _Certificate(None, f"could not read the certificate: {reason}", elapsed())
        not_after = cert.not_valid_after_utc
        days = (not_after - datetime.now(UTC)).total_seconds() / 86400
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        who = f"CN={names[0].value}" if names else "the certificate"
        when = not_after.strftime("%Y-%m-%d %H:%M UTC")
        if days < 0:
            text = f"{who} expired {-days:.1f} days ago (notAfter {when})"
        else:
            text = f"{who} expires in {days:.1f} days (notAfter {when})"
        return _Certificate(round(days, 2), text, elapsed())


async def _no_certificate() -> None:
    return None


def _expected(status: int | list[int]) -> list[int]:
    return [status] if isinstance(status, int) else list(status)


def unreachable_status(unreachable: Status | str) -> Status:
    status = Status(unreachable)
    if status == Status.OK:
        raise ValueError("an unreachable endpoint is never ok: use 'unknown' or 'critical'")
    return status


async def check_endpoint(
    target: HttpTarget, client: httpx.AsyncClient, unreachable: Status
) -> list[CheckResult]:
    """The checks of one endpoint (see the module docstring), with `client` for the request.

    The certificate is read concurrently over its own connection, so it costs no latency."""
    unreachable = unreachable_status(unreachable)
    https = urlsplit(target.url).scheme == "https"
    answer, certificate = await asyncio.gather(
        _request(target, client), _certificate(target) if https else _no_certificate()
    )
    results = _grade(target, answer, certificate, unreachable)
    return scrub_results(results, _target_secrets(target))


def _grade(
    target: HttpTarget,
    answer: _Answer | _NoAnswer,
    certificate: _Certificate | None,
    unreachable: Status,
) -> list[CheckResult]:
    name, shown = target.name, f"{target.method} {redact_url(target.url)}"
    expected = _expected(target.expect.status)
    wanted = " or ".join(str(code) for code in expected) or "nothing"
    results: list[CheckResult] = []

    if isinstance(answer, _NoAnswer):
        status = Status.CRITICAL if answer.verification else unreachable
        results.append(
            CheckResult(
                check="http.status",
                target=name,
                status=status,
                threshold=f"status {wanted}",
                message=f"{shown}: {answer.message}",
                duration=round(answer.seconds, 4),
            )
        )
    else:
        code, seconds = answer.status_code, round(answer.seconds, 4)
        ok = code in expected
        results.append(
            CheckResult(
                check="http.status",
                target=name,
                status=Status.OK if ok else Status.CRITICAL,
                value=code,
                threshold=f"status {wanted}",
                message=f"{shown} returned {code}" + ("" if ok else f" (expected {wanted})"),
                duration=seconds,
            )
        )
        results.append(
            measured(
                "http.latency",
                name,
                seconds,
                target.latency_seconds,
                f"{shown} answered in {answer.seconds:.3f}s",
                unit="s",
                duration=seconds,
            )
        )
        cut = f" (first {MAX_BODY >> 20} MiB)" if answer.truncated else ""
        if target.expect.json_:
            results.append(_json_result(target, answer, cut))
        if target.expect.body_contains is not None:
            needle = target.expect.body_contains
            try:
                text = answer.body.decode(answer.encoding, errors="replace")
            except LookupError:  # a charset Python does not know
                text = answer.body.decode("utf-8", errors="replace")
            found = needle in text
            results.append(
                CheckResult(
                    check="http.body",
                    target=name,
                    status=Status.OK if found else Status.CRITICAL,
                    value=found,
                    threshold=f"contains {needle!r}",
                    message=f"body{cut} {'contains' if found else 'does not contain'} {needle!r}",
                    duration=seconds,
                )
            )

    if certificate is not None and (
        certificate.days_left is not None or not isinstance(answer, _NoAnswer)
    ):
        # unreadable certificate of an unreachable server: http.status already says it all
        results.append(
            measured(
                "tls.days_left",
                name,
                certificate.days_left,
                target.tls_days,
                certificate.message,
                unit="d",
                duration=certificate.seconds,
            )
        )
    return results


def _json_result(target: HttpTarget, answer: _Answer, cut: str) -> CheckResult:
    conditions = target.expect.json_
    described = ", ".join(f"{path} = {_show(value)}" for path, value in conditions.items())
    base = {
        "check": "http.json",
        "target": target.name,
        "threshold": described,
        "duration": round(answer.seconds, 4),
    }
    try:
        document = json.loads(answer.body)
    except ValueError:
        return CheckResult(
            **base,
            status=Status.CRITICAL,
            value=len(conditions),
            message=f"body{cut} is not JSON",
        )
    failures = json_failures(document, conditions)
    if failures:
        return CheckResult(
            **base, status=Status.CRITICAL, value=len(failures), message="; ".join(failures)
        )
    return CheckResult(
        **base,
        status=Status.OK,
        value=0,
        message=f"all {len(conditions)} JSON condition(s) hold",
    )


# --- many endpoints --------------------------------------------------------------------------


def _verify_key(target: HttpTarget) -> tuple[str, str]:
    if not target.verify_tls:
        return ("off", "")
    if target.ca_file is not None:
        return ("ca_file", str(target.ca_file))
    return ("default", "")


def _verify_setting(key: tuple[str, str]) -> bool | ssl.SSLContext:
    kind, path = key
    if kind == "off":
        return False
    if kind == "ca_file":
        return ssl.create_default_context(cafile=path)
    return True


def _failed(target: HttpTarget, status: Status, message: str, seconds: float) -> CheckResult:
    result = CheckResult(
        check="http.status",
        target=target.name,
        status=status,
        message=f"{target.method} {redact_url(target.url)}: {message}",
        duration=round(seconds, 4),
    )
    return scrub_results([result], _target_secrets(target))[0]


async def _check_all(
    targets: list[HttpTarget], unreachable: Status, concurrency: int, deadline: float | None
) -> list[list[CheckResult]]:
    semaphore = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    clients: dict[tuple[str, str], httpx.AsyncClient | str] = {}
    for key in {_verify_key(t) for t in targets}:
        try:
            clients[key] = httpx.AsyncClient(
                verify=_verify_setting(key), limits=limits, follow_redirects=False
            )
        except (OSError, ssl.SSLError) as exc:  # an unreadable ca_file fails its targets only
            clients[key] = f"cannot load ca_file {key[1]}: {getattr(exc, 'strerror', None) or exc}"

    async def one(target: HttpTarget) -> list[CheckResult]:
        client = clients[_verify_key(target)]
        if isinstance(client, str):
            return [_failed(target, Status.CRITICAL, client, 0.0)]
        limit = deadline if deadline is not None else target.timeout.total_seconds() + 1
        async with semaphore:
            with timer() as elapsed:
                try:
                    async with asyncio.timeout(limit):
                        return await check_endpoint(target, client, unreachable)
                except TimeoutError:
                    return [_failed(target, unreachable, f"no answer within {limit:g}s", elapsed())]
                except Exception as exc:  # a bug here must not cost the other endpoints
                    text = f"check failed: {type(exc).__name__}: {exc}"
                    return [_failed(target, Status.UNKNOWN, text, elapsed())]

    try:
        return await asyncio.gather(*(one(target) for target in targets))
    finally:
        for client in clients.values():
            if isinstance(client, httpx.AsyncClient):
                await client.aclose()


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


def check_http(
    targets: list[HttpTarget],
    *,
    unreachable: Status = Status.CRITICAL,
    concurrency: int = 32,
    deadline: float | None = None,
) -> list[CheckResult]:
    """Check every endpoint concurrently; results in the order of `targets`.

    Each endpoint is bounded by `deadline` seconds (default: its timeout + 1 s) once it has a
    slot among `concurrency`. Safe from any thread: the checks run in a fresh event loop, in a
    worker thread when this thread already runs a loop (an async Prefect flow or task)."""
    unreachable = unreachable_status(unreachable)
    if not targets:
        return []
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")

    def make() -> Awaitable[list[list[CheckResult]]]:
        return _check_all(list(targets), unreachable, concurrency, deadline)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        nested = _run_in_fresh_loop(make)
    else:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="check_http") as pool:
            nested = pool.submit(_run_in_fresh_loop, make).result()
    return [result for per_target in nested for result in per_target]
