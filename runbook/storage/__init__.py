"""One streaming storage interface with a local-folder and an S3 backend (see base.py)."""

from __future__ import annotations

from runbook import config as cfg
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
from runbook.storage.local import LocalStorage

__all__ = [
    "CHUNK_SIZE",
    "ObjectInfo",
    "ObjectNotFound",
    "Storage",
    "StorageError",
    "StorageFull",
    "TransientStorageError",
    "check_key",
    "open_storage",
]


def open_storage(settings: cfg.LocalStorage | cfg.S3Storage) -> Storage:
    """The backend the config's `storage:` section describes."""
    if isinstance(settings, cfg.LocalStorage):
        return LocalStorage(settings.path)
    from runbook.storage.s3 import S3Storage  # noqa: PLC0415 - boto3 costs ~0.5 s to import

    return S3Storage(settings)
