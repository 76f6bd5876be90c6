"""A flow command as a user or a worker runs it: `runbook backup`'s peak memory and fixed cost,
against what they would run instead (issue 14).

Cases, run alternately (the order rotates every round), each a fresh process:
  mem-anchor     pg_dump -Fc -Z0 | zstd -T0 > file  of runbook_bench_cmd (~300 MB; zstd's
                 level 3 is Runbook's default compression_level)
  mem-temp       runbook backup of that database, no Prefect server configured (a temporary
                 server is started, as for a new user)
  mem-server     the same with PREFECT_API_URL naming a running Prefect server (a worker)
  up-refused     pg_dump of a database nobody listens for (connection refused)
  up-tiny        pg_dump -Fc -Z0 | zstd -T0 of a tiny database
  up-temp        runbook backup of the unreachable database, no Prefect server configured
  up-server      the same with a Prefect server configured
  up-tiny-temp   runbook backup (and read-back verification) of the tiny database
  server-alone   Prefect's temporary server started as Runbook starts it, until /health answers
  marks-refused  up-temp through an instrumented entry point: when each phase ended, RSS there
  marks-bench    mem-temp the same way

Memory is `/usr/bin/time -f %M` of the command: the largest peak RSS of any one process of its
tree (Linux's ru_maxrss of a child covers its reaped descendants). A sampler reads every
process's VmHWM under it every 50 ms to tell which one that is. Runbook's backups use
`retries: 0` (a refused connection is otherwise retried after backup.retry_delay); the runs
share one PREFECT_HOME, warmed up by a first, untimed run (reported: it creates Prefect's
database). Output: a markdown section on stdout, progress on stderr.

Run: python -m benchmarks.commands [--rounds 3]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(__file__).resolve().parent / ".work" / "commands"
ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
BENCH_DB = "runbook_bench_cmd"
TINY_DB = "runbook_bench_tiny"
SCALE = 0.2  # of benchmarks/dataset.py's 1.5 GB: ~300 MB
RUNBOOK = str(Path(sys.executable).with_name("runbook"))
TIME = "/usr/bin/time"
# Not on the backup path: a module of these in the process is a cost Runbook need not pay.
HEAVY = [
    "great_expectations",
    "pandas",
    "numpy",
    "statsmodels",
    "matplotlib",
    "boto3",
    "kubernetes",
    "docker",
    "prefect.server.api.server",
]
TARGETS = {"mem": 200.0, "up": 5.0}  # MB, seconds
CASES = [
    "mem-anchor",
    "mem-temp",
    "mem-server",
    "up-refused",
    "up-tiny",
    "up-temp",
    "up-server",
    "up-tiny-temp",
    "server-alone",
    "marks-refused",
    "marks-bench",
]
PHASES = [
    ("cli imported", "interpreter + `import runbook.cli`"),
    ("input checked", "config, catalog and target checks"),
    ("server launched", "launch of Prefect's temporary server"),
    ("flow imported", "import of the backup flow (Prefect, catalog, tasks)"),
    ("server ready", "waiting for the temporary server"),
    ("first task", "flow run and task run created, until the task's body starts"),
    ("flow returned", "the task, the flow's end"),
    ("exited", "summary printed, server stopped, logs flushed"),
]


def _log(message: str) -> None:
    print(f"[commands] {message}", file=sys.stderr, flush=True)


# --- measuring ----------------------------------------------------------------------------


def _status_kib(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as children:
                found += [int(c) for c in children.read().split()]
        except OSError:
            continue
    return found


def _role(pid: int, root: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            argv = cmdline.read().split(b"\0")
    except OSError:
        return "other"
    text = b" ".join(argv).decode(errors="replace")
    if "prefect.server.api.server:create_app" in text or "prefect server start" in text:
        return "Prefect server"
    name = os.path.basename(argv[0].decode(errors="replace")) if argv else ""
    if name in ("pg_dump", "zstd", "pg_restore"):
        return name
    if pid == root:
        return "command"
    return "other" if name != "time" else "time"


class TreeSampler:
    """Peak RSS (VmHWM, MiB) per role of every process under `root`, read every `interval`
    seconds; the peak of a process that lived shorter than that can be missed."""

    def __init__(self, root: int, interval: float = 0.05):
        self.root = root
        self.interval = interval
        self.peaks: dict[str, float] = {}
        self._seen: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="tree-sampler")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            command = _children(self.root)  # `time`'s child is the command
            pending = list(command)
            while pending:
                pid = pending.pop()
                pending += _children(pid)
                role = _role(pid, command[0]) if command else "other"
                if role != "other":  # a pid's role is its last exec (the early server execs)
                    self._seen[pid] = role
                hwm = _status_kib(pid, "VmHWM")
                if hwm is not None:
                    key = self._seen.get(pid, role)
                    self.peaks[key] = max(self.peaks.get(key, 0.0), hwm / 1024)
            self._stop.wait(self.interval)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return self.peaks


def _timed(argv: list[str], env: dict[str, str], *, sample: bool = False) -> dict:
    """Run `argv` under /usr/bin/time; its wall clock, %M (MiB) and exit code."""
    report = WORK / "time.out"
    started = time.perf_counter()
    process = subprocess.Popen(
        [TIME, "-f", "%M %e", "-o", str(report), *argv],
        env=env,
        cwd=WORK,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    sampler = TreeSampler(process.pid) if sample else None
    _, stderr = process.communicate(timeout=1800)
    wall = time.perf_counter() - started
    peaks = sampler.stop() if sampler else {}
    maxrss_kib = int(report.read_text().split()[-2])
    return {
        "seconds": wall,
        "maxrss_mib": maxrss_kib / 1024,
        "returncode": process.returncode,
        "peaks": peaks,
        "stderr_tail": stderr.decode(errors="replace")[-2000:],
    }


# --- the instrumented command (a child) ---------------------------------------------------


def child_marks(argv: list[str], marks_path: Path) -> None:
    """`runbook *argv` with the time and RSS at the end of each phase written to `marks_path`
    at exit (after Prefect's own exit handlers: the server is stopped by then)."""
    marks: dict[str, list[float]] = {"launched": [float(os.environ["RB_BENCH_LAUNCHED"]), 0.0]}

    def mark(name: str) -> None:
        if name not in marks:
            marks[name] = [time.time(), (_status_kib(os.getpid(), "VmRSS") or 0) / 1024]

    def write() -> None:
        mark("exited")
        peak = (_status_kib(os.getpid(), "VmHWM") or 0) / 1024
        loaded = [name for name in HEAVY if name in sys.modules]
        marks_path.write_text(json.dumps({"marks": marks, "peak": peak, "heavy": loaded}))

    atexit.register(write)  # registered first, so it runs last
    mark("interpreter")
    import runbook.cli
    from runbook.cli import backups, prefect_server

    mark("cli imported")
    real_early, real_run_flow = backups.start_prefect_early, backups.run_flow
    real_server = prefect_server.start_temporary_server

    def start_prefect_early() -> None:
        mark("input checked")
        real_early()
        mark("server launched")

    def start_temporary_server() -> None:
        real_server()
        mark("server ready")

    def run_flow(flow_fn, config_path, **params):
        mark("flow imported")
        import tasks.backups.tasks as backup_tasks

        real_run_backup = backup_tasks.run_backup

        def run_backup(*args, **kwargs):
            mark("first task")
            return real_run_backup(*args, **kwargs)

        backup_tasks.run_backup = run_backup
        try:
            return real_run_flow(flow_fn, config_path, **params)
        finally:
            mark("flow returned")

    backups.start_prefect_early = start_prefect_early
    backups.run_flow = run_flow
    prefect_server.start_temporary_server = start_temporary_server
    sys.argv = ["runbook", *argv]
    runbook.cli.main()


def _marks_run(argv: list[str], env: dict[str, str]) -> dict:
    path = WORK / "marks.json"
    path.unlink(missing_ok=True)
    env = {**env, "RB_BENCH_LAUNCHED": repr(time.time())}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.commands", "--child-marks", str(path), "--", *argv],
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=WORK,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=1800,
    )
    wall = time.perf_counter() - started
    if not path.exists():
        raise SystemExit(f"instrumented run wrote no marks: {done.stderr.decode()[-3000:]}")
    result = json.loads(path.read_text())
    result["seconds"] = wall
    return result


# --- servers and databases ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"Prefect server exited with {process.returncode}")
        if _healthy(url):
            return time.perf_counter() - started
        time.sleep(0.05)
    raise RuntimeError(f"Prefect server at {url} not healthy after {timeout:g}s")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _server_alone(env: dict[str, str]) -> dict:
    """Prefect's temporary server as `runbook.cli.prefect_server` launches it, timed from the
    launch to the first healthy answer, alone (nothing imports beside it)."""
    from runbook.cli.prefect_server import _launch

    port = _free_port()
    started = time.perf_counter()
    process = _launch(port, env)
    try:
        seconds = _wait_healthy(f"http://127.0.0.1:{port}/api", process, 300)
    except BaseException:
        process.kill()
        process.wait()
        raise
    hwm = (_status_kib(process.pid, "VmHWM") or 0) / 1024
    process.terminate()
    process.wait(15)
    return {"seconds": seconds, "wall": time.perf_counter() - started, "server_mib": hwm}


def _prefect_server(env: dict[str, str]) -> tuple[str, subprocess.Popen]:
    """A Prefect server for the worker cases (API only: --no-services --no-ui)."""
    port = _free_port()
    home = WORK / "server-home"
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("prefect")),
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-services",
            "--no-ui",
        ],
        env={**env, "PREFECT_HOME": str(home)},
        cwd=WORK,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    _wait_healthy(url, process, 300)
    return url, process


def _tiny_database() -> str:
    import psycopg
    from psycopg import sql

    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(TINY_DB)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TINY_DB)))
    dsn = f"postgresql://postgres@127.0.0.1:5432/{TINY_DB}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)")
        conn.execute("INSERT INTO notes SELECT i, 'note ' || i FROM generate_series(1, 100) i")
    return dsn


def _drop_tiny() -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(TINY_DB)))


def _importtime() -> dict:
    """`python -X importtime` of what `runbook backup` imports before its first task:
    self time summed per top-level package."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import runbook.cli, flows.backup"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    per_package: dict[str, float] = {}
    for line in done.stderr.splitlines():
        found = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if found:
            top = found[2].split(".")[0]
            per_package[top] = per_package.get(top, 0.0) + int(found[1]) / 1e6
    return per_package


def _import_rss() -> dict:
    """RSS of a process that imported runbook.cli, then the backup flow."""
    script = (
        "import json, os\n"
        "def rss():\n"
        "    return [int(l.split()[1]) / 1024 for l in open('/proc/self/status')"
        " if l.startswith('VmRSS:')][0]\n"
        "import runbook.cli\n"
        "cli = rss()\n"
        "import flows.backup\n"
        "print(json.dumps({'cli': cli, 'flow': rss()}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the run -------------------------------------------------------------------------------


def _config(bench_dsn: str, tiny_dsn: str, refused_port: int) -> Path:
    import yaml

    path = WORK / "runbook.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "catalog": "sqlite:///catalog.db",
                "storage": {"kind": "local", "path": "backups"},
                "backup": {"retries": 0, "timeout": "1h"},
                "retention": {"keep_last": 1},
                "targets": {
                    "postgres": [
                        {"name": "bench", "dsn": bench_dsn},
                        {"name": "tiny", "dsn": tiny_dsn},
                        {
                            "name": "gone",
                            "dsn": f"postgresql://postgres@127.0.0.1:{refused_port}/gone",
                        },
                    ]
                },
            }
        )
    )
    return path


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        {
            "PREFECT_HOME": str(WORK / "prefect-home"),
            "GX_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PGCONNECT_TIMEOUT": "10",
            # a timeout, not a cost: the warm-up run creates Prefect's database, which can
            # take longer than the default 20 s on a busy machine
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        }
    )
    return env


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _run_case(case: str, ctx: dict) -> dict:
    env, server_env, config = ctx["env"], ctx["server_env"], str(ctx["config"])
    out = WORK / "anchor.zst"
    if case == "mem-anchor":
        script = f"pg_dump -Fc -Z0 -d '{ctx['bench_dsn']}' | zstd -T0 -q -f -o {out}"
        return _timed(["bash", "-c", "set -eo pipefail; " + script], env, sample=True)
    if case == "up-refused":
        return _timed(["pg_dump", "-Fc", "-Z0", "-f", "/dev/null", "-d", ctx["refused_dsn"]], env)
    if case == "up-tiny":
        script = f"pg_dump -Fc -Z0 -d '{ctx['tiny_dsn']}' | zstd -T0 -q -f -o {out}"
        return _timed(["bash", "-c", "set -eo pipefail; " + script], env)
    if case == "server-alone":
        return _server_alone(env)
    backup = {
        "mem-temp": ("bench", env),
        "mem-server": ("bench", server_env),
        "up-temp": ("gone", env),
        "up-server": ("gone", server_env),
        "up-tiny-temp": ("tiny", env),
        "marks-refused": ("gone", env),
        "marks-bench": ("bench", env),
    }
    target, case_env = backup[case]
    argv = ["backup", "-t", target, "--config", config, "--json"]
    if case.startswith("marks"):
        return _marks_run(argv, case_env)
    return _timed([RUNBOOK, *argv], case_env, sample=True)


def _check(case: str, result: dict) -> None:
    """A run that did not do what the case says is a broken benchmark, not a figure."""
    code = result.get("returncode", 0)
    expected = 1 if case in ("up-temp", "up-server", "up-refused") else 0
    if case.startswith(("marks", "server")):
        return
    if code != expected:
        raise SystemExit(f"{case}: exit code {code}, expected {expected}: {result['stderr_tail']}")


def report(runs: dict[str, list[dict]], facts: dict, extra: dict, loads: list[float]) -> str:
    def med(case: str, key: str = "seconds") -> float:
        return _median([r[key] for r in runs[case]])

    def rounds(case: str, key: str = "seconds", fmt: str = "{:.2f}") -> str:
        return ", ".join(fmt.format(r[key]) for r in runs[case])

    def peak(case: str, role: str) -> str:
        values = [r["peaks"].get(role) for r in runs[case] if r["peaks"].get(role)]
        return f"{max(values):.0f}" if values else "–"

    mem_anchor, mem_temp, mem_server = (med(c, "maxrss_mib") for c in CASES[:3])
    up_temp, up_server = med("up-temp"), med("up-server")
    lines = [
        f"## Flow command benchmark: `runbook backup` of {facts['dbname']} "
        f"({facts['database_bytes'] / 1e6:.0f} MB in PostgreSQL) and of an unreachable "
        f"database, {len(runs['mem-temp'])} alternating rounds",
        "",
        "Each case a fresh process; medians of alternating rounds (the order rotates), so the "
        "machine's slow phases hit every case. **The machine is shared**: other people's tests "
        "and benchmarks ran at the same time (load average during the run "
        f"{min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} cores), so absolute "
        "seconds are inflated; the anchors in the same rounds show by how much. "
        "Runbook's config: zstd level 3 (the default), `retries: 0`.",
        "",
        "| row | anchor in the same run | Runbook | target |",
        "|---|---|---|---|",
        f"| peak memory of `runbook backup` (`/usr/bin/time -f %M`: the largest process of "
        f"its tree) | `pg_dump -Fc -Z0 \\| zstd -T0 > file`: {mem_anchor:.0f} MiB "
        f"| no Prefect server configured: **{mem_temp:.0f} MiB**; with a Prefect server "
        f"configured (a worker): **{mem_server:.0f} MiB** | under {TARGETS['mem']:.0f} MB: "
        f"{_verdict(mem_temp, TARGETS['mem'])} / {_verdict(mem_server, TARGETS['mem'])} |",
        f"| fixed cost of a flow command (`runbook backup` of an unreachable database, wall "
        f"clock) | `pg_dump` of the same database: {med('up-refused'):.2f} s; "
        f"`pg_dump -Fc \\| zstd` of a tiny database: {med('up-tiny'):.2f} s "
        f"| no Prefect server configured: **{up_temp:.2f} s**; with one: "
        f"**{up_server:.2f} s**; a tiny database backed up and verified (no server "
        f"configured): {med('up-tiny-temp'):.2f} s "
        f"| under {TARGETS['up']:.0f} s without a server: {_verdict(up_temp, TARGETS['up'])} |",
        "",
        "### Where the memory goes",
        "",
        "Peak RSS (MiB) per process of the command's tree (VmHWM sampled every 50 ms; "
        "the largest of the rounds):",
        "",
        "| case | %M (median; rounds) | the command's own process | Prefect server "
        "| pg_dump | zstd |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for case, title in [
        ("mem-anchor", "`pg_dump \\| zstd -T0` (anchor)"),
        ("mem-temp", "`runbook backup`, no server configured"),
        ("mem-server", "`runbook backup`, a server configured"),
        ("up-temp", "`runbook backup` of the unreachable database"),
    ]:
        lines.append(
            f"| {title} | {med(case, 'maxrss_mib'):.0f} ({rounds(case, 'maxrss_mib', '{:.0f}')}) "
            f"| {peak(case, 'command') if case != 'mem-anchor' else '–'} "
            f"| {peak(case, 'Prefect server')} | {peak(case, 'pg_dump')} | {peak(case, 'zstd')} |"
        )
    marks = runs["marks-bench"]

    def rss_at(name: str) -> str:
        values = [m["marks"][name][1] for m in marks if name in m["marks"]]
        return f"{_median(values):.0f}" if values else "–"

    lines += [
        "",
        "The command's own process (instrumented run of `runbook backup` of "
        f"{facts['dbname']}, no server configured; medians, MiB): "
        f"{extra['import_rss']['cli']:.0f} after `import runbook.cli` and "
        f"{extra['import_rss']['flow']:.0f} after importing the backup flow (Prefect, the "
        f"catalog, the tasks) in a bare process; in the command: {rss_at('flow imported')} "
        f"once the flow is imported, {rss_at('server ready')} once Prefect's client is set "
        f"up, {rss_at('first task')} when the backup task starts, peak "
        f"{_median([m['peak'] for m in marks]):.0f} (the dump and the read-back "
        f"verification). The temporary server alone: {med('server-alone', 'server_mib'):.0f} "
        "MiB once it answers. Modules not needed on the backup path loaded at exit: "
        f"{', '.join(sorted({h for m in marks for h in m['heavy']})) or 'none'}.",
        "",
        "### Where the seconds go before the first task",
        "",
        "Instrumented `runbook backup` of the unreachable database, no server configured "
        "(the same code, with a timestamp and RSS taken at the end of each phase; "
        f"{len(runs['marks-refused'])} rounds, medians):",
        "",
        "| phase (ends at) | seconds | rounds |",
        "|---|---:|---|",
    ]
    previous = "launched"
    for name, title in PHASES:
        spans = [
            m["marks"][name][0] - m["marks"][previous][0]
            for m in runs["marks-refused"]
            if name in m["marks"] and previous in m["marks"]
        ]
        if spans:
            lines.append(
                f"| {title} | {_median(spans):.2f} | {', '.join(f'{s:.2f}' for s in spans)} |"
            )
            previous = name
    totals = [m["seconds"] for m in runs["marks-refused"]]
    top = sorted(extra["importtime"].items(), key=lambda kv: -kv[1])[:8]
    lines += [
        f"| total (wall clock of the instrumented command) | {_median(totals):.2f} "
        f"| {', '.join(f'{s:.2f}' for s in totals)} |",
        "",
        f"- Prefect's temporary server on its own, launched as Runbook launches it, answers "
        f"/health after {med('server-alone'):.2f} s (rounds: {rounds('server-alone')}); "
        "Runbook launches it before importing the flow, so the two overlap on the 2 cores.",
        "- `python -X importtime -c 'import runbook.cli, flows.backup'` (one run, self time "
        "per top-level package, seconds): "
        + ", ".join(f"{name} {seconds:.2f}" for name, seconds in top)
        + f"; total {sum(extra['importtime'].values()):.2f}.",
        f"- The first run on a fresh PREFECT_HOME (Prefect creates its database) took "
        f"{extra['first_run']:.2f} s; it is not in the rounds.",
        "",
        "Every round (seconds; %M in MiB for the memory cases):",
        "",
        "| case | rounds |",
        "|---|---|",
    ]
    for case in CASES:
        cell = rounds(case)
        if case.startswith("mem"):
            cell += f" (%M {rounds(case, 'maxrss_mib', '{:.0f}')})"
        lines.append(f"| {case} | {cell} |")
    return "\n".join(lines)


def _verdict(value: float, goal: float) -> str:
    return "met" if value < goal else "**missed**"


def main(argv: list[str] | None = None) -> str | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child-marks", type=Path)
    parser.add_argument("rest", nargs="*")
    args = parser.parse_args(argv)
    if args.child_marks:
        child_marks(args.rest, args.child_marks)
        return None

    from benchmarks.dataset import ensure_dataset

    if not Path(TIME).exists():
        raise SystemExit(f"{TIME} is needed (apt-get install time)")
    facts = ensure_dataset(dbname=BENCH_DB, scale=SCALE)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    refused_port = _free_port()
    tiny_dsn = _tiny_database()
    bench_dsn = f"postgresql://postgres@127.0.0.1:5432/{BENCH_DB}"
    config = _config(bench_dsn, tiny_dsn, refused_port)
    env = _clean_env()
    _log("starting a Prefect server for the worker cases")
    api_url, server = _prefect_server(env)
    try:
        ctx = {
            "env": env,
            "server_env": {**env, "PREFECT_API_URL": api_url},
            "config": config,
            "bench_dsn": bench_dsn,
            "tiny_dsn": tiny_dsn,
            "refused_dsn": f"postgresql://postgres@127.0.0.1:{refused_port}/gone",
        }
        _log("first run on a fresh PREFECT_HOME (untimed warm-up)")
        first = _timed([RUNBOOK, "backup", "-t", "gone", "--config", str(config)], env)
        _check("up-temp", first)
        # The worker's server creates its flow and deployment-less records on first use too.
        _check(
            "up-server",
            _timed([RUNBOOK, "backup", "-t", "gone", "--config", str(config)], ctx["server_env"]),
        )
        extra = {
            "first_run": first["seconds"],
            "importtime": _importtime(),
            "import_rss": _import_rss(),
        }
        runs: dict[str, list[dict]] = {case: [] for case in CASES}
        loads: list[float] = []
        for round_no in range(args.rounds):
            shift = round_no * 3 % len(CASES)
            for case in CASES[shift:] + CASES[:shift]:
                loads.append(os.getloadavg()[0])
                result = _run_case(case, ctx)
                _check(case, result)
                runs[case].append(result)
                shutil.rmtree(WORK / "backups", ignore_errors=True)
                _log(
                    f"round {round_no + 1} {case}: {result['seconds']:.2f}s"
                    + (f", %M {result['maxrss_mib']:.0f} MiB" if "maxrss_mib" in result else "")
                )
        loads.append(os.getloadavg()[0])
    finally:
        _stop(server)
        _drop_tiny()
    markdown = report(runs, facts, extra, loads)
    print(markdown)
    return markdown


if __name__ == "__main__":
    main()
