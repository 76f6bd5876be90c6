"""The config, catalog and storage a run works with, opened once per process and config file.

Flows and tasks take the config file's path as a parameter (never the config itself: flow
parameters are stored by Prefect, and the config holds secrets) and call `open_runtime`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from runbook.catalog import Catalog
from runbook.config import Config, load_config, resolve_config_path
from runbook.storage import Storage, open_storage


@dataclass
class Runtime:
    config: Config
    catalog: Catalog
    storage: Storage

    def close(self) -> None:
        self.storage.close()
        self.catalog.close()


_lock = threading.Lock()
_cache: dict[tuple[str, float], Runtime] = {}


def open_runtime(config_path: str | Path | None = None) -> Runtime:
    """Load the config and open its catalog (migrated) and storage; cached per process until
    the file changes."""
    path = resolve_config_path(config_path).resolve()
    try:
        stamp = path.stat().st_mtime
    except OSError:
        stamp = 0.0
    key = (str(path), stamp)
    with _lock:
        runtime = _cache.get(key)
        if runtime is None:
            config = load_config(path)
            runtime = Runtime(config, Catalog(config.catalog), open_storage(config.storage))
            _cache[key] = runtime
        return runtime


def runtime_for(config: Config) -> Runtime:
    """A runtime for an already loaded config (tests, the demo)."""
    return Runtime(config, Catalog(config.catalog), open_storage(config.storage))
