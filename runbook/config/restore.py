"""Restores: the steps a target's restore runs before and after it (`targets.*.restore`):
HTTP calls (maintenance mode on and off) and commands (runbook 004's `docker-compose stop` /
`start`), in order; the post steps always run, also when the restore failed."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from runbook.config.core import Duration, Model
from runbook.config.maintenance import HttpCall


class RestoreHook(Model):
    """One step around a restore: `command` (an argument list, never a shell) or `http`."""

    name: str | None = Field(default=None, description="shown in the restore's hooks")
    command: list[str] | None = Field(default=None, min_length=1)
    http: HttpCall | None = None
    timeout: Duration = timedelta(minutes=5)
    env: dict[str, SecretStr] = Field(default_factory=dict, description="added to the command's")
    cwd: Path | None = None

    @model_validator(mode="after")
    def _one_of(self) -> RestoreHook:
        if (self.command is None) == (self.http is None):
            raise ValueError("a restore hook is either `command: [...]` or `http: {...}`")
        return self


class RestoreSettings(Model):
    pre: list[RestoreHook] = Field(
        default_factory=list, description="before the restore, in order; one failing stops it"
    )
    post: list[RestoreHook] = Field(
        default_factory=list, description="after the restore, in order, always"
    )
    jobs: int = Field(default=2, ge=1, le=64, description="pg_restore parallel jobs")


class RedisRestoreSettings(RestoreSettings):
    """A Redis target's restore: its hooks, and the server a restore loads the RDB into
    when `--into` is not given (never the target's own server unless --replace-source)."""

    server: SecretStr | None = Field(
        default=None,
        description="redis://[user:password@]host:port of the server `runbook restore` loads "
        "the RDB into by default (e.g. a standby); empty: --into is required",
    )

    @field_validator("server")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parts = urlsplit(value.get_secret_value())
            if parts.scheme not in ("redis", "rediss") or not parts.hostname:
                raise ValueError("expected redis://[user:password@]host:port or rediss://...")
        return value
