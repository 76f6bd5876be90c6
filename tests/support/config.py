"""Writing runbook.yaml files for tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml


@pytest.fixture
def write_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """write_config(targets={...}, **sections) -> path of a runbook.yaml in tmp_path with
    local storage, a SQLite catalog and fast retries unless overridden. The file written last
    is $RUNBOOK_CONFIG, where flows read their config (as on a worker)."""

    def write(targets: dict[str, Any] | None = None, **sections: Any) -> Path:
        data: dict[str, Any] = {
            "catalog": "sqlite:///catalog.db",
            "storage": {"kind": "local", "path": "backups"},
            "backup": {"retries": 2, "retry_delay": "0.1s", "lock_timeout": "30s"},
        }
        for key, value in sections.items():
            if key != "storage" and isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        data["targets"] = targets or {}
        path = tmp_path / "runbook.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        monkeypatch.setenv("RUNBOOK_CONFIG", str(path))
        return path

    return write
