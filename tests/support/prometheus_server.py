"""A real Prometheus server (the Debian package's `prometheus` binary) for tests: a free port
on 127.0.0.1, a temporary config with no scrape targets and its own TSDB folder."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.servers import local_server

CONFIG = "global:\n  scrape_interval: 1m\nscrape_configs: []\n"


@contextmanager
def prometheus_server(folder: Path, *flags: str) -> Iterator[str]:
    """Start `prometheus` with `flags` (e.g. --storage.tsdb.retention.time=30d); yields its
    URL once /-/ready answers; stopped (and waited for) afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prometheus.yml").write_text(CONFIG)
    with local_server(
        "prometheus",
        lambda port: [
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            *flags,
        ],
        folder,
    ) as url:
        yield url
