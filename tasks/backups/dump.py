"""Taking a backup: dump -> zstd -> sha256 -> storage in one pass, manifest last.

`create_backup` writes the artifacts and the manifest of one target and knows nothing of the
catalog; `run_backup` wraps it with the per-target lock and the catalog's record
(running -> stored, or failed / locked). Verification is tasks/backups/verify.py.

Each part of a backup runs inside `step(BackupStep...)`, which names the step on an exception
that leaves it (the innermost step wins), so a failed backup records where it failed beside
its error without changing the exception its caller sees.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import queue
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import yaml

from runbook import __version__
from runbook.catalog import BackupRecord, BackupStep, Catalog, utcnow
from runbook.config import (
    TARGET_KIND,
    BackupSettings,
    Config,
    FilesTarget,
    KubernetesObjectsTarget,
    PostgresTarget,
    PrometheusTsdbTarget,
    RedisTarget,
    TargetConfig,
)
from runbook.errors import PermanentError
from runbook.locks import LockTimeout, backup_lock, named_lock
from runbook.manifest import (
    Manifest,
    ManifestArtifact,
    artifact_key,
    backup_prefix,
    manifest_key,
)
from runbook.pins import Pin
from runbook.secrets import redact, split_dsn, target_secrets
from runbook.stopping import run_interruptibly, stop_reason
from runbook.storage import Storage, StorageError
from runbook.streams import ProcessStream, ZstdEncoder
from runbook.systems.http import redact_url
from runbook.systems.pg_tools import client_env, pick_binary
from runbook.systems.postgres import (
    connect,
    exact_row_counts,
    exported_snapshot,
    schema_facts,
    schema_fingerprint,
    server_facts,
)
from runbook.systems.prometheus_tsdb import TsdbAdmin, remove_snapshot, snapshot_folder
from runbook.systems.redis import redis_facts, stream_rdb

log = logging.getLogger("runbook.backup")

_STEP = "backup_step"  # the attribute an exception carries its step in


@contextmanager
def step(name: BackupStep) -> Iterator[None]:
    """An exception leaving this block failed in step `name`, unless a step inside it named
    the exception first."""
    try:
        yield
    except BaseException as exc:
        if getattr(exc, _STEP, None) is None:
            setattr(exc, _STEP, name)
        raise


def failed_step(exc: BaseException, default: BackupStep) -> BackupStep:
    """The step an exception left, `default` when it left none."""
    return getattr(exc, _STEP, None) or default


# --- one artifact --------------------------------------------------------------------------


def store_artifact(
    storage: Storage,
    key: str,
    name: str,
    content: str,
    chunks: Iterable[bytes],
    settings: BackupSettings,
    schema_name: str | None = None,
) -> ManifestArtifact:
    """Compress, hash and store one stream; the put commits only if the stream ended cleanly.
    The storage's own errors fail the step `store`; any other error came out of the stream
    (the dump or its compression) and fails `dump`."""
    started = time.monotonic()
    encoder = ZstdEncoder(
        chunks, level=settings.compression_level, threads=settings.compression_threads
    )
    try:
        # Off the main thread, which stays free to act on SIGTERM (issue 15, item 4).
        stop = chunks.close if isinstance(chunks, ProcessStream) else None
        info = run_interruptibly(storage.put, key, encoder, stop=stop)
    except StorageError as exc:
        setattr(exc, _STEP, BackupStep.STORE)
        raise
    if info.size != encoder.stored_bytes:
        with step(BackupStep.STORE):
            raise PermanentError(
                f"{key}: storage reports {info.size} bytes but {encoder.stored_bytes} were written"
            )
    return ManifestArtifact(
        name=name,
        key=key,
        content=content,
        bytes=encoder.stored_bytes,
        logical_bytes=encoder.logical_bytes,
        sha256=encoder.sha256,
        seconds=round(time.monotonic() - started, 3),
        schema_name=schema_name,
    )


@dataclass
class Dumped:
    artifacts: list[ManifestArtifact]
    source: dict[str, Any]
    tools: dict[str, str]
    timings: dict[str, float]
    warnings: list[str] = field(default_factory=list)


# --- PostgreSQL ----------------------------------------------------------------------------


def dump_postgres(
    target: PostgresTarget, storage: Storage, backup_id: str, settings: BackupSettings
) -> Dumped:
    """pg_dump -Fc of the whole database and of each configured schema, all in one snapshot;
    exact row counts per table taken in that same snapshot first (a parallel seq scan: a
    fraction of the dump's time, and cheaper than competing with pg_dump for the cores)."""
    dsn = target.dsn.get_secret_value()
    _, password = split_dsn(dsn)
    timings: dict[str, float] = {}
    started = time.monotonic()
    with step(BackupStep.CONNECT):
        with connect(dsn, connect_timeout=target.connect_timeout.total_seconds()) as conn:
            facts = server_facts(conn)
    with step(BackupStep.DUMP):
        pg_dump = pick_binary("pg_dump", facts["server_major"], target.bin_dir)
    log.info(
        "target %s: PostgreSQL %s, using %s",
        target.name,
        facts["server_version"],
        pg_dump.describe(),
    )
    conninfo, env = client_env(dsn)
    artifacts: list[ManifestArtifact] = []

    with (
        step(BackupStep.SNAPSHOT),
        exported_snapshot(
            dsn, target.connect_timeout.total_seconds(), settings.table_lock_timeout.total_seconds()
        ) as (conn, snapshot),
    ):
        schema = schema_facts(conn)
        present = {t["schema"] for t in schema["tables"]} | _schemas(conn)
        missing = [s for s in target.schemas if s not in present]
        if missing:
            raise PermanentError(
                f"target {target.name}: schema {missing[0]!r} does not exist in database "
                f"{facts['database']!r} (check the target's schemas list)"
            )
        timings["facts"] = round(time.monotonic() - started, 3)
        count_started = time.monotonic()
        row_counts = exact_row_counts(conn, schema["tables"])
        timings["row counts"] = round(time.monotonic() - count_started, 3)

        archives: list[tuple[str, str | None]] = [("database", None)]
        archives += [(f"schema-{name}", name) for name in target.schemas]
        for name, schema_name in archives:
            argv = [
                pg_dump.path,
                "--format=custom",
                "--compress=0",
                f"--snapshot={snapshot}",
                "--no-password",
                f"--lock-wait-timeout={int(settings.table_lock_timeout.total_seconds() * 1000)}",
                f"--dbname={conninfo}",
            ]
            if schema_name:
                argv.append(f"--schema={schema_name}")
            with (
                step(BackupStep.DUMP),
                ProcessStream(
                    argv,
                    env=env,
                    timeout=settings.timeout.total_seconds(),
                    name="pg_dump",
                    redact=[password] if password else [],
                ) as stream,
            ):
                artifact = store_artifact(
                    storage,
                    artifact_key(target.name, backup_id, name, "pg_dump-custom"),
                    name,
                    "pg_dump-custom",
                    stream,
                    settings,
                    schema_name=schema_name,
                )
            artifacts.append(artifact)
            timings[f"dump {name}"] = artifact.seconds

    source = {
        **facts,
        "snapshot": snapshot,
        "schemas": list(target.schemas),
        "row_counts": row_counts,
        "schema_fingerprint": schema_fingerprint(schema),
        "schema": schema,
    }
    return Dumped(artifacts, source, {"pg_dump": pg_dump.describe()}, timings)


def _schemas(conn: Any) -> set[str]:
    return {row[0] for row in conn.execute("SELECT nspname FROM pg_namespace")}


# --- Redis ---------------------------------------------------------------------------------


def dump_redis(
    target: RedisTarget, storage: Storage, backup_id: str, settings: BackupSettings
) -> Dumped:
    """An RDB snapshot streamed over the replication protocol, as `redis-cli --rdb` takes it."""
    with step(BackupStep.CONNECT):
        facts = redis_facts(target)
    artifact = store_artifact(
        storage,
        artifact_key(target.name, backup_id, "dump", "redis-rdb"),
        "dump",
        "redis-rdb",
        stream_rdb(target),
        settings,
    )
    # The snapshot is forked some time after the INFO above (diskless sync waits a few
    # seconds): the counts once it has arrived bound what a busy server's snapshot holds.
    try:
        after = redis_facts(target)
    except Exception:  # noqa: BLE001 - the backup is stored; the drill then compares exactly
        pass
    else:
        facts["keys_per_db_after"] = after["keys_per_db"]
        facts["expires_per_db_after"] = after["expires_per_db"]
    return Dumped(
        [artifact],
        facts,
        {"redis": f"redis {facts.get('redis_version', '?')}"},
        {"dump": artifact.seconds},
    )


# --- files ---------------------------------------------------------------------------------


def dump_files(
    target: FilesTarget, storage: Storage, backup_id: str, settings: BackupSettings
) -> Dumped:
    """A tar of the configured paths (runbook 004's config backup), streamed. Like tar, a file
    that vanishes mid-backup is a warning; unlike tar, an archive with no files is a failed
    backup unless the target has `allow_empty: true` (a path that silently became empty, or
    a symlink that was not followed, must not pass for a verified backup)."""
    missing = [str(p) for p in target.paths if not p.exists() and not p.is_symlink()]
    if missing:
        with step(BackupStep.CONNECT):
            raise PermanentError(f"target {target.name}: path {missing[0]} does not exist")
    warnings: list[str] = []
    artifact, stats, checksums = store_tar(
        target,
        storage,
        backup_id,
        settings,
        lambda stats, checksums: stream_tar(
            target.paths, target.exclude, stats, warnings, checksums
        ),
        None if target.allow_empty else "",
    )
    source = {"paths": [str(p) for p in target.paths], "exclude": list(target.exclude)}
    tool = {"tar": f"python tarfile (pax) {__version__}"}
    return tar_dumped(target, artifact, source, tool, (stats, checksums, warnings))


def tar_dumped(
    target: FilesTarget | PrometheusTsdbTarget | KubernetesObjectsTarget,
    artifact: ManifestArtifact,
    source: dict[str, Any],
    tool: dict[str, str],
    archived: tuple[dict[str, int], list[dict[str, Any]], list[str]],
) -> Dumped:
    """The result of a tar backup (store_tar's): its warnings logged, the target's `source`
    facts with the archive's counts and the sha256 of every regular file as archived (a
    restore and a drill check each file against it)."""
    stats, checksums, warnings = archived
    for warning in warnings:
        log.warning("target %s: %s", target.name, warning)
    source = {**source, **stats, "file_checksums": checksums}
    return Dumped([artifact], source, tool, {"dump": artifact.seconds}, warnings)


def store_tar(
    target: FilesTarget | PrometheusTsdbTarget | KubernetesObjectsTarget,
    storage: Storage,
    backup_id: str,
    settings: BackupSettings,
    tar: Callable[[dict[str, int], list[dict[str, Any]]], Iterable[bytes]],
    refuse_empty: str | None,
) -> tuple[ManifestArtifact, dict[str, int], list[dict[str, Any]]]:
    """Stream `tar(stats, checksums)` into the target's `files` artifact; (artifact, stats,
    per-file checksums). With `refuse_empty` not None an archive holding no file fails before
    storage commits it, saying why ("" = the target's paths hold none)."""
    stats: dict[str, int] = {"files": 0, "bytes": 0}
    checksums: list[dict[str, Any]] = []
    chunks = tar(stats, checksums)
    if refuse_empty is not None:
        chunks = _refuse_empty(chunks, stats, target, refuse_empty)
    artifact = store_artifact(
        storage,
        artifact_key(target.name, backup_id, "files", "tar"),
        "files",
        "tar",
        chunks,
        settings,
    )
    return artifact, stats, checksums


def _refuse_empty(
    chunks: Iterable[bytes],
    stats: dict[str, int],
    target: FilesTarget | PrometheusTsdbTarget | KubernetesObjectsTarget,
    why: str = "",
) -> Iterator[bytes]:
    """Pass the tar through; raise at its end, before storage commits it, if it holds no file."""
    yield from chunks
    if not stats.get("files"):
        what = why or (
            f"the archive has no files (paths {', '.join(str(p) for p in target.paths)} hold "
            "none after exclude)"
        )
        raise PermanentError(
            f"target {target.name}: {what}; set allow_empty: true on the target if an empty "
            "backup is expected"
        )


class _QueueWriter:
    """A write-only file object whose writes become chunks of an iterator (bounded queue)."""

    def __init__(self, chunk_size: int = 1 << 20, depth: int = 8):
        self.queue: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=depth)
        self.buffer = bytearray()
        self.chunk_size = chunk_size
        self.cancelled = threading.Event()

    def write(self, data: bytes) -> int:
        if self.cancelled.is_set():
            raise OSError("the consumer stopped reading")
        self.buffer += data
        if len(self.buffer) >= self.chunk_size:
            self._put(bytes(self.buffer))
            self.buffer.clear()
        return len(data)

    def _put(self, item: bytes | BaseException | None) -> None:
        while not self.cancelled.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def finish(self, error: BaseException | None) -> None:
        if error is None and self.buffer:
            self._put(bytes(self.buffer))
        self._put(error)


class _PaddedReader:
    """Reads exactly `size` bytes of a file whose header is already written: a file that
    shrank meanwhile is padded with zeros (as GNU tar does), so the archive stays readable.
    Hashes what it hands to tar (the member's content as archived)."""

    def __init__(self, handle: Any, size: int):
        self.handle = handle
        self.left = size
        self.shrank = False
        self.sha256 = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.handle.read(n)
        if len(data) < n:
            self.shrank = True
            data += bytes(n - len(data))
        self.left -= len(data)
        self.sha256.update(data)
        return data


def stream_tar(
    paths: list[Path],
    exclude: list[str],
    stats: dict[str, int] | None = None,
    warnings: list[str] | None = None,
    checksums: list[dict[str, Any]] | None = None,
    relative_to: Path | None = None,
) -> Iterator[bytes]:
    """A POSIX tar of `paths` as chunks; members named by their absolute path without '/'
    (or, given `relative_to`, by their path below it, that folder itself left out).
    `checksums` receives {path, sha256, size, mode} of every regular file as archived.

    The configured paths are followed when they are symlinks (`/etc/myapp -> /opt/myapp/conf`
    is archived as the folder); links found inside them are stored as links. A file that
    vanishes or shrinks between the listing and its read is noted in `warnings`, as tar does.
    """
    writer = _QueueWriter()
    stats = stats if stats is not None else {}
    warnings = warnings if warnings is not None else []

    def excluded(path: str) -> bool:
        return any(
            fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(os.path.basename(path), pattern)
            for pattern in exclude
        )

    def add(tar: tarfile.TarFile, path: Path, *, follow: bool) -> None:
        tar.dereference = follow
        if relative_to is not None:
            name = os.path.relpath(path, relative_to)
            if name == ".":
                return
        else:
            name = str(path).lstrip("/")
        try:
            member = tar.gettarinfo(str(path), arcname=name)
            if member is None:  # sockets, devices
                return
            handle = open(path, "rb") if member.isreg() else None  # noqa: SIM115 - closed below
        except FileNotFoundError:
            warnings.append(f"{path}: vanished before it was read (skipped)")
            return
        if handle is None:
            tar.addfile(member)
            return
        with handle:
            reader = _PaddedReader(handle, member.size)
            tar.addfile(member, reader)
        if reader.shrank:
            warnings.append(f"{path}: shrank while it was read (padded with zeros)")
        stats["files"] = stats.get("files", 0) + 1
        stats["bytes"] = stats.get("bytes", 0) + member.size
        if checksums is not None:
            checksums.append(
                {
                    "path": member.name,
                    "sha256": reader.sha256.hexdigest(),
                    "size": member.size,
                    "mode": member.mode & 0o7777,
                }
            )

    def produce() -> None:
        error: BaseException | None = None
        try:
            with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for root in paths:
                    for path in _walk(root, warnings):
                        if not excluded(str(path)):
                            add(tar, path, follow=path is root)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            error = exc
        writer.finish(error)

    thread = threading.Thread(target=produce, daemon=True, name="tar")
    thread.start()
    try:
        while True:
            item = writer.queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise PermanentError(f"tar: {item}") from item
            yield item
    finally:
        writer.cancelled.set()
        thread.join(timeout=10)


def _walk(root: Path, warnings: list[str]) -> Iterator[Path]:
    """`root`, then everything below it; `root` is followed if it is a symlink to a folder,
    symlinks below it are not."""

    def unreadable(exc: OSError) -> None:
        if isinstance(exc, FileNotFoundError):  # a folder that vanished after its listing
            warnings.append(f"{exc.filename}: vanished before it was read (skipped)")
            return
        raise exc  # an unreadable folder fails the backup rather than going missing from it

    yield root
    if root.is_dir():
        for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                yield Path(dirpath) / name


# --- Prometheus ------------------------------------------------------------------------------


def dump_prometheus(
    target: PrometheusTsdbTarget, storage: Storage, backup_id: str, settings: BackupSettings
) -> Dumped:
    """A TSDB snapshot (POST /api/v1/admin/tsdb/snapshot), its folder archived like a files
    target (members relative to the snapshot: the restored folder is a TSDB data dir), the
    snapshot removed afterwards whatever happened (a removal that fails is a warning)."""
    timeout = target.timeout.total_seconds()
    with step(BackupStep.CONNECT), TsdbAdmin(target.url, target.headers, timeout) as admin:
        version = admin.version()
        with step(BackupStep.SNAPSHOT):
            name = admin.snapshot(skip_head=target.skip_head)
    folder = snapshot_folder(target.data_dir, name)
    warnings: list[str] = []
    try:
        if not folder.is_dir():
            with step(BackupStep.SNAPSHOT):
                raise PermanentError(
                    f"target {target.name}: Prometheus took snapshot {name} but {folder} is not "
                    "here: data_dir must be its --storage.tsdb.path as this machine sees it"
                )
        artifact, stats, checksums = store_tar(
            target,
            storage,
            backup_id,
            settings,
            lambda stats, checksums: stream_tar(
                [folder], [], stats, warnings, checksums, relative_to=folder
            ),
            None if target.allow_empty else "the snapshot has no blocks",
        )
    finally:
        try:
            remove_snapshot(target.data_dir, name)
        except OSError as exc:
            warnings.append(f"snapshot {folder} could not be removed: {exc.strerror or exc}")
    blocks = sorted({c["path"].split("/", 1)[0] for c in checksums if "/" in c["path"]})
    source = {
        "url": redact_url(target.url),
        "prometheus_version": version,
        "data_dir": str(target.data_dir),
        "snapshot": name,
        "skip_head": target.skip_head,
        "blocks": blocks,
    }
    tool = {"prometheus": f"prometheus {version or '?'} tsdb snapshot"}
    return tar_dumped(target, artifact, source, tool, (stats, checksums, warnings))


# --- Kubernetes objects --------------------------------------------------------------------


def export_objects(target: KubernetesObjectsTarget, config: Config, folder: Path) -> list[str]:
    """Write each object as <namespace>/<Kind>/<name>.yaml below `folder`, stripped for
    apply (runbook/systems/kubernetes_objects.py); returns the warnings (a listed Secret
    found in none of the namespaces). Secrets' data goes to the files only, never to a message."""
    # Lazy: the kubernetes client costs ~1 s to import, paid only by these targets' backups.
    from runbook.systems.kubernetes_objects import (  # noqa: PLC0415
        ObjectReader,
        exportable,
        made_by_the_cluster,
    )

    cluster = next(t for t in config.targets.kubernetes if t.name == target.cluster)
    secrets_found: set[str] = set()
    with step(BackupStep.CONNECT), ObjectReader.connect(cluster) as reader:
        for namespace in target.namespaces:
            found = [o for kind in target.kinds for o in reader.objects(kind, namespace)]
            for name in target.secrets:
                secret = reader.secret(namespace, name)
                if secret is not None:
                    found.append(secret)
                    secrets_found.add(name)
            for obj in found:
                if made_by_the_cluster(obj):
                    continue
                path = folder / namespace / obj["kind"] / f"{obj['metadata']['name']}.yaml"
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                text = yaml.safe_dump(exportable(obj), sort_keys=False, allow_unicode=True)
                path.write_text(text)
                path.chmod(0o600)
    namespaces = ", ".join(target.namespaces)
    return [
        f"Secret {name} exists in none of the namespaces {namespaces} (not backed up)"
        for name in target.secrets
        if name not in secrets_found
    ]


def dump_kubernetes(
    target: KubernetesObjectsTarget,
    storage: Storage,
    backup_id: str,
    settings: BackupSettings,
    config: Config,
) -> Dumped:
    """The configured kinds (and listed Secrets) of the configured namespaces as a tar of
    YAML files, one per object, with a sha256 each (restored like a files target)."""
    folder = Path(tempfile.mkdtemp(prefix=f"runbook-k8s-{target.name}-"))  # mode 0700
    try:
        warnings = export_objects(target, config, folder)
        artifact, stats, checksums = store_tar(
            target,
            storage,
            backup_id,
            settings,
            lambda stats, checksums: stream_tar(
                [folder], [], stats, warnings, checksums, relative_to=folder
            ),
            f"no objects in namespaces {', '.join(target.namespaces)}",
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    objects = [c["path"].removesuffix(".yaml").split("/", 2) for c in checksums]
    source = {
        "cluster": target.cluster,
        "namespaces": list(target.namespaces),
        "kinds": list(target.kinds),
        "objects": [{"namespace": n, "kind": k, "name": name} for n, k, name in objects],
    }
    tool = {"kubernetes": f"kubernetes python client {package_version('kubernetes')}"}
    return tar_dumped(target, artifact, source, tool, (stats, checksums, warnings))


# --- one backup of one target --------------------------------------------------------------

DUMPERS: dict[type, Callable[..., Dumped]] = {
    PostgresTarget: dump_postgres,
    RedisTarget: dump_redis,
    FilesTarget: dump_files,
    PrometheusTsdbTarget: dump_prometheus,
    KubernetesObjectsTarget: dump_kubernetes,
}


def create_backup(
    target: TargetConfig,
    storage: Storage,
    backup_id: str,
    settings: BackupSettings,
    started_at: datetime,
    pin: Pin | None = None,
    config: Config | None = None,
) -> Manifest:
    """Write every artifact, then the manifest (the commit marker, which carries `pin`'s
    label and keep_until); `config` is needed by a Kubernetes objects target (its cluster's
    connection is another target). On any failure, remove
    what this attempt stored and re-raise: the exception names the step it failed in
    (`failed_step`), `dump` unless a step inside named another."""
    try:
        with step(BackupStep.DUMP):
            dumper = DUMPERS[type(target)]
            if isinstance(target, KubernetesObjectsTarget):  # reached through another target
                if config is None:
                    raise PermanentError(f"target {target.name}: its cluster needs the config")
                dumper = partial(dump_kubernetes, config=config)
            dumped = dumper(target, storage, backup_id, settings)
        with step(BackupStep.MANIFEST):
            manifest = Manifest(
                backup_id=backup_id,
                target=target.name,
                kind=TARGET_KIND[type(target)],
                started_at=started_at,
                finished_at=utcnow(),
                artifacts=dumped.artifacts,
                source=dumped.source,
                timings=dumped.timings,
                tools={"runbook": __version__, **dumped.tools},
                warnings=dumped.warnings,
                label=pin.label if pin else None,
                keep_until=pin.keep_until if pin else None,
            )
            storage.put_bytes(manifest_key(target.name, backup_id), manifest.to_json())
        return manifest
    except BaseException as exc:
        # The first cause is what failed the backup: a cleanup that fails too (storage is
        # still down) must not replace it. Garbage collection removes the leftovers later.
        try:
            discard_objects(storage, target.name, backup_id)
        except Exception as cleanup:  # noqa: BLE001 - logged, and noted on the first cause
            log.warning(
                "backup %s of %s: could not remove what it stored: %s",
                backup_id,
                target.name,
                cleanup,
            )
            exc.add_note(f"cleanup after the failure failed too: {cleanup}")
        raise


def discard_objects(storage: Storage, target: str, backup_id: str) -> int:
    """Delete every object of one backup, manifest first (so it stops existing at once)."""
    keys = [info.key for info in storage.list(backup_prefix(target, backup_id))]
    keys.sort(key=lambda k: not k.endswith("/manifest.json"))
    removed = 0
    for key in keys:
        try:
            storage.delete(key)
            removed += 1
        except Exception as exc:  # noqa: BLE001 - cleanup is best effort, GC retries later
            log.warning("could not delete %s: %s", key, exc)
    return removed


@dataclass
class BackupOutcome:
    record: BackupRecord
    manifest: Manifest | None
    lock_wait_seconds: float = 0.0


def run_backup(
    config: Config,
    target: TargetConfig,
    catalog: Catalog,
    storage: Storage,
    backup_id: str,
    *,
    flow_run_id: str | None = None,
    pin: Pin | None = None,
) -> BackupOutcome:
    """Record the attempt, take the target's lock, create the backup, record the outcome;
    `pin` is the backup's label and the moment retention keeps it until (runbook.pins).

    A lock held by another run for longer than `backup.lock_timeout` ends as status
    `locked`. Other failures are recorded as `failed` with the step they failed in, and
    re-raised so the caller can decide whether to retry (TransientError) or not.
    """
    started_at = utcnow()
    catalog.start(
        backup_id,
        target=target.name,
        kind=TARGET_KIND[type(target)],
        storage=storage.describe(),
        started_at=started_at,
        flow_run_id=flow_run_id,
        pin=pin,
    )
    try:
        with named_lock(
            config.catalog, backup_lock(target.name), config.backup.lock_timeout.total_seconds()
        ) as waited:
            manifest = create_backup(
                target, storage, backup_id, config.backup, started_at, pin, config
            )
    except LockTimeout as exc:
        error = f"another backup of target {target.name!r} is running: {exc}"
        return BackupOutcome(catalog.mark_locked(backup_id, error), None)
    except BaseException as exc:
        error = (
            stop_reason(exc)
            or redact(f"{type(exc).__name__}: {exc}", target_secrets(target))[:4000]
        )
        # create_backup names the step it failed in; what else fails here is the lock
        catalog.mark_failed(backup_id, failed_step(exc, BackupStep.LOCK), error)
        raise
    return BackupOutcome(catalog.mark_stored(backup_id, manifest), manifest, waited)
