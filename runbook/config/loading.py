"""Reading runbook.yaml: find the file, parse the YAML, expand `${VAR}`s, validate into a
Config with errors that name the field, and resolve relative paths against the file's folder.

The YAML is composed into nodes and checked before any Python value is built: a key given
twice is refused with both lines (YAML would keep the last one silently), and aliases that
would expand past `MAX_YAML_VALUES` values (an alias bomb) are refused before they expand.
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
# A complete runbook.yaml holds hundreds of values; aliases may not multiply that past this.
MAX_YAML_VALUES = 100_000
_MERGE_TAG = "tag:yaml.org,2002:merge"
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
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{file}: config file not found (pass --config FILE or set ${CONFIG_ENV}; "
            "runbook.example.yaml is a complete example)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read config file: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{file}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at line {line}); "
            "save the file as UTF-8"
        ) from None
    return parse_config(text, source=file, unset=unset)


def parse_config(text: str, source: Path | None = None, unset: list[str] | None = None) -> Config:
    label = str(source) if source else "config"
    try:
        data = _read_yaml(text, label)
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


def _read_yaml(text: str, label: str) -> Any:
    """The YAML document as Python values, after refusing alias bombs and duplicate keys."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise ConfigError(f"{label}: the YAML is nested too deeply") from None
        if node is None:
            return None
        _refuse_alias_bomb(node, label)
        _refuse_duplicate_keys(node, label)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _refuse_alias_bomb(root: yaml.Node, label: str) -> None:
    """Count the values the document would hold once its aliases are expanded, without
    expanding them (each node is sized once and an alias reuses its size)."""
    sizes: dict[int, int] = {}
    over = MAX_YAML_VALUES + 1

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        sizes[id(node)] = over  # reached again while being sized: it contains itself
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children: list[yaml.Node] = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > MAX_YAML_VALUES:
                break
        sizes[id(node)] = min(total, over)
        return sizes[id(node)]

    try:
        too_big = size(root) > MAX_YAML_VALUES
    except RecursionError:
        raise ConfigError(f"{label}: the YAML is nested too deeply") from None
    if too_big:
        raise ConfigError(
            f"{label}: its YAML aliases (*name) would expand to more than "
            f"{MAX_YAML_VALUES:,} values (an alias bomb, or an alias that contains itself); "
            "refused before expanding them: use fewer aliases"
        )


def _refuse_duplicate_keys(root: yaml.Node, label: str) -> None:
    """A key given twice in one mapping is an error naming both lines (`<<` merges may still
    override merged keys, as YAML intends)."""
    seen_nodes: set[int] = set()
    pending: list[tuple[yaml.Node, str]] = [(root, "")]
    while pending:
        node, path = pending.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            pending.extend((child, f"{path}[{i}]") for i, child in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            lines: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE_TAG:
                    line = key.start_mark.line + 1
                    first = lines.get((key.tag, key.value))
                    if first is not None:
                        where = f"{path}: " if path else ""
                        raise ConfigError(
                            f"{label}: {where}{key.value!r} is given twice, at line {first} "
                            f"and line {line}; keep one (YAML would silently use the last)"
                        )
                    lines[(key.tag, key.value)] = line
                    pending.append((value, _join(path, str(key.value))))
                else:
                    pending.append((value, path))


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
    m = config.maintenance
    maintenance = m.model_copy(  # log folders and a command's working folder
        update={
            "log_archive": m.log_archive.model_copy(
                update={"paths": [absolute(p) for p in m.log_archive.paths]}
            ),
            "command": m.command.model_copy(
                update={
                    "steps": [s.model_copy(update={"cwd": maybe(s.cwd)}) for s in m.command.steps]
                }
            ),
        }
    )
    resolved = config.model_copy(
        update={
            "storage": storage,
            "catalog": catalog,
            "targets": targets,
            "drills": drills,
            "maintenance": maintenance,
        }
    )
    resolved._source = source
    return resolved
