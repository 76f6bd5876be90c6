"""DR drills: where a target's drills restore (`targets.postgres[].drill`) and the `drills`
section shared by every drill."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from runbook.config.core import Model


class DrillServer(Model):
    """Where DR drills restore: a throwaway embedded PostgreSQL (default) or a team server."""

    server: Literal["embedded"] | None = "embedded"
    dsn: SecretStr | None = None
    jobs: int = Field(default=2, ge=1, le=64)

    @model_validator(mode="after")
    def _one_of(self) -> DrillServer:
        if self.dsn is not None:
            object.__setattr__(self, "server", None)
        return self


class DrillSettings(Model):
    """Settings shared by every DR drill (per-target ones sit in targets.*.drill)."""

    data_docs: Path | None = Field(
        default=None,
        description="keep Great Expectations Data Docs here, one folder per drill "
        "(<data_docs>/<drill id>/index.html); the GX result itself is always kept in the catalog",
    )
