"""Drill validation breakdown: where a drill's validation spends its time, per check.

On a mid-size copy of the benchmark database (benchmarks/dataset.py at --scale, default 0.25:
a few hundred MB, so a breakdown does not monopolise a shared machine): the manifest's source
facts are taken as a backup takes them, the database is dumped once (`pg_dump -Fc -Z0`), and
each round restores it into a fresh scratch database (`createdb` + `pg_restore -j 2`, untimed)
and times `validate_restore` on it with its per-check timings (`ValidationResult.breakdown`).
A freshly restored database is what a drill validates: its first scans also set hint bits.

Run: python -m benchmarks.validation [--rounds 3] [--scale 0.25]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

WORK = Path(__file__).resolve().parent / ".work" / "validation"
ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
SCRATCH = "runbook_bench_validation"


def _log(message: str) -> None:
    print(f"[validation] {message}", file=sys.stderr, flush=True)


def take_source(dsn: str) -> dict:
    """The manifest's `source` facts, measured as a backup measures them (one snapshot)."""
    from runbook.systems.postgres import (
        exact_row_counts,
        exported_snapshot,
        schema_facts,
        schema_fingerprint,
    )

    with exported_snapshot(dsn) as (conn, _):
        schema = schema_facts(conn)
        return {
            "server_major": conn.info.server_version // 10000,
            "row_counts": exact_row_counts(conn, schema["tables"]),
            "schema": schema,
            "schema_fingerprint": schema_fingerprint(schema),
        }


def _psql(*args: str) -> None:
    subprocess.run(["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", *args], check=True)


def _restore(archive: Path) -> str:
    from runbook.systems.pg_tools import pick_binary

    subprocess.run(
        ["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", "--force", SCRATCH],
        check=True,
    )
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", SCRATCH], check=True)
    subprocess.run(
        [
            pick_binary("pg_restore", 15).path,
            "--exit-on-error",
            "--jobs=2",
            "--no-owner",
            "--no-privileges",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            SCRATCH,
            str(archive),
        ],
        check=True,
    )
    _psql("-c", "CHECKPOINT", "postgres")  # the restore's dirty buffers are not validation's
    return f"postgresql://postgres@127.0.0.1:5432/{SCRATCH}"


def measure(rounds: int, scale: float) -> dict:
    """Rounds of restore + validate_restore; per-round totals and per-check seconds."""
    from benchmarks.dataset import ensure_dataset
    from runbook.systems.pg_tools import pick_binary
    from tasks.drills.validate import validate_restore

    facts = ensure_dataset(
        dbname="runbook_bench_mid" if scale != 1 else "runbook_bench", scale=scale
    )
    WORK.mkdir(parents=True, exist_ok=True)
    source = take_source(facts["dsn"])
    archive = WORK / "validation.pgdump"
    subprocess.run(
        [pick_binary("pg_dump", 15).path, "-Fc", "-Z0", "-f", str(archive), "-d", facts["dsn"]],
        check=True,
    )
    amcheck = pick_binary("pg_amcheck", 15).path
    totals: list[float] = []
    breakdowns: list[dict[str, float]] = []
    checks = 0
    try:
        for round_no in range(rounds):
            dsn = _restore(archive)
            started = time.perf_counter()
            result = validate_restore(dsn, source, amcheck=amcheck)
            totals.append(time.perf_counter() - started)
            if not result.ok:
                raise SystemExit(f"validation failed on a faithful copy: {result.failed}")
            breakdowns.append(dict(result.breakdown))
            checks = len(result.checks)
            _log(f"round {round_no + 1}: {totals[-1]:.2f}s {result.seconds}")
    finally:
        subprocess.run(
            ["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", "--force", SCRATCH],
            check=True,
        )
        archive.unlink(missing_ok=True)
    return {"facts": facts, "totals": totals, "breakdowns": breakdowns, "checks": checks}


def report(measured: dict, rounds: int) -> str:
    facts, totals, breakdowns = measured["facts"], measured["totals"], measured["breakdowns"]
    names = list(breakdowns[0])
    lines = [
        f"## Drill validation breakdown: {facts['dbname']} ({facts['database_bytes'] / 1e6:.0f} "
        f"MB, freshly restored each round), {rounds} rounds, PostgreSQL 15 service",
        "",
        f"validate_restore: median {statistics.median(totals):.2f} s (rounds: "
        + ", ".join(f"{t:.2f}" for t in totals)
        + f"), {measured['checks']} checks. Per part (median s; the table scans run "
        "concurrently, so they overlap):",
        "",
        "| part | median s |",
        "|---|---:|",
    ]
    for name in names:
        value = statistics.median(b.get(name, 0.0) for b in breakdowns)
        lines.append(f"| {name} | {value:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=0.25)
    args = parser.parse_args(argv)
    markdown = report(measure(args.rounds, args.scale), args.rounds)
    print(markdown)
    return markdown


if __name__ == "__main__":
    main()
