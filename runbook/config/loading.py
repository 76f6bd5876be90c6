"""Reading runbook.yaml: find the file, parse the YAML, expand `${VAR}`s, validate into a
Config with errors that name the field, and resolve relative paths against the file's folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from runbook.config.root import Config
from runbook.config.storage import LocalStorage
from runbook.errors import ConfigError

DEFAULT_CONFIG = "runbook.yaml"
CONFIG_ENV = "RUNBOOK_CONFIG"

_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: Any, path: str, unset: list[str] | None = None) -> Any:
    """Expand ${VAR} references. An unset variable without a default is an error, unless
    `unset` collects its name (check-config on a machine without the flows' secrets): then it
    expands to an empty string."""
    if isinstance(value, dict):
        return {k: _expand(v, _join(path, str(k)), unset) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{path}[{i}]", unset) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        if unset is not None:
            unset.append(name)
            return ""
        raise ConfigError(f"{path or '<root>'}: environment variable {name} is not set")

    return _ENV_REF.sub(substitute, value)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _loc_to_path(loc: tuple[Any, ...], data: Any) -> str:
    """('targets','postgres',0,'dsn') -> 'targets.postgres[0].dsn'; drops union tags."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        if isinstance(node, dict) and part not in node and part in ("local", "s3"):
            continue  # discriminator tag inserted by pydantic, not a key of the file
        out = _join(out, str(part))
        node = node.get(part) if isinstance(node, dict) else None
    return out or "<root>"


def format_validation_error(error: ValidationError, data: Any) -> str:
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        message = item["msg"]
        if item["type"] == "string_pattern_mismatch" and item["loc"][-1] == "name":
            message = (
                "use lowercase letters, digits, '-' and '_' (at most 63, starting alphanumeric)"
            )
        elif item["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; see runbook.example.yaml)"
        elif item["type"] == "missing":
            message = "field required"
        message = message.removeprefix("Value error, ")
        path = _loc_to_path(tuple(item["loc"]), data)
        if message.startswith(("targets.", "storage.")) and ": " in message:
            problems.append(message)  # model validators already name the field
        else:
            problems.append(f"{path}: {message}")
    return "; ".join(problems)


def resolve_config_path(path: str | Path | None) -> Path:
    return Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def load_config(path: str | Path | None = None, unset: list[str] | None = None) -> Config:
    """Read, expand and validate a config file. Raises ConfigError naming the field at fault.
    With `unset` (a list), unset ${VAR}s are collected there instead of failing."""
    file = resolve_config_path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{file}: config file not found (pass --config FILE or set ${CONFIG_ENV}; "
            "runbook.example.yaml is a complete example)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read config file: {exc.strerror}") from None
    return parse_config(text, source=file, unset=unset)


def parse_config(text: str, source: Path | None = None, unset: list[str] | None = None) -> Config:
    label = str(source) if source else "config"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{label}: {problem}{where}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{label}: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        data = _expand(data, "", unset)
    except ConfigError as exc:
        raise ConfigError(f"{label}: {exc}") from None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = format_validation_error(exc, data)
        if unset:
            problems += f" (with {', '.join(sorted(set(unset)))} unset, read as empty)"
        raise ConfigError(f"{label}: {problems}") from None
    if source is not None:
        config = _resolve_paths(config, source.resolve())
    return config


def _resolve_paths(config: Config, source: Path) -> Config:
    base = source.parent

    def absolute(path: Path) -> Path:
        path = path.expanduser()
        return path if path.is_absolute() else base / path

    storage = config.storage
    if isinstance(storage, LocalStorage):
        storage = storage.model_copy(update={"path": absolute(storage.path)})
    catalog = config.catalog
    if catalog.startswith("sqlite:///") and not catalog.startswith("sqlite:////"):
        relative = catalog.removeprefix("sqlite:///")
        if relative and relative != ":memory:":
            catalog = f"sqlite:///{absolute(Path(relative))}"

    def maybe(path: Path | None) -> Path | None:
        return absolute(path) if path is not None else None

    t = config.targets
    targets = t.model_copy(
        update={
            "files": [
                f.model_copy(update={"paths": [absolute(p) for p in f.paths]}) for f in t.files
            ],
            "logs": [  # globs too: a relative pattern is relative to the config file
                g.model_copy(update={"paths": [str(absolute(Path(p))) for p in g.paths]})
                for g in t.logs
            ],
            "postgres": [p.model_copy(update={"bin_dir": maybe(p.bin_dir)}) for p in t.postgres],
            "http": [h.model_copy(update={"ca_file": maybe(h.ca_file)}) for h in t.http],
            "kubernetes": [
                k.model_copy(update={"kubeconfig": maybe(k.kubeconfig)}) for k in t.kubernetes
            ],
        }
    )
    drills = config.drills.model_copy(update={"data_docs": maybe(config.drills.data_docs)})
    resolved = config.model_copy(
        update={"storage": storage, "catalog": catalog, "targets": targets, "drills": drills}
    )
    resolved._source = source
    return resolved
