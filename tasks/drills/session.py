"""One drill in progress, and the context manager that keeps its record honest.

`recorded_drill` (after Barman's `_coordinate_backup`): records the drill as running, records
where its scratch will live *before* the work folder, server or database exist, notes each
step as the drill enters it (so a drill whose process is killed still says where it died),
and in `finally` cleans up and saves the verdict: passed, failed in a step, or refused.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runbook.catalog import (
    Catalog,
    DrillCheck,
    DrillLog,
    DrillRecord,
    DrillResults,
    DrillStep,
    utcnow,
)
from runbook.config import (
    Config,
    FilesTarget,
    KubernetesObjectsTarget,
    PostgresTarget,
    PrometheusTsdbTarget,
    RedisTarget,
)
from runbook.errors import RunbookError
from runbook.secrets import redact, target_secrets
from runbook.storage import Storage
from runbook.systems.pg_servers import EmbeddedServer, TeamServer
from tasks.drills.scratch import ScratchPlace, scratch_name

log = logging.getLogger("runbook.drill")

INTERRUPTED = "interrupted before it finished (cancelled or crashed)"

# How a step runs: (step, step function, drill, *args) -> the step function's value. Plainly
# (`call_step`) or as a Prefect task run (tasks/drills/tasks.py).
StepRunner = Callable[..., Any]


def call_step(step: DrillStep, function: Callable[..., Any], drill: Drill, *args: Any) -> Any:
    return function(drill, *args)


class StepFailed(Exception):  # noqa: N818 - a step's verdict, not an error to report
    """A step failed with its reason already among the drill's checks (a corrupt backup):
    the drill stops there."""


@dataclass(frozen=True)
class DrillRun:
    """What one drill of one target is asked to do, and with what."""

    config: Config
    catalog: Catalog
    storage: Storage
    target: (
        PostgresTarget | RedisTarget | FilesTarget | PrometheusTsdbTarget | KubernetesObjectsTarget
    )
    backup: str = "latest"  # the newest verified backup, or a backup id
    keep_on_failure: bool = False  # keep a failed drill's scratch for forensics
    jobs: int | None = None  # pg_restore jobs; None: the target's drill.jobs
    flow_run_id: str | None = None
    on_step: Callable[[str], None] | None = None  # progress lines; default: the runbook log


class Drill:
    """One drill in progress: who it is, where its scratch lives, what its steps found.

    A plain class on purpose: Prefect hands it to each step's task run as it is (it copies
    dataclasses and pydantic models it looks into)."""

    def __init__(self, run: DrillRun, run_step: StepRunner):
        self.run = run
        self.target = run.target
        self.log = DrillLog(run.catalog)
        self.started_at = utcnow()
        self.id = f"{self.started_at.strftime('%Y%m%dT%H%M%SZ')}-{os.urandom(3).hex()}"
        self.workdir = Path(tempfile.gettempdir()) / f"runbook-drill-{self.target.name}-{self.id}"
        self.scratch_db = scratch_name(self.target.name, self.started_at)
        self.server: EmbeddedServer | TeamServer | None = None  # started by the restore step
        self.scratch_created = False  # set by the restore step before it creates anything
        self.results = DrillResults()
        self.current: DrillStep | None = None
        self.record: DrillRecord | None = None  # the saved verdict
        self._run_step = run_step

    @property
    def scratch(self) -> ScratchPlace:
        if isinstance(self.target, RedisTarget):
            return ScratchPlace("redis-server", "", self.workdir)
        if isinstance(self.target, FilesTarget | PrometheusTsdbTarget | KubernetesObjectsTarget):
            return ScratchPlace("files", "", self.workdir)  # the tree, inside the work folder
        if self.target.drill.dsn is not None:
            where = TeamServer(self.target.drill.dsn.get_secret_value()).describe()
        else:
            where = f"embedded:{self.workdir / 'pg'}"  # EmbeddedServer(workdir).describe()
        return ScratchPlace(where, self.scratch_db, self.workdir)

    def step(self, step: DrillStep, function: Callable[..., Any], *args: Any) -> Any:
        """Enter `step` (saved first, with what the steps so far found) and run it."""
        self.log.enter_step(self.id, step, self.results)
        self.current = step
        return self._run_step(step, function, self, *args)

    def say(self, message: str) -> None:
        (self.run.on_step or log.info)(message)

    def seconds_since(self, started: float, timing: str) -> float:
        """Record the step's duration under `timing` (download, restore, ...) and return it."""
        self.results.timings[timing] = round(time.monotonic() - started, 3)
        return self.results.timings[timing]


@dataclass
class _Outcome:
    """How the steps ended: ran to the end (`failed_in` None, no error), a step failed,
    or an operator's mistake was found (refused)."""

    failed_in: DrillStep | None = None
    error: str | None = None
    refused: bool = False
    interrupted: bool = False


@contextmanager
def recorded_drill(
    run: DrillRun, run_step: StepRunner, cleanup: Callable[[Drill], None]
) -> Iterator[Drill]:
    """The drill's record from start to verdict around the steps of the block."""
    drill = Drill(run, run_step)
    drill.log.start(
        drill.id,
        drill.target.name,
        drill.started_at,
        socket.gethostname(),
        os.getpid(),
        run.flow_run_id,
    )
    drill.log.record_scratch(drill.id, str(drill.scratch))  # before any of it exists
    drill.workdir.mkdir(mode=0o755)
    drill.workdir.chmod(0o755)  # an embedded server may run as its own system user
    # Until the block finishes: a cancelled or killed run is still cleaned up and recorded.
    outcome = _Outcome(error=INTERRUPTED, interrupted=True)
    try:
        yield drill
        outcome = _Outcome()
    except StepFailed:
        outcome = _Outcome(failed_in=drill.current)
    except RunbookError as exc:  # a mistake found late (the drill server is the source)
        outcome = _Outcome(error=str(exc), refused=True)
        raise
    except Exception as exc:  # noqa: BLE001 - a failed drill is a result, not a crash
        error = redact(f"{type(exc).__name__}: {exc}", target_secrets(drill.target))[:2000]
        outcome = _Outcome(failed_in=drill.current, error=error)
    finally:
        if outcome.interrupted:
            outcome.failed_in = drill.current
        drill.record = _conclude(drill, outcome, cleanup)
    record = drill.record
    if record.kept:
        drill.say(f"kept for forensics: {record.scratch}")
    passed = sum(1 for c in record.checks if c.ok)
    drill.say(f"drill {record.status}: {passed} of {len(record.checks)} checks passed")


def _conclude(drill: Drill, outcome: _Outcome, cleanup: Callable[[Drill], None]) -> DrillRecord:
    """Clean up (unless a failed drill is kept for forensics) and save the verdict."""
    results = drill.results
    if outcome.error and not outcome.interrupted:
        results.checks.append(DrillCheck(name="drill", ok=False, detail=outcome.error))
    failed = outcome.failed_in is not None or outcome.error is not None or not results.ok
    if drill.run.keep_on_failure and failed and not outcome.refused and drill.scratch_created:
        results.timings["cleanup"] = 0.0
        _save_verdict(drill, outcome)
        return drill.log.keep_for_forensics(drill.id)
    try:
        if outcome.interrupted:  # no new task runs while the run is being torn down
            drill.log.enter_step(drill.id, DrillStep.CLEANUP, results)
            cleanup(drill)
        else:
            drill.step(DrillStep.CLEANUP, cleanup)
        drill.log.mark_cleaned(drill.id)
    except Exception as exc:  # noqa: BLE001 - the verdict is saved whatever happens here
        error = redact(f"cleanup: {type(exc).__name__}: {exc}", target_secrets(drill.target))
        if outcome.error is None:
            results.checks.append(DrillCheck(name="drill", ok=False, detail=error))
        outcome.error = f"{outcome.error}; {error}" if outcome.error else error
        outcome.failed_in = outcome.failed_in or results.failed_step or DrillStep.CLEANUP
    return _save_verdict(drill, outcome)


def _save_verdict(drill: Drill, outcome: _Outcome) -> DrillRecord:
    results = drill.results
    if outcome.refused:
        return drill.log.refuse(drill.id, outcome.error or "refused", results)
    if outcome.failed_in is None and outcome.error is None:
        return drill.log.finish(drill.id, results)  # passed, or failed by a check
    # The first step that failed: one whose checks failed, else the one that raised (a drill
    # stopped before it entered any step failed at the first).
    step = results.failed_step or outcome.failed_in or DrillStep.SWEEP
    return drill.log.mark_failed(drill.id, step, outcome.error, results)


__all__ = ["Drill", "DrillRun", "StepFailed", "StepRunner", "call_step", "recorded_drill"]
