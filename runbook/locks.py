"""One backup per target at a time, across processes and machines that share a catalog; the
same per-target locks keep DR drills and maintenance windows apart (their names are here).

With a PostgreSQL catalog the lock is a session advisory lock in the catalog database; with a
SQLite catalog it is an flock on a file beside the catalog. Both vanish with the process that
held them, so a killed backup can never wedge later runs (unlike a leaked concurrency slot).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

POLL_SECONDS = 0.2


def backup_lock(target: str) -> str:
    """The lock a backup of `target` holds (one backup per target at a time)."""
    return f"backup-{target}"


def drill_lock(target: str) -> str:
    """The lock a DR drill of `target` holds."""
    return f"drill-{target}"


def maintenance_locks(target: str) -> tuple[str, ...]:
    """The locks a maintenance window holds on `target`, in the order it takes them: its own
    (one window per target) and those of its backups and drills (never beside either)."""
    return (f"maintenance-{target}", backup_lock(target), drill_lock(target))


class LockTimeout(Exception):
    """Another run held the lock for longer than we were willing to wait."""

    def __init__(self, name: str, waited: float):
        super().__init__(
            f"another run holds the lock {name!r}; gave up after waiting {waited:.0f}s"
        )
        self.name = name
        self.waited = waited


def _lock_id(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock."""
    return int.from_bytes(
        hashlib.sha256(f"runbook:{name}".encode()).digest()[:8], "big", signed=True
    )


@contextmanager
def named_lock(catalog_url: str, name: str, timeout: float) -> Iterator[float]:
    """Hold the lock `name` for the block; yields the seconds spent waiting for it."""
    if catalog_url.startswith(("postgresql://", "postgresql+psycopg://")):
        with _advisory_lock(catalog_url, name, timeout) as waited:
            yield waited
    else:
        with _file_lock(_lock_dir(catalog_url), name, timeout) as waited:
            yield waited


def lock_is_held(catalog_url: str, name: str) -> bool:
    """Whether some process holds the lock `name` right now; takes nothing and waits for
    nothing. Retention asks it: a running backup whose lock is free was abandoned (its process
    died, and the lock died with it), however young or old it is."""
    if catalog_url.startswith(("postgresql://", "postgresql+psycopg://")):
        return _advisory_lock_held(catalog_url, name)
    return _file_lock_held(_lock_dir(catalog_url), name)


def _file_lock_held(folder: Path, name: str) -> bool:
    try:
        fd = os.open(folder / f"{name}.lock", os.O_RDONLY)
    except FileNotFoundError:
        return False  # never taken on this machine
    try:
        # A shared lock conflicts only with the exclusive one a holder has; released at once.
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _advisory_lock_held(catalog_url: str, name: str) -> bool:
    # pg_locks shows a bigint advisory key as classid (high 32 bits), objid (low), objsubid 1.
    key = _lock_id(name) & 0xFFFFFFFFFFFFFFFF
    dsn = catalog_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn, autocommit=True, application_name="runbook-lock-probe") as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = 1)",
            (key >> 32, key & 0xFFFFFFFF),
        ).fetchone()
    return bool(row[0])


def _lock_dir(catalog_url: str) -> Path:
    path = catalog_url.removeprefix("sqlite:///")
    if not path or path == ":memory:":
        return Path.cwd() / ".runbook" / "locks"
    return Path(path).parent / "locks"


@contextmanager
def _file_lock(folder: Path, name: str, timeout: float) -> Iterator[float]:
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o640)
    start = time.monotonic()
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                if waited >= timeout:
                    raise LockTimeout(name, waited) from None
                time.sleep(min(POLL_SECONDS, max(0.0, timeout - waited)))
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield time.monotonic() - start
    finally:
        os.close(fd)  # closing releases the flock


@contextmanager
def _advisory_lock(catalog_url: str, name: str, timeout: float) -> Iterator[float]:
    dsn = catalog_url.replace("postgresql+psycopg://", "postgresql://", 1)
    key = _lock_id(name)
    start = time.monotonic()
    with psycopg.connect(dsn, autocommit=True, application_name="runbook-lock") as conn:
        while not conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
            waited = time.monotonic() - start
            if waited >= timeout:
                raise LockTimeout(name, waited)
            time.sleep(min(POLL_SECONDS, max(0.0, timeout - waited)))
        try:
            yield time.monotonic() - start
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
