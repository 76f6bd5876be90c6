"""Maintenance window benchmark: plan + apply of invalid_indexes, vacuum, analyze_stale and
reindex on a ~1 GB bloated database under a client load, against the same load without the
window.

Each round builds `runbook_bench_maint` on the PostgreSQL at 127.0.0.1:5432 (the window
consumes its bloat; dropped at the end of the round):
  orders    3M rows, three btree indexes, every second row updated (non-HOT: 1.5M dead tuples,
            1.5M extra entries in each index)
  events    3M rows, 70 % deleted (2.1M dead tuples), primary key
  leftover  an invalid `_ccnew` index, as an interrupted REINDEX CONCURRENTLY leaves it
  small     tables under every threshold
then runs the client (its own process, so the window's Python does not share its GIL: point
selects and updates by key on orders and events, ~300 statements a second, each timed) and a
batch job (every 10 s a write transaction on orders and events held open 5 s, longer than
lock_timeout: the window's statements that wait for it must give up and retry, never make the
client wait) for 20 s without maintenance, through the window, and 20 s without maintenance
again.

Reported: window duration (plan, apply per procedure), bytes reclaimed by reindex, dead tuples
removed, the client's p50 / p99 / max latency with and without the window, lock waits caused
(maintenance retries; samples of a client waiting behind the maintenance session). Targets:
client max latency under lock_timeout + 1 s; p99 within 2x of the run without maintenance
(median of the rounds' ratios: a shared 2-core machine is noisy).

Run: python -m benchmarks.maintenance [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DBNAME = "runbook_bench_maint"
ORDERS = 3_000_000
EVENTS = 3_000_000
BASELINE_SECONDS = 20.0  # without maintenance, before and after the window


def _log(message: str) -> None:
    print(f"[maintenance] {message}", file=sys.stderr, flush=True)


def _dsn(dbname: str) -> str:
    params = conninfo_to_dict(ADMIN_DSN)
    params["dbname"] = dbname
    return make_conninfo(**params)


_BUILD = [
    "CREATE EXTENSION pgstattuple",
    """CREATE TABLE orders (
        id bigint PRIMARY KEY, customer_id int NOT NULL, status smallint NOT NULL,
        amount numeric(10, 2) NOT NULL, note text NOT NULL, created_at timestamptz NOT NULL
    ) WITH (autovacuum_enabled = false)""",
    f"""INSERT INTO orders
        SELECT i, 1 + (i * 7919) % 100000, i % 5, (i % 10000) / 100.0, md5(i::text),
               timestamptz '2025-01-01' + i * interval '10 seconds'
        FROM generate_series(1::bigint, {ORDERS}) i""",
    "CREATE INDEX orders_customer ON orders (customer_id)",
    "CREATE INDEX orders_created ON orders (created_at)",
    """CREATE TABLE events (
        id bigint PRIMARY KEY, account int NOT NULL, kind text NOT NULL, payload text NOT NULL
    ) WITH (autovacuum_enabled = false)""",
    f"""INSERT INTO events
        SELECT i, i % 50000, (ARRAY['login', 'view', 'buy'])[1 + i % 3],
               md5(i::text) || md5((i * 7)::text)
        FROM generate_series(1::bigint, {EVENTS}) i""",
    "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL)",
    "INSERT INTO customers SELECT i, 'customer ' || i FROM generate_series(1, 100000) i",
    "CREATE TABLE settings (key text PRIMARY KEY, value text NOT NULL)",
    "INSERT INTO settings SELECT 'k' || i, 'v' || i FROM generate_series(1, 100) i",
    "SELECT pg_stat_force_next_flush()",
    "VACUUM ANALYZE",
    "UPDATE orders SET status = status + 1, amount = amount + 1 WHERE id % 2 = 0",
    "DELETE FROM events WHERE id % 10 < 7",
    "SELECT pg_stat_force_next_flush()",
    "CHECKPOINT",
]


def build() -> str:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(DBNAME)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DBNAME)))
    dsn = _dsn(DBNAME)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in _BUILD:
            started = time.perf_counter()
            conn.execute(statement)
            _log(f"{' '.join(statement.split())[:60]}: {time.perf_counter() - started:.1f}s")
    _leave_a_ccnew_index(dsn)
    return dsn


def _leave_a_ccnew_index(dsn: str) -> None:
    """An interrupted REINDEX CONCURRENTLY: cancelled while it waits for a writer."""
    with psycopg.connect(dsn) as writer, psycopg.connect(dsn, autocommit=True) as conn:
        writer.execute("UPDATE settings SET value = value WHERE key = 'k1'")
        failed = threading.Event()

        def reindex() -> None:
            with psycopg.connect(dsn, autocommit=True) as worker:
                worker.execute("SET lock_timeout = '1s'")
                try:
                    worker.execute("REINDEX INDEX CONCURRENTLY settings_pkey")
                except psycopg.errors.LockNotAvailable:
                    failed.set()

        thread = threading.Thread(target=reindex)
        thread.start()
        thread.join(30)
        writer.rollback()
        assert failed.is_set(), "the REINDEX was not interrupted"
        left = conn.execute("SELECT count(*) FROM pg_index WHERE NOT indisvalid").fetchone()[0]
        assert left == 1, left


def _facts(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        dead = conn.execute("SELECT sum(n_dead_tup) FROM pg_stat_user_tables").fetchone()[0]
        indexes = conn.execute(
            "SELECT sum(pg_relation_size(indexrelid)) FROM pg_index"
            " WHERE indrelid::regclass::text IN ('orders', 'events', 'customers', 'settings')"
        ).fetchone()[0]
    return {"database_bytes": size, "dead_tuples": int(dead or 0), "index_bytes": int(indexes)}


def client(dsn: str, out: Path, rate: float = 300.0) -> None:
    """The client, in its own process (a thread would share the GIL with the window's Python
    and measure that instead): point selects and updates, paced, until stdin closes; then
    every statement's kind and latency (seconds) as JSON to `out`."""
    rng = random.Random(11)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()

    def order_id() -> tuple[int]:
        return (rng.randint(1, ORDERS),)

    def event_id() -> tuple[int]:  # a live event: id % 10 >= 7
        return (10 * rng.randint(0, EVENTS // 10 - 1) + rng.choice((7, 8, 9)),)

    def customer() -> tuple[int]:
        return (rng.randint(1, 100_000),)

    statements = [
        ("SELECT amount, note FROM orders WHERE id = %s", order_id),
        ("SELECT amount, note FROM orders WHERE id = %s", order_id),
        ("UPDATE orders SET amount = amount + 1 WHERE id = %s", order_id),
        ("SELECT count(*) FROM orders WHERE customer_id = %s", customer),
        ("SELECT payload FROM events WHERE id = %s", event_id),
        ("UPDATE events SET kind = 'seen' WHERE id = %s", event_id),
    ]
    latencies: list[tuple[str, float, float]] = []  # kind, wall clock at start, seconds
    with psycopg.connect(dsn, autocommit=True) as conn:
        pause, next_at = 1 / rate, time.perf_counter()
        while not stop.is_set():
            query, params = rng.choice(statements)
            wall, started = time.time(), time.perf_counter()
            cursor = conn.execute(query, params())
            if cursor.description is not None:
                cursor.fetchall()
            latencies.append((query.split()[0].lower(), wall, time.perf_counter() - started))
            next_at += pause
            time.sleep(max(0.0, next_at - time.perf_counter()))
    out.write_text(json.dumps(latencies))


class ClientProcess:
    """`python -m benchmarks.maintenance --client DSN --out FILE`, stopped by closing its
    stdin."""

    def __init__(self, dsn: str) -> None:
        self.out = Path(tempfile.mkstemp(prefix="maintenance-client-", suffix=".json")[1])
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.maintenance",
                "--client",
                dsn,
                "--out",
                str(self.out),
            ],
            stdin=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[1],
        )

    def stop(self) -> list[tuple[str, float, float]]:
        assert self.process.stdin is not None
        self.process.stdin.close()
        if self.process.wait(30) != 0:
            raise RuntimeError(f"the client failed (exit {self.process.returncode})")
        latencies = json.loads(self.out.read_text())
        self.out.unlink()
        return latencies


class BatchJob(threading.Thread):
    """Every 10 s, a write transaction on orders and events held open for 5 s (its own
    choice): a REINDEX CONCURRENTLY of their indexes waits for it, gives up after lock_timeout
    and retries."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.stop = threading.Event()
        self.holds = 0

    def run(self) -> None:
        with psycopg.connect(self.dsn) as conn:
            while not self.stop.wait(5.0):
                conn.execute("UPDATE orders SET status = status WHERE id = 1")
                conn.execute("UPDATE events SET kind = kind WHERE id = 7")
                self.holds += 1
                self.stop.wait(5.0)
                conn.commit()


class LockWaitSampler(threading.Thread):
    """Every 50 ms: is any session of the database waiting for a lock a maintenance session
    holds or asks for first? (pg_blocking_pids)."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.stop = threading.Event()
        self.maintenance_pid = 0
        self.samples = 0
        self.waiting_samples = 0

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.wait(0.05):
                if not self.maintenance_pid:
                    continue
                waiting = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND %s = ANY(pg_blocking_pids(pid))",
                    (self.maintenance_pid,),
                ).fetchone()[0]
                self.samples += 1
                self.waiting_samples += bool(waiting)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000 if ordered else 0.0


def _percentiles(timed: list[tuple[str, float, float]]) -> dict[str, float]:
    ordered = sorted(seconds for _, _, seconds in timed)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "n": len(ordered),
        "p50": at(0.50) * 1000,
        "p99": at(0.99) * 1000,
        "max": ordered[-1] * 1000,
        "over_100ms": sum(1 for x in ordered if x > 0.1),
        **{
            f"p99 {kind}": _p99([s for k, _, s in timed if k == kind])
            for kind in ("select", "update")
        },
    }


def _apply_all(procedure: Any, session: Any, actions: list[Any]) -> list[tuple[Any, dict]]:
    """Apply each action; one that fails (no lock after its retries, on a busy machine) is a
    result, as in a window, not the end of the benchmark."""
    results = []
    for action in actions:
        try:
            results.append((action, procedure.apply(session, action)))
        except Exception as exc:  # noqa: BLE001 - recorded, as the window records it
            results.append((action, {"failed": f"{type(exc).__name__}: {exc}"}))
    return results


def _window(dsn: str, sampler: LockWaitSampler) -> dict[str, Any]:
    """Plan every procedure, then apply each plan, in the registry's order."""
    from runbook.catalog.maintenance import MaintenanceLedger
    from runbook.config import MaintenanceSettings, PostgresTarget
    from tasks.maintenance.analyze_stale import AnalyzeStale
    from tasks.maintenance.procedure import MaintenanceSession, MeasureContext
    from tasks.maintenance.reindex import InvalidIndexes, Reindex
    from tasks.maintenance.vacuum import Vacuum

    class NoHistory(MaintenanceLedger):
        def history(self, target, procedure, object=None, limit=20):
            return []

    procedures = (InvalidIndexes(), Vacuum(), AnalyzeStale(), Reindex())
    target = PostgresTarget(name="bench", dsn=dsn)
    settings = MaintenanceSettings()
    timings: dict[str, float] = {}
    phases: list[tuple[str, float, float]] = []  # name, wall clock start and end
    applied: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
    with MaintenanceSession.open(target, settings) as session:
        sampler.maintenance_pid = session.conn.info.backend_pid
        context = MeasureContext(session, target, settings, NoHistory())
        plans = {}
        for procedure in procedures:
            at, wall = time.perf_counter(), time.time()
            plans[procedure.name] = procedure.plan(procedure.measure(context), settings, target)
            timings[f"plan {procedure.name}"] = time.perf_counter() - at
            phases.append((f"plan {procedure.name}", wall, time.time()))
        for procedure in procedures:
            at, wall = time.perf_counter(), time.time()
            applied[procedure.name] = _apply_all(procedure, session, plans[procedure.name])
            timings[f"apply {procedure.name}"] = time.perf_counter() - at
            phases.append((f"apply {procedure.name}", wall, time.time()))
    sampler.maintenance_pid = 0
    return {
        "timings": timings,
        "phases": phases,
        "applied": applied,
        "lock_timeout": settings.lock_timeout.total_seconds(),
    }


def run_round() -> dict[str, Any]:
    """Build the database; then, under one client and batch job: BASELINE_SECONDS without
    maintenance, the window, BASELINE_SECONDS without maintenance again."""
    _log(f"building {DBNAME}")
    dsn = build()
    try:
        before = _facts(dsn)
        _log(f"{before['database_bytes'] / 1e9:.2f} GB")
        load, batch, sampler = ClientProcess(dsn), BatchJob(dsn), LockWaitSampler(dsn)
        batch.start()
        sampler.start()
        time.sleep(1.0)  # the client connects
        quiet_before = time.time()
        time.sleep(BASELINE_SECONDS)
        run = _window(dsn, sampler)
        quiet_after = time.time()
        time.sleep(BASELINE_SECONDS)
        end = time.time()
        latencies = load.stop()
        for thread in (batch, sampler):
            thread.stop.set()
            thread.join(10)
        after = _facts(dsn)
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DBNAME))
            )
    start, stop = run["phases"][0][1], run["phases"][-1][2]

    def between(first: float, last: float) -> list[tuple[str, float, float]]:
        return [t for t in latencies if first <= t[1] < last]

    run.update(
        before=before,
        after=after,
        window=stop - start,
        quiet=_percentiles(between(quiet_before, start) + between(quiet_after, end)),
        quiet_before=_percentiles(between(quiet_before, start)),
        quiet_after=_percentiles(between(quiet_after, end)),
        during=_percentiles(between(start, stop)),
        phase_p99={name: _p99([s for _, _, s in between(a, b)]) for name, a, b in run["phases"]},
        holds=batch.holds,
        samples=sampler.samples,
        waiting_samples=sampler.waiting_samples,
    )
    _log(
        f"window {run['window']:.1f}s: client p99 {run['during']['p99']:.2f} ms, without "
        f"maintenance {run['quiet']['p99']:.2f} ms"
    )
    return run


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:,.1f}"


def _retries(run: dict[str, Any]) -> Counter:
    retries: Counter = Counter()
    for name, pairs in run["applied"].items():
        for _, figures in pairs:
            retries[name] += max(0, int(figures.get("attempts", 1)) - 1)
    return retries


def _outcome(after: dict[str, Any]) -> str:
    if "failed" in after:
        return f" [failed: {after['failed']}]"
    if after.get("analyzed") is False:
        return " [not repeated: its VACUUM (ANALYZE) had refreshed the statistics]"
    attempts = after.get("attempts", 1)
    return f" [{attempts} attempts]" if attempts != 1 else ""


def _section(runs: list[dict[str, Any]]) -> str:
    last = runs[-1]
    applied, limit = last["applied"], last["lock_timeout"]
    retries = _retries(last)
    ratios = [run["during"]["p99"] / run["quiet"]["p99"] for run in runs]
    worst = max(run["during"]["max"] for run in runs)
    ratio = statistics.median(ratios)
    reclaimed = sum(
        a.before["index_bytes"] - f["index_bytes"]
        for a, f in applied.get("reindex", [])
        if "failed" not in f
    )
    dead_removed = sum(
        a.before["dead_tuples"] - f["dead_tuples"]
        for a, f in applied.get("vacuum", [])
        if "failed" not in f
    )
    before, after = last["before"], last["after"]
    lines = [
        f"## Maintenance window benchmark: {DBNAME} ({before['database_bytes'] / 1e9:.2f} GB, "
        f"bloated), {len(runs)} rounds, PostgreSQL 15 service, "
        f"{platform.node() or 'this machine'}, {time.strftime('%Y-%m-%d')}",
        "",
        "`python -m benchmarks.run --only maintenance`. Each round rebuilds the database, then "
        "runs one client (its own process: point selects and updates by key on the bloated "
        "tables, ~300 statements/s, each timed) and a batch job (a write transaction on "
        "`orders` and `events` held open 5 s every 10 s) for "
        f"{BASELINE_SECONDS:.0f} s without maintenance, "
        "through the window, and "
        f"{BASELINE_SECONDS:.0f} s without maintenance again. Window = plan + apply of "
        "invalid_indexes, vacuum, analyze_stale and reindex in the window's order, default "
        f"settings (lock_timeout {limit:g} s).",
        "",
        "| round | window s | retries | client p99 ms without / during | p99 ratio | "
        "client max ms during |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for number, run in enumerate(runs, 1):
        lines.append(
            f"| {number} | {run['window']:.2f} | {sum(_retries(run).values())} | "
            f"{run['quiet']['p99']:.2f} / {run['during']['p99']:.2f} | "
            f"{run['during']['p99'] / run['quiet']['p99']:.2f}x | {run['during']['max']:.1f} |"
        )
    quiet, during = last["quiet"], last["during"]
    lines += [
        "",
        f"Targets: client max latency < lock_timeout + 1 s = {limit + 1:g} s: worst "
        f"{worst / 1000:.3f} s ({'met' if worst / 1000 < limit + 1 else 'MISSED'}); client p99 "
        f"within 2x of the same load without maintenance: median of the rounds' ratios "
        f"{ratio:.2f}x ({'met' if ratio <= 2 else 'MISSED'}).",
        "",
        f"Where the p99 goes (round {len(runs)}): selects {quiet['p99 select']:.2f} -> "
        f"{during['p99 select']:.2f} ms, updates {quiet['p99 update']:.2f} -> "
        f"{during['p99 update']:.2f} ms. Every client commit flushes the WAL written before it, "
        "and the window writes a lot of it: each rebuilt index whole, VACUUM's full-page "
        "images. The window already compresses them (wal_compression), builds on one core and "
        "paces VACUUM (cost-based delay, about 50 MB/s here); PostgreSQL has no pacing for "
        "an index build, so the REINDEX step is where the client's p99 rises most (table "
        "below).",
        "",
        f"Round {len(runs)} in detail:",
        "",
        "| client | without maintenance (before / after) | during the window |",
        "|---|---:|---:|",
        f"| statements | {quiet['n']:,} | {during['n']:,} |",
        f"| p50 ms | {quiet['p50']:.2f} | {during['p50']:.2f} |",
        f"| p99 ms | {quiet['p99']:.2f} ({last['quiet_before']['p99']:.2f} / "
        f"{last['quiet_after']['p99']:.2f}) | {during['p99']:.2f} |",
        f"| selects p99 ms | {quiet['p99 select']:.2f} | {during['p99 select']:.2f} |",
        f"| updates p99 ms | {quiet['p99 update']:.2f} | {during['p99 update']:.2f} |",
        f"| max ms | {quiet['max']:.1f} | {during['max']:.1f} |",
        f"| statements over 100 ms | {quiet['over_100ms']} | {during['over_100ms']} |",
        "",
        "| window step | seconds | actions | retries | client p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for step in ("plan", "apply"):
        for name in ("invalid_indexes", "vacuum", "analyze_stale", "reindex"):
            key = f"{step} {name}"
            lines.append(
                f"| {key} | {last['timings'][key]:.2f} | {len(applied[name])} | "
                f"{retries[name] if step == 'apply' else ''} | {last['phase_p99'][key]:.2f} |"
            )
    lines += [
        f"| **whole window** | **{last['window']:.2f}** | "
        f"{sum(len(p) for p in applied.values())} | {sum(retries.values())} | "
        f"{during['p99']:.2f} |",
        "",
        f"- database {_mb(before['database_bytes'])} MB -> {_mb(after['database_bytes'])} MB; "
        f"indexes {_mb(before['index_bytes'])} MB -> {_mb(after['index_bytes'])} MB",
        f"- bytes reclaimed by reindex: {_mb(reclaimed)} MB over {len(applied['reindex'])} "
        f"indexes; dead tuples removed by vacuum: {dead_removed:,} (pg_stat: "
        f"{before['dead_tuples']:,} -> {after['dead_tuples']:,} in the database)",
        f"- lock waits caused: {sum(retries.values())} maintenance statements gave up after "
        "lock_timeout (behind the batch job) and retried; a client was seen waiting behind "
        f"the maintenance session in {last['waiting_samples']} of {last['samples']} samples "
        "(every 50 ms)",
        "- actions:",
    ]
    lines += [
        f"  - {a.procedure} {a.object}: {a.reason}{_outcome(f)}"
        for pairs in applied.values()
        for a, f in pairs
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--client", metavar="DSN", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        client(args.client, args.out)
        return ""
    runs = [run_round() for _ in range(args.rounds)]
    markdown = _section(runs)
    print(markdown)
    return markdown


if __name__ == "__main__":
    main()
