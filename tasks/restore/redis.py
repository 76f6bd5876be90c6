"""Restoring a Redis backup: the verified RDB written to a folder with the steps to load it
into the operator's own server, or loaded into a running server (`--into redis://...`, or
the target's `restore.server`).

Loading goes the way a drill does (tasks/drills/redis.py): the RDB is loaded by a throwaway
redis-server, and from there every key is copied into the destination with DUMP/RESTORE
(TTLs kept), so the destination keeps running and needs no access to its disk. Validation
compares the keys per database of the result with the backup's INFO figures.

The destination is refused when it is the backup's source server (same address, or the same
run_id: another name for the same process) unless --replace-source, and when it holds keys
unless --clean; both flush it (FLUSHALL) before loading, after confirmation.
"""

from __future__ import annotations

import os
import shutil
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import SecretStr

from runbook.catalog import RestoreCheck
from runbook.config import RedisTarget
from runbook.errors import RunbookError
from runbook.secrets import describe_url
from runbook.systems.redis import (
    copy_keys,
    flush_all,
    redis_facts,
    scratch_redis,
    server_run_id,
)
from tasks.drills.redis import compare_key_counts, restored_key_counts
from tasks.restore.plan import DestinationFacts


def is_server_url(into: str) -> bool:
    return into.startswith(("redis://", "rediss://"))


def destination_url(target: RedisTarget, into: str) -> str:
    """The server (or folder) a Redis restore goes to: `into`, else the target's
    restore.server; RunbookError when neither is given."""
    if into:
        return into
    if target.restore.server is not None:
        return target.restore.server.get_secret_value()
    raise RunbookError(
        "--into is required: a folder to write the RDB to, or redis://host:port of a server "
        f"to load it into (or set targets.redis[{target.name}].restore.server)"
    )


def _probe(url: str, timeout: float = 10) -> RedisTarget:
    return RedisTarget(name="restore", url=SecretStr(url), timeout=timedelta(seconds=timeout))


def _addresses(host: str, port: int) -> set[tuple[str, int]]:
    try:
        found = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError:
        return {(host, port)}
    return {(info[4][0], port) for info in found}


def same_server(source: RedisTarget, url: str) -> bool:
    """Whether `url` reaches the source server of the target: by address (host names
    resolved), or by run_id when both answer (one process behind two names)."""
    ours, theirs = urlsplit(source.url.get_secret_value()), urlsplit(url)
    if _addresses(ours.hostname or "localhost", ours.port or 6379) & _addresses(
        theirs.hostname or "localhost", theirs.port or 6379
    ):
        return True
    try:
        source_id = server_run_id(_probe(source.url.get_secret_value(), 5))
    except Exception:  # noqa: BLE001 - the source may be the very thing that is down
        return False
    return source_id is not None and source_id == server_run_id(_probe(url))


def describe_keys(keys: dict[str, int]) -> str:
    """'db0: 25 keys, db5: 1 key' ("" when none)."""
    return ", ".join(f"{db}: {n} key{'s' if n != 1 else ''}" for db, n in keys.items())


def rdb_name(target: str, backup_id: str) -> str:
    return f"{target}-{backup_id}-dump.rdb"


def redis_destination(target: RedisTarget, into: str, backup_id: str) -> DestinationFacts:
    """The facts `plan_restore` needs: a server (reachable, what it holds, is it the source)
    or a folder (the RDB file must not exist there yet)."""
    url = destination_url(target, into)
    if not is_server_url(url):
        folder = Path(url)
        if folder.exists() and not folder.is_dir():
            raise RunbookError(f"--into {folder} is a file, not a folder")
        existing = folder / rdb_name(target.name, backup_id)
        return DestinationFacts(
            kind="redis",
            where=str(folder),
            exists=folder.exists(),
            contents=f"{existing.name} exists" if existing.exists() else "",
        )
    try:
        keys = redis_facts(_probe(url)).get("keys_per_db", {})
        is_source = same_server(target, url)
    except RunbookError:
        raise
    except Exception as exc:  # noqa: BLE001 - an unreachable --into is the operator's to fix
        raise RunbookError(
            f"cannot reach the --into server {describe_url(url)}: {type(exc).__name__}: {exc}"
        ) from None
    return DestinationFacts(
        kind="redis",
        where=describe_url(url),
        exists=True,
        contents=describe_keys(keys),
        is_source=is_source,
    )


def url_with_password(into: str, password: str | None) -> str:
    """A redis:// URL with `password` put in when it names none (from
    $RUNBOOK_RESTORE_PASSWORD: the CLI keeps passwords out of flow parameters)."""
    parts = urlsplit(into)
    if not password or parts.password is not None:
        return into
    user = unquote(parts.username) if parts.username else ""
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def split_url_password(url: str) -> tuple[str, str | None]:
    """A redis:// URL without its password, and the password (None when it has none)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url, None
    netloc = f"{parts.username}@" if parts.username else ""
    netloc += parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), unquote(
        parts.password
    )


def url_secrets(target: RedisTarget, into: str) -> list[str | None]:
    """What a Redis restore's messages must never show: --into's password, the configured
    restore server's URL and password."""
    found: list[str | None] = [urlsplit(into).password] if is_server_url(into) else []
    if target.restore.server is not None:
        raw = target.restore.server.get_secret_value()
        found += [raw, urlsplit(raw).password]
    return found


# --- the restore step ------------------------------------------------------------------------


def write_rdb(rdb: Path, folder: Path, target: str, backup_id: str) -> Path:
    """Move the verified RDB into `folder` (atomically: a `.part` renamed when complete)."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / rdb_name(target, backup_id)
    if final.exists():
        raise RunbookError(f"{final} already exists: remove it or choose another --into")
    part = final.with_name(final.name + ".part")
    shutil.move(str(rdb), part)
    os.replace(part, final)
    return final


def operator_steps(rdb: Path, source: dict[str, Any]) -> list[str]:
    """What a person does with the RDB on their own server, in order."""
    expected = describe_keys(source.get("keys_per_db", {})) or "no keys"
    version = source.get("redis_version") or "the backup's"
    return [
        f"Use a redis-server of version {version} or newer (an RDB does not load into an "
        "older one).",
        "Find where it loads from: `redis-cli CONFIG GET dir` and `CONFIG GET dbfilename`; if "
        "`CONFIG GET appendonly` says yes, start it with `--appendonly no` for this load (an "
        "AOF is loaded instead of the RDB), then `CONFIG SET appendonly yes` once it runs.",
        "Stop the server without saving over the file: `redis-cli SHUTDOWN NOSAVE` (or stop "
        "its service / container).",
        f"Copy {rdb} to <dir>/<dbfilename>, owned by the user redis-server runs as (e.g. "
        f"`install -o redis -g redis -m 0640 {rdb} /var/lib/redis/dump.rdb`).",
        "Start the server and wait for `redis-cli PING` to answer PONG (it loads the RDB first).",
        f"Check `redis-cli INFO keyspace` against the backup: {expected} (keys with a TTL "
        "may have expired since).",
    ]


def load_into_server(
    rdb: Path, workdir: Path, url: str, *, flush: bool
) -> tuple[dict[str, int], str]:
    """Load the RDB into a throwaway redis-server, then copy every key into the server at
    `url` (FLUSHALL first when `flush`); returns the keys copied per database and what was
    done, one line."""
    destination = _probe(url, 60)
    with scratch_redis(rdb, workdir) as port:
        if flush:
            flush_all(destination)
        copied = copy_keys(_probe(f"redis://127.0.0.1:{port}/0", 60), destination)
    flushed = "FLUSHALL, then " if flush else ""
    where, per_db = describe_url(url), describe_keys(copied) or "none"
    return copied, f"{flushed}copied {sum(copied.values())} keys into {where} ({per_db})"


# --- validation ------------------------------------------------------------------------------


def validate_server(url: str, source: dict[str, Any]) -> list[RestoreCheck]:
    """Keys per database of the destination against the backup's INFO figures."""
    keys = redis_facts(_probe(url, 60)).get("keys_per_db", {})
    return [RestoreCheck(**c.model_dump()) for c in compare_key_counts(source, keys)]


def validate_rdb(rdb: Path, workdir: Path, source: dict[str, Any]) -> list[RestoreCheck]:
    """The written RDB loaded into a throwaway redis-server (a link or copy of it: the file
    stays where it was written), its keys per database against the backup's figures. Empty
    when this machine has no redis-server: only the checksum was verified (the caller says so
    in the next steps)."""
    if shutil.which("redis-server") is None:
        return []
    probe = workdir / "check.rdb"
    try:
        os.link(rdb, probe)
    except OSError:  # another file system
        shutil.copyfile(rdb, probe)
    keys = restored_key_counts(probe, workdir / "check")
    return [RestoreCheck(**c.model_dump()) for c in compare_key_counts(source, keys)]


NOT_CHECKED = (
    "redis-server is not installed where the restore ran: the RDB's sha256 matched the "
    "manifest, but its keys were not counted; check them after loading it (the last step)"
)
