"""The one-pass backup pipeline against the shell pipelines it replaces, on runbook_bench.

Cases, run alternately (the order rotates every round) so machine noise hits all of them:
  a  pg_dump -Fc -Z0 > /dev/null                       the floor: pg_dump's own pace
  b  pg_dump -Fc -Z0 | zstd -1 -T0 > file              the target to match
  c  pg_dump | gzip > file                             what people use today
  d  Runbook's run_backup (zstd level 1): the dump-compress-hash-store phase of the archive
  e  Runbook's run_backup + verify_backup: the whole backup including read-back verification

Each Python case runs in its own child process so its peak RSS (ru_maxrss) is per run.
Between cases the harness runs sync(2), untimed: the shell cases never fsync, and their
writeback would otherwise slow down whichever case runs next. The
times for d and e are measured inside the child around the pipeline (interpreter start-up is
reported apart). Output: markdown tables on stdout, progress on stderr.

Run: python -m benchmarks.pipeline [--rounds 3] [--level 1] [--threads 0]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

WORK = Path(__file__).resolve().parent / ".work"
CASES = ["a", "b", "c", "d", "e"]
TITLES = {
    "a": "a. pg_dump -Fc -Z0 > /dev/null",
    "b": "b. pg_dump -Fc -Z0 | zstd -1 -T0 > file",
    "c": "c. pg_dump | gzip > file",
    "d": "d. Runbook: dump-compress-hash-store phase",
    "e": "e. Runbook: whole backup + read-back verification",
}
MiB = 1024 * 1024


def _log(message: str) -> None:
    print(f"[pipeline] {message}", file=sys.stderr, flush=True)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_shell(case: str, dsn: str, out: Path) -> dict:
    dump = f"pg_dump -d {shlex.quote(dsn)}"
    script = {
        "a": f"{dump} -Fc -Z0 > /dev/null",
        "b": f"{dump} -Fc -Z0 | zstd -1 -T0 -q > {shlex.quote(str(out))}",
        "c": f"{dump} | gzip > {shlex.quote(str(out))}",
    }[case]
    cpu0 = _children_cpu()
    started = time.perf_counter()
    subprocess.run(["bash", "-c", "set -eo pipefail; " + script], check=True, timeout=3600)
    seconds = time.perf_counter() - started
    stored = out.stat().st_size if out.exists() else None
    return {"seconds": seconds, "stored_bytes": stored, "cpu": _children_cpu() - cpu0}


def _run_python(case: str, dsn: str, out_dir: Path, level: int, threads: int) -> dict:
    argv = [
        sys.executable,
        "-m",
        "benchmarks.pipeline",
        "--child",
        case,
        "--dsn",
        dsn,
        "--out",
        str(out_dir),
        "--level",
        str(level),
        "--threads",
        str(threads),
    ]
    cpu0 = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(
        argv, check=True, timeout=3600, stdout=subprocess.PIPE, cwd=WORK.parent.parent
    )
    wall = time.perf_counter() - started
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    result["wall_with_startup"] = wall
    result["cpu"] = _children_cpu() - cpu0
    return result


def child(case: str, dsn: str, out_dir: Path, level: int, threads: int) -> None:
    """One Runbook backup (case d or e) in a fresh process; prints one JSON line.

    d: `run_backup` (lock, snapshot, facts and exact row counts, dump -> zstd -> sha256 ->
       storage, manifest); its time is the dump-compress-hash-store phase of the artifact.
    e: `run_backup` then `verify_backup` (read back from storage, sha256, decode,
       pg_restore --list): the whole backup including verification.
    """
    imported = time.perf_counter()
    import yaml

    from runbook.config import parse_config
    from runbook.manifest import new_backup_id
    from runbook.runtime import runtime_for
    from tasks.backups.dump import run_backup
    from tasks.backups.verify import verify_backup

    import_seconds = time.perf_counter() - imported
    source = out_dir / "runbook.yaml"
    source.write_text(
        yaml.safe_dump(
            {
                "catalog": "sqlite:///catalog.db",
                "storage": {"kind": "local", "path": "backups"},
                "backup": {
                    "compression_level": level,
                    "compression_threads": threads,
                    "retries": 0,
                },
                "targets": {"postgres": [{"name": "bench", "dsn": dsn}]},
            }
        )
    )
    config = parse_config(source.read_text(), source=source)
    runtime = runtime_for(config)
    backup_id = new_backup_id()
    started = time.perf_counter()
    outcome = run_backup(
        config, config.target("bench"), runtime.catalog, runtime.storage, backup_id
    )
    backup_seconds = time.perf_counter() - started
    if outcome.manifest is None:
        raise SystemExit(f"backup did not store: {outcome.record}")
    artifact = outcome.manifest.artifacts[0]
    result = {
        "seconds": artifact.seconds,
        "phase_seconds": artifact.seconds,
        "backup_seconds": backup_seconds,
        "import_seconds": import_seconds,
        "logical_bytes": artifact.logical_bytes,
        "stored_bytes": artifact.bytes,
        "manifest_timings": outcome.manifest.timings,
        "pg_dump": outcome.manifest.tools.get("pg_dump"),
        "server_version": outcome.manifest.source.get("server_version"),
    }
    if case == "e":
        verify_started = time.perf_counter()
        report = verify_backup(runtime.catalog, runtime.storage, backup_id)
        result["verify_seconds"] = time.perf_counter() - verify_started
        result["seconds"] = time.perf_counter() - started
        if not report.ok:
            raise SystemExit(f"verification failed: {report.problems}")
    self_usage = resource.getrusage(resource.RUSAGE_SELF)
    result["peak_rss_mib"] = self_usage.ru_maxrss / 1024  # KiB on Linux
    result["python_cpu"] = self_usage.ru_utime + self_usage.ru_stime
    runtime.close()
    print(json.dumps(result))


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _fmt(seconds: float) -> str:
    return f"{seconds:.2f}"


def report(runs: dict[str, list[dict]], facts: dict, loads: list[float], args) -> str:
    med = {case: _median([r["seconds"] for r in runs[case]]) for case in CASES}
    logical = _median([r["logical_bytes"] for r in runs["d"]])
    lines = [
        f"## Backup pipeline benchmark: {facts['dbname']} "
        f"({facts['database_bytes'] / 1e9:.2f} GB in PostgreSQL, "
        f"{logical / 1e9:.2f} GB as `pg_dump -Fc -Z0`), {args.rounds} rounds, "
        f"{os.cpu_count()} CPUs",
        "",
        f"Python cases: zstd level {args.level}, threads {args.threads} (0 = one per core). "
        "Speed vs X = time of X / time of the case (higher is faster); ratio = bytes of "
        "`pg_dump -Fc -Z0` / stored bytes; CPU = user+sys of all processes of the case. "
        f"Load average during the run: {min(loads):.2f} to {max(loads):.2f}.",
        "",
        "| case | median s | min s | max s | speed vs b | speed vs c | stored MB | ratio "
        "| CPU s | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in CASES:
        times = [r["seconds"] for r in runs[case]]
        stored = [r["stored_bytes"] for r in runs[case] if r.get("stored_bytes")]
        rss = [r["peak_rss_mib"] for r in runs[case] if "peak_rss_mib" in r]
        cells = [
            TITLES[case].replace("|", "\\|"),
            _fmt(med[case]),
            _fmt(min(times)),
            _fmt(max(times)),
            f"{med['b'] / med[case]:.2f}x",
            f"{med['c'] / med[case]:.2f}x",
            f"{_median(stored) / 1e6:.0f}" if stored else "–",
            f"{logical / _median(stored):.2f}" if stored else "–",
            f"{_median([r['cpu'] for r in runs[case]]):.1f}",
            f"{max(rss):.0f}" if rss else "–",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Targets (medians):", ""]
    targets = [
        ("d speed vs b >= 0.95", med["b"] / med["d"], 0.95),
        ("d speed vs c >= 2", med["c"] / med["d"], 2.0),
        ("e speed vs b >= 0.75", med["b"] / med["e"], 0.75),
        (
            "peak RSS of d/e < 200 MiB",
            200 / max(r["peak_rss_mib"] for r in runs["d"] + runs["e"]),
            1.0,
        ),
    ]
    for name, value, goal in targets:
        verdict = "met" if value >= goal else "MISSED"
        lines.append(f"- {name}: {value:.2f} ({verdict})")

    def paired(case: str, base: str) -> str:
        ratios = [b["seconds"] / x["seconds"] for b, x in zip(runs[base], runs[case], strict=True)]
        return f"{_median(ratios):.2f} (rounds: {', '.join(f'{r:.2f}' for r in ratios)})"

    lines += [
        "",
        "Same comparisons as medians of per-round ratios (each round runs every case once, "
        "so these cancel slow phases of the machine):",
        "",
        f"- d speed vs b: {paired('d', 'b')}",
        f"- d speed vs c: {paired('d', 'c')}",
        f"- e speed vs b: {paired('e', 'b')}",
        f"- a speed vs b: {paired('a', 'b')} (pg_dump alone: the ceiling)",
    ]

    def med_of(case: str, key: str, sub: str | None = None) -> str:
        values = [r[key][sub] if sub else r[key] for r in runs[case] if key in r]
        values = [v for v in values if v is not None]
        return _fmt(_median(values)) if values else "–"

    lines += [
        "",
        "Where the time goes in Runbook's backup (medians, seconds):",
        "",
        "| facts (version, schema) | exact row counts | dump phase (d) "
        "| whole run_backup | read-back verification | e total | Python CPU (e) "
        "| interpreter + imports |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {med_of('d', 'manifest_timings', 'facts')} "
        f"| {med_of('d', 'manifest_timings', 'row counts')} | {med_of('d', 'phase_seconds')} "
        f"| {med_of('d', 'backup_seconds')} | {med_of('e', 'verify_seconds')} "
        f"| {med_of('e', 'seconds')} | {med_of('e', 'python_cpu')} "
        f"| {_fmt(_median([r['wall_with_startup'] - r['backup_seconds'] for r in runs['d']]))} |",
        "",
        f"Runbook chose {runs['d'][0].get('pg_dump')} for the PostgreSQL "
        f"{runs['d'][0].get('server_version')} server.",
        "",
        "Every round (seconds; the order of the cases rotates from round to round):",
        "",
        "| round | " + " | ".join(CASES) + " |",
        "|---|" + "---:|" * len(CASES),
    ]
    for i in range(args.rounds):
        lines.append(
            f"| {i + 1} | " + " | ".join(_fmt(runs[c][i]["seconds"]) for c in CASES) + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--level", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--child", choices=["d", "e"])
    parser.add_argument("--dsn")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.dsn, args.out, args.level, args.threads)
        return None

    from benchmarks.dataset import ensure_dataset

    facts = ensure_dataset()
    dsn = facts["dsn"]
    WORK.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {case: [] for case in CASES}
    loads: list[float] = []
    for round_no in range(args.rounds):
        order = CASES[round_no % len(CASES) :] + CASES[: round_no % len(CASES)]
        for case in order:
            out_dir = WORK / f"round-{case}"
            shutil.rmtree(out_dir, ignore_errors=True)
            out_dir.mkdir(parents=True)
            loads.append(os.getloadavg()[0])
            if case in "abc":
                result = _run_shell(case, dsn, out_dir / "backup.out")
            else:
                result = _run_python(case, dsn, out_dir, args.level, args.threads)
            # The shell cases do not fsync: write their output back now, untimed, so the
            # next case does not pay for another case's writeback.
            os.sync()
            shutil.rmtree(out_dir, ignore_errors=True)
            runs[case].append(result)
            _log(f"round {round_no + 1} {case}: {result['seconds']:.2f}s")
    loads.append(os.getloadavg()[0])
    markdown = report(runs, facts, loads, args)
    print(markdown)
    return markdown


if __name__ == "__main__":
    main()
