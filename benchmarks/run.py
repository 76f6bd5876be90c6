"""`make bench`: run the benchmarks and write docs/benchmarks.md.

    python -m benchmarks.run [--rounds 3]

Builds (once) the >= 1.5 GB database `runbook_bench` on the PostgreSQL at 127.0.0.1:5432,
then runs the backup pipeline benchmark (benchmarks/pipeline.py), the DR drill benchmark
(benchmarks/drill.py), the health check benchmark (benchmarks/health_http.py) and the
maintenance window benchmark (benchmarks/maintenance.py, its own ~1 GB bloated database), the
capacity forecast benchmark (benchmarks/capacity.py: 500 resources, a year of samples each),
the flow command benchmark (benchmarks/commands.py: peak memory and fixed start-up cost of
`runbook backup` against pg_dump),
and records the results. With `--only`, the sections it runs replace theirs in docs/benchmarks.md
and the others stay as they are.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import platform
import re
from pathlib import Path

from benchmarks import capacity, commands, drill, health_http, maintenance, pipeline

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
BENCHMARKS = ["pipeline", "drill", "health", "maintenance", "capacity", "commands"]

HEADER = """# Benchmarks

Produced by `make bench` (`python -m benchmarks.run`) on {host}, {date}. Speed and memory
targets live here, not in timed tests. Figures on a shared 2-core machine are noisy: compare
the per-round ratios, which cancel slow phases of the machine.

Targets: Runbook's dump-compress-hash-store phase (d) at least 0.95x the speed of
`pg_dump -Fc -Z0 | zstd -1 -T0 > file` (b) and at least 2x `pg_dump | gzip > file` (c); the
whole backup including read-back verification (e) at least 0.75x of (b); peak memory under
200 MB whatever the database size. A drill's restore step at least 0.9x as fast as a plain
`pg_restore -j 2` of the same archive. 200 HTTP endpoints answering in 100 ms each checked
in under 5 seconds. 500 capacity resources with a year of daily samples each forecast in
under 60 seconds and 500 MB.

"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=BENCHMARKS, action="append")
    args = parser.parse_args()
    only = set(args.only or BENCHMARKS)
    sections = []
    if "pipeline" in only:
        sections.append(pipeline.main(["--rounds", str(args.rounds)]))
    if "drill" in only:
        sections.append(drill.main(["--rounds", str(args.rounds)]))
    if "health" in only:
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):
            health_http.main(["--flow"])
        print(captured.getvalue())
        sections.append(
            "## Health check benchmark\n\n"
            + "\n".join(f"- {line}" for line in captured.getvalue().strip().splitlines())
        )
    if "maintenance" in only:
        sections.append(maintenance.main(["--rounds", str(args.rounds)]))
    if "capacity" in only:
        sections.append(capacity.main(["--rounds", str(args.rounds)]))
    if "commands" in only:
        sections.append(commands.main(["--rounds", str(args.rounds)]) or "")
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    if only != set(BENCHMARKS) and DOCS.exists():
        DOCS.write_text(merge_sections(DOCS.read_text(), sections))
    else:
        host = f"{platform.node() or 'this machine'} ({platform.machine()}, Python "
        host += f"{platform.python_version()})"
        DOCS.write_text(
            HEADER.format(host=host, date=datetime.date.today().isoformat())
            + "\n\n".join(sections)
            + "\n"
        )
    print(f"written to {DOCS}")


def _title(section: str) -> str:
    """'## DR drill benchmark: runbook_bench (...)' -> '## DR drill benchmark'."""
    return section.splitlines()[0].split(":", 1)[0].strip()


def merge_sections(document: str, sections: list[str]) -> str:
    """The document with each `## ` section of `sections` in place of the one of the same
    title (or appended); the header and the other sections unchanged."""
    parts = re.split(r"(?m)^(?=## )", document)
    header, existing = parts[0], [part.rstrip("\n") for part in parts[1:]]
    for section in sections:
        titles = [_title(part) for part in existing]
        if _title(section) in titles:
            existing[titles.index(_title(section))] = section.rstrip("\n")
        else:
            existing.append(section.rstrip("\n"))
    return header + "\n\n".join(existing) + "\n"


if __name__ == "__main__":
    main()
