"""The steps of a drill, one function each: `step(drill, *what earlier steps returned)`.

Each records what it found in `drill.results` (checks, timings, facts) and says one line
about it; `run_drill` (tasks/drills/drill.py) calls them in order through `Drill.step`, which
runs them plainly or as Prefect task runs.
"""

from __future__ import annotations

import shutil
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from runbook.catalog import DrillCheck, DrillStep, RestoreCheck
from runbook.config import (
    FilesTarget,
    KubernetesObjectsTarget,
    PostgresTarget,
    PrometheusTsdbTarget,
)
from runbook.formatting import human_duration
from runbook.systems.pg_servers import EmbeddedServer, TeamServer
from runbook.systems.pg_tools import pick_binary, restore_archive
from runbook.systems.postgres import create_database, server_identity
from tasks.drills.files import Extracted, check_tree, extract_tree
from tasks.drills.leftovers import sweep_leftovers
from tasks.drills.pick import Picked, pick_and_download
from tasks.drills.redis import compare_key_counts, restored_key_counts
from tasks.drills.scratch import drop_database, refuse_source
from tasks.drills.served import check_manifests, dry_run_apply, serve_tsdb
from tasks.drills.session import Drill, StepFailed
from tasks.drills.validate import validate_restore, warm_up


class Restored:
    """What the restore step hands to validation: the scratch database (its DSN and the drill
    server's major version) or the key counts of the scratch redis-server, and the backup's
    source facts to compare them with."""

    def __init__(
        self,
        source: dict[str, Any],
        *,
        dsn: str | None = None,
        major: int = 0,
        key_counts: dict[str, int] | None = None,
        tree: Extracted | None = None,
    ):
        self.source = source
        self.dsn = dsn
        self.major = major
        self.key_counts = key_counts
        self.tree = tree  # files: what extracting the tar into the work folder did


def sweep(drill: Drill) -> None:
    """Drop what drills of this target left behind when their process died."""
    removed = sweep_leftovers(drill.log, drill.target)
    checks = [DrillCheck(name="leftovers", ok=True, detail=f"dropped {item}") for item in removed]
    drill.results.add(DrillStep.SWEEP, checks)
    for item in removed:
        drill.say(f"dropped the leftover {item} of a drill that died")


def pick(drill: Drill) -> Picked:
    """Choose the backup, verify it from storage and download it in the same pass (a corrupt
    `latest` falls back to the previous verified backup)."""
    run = drill.run
    if isinstance(drill.target, PostgresTarget):
        warm_up()  # validation's Great Expectations import (seconds of CPU) beside the download
    picked = pick_and_download(run.catalog, run.storage, drill.target, run.backup, drill.workdir)
    results = drill.results
    results.timings["download"] = round(picked.seconds, 3)
    results.backup_id, results.fell_back_from = picked.record.id, picked.fell_back_from
    integrity = picked.report
    detail = (
        "read back from storage and matched the manifest"
        if integrity.ok
        else "; ".join(f"{c.key}: {c.problem}: {c.detail}" for c in integrity.problems)
    )
    if picked.fell_back_from:
        detail += f" (fell back from corrupt backup {picked.fell_back_from})"
    results.add(
        DrillStep.PICK, [DrillCheck(name="backup integrity", ok=integrity.ok, detail=detail)]
    )
    drill.say(f"backup {picked.record.id}: {detail}")
    if not integrity.ok:
        raise StepFailed("the backup is corrupt")
    return picked


def restore(drill: Drill, picked: Picked) -> Restored:
    """PostgreSQL: pg_restore into a scratch database on the drill server, never the source.
    Redis: load the RDB into a throwaway redis-server and read its key counts. Files:
    extract the tar into the work folder."""
    if isinstance(drill.target, FilesTarget | PrometheusTsdbTarget | KubernetesObjectsTarget):
        started = time.monotonic()
        drill.scratch_created = True
        extracted = extract_tree(picked.files["files"], drill.workdir / "tree")
        seconds = drill.seconds_since(started, "restore")
        picked.files["files"].unlink(missing_ok=True)
        detail = f"extracted {extracted.members} members into the work folder in {seconds:.1f}s"
        drill.results.add(DrillStep.RESTORE, [DrillCheck(name="restore", ok=True, detail=detail)])
        drill.say(detail)
        return Restored(picked.manifest.source, tree=extracted)
    if not isinstance(drill.target, PostgresTarget):
        started = time.monotonic()
        drill.scratch_created = True
        counts = restored_key_counts(picked.files["dump"], drill.workdir)
        drill.seconds_since(started, "restore")
        return Restored(picked.manifest.source, key_counts=counts)

    target, manifest, archive = drill.target, picked.manifest, picked.files["database"]
    drill.scratch_created = True
    if target.drill.dsn is not None:
        drill.server = TeamServer(target.drill.dsn.get_secret_value())
    else:
        drill.server = EmbeddedServer(drill.workdir)
    server = drill.server
    started = time.monotonic()
    system_id, database, major = server_identity(server.admin_dsn)
    refuse_source(
        target,
        server.admin_dsn,
        server=(system_id, database),
        source=manifest.source,
        scratch=drill.scratch_db,
    )
    create_database(server.admin_dsn, drill.scratch_db)
    used = restore_archive(
        archive,
        server.dsn(drill.scratch_db),
        major,
        manifest.dump_major,
        drill.run.jobs or target.drill.jobs,
        drill.run.config.backup.timeout.total_seconds(),
    )
    seconds = drill.seconds_since(started, "restore")
    archive.unlink(missing_ok=True)  # free the disk before validation
    drill.say(
        f"restored into {drill.scratch_db} on {server.describe()} with {used} in {seconds:.1f}s"
    )
    detail = f"pg_restore --exit-on-error into {drill.scratch_db} with {used}"
    drill.results.add(DrillStep.RESTORE, [DrillCheck(name="restore", ok=True, detail=detail)])
    return Restored(manifest.source, dsn=server.dsn(drill.scratch_db), major=major)


def validate(drill: Drill, restored: Restored) -> None:
    """PostgreSQL: Great Expectations, SQL checks and pg_amcheck against the manifest.
    Redis: the restored key counts per database against the backup's INFO figures."""
    started = time.monotonic()
    if restored.tree is not None:
        found: list[RestoreCheck] = check_tree(
            drill.workdir / "tree", restored.source, restored.tree
        )
        checks = [DrillCheck(**c.model_dump()) for c in found]
        checks += _served(drill, drill.workdir / "tree")
        drill.seconds_since(started, "validation")
        drill.results.add(DrillStep.VALIDATE, checks)
        drill.say(f"files: {sum(c.ok for c in checks)}/{len(checks)} checks passed")
        return
    if restored.key_counts is not None:
        checks = compare_key_counts(restored.source, restored.key_counts)
        drill.seconds_since(started, "validation")
        drill.results.add(DrillStep.VALIDATE, checks)
        drill.say(
            "loaded the RDB into a scratch redis-server: "
            f"{sum(c.ok for c in checks)}/{len(checks)} key counts match"
        )
        return
    config = drill.run.config
    amcheck = pick_binary("pg_amcheck", restored.major)
    data_docs = config.drills.data_docs / drill.id if config.drills.data_docs else None
    result = validate_restore(
        restored.dsn,
        restored.source,
        amcheck=amcheck.path,
        data_docs_dir=data_docs,
        jobs=drill.run.jobs or drill.target.drill.jobs,  # as many connections as pg_restore
    )
    drill.seconds_since(started, "validation")
    drill.results.gx_result, drill.results.data_docs = result.gx_result, result.data_docs
    drill.results.add(DrillStep.VALIDATE, result.checks)
    failed = [c.name for c in result.checks if not c.ok]
    drill.say(
        f"validation: {len(result.checks) - len(failed)} of {len(result.checks)} validation "
        "checks passed"
        + (f"; failed: {', '.join(failed[:5])}" if failed else "")
        + (f"; Data Docs: {result.data_docs}" if result.data_docs else "")
    )


def _served(drill: Drill, tree: Path) -> list[DrillCheck]:
    """Kubernetes objects: the manifests parsed and dry-run applied; Prometheus: the data dir
    served by a real prometheus (tasks/drills/served.py)."""
    target = drill.target
    if isinstance(target, KubernetesObjectsTarget):
        checks, objects = check_manifests(tree)
        return checks + dry_run_apply(drill.run.config, target, objects)
    if isinstance(target, PrometheusTsdbTarget):
        return serve_tsdb(tree, drill.workdir)
    return []


def objectives(drill: Drill, picked: Picked) -> None:
    """RTO = download + restore + validation; RPO = drill start - backup end; each against
    the target's goal when one is set."""
    target, results = drill.target, drill.results
    timings = results.timings
    rto = timings["download"] + timings["restore"] + timings["validation"]
    backup_end = picked.record.finished_at or picked.record.started_at
    rpo = (drill.started_at - backup_end).total_seconds()
    results.rto_seconds, results.rpo_seconds = round(rto, 3), round(rpo, 3)
    results.rto_target_seconds = target.rto.total_seconds() if target.rto else None
    results.rpo_target_seconds = target.rpo.total_seconds() if target.rpo else None
    rto_detail = (
        f"download {timings['download']:.1f}s + restore {timings['restore']:.1f}s + "
        f"validation {timings['validation']:.1f}s"
    )
    rpo_detail = (
        f"backup finished {human_duration(timedelta(seconds=rpo))} before the drill started"
    )
    results.add(
        DrillStep.OBJECTIVES,
        [
            _objective("rto", rto, target.rto, rto_detail),
            _objective("rpo", rpo, target.rpo, rpo_detail),
        ],
    )


def cleanup(drill: Drill) -> None:
    """Drop the scratch database or the embedded server, and the work folder."""
    started = time.monotonic()
    try:
        if isinstance(drill.server, TeamServer):
            drop_database(drill.server.admin_dsn, drill.scratch_db)  # IF EXISTS
        if drill.server is not None:
            drill.server.close()
    finally:
        shutil.rmtree(drill.workdir, ignore_errors=True)
        drill.seconds_since(started, "cleanup")


def _objective(name: str, measured: float, goal: timedelta | None, detail: str) -> DrillCheck:
    figure = f"{name.upper()} {measured:.1f}s"
    if goal is None:
        return DrillCheck(name=name, ok=True, detail=f"{figure} ({detail}); no target set")
    ok = measured <= goal.total_seconds()
    verdict = "within" if ok else "MISSED"
    as_configured = (
        human_duration(goal) if goal >= timedelta(seconds=1) else f"{goal.total_seconds():g}s"
    )  # 1h, 15m
    return DrillCheck(
        name=name, ok=ok, detail=f"{figure} {verdict} target {as_configured} ({detail})"
    )


__all__ = ["Restored", "cleanup", "objectives", "pick", "restore", "sweep", "validate"]
