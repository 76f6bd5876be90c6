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

Any method (GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE) with headers and a request body:
`json` (sent as application/json) or `body` (text). The body is never put in a message; with
`body_secret` it is also scrubbed from them (the whole body and each of its values), for a
server that echoes what it was sent.

`check_http` runs many endpoints concurrently in a private event loop, each under a hard
deadline, so one hung server cannot stall the run. No header value, URL userinfo or
secret-looking query value ever appears in a message: URLs are shown redacted and every
message is scrubbed of the target's secrets before it is returned. The requests, certificate
reads and secret handling are `runbook.systems.http`; this module grades what they return.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography.x509.oid import NameOID

from runbook.config import HttpTarget
from runbook.health import CheckResult, Status, measured, timer
from runbook.systems.http import (
    MAX_BODY,
    Answer,
    Endpoint,
    NoAnswer,
    TlsVerification,
    async_client,
    describe_failure,
    read_certificate,
    redact_url,
    request,
    run_async,
    scrub,
    secrets_of,
)

# --- targets ---------------------------------------------------------------------------------


def scrub_results(results: list[CheckResult], secrets: set[str]) -> list[CheckResult]:
    """The results with every secret scrubbed from their messages and text values."""
    clean = []
    for result in results:
        update: dict[str, Any] = {"message": scrub(result.message, secrets)}
        if isinstance(result.value, str):
            update["value"] = scrub(result.value, secrets)
        clean.append(result.model_copy(update=update))
    return clean


def _target_secrets(target: HttpTarget) -> set[str]:
    secrets = secrets_of(target.url, target.headers)
    if target.body_secret and target.has_body:
        secrets |= body_secrets(target)
    return secrets


def body_secrets(target: HttpTarget) -> set[str]:
    """A secret body as a whole, and each of its text values: a server that echoes
    one field back (a validation error) must not carry it into a message either."""
    if target.body is not None:
        return {target.body, *(line for line in target.body.splitlines() if line.strip())}
    found = {json.dumps(target.json_body), json.dumps(target.json_body, separators=(",", ":"))}

    def leaves(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                leaves(value)
        elif isinstance(node, list):
            for value in node:
                leaves(value)
        elif isinstance(node, str):  # numbers are left: scrubbing "200" would hide statuses
            found.update({node, json.dumps(node)[1:-1]})

    leaves(target.json_body)
    return found


def request_body(target: HttpTarget) -> tuple[bytes | None, str | None]:
    """(content, content type) of the target's request body."""
    if target.json_body is not None:
        return json.dumps(target.json_body).encode(), "application/json"
    if target.body is not None:
        return target.body.encode(), "text/plain; charset=utf-8"
    return None, None


def _endpoint(target: HttpTarget) -> Endpoint:
    content, content_type = request_body(target)
    return Endpoint(
        target.url,
        target.method,
        target.headers,
        target.timeout.total_seconds(),
        content,
        content_type,
    )


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
class _Certificate:
    days_left: float | None  # None: could not be read
    message: str
    seconds: float


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
        request(_endpoint(target), client), _certificate(target) if https else _no_certificate()
    )
    results = _grade(target, answer, certificate, unreachable)
    return scrub_results(results, _target_secrets(target))


def _grade(
    target: HttpTarget,
    answer: Answer | NoAnswer,
    certificate: _Certificate | None,
    unreachable: Status,
) -> list[CheckResult]:
    name, shown = target.name, f"{target.method} {redact_url(target.url)}"
    expected = _expected(target.expect.status)
    wanted = " or ".join(str(code) for code in expected) or "nothing"
    results: list[CheckResult] = []

    if isinstance(answer, NoAnswer):
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
        certificate.days_left is not None or not isinstance(answer, NoAnswer)
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


def _json_result(target: HttpTarget, answer: Answer, cut: str) -> CheckResult:
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
    clients: dict[TlsVerification, httpx.AsyncClient | str] = {}
    for verification in {_verification(t) for t in targets}:
        try:
            clients[verification] = async_client(verification, concurrency)
        except OSError as exc:  # an unreadable ca_file fails its targets only (SSLError too)
            reason = getattr(exc, "strerror", None) or exc
            clients[verification] = f"cannot load ca_file {verification.ca_file}: {reason}"

    async def one(target: HttpTarget) -> list[CheckResult]:
        client = clients[_verification(target)]
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


def _verification(target: HttpTarget) -> TlsVerification:
    return TlsVerification.of(target.verify_tls, target.ca_file)


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

    nested = run_async(make, thread_name="check_http")
    return [result for per_target in nested for result in per_target]
