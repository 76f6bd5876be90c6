"""Prometheus as Runbook reads it: GET <url>/api/v1/query?query=... and the HTTP API's answer
as (labels, value) series:
  vector  one value per series              matrix  the last sample of each series
  scalar  one value, no labels              error   {"status": "error", ...} -> QueryError
Values are floats, NaN and +/-Inf included (Prometheus writes them as strings).
`flags()` reads the flags the server was started with (/api/v1/status/flags).

Errors are typed: PrometheusUnreachable (no answer; worth retrying), QueryError (Prometheus
refused the query), NotAnAnswer (whatever answered is not the API). No header value, URL
userinfo or secret-looking query value appears in their text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import httpx
from pydantic import SecretStr

from runbook.config import PrometheusTarget
from runbook.errors import PermanentError, TransientError
from runbook.systems.http import (
    describe_failure,
    plain_headers,
    redact_url,
    request_url,
    scrub,
    secrets_of,
)

Series = tuple[dict[str, str], float]  # (labels, value) of one series
RangeSeries = tuple[dict[str, str], list[tuple[float, float]]]  # (labels, [(unix time, value)])
_T = TypeVar("_T")


class NotAnAnswer(ValueError):
    """The body is not a Prometheus HTTP API answer."""


class PrometheusUnreachable(TransientError):
    """No answer: refused, timed out, DNS, TLS. `connection_failed` when no connection could be
    made at all, so later requests to the same server would fail the same way."""

    def __init__(self, message: str, *, connection_failed: bool) -> None:
        super().__init__(message)
        self.connection_failed = connection_failed


class QueryError(PermanentError):
    """Prometheus answered {"status": "error"}: a bad query, or one it could not execute."""

    def __init__(self, error_type: str, detail: str) -> None:
        super().__init__(f"Prometheus error ({error_type}): {detail}")
        self.error_type = error_type
        self.detail = detail


def _number(text: Any) -> float:
    try:
        return float(text)  # Prometheus writes "NaN", "+Inf", "-Inf" as strings
    except (TypeError, ValueError):
        raise NotAnAnswer(f"sample value {text!r} is not a number") from None


def series_of(data: dict[str, Any]) -> list[Series]:
    """(labels, value) per series of `data` in an API answer; matrix -> last sample."""
    kind, result = data.get("resultType"), data.get("result")
    if kind in ("scalar", "string"):
        if not isinstance(result, list) or len(result) != 2:
            raise NotAnAnswer(f"malformed {kind} result")
        return [({}, _number(result[1]))]
    if not isinstance(result, list):
        raise NotAnAnswer(f"unexpected result of type {kind!r}")
    series: list[Series] = []
    for item in result:
        labels = item.get("metric") or {}
        if kind == "vector":
            sample = item.get("value")  # native histograms carry "histogram" instead: skipped
        elif kind == "matrix":
            values = item.get("values") or []
            sample = values[-1] if values else None
        else:
            raise NotAnAnswer(f"unknown resultType {kind!r}")
        if isinstance(sample, list) and len(sample) == 2:
            series.append((labels, _number(sample[1])))
    return series


def range_series_of(data: dict[str, Any]) -> list[RangeSeries]:
    """(labels, [(time, value), ...]) per series of a query_range answer (a matrix)."""
    if data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
        raise NotAnAnswer(f"query_range answered {data.get('resultType')!r}, not a matrix")
    found: list[RangeSeries] = []
    for item in data["result"]:
        points = []
        for sample in item.get("values") or []:
            if not isinstance(sample, list) or len(sample) != 2:
                raise NotAnAnswer("malformed sample in a matrix")
            points.append((_number(sample[0]), _number(sample[1])))
        found.append((item.get("metric") or {}, points))
    return found


def flags_of(data: Any) -> dict[str, str]:
    """The flags of a /api/v1/status/flags answer: a JSON object of strings."""
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise NotAnAnswer("status/flags did not answer an object of strings")
    return dict(data)


def labels_text(labels: dict[str, str]) -> str:
    """{__name__="up", job="api"} -> up{job="api"}; no labels -> {}."""
    name = labels.get("__name__", "")
    rest = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{name}{{{rest}}}" if rest or not name else name


class Prometheus:
    """One Prometheus server's HTTP API over one connection pool (a context manager)."""

    def __init__(
        self, url: str, headers: Mapping[str, SecretStr] | None = None, timeout: float = 10.0
    ) -> None:
        headers = headers or {}
        plain = plain_headers(headers)
        self.timeout = timeout
        self._base = request_url(url, plain).rstrip("/")
        self._secrets = secrets_of(url, headers)
        self._client = httpx.Client(timeout=timeout, headers=plain, follow_redirects=True)

    @classmethod
    def for_target(cls, target: PrometheusTarget) -> Prometheus:
        return cls(target.url, target.headers, target.timeout.total_seconds())

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def query(self, promql: str) -> list[Series]:
        """The instant query's series. Raises PrometheusUnreachable, QueryError, NotAnAnswer."""
        return self._get("query", {"query": promql}, series_of)

    def query_range(
        self, promql: str, start: float, end: float, step: float
    ) -> list[RangeSeries]:
        """The range query's series between two unix times, one point per `step` seconds.
        Raises PrometheusUnreachable, QueryError, NotAnAnswer."""
        params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}"}
        params["step"] = f"{step:g}"
        return self._get("query_range", params, range_series_of)

    def flags(self) -> dict[str, str]:
        """The command-line flags the server runs with (GET /api/v1/status/flags), names
        without their dashes: {"storage.tsdb.retention.time": "15d", ...}. Raises
        PrometheusUnreachable, QueryError, NotAnAnswer."""
        return self._get("status/flags", {}, flags_of)

    def _get(self, api: str, params: dict[str, str], read: Callable[[dict[str, Any]], _T]) -> _T:
        """GET /api/v1/<api> and `read` the answer's data."""
        endpoint = f"{self._base}/api/v1/{api}"
        try:
            response = self._client.get(endpoint, params=params)
        except httpx.HTTPError as exc:
            reason = describe_failure(exc, self.timeout, httpx.URL(endpoint).host)
            raise PrometheusUnreachable(
                scrub(f"GET {redact_url(endpoint)}: {reason}", self._secrets),
                connection_failed=isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout),
            ) from None  # httpx's own text may carry the URL with its secrets
        try:
            payload = response.json()
            if not isinstance(payload, dict) or payload.get("status") not in ("success", "error"):
                raise NotAnAnswer("no status field")
            if payload["status"] == "error":
                kind = scrub(str(payload.get("errorType") or "error"), self._secrets)
                detail = scrub(str(payload.get("error") or "no detail"), self._secrets)
                raise QueryError(kind, detail)
            return read(payload.get("data") or {})
        except (ValueError, AttributeError) as exc:  # not JSON, or not the API's JSON
            snippet = response.text[:120].replace("\n", " ")
            detail = str(exc) if isinstance(exc, NotAnAnswer) else f"body {snippet!r}"
            message = f"HTTP {response.status_code} is not a Prometheus API answer: {detail}"
            raise NotAnAnswer(scrub(message, self._secrets)) from None
