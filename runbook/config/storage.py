"""Where backups are stored: a local folder or an S3 bucket."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from runbook.config.core import Duration, Model


class LocalStorage(Model):
    kind: Literal["local"]
    path: Path


class S3Storage(Model):
    kind: Literal["s3"]
    bucket: str = Field(min_length=3)
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    sse: Literal["AES256", "aws:kms"] | None = None
    sse_kms_key_id: str | None = None
    part_size_mb: int = Field(default=16, ge=5, le=5120)
    max_concurrency: int = Field(default=4, ge=1, le=32)
    max_attempts: int = Field(default=5, ge=1, le=20, description="botocore attempts per request")
    timeout: Duration = timedelta(seconds=60)

    @field_validator("prefix")
    @classmethod
    def _prefix_without_slashes(cls, value: str) -> str:
        return value.strip("/")

    @model_validator(mode="after")
    def _kms_needs_sse(self) -> S3Storage:
        if self.sse_kms_key_id and self.sse != "aws:kms":
            raise ValueError("sse_kms_key_id is set but sse is not 'aws:kms'")
        return self


Storage = Annotated[LocalStorage | S3Storage, Field(discriminator="kind")]

_CREDENTIAL_FIELDS = ("access_key_id", "secret_access_key", "session_token")


class ResultStorage(Model):
    """`result_storage:`: where Prefect keeps the flows' results (by default the local
    PREFECT_HOME/storage of whichever process ran the flow, which a Kubernetes pod loses).
    Names the bucket like `storage.kind: s3`; the credentials never appear here: the flows use
    the default AWS credential chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the worker's
    environment or the pod's Secret, or a role)."""

    kind: Literal["s3"]
    bucket: str = Field(min_length=3)
    prefix: str = "prefect-results"
    endpoint_url: str | None = None
    region: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_credentials(cls, data: object) -> object:
        if isinstance(data, dict):
            for name in _CREDENTIAL_FIELDS:
                if name in data:
                    raise ValueError(
                        f"{name}: result_storage takes no credentials (they would be stored in "
                        "Prefect's block on the server); set AWS_ACCESS_KEY_ID and "
                        "AWS_SECRET_ACCESS_KEY where the flows run (the Secret runbook-secrets on "
                        "Kubernetes) or give them a role"
                    )
        return data

    @field_validator("prefix")
    @classmethod
    def _prefix_without_slashes(cls, value: str) -> str:
        return value.strip("/")

    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")
