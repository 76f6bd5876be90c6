"""What a restore will do, decided before it does anything (DESIGN: a plan, then an apply).

`plan_restore(request, facts)` is pure: from the operator's request and the facts about the
destination (does it exist, what does it hold, is it the backup's source) it returns the
actions with their reasons, and what a person must confirm first, or refuses (RestoreRefused,
exit 2, nothing touched). `require_confirmation` refuses a plan that needs a confirmation it
did not get. The CLI prints the plan and asks; the flow re-plans with the same function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from runbook.errors import RunbookError

Overwrite = Literal["no", "clean", "replace-source", "in-place"]
OVERWRITES: tuple[str, ...] = ("no", "clean", "replace-source", "in-place")


class RestoreRefused(RunbookError):
    """The restore would touch what it must not (the source, a non-empty destination, the
    original paths) without the flag and the confirmation that allow it."""


@dataclass(frozen=True)
class RestoreRequest:
    """What the operator asked for (the CLI's options, the flow's parameters)."""

    target: str
    into: str  # a PostgreSQL DSN, or a folder for a files target ("" with in-place)
    backup: str = "latest"
    schema: str | None = None
    overwrite: Overwrite = "no"
    confirmed: bool = False  # --yes, or the operator answered the prompt
    jobs: int | None = None  # pg_restore jobs; None: the target's restore.jobs
    # Kubernetes objects applied into a cluster (--into k8s://CLUSTER)
    namespaces: tuple[str, ...] = ()  # "SRC=DST" remaps, or one "DST" for a one-namespace backup
    kinds: tuple[str, ...] = ()  # only these kinds (default: every kind the backup holds)
    force_conflicts: bool = False  # take over fields other field managers own


@dataclass(frozen=True)
class ObjectChange:
    """What applying one object of a Kubernetes objects backup does, as the API server's
    dry run answered: created, changed (which top-level fields differ), unchanged, or a
    conflict with another field manager (names only: never a value, Secrets' included)."""

    kind: str
    namespace: str
    name: str
    change: Literal["created", "changed", "unchanged", "conflict"]
    fields: tuple[str, ...] = ()  # changed: the top-level fields that differ
    detail: str = ""  # conflict: the managers and fields; no value

    @property
    def label(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    def describe(self) -> str:
        if self.change == "changed":
            return f"change {self.label} ({', '.join(self.fields)})"
        if self.change == "created":
            return f"create {self.label}"
        if self.change == "conflict":
            return f"conflict {self.label}: {self.detail}"
        return f"unchanged {self.label}"

    def as_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "change": self.change,
            "fields": list(self.fields),
            "detail": self.detail,
        }


@dataclass(frozen=True)
class DestinationFacts:
    """What the destination is now, as measured just before planning."""

    kind: Literal["postgres", "files", "redis", "kubernetes"]
    where: str  # user@host:port/db, redis://host:port or a folder: no secret
    exists: bool
    contents: str = ""  # what it holds ("14 relations in shop, public"); "" when empty
    is_source: bool = False  # PostgreSQL: the database the backup was taken from
    original_paths: bool = False  # files: the restore would write over the backed-up paths
    backup_id: str = ""
    hooks: tuple[list[str], list[str]] = ([], [])  # (pre, post) step names
    changes: tuple[ObjectChange, ...] = ()  # kubernetes: each object, per the server's dry run


@dataclass(frozen=True)
class RestorePlan:
    actions: list[str]
    confirm: list[str] = field(default_factory=list)  # why a person must say yes first


def plan_restore(request: RestoreRequest, facts: DestinationFacts) -> RestorePlan:
    """The actions of the restore, and what needs confirmation; RestoreRefused when the
    request may not run at all."""
    _refuse(request, facts)
    confirm = []
    if request.overwrite == "replace-source":
        holds = f" (it holds {facts.contents})" if facts.contents else ""
        confirm.append(
            f"this REPLACES the source database {facts.where} of target {request.target!r} "
            f"with backup {facts.backup_id}{holds}"
        )
    elif request.overwrite == "clean" and facts.contents and facts.kind == "redis":
        confirm.append(
            f"{facts.where} is not empty ({facts.contents}): FLUSHALL deletes every key there "
            "before the backup is loaded"
        )
    elif request.overwrite == "clean" and facts.contents:
        confirm.append(
            f"{facts.where} is not empty ({facts.contents}): what the backup holds is dropped "
            "there and recreated"
        )
    elif facts.kind == "kubernetes" and (changed := _changed(facts)):
        shown = ", ".join(c.describe().removeprefix("change ") for c in changed[:10])
        more = f" and {len(changed) - 10} more" if len(changed) > 10 else ""
        confirm.append(
            f"{len(changed)} live object(s) in {facts.where} are changed in place: {shown}{more}"
        )
    elif request.overwrite == "in-place":
        confirm.append(
            f"the files of backup {facts.backup_id} are written over their original paths "
            f"({facts.where})"
        )
    pre, post = facts.hooks
    actions = [f"pre-restore step: {name}" for name in pre]
    actions += _restore_actions(request, facts)
    actions += [f"post-restore step (always): {name}" for name in post]
    return RestorePlan(actions=actions, confirm=confirm)


def _changed(facts: DestinationFacts) -> list[ObjectChange]:
    return [c for c in facts.changes if c.change == "changed"]


def _refuse_kubernetes(request: RestoreRequest, facts: DestinationFacts) -> None:
    if request.overwrite != "no":
        raise RestoreRefused(
            f"--{request.overwrite} is not for Kubernetes objects: server-side apply changes "
            "only the fields the backup holds (see the plan with --dry-run)"
        )
    if request.schema:
        raise RestoreRefused("--schema is for PostgreSQL targets")
    conflicts = [c for c in facts.changes if c.change == "conflict"]
    if conflicts and not request.force_conflicts:
        shown = "; ".join(f"{c.label}: {c.detail}" for c in conflicts[:5])
        raise RestoreRefused(
            f"{len(conflicts)} object(s) conflict with other field managers ({shown}): pass "
            "--force-conflicts to take those fields over (nothing was applied)"
        )


def _refuse(request: RestoreRequest, facts: DestinationFacts) -> None:
    if facts.kind != "kubernetes" and (request.namespaces or request.kinds):
        raise RestoreRefused(
            "--namespace and --kind are for Kubernetes objects applied into a cluster "
            "(--into k8s://CLUSTER)"
        )
    if facts.kind == "kubernetes":
        _refuse_kubernetes(request, facts)
        return
    if facts.kind == "redis":
        _refuse_redis(request, facts)
        return
    if facts.kind == "postgres":
        if request.overwrite == "in-place":
            raise RestoreRefused("--in-place is for files targets; give --into DSN")
        if facts.is_source and request.overwrite != "replace-source":
            raise RestoreRefused(
                f"{facts.where} is the source database of target {request.target!r}: a restore "
                "never writes into it unless --replace-source is given (and confirmed); "
                "restore into a new database instead"
            )
        if facts.contents and request.overwrite == "no":
            raise RestoreRefused(
                f"database {facts.where} is not empty ({facts.contents}): restore into a new "
                "or empty database, or pass --clean to drop and recreate what the backup holds"
            )
        return
    if request.overwrite == "replace-source":
        raise RestoreRefused("--replace-source is for PostgreSQL targets (files: --in-place)")
    if request.schema:
        raise RestoreRefused("--schema is for PostgreSQL targets")
    if facts.original_paths and request.overwrite != "in-place":
        raise RestoreRefused(
            f"{facts.where} would put the files over their original paths: a files restore "
            "never does that unless --in-place is given (and confirmed); choose another folder"
        )
    if facts.contents and request.overwrite == "no":
        raise RestoreRefused(
            f"folder {facts.where} is not empty ({facts.contents}): restore into a new or "
            "empty folder, or pass --clean to replace the files the backup holds"
        )


def _refuse_redis(request: RestoreRequest, facts: DestinationFacts) -> None:
    if request.overwrite == "in-place":
        raise RestoreRefused("--in-place is for files targets; give --into DIR or redis://")
    if request.schema:
        raise RestoreRefused("--schema is for PostgreSQL targets")
    if not facts.where.startswith(("redis://", "rediss://")):  # a folder for the RDB
        if request.overwrite != "no":
            raise RestoreRefused(
                f"--{request.overwrite} is for loading into a server (--into redis://...); "
                "a folder only receives the RDB file"
            )
        if facts.contents:
            raise RestoreRefused(
                f"{facts.where}: {facts.contents}: remove it or choose another --into"
            )
        return
    if facts.is_source and request.overwrite != "replace-source":
        raise RestoreRefused(
            f"{facts.where} is the source server of target {request.target!r}: a restore never "
            "loads into it unless --replace-source is given (and confirmed); load into "
            "another server, or give --into DIR for the RDB file"
        )
    if facts.contents and request.overwrite == "no":
        raise RestoreRefused(
            f"server {facts.where} is not empty ({facts.contents}): load into an empty server, "
            "or pass --clean to FLUSHALL it first"
        )


def _redis_actions(request: RestoreRequest, facts: DestinationFacts) -> list[str]:
    verify = f"verify backup {facts.backup_id} from storage while downloading it"
    if not facts.where.startswith(("redis://", "rediss://")):
        return [
            verify,
            f"write the RDB into {facts.where}",
            "load a copy into a throwaway redis-server and compare keys per database with "
            "the manifest",
            "print the steps to load it into your server",
        ]
    flush = request.overwrite in ("clean", "replace-source") and facts.contents
    return [
        verify,
        "load it into a throwaway redis-server",
        *([f"FLUSHALL {facts.where}"] if flush else []),
        f"copy every key into {facts.where} (DUMP/RESTORE, TTLs kept)",
        "validate keys per database against the manifest",
    ]


def _restore_actions(request: RestoreRequest, facts: DestinationFacts) -> list[str]:
    if facts.kind == "kubernetes":
        force = " --force-conflicts" if request.force_conflicts else ""
        counts = {
            change: sum(1 for c in facts.changes if c.change == change)
            for change in ("created", "changed", "unchanged", "conflict")
        }
        summary = ", ".join(f"{n} {change}" for change, n in counts.items() if n)
        return [
            f"verify backup {facts.backup_id} from storage while downloading it",
            f"server-side apply (field manager runbook{force}) into {facts.where}: {summary}",
            *[f"  {c.describe()}" for c in facts.changes],
            "read every object back and compare it with the backup",
        ]
    if facts.kind == "redis":
        return _redis_actions(request, facts)
    if facts.kind == "files":
        return [
            f"verify backup {facts.backup_id} from storage while downloading it",
            f"extract it into {facts.where} (modes, times, symlinks as links; members that "
            "would land outside refused)",
            "check every file against the sha256 recorded at backup time",
        ]
    actions = [f"verify backup {facts.backup_id} from storage while downloading it"]
    if not facts.exists:
        actions.append(f"create database {facts.where}")
    flags = " --clean --if-exists" if request.overwrite in ("clean", "replace-source") else ""
    only = f" -n {request.schema}" if request.schema else ""
    actions.append(f"pg_restore --exit-on-error -j N{flags}{only} into {facts.where}")
    actions.append("validate against the manifest: row counts, schema, sequences, pg_amcheck")
    return actions


def require_confirmation(plan: RestorePlan, request: RestoreRequest) -> None:
    """Refuse a plan that needs a confirmation the request does not carry."""
    if plan.confirm and not request.confirmed:
        raise RestoreRefused(
            f"confirmation needed: {'; '.join(plan.confirm)}; pass --yes (or answer the prompt "
            "in a terminal; from the Prefect UI set confirm)"
        )
