"""A real Prometheus Pushgateway (and optionally a Prometheus scraping it every second) on
free ports of 127.0.0.1, from the Debian packages prometheus-pushgateway and prometheus."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.servers import local_server


@dataclass(frozen=True)
class Stack:
    gateway: str  # http://127.0.0.1:PORT of the Pushgateway
    prometheus: str | None  # of Prometheus, when started


@contextmanager
def pushgateway_stack(folder: Path, *, prometheus: bool) -> Iterator[Stack]:
    with ExitStack() as servers:
        gateway = servers.enter_context(
            local_server(
                "prometheus-pushgateway",
                lambda port: [
                    f"--web.listen-address=127.0.0.1:{port}",
                    # Debian's default persists to /var/lib/prometheus/pushgateway.data, shared
                    # by every gateway started on this machine: each test keeps its own
                    f"--persistence.file={folder / 'pushgateway.data'}",
                ],
                folder,
            )
        )
        prometheus_url = None
        if prometheus:
            config = folder / "prometheus.yml"
            config.write_text(
                "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                "scrape_configs:\n"
                "  - job_name: pushgateway\n"
                "    honor_labels: true\n"
                f"    static_configs: [{{targets: ['{gateway.removeprefix('http://')}']}}]\n"
            )
            prometheus_url = servers.enter_context(
                local_server(
                    "prometheus",
                    lambda port: [
                        f"--config.file={config}",
                        f"--storage.tsdb.path={folder / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                    ],
                    folder,
                )
            )
        yield Stack(gateway, prometheus_url)
