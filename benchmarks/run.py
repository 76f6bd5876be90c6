"""`make bench`: run the benchmarks and write docs/benchmarks.md.

    python -m benchmarks.run [--rounds 3]

Builds (once) the >= 1.5 GB database `runbook_bench` on the PostgreSQL at 127.0.0.1:5432,
then runs the backup pipeline benchmark (benchmarks/pipeline.py) and records the result.
"""

from __future__ import annotations

import argparse
import datetime
import platform
from pathlib import Path

from benchmarks import pipeline

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"

HEADER = """# Benchmarks

Produced by `make bench` (`python -m benchmarks.run`) on {host}, {date}. Speed and memory
targets live here, not in timed tests. Figures on a shared 2-core machine are noisy: compare
the per-round ratios, which cancel slow phases of the machine.

Targets (issue 2): Runbook's dump-compress-hash-store phase (d) at least 0.95x the speed of
`pg_dump -Fc -Z0 | zstd -1 -T0 > file` (b) and at least 2x `pg_dump | gzip > file` (c); the
whole backup including read-back verification (e) at least 0.75x of (b); peak memory under
200 MB whatever the database size.

"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    markdown = pipeline.main(["--rounds", str(args.rounds)])
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    host = f"{platform.node() or 'this machine'} ({platform.machine()}, Python "
    host += f"{platform.python_version()})"
    DOCS.write_text(
        HEADER.format(host=host, date=datetime.date.today().isoformat()) + markdown + "\n"
    )
    print(f"written to {DOCS}")


if __name__ == "__main__":
    main()
