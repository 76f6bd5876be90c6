"""A restore for real: one backup of one target into a database or a folder the operator names.

`run_restore` is the whole restore as a plain function; the flow (flows/restore.py) runs it
with each step as a Prefect task run. Steps, each recorded in the catalog as the restore
enters it (so a restore whose process is killed still says where it died):

0. preflight (nothing recorded yet): the target, the backup (latest verified, or an id), the
   destination measured, the plan (tasks/restore/plan.py); a refusal or a missing
   confirmation is an operator's mistake (exit 2) and touches nothing.
1. pick: verify the backup from storage while downloading it; a corrupt `latest` falls back
   to the previous verified backup (tasks/drills/pick.py).
2. pre-hooks: the target's restore.pre steps in order; one failing stops the restore.
3. restore: re-plan against the destination as it is now, then PostgreSQL: create the
   database if needed and pg_restore --exit-on-error -j (the binary matching the server);
   files: extract into the folder; Redis: load into the server through a throwaway
   redis-server, or write the RDB into the folder with the operator's next steps; Kubernetes
   objects into k8s://CLUSTER: server-side apply of each (tasks/restore/kubernetes.py).
4. validate: PostgreSQL: the drill's checks against the manifest (row counts, schema,
   sequences, pg_amcheck); files: every file against its recorded sha256; Redis: keys per
   database against the manifest (tasks/restore/redis.py); Kubernetes objects: each read back
   and compared with the backup.
5. post-hooks: the target's restore.post steps, always once pre-hooks started.
Then the verdict: restored (and validated), failed in a step, or interrupted (cancelled,
stopped or killed: the destination is incomplete, never reported restored). RTO = the wall
time from pick to the end of the post-hooks.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from runbook.catalog import (
    BackupRecord,
    BackupStatus,
    Catalog,
    RestoreCheck,
    RestoreLog,
    RestoreRecord,
    RestoreResults,
    RestoreStatus,
    RestoreStep,
    utcnow,
)
from runbook.config import (
    TARGET_KIND,
    Config,
    FilesTarget,
    KubernetesObjectsTarget,
    PostgresTarget,
    PrometheusTsdbTarget,
    RedisTarget,
    TargetConfig,
)
from runbook.errors import NotFoundError, RunbookError
from runbook.locks import named_lock
from runbook.manifest import read_manifest
from runbook.secrets import redact, split_dsn, target_secrets
from runbook.stopping import stop_reason
from runbook.storage import Storage
from runbook.systems.pg_tools import PgRestoreOptions, pg_restore_into, pick_binary
from runbook.systems.postgres import server_identity
from tasks.drills.files import check_tree, extract_tree
from tasks.drills.pick import Picked, pick_and_download
from tasks.drills.validate import validate_restore
from tasks.restore import destination
from tasks.restore import kubernetes as kube
from tasks.restore import redis as redis_restore
from tasks.restore.hooks import hook_label, run_hooks
from tasks.restore.plan import (
    DestinationFacts,
    RestorePlan,
    RestoreRequest,
    plan_restore,
    require_confirmation,
)

log = logging.getLogger("runbook.restore")

StepRunner = Callable[..., Any]  # (step, function, restore, *args) -> the function's value


def call_step(step: RestoreStep, function: Callable[..., Any], restore: Restore, *args: Any) -> Any:
    return function(restore, *args)


class StepFailed(Exception):  # noqa: N818 - a step's verdict, already among the checks
    """A step failed with its reason among the restore's checks: the restore stops there."""


@dataclass(frozen=True)
class RestoreRun:
    config: Config
    catalog: Catalog
    storage: Storage
    request: RestoreRequest
    flow_run_id: str | None = None
    on_step: Callable[[str], None] | None = None  # progress lines; default: the runbook log


def restore_lock(target: str) -> str:
    """One restore per target at a time."""
    return f"restore-{target}"


# --- preflight: nothing recorded, nothing touched ------------------------------------------


RestorableTarget = (
    PostgresTarget | FilesTarget | RedisTarget | PrometheusTsdbTarget | KubernetesObjectsTarget
)
# restored by extracting a tar into a folder
FolderTarget = FilesTarget | PrometheusTsdbTarget | KubernetesObjectsTarget


@dataclass(frozen=True)
class Preflight:
    target: RestorableTarget
    record: BackupRecord  # the backup the plan was made for (pick may fall back past it)
    facts: DestinationFacts
    plan: RestorePlan
    fell_back_from: str | None = None  # Kubernetes objects into a cluster: picked to plan


def restorable_target(config: Config, name: str) -> RestorableTarget:
    """Every backup target restores (NotFoundError for any other name)."""
    return config.target(name)


def planned_backup(catalog: Catalog, target: TargetConfig, spec: str) -> BackupRecord:
    """The backup to restore as the request names it: an id of this target that was
    committed, or the newest verified backup."""
    if spec != "latest":
        record = catalog.get_backup(spec)
        if record.target != target.name:
            raise NotFoundError(
                f"backup {spec} belongs to target {record.target!r}, not {target.name!r}"
            )
        if not record.committed:
            raise NotFoundError(
                f"backup {spec} is {record.status.value}: only stored or verified backups "
                "can be restored"
            )
        return record
    verified = catalog.list_backups(
        target=target.name, statuses=frozenset({BackupStatus.VERIFIED}), limit=1
    )
    if not verified:
        raise NotFoundError(
            f"no verified backup of target {target.name!r} to restore (see `runbook backups "
            "list`; `runbook verify ID` verifies a stored one)"
        )
    return verified[0]


def measure_destination(
    target: RestorableTarget,
    request: RestoreRequest,
    manifest_source: dict[str, Any],
    backup_id: str,
    *,
    config: Config | None = None,
    objects: list[dict[str, Any]] | None = None,
) -> DestinationFacts:
    """The destination's facts for `plan_restore`, with the backup and the hooks named
    (Kubernetes objects into a cluster: `config` and the backup's `objects` are needed)."""
    if isinstance(target, KubernetesObjectsTarget) and kube.is_cluster(request.into):
        assert config is not None and objects is not None
        facts = kube.kubernetes_destination(config, target, request, objects)
    elif isinstance(target, RedisTarget):
        facts = redis_restore.redis_destination(target, request.into, backup_id)
    elif isinstance(target, PostgresTarget):
        if not request.into:
            raise RunbookError("--into is required: the DSN of the database to restore into")
        try:
            facts = destination.postgres_destination(
                target, request.into, manifest_source, request.schema
            )
        except RunbookError:
            raise
        except Exception as exc:  # noqa: BLE001 - a DSN that does not answer: the operator's
            secrets = [request.into, *target_secrets(target)]
            try:
                secrets.append(split_dsn(request.into)[1])
            except Exception:  # noqa: BLE001 - an unparsable DSN is redacted whole
                pass
            raise RunbookError(
                "cannot reach the --into database: " + redact(f"{exc}", secrets)[:500]
            ) from None
    else:
        in_place = request.overwrite == "in-place"
        if in_place and isinstance(target, PrometheusTsdbTarget):
            raise RunbookError(
                "--in-place is for files targets: restore the Prometheus snapshot into a "
                "folder (--into DIR), then start Prometheus with --storage.tsdb.path=DIR"
            )
        if in_place and isinstance(target, KubernetesObjectsTarget):
            raise RunbookError(
                "--in-place is for files targets: restore the objects into a folder (--into "
                "DIR), then apply them with kubectl apply --server-side -R -f DIR"
            )
        if not request.into and not in_place:
            raise RunbookError("--into is required: the folder to restore the files into")
        folder = Path(request.into or "/")
        facts = destination.files_destination(target, folder, in_place)
    hooks = (
        [hook_label(h) for h in target.restore.pre],
        [hook_label(h) for h in target.restore.post],
    )
    return DestinationFacts(**{**facts.__dict__, "backup_id": backup_id, "hooks": hooks})


def preflight(run: RestoreRun) -> Preflight:
    """Everything that can refuse the restore before anything is recorded or touched."""
    request = run.request
    target = restorable_target(run.config, request.target)
    record = planned_backup(run.catalog, target, request.backup)
    try:
        manifest = read_manifest(run.storage, target.name, record.id, sealed=record.manifest_seal)
    except Exception as exc:  # noqa: BLE001 - storage is not trusted; pick re-reads and verifies
        log.warning("backup %s: could not read its manifest before planning: %s", record.id, exc)
        manifest = None
    source = manifest.source if manifest is not None else {}
    if request.schema and isinstance(target, PostgresTarget):
        _check_schema(source, request.schema, record.id)
    if isinstance(target, KubernetesObjectsTarget) and kube.is_cluster(request.into):
        return _preflight_cluster(run, target)
    facts = measure_destination(target, request, source, record.id)
    return Preflight(target, record, facts, plan_restore(request, facts))


def _preflight_cluster(run: RestoreRun, target: KubernetesObjectsTarget) -> Preflight:
    """Objects into a cluster: the plan needs them, so the backup is verified and read
    (into a private temporary folder, removed at once) and the server dry-runs each apply."""
    kube.cluster_of(run.config, target, run.request.into)  # an unknown cluster: refused first
    if run.request.overwrite != "no" or run.request.schema:  # before the server is asked
        plan_restore(run.request, DestinationFacts(kind="kubernetes", where=run.request.into,
                                                   exists=True))  # fmt: skip
    with tempfile.TemporaryDirectory(prefix=f"runbook-plan-{target.name}-") as folder:
        picked = pick_and_download(
            run.catalog,
            run.storage,
            target,
            run.request.backup,
            Path(folder),
            _artifacts_for(run.request, target),
        )
        if not picked.report.ok:
            problems = "; ".join(f"{c.key}: {c.problem}" for c in picked.report.problems)
            raise RunbookError(
                f"backup {picked.record.id} is damaged ({problems}): nothing was applied; "
                "restore another with --backup ID"
            )
        objects = kube.load_objects(picked.files["files"])
    facts = measure_destination(
        target,
        run.request,
        picked.manifest.source,
        picked.record.id,
        config=run.config,
        objects=objects,
    )
    plan = plan_restore(run.request, facts)
    return Preflight(target, picked.record, facts, plan, picked.fell_back_from)


def planned_record(run: RestoreRun, checked: Preflight) -> RestoreRecord:
    """A dry run's answer (--dry-run): the plan as a restore record that is never stored."""
    now = utcnow()
    return RestoreRecord(
        id=f"plan-{now.strftime('%Y%m%dT%H%M%SZ')}",
        target=checked.target.name,
        kind=TARGET_KIND[type(checked.target)],
        backup_id=checked.record.id,
        fell_back_from=checked.fell_back_from,
        into=checked.facts.where,
        schema_name=run.request.schema,
        status=RestoreStatus.PLANNED,
        started_at=now,
        finished_at=now,
        plan=checked.plan.actions,
        next_steps=[f"needs confirmation (--yes): {reason}" for reason in checked.plan.confirm],
        host=socket.gethostname(),
        pid=os.getpid(),
        flow_run_id=run.flow_run_id,
    )


def _check_schema(source: dict[str, Any], schema: str, backup_id: str) -> None:
    known = {t["schema"] for t in source.get("schema", {}).get("tables", [])}
    known |= set(source.get("schemas", []))
    if known and schema not in known:
        raise NotFoundError(
            f"backup {backup_id} has no schema {schema!r} (it holds {', '.join(sorted(known))})"
        )


# --- one restore in progress ---------------------------------------------------------------

INTERRUPTED = "interrupted before it finished (cancelled, stopped or killed)"


class Restore:
    """One restore in progress. A plain class: Prefect hands it to each task run as it is."""

    def __init__(self, run: RestoreRun, checked: Preflight, run_step: StepRunner):
        self.run = run
        self.request = run.request
        self.target = checked.target
        self.facts = checked.facts
        self.log = RestoreLog(run.catalog)
        self.started_at = utcnow()
        self.id = f"{self.started_at.strftime('%Y%m%dT%H%M%SZ')}-{os.urandom(3).hex()}"
        self.workdir = Path(tempfile.gettempdir()) / f"runbook-restore-{self.target.name}-{self.id}"
        self.results = RestoreResults(plan=checked.plan.actions)
        self.current: RestoreStep | None = None
        self.pre_hooks_started = False
        self.record: RestoreRecord | None = None
        self.clock = time.monotonic()
        self._run_step = run_step

    def step(self, step: RestoreStep, function: Callable[..., Any], *args: Any) -> Any:
        self.log.enter_step(self.id, step, self.results)
        self.current = step
        return self._run_step(step, function, self, *args)

    def say(self, message: str) -> None:
        (self.run.on_step or log.info)(message)

    def timed(self, started: float, name: str) -> float:
        self.results.timings[name] = round(time.monotonic() - started, 3)
        return self.results.timings[name]

    @property
    def incomplete(self) -> str:
        return f"the destination {self.facts.where} is incomplete: do not use it as restored"


# --- the steps -----------------------------------------------------------------------------


def _artifacts_for(request: RestoreRequest, target: TargetConfig) -> Callable[..., list[str]]:
    def choose(record: BackupRecord) -> list[str]:
        if isinstance(target, FolderTarget):
            return ["files"]
        if isinstance(target, RedisTarget):
            return ["dump"]
        names = {a.name for a in record.artifacts}
        if request.schema and f"schema-{request.schema}" in names:
            return [f"schema-{request.schema}"]  # the per-schema archive (runbook 003)
        return ["database"]

    return choose


def pick(restore: Restore) -> Picked:
    """Verify the backup from storage while downloading it (a corrupt latest falls back)."""
    run, started = restore.run, time.monotonic()
    picked = pick_and_download(
        run.catalog,
        run.storage,
        restore.target,
        run.request.backup,
        restore.workdir,
        _artifacts_for(run.request, restore.target),
    )
    restore.timed(started, "download")
    results = restore.results
    results.backup_id, results.fell_back_from = picked.record.id, picked.fell_back_from
    report = picked.report
    detail = (
        "read back from storage and matched the manifest"
        if report.ok
        else "; ".join(f"{c.key}: {c.problem}: {c.detail}" for c in report.problems)
    )
    if picked.fell_back_from:
        detail += f" (fell back from corrupt backup {picked.fell_back_from})"
    results.add(
        RestoreStep.PICK, [RestoreCheck(name="backup integrity", ok=report.ok, detail=detail)]
    )
    restore.say(f"backup {picked.record.id}: {detail}")
    if not report.ok:
        raise StepFailed("the backup is corrupt")
    return picked


def pre_hooks(restore: Restore, picked: Picked) -> None:
    """Plan again (the destination now, the backup picked), then the pre-restore steps."""
    _replan(restore, picked)
    started = time.monotonic()
    restore.pre_hooks_started = True
    found = run_hooks(restore.target.restore.pre, "pre", stop_at_failure=True)
    restore.results.add_hooks(RestoreStep.PRE_HOOKS, found)
    restore.timed(started, "pre-hooks")
    for hook in found:
        restore.say(f"{hook.name}: {'ok' if hook.ok else 'FAILED'}: {hook.detail}")
    if not all(h.ok for h in found):
        raise StepFailed("a pre-restore step failed: nothing was restored")


def post_hooks(restore: Restore) -> None:
    started = time.monotonic()
    found = run_hooks(restore.target.restore.post, "post", stop_at_failure=False)
    restore.results.add_hooks(RestoreStep.POST_HOOKS, found)
    restore.timed(started, "post-hooks")
    for hook in found:
        restore.say(f"{hook.name}: {'ok' if hook.ok else 'FAILED'}: {hook.detail}")


class Restored:
    """What validation checks: the database restored into, or the folder and what the
    extraction did, with the backup's source facts."""

    def __init__(self, source: dict[str, Any], **where: Any):
        self.source = source
        self.dsn: str | None = where.get("dsn")
        self.major: int = where.get("major", 0)
        self.folder: Path | None = where.get("folder")
        self.extracted = where.get("extracted")
        self.url: str | None = where.get("url")  # a Redis server loaded
        self.cluster = where.get("cluster")  # Kubernetes objects applied into this cluster
        self.objects: list[dict[str, Any]] = where.get("objects") or []
        self.rdb: Path | None = where.get("rdb")  # a Redis RDB written to a folder


def _replan(restore: Restore, picked: Picked) -> None:
    """Plan again against the destination as it is now and the backup actually picked: what
    changed since the preflight (a database filled meanwhile, a fallback to another backup)
    is refused just the same."""
    request, manifest = restore.request, picked.manifest
    objects = None
    if restore.facts.kind == "kubernetes":
        objects = kube.load_objects(picked.files["files"])
    facts = measure_destination(
        restore.target,
        request,
        manifest.source,
        manifest.backup_id,
        config=restore.run.config,
        objects=objects,
    )
    require_confirmation(plan_restore(request, facts), request)


def _restore_cluster(restore: Restore, picked: Picked) -> Restored:
    """Apply the backup's objects into the cluster (server-side apply)."""
    started, request = time.monotonic(), restore.request
    assert isinstance(restore.target, KubernetesObjectsTarget)
    cluster = kube.cluster_of(restore.run.config, restore.target, request.into)
    objects = kube.select_objects(kube.load_objects(picked.files["files"]), request)
    checks, _stored = kube.apply_objects(cluster, objects, request.force_conflicts)
    restore.timed(started, "restore")
    restore.results.add(RestoreStep.RESTORE, checks)
    failed = [c for c in checks if not c.ok]
    counts: dict[str, int] = {}
    for check in checks:
        word = check.detail.split(":")[0] if check.ok else "failed"
        counts[word] = counts.get(word, 0) + 1
    summary = ", ".join(f"{n} {word}" for word, n in counts.items())
    restore.say(f"applied {len(checks)} object(s) into {restore.facts.where}: {summary}")
    for check in failed:
        restore.say(f"{check.name}: FAILED: {check.detail}")
    restore.results.next_steps = kube.cluster_steps(restore.facts.where, picked.manifest.source)
    return Restored(picked.manifest.source, cluster=cluster, objects=objects)


def _restore_redis(restore: Restore, picked: Picked) -> Restored:
    """Load the RDB into the server (through a throwaway redis-server), or write it into
    the folder with the steps that load it into the operator's own server."""
    started, target = time.monotonic(), restore.target
    url = redis_restore.destination_url(target, restore.request.into)
    source, rdb = picked.manifest.source, picked.files["dump"]
    if redis_restore.is_server_url(url):
        flush = restore.request.overwrite in ("clean", "replace-source")
        _copied, detail = redis_restore.load_into_server(rdb, restore.workdir, url, flush=flush)
        restored = Restored(source, url=url)
    else:
        final = redis_restore.write_rdb(rdb, Path(url), target.name, picked.record.id)
        detail = f"wrote the verified RDB to {final} ({final.stat().st_size} bytes)"
        restore.results.next_steps = redis_restore.operator_steps(final, source)
        restored = Restored(source, rdb=final)
    restore.timed(started, "restore")
    restore.results.add(RestoreStep.RESTORE, [RestoreCheck(name="restore", ok=True, detail=detail)])
    restore.say(detail)
    return restored


def restore_data(restore: Restore, picked: Picked) -> Restored:
    """PostgreSQL: create the database if needed, pg_restore into it. Files: extract.
    Redis: load into the server, or write the RDB into the folder."""
    started, request = time.monotonic(), restore.request
    if isinstance(restore.target, RedisTarget):
        return _restore_redis(restore, picked)
    if restore.facts.kind == "kubernetes":
        return _restore_cluster(restore, picked)
    if isinstance(restore.target, FolderTarget):
        folder = Path(request.into or "/")
        extracted = extract_tree(picked.files["files"], folder)
        restore.timed(started, "restore")
        detail = f"extracted {extracted.members} members into {folder}"
        if isinstance(restore.target, PrometheusTsdbTarget):
            restore.results.next_steps = prometheus_steps(folder, picked.manifest.source)
        if isinstance(restore.target, KubernetesObjectsTarget):
            restore.results.next_steps = kubernetes_steps(folder, picked.manifest.source)
        restore.results.add(
            RestoreStep.RESTORE, [RestoreCheck(name="restore", ok=True, detail=detail)]
        )
        restore.say(detail)
        return Restored(picked.manifest.source, folder=folder, extracted=extracted)

    dsn = request.into
    if not restore.facts.exists and not destination.database_exists(dsn):
        destination.create_database(dsn)
        restore.say(f"created database {restore.facts.where}")
    _, _, major = server_identity(destination.admin_dsn(dsn))
    name, archive = next(iter(picked.files.items()))
    whole = name == "database"  # else the schema's own archive: it holds that schema alone
    if request.schema and whole:
        destination.create_schema(dsn, request.schema)  # pg_restore -n restores its objects only
    options = PgRestoreOptions(
        jobs=request.jobs or restore.target.restore.jobs,
        schema=request.schema if whole else None,
        clean=request.overwrite in ("clean", "replace-source"),
        timeout=restore.run.config.backup.timeout.total_seconds(),
    )
    used = pg_restore_into(archive, dsn, major, picked.manifest.dump_major, options)
    seconds = restore.timed(started, "restore")
    archive.unlink(missing_ok=True)
    detail = f"pg_restore --exit-on-error into {restore.facts.where} with {used}"
    restore.results.add(RestoreStep.RESTORE, [RestoreCheck(name="restore", ok=True, detail=detail)])
    restore.say(f"restored into {restore.facts.where} with {used} in {seconds:.1f}s")
    return Restored(picked.manifest.source, dsn=dsn, major=major)


def validate(restore: Restore, restored: Restored) -> None:
    started = time.monotonic()
    if restored.cluster is not None:
        checks = kube.compare_objects(restored.cluster, restored.objects)
    elif restored.url is not None:
        checks = redis_restore.validate_server(restored.url, restored.source)
    elif restored.rdb is not None:
        checks = redis_restore.validate_rdb(restored.rdb, restore.workdir, restored.source)
        if not checks:
            restore.results.next_steps.append(redis_restore.NOT_CHECKED)
            restore.say(redis_restore.NOT_CHECKED)
    elif restored.folder is not None:
        checks = check_tree(restored.folder, restored.source, restored.extracted)
    else:
        amcheck = pick_binary("pg_amcheck", restored.major)
        result = validate_restore(
            restored.dsn, restored.source, schema_name=restore.request.schema, amcheck=amcheck.path
        )
        checks = [RestoreCheck(**c.model_dump()) for c in result.checks]
    restore.timed(started, "validation")
    restore.results.add(RestoreStep.VALIDATE, checks)
    failed = [c.name for c in checks if not c.ok]
    restore.say(
        f"validation: {len(checks) - len(failed)} of {len(checks)} checks passed"
        + (f"; failed: {', '.join(failed[:5])}" if failed else "")
    )


def prometheus_steps(folder: Path, source: dict[str, Any]) -> list[str]:
    """What a person does with a restored TSDB snapshot."""
    blocks = source.get("blocks") or []
    version = source.get("prometheus_version") or "the backup's"
    return [
        f"{folder} is a Prometheus data dir ({len(blocks)} block(s)); use Prometheus "
        f"{version} or newer with it.",
        f"To serve it as it was: stop Prometheus and start it with --storage.tsdb.path={folder} "
        "(owned by the user Prometheus runs as, e.g. `chown -R prometheus: " + str(folder) + "`).",
        "Or add it to a running server's data: stop it, move the block folders (the ULID-named "
        "ones) into its --storage.tsdb.path, and start it (blocks that overlap its own time "
        "range need --storage.tsdb.allow-overlapping-blocks on versions before 2.39).",
        'Check: query `count({__name__=~".+"})` at a time the backup covers, in the UI or '
        "`promtool query instant`.",
    ]


def kubernetes_steps(folder: Path, source: dict[str, Any]) -> list[str]:
    """What a person does with restored Kubernetes objects."""
    objects = source.get("objects") or []
    namespaces = ", ".join(source.get("namespaces") or []) or "-"
    return [
        f"{folder} holds {len(objects)} object(s) as <namespace>/<Kind>/<name>.yaml "
        f"(namespaces {namespaces}), server-managed fields stripped; Secrets among them hold "
        "their data: keep the folder private and delete it when done.",
        f"See what would change: kubectl apply --server-side --dry-run=server -R -f {folder} "
        f"(and kubectl diff --server-side -R -f {folder}).",
        f"Apply: kubectl apply --server-side --force-conflicts -R -f {folder} (the namespaces "
        "must exist: kubectl create namespace NAME).",
    ]


# --- the whole restore ---------------------------------------------------------------------


def run_restore(run: RestoreRun, run_step: StepRunner = call_step) -> RestoreRecord:
    """One restore (see the module docstring). Raises for an operator's mistake
    (RunbookError, before anything is recorded); a restore that fails is a result."""
    checked = preflight(run)
    require_confirmation(checked.plan, run.request)
    sweep_dead_restores(RestoreLog(run.catalog), checked.target.name)
    timeout = run.config.backup.lock_timeout.total_seconds()
    with (
        named_lock(run.config.catalog, restore_lock(checked.target.name), timeout),
        recorded_restore(run, checked, run_step) as restore,
    ):
        picked = restore.step(RestoreStep.PICK, pick)
        try:
            restore.step(RestoreStep.PRE_HOOKS, pre_hooks, picked)
            restored = restore.step(RestoreStep.RESTORE, restore_data, picked)
            restore.step(RestoreStep.VALIDATE, validate, restored)
        except Exception:
            _post_hooks_always(restore, as_task=True)
            raise
        except BaseException:  # cancelled or stopped: no new task run while torn down
            _post_hooks_always(restore, as_task=False)
            raise
        _post_hooks_always(restore, as_task=True)
    return restore.record


def _post_hooks_always(restore: Restore, *, as_task: bool) -> None:
    """The post steps, once the pre steps started, whatever happened since; the step the
    restore failed in stays the one recorded."""
    if not restore.pre_hooks_started:
        return
    failed_in = restore.current
    if as_task:
        restore.step(RestoreStep.POST_HOOKS, post_hooks)
    else:
        post_hooks(restore)
    restore.current = failed_in


@contextmanager
def recorded_restore(
    run: RestoreRun, checked: Preflight, run_step: StepRunner
) -> Iterator[Restore]:
    """The restore's record from start to verdict around the steps of the block."""
    restore = Restore(run, checked, run_step)
    restore.log.start(
        RestoreRecord(
            id=restore.id,
            target=restore.target.name,
            kind=TARGET_KIND[type(restore.target)],
            backup_id=checked.record.id,
            into=checked.facts.where,
            schema_name=run.request.schema,
            status=RestoreStatus.RUNNING,
            started_at=restore.started_at,
            host=socket.gethostname(),
            pid=os.getpid(),
            flow_run_id=run.flow_run_id,
        )
    )
    restore.workdir.mkdir(mode=0o700)
    secrets = target_secrets(restore.target) + [run.request.into]
    if restore.facts.kind == "postgres":
        secrets.append(split_dsn(run.request.into)[1])
    elif restore.facts.kind == "redis":
        secrets += redis_restore.url_secrets(restore.target, run.request.into)
    try:
        yield restore
        restore.results.rto_seconds = round(time.monotonic() - restore.clock, 3)
        restore.record = restore.log.finish(restore.id, restore.results)
    except StepFailed:
        restore.results.rto_seconds = round(time.monotonic() - restore.clock, 3)
        restore.record = restore.log.finish(restore.id, restore.results)
    except RunbookError as exc:  # found late: the destination changed since the preflight
        restore.record = restore.log.refuse(restore.id, str(exc), restore.results)
        raise
    except Exception as exc:  # noqa: BLE001 - a failed restore is a result
        error = redact(f"{type(exc).__name__}: {exc}", secrets)[:2000]
        if restore.current in (RestoreStep.RESTORE, RestoreStep.VALIDATE):
            error += f"; {restore.incomplete}"
        restore.results.checks.append(RestoreCheck(name="restore", ok=False, detail=error))
        step = restore.current or RestoreStep.PICK
        restore.record = restore.log.mark_failed(restore.id, step, error, restore.results)
    except BaseException as exc:  # cancelled, SIGTERM, Ctrl-C: recorded, then re-raised
        reason = stop_reason(exc) or INTERRUPTED
        error = f"{reason} in step {restore.current or 'pick'}; {restore.incomplete}"
        restore.record = restore.log.interrupt(restore.id, restore.current, error, restore.results)
        raise
    finally:
        shutil.rmtree(restore.workdir, ignore_errors=True)
    record = restore.record
    why = f": {record.error}" if record.error else ""
    restore.say(f"restore {record.status}: {record.into}{why}")


# --- restores whose process died -----------------------------------------------------------


def _alive(record: RestoreRecord) -> bool:
    if record.host != socket.gethostname():
        return True  # another machine's: only it can tell
    try:
        process = psutil.Process(record.pid)
    except psutil.NoSuchProcess:
        return False
    return process.create_time() <= record.started_at.timestamp() + 5


def sweep_dead_restores(restores: RestoreLog, target: str | None = None) -> list[RestoreRecord]:
    """Mark restores whose process died `interrupted`: their destination is incomplete."""
    swept = []
    for record in restores.list(target=target, status=RestoreStatus.RUNNING, limit=None):
        if _alive(record):
            continue
        step = record.failed_step or "pick"
        note = (
            f"its process ({record.host} pid {record.pid}) died in step {step}; the "
            f"destination {record.into} is incomplete: do not use it as restored"
        )
        swept.append(restores.abandon(record.id, note))
        shutil.rmtree(
            Path(tempfile.gettempdir()) / f"runbook-restore-{record.target}-{record.id}",
            ignore_errors=True,
        )
    return swept
