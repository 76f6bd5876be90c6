"""A local folder (or a mounted NFS/SMB share): the object with key K lives at `<root>/K`.

put writes `.<name>.tmp-<random>` in the target folder, fsyncs it, renames it over the final
name and fsyncs the folder, so a crash leaves the old object or the new one, plus at worst a
temp file that `cleanup_incomplete` removes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from runbook.storage.base import (
    CHUNK_SIZE,
    ObjectInfo,
    ObjectNotFound,
    Storage,
    StorageError,
    StorageFull,
    TransientStorageError,
    check_key,
)

TEMP_MARK = ".tmp-"
# Errors a retry can cure: a share that hiccuped. A full disk is not one of them: nothing
# frees space between two attempts a few seconds apart, so retrying only repeats the write.
_TRANSIENT_ERRNOS = {errno.EIO, errno.EAGAIN, errno.ETIMEDOUT, errno.ESTALE}
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def _storage_error(exc: OSError, what: str, root: Path | None = None) -> StorageError:
    reason = exc.strerror or str(exc)
    if exc.errno in _FULL_ERRNOS:
        where = f"the storage at {root}" if root is not None else "the storage"
        return StorageFull(
            f"{what}: {reason} ({where} is full: free space or delete old backups; "
            "a retry will not help)"
        )
    cls = TransientStorageError if exc.errno in _TRANSIENT_ERRNOS else StorageError
    return cls(f"{what}: {reason}")


def _is_temp(name: str) -> bool:
    return name.startswith(".") and TEMP_MARK in name


class LocalStorage(Storage):
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def describe(self) -> str:
        return f"local:{self.root}"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        final = self._path(key)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _storage_error(exc, f"cannot create {final.parent}", self.root) from None
        temp = final.with_name(f".{final.name}{TEMP_MARK}{secrets.token_hex(6)}")
        fd = -1
        try:
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            except OSError as exc:
                raise _storage_error(exc, f"cannot write {key}", self.root) from None
            size = 0
            flusher = _Flusher(fd)
            try:
                # Outside the OSError mapping: the iterator's own errors (an OSError from a
                # dying dump too) must propagate unchanged.
                for chunk in chunks:
                    _write_all(fd, chunk, key, self.root)
                    size += len(chunk)
                    flusher.written(len(chunk))
            finally:
                flusher.stop()
            try:
                os.fsync(fd)
                os.close(fd)
                fd = -1
                os.replace(temp, final)
                _fsync_dir(final.parent)
            except OSError as exc:
                raise _storage_error(exc, f"cannot write {key}", self.root) from None
        finally:
            # Only reached with an open fd or a temp file when the put failed: cleaning up
            # must not replace that error (on NFS, close() itself may report ENOSPC).
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
        return ObjectInfo(key=key, size=size, modified=_mtime(final))

    def get(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        path = self._path(key)
        try:
            handle = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by the generator
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            # 'a/b' when 'a' is an object, or 'a' when only 'a/b' is: no such object either.
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise _storage_error(exc, f"cannot read {key}") from None
        return _read_chunks(handle, chunk_size, key)

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        if not path.is_file():
            raise ObjectNotFound(key)
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            return iter(())
        found = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for name in filenames:
                if _is_temp(name):
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    st = full.stat()
                    found.append(
                        ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))
                    )
        return iter(sorted(found, key=lambda info: info.key))

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _storage_error(exc, f"cannot delete {key}") from None
        # Drop folders the deletion left empty, up to the root.
        parent = path.parent
        while parent != self.root and parent.is_relative_to(self.root):
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def cleanup_incomplete(self, older_than: datetime) -> int:
        if not self.root.is_dir():
            return 0
        removed = 0
        cutoff = older_than.timestamp()
        for dirpath, _dirs, filenames in os.walk(self.root):
            for name in filenames:
                full = Path(dirpath) / name
                if _is_temp(name) and full.stat().st_mtime < cutoff:
                    full.unlink(missing_ok=True)
                    removed += 1
        return removed


def _write_all(fd: int, chunk: bytes, key: str, root: Path) -> None:
    view = memoryview(chunk)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        raise _storage_error(exc, f"cannot write {key}", root) from None


def _read_chunks(handle, chunk_size: int, key: str) -> Iterator[bytes]:
    with handle:
        while True:
            try:
                chunk = handle.read(chunk_size)
            except OSError as exc:
                raise _storage_error(exc, f"cannot read {key}") from None
            if not chunk:
                return
            yield chunk


class _Flusher:
    """Writes dirty pages back in a background thread every FLUSH_BYTES, so the fsync that
    commits the object at the end has little left to do (a large dump otherwise pays for the
    whole file's writeback at the very end)."""

    FLUSH_BYTES = 32 * 1024 * 1024

    def __init__(self, fd: int):
        self.fd = fd
        self.pending = 0
        self.thread: threading.Thread | None = None
        self.wake = threading.Event()
        self.stopping = False

    def written(self, count: int) -> None:
        self.pending += count
        if self.pending < self.FLUSH_BYTES:
            return
        self.pending = 0
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, daemon=True, name="flush")
            self.thread.start()
        self.wake.set()

    def _run(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            if self.stopping:
                return
            try:
                os.fdatasync(self.fd)
            except OSError:
                return  # the final fsync reports any real error

    def stop(self) -> None:
        if self.thread is not None:
            self.stopping = True
            self.wake.set()
            self.thread.join()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)
