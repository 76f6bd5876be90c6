"""DR drill benchmark: Runbook's restore step against a plain `pg_restore -j 2`, same archive.

On runbook_bench (>= 1.5 GB, benchmarks/dataset.py): one Runbook backup (zstd level 1), then
alternating rounds of
  plain    createdb + pg_restore --exit-on-error -j 2 of the decompressed archive (the floor)
  runbook  run_drill into a scratch database on the same PostgreSQL 15 server: download
           (read back + verify + decompress to disk), restore (createdb + pg_restore -j 2),
           validation (Great Expectations, SQL checks, pg_amcheck), cleanup
Reports the restore step against plain pg_restore (target: at least 0.9x as fast), the whole
drill's RTO and where the time goes.

Run: python -m benchmarks.drill [--rounds 2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml
import zstandard

WORK = Path(__file__).resolve().parent / ".work" / "drill"
ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _log(message: str) -> None:
    print(f"[drill] {message}", file=sys.stderr, flush=True)


def _plain_restore(archive: Path) -> float:
    from runbook.systems.pg_tools import pick_binary

    binary = pick_binary("pg_restore", 15)
    name = "runbook_bench_plain_restore"
    subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", name], check=True)
    started = time.perf_counter()
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", name], check=True)
    subprocess.run(
        [
            binary.path,
            "--exit-on-error",
            "--jobs=2",
            "--no-owner",
            "--no-privileges",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            name,
            str(archive),
        ],
        check=True,
    )
    seconds = time.perf_counter() - started
    subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", name], check=True)
    return seconds


def _dataset_args(scale: float) -> dict:
    return {} if scale == 1 else {"dbname": "runbook_bench_mid", "scale": scale}


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="dataset size (1 = 1.5 GB)")
    args = parser.parse_args(argv)

    from benchmarks.dataset import ensure_dataset
    from runbook.config import parse_config
    from runbook.manifest import new_backup_id
    from runbook.runtime import runtime_for
    from tasks.backups.dump import run_backup
    from tasks.drills.drill import DrillRun, run_drill

    facts = ensure_dataset(**_dataset_args(args.scale))
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    source = WORK / "runbook.yaml"
    source.write_text(
        yaml.safe_dump(
            {
                "catalog": "sqlite:///catalog.db",
                "storage": {"kind": "local", "path": "backups"},
                "backup": {"compression_level": 1, "retries": 0, "timeout": "2h"},
                "targets": {
                    "postgres": [
                        {
                            "name": "bench",
                            "dsn": facts["dsn"],
                            "rto": "1h",
                            "drill": {"dsn": ADMIN, "jobs": 2},
                        }
                    ]
                },
            }
        )
    )
    config = parse_config(source.read_text(), source=source)
    runtime = runtime_for(config)
    backup_id = new_backup_id()
    _log("taking the backup to drill")
    outcome = run_backup(
        config, config.target("bench"), runtime.catalog, runtime.storage, backup_id
    )
    from tasks.backups.verify import verify_backup

    assert verify_backup(runtime.catalog, runtime.storage, backup_id).ok
    artifact = outcome.manifest.artifacts[0]
    archive = WORK / "plain.pgdump"
    with archive.open("wb") as out:
        reader = zstandard.ZstdDecompressor().stream_reader(
            (config.storage.path / artifact.key).open("rb")
        )
        shutil.copyfileobj(reader, out, 1 << 20)

    plain: list[float] = []
    drills = []
    for round_no in range(args.rounds):
        order = ["plain", "runbook"] if round_no % 2 == 0 else ["runbook", "plain"]
        for case in order:
            # Untimed: the previous case's dirty buffers and files reach the disk first, so no
            # case pays for another's checkpoint or writeback.
            subprocess.run(
                ["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-c", "CHECKPOINT", "postgres"],
                check=True,
            )
            subprocess.run(["sync"], check=True)
            if case == "plain":
                plain.append(_plain_restore(archive))
                _log(f"round {round_no + 1} plain pg_restore -j 2: {plain[-1]:.2f}s")
            else:
                record = run_drill(
                    DrillRun(
                        config, runtime.catalog, runtime.storage, config.target("bench"), backup_id
                    )
                )
                if not record.passed:
                    raise SystemExit(f"the drill failed: {[c for c in record.checks if not c.ok]}")
                drills.append(record)
                _log(
                    f"round {round_no + 1} drill: restore {record.timings['restore']:.2f}s, "
                    f"RTO {record.rto_seconds:.2f}s"
                )
    archive.unlink()

    def med(values: list[float]) -> float:
        return statistics.median(values)

    restore = med([d.timings["restore"] for d in drills])
    ratio = med(plain) / restore
    lines = [
        f"## DR drill benchmark: {facts['dbname']} ({facts['database_bytes'] / 1e9:.2f} GB, "
        f"archive {artifact.logical_bytes / 1e9:.2f} GB, stored {artifact.bytes / 1e6:.0f} MB), "
        f"{args.rounds} alternating rounds, into the PostgreSQL 15 service",
        "",
        "| step | median s | rounds |",
        "|---|---:|---|",
        f"| plain `createdb` + `pg_restore -j 2` | {med(plain):.2f} | "
        + ", ".join(f"{x:.2f}" for x in plain)
        + " |",
    ]
    for step in ("download", "restore", "validation", "cleanup"):
        values = [d.timings[step] for d in drills]
        lines.append(
            f"| drill: {step} | {med(values):.2f} | " + ", ".join(f"{x:.2f}" for x in values) + " |"
        )
    rto = [d.rto_seconds for d in drills]
    lines.append(
        f"| drill: RTO (download + restore + validation) | {med(rto):.2f} | "
        + ", ".join(f"{x:.2f}" for x in rto)
        + " |"
    )
    verdict = "met" if ratio >= 0.9 else "MISSED"
    per_round = [p / d.timings["restore"] for p, d in zip(plain, drills, strict=True)]
    rto_rounds = [d.rto_seconds / p for p, d in zip(plain, drills, strict=True)]
    rto_ratio = med(rto_rounds)
    lines += [
        "",
        f"- RTO vs plain pg_restore: median of per-round ratios {rto_ratio:.2f}x (target <= "
        f"1.35x: {'met' if rto_ratio <= 1.35 else 'MISSED'}; rounds: "
        + ", ".join(f"{x:.2f}" for x in rto_rounds)
        + f"); on medians {med(rto) / med(plain):.2f}x",
        f"- restore step speed vs plain pg_restore: {ratio:.2f}x on medians (target >= 0.9x: "
        f"{verdict}); median of per-round ratios {med(per_round):.2f}x (rounds: "
        + ", ".join(f"{x:.2f}" for x in per_round)
        + ")",
        "- download = read back from storage + sha256 + decompress to a seekable file "
        "(pg_restore -j needs one), done in the same pass as the verification",
        f"- the drill ran {len(drills[0].checks)} checks; validation reads each table once "
        "(row count, primary-key NULLs and uniqueness in one scan, 2 tables at a time), runs the "
        "sequence and foreign-key queries in the same pool, judges the facts with one Great "
        "Expectations suite (imported while pg_restore runs) and ends with `pg_amcheck --jobs 2`"
        " (heap + btree)",
    ]
    markdown = "\n".join(lines)
    print(markdown)
    runtime.close()
    return markdown


if __name__ == "__main__":
    main()
