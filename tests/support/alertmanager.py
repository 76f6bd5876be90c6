"""A real Alertmanager (Debian's prometheus-alertmanager) on a free port of 127.0.0.1, with a
minimal config and clustering off, and helpers to post and resolve alerts through its API v2."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.support.servers import local_server

BINARY = "prometheus-alertmanager"
CONFIG = """\
route:
  receiver: nobody
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: nobody
"""


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class RealAlertmanager:
    url: str

    def post(self, name: str, severity: str | None = None, **labels: str) -> None:
        """Fire an alert (startsAt now, no endsAt: firing until resolved)."""
        if severity is not None:
            labels["severity"] = severity
        body = [{"labels": {"alertname": name, **labels}, "startsAt": _iso(datetime.now(UTC))}]
        httpx.post(f"{self.url}/api/v2/alerts", json=body, timeout=10).raise_for_status()

    def resolve(self, name: str, severity: str | None = None, **labels: str) -> None:
        """Resolve it: the same labels with endsAt in the past."""
        if severity is not None:
            labels["severity"] = severity
        now = datetime.now(UTC)
        body = [
            {
                "labels": {"alertname": name, **labels},
                "startsAt": _iso(now - timedelta(minutes=5)),
                "endsAt": _iso(now - timedelta(seconds=1)),
            }
        ]
        httpx.post(f"{self.url}/api/v2/alerts", json=body, timeout=10).raise_for_status()

    def silence(self, **labels: str) -> str:
        now = datetime.now(UTC)
        body = {
            "matchers": [
                {"name": k, "value": v, "isRegex": False, "isEqual": True}
                for k, v in labels.items()
            ],
            "startsAt": _iso(now),
            "endsAt": _iso(now + timedelta(hours=1)),
            "createdBy": "tests",
            "comment": "test silence",
        }
        response = httpx.post(f"{self.url}/api/v2/silences", json=body, timeout=10)
        response.raise_for_status()
        return response.json()["silenceID"]

    def names(self, **params: str) -> set[str]:
        response = httpx.get(f"{self.url}/api/v2/alerts", params=params, timeout=10)
        response.raise_for_status()
        return {a["labels"]["alertname"] for a in response.json()}


@pytest.fixture
def real_alertmanager(tmp_path: Path) -> Iterator[RealAlertmanager]:
    config = tmp_path / "alertmanager.yml"
    config.write_text(CONFIG)
    with local_server(
        BINARY,
        lambda port: [
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        tmp_path,
        seconds=30,
    ) as url:
        yield RealAlertmanager(url)
