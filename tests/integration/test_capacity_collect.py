"""The capacity collectors against real servers: PostgreSQL 15 (a table growing between two
collections), Redis on 127.0.0.1:6379, this host, backup bytes from a catalog with a
retention delete, and Prometheus `query` / `query_range` from a local fake speaking the real
API's JSON; samples stored in the catalog once (a backfill read twice stores nothing new)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from runbook.catalog import BackupStatus, Catalog, MetricSamples
from runbook.config import (
    CapacitySeries,
    HostTarget,
    PostgresTarget,
    PrometheusTarget,
    PromQuery,
    RedisTarget,
)
from runbook.manifest import Manifest, ManifestArtifact
from tasks.capacity.collect_backups import collect_backups, retention_deletes
from tasks.capacity.collect_host import collect_host
from tasks.capacity.collect_postgres import collect_postgres
from tasks.capacity.collect_prometheus import collect_series
from tasks.capacity.collect_redis import collect_redis
from tasks.capacity.events import events_for, retention_changes

NOW = datetime(2026, 12, 1, 6, 30, tzinfo=UTC)
DAY = 86400


@pytest.fixture
def catalog(tmp_path) -> Iterator[Catalog]:
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    yield catalog
    catalog.close()


def by_resource(samples: list) -> dict[str, Any]:
    return {s.resource: s for s in samples}


def test_postgres_sizes_and_connections_and_a_growing_table(pg15, make_database, catalog):
    dsn = make_database(pg15)  # the demo shop: customers, orders
    target = PostgresTarget(name="app", dsn=dsn)
    first = by_resource(collect_postgres(target, 5, NOW))
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE events (id bigserial PRIMARY KEY, body text)")
        conn.execute(
            "INSERT INTO events (body) SELECT (SELECT string_agg(md5(i::text || j::text), '')"
            " FROM generate_series(1, 100) j) FROM generate_series(1, 3000) i"
        )  # 3.2 kB of hex per row: TOAST that does not compress away
    second = by_resource(collect_postgres(target, 5, NOW + timedelta(days=1)))

    with psycopg.connect(dsn) as conn:
        size, tables = conn.execute(
            "SELECT pg_database_size(current_database()), pg_total_relation_size('public.events')"
        ).fetchone()
        max_connections = int(conn.execute("SHOW max_connections").fetchone()[0])
    assert second["app/database"].value == pytest.approx(size, rel=0.05)
    assert second["app/database"].value > first["app/database"].value + 5_000_000
    events = second["app/table/public.events"]  # with TOAST: 3000 rows of 3.2 kB
    assert events.kind == "postgres.table" and events.value == tables > 5_000_000
    assert "app/table/public.events" not in first
    assert "app/index/public.events_pkey" in second
    connections = second["app/connections"]
    assert connections.limit == max_connections and 1 <= connections.value < max_connections

    samples = MetricSamples(catalog)
    assert samples.record([*first.values(), *second.values()]) == len(first) + len(second)
    history = samples.history("app/database")
    assert [s.value for s in history] == [first["app/database"].value, second["app/database"].value]
    assert samples.record(second.values()) == 0  # the same moment again: nothing new


def test_redis_memory_against_maxmemory_and_keys():
    import socket

    with socket.create_connection(("127.0.0.1", 6379), timeout=5) as sock:
        sock.sendall(b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$9\r\nmaxmemory\r\n")
        reply = sock.recv(4096).decode()
    maxmemory = int(reply.split("\r\n")[-2])
    found = by_resource(collect_redis(RedisTarget(name="cache", url="redis://127.0.0.1:6379"), NOW))
    memory = found["cache/memory"]
    assert memory.unit == "bytes" and memory.value > 100_000
    assert memory.limit == (maxmemory or None)
    assert found["cache/keys"].value >= 0


def test_host_disk_inodes_and_memory_of_this_machine():
    found = by_resource(collect_host(HostTarget(name="here", mounts=["/"]), NOW))
    disk = found["here/disk/root"]
    stats = os.statvfs("/")
    assert disk.limit == stats.f_blocks * stats.f_frsize
    assert 0 < disk.value <= disk.limit
    assert 0 < found["here/memory"].value < found["here/memory"].limit
    if stats.f_files:
        assert 0 < found["here/inodes/root"].value <= found["here/inodes/root"].limit


def _backup(catalog: Catalog, backup_id: str, finished: datetime, size: int) -> None:
    catalog.start(backup_id, target="app", kind="postgres", storage="local", started_at=finished)
    artifact = ManifestArtifact(
        name="database",
        key=f"app/{backup_id}/db",
        content="pg_dump-custom",
        bytes=size,
        logical_bytes=size * 4,
        sha256="0" * 64,
        seconds=1.0,
    )
    manifest = Manifest(
        backup_id=backup_id,
        target="app",
        kind="postgres",
        started_at=finished,
        finished_at=finished,
        artifacts=[artifact],
    )
    catalog.mark_stored(backup_id, manifest)


def test_backup_bytes_per_day_from_the_catalog_with_a_retention_delete(catalog):
    start = NOW - timedelta(days=4)
    _backup(catalog, "b1", start, 1000)
    _backup(catalog, "b2", start + timedelta(days=1), 2000)
    _backup(catalog, "b3", start + timedelta(days=2), 3000)
    catalog.mark_deleting("b1")
    catalog.mark_deleted("b1", at=start + timedelta(days=2, hours=1))

    found = collect_backups(catalog, ["app"], NOW)
    daily = [(s.time.date().isoformat(), s.value) for s in found if s.source == "backfill"]
    assert daily == [
        ((start + timedelta(days=1)).date().isoformat(), 1000),
        ((start + timedelta(days=2)).date().isoformat(), 3000),
        ((start + timedelta(days=3)).date().isoformat(), 5000),  # b1 deleted, b3 added
        (NOW.date().isoformat(), 5000),
    ]
    assert found[-1].time == NOW and found[-1].value == 5000
    deleted = retention_deletes(catalog)
    assert [b.id for b in deleted] == ["b1"] and deleted[0].status == BackupStatus.DELETED
    (event,) = events_for("app/backups", "backups.bytes", "app", retention_changes(deleted))
    assert event.kind == "retention" and "b1" in event.description


# --- Prometheus ----------------------------------------------------------------------------


class FakePrometheus(BaseHTTPRequestHandler):
    """/api/v1/query and /api/v1/query_range as Prometheus answers them: used bytes in two
    series (summed by the collector), the filesystem size in one; a range answers one point
    per step from start to end (values as strings, times as floats)."""

    requests: list[dict[str, str]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        FakePrometheus.requests.append({"path": url.path, **params})
        size = " - " not in params["query"]  # the limit query
        if url.path.endswith("/query_range"):
            start, end, step = (float(params[k]) for k in ("start", "end", "step"))
            times = [start + i * step for i in range(int((end - start) // step) + 1)]
            result = (
                [{"metric": {"mountpoint": "/data"}, "values": [[t, "1000"] for t in times]}]
                if size
                else [
                    {
                        "metric": {"device": d},
                        "values": [[t, str(100 + (t - start) / DAY)] for t in times],
                    }
                    for d in ("sda", "sdb")
                ]
            )
            data = {"resultType": "matrix", "result": result}
        else:
            value = "1000" if size else "150"
            data = {
                "resultType": "vector",
                "result": [{"metric": {}, "value": [NOW.timestamp(), value]}],
            }
        body = json.dumps({"status": "success", "data": data}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def prometheus() -> Iterator[PrometheusTarget]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePrometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    FakePrometheus.requests = []
    yield PrometheusTarget(
        name="prom",
        url=f"http://127.0.0.1:{server.server_address[1]}",
        queries=[PromQuery(name="up", query="up")],
    )
    server.shutdown()
    server.server_close()


def test_a_prometheus_series_with_query_range_backfill(prometheus, catalog):
    series = CapacitySeries(
        name="data-disk",
        prometheus="prom",
        unit="bytes",
        backfill="10d",
        query='node_filesystem_size_bytes{mountpoint="/data"} - node_filesystem_avail_bytes',
        limit_query='node_filesystem_size_bytes{mountpoint="/data"}',
    )
    found = collect_series(series, prometheus, NOW)
    backfill = [s for s in found if s.source == "backfill"]
    assert len(backfill) == 11  # 10 days back, one point a day, aligned to midnight UTC
    assert all(s.time.hour == 0 and s.time.minute == 0 for s in backfill)
    assert [s.value for s in backfill[:3]] == [200.0, 202.0, 204.0]  # two series summed
    assert all(s.limit == 1000.0 and s.resource == "prom/data-disk" for s in backfill)
    assert found[-1].source == "collect" and found[-1].value == 150.0 and found[-1].limit == 1000
    ranges = [r for r in FakePrometheus.requests if r["path"] == "/api/v1/query_range"]
    assert {r["step"] for r in ranges} == {"86400"}
    assert float(ranges[0]["end"]) - float(ranges[0]["start"]) == 10 * DAY

    samples = MetricSamples(catalog)
    assert samples.record(found) == 12
    again = collect_series(series, prometheus, NOW + timedelta(hours=1))
    assert samples.record(again) == 1  # the backfill's points are kept already: only "now"
    assert len(samples.history("prom/data-disk")) == 13
