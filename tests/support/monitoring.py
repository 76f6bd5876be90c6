"""A real Pushgateway and a real Prometheus (Debian's prometheus-pushgateway and prometheus) on
free ports of 127.0.0.1: Prometheus scrapes the Pushgateway every second with honor_labels
and evaluates infra/prometheus/runbook-rules.yml every second. Started once per session; each
test pushes its own targets (unique names), so tests do not see each other's series."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.servers import local_server

RULES = Path(__file__).resolve().parents[2] / "infra" / "prometheus" / "runbook-rules.yml"


@dataclass
class RealPushgateway:
    url: str

    def groups(self) -> list[dict[str, Any]]:
        """The groups held: [{labels: {job, target, ...}, metrics: {name: [{labels, value}]}}]."""
        response = httpx.get(f"{self.url}/api/v1/metrics", timeout=10)
        response.raise_for_status()
        groups = []
        for group in response.json()["data"]:
            found: dict[str, list[dict[str, Any]]] = {}
            for name, family in group.items():
                if isinstance(family, dict) and "metrics" in family:
                    found[name] = [
                        {"labels": s["labels"], "value": float(s["value"])}
                        for s in family["metrics"]
                    ]
            groups.append({"labels": group["labels"], "metrics": found})
        return groups

    def group(self, **labels: str) -> dict[str, list[dict[str, Any]]] | None:
        """The metrics of the group whose grouping labels are exactly `labels` (None: absent)."""
        for group in self.groups():
            if group["labels"] == labels:
                return group["metrics"]
        return None


@dataclass
class RealPrometheus:
    url: str

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant query: [(labels, value)]; raises on a PromQL error."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise AssertionError(f"query {expr!r} failed: {body.get('error')}")
        return [(r["metric"], float(r["value"][1])) for r in body["data"]["result"]]

    def wait_for(
        self,
        expr: str,
        until: Callable[[list[tuple[dict[str, str], float]]], bool],
        timeout: float = 30,
    ) -> list[tuple[dict[str, str], float]]:
        """Query until `until(result)` holds (scrapes and rule evaluations run every second)."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if until(result):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"{expr!r} never satisfied the test; last answer: {result}")
            time.sleep(0.5)

    def label_values(self, label: str, metric: str) -> list[str]:
        """What Grafana's label_values(metric, label) lists."""
        response = httpx.get(
            f"{self.url}/api/v1/label/{label}/values", params={"match[]": metric}, timeout=10
        )
        response.raise_for_status()
        return response.json()["data"]

    def alerts(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/alerts", timeout=10)
        response.raise_for_status()
        return response.json()["data"]["alerts"]

    def rule_groups(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/rules", timeout=10)
        response.raise_for_status()
        return response.json()["data"]["groups"]


@pytest.fixture(scope="session")
def real_pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealPushgateway]:
    folder = tmp_path_factory.mktemp("pushgateway")
    with local_server(
        "prometheus-pushgateway",
        lambda port: [
            f"--web.listen-address=127.0.0.1:{port}",
            "--persistence.file=",
            "--log.level=warn",
        ],
        folder,
    ) as url:
        yield RealPushgateway(url)


@pytest.fixture(scope="session")
def real_prometheus(
    real_pushgateway: RealPushgateway, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RealPrometheus]:
    folder = tmp_path_factory.mktemp("prometheus")
    gateway = real_pushgateway.url.removeprefix("http://")
    (folder / "prometheus.yml").write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  evaluation_interval: 1s\n"
        f"rule_files: ['{RULES}']\n"
        "scrape_configs:\n"
        "  - job_name: pushgateway\n"
        "    honor_labels: true\n"
        f"    static_configs: [{{targets: ['{gateway}']}}]\n"
    )
    with local_server(
        "prometheus",
        lambda port: [
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        folder,
    ) as url:
        yield RealPrometheus(url)
