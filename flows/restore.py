"""The restore flow: a backup restored for real, into a database or a folder the operator names.

1. Refuse an operator's mistake before anything is recorded or touched: no target or no
   `into` (a Quick run from the UI does nothing), an unknown target or backup id, the
   backup's source database without `overwrite: replace-source`, a non-empty destination
   without `clean`, anything that needs confirmation without `confirm`.
2. Restore (tasks/restore/run.py), one task run per step: pick (verify while downloading,
   falling back past a corrupt latest), pre-hooks, restore, validate (the drill's checks
   against the manifest), post-hooks (always once the pre-hooks started).
3. Publish a markdown artifact (`restore-report`) and return a RestoreSummary; the run ends
   Failed unless the destination was restored and validated.
With `dry_run` only step 1 runs (for Kubernetes objects into a cluster: with the API server's
dry run per object) and the plan is published, status `planned`: nothing changed or recorded.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import Failed
from pydantic import BaseModel

from runbook.catalog import RestoreRecord
from runbook.config import RedisTarget
from runbook.errors import RunbookError, RunFailed
from runbook.runtime import Runtime, open_runtime
from tasks.restore.destination import dsn_with_password
from tasks.restore.plan import Overwrite, RestoreRequest
from tasks.restore.report import restore_markdown
from tasks.restore.run import RestoreRun, planned_record, preflight, run_restore
from tasks.restore.tasks import as_task_run, log_to_prefect


def _has_server(runtime: Runtime, target: str) -> bool:
    """A Redis target with a configured restore server needs no `into`."""
    found = runtime.config.target(target)
    return isinstance(found, RedisTarget) and found.restore.server is not None


class RestoreSummary(BaseModel):
    ok: bool
    restore: RestoreRecord


@flow(name="restore", persist_result=True)
def restore(  # noqa: PLR0913 - the parameters are the UI form
    target: str = "",
    into: str = "",
    backup: str = "latest",
    schema_name: str = "",
    overwrite: Overwrite = "no",
    confirm: bool = False,
    jobs: int = 2,
    namespaces: list[str] | None = None,
    kinds: list[str] | None = None,
    force_conflicts: bool = False,
    dry_run: bool = False,
) -> RestoreSummary:
    """Restore a backup into a database or a folder, validate it against its manifest and
    measure the RTO. Does nothing without a target and a destination.

    Args:
        target: The target whose backup to restore (runbook.yaml): PostgreSQL, files, Redis,
            Prometheus TSDB or Kubernetes objects.
        into: Where to: a PostgreSQL DSN (a new database is created; an existing one must be
            empty) without a password (set RUNBOOK_RESTORE_PASSWORD on the worker, or use
            ~/.pgpass), a folder for a files, Prometheus or Kubernetes objects target (the
            files, a TSDB data dir, YAML to apply), or for a Redis target a folder (the RDB
            and the steps to load it) or redis://host:port of an empty server to load it into
            (password likewise in RUNBOOK_RESTORE_PASSWORD), or k8s://CLUSTER to apply a
            Kubernetes objects backup into that targets.kubernetes entry (server-side apply).
            Required, except for a Redis target with restore.server configured.
        backup: "latest" (the newest verified backup, falling back past a corrupt one) or a
            backup id from `runbook backups list`.
        schema_name: Restore only this schema (its per-schema archive when the backup has one).
        overwrite: "no"; "clean" to drop and recreate what the backup holds in a non-empty
            destination (Redis: FLUSHALL first); "replace-source" to restore into the
            backup's own source database (or Redis server);
            "in-place" to write a files backup over its original paths. Each needs confirm.
        confirm: Yes, overwrite as asked (the CLI's --yes).
        jobs: Parallel pg_restore jobs.
        namespaces: k8s:// only: "SOURCE=DEST" to apply SOURCE's objects into DEST; "DEST"
            alone for a backup of one namespace.
        kinds: k8s:// only: apply only objects of these kinds (e.g. ConfigMap).
        force_conflicts: k8s:// only: take over fields another field manager owns.
        dry_run: Publish the plan (k8s://: per object created / changed / unchanged, from the
            API server's dry run) and change nothing.
    """
    runtime = open_runtime() if target else None
    if runtime is None or not into and overwrite != "in-place" and not _has_server(runtime, target):
        raise RunbookError(
            "restore needs a target and `into` (a DSN or a folder): nothing was done"
        )
    request = RestoreRequest(
        target=target,
        into=dsn_with_password(into) if into else "",
        backup=backup,
        schema=schema_name or None,
        overwrite=overwrite,
        confirmed=confirm,
        jobs=jobs,
        namespaces=tuple(namespaces or ()),
        kinds=tuple(kinds or ()),
        force_conflicts=force_conflicts,
    )
    run = RestoreRun(
        runtime.config,
        runtime.catalog,
        runtime.storage,
        request,
        flow_run_id=str(flow_run.id) if flow_run.id else None,
        on_step=log_to_prefect,
    )
    if dry_run:
        checked = preflight(run)
        record = planned_record(run, checked)
        create_markdown_artifact(
            markdown=restore_markdown(record), key="restore-report", description="Restore plan"
        )
        return RestoreSummary(ok=True, restore=record)
    record = run_restore(run, as_task_run)
    summary = RestoreSummary(ok=record.restored, restore=record)
    create_markdown_artifact(
        markdown=restore_markdown(record), key="restore-report", description="Restore"
    )
    if not summary.ok:
        message = f"restore of {target} into {record.into} {record.status}: {record.error}"
        return Failed(message=message, data=RunFailed(message, summary))
    return summary
