"""The `diagnostics` section: what an incident's diagnostics bundle collects, how long and how
much each section may take, the HTTP debug endpoints to fetch, where bundles are stored and
how long they are kept, and whether a health run that turns critical starts one."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, SecretStr, field_validator

from runbook.config.core import Duration, Model, Name


class DebugEndpoint(Model):
    """An application's debug endpoint (runbook 000: /api/v1/debug/performance)."""

    name: Name
    url: str
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    timeout: Duration = timedelta(seconds=10)
    verify_tls: bool = True

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected http://host[:port]/path or https://...")
        return value


class DiagnosticsSettings(Model):
    section_timeout: Duration = Field(
        default=timedelta(seconds=30), description="hard deadline of one section"
    )
    section_bytes: int = Field(
        default=1_000_000, ge=10_000, description="largest section kept (bytes, before zstd)"
    )
    log_lines: int = Field(default=100, ge=1, le=10_000, description="log tail per container")
    long_query: Duration = Field(
        default=timedelta(minutes=1), description="a PostgreSQL query running this long is long"
    )
    processes: int = Field(default=10, ge=1, le=100, description="top processes by memory/CPU")
    endpoints: list[DebugEndpoint] = Field(default_factory=list)
    prefix: str = Field(
        default="_diagnostics",  # never a target name: backups live under <target>/
        pattern=r"^_[A-Za-z0-9_.-]+$",
        description="storage key prefix of the bundles",
    )
    keep_last: int = Field(default=20, ge=1, description="bundles always kept, newest first")
    keep_days: int = Field(default=30, ge=0, description="bundles younger than this are kept")
    on_critical: bool = Field(
        default=False,
        description="a health run that turns critical starts a bundle (once per episode)",
    )
    compression_level: int = Field(default=6, ge=1, le=19)
