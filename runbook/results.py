"""Prefect results on S3: the block every flow run persists its results in when runbook.yaml
has `result_storage:`.

Prefect keeps a flow's result (`persist_result=True`) in its default result storage, which is
the local PREFECT_HOME/storage of the process that ran the flow unless the setting
PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK names a saved block. A Kubernetes pod's disk goes with
the pod, so `runbook deploy` saves the block `runbook-s3-results/runbook-results` on the server
and puts that setting in every deployment's environment.

prefect-aws (S3Bucket) and s3fs (RemoteFileSystem) both need aiobotocore, which pins a
botocore older than the project's; this block writes through Runbook's own S3 storage
(boto3, retries, error messages without credentials). It holds no credentials: the process
that runs the flow uses the default AWS credential chain (AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY in its environment, ~/.aws, or a role), so the block document on the
server has nothing secret in it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import anyio.to_thread
from prefect.filesystems import WritableFileSystem
from prefect.settings import PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK, temporary_settings
from pydantic import Field, PrivateAttr

from runbook import config as cfg

BLOCK_TYPE_SLUG = "runbook-s3-results"
BLOCK_NAME = "runbook-results"
BLOCK_SLUG = f"{BLOCK_TYPE_SLUG}/{BLOCK_NAME}"
SETTING = "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"


class RunbookS3Results(WritableFileSystem):
    """Prefect results as objects under s3://bucket/prefix/ (credentials from the
    environment of the process that runs the flow, never stored in the block)."""

    _block_type_name = "Runbook S3 results"
    _block_type_slug = BLOCK_TYPE_SLUG
    _description = (
        "Runbook's Prefect result storage on S3 or an S3-compatible service; credentials come "
        "from the default AWS credential chain of the process that runs the flow."
    )

    bucket: str = Field(description="The bucket.")
    prefix: str = Field(default="", description="The key prefix of the results.")
    endpoint_url: str | None = Field(default=None, description="An S3-compatible endpoint.")
    region: str | None = Field(default=None, description="The bucket's region.")
    _opened: Any = PrivateAttr(default=None)

    def _storage(self) -> Any:
        if self._opened is None:
            from runbook.storage.s3 import S3Storage  # noqa: PLC0415 - boto3 is slow to import

            self._opened = S3Storage(
                cfg.S3Storage(
                    kind="s3",
                    bucket=self.bucket,
                    prefix=self.prefix,
                    endpoint_url=self.endpoint_url,
                    region=self.region,
                )
            )
        return self._opened

    def _url(self, path: str) -> str:
        return "/".join(p for p in (f"s3://{self.bucket}", self.prefix, path) if p)

    # Prefect calls aread_path/awrite_path from async code and read_path/write_path with
    # _sync=True from sync code (prefect._internal.compatibility.blocks).
    def read_path(self, path: str, _sync: bool | None = None) -> bytes:
        return self._storage().get_bytes(path)

    def write_path(self, path: str, content: bytes, _sync: bool | None = None) -> str:
        self._storage().put_bytes(path, content)
        return self._url(path)

    async def aread_path(self, path: str) -> bytes:
        return await anyio.to_thread.run_sync(self._storage().get_bytes, path)

    async def awrite_path(self, path: str, content: bytes) -> str:
        await anyio.to_thread.run_sync(self._storage().put_bytes, path, content)
        return self._url(path)


def block_for(settings: cfg.ResultStorage) -> RunbookS3Results:
    return RunbookS3Results(
        bucket=settings.bucket,
        prefix=settings.prefix,
        endpoint_url=settings.endpoint_url,
        region=settings.region,
    )


def save_block(settings: cfg.ResultStorage) -> str:
    """Create or update the block on the server of PREFECT_API_URL (type, schema and
    document); its slug, for PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK."""
    block_for(settings).save(BLOCK_NAME, overwrite=True)
    return BLOCK_SLUG


def result_env(config: cfg.Config) -> dict[str, str]:
    """The environment that makes a flow run persist its results where the config says
    (empty: Prefect's local default)."""
    return {SETTING: BLOCK_SLUG} if config.result_storage is not None else {}


@contextlib.contextmanager
def result_storage_of(config: cfg.Config | None) -> Iterator[None]:
    """For flows run in this process: save the block on the current server and make it the
    default result storage while the context lasts (nothing when the config has none)."""
    if config is None or config.result_storage is None:
        yield
        return
    slug = save_block(config.result_storage)
    with temporary_settings(updates={PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK: slug}):
        yield
