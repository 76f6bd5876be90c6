"""A Kubernetes objects backup applied into a cluster (`--into k8s://CLUSTER`) with server-side
apply through the official client (runbook/systems/kubernetes_objects.py).

- `load_objects`: every manifest of the backup's tar (<namespace>/<Kind>/<name>.yaml), read
  from the verified download without extracting it (Secrets never land on disk as files).
- `select_objects`: the kinds asked for, moved to the namespaces asked for (`--namespace
  SRC=DST`, or `--namespace DST` for a one-namespace backup); an unknown namespace or kind is
  the operator's mistake (RestoreRefused, nothing touched).
- `plan_objects`: per object, the server's dry run (dryRun=All) against what is live:
  created, changed (the top-level fields that differ), unchanged, or a conflict.
- `apply_objects` and `compare_objects`: the apply, then every object read back and compared
  with the backup (every field it holds, as the server stores it).
Secrets appear by name only: no value of theirs is in a change, a check, a log line or an
error (an error about one is scrubbed of its values).
"""

from __future__ import annotations

import base64
import json
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from runbook.catalog import RestoreCheck
from runbook.config import Config, KubernetesObjectsTarget, KubernetesTarget
from runbook.errors import NotFoundError, RunbookError
from runbook.secrets import redact
from tasks.restore.plan import DestinationFacts, ObjectChange, RestoreRefused, RestoreRequest

SCHEME = "k8s://"


def is_cluster(into: str) -> bool:
    return into.startswith(SCHEME)


def cluster_of(config: Config, target: KubernetesObjectsTarget, into: str) -> KubernetesTarget:
    """The targets.kubernetes entry `--into k8s://NAME` names (NotFoundError otherwise)."""
    name = into.removeprefix(SCHEME).strip("/")
    clusters = {t.name: t for t in config.targets.kubernetes}
    if name not in clusters:
        known = ", ".join(clusters) or "none configured"
        raise NotFoundError(
            f"--into {into}: no kubernetes target {name!r} (targets.kubernetes: {known}; the "
            f"backup's own cluster is k8s://{target.cluster})"
        )
    return clusters[name]


# --- the backup's objects --------------------------------------------------------------------


def load_objects(archive: Path) -> list[dict[str, Any]]:
    """Every object of a Kubernetes objects backup's tar, in archive order."""
    objects = []
    with tarfile.open(archive) as tar:
        for member in tar:
            if not member.isfile() or not member.name.endswith(".yaml"):
                continue
            handle = tar.extractfile(member)
            assert handle is not None  # a regular file
            obj = yaml.safe_load(handle.read())
            if not isinstance(obj, dict) or not {"kind", "apiVersion", "metadata"} <= set(obj):
                raise RunbookError(f"{member.name} in the backup is not a Kubernetes object")
            objects.append(obj)
    return objects


def namespace_map(request: RestoreRequest, held: list[str]) -> dict[str, str]:
    """source namespace -> destination namespace; RestoreRefused naming a value that does not
    fit the backup."""
    mapping = {namespace: namespace for namespace in held}
    for spec in request.namespaces:
        source, sep, dest = spec.partition("=")
        if not sep:
            if len(held) != 1:
                raise RestoreRefused(
                    f"--namespace {spec}: the backup holds {len(held)} namespaces "
                    f"({', '.join(held)}); say which goes where: --namespace SOURCE={spec}"
                )
            source, dest = held[0], spec
        source, dest = source.strip(), dest.strip()
        if source not in held:
            raise RestoreRefused(
                f"--namespace {spec}: the backup holds no namespace {source!r} (it holds "
                f"{', '.join(held) or 'none'}); nothing was applied"
            )
        if not dest:
            raise RestoreRefused(f"--namespace {spec}: no destination namespace after '='")
        mapping[source] = dest
    return mapping


def select_objects(objects: list[dict[str, Any]], request: RestoreRequest) -> list[dict[str, Any]]:
    """The objects of the kinds asked for, in the namespaces they go to."""
    held_namespaces = sorted({o["metadata"]["namespace"] for o in objects})
    held_kinds = sorted({o["kind"] for o in objects})
    for kind in request.kinds:
        if kind not in held_kinds:
            raise RestoreRefused(
                f"--kind {kind}: the backup holds no {kind} objects (it holds "
                f"{', '.join(held_kinds)}); nothing was applied"
            )
    mapping = namespace_map(request, held_namespaces)
    chosen = []
    for obj in objects:
        if request.kinds and obj["kind"] not in request.kinds:
            continue
        moved = json.loads(json.dumps(obj))
        moved["metadata"]["namespace"] = mapping[obj["metadata"]["namespace"]]
        chosen.append(moved)
    return chosen


def label(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{obj['kind']} {meta['namespace']}/{meta['name']}"


def secret_values(objects: Iterable[dict[str, Any]]) -> list[str]:
    """Every value of the Secrets among `objects`, encoded and decoded: what no text shows."""
    values: list[str] = []
    for obj in objects:
        if obj.get("kind") != "Secret":
            continue
        for key in ("data", "stringData"):
            for value in (obj.get(key) or {}).values():
                text = str(value)
                values.append(text)
                if key == "data":
                    try:
                        values.append(base64.b64decode(text).decode())
                    except (ValueError, UnicodeDecodeError):
                        pass
    return [v for v in values if len(v) >= 3]


# --- what an apply changes --------------------------------------------------------------------


def _comparable(obj: dict[str, Any] | None) -> dict[str, Any]:
    """The fields an apply can change, by top-level name (metadata split into its parts; the
    metadata the API server sets is no difference a backup can make)."""
    from runbook.systems.kubernetes_objects import SERVER_METADATA  # noqa: PLC0415 - lazy client

    if obj is None:
        return {}
    out = {
        key: value
        for key, value in obj.items()
        if key not in ("apiVersion", "kind", "metadata", "status")
    }
    meta = obj.get("metadata") or {}
    for key, value in meta.items():
        if key not in SERVER_METADATA and key not in ("name", "namespace"):
            out[f"metadata.{key}"] = value
    return out


def changed_fields(before: dict[str, Any] | None, after: dict[str, Any]) -> list[str]:
    """The top-level fields (metadata.labels, spec, data, ...) that differ."""
    old, new = _comparable(before), _comparable(after)
    return sorted(
        key
        for key in set(old) | set(new)
        if json.dumps(old.get(key), sort_keys=True) != json.dumps(new.get(key), sort_keys=True)
    )


def _subset(wanted: Any, found: Any) -> bool:
    """Whether `found` holds every field of `wanted` with the same value (maps may hold more:
    the server's defaults)."""
    if isinstance(wanted, dict):
        return isinstance(found, dict) and all(
            k in found and _subset(v, found[k]) for k, v in wanted.items()
        )
    return wanted == found


def _error(exc: Exception, secrets: list[str]) -> str:
    return redact(str(exc), secrets)[:500]


def _conflict_detail(message: str) -> str:
    """The managers and fields of a 409 Conflict, without the leading 'HTTP 409 ...:'."""
    return message.split(": ", 1)[-1].replace("\n", "; ")


def plan_objects(reader: Any, objects: list[dict[str, Any]], force: bool) -> list[ObjectChange]:
    """Per object, what the apply would do, from the API server's dry run: nothing stored."""
    from runbook.systems.kubernetes import KubernetesApiError  # noqa: PLC0415 - lazy client

    secrets = secret_values(objects)
    changes = []
    for obj in objects:
        meta = obj["metadata"]
        live = reader.read(obj["kind"], meta["namespace"], meta["name"])
        try:
            would = reader.apply(obj, force=force, dry_run=True)
        except KubernetesApiError as exc:
            if exc.status != 409:
                raise RunbookError(f"{label(obj)}: {_error(exc, secrets)}") from None
            detail = _conflict_detail(_error(exc, secrets))
            changes.append(
                ObjectChange(obj["kind"], meta["namespace"], meta["name"], "conflict", (), detail)
            )
            continue
        if live is None:
            change = ObjectChange(obj["kind"], meta["namespace"], meta["name"], "created")
        else:
            fields = tuple(changed_fields(live, would))
            kind = "changed" if fields else "unchanged"
            change = ObjectChange(obj["kind"], meta["namespace"], meta["name"], kind, fields)
        changes.append(change)
    return changes


def missing_namespaces(reader: Any, objects: list[dict[str, Any]]) -> list[str]:
    """The destination namespaces the cluster does not have."""
    from runbook.systems.kubernetes import KubernetesApiError  # noqa: PLC0415 - lazy client

    missing = []
    for namespace in sorted({o["metadata"]["namespace"] for o in objects}):
        try:
            reader.namespace(namespace)
        except KubernetesApiError as exc:
            if exc.status != 404:
                raise
            missing.append(namespace)
    return missing


@dataclass(frozen=True)
class ClusterDestination:
    cluster: KubernetesTarget
    objects: list[dict[str, Any]]  # chosen and moved to their destination namespaces


def connect(cluster: KubernetesTarget) -> Any:
    from runbook.systems.kubernetes_objects import ObjectReader  # noqa: PLC0415 - lazy client

    return ObjectReader.connect(cluster)


def kubernetes_destination(
    config: Config,
    target: KubernetesObjectsTarget,
    request: RestoreRequest,
    objects: list[dict[str, Any]],
) -> DestinationFacts:
    """The cluster as it is now for these objects: refused when a destination namespace
    does not exist; else each object's change per the server's dry run."""
    cluster = cluster_of(config, target, request.into)
    chosen = select_objects(objects, request)
    where = f"{SCHEME}{cluster.name}"
    with connect(cluster) as reader:
        missing = missing_namespaces(reader, chosen)
        if missing:
            raise RestoreRefused(
                f"namespace {missing[0]!r} does not exist in cluster {cluster.name!r}: create "
                f"it first (kubectl create namespace {missing[0]}) or map it elsewhere with "
                "--namespace SOURCE=DEST; nothing was applied"
            )
        changes = plan_objects(reader, chosen, request.force_conflicts)
    namespaces = ", ".join(sorted({o["metadata"]["namespace"] for o in chosen}))
    live = sum(1 for c in changes if c.change != "created")
    return DestinationFacts(
        kind="kubernetes",
        where=f"{where} (namespaces {namespaces})",
        exists=True,
        contents=f"{live} of {len(changes)} objects exist" if live else "",
        changes=tuple(changes),
    )


def apply_objects(
    cluster: KubernetesTarget, objects: list[dict[str, Any]], force: bool
) -> tuple[list[RestoreCheck], list[dict[str, Any]]]:
    """Apply every object (server-side, field manager runbook); a check each: created,
    changed (fields), unchanged or the API's error (scrubbed). Returns the checks and the
    objects as the server stored them."""
    secrets = secret_values(objects)
    checks, stored = [], []
    with connect(cluster) as reader:
        for obj in objects:
            meta = obj["metadata"]
            name = f"apply {label(obj)}"
            try:
                before = reader.read(obj["kind"], meta["namespace"], meta["name"])
                after = reader.apply(obj, force=force, dry_run=False)
            except Exception as exc:  # noqa: BLE001 - one object's failure is its check
                checks.append(RestoreCheck(name=name, ok=False, detail=_error(exc, secrets)))
                continue
            stored.append(after)
            if before is None:
                detail = "created"
            else:
                fields = changed_fields(before, after)
                detail = f"changed: {', '.join(fields)}" if fields else "unchanged"
            checks.append(RestoreCheck(name=name, ok=True, detail=detail))
    return checks, stored


def compare_objects(cluster: KubernetesTarget, objects: list[dict[str, Any]]) -> list[RestoreCheck]:
    """Read every object back: it must hold every field of the backup with its value."""
    secrets = secret_values(objects)
    checks = []
    with connect(cluster) as reader:
        for obj in objects:
            meta = obj["metadata"]
            name = f"object {label(obj)}"
            try:
                live = reader.read(obj["kind"], meta["namespace"], meta["name"])
            except Exception as exc:  # noqa: BLE001 - a read that fails is this check's verdict
                checks.append(RestoreCheck(name=name, ok=False, detail=_error(exc, secrets)))
                continue
            if live is None:
                checks.append(RestoreCheck(name=name, ok=False, detail="not found after apply"))
                continue
            wanted, found = _comparable(obj), _comparable(live)
            differ = sorted(k for k, v in wanted.items() if not _subset(v, found.get(k)))
            detail = (
                f"differs from the backup in {', '.join(differ)}" if differ else "as in the backup"
            )
            checks.append(RestoreCheck(name=name, ok=not differ, detail=detail))
    return checks


def cluster_steps(where: str, source: dict[str, Any]) -> list[str]:
    """What a person checks after the objects were applied."""
    kinds = ",".join(k.lower() for k in source.get("kinds") or []) or "all"
    return [
        f"The objects were applied into {where} with field manager 'runbook'; controllers now "
        f"act on them (Deployments roll out): watch `kubectl get {kinds} -A`.",
        "Objects owned by controllers (ReplicaSets, Pods, Endpoints) are not in the backup: "
        "their owners recreate them.",
    ]
