"""A Prometheus server's TSDB snapshot API: POST /api/v1/admin/tsdb/snapshot makes the server
hard-link its blocks (and, unless skip_head, write its in-memory head as a block) into
<data dir>/snapshots/<name>, a consistent copy taken without stopping it. The admin API is
off unless Prometheus runs with --web.enable-admin-api ("admin APIs disabled").

Errors: PrometheusUnreachable (no answer: worth retrying, from runbook/systems/prometheus.py),
SnapshotRefused (the server answered no: admin API off, a failing disk). No header value or
URL userinfo appears in their text.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from runbook.errors import PermanentError
from runbook.systems.http import (
    describe_failure,
    plain_headers,
    redact_url,
    request_url,
    scrub,
    secrets_of,
)
from runbook.systems.prometheus import PrometheusUnreachable

SNAPSHOTS = "snapshots"  # the folder below the data dir where Prometheus writes them


class SnapshotRefused(PermanentError):
    """Prometheus answered, but took no snapshot."""


class TsdbAdmin:
    """The admin and status calls a TSDB backup makes to one Prometheus server."""

    def __init__(self, url: str, headers: Mapping[str, SecretStr], timeout: float) -> None:
        plain = plain_headers(headers)
        self.timeout = timeout
        self._base = request_url(url, plain).rstrip("/")
        self._secrets = secrets_of(url, headers)
        self._client = httpx.Client(timeout=timeout, headers=plain, follow_redirects=True)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> TsdbAdmin:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def snapshot(self, *, skip_head: bool = False) -> str:
        """Take a snapshot; its name (the folder below <data dir>/snapshots)."""
        params = {"skip_head": "true"} if skip_head else {}
        data = self._call("POST", "admin/tsdb/snapshot", params)
        name = data.get("name") if isinstance(data, dict) else None
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise SnapshotRefused(f"the snapshot answer names no snapshot folder: {data!r}"[:300])
        return name

    def version(self) -> str | None:
        """The server's version (GET /api/v1/status/buildinfo); None when it does not say."""
        try:
            data = self._call("GET", "status/buildinfo", {})
        except SnapshotRefused:
            return None
        return data.get("version") if isinstance(data, dict) else None

    def _call(self, method: str, api: str, params: dict[str, str]) -> Any:
        endpoint = f"{self._base}/api/v1/{api}"
        shown = redact_url(endpoint)
        try:
            response = self._client.request(method, endpoint, params=params)
        except httpx.HTTPError as exc:
            reason = describe_failure(exc, self.timeout, httpx.URL(endpoint).host)
            raise PrometheusUnreachable(
                scrub(f"{method} {shown}: {reason}", self._secrets),
                connection_failed=isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout),
            ) from None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or payload.get("status") not in ("success", "error"):
            snippet = response.text[:120].replace("\n", " ")
            raise SnapshotRefused(
                scrub(f"{method} {shown}: HTTP {response.status_code}: {snippet!r}", self._secrets)
            )
        if payload["status"] == "error":
            error = scrub(str(payload.get("error") or "no detail"), self._secrets)
            hint = (
                ": start Prometheus with --web.enable-admin-api"
                if "admin APIs disabled" in error
                else ""
            )
            raise SnapshotRefused(f"{method} {shown}: {error}{hint}")
        return payload.get("data")


def snapshot_folder(data_dir: Path, name: str) -> Path:
    return data_dir / SNAPSHOTS / name


def remove_snapshot(data_dir: Path, name: str) -> None:
    """Delete one snapshot folder (hard links: the blocks themselves stay in the TSDB)."""
    shutil.rmtree(snapshot_folder(data_dir, name))
