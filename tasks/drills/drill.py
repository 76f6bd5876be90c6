"""DR restore drills: prove a backup restores, and measure RTO and RPO.

`run_drill` is the whole drill of one target as a plain function; the flow (flows/dr_drill.py)
runs the same function with each step as a Prefect task run (tasks/drills/tasks.py). Steps
(tasks/drills/steps.py), recorded in the catalog as the drill enters each one:

1. sweep: clean up after drills of the target that died (scratch databases, embedded servers,
   work folders).
2. pick: choose the backup (`latest` = newest verified) and read it back from storage,
   verifying it and downloading the archive in the same pass. A corrupt `latest` is marked
   corrupt and the drill falls back to the next verified backup; a corrupt explicit id fails
   the drill.
3. restore: into a scratch database `runbook_drill_<target>_<utc time>` on the drill server (a
   throwaway embedded PostgreSQL by default, or the team's server), never the source
   database; Redis: load the RDB into a throwaway redis-server; files, Prometheus TSDB and
   Kubernetes objects: extract the tar into the drill's work folder.
4. validate: Great Expectations + SQL checks + pg_amcheck (tasks/drills/validate.py); Redis:
   key counts per database against the manifest; files: every file against the sha256 the
   backup recorded (tasks/drills/files.py); Kubernetes objects: every manifest parsed and
   dry-run applied into the cluster when it answers; Prometheus: the real prometheus started
   on the restored data dir and asked for its series (tasks/drills/served.py).
5. objectives: RTO = download + restore + validation; RPO = drill start - backup end; each
   against the target's goal.
6. cleanup, in `finally` (unless keep_on_failure and the drill failed), then the verdict:
   passed, failed (with the step it failed in) or refused (tasks/drills/session.py).
"""

from __future__ import annotations

from runbook.catalog import Catalog, DrillRecord, DrillStep
from runbook.config import PostgresTarget, TargetConfig
from runbook.errors import NotFoundError
from runbook.locks import drill_lock, named_lock
from tasks.drills import steps
from tasks.drills.scratch import DrillRefused, refuse_source
from tasks.drills.session import DrillRun, StepRunner, call_step, recorded_drill


def run_drill(run: DrillRun, run_step: StepRunner = call_step) -> DrillRecord:
    """One DR drill of one target, recorded in the catalog (see the module docstring).

    Raises for an operator's mistake (NotFoundError, DrillRefused): before anything is
    recorded when the request shows it, as a `refused` drill when only the drill server does.
    A drill that fails is a result: the returned record says why and in which step."""
    check_drill_request(run.catalog, run.target, run.backup)  # an operator's mistake: no drill
    lock_timeout = run.config.backup.lock_timeout.total_seconds()
    with (
        named_lock(run.config.catalog, drill_lock(run.target.name), lock_timeout),
        recorded_drill(run, run_step, cleanup=steps.cleanup) as drill,
    ):
        drill.step(DrillStep.SWEEP, steps.sweep)
        picked = drill.step(DrillStep.PICK, steps.pick)
        restored = drill.step(DrillStep.RESTORE, steps.restore, picked)
        drill.step(DrillStep.VALIDATE, steps.validate, restored)
        drill.step(DrillStep.OBJECTIVES, steps.objectives, picked)
    return drill.record  # the verdict recorded_drill saved


def check_drill_request(catalog: Catalog, target: TargetConfig, backup: str) -> None:
    """Refuse what the operator got wrong before anything is recorded: a backup id that does
    not exist, belongs to another target or was never committed; a drill server that is the
    source database. Raises NotFoundError or DrillRefused (exit 2, no drill row)."""
    if backup != "latest":
        record = catalog.get_backup(backup)
        if record.target != target.name:
            raise NotFoundError(
                f"backup {backup} belongs to target {record.target!r}, not {target.name!r}"
            )
        if not record.committed:
            raise NotFoundError(
                f"backup {backup} is {record.status.value}: only stored or "
                "verified backups can be drilled"
            )
    if isinstance(target, PostgresTarget) and target.drill.dsn is not None:
        refuse_source(target, target.drill.dsn.get_secret_value())


__all__ = ["DrillRefused", "DrillRun", "check_drill_request", "run_drill"]
