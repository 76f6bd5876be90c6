"""Against a real Prefect server (scheduler service on): prefect.yaml's schedules turn into
scheduled runs at the right local times, from `runbook deploy` and from
`python -m deployments.serve`; runs started from deployments through a process worker end
cleanly (Completed, or Failed with a message naming what went wrong and no traceback).

`prefect_test_harness` never runs the scheduler, so only these tests catch a server that
shows schedules but creates no runs (SQLAlchemy 2.1 with Prefect 3.8.8).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
import yaml

from tests.support.prefect_server import PrefectServer, Process

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]  # the checkout: prefect.yaml, deployments/

TIMEZONE = "America/New_York"  # not UTC, and with DST
SCHEDULE_POLL_TIMEOUT = 60.0
RUN_TIMEOUT = 240.0  # each flow run process imports Prefect and the flow (~10 s) on 2 cores

# Scheduled runs far enough ahead that every window spans a DST change (they are at most
# ~238 days apart): runs are created until 250 days ahead, at most 270 per schedule.
WINDOW = timedelta(days=250)
MAX_RUNS = 270
LONG_WINDOW = {
    "PREFECT_SERVER_SERVICES_SCHEDULER_MIN_SCHEDULED_TIME": f"P{WINDOW.days}D",
    "PREFECT_SERVER_SERVICES_SCHEDULER_MAX_SCHEDULED_TIME": f"P{WINDOW.days + 15}D",
    "PREFECT_SERVER_SERVICES_SCHEDULER_MAX_RUNS": str(MAX_RUNS),
}

# What the README promises, independent of prefect.yaml (local times in the config's zone).
PROMISED: dict[str, Any] = {
    "backup-nightly": lambda t: (t.hour, t.minute) == (2, 0),
    "health-daily": lambda t: (t.hour, t.minute) == (6, 0),
    "health-hourly": lambda t: t.minute == 0,
    "daily-report": lambda t: (t.hour, t.minute) == (18, 0),  # runbook 001: the 6 PM report
    "drill-monthly": lambda t: t.weekday() == 6 and t.day <= 7 and (t.hour, t.minute) == (7, 0),
    "verify-weekly": lambda t: t.weekday() == 6 and (t.hour, t.minute) == (4, 0),
    # runbook 000: weekly Sunday 2-4 AM, monthly first Sunday 2-6 AM (which replaces the weekly)
    "maintenance-weekly": lambda t: t.weekday() == 6 and t.day > 7 and (t.hour, t.minute) == (2, 0),
    "maintenance-monthly": lambda t: (
        t.weekday() == 6 and t.day <= 7 and (t.hour, t.minute) == (2, 0)
    ),
    # capacity: samples daily before the health check; the review on the 1st, quarterly in
    # January, April, July and October (replacing that month's monthly one)
    "capacity-collect": lambda t: (t.hour, t.minute) == (5, 30),
    "capacity-report-monthly": lambda t: (
        t.day == 1 and t.month not in (1, 4, 7, 10) and (t.hour, t.minute) == (8, 0)
    ),
    "capacity-report-quarterly": lambda t: (
        t.day == 1 and t.month in (1, 4, 7, 10) and (t.hour, t.minute) == (8, 0)
    ),
}
SCHEDULER_ERRORS = re.compile(
    r"Traceback|InvalidRequestError|Error scheduling deployment|ERROR.*(schedul|docket)",
    re.IGNORECASE,
)


def declared() -> dict[str, list[dict[str, Any]]]:
    """prefect.yaml's deployment names -> their schedules (empty: on demand)."""
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return {d["name"]: d.get("schedules") or [] for d in spec["deployments"]}


def runbook_command() -> str:
    """The `runbook` script of the environment running the tests."""
    return str(Path(sys.executable).with_name("runbook"))


# --- local wall-clock slots of a schedule, computed without Prefect -------------------------


def cron_field(text: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        span, _, step = part.partition("/")
        if span == "*":
            first, last = low, high
        elif "-" in span:
            first, last = (int(x) for x in span.split("-"))
        else:
            first = last = int(span)
        values.update(range(first, last + 1, int(step or 1)))
    return values


def cron_walls(expr: str, day: date) -> list[datetime]:
    """Naive local wall times of a 5-field cron expression on one day."""
    minute, hour, dom, month, dow = expr.split()
    days_of_week = {d % 7 for d in cron_field(dow, 0, 7)}  # 0 and 7 are Sunday
    on_dom = day.day in cron_field(dom, 1, 31)
    on_dow = (day.weekday() + 1) % 7 in days_of_week
    restricted = dom != "*" and dow != "*"
    if day.month not in cron_field(month, 1, 12):
        return []
    if not ((on_dom or on_dow) if restricted else (on_dom and on_dow)):
        return []
    return [
        datetime(day.year, day.month, day.day, h, m)
        for h in sorted(cron_field(hour, 0, 23))
        for m in sorted(cron_field(minute, 0, 59))
    ]


def rrule_walls(rule: str, day: date) -> list[datetime]:
    from dateutil.rrule import rrulestr

    start = datetime(day.year, day.month, day.day)
    return list(rrulestr(rule, dtstart=start).between(start, start + timedelta(days=1), inc=False))


@dataclass
class Slots:
    """The instants a schedule should produce in a range, and the wall times that do not
    exist there (skipped by the DST change)."""

    instants: set[datetime]
    missing_walls: list[datetime]


def schedule_slots(
    schedule: dict[str, Any], zone: ZoneInfo, start: datetime, end: datetime
) -> Slots:
    instants: set[datetime] = set()
    missing: list[datetime] = []
    day = start.astimezone(zone).date() - timedelta(days=1)
    while day <= end.astimezone(zone).date() + timedelta(days=1):
        if "cron" in schedule:
            walls = cron_walls(schedule["cron"], day)
        else:
            walls = rrule_walls(schedule["rrule"], day)
        for wall in walls:
            aware = wall.replace(tzinfo=zone)  # fold=0: the first of a repeated hour
            instant = aware.astimezone(UTC)
            if instant.astimezone(zone).replace(tzinfo=None) != wall:
                missing.append(wall)
            elif start <= instant <= end:
                instants.add(instant)
        day += timedelta(days=1)
    return Slots(instants, missing)


# --- reading what the server scheduled -------------------------------------------------------


def runs_by_deployment(client: Any) -> dict[str, list[Any]]:
    """Deployment name -> all its flow runs, by expected start time."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    result = {}
    for deployment in client.read_deployments():
        runs: list[Any] = []
        while True:
            page = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                limit=200,
                offset=len(runs),
            )
            runs.extend(page)
            if len(page) < 200:
                break
        result[deployment.name] = runs
    return result


def scheduler_errors(server: PrefectServer) -> list[str]:
    return [line for line in server.log().splitlines() if SCHEDULER_ERRORS.search(line)]


def wait_for_scheduled_runs(
    server: PrefectServer, since: datetime, timezone: str
) -> dict[str, list[Any]]:
    """Poll until every scheduled deployment of prefect.yaml has all its runs of the window
    (the scheduler's own stopping rule: MAX_RUNS, or no slot left before since + WINDOW);
    fail early on a scheduler error in the log."""
    from prefect.client.orchestration import get_client

    zone = ZoneInfo(timezone)
    scheduled = {name: schedules[0] for name, schedules in declared().items() if schedules}

    def complete(name: str, runs: list[Any]) -> bool:
        if len(runs) >= MAX_RUNS:
            return True
        after_last = runs[-1].expected_start_time + timedelta(seconds=1) if runs else since
        return (
            bool(runs)
            and not schedule_slots(scheduled[name], zone, after_last, since + WINDOW).instants
        )

    deadline = time.monotonic() + SCHEDULE_POLL_TIMEOUT
    runs: dict[str, list[Any]] = {}
    with server.settings(), get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = runs_by_deployment(client)
            counts = {name: len(runs.get(name, [])) for name in scheduled}
            assert not scheduler_errors(server), (
                f"scheduler error in the server log (runs so far: {counts}):\n"
                + server.log()[-4000:]
            )
            if all(complete(name, runs.get(name, [])) for name in scheduled):
                return runs
            time.sleep(1)
    counts = {name: len(runs.get(name, [])) for name in declared()}
    pytest.fail(
        f"the scheduler created no (or too few) runs in {SCHEDULE_POLL_TIMEOUT:.0f} s: "
        f"{counts}\nserver log:\n{server.log()[-4000:]}"
    )


def assert_runs_follow_schedules(
    runs: dict[str, list[Any]], since: datetime, observed: datetime, timezone: str
) -> None:
    """Every scheduled deployment's runs fall exactly on its schedule's local slots (none
    missing, none doubled); on-demand deployments have no runs."""
    zone = ZoneInfo(timezone)
    for name, schedules in declared().items():
        mine = runs.get(name, [])
        if not schedules:
            assert mine == [], f"on-demand deployment {name} has runs: {mine[:3]}"
            continue
        assert len(schedules) == 1, f"{name}: the test reads one schedule per deployment"
        starts = [r.expected_start_time.astimezone(UTC) for r in mine]
        assert all(r.auto_scheduled for r in mine), f"{name}: runs not made by the scheduler"
        future = [
            r for r in mine if r.expected_start_time > datetime.now(UTC) + timedelta(minutes=1)
        ]
        assert all(r.state_type.value == "SCHEDULED" for r in future), name
        assert len(starts) == len(set(starts)), f"{name}: a slot was scheduled twice"
        assert min(starts) >= since - timedelta(seconds=1), f"{name}: a run before the deploy"
        slots = schedule_slots(schedules[0], zone, since, max(starts))
        # Every slot from the moment the runs were first seen to the last run has its run.
        required = {s for s in slots.instants if s >= observed}
        missing = sorted(required - set(starts))
        assert not missing, f"{name}: no run at {[m.astimezone(zone) for m in missing[:5]]}"
        # A run off the slots is only allowed on a day whose wall time does not exist (02:00
        # on the spring-forward day): Prefect moves it (to 01:00), it must not double it.
        gap_days = Counter(w.date() for w in slots.missing_walls)
        extra = [s.astimezone(zone) for s in starts if s not in slots.instants]
        for day, count in Counter(t.date() for t in extra).items():
            assert count <= gap_days.get(day, 0), (
                f"{name}: runs off the schedule at {[t for t in extra if t.date() == day]}"
            )
        local = [s.astimezone(zone) for s in starts if s in slots.instants]
        assert all(t.second == 0 and t.microsecond == 0 for t in local)
        promised = PROMISED.get(name)
        if promised is not None:
            wrong = [t.isoformat() for t in local if not promised(t)]
            assert not wrong, f"{name}: runs at the wrong local time: {wrong[:5]}"

    # The window spans a DST change, so the checks above saw both offsets ...
    nightly = [r.expected_start_time.astimezone(zone) for r in runs["backup-nightly"]]
    assert len({t.utcoffset() for t in nightly}) == 2, "the window should span a DST change"
    # ... and the nightly backup runs exactly once on every local day, the change included.
    days = Counter(t.date() for t in nightly)
    first, last = min(days), max(days)
    assert set(days.values()) == {1} and len(days) == (last - first).days + 1
    assert len(runs["health-hourly"]) >= 24
    assert len(runs["drill-monthly"]) >= 3
    assert len(runs["maintenance-weekly"]) >= 20 and len(runs["maintenance-monthly"]) >= 3
    assert len(runs["capacity-report-monthly"]) >= 3
    assert len(runs["capacity-report-quarterly"]) >= 2


def assert_schedules_in_timezone(server: PrefectServer, timezone: str) -> None:
    from prefect.client.orchestration import get_client

    with server.settings(), get_client(sync_client=True) as client:
        deployments = {d.name: d for d in client.read_deployments()}
    for name, schedules in declared().items():
        assert name in deployments, f"{name} was not deployed"
        got = [s.schedule for s in deployments[name].schedules]
        assert len(got) == len(schedules), name
        assert all(s.timezone == timezone for s in got), (name, got)
        assert all(s.active for s in deployments[name].schedules), name


def assert_clean_scheduler_log(server: PrefectServer) -> None:
    assert not scheduler_errors(server), server.log()[-4000:]
    assert "Scheduled" in server.log(), "the scheduler never reported a loop"


def deploy(server: PrefectServer, config: Path) -> None:
    """`runbook deploy --config FILE`, the real CLI in a subprocess, against the server."""
    done = subprocess.run(
        [runbook_command(), "deploy", "--config", str(config)],
        env=server.client_env(),
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


# --- a. runbook deploy ------------------------------------------------------------------------


def test_runbook_deploy_schedules_runs_at_local_times(write_config, start_prefect_server):
    server = start_prefect_server(**LONG_WINDOW)
    config = write_config({"files": [{"name": "f", "paths": ["."]}]}, timezone=TIMEZONE)

    since = datetime.now(UTC)
    deploy(server, config)
    assert_schedules_in_timezone(server, TIMEZONE)

    runs = wait_for_scheduled_runs(server, since, TIMEZONE)
    observed = datetime.now(UTC)
    assert_runs_follow_schedules(runs, since, observed, TIMEZONE)
    assert_clean_scheduler_log(server)


# --- b. python -m deployments.serve ------------------------------------------------------------


def test_serve_schedules_runs_at_local_times(write_config, start_prefect_server):
    from prefect.client.orchestration import get_client

    server = start_prefect_server(**LONG_WINDOW)
    config = write_config({"files": [{"name": "f", "paths": ["."]}]}, timezone=TIMEZONE)

    since = datetime.now(UTC)
    serve = server.spawn(
        "serve", [sys.executable, "-m", "deployments.serve"], ROOT, RUNBOOK_CONFIG=str(config)
    )
    try:
        # serve() registers every deployment before it starts polling
        deadline = time.monotonic() + SCHEDULE_POLL_TIMEOUT
        with server.settings(), get_client(sync_client=True) as client:
            while len(client.read_deployments()) < len(declared()):
                assert serve.alive(), f"serve exited:\n{serve.log()[-3000:]}"
                assert time.monotonic() < deadline, f"serve registered nothing:\n{serve.log()}"
                time.sleep(1)
        assert_schedules_in_timezone(server, TIMEZONE)

        runs = wait_for_scheduled_runs(server, since, TIMEZONE)
        observed = datetime.now(UTC)
        assert_runs_follow_schedules(runs, since, observed, TIMEZONE)
        assert_clean_scheduler_log(server)
        assert serve.alive(), serve.log()[-3000:]
        # Nothing went wrong while serving (what Prefect prints once it is told to stop, a
        # race of its own SIGTERM handler, is not Runbook's).
        assert "Traceback" not in serve.log(), serve.log()[-3000:]
    finally:
        serve.stop()


# --- c. runs from deployments through a process worker -------------------------------------------


@pytest.fixture(scope="module")
def worker(prefect_server: PrefectServer) -> Process:
    return prefect_server.start_worker("runbook-process", cwd=ROOT)


def start_run(server: PrefectServer, name: str, parameters: dict[str, Any] | None = None) -> UUID:
    from prefect.deployments import run_deployment

    with server.settings():
        run = run_deployment(name, parameters=parameters or {}, timeout=0, as_subflow=False)
    return run.id


def wait_for_end(server: PrefectServer, worker: Process, run_ids: list[UUID]) -> dict[UUID, Any]:
    """The final state of each run (a worker must pick them up and their processes end)."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + RUN_TIMEOUT
    with server.settings(), get_client(sync_client=True) as client:
        while True:
            runs = {run_id: client.read_flow_run(run_id) for run_id in run_ids}
            if all(r.state is not None and r.state.is_final() for r in runs.values()):
                return {run_id: r.state for run_id, r in runs.items()}
            assert worker.alive(), f"the worker exited:\n{worker.log()[-3000:]}"
            if time.monotonic() > deadline:
                states = {str(i): (r.state_name if r.state else None) for i, r in runs.items()}
                pytest.fail(
                    f"runs not finished after {RUN_TIMEOUT:.0f} s: {states}\n"
                    f"worker:\n{worker.log()[-4000:]}"
                )
            time.sleep(1)


def flow_run_logs(server: PrefectServer, run_id: UUID, timeout: float = 30) -> str:
    """The run's logs once they have all arrived (the run process ships them in batches,
    the last ones after the run's final state: wait for the flow run's "Finished in state"
    line)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + timeout
    lines: list[str] = []
    with server.settings(), get_client(sync_client=True) as client:
        while True:
            page = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
                limit=200,
                offset=len(lines),
            )
            lines.extend(f"{log.level} {log.name}: {log.message}" for log in page)
            if len(page) == 200:
                continue
            text = "\n".join(lines)
            # the flow run's own last line: a task run's "Finished in state" comes earlier
            if "prefect.flow_runs: Finished in state" in text or time.monotonic() > deadline:
                return text
            time.sleep(0.5)


def test_worker_runs_backup_then_health_to_completion(
    prefect_server, worker, write_config, tmp_path
):
    from runbook.catalog import BackupStatus, Catalog
    from runbook.config import load_config

    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "app.conf").write_text("listen 8080\n")
    config = write_config(
        {
            "files": [{"name": "etc", "paths": [str(tmp_path / "etc")]}],
            "host": [
                {  # the worker path is under test here, not this machine's load
                    "name": "box",
                    "mounts": ["/"],
                    "disk": {"warn": 99, "critical": 100},
                    "load_per_core": {"warn": 100, "critical": 200},
                    "memory": {"warn": 99, "critical": 100},
                }
            ],
        },
        timezone=TIMEZONE,
    )
    deploy(prefect_server, config)

    backup_run = start_run(prefect_server, "backup/backup-on-demand")
    backup_state = wait_for_end(prefect_server, worker, [backup_run])[backup_run]
    assert backup_state.is_completed(), (backup_state, flow_run_logs(prefect_server, backup_run))
    catalog = Catalog(load_config(config).catalog)
    try:
        assert catalog.latest_backup("etc", frozenset({BackupStatus.VERIFIED})) is not None
    finally:
        catalog.close()

    health_run = start_run(prefect_server, "health/health-on-demand")
    health_state = wait_for_end(prefect_server, worker, [health_run])[health_run]
    logs = flow_run_logs(prefect_server, health_run)
    assert health_state.is_completed(), (health_state, logs)
    assert "Traceback" not in logs and "TypeError" not in logs
    # the run says its verdict in one line of its log
    assert re.search(r"health (ok|warn)( \(P\d\))?: \d+ checks, 0 critical", logs), logs


@dataclass
class FailingRuns:
    """A backup of an unreachable database and a drill of a backup id that does not exist,
    run through the worker from deployments of one config."""

    config: Path
    states: dict[str, Any]
    logs: dict[str, str]


@pytest.fixture(scope="module")
def failing_runs(
    prefect_server: PrefectServer, worker: Process, tmp_path_factory: pytest.TempPathFactory
) -> FailingRuns:
    folder = tmp_path_factory.mktemp("failing-runs")
    config = folder / "runbook.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "timezone": TIMEZONE,
                "catalog": "sqlite:///catalog.db",
                "storage": {"kind": "local", "path": "backups"},
                "backup": {"retries": 0},  # fail fast
                "targets": {
                    "postgres": [
                        {"name": "pg-down", "dsn": "postgresql://postgres@127.0.0.1:1/nope"}
                    ]
                },
            }
        )
    )
    deploy(prefect_server, config)
    runs = {
        "backup": start_run(prefect_server, "backup/backup-on-demand"),
        "drill": start_run(
            prefect_server,
            "dr-drill/drill-on-demand",
            {"targets": ["pg-down"], "backup": "no-such-backup-id"},
        ),
    }
    states = wait_for_end(prefect_server, worker, list(runs.values()))
    return FailingRuns(
        config,
        {name: states[run_id] for name, run_id in runs.items()},
        {name: flow_run_logs(prefect_server, run_id) for name, run_id in runs.items()},
    )


def test_worker_fails_a_backup_with_the_target_in_its_message(failing_runs, worker):
    state, logs = failing_runs.states["backup"], failing_runs.logs["backup"]
    assert state.is_failed(), (state, logs)
    assert "pg-down" in (state.message or ""), state.message
    # a Failed run, not a crash while Prefect resolves the failed state's result: Prefect's
    # closing log line carries the run's own verdict
    assert "RunFailed: 1 backup(s) not verified: pg-down: failed" in logs, logs[-4000:]
    for text in (logs, worker.log()):
        assert "TypeError" not in text, text[-4000:]
        assert "Unexpected result for failed state" not in text, text[-4000:]


def test_worker_refuses_a_drill_of_an_unknown_backup_without_recording_it(failing_runs):
    from runbook.catalog import Catalog, DrillLog
    from runbook.config import load_config

    state, logs = failing_runs.states["drill"], failing_runs.logs["drill"]
    assert state.is_failed(), (state, logs)
    assert "no-such-backup-id" in (state.message or ""), state.message
    # an operator's typo is not a failed drill: nothing is recorded
    catalog = Catalog(load_config(failing_runs.config).catalog)
    try:
        assert DrillLog(catalog).list() == []
    finally:
        catalog.close()
