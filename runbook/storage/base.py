"""The storage contract every backend honours (local folder, S3).

Keys are relative, '/'-separated paths without empty, '.' or '..' segments.

- `put(key, chunks)`: consume the iterator and store its bytes under `key`, atomically: readers
  see either the previous object or the complete new one, never a part. If the iterator raises
  (a dump died) or the backend fails, nothing new is visible under `key` and the exception
  propagates. Returns the stored object's info.
- `get(key)`: an iterator over the stored bytes. Raises `ObjectNotFound` at call time when the
  key does not exist.
- `stat(key)`: size and modification time; `ObjectNotFound` when absent.
- `list(prefix)`: every complete object whose key starts with `prefix`, sorted by key.
- `delete(key)`: remove the object; deleting an absent key is not an error.
- `cleanup_incomplete(older_than)`: remove leftovers of puts that never finished (temp files,
  multipart uploads) started before `older_than`; returns how many were removed.

Errors: `ObjectNotFound` for a missing key, `TransientStorageError` for faults worth retrying
(5xx, timeouts, connection refused), `StorageFull` for a full disk or quota (never retried),
`StorageError` for the rest (access denied, no bucket).
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from runbook.errors import TransientError

CHUNK_SIZE = 1024 * 1024


class StorageError(Exception):
    """A storage operation failed and retrying will not help."""


class TransientStorageError(StorageError, TransientError):
    """A storage operation failed in a way that may succeed when retried."""


class StorageFull(StorageError):
    """The storage has no room left (ENOSPC, quota): someone must free space first."""


class ObjectNotFound(StorageError):
    def __init__(self, key: str):
        super().__init__(f"object {key!r} does not exist")
        self.key = key


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime


_BAD_SEGMENT = re.compile(r"(^|/)(\.{1,2})?(/|$)")


def check_key(key: str) -> str:
    if not key or key.startswith("/") or _BAD_SEGMENT.search(key) or "\\" in key or "\0" in key:
        raise ValueError(f"invalid storage key {key!r}")
    return key


class Storage(abc.ABC):
    """See the module docstring for the contract of each method."""

    @abc.abstractmethod
    def put(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo: ...

    @abc.abstractmethod
    def get(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]: ...

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo: ...

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    @abc.abstractmethod
    def delete(self, key: str) -> None: ...

    @abc.abstractmethod
    def cleanup_incomplete(self, older_than: datetime) -> int: ...

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the objects live, for messages (never contains credentials)."""

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        return self.put(key, [data])

    def get_bytes(self, key: str) -> bytes:
        """Only for small objects such as manifests."""
        return b"".join(self.get(key))

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and thread pools."""
