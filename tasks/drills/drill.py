"""DR restore drills: prove a backup restores, and measure RTO and RPO.

`run_drill` is the whole drill of one target as a plain function; `drill_target`
(tasks/drills/tasks.py) is its Prefect task. Steps:

1. Sweep leftovers of drills that died (scratch databases, embedded servers, work folders).
2. Pick the backup (`latest` = newest verified) and read it back from storage, verifying it
   and downloading the archive in the same pass. A corrupt `latest` is marked corrupt and the
   drill falls back to the next verified backup; a corrupt explicit id fails the drill.
3. Restore into a scratch database `runbook_drill_<target>_<utc time>` on the drill server: a
   throwaway embedded PostgreSQL (default) or the team's server; never the source database.
4. Validate (Great Expectations + SQL checks + pg_amcheck, tasks/drills/validate.py); for Redis,
   load the RDB into a throwaway redis-server and compare key counts per database.
5. RTO = download + restore + validation; RPO = drill start - backup end; compare with targets.
6. Clean up in `finally` (unless keep_on_failure and the drill failed), record, report.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from runbook.catalog import (
    Catalog,
    DrillCheckRecord,
    DrillLog,
    DrillRecord,
    utcnow,
)
from runbook.config import Config, PostgresTarget, RedisTarget, TargetConfig
from runbook.errors import NotFoundError, RunbookError
from runbook.formatting import human_duration
from runbook.locks import named_lock
from runbook.manifest import Manifest
from runbook.secrets import describe_dsn, redact, target_secrets
from runbook.storage import Storage
from runbook.systems.pg_servers import EmbeddedServer, TeamServer
from runbook.systems.pg_tools import restore_archive
from runbook.systems.postgres import create_database, server_identity
from tasks.drills.leftovers import sweep_leftovers
from tasks.drills.pick import pick_and_download
from tasks.drills.redis import check_redis_restore
from tasks.drills.scratch import drop_database, scratch_name
from tasks.drills.validate import validate_restore

log = logging.getLogger("runbook.drill")


class DrillRefused(RunbookError):
    """The drill plan is unsafe (it would restore into the source database)."""


def refuse_source(target: PostgresTarget, manifest: Manifest, drill_dsn: str, scratch: str) -> int:
    """Refuse a plan that would restore into (or run from) the source database; returns the
    drill server's major version."""
    system_id, database, major = server_identity(drill_dsn)
    source = manifest.source
    same_cluster = (
        system_id is not None and system_id == source.get("system_identifier")
    ) or describe_dsn(drill_dsn) == describe_dsn(target.dsn.get_secret_value())
    if same_cluster and database == source.get("database"):
        raise DrillRefused(
            f"targets.postgres[{target.name}].drill.dsn points at the source database "
            f"{database!r} on the source server: a drill never restores into (or from) the "
            "source; point drill.dsn at another database of that server or use "
            "{server: embedded}"
        )
    if same_cluster and scratch == source.get("database"):
        raise DrillRefused(f"scratch database {scratch!r} would be the source database")
    return major


def check_drill_request(catalog: Catalog, target: TargetConfig, backup: str) -> None:
    """Refuse what the operator got wrong before anything is recorded: a backup id that does
    not exist, belongs to another target or was never committed; a drill server that is the
    source database. Raises NotFoundError or DrillRefused (exit 2, no drill row)."""
    if not isinstance(target, PostgresTarget | RedisTarget):
        raise RunbookError(
            f"target {target.name!r} is a files target: drills restore PostgreSQL and Redis backups"
        )
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
    if (
        isinstance(target, PostgresTarget)
        and target.drill.dsn is not None
        and describe_dsn(target.drill.dsn.get_secret_value())
        == describe_dsn(target.dsn.get_secret_value())
    ):
        raise DrillRefused(
            f"target {target.name}: drill.dsn is the source database itself; a drill never "
            "restores into the source: point drill.dsn at another database or server, or use "
            "{server: embedded}"
        )


def run_drill(
    config: Config,
    catalog: Catalog,
    storage: Storage,
    target: TargetConfig,
    backup: str = "latest",
    *,
    keep_on_failure: bool = False,
    jobs: int | None = None,
    flow_run_id: str | None = None,
    on_step: Callable[[str], None] | None = None,
) -> DrillRecord:
    """One DR drill of one target, recorded in the catalog (see the module docstring)."""
    check_drill_request(catalog, target, backup)  # an operator's mistake is never a drill
    drills = DrillLog(catalog)
    started_at = utcnow()
    drill_id = f"{started_at.strftime('%Y%m%dT%H%M%SZ')}-{os.urandom(3).hex()}"
    step = on_step or (lambda message: log.info(message))
    with named_lock(
        config.catalog, f"drill-{target.name}", config.backup.lock_timeout.total_seconds()
    ):
        swept = sweep_leftovers(drills, target)
        drills.start(
            drill_id, target.name, started_at, socket.gethostname(), os.getpid(), flow_run_id
        )
        for item in swept:
            step(f"dropped the leftover {item} of a drill that died")
        return _drill(
            config,
            catalog,
            storage,
            target,
            backup,
            drills,
            drill_id,
            started_at,
            keep_on_failure,
            jobs,
            swept,
            step,
        )


def _drill(
    config: Config,
    catalog: Catalog,
    storage: Storage,
    target: TargetConfig,
    backup: str,
    drills: DrillLog,
    drill_id: str,
    started_at: datetime,
    keep_on_failure: bool,
    jobs: int | None,
    swept: list[str],
    step: Callable[[str], None],
) -> DrillRecord:
    workdir = Path(tempfile.mkdtemp(prefix=f"runbook-drill-{target.name}-"))
    workdir.chmod(0o755)  # an embedded server may run as its own system user
    timings: dict[str, float] = {}
    checks: list[DrillCheckRecord] = [
        DrillCheckRecord(name="leftovers", ok=True, detail=f"dropped {item}") for item in swept
    ]
    fields: dict[str, Any] = {}
    server: EmbeddedServer | TeamServer | None = None
    scratch_db = scratch_name(target.name, started_at)
    error: str | None = None
    outcome = "interrupted"  # until the steps finish: cancelled or killed runs still clean up
    try:
        # 2. pick, verify and download
        picked = pick_and_download(catalog, storage, target, backup, workdir)
        timings["download"] = round(picked.seconds, 3)
        fields.update(backup_id=picked.record.id, fell_back_from=picked.fell_back_from)
        integrity = picked.report
        detail = (
            "read back from storage and matched the manifest"
            if integrity.ok
            else "; ".join(f"{c.key}: {c.problem}: {c.detail}" for c in integrity.problems)
        )
        if picked.fell_back_from:
            detail += f" (fell back from corrupt backup {picked.fell_back_from})"
        checks.append(DrillCheckRecord(name="backup integrity", ok=integrity.ok, detail=detail))
        step(f"backup {picked.record.id}: {detail}")
        if not integrity.ok:
            raise _DrillFailed("the backup is corrupt")
        manifest = picked.manifest

        # 3-4. restore and validate
        if isinstance(target, PostgresTarget):
            if target.drill.dsn is not None:
                server = TeamServer(target.drill.dsn.get_secret_value())
            else:
                server = EmbeddedServer(workdir)
            checks += _restore_postgres(
                target,
                server,
                manifest,
                picked.files["database"],
                scratch_db,
                workdir,
                jobs,
                timings,
                drills,
                drill_id,
                step,
                config,
            )
        else:
            restore_started = time.monotonic()
            redis_checks = check_redis_restore(picked.files["dump"], manifest, workdir)
            timings["restore"] = round(time.monotonic() - restore_started, 3)
            timings["validation"] = 0.0
            checks += redis_checks
            step(
                f"loaded the RDB into a scratch redis-server: "
                f"{sum(c.ok for c in redis_checks)}/{len(redis_checks)} key counts match"
            )

        # 5. RTO and RPO
        rto = timings["download"] + timings["restore"] + timings["validation"]
        rpo = (started_at - (picked.record.finished_at or picked.record.started_at)).total_seconds()
        fields.update(
            rto_seconds=round(rto, 3),
            rpo_seconds=round(rpo, 3),
            rto_target_seconds=target.rto.total_seconds() if target.rto else None,
            rpo_target_seconds=target.rpo.total_seconds() if target.rpo else None,
        )
        checks.append(
            _objective(
                "rto",
                rto,
                target.rto,
                f"download {timings['download']:.1f}s + restore "
                f"{timings['restore']:.1f}s + validation "
                f"{timings['validation']:.1f}s",
            )
        )
        checks.append(
            _objective(
                "rpo",
                rpo,
                target.rpo,
                f"backup finished {human_duration(timedelta(seconds=rpo))} "
                "before the drill started",
            )
        )
        outcome = "done"
    except _DrillFailed:
        outcome = "done"
    except RunbookError as exc:  # a mistake found late (drill server is the source): refused
        error, outcome = str(exc), "refused"
        raise
    except Exception as exc:  # noqa: BLE001 - a failed drill is a result, not a crash
        error, outcome = (
            redact(f"{type(exc).__name__}: {exc}", target_secrets(target))[:2000],
            "done",
        )
    finally:
        if error:
            checks.append(DrillCheckRecord(name="drill", ok=False, detail=error))
        if outcome == "interrupted":
            error = "interrupted before it finished (cancelled or crashed)"
        passed = outcome == "done" and error is None and all(c.ok for c in checks)
        keep = keep_on_failure and not passed and outcome != "refused"
        cleanup_started = time.monotonic()
        try:
            kept_where = _cleanup(server, scratch_db, workdir, keep=keep)
        finally:
            timings["cleanup"] = round(time.monotonic() - cleanup_started, 3)
            record = drills.update(
                drill_id,
                status="passed" if passed else "refused" if outcome == "refused" else "failed",
                finished_at=utcnow(),
                error=error,
                checks=[c.model_dump() for c in checks],
                timings=timings,
                kept=keep,
                scratch=kept_where if keep else None,
                **fields,
            )
    if keep:
        step(f"kept for forensics: {kept_where}")
    passed_checks = sum(1 for c in record.checks if c.ok)
    step(f"drill {record.status}: {passed_checks} of {len(record.checks)} checks passed")
    return record


class _DrillFailed(Exception):
    """The drill failed with its reason already among the checks."""


def _objective(name: str, measured: float, goal: timedelta | None, detail: str) -> DrillCheckRecord:
    figure = f"{name.upper()} {measured:.1f}s"
    if goal is None:
        return DrillCheckRecord(name=name, ok=True, detail=f"{figure} ({detail}); no target set")
    ok = measured <= goal.total_seconds()
    verdict = "within" if ok else "MISSED"
    target = (
        human_duration(goal) if goal >= timedelta(seconds=1) else f"{goal.total_seconds():g}s"
    )  # as configured: 1h, 15m
    return DrillCheckRecord(
        name=name, ok=ok, detail=f"{figure} {verdict} target {target} ({detail})"
    )


def _restore_postgres(
    target: PostgresTarget,
    server: EmbeddedServer | TeamServer,
    manifest: Manifest,
    archive: Path,
    scratch_db: str,
    workdir: Path,
    jobs: int | None,
    timings: dict[str, float],
    drills: DrillLog,
    drill_id: str,
    step: Callable[[str], None],
    config: Config,
) -> list[DrillCheckRecord]:
    from runbook.systems.pg_tools import pick_binary

    restore_started = time.monotonic()
    major = refuse_source(target, manifest, server.admin_dsn, scratch_db)
    drills.update(drill_id, scratch=f"{server.describe()}|{scratch_db}|{workdir}")
    create_database(server.admin_dsn, scratch_db)
    used = restore_archive(
        archive,
        server.dsn(scratch_db),
        major,
        _archive_major(manifest),
        jobs or target.drill.jobs,
        config.backup.timeout.total_seconds(),
    )
    timings["restore"] = round(time.monotonic() - restore_started, 3)
    archive.unlink(missing_ok=True)  # free the disk before validation
    step(
        f"restored into {scratch_db} on {server.describe()} with {used} in "
        f"{timings['restore']:.1f}s"
    )
    checks = [
        DrillCheckRecord(
            name="restore",
            ok=True,
            detail=f"pg_restore --exit-on-error into {scratch_db} with {used}",
        )
    ]

    validation_started = time.monotonic()
    amcheck = pick_binary("pg_amcheck", major)
    data_docs = config.drills.data_docs / drill_id if config.drills.data_docs else None
    result = validate_restore(
        server.dsn(scratch_db), manifest.source, amcheck=amcheck.path, data_docs_dir=data_docs
    )
    timings["validation"] = round(time.monotonic() - validation_started, 3)
    drills.update(drill_id, gx_result=result.gx_result, data_docs=result.data_docs)
    checks += [DrillCheckRecord(name=c.name, ok=c.ok, detail=c.detail) for c in result.checks]
    failed = [c.name for c in result.checks if not c.ok]
    step(
        f"validation: {len(result.checks) - len(failed)} of {len(result.checks)} validation "
        "checks passed"
        + (f"; failed: {', '.join(failed[:5])}" if failed else "")
        + (f"; Data Docs: {result.data_docs}" if result.data_docs else "")
    )
    return checks


def _archive_major(manifest: Manifest) -> int:
    match = re.search(r"pg_dump (\d+)", manifest.tools.get("pg_dump", ""))
    return int(match.group(1)) if match else int(manifest.source.get("server_major", 0))


def _cleanup(
    server: EmbeddedServer | TeamServer | None, scratch_db: str, workdir: Path, keep: bool
) -> str | None:
    """Drop the scratch database / embedded server and the work folder; or keep them and say
    where they are."""
    if server is None:
        shutil.rmtree(workdir, ignore_errors=True)
        return None
    if keep:
        return f"{server.describe()}|{scratch_db}|{workdir}"
    try:
        if isinstance(server, TeamServer):
            drop_database(server.admin_dsn, scratch_db)  # IF EXISTS: fine if never created
        server.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return None
