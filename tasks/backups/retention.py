"""Retention planning as a pure function (modelled on restic's ApplyPolicy).

`plan_retention` decides keep/delete for every backup of every target, with a reason each, and
`plan_garbage` decides import/delete/keep for every backup folder in storage the catalog does
not track; both do no I/O. Applying is a separate step that acts on a plan and has no dry-run
mode of its own: a dry run is the plan, not applied (see flows/retention.py).

Rules, per target, by recorded time (finished_at, else started_at), never by name or id:

1. Only "verified" backups fill the policy buckets. Walking them newest first, keep_last keeps
   the N newest; daily/weekly/monthly/yearly keep the newest backup of each of the N most
   recent days/ISO weeks/months/years *that have a verified backup* (restic semantics), with
   periods computed in the configured timezone.
2. The newest verified backup is always kept, whatever the policy says.
3. A verified backup in no bucket is deleted.
4. Other statuses are judged by age against `policy.grace`: kept while their age is at most
   grace, deleted once strictly older. "deleting" rows are always deleted (resume the deletion).
5. A running backup is abandoned only when no process holds its target's backup lock (the
   lock dies with its process): while one does, it is kept whatever its age; once the lock is
   free, it is deleted when older than grace. (A candidate whose lock was not probed is
   judged by age alone.)
6. A backup whose folder holds an object that a kept backup lists among its artifacts is kept
   as long as that backup is (rows imported before imports were checked may borrow objects).
7. A committed backup (stored, verified, corrupt) pinned until a moment after now
   (`runbook backup --keep-until`) is kept, whatever rules 1-4 say, with "pinned until ..."
   among its reasons. Pinned backups still fill the buckets like any other; once the pin
   has expired the backup is ordinary again (its reasons say the pin expired).

Garbage: a committed folder the catalog does not track is imported (storage wins) only when
its manifest describes that very backup, names no object outside its own folder and is not
dated in the future; otherwise it is refused: not imported, not deleted, left for a person.
Unfinished uploads older than grace are removed, but none while a backup is live (running and
kept): storage cannot tell its uploads apart (and not every S3 says truly when one began).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict

from runbook.catalog import BackupRecord, BackupStatus, Catalog, utcnow
from runbook.config import Retention
from runbook.formatting import human_duration
from runbook.locks import backup_lock, lock_is_held
from runbook.manifest import (
    MANIFEST_NAME,
    ManifestError,
    backup_prefix,
    manifest_key,
    ownership_problems,
    parse_manifest,
    seal_manifest,
)
from runbook.pins import Pin, format_moment
from runbook.storage import ObjectInfo, ObjectNotFound, Storage, StorageError
from tasks.backups.dump import discard_objects

log = logging.getLogger("runbook.retention")

VERIFIED = BackupStatus.VERIFIED.value
STATUSES = frozenset(s.value for s in BackupStatus) - {BackupStatus.DELETED.value}

Action = Literal["keep", "delete"]

# How far ahead of this machine's clock a manifest may be dated and still be believed (the
# clocks of the machine that wrote it, and of the storage, may run a little ahead).
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class RetentionCandidate:
    id: str
    target: str
    status: str  # one of STATUSES
    started_at: datetime  # tz-aware UTC
    finished_at: datetime | None
    lock_held: bool | None = None  # running: a process holds the target's lock (None: unknown)
    keys: tuple[str, ...] = ()  # its artifacts' keys
    label: str | None = None
    keep_until: datetime | None = None  # pinned until then (rule 7)

    @property
    def at(self) -> datetime:
        """The recorded time retention goes by."""
        return self.finished_at if self.finished_at is not None else self.started_at


class RetentionDecision(BaseModel):
    """Keep or delete one backup, and why: the plan's line, the retention summary's and
    `runbook retention --json`'s."""

    model_config = ConfigDict(frozen=True)

    id: str
    target: str
    status: str
    at: datetime  # the recorded time used (finished_at or started_at)
    action: Action
    reasons: tuple[str, ...]


def _sort_key(candidate: RetentionCandidate) -> tuple[datetime, datetime, str]:
    # Newest first by recorded time; started_at and id only break exact ties deterministically.
    return (candidate.at, candidate.started_at, candidate.id)


def _period_labels(zone: ZoneInfo) -> list[tuple[str, Callable[[datetime], str]]]:
    def local(moment: datetime) -> datetime:
        return moment.astimezone(zone)

    def iso_week(moment: datetime) -> str:
        year, week, _ = local(moment).isocalendar()
        return f"{year:04d}-W{week:02d}"  # ISO year: 2027-01-02 is in 2026-W53

    return [
        ("daily", lambda m: local(m).strftime("%Y-%m-%d")),
        ("weekly", iso_week),
        ("monthly", lambda m: local(m).strftime("%Y-%m")),
        ("yearly", lambda m: f"{local(m).year:04d}"),
    ]


def _plan_verified(
    verified: Sequence[RetentionCandidate], policy: Retention, zone: ZoneInfo
) -> dict[str, tuple[str, ...]]:
    """Reasons to keep each verified backup (newest first); an empty tuple means delete."""
    reasons: dict[str, list[str]] = {c.id: [] for c in verified}
    if verified:
        reasons[verified[0].id].append("newest verified")
    for position, candidate in enumerate(verified[: policy.keep_last], start=1):
        reasons[candidate.id].append(f"keep_last {position}/{policy.keep_last}")
    for name, label_of in _period_labels(zone):
        remaining = getattr(policy, name)
        last_label: str | None = None
        for candidate in verified:
            if remaining <= 0:
                break
            label = label_of(candidate.at)
            # Newest first, so the first backup seen in a period is that period's newest.
            if label != last_label:
                reasons[candidate.id].append(f"{name} {label}")
                last_label = label
                remaining -= 1
    return {key: tuple(value) for key, value in reasons.items()}


def _judge_by_age(
    candidate: RetentionCandidate, now: datetime, grace: timedelta
) -> tuple[Action, str]:
    older = now - candidate.at > grace
    grace_text = human_duration(grace, exact=True)
    status = candidate.status
    if status == "deleting":
        return "delete", "deleting, resume the earlier deletion"
    if status == "stored":
        if older:
            return "delete", f"stored but never verified, older than grace {grace_text}"
        return "keep", "awaiting verification"
    if status == "corrupt":
        if older:
            return "delete", f"corrupt, older than grace {grace_text}"
        return "keep", "corrupt, kept for inspection until grace"
    if status == "running":
        if candidate.lock_held:
            return "keep", "running: a process holds the target's lock"
        if candidate.lock_held is None:  # not probed: by age alone
            if older:
                return "delete", f"running, older than grace {grace_text} (abandoned run)"
            return "keep", "running"
        if older:
            return "delete", (
                f"running, older than grace {grace_text}, and no process holds the target's "
                "lock (abandoned run)"
            )
        return "keep", (
            f"running, within grace {grace_text}: its process may be about to take the "
            "target's lock"
        )
    # failed, locked
    if older:
        return "delete", f"{status}, older than grace {grace_text}"
    return "keep", f"{status}, within grace"


def _require_aware(value: datetime, what: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {value.isoformat()}")


def plan_retention(
    candidates: Iterable[RetentionCandidate],
    policy: Retention,
    now: datetime,
    tz: str = "UTC",
) -> list[RetentionDecision]:
    """One keep/delete decision per candidate, sorted by target then newest first."""
    _require_aware(now, "now")
    zone = ZoneInfo(tz)
    by_target: dict[str, list[RetentionCandidate]] = defaultdict(list)
    seen: set[str] = set()
    for candidate in candidates:
        if candidate.status not in STATUSES:
            known = ", ".join(sorted(STATUSES))
            raise ValueError(
                f"backup {candidate.id!r}: unknown status {candidate.status!r} (known: {known})"
            )
        if candidate.id in seen:
            raise ValueError(f"backup id {candidate.id!r} appears more than once")
        seen.add(candidate.id)
        _require_aware(candidate.started_at, f"backup {candidate.id!r} started_at")
        if candidate.finished_at is not None:
            _require_aware(candidate.finished_at, f"backup {candidate.id!r} finished_at")
        by_target[candidate.target].append(candidate)

    decisions: list[RetentionDecision] = []
    for target in sorted(by_target):
        history = sorted(by_target[target], key=_sort_key, reverse=True)
        verified = [c for c in history if c.status == VERIFIED]
        kept_verified = _plan_verified(verified, policy, zone)
        for candidate in history:
            if candidate.status == VERIFIED:
                reasons = kept_verified[candidate.id]
                action: Action = "keep" if reasons else "delete"
                reasons = reasons or ("not in any bucket",)
            else:
                action, reason = _judge_by_age(candidate, now, policy.grace)
                reasons = (reason,)
            action, reasons = _pinned(candidate, now, action, reasons)
            decisions.append(
                RetentionDecision(
                    id=candidate.id,
                    target=candidate.target,
                    status=candidate.status,
                    at=candidate.at,
                    action=action,
                    reasons=reasons,
                )
            )
    keys = {c.id: c.keys for history in by_target.values() for c in history}
    return _keep_referenced(decisions, keys)


PINNABLE = frozenset({"stored", VERIFIED, "corrupt"})  # committed: its objects are all there


def _pinned(
    candidate: RetentionCandidate, now: datetime, action: Action, reasons: tuple[str, ...]
) -> tuple[Action, tuple[str, ...]]:
    """Rule 7: a committed backup pinned until after now is kept; an expired pin is said."""
    if candidate.keep_until is None or candidate.status not in PINNABLE:
        return action, reasons
    pin = Pin(label=candidate.label, keep_until=candidate.keep_until)
    if candidate.keep_until > now:
        return "keep", (*reasons, pin.describe()) if action == "keep" else (pin.describe(),)
    if action == "delete":
        label = f" (label {pin.label})" if pin.label else ""
        return action, (*reasons, f"pin expired {format_moment(pin.keep_until)}{label}")
    return action, reasons


def _keep_referenced(
    decisions: list[RetentionDecision], keys: dict[str, tuple[str, ...]]
) -> list[RetentionDecision]:
    """Rule 6: keep a backup whose folder holds an object a kept backup references, until
    no more change (keeping one may keep what it references in turn)."""
    borrowed = {  # (backup, key of an object outside its own folder)
        (d.id, key)
        for d in decisions
        for key in keys.get(d.id, ())
        if not key.startswith(backup_prefix(d.target, d.id))
    }
    if not borrowed:
        return decisions  # the usual case: every backup lists only its own objects
    decisions = list(decisions)
    changed = True
    while changed:
        changed = False
        kept = {d.id for d in decisions if d.action == "keep"}
        for position, decision in enumerate(decisions):
            if decision.action != "delete":
                continue
            prefix = backup_prefix(decision.target, decision.id)
            referrers = sorted(
                {b for b, key in borrowed if b in kept and key.startswith(prefix)} - {decision.id}
            )
            if referrers:
                reason = f"its objects are referenced by kept backup {', '.join(referrers)}"
                decisions[position] = decision.model_copy(
                    update={"action": "keep", "reasons": (reason,)}
                )
                changed = True
    return decisions


def summarize(decisions: Iterable[RetentionDecision]) -> dict[str, dict[str, int]]:
    """{target: {"keep": n, "delete": m}} with both keys always present."""
    counts: dict[str, dict[str, int]] = {}
    for decision in decisions:
        per_target = counts.setdefault(decision.target, {"keep": 0, "delete": 0})
        per_target[decision.action] += 1
    return counts


# --- garbage: backup folders in storage the catalog does not track --------------------------


@dataclass(frozen=True)
class Orphan:
    target: str
    backup_id: str
    objects: int
    newest: datetime
    committed: bool  # a manifest exists
    # Why its manifest is not this backup's own (unreadable, another backup's, objects
    # outside its folder), and the latest time it records (started_at or finished_at).
    manifest_problems: tuple[str, ...] = ()
    dated: datetime | None = None


class GarbageAction(BaseModel):
    target: str
    backup_id: str
    action: Literal["import", "delete", "keep", "refuse"]  # refuse: neither import nor delete
    reason: str


@dataclass
class GarbageReport:
    """What garbage collection did (or, for a plan not applied, would do); the retention
    summary's `garbage`."""

    incomplete_uploads: int = 0
    orphans_deleted: list[str] = field(default_factory=list)
    orphans_imported: list[str] = field(default_factory=list)
    orphans_kept: list[str] = field(default_factory=list)  # refused imports stay here too


class GarbagePlan(BaseModel):
    """Leftovers of runs that died: unfinished uploads started before `cutoff`, and what to do
    with each backup folder the catalog does not track."""

    cutoff: datetime
    actions: list[GarbageAction] = []
    # Backups still running: while one is, no unfinished upload is removed (it may be its own).
    live_backups: list[str] = []

    def report(self, incomplete_uploads: int = 0) -> GarbageReport:
        """The report of carrying this plan out (`incomplete_uploads` removed on the way)."""
        report = GarbageReport(incomplete_uploads=incomplete_uploads)
        lists = {
            "import": report.orphans_imported,
            "delete": report.orphans_deleted,
            "keep": report.orphans_kept,
            "refuse": report.orphans_kept,
        }
        for action in self.actions:
            lists[action.action].append(action.backup_id)
        return report


def plan_garbage(
    orphans: Iterable[Orphan],
    now: datetime,
    grace: timedelta,
    live_backups: Iterable[str] = (),
) -> GarbagePlan:
    """Committed folders are imported (storage wins) unless their manifest is not their own
    or is dated in the future (refused), uncommitted ones deleted once their newest object is
    older than grace (a backup may still be writing a younger one). Unfinished uploads go
    when older than grace, and only while none of `live_backups` runs."""
    _require_aware(now, "now")
    cutoff = now - grace
    grace_text = human_duration(grace, exact=True)
    actions = []
    for orphan in orphans:
        refusals = _refusals(orphan, now) if orphan.committed else []
        if refusals:
            action, reason = "refuse", f"not imported: {'; '.join(refusals)}"
        elif orphan.committed:
            action, reason = "import", "its manifest is in storage: storage wins"
        elif orphan.newest < cutoff:
            action, reason = "delete", f"no manifest, older than grace {grace_text}"
        else:
            action, reason = "keep", f"no manifest, within grace {grace_text}"
        actions.append(
            GarbageAction(
                target=orphan.target, backup_id=orphan.backup_id, action=action, reason=reason
            )
        )
    return GarbagePlan(cutoff=cutoff, actions=actions, live_backups=sorted(live_backups))


def _refusals(orphan: Orphan, now: datetime) -> list[str]:
    """Why a committed folder may not be imported: a backup vouches only for its own objects,
    and cannot have been taken after now."""
    found = list(orphan.manifest_problems)
    if orphan.dated is not None and orphan.dated > now + CLOCK_SKEW:
        found.append(
            f"its manifest is dated in the future ({orphan.dated.isoformat(timespec='seconds')},"
            f" now {now.isoformat(timespec='seconds')})"
        )
    return found


class RetentionPlan(BaseModel):
    """Everything a retention run would change, with a reason each."""

    decisions: list[RetentionDecision]
    garbage: GarbagePlan

    @property
    def deletions(self) -> list[RetentionDecision]:
        return [d for d in self.decisions if d.action == "delete"]


# --- the facts a plan is made of, and applying it (I/O) ------------------------------------
# Kept apart from the pure planners above: only these functions touch the catalog and storage.


def _candidate(record: BackupRecord, held_targets: set[str]) -> RetentionCandidate:
    return RetentionCandidate(
        id=record.id,
        target=record.target,
        status=record.status.value,
        started_at=record.started_at,
        finished_at=record.finished_at,
        lock_held=(
            record.target in held_targets if record.status == BackupStatus.RUNNING else None
        ),
        keys=tuple(a.key for a in record.artifacts),
        label=record.label,
        keep_until=record.keep_until,
    )


def candidates_from_catalog(
    catalog: Catalog, targets: Iterable[str] | None = None
) -> list[RetentionCandidate]:
    """Every backup the catalog lists (of `targets`; None: all), the running ones with
    whether a process holds their target's lock now."""
    wanted = set(targets) if targets else None
    records = [r for r in catalog.list_backups() if wanted is None or r.target in wanted]
    running = {r.target for r in records if r.status == BackupStatus.RUNNING}
    held = {t for t in running if lock_is_held(catalog.url, backup_lock(t))}
    return [_candidate(r, held) for r in records]


def _orphan_manifest(
    storage: Storage, target: str, backup_id: str
) -> tuple[tuple[str, ...], datetime | None]:
    """Why a folder's manifest is not that backup's own, and the latest time it records."""
    key = manifest_key(target, backup_id)
    try:
        manifest = parse_manifest(storage.get_bytes(key), key)
    except ObjectNotFound:
        return (f"{key} disappeared",), None
    except ManifestError as exc:
        return (str(exc),), None
    problems = tuple(f"{key}: {p}" for p in ownership_problems(manifest, target, backup_id))
    return problems, max(manifest.started_at, manifest.finished_at)


def find_orphans(catalog: Catalog, storage: Storage) -> list[Orphan]:
    """Backup folders in storage that the catalog does not know (or knows as deleted); the
    manifest of each committed one is read to tell whether it may be imported."""
    groups: dict[tuple[str, str], list[ObjectInfo]] = defaultdict(list)
    for info in storage.list():
        parts = info.key.split("/")
        # `_`-folders (log archives, diagnostics bundles) are never backups: no target name
        # starts with `_`, and whatever their depth they are not ours to import or collect.
        if len(parts) == 3 and not parts[0].startswith("_"):
            groups[(parts[0], parts[1])].append(info)
    known = {r.id: r for r in catalog.list_backups(include_deleted=True)}
    orphans = []
    for (target, backup_id), objects in sorted(groups.items()):
        record = known.get(backup_id)
        if record is not None and record.status != BackupStatus.DELETED:
            continue
        committed = any(o.key.endswith("/" + MANIFEST_NAME) for o in objects)
        problems, dated = _orphan_manifest(storage, target, backup_id) if committed else ((), None)
        orphans.append(
            Orphan(
                target=target,
                backup_id=backup_id,
                objects=len(objects),
                newest=max(o.modified for o in objects),
                committed=committed,
                manifest_problems=problems,
                dated=dated,
            )
        )
    return orphans


def make_plan(
    catalog: Catalog,
    storage: Storage,
    policy: Retention,
    targets: Iterable[str] | None,
    now: datetime,
    tz: str = "UTC",
) -> RetentionPlan:
    """Read what the catalog and storage hold now and plan: backups of `targets` (None: all)
    by `policy`, garbage across the whole storage. Every target is planned so that a
    reference across targets counts; only the decisions of `targets` are returned."""
    wanted = set(targets) if targets else None
    decisions = plan_retention(candidates_from_catalog(catalog), policy, now, tz)
    live = [d.id for d in decisions if d.status == BackupStatus.RUNNING and d.action == "keep"]
    return RetentionPlan(
        decisions=[d for d in decisions if wanted is None or d.target in wanted],
        garbage=plan_garbage(find_orphans(catalog, storage), now, policy.grace, live),
    )


def delete_backup(catalog: Catalog, storage: Storage, backup_id: str) -> int:
    """Mark deleting (no longer listed as existing), delete its objects (manifest first),
    then mark deleted. A crash in between leaves a `deleting` row that the next run resumes,
    never a row that claims objects which are gone."""
    record = catalog.get_backup(backup_id)
    if record.status == BackupStatus.DELETED:
        return 0  # an earlier attempt of this step deleted it
    catalog.mark_deleting(backup_id)
    removed = discard_objects(storage, record.target, backup_id)
    leftover = list(storage.list(backup_prefix(record.target, backup_id)))
    if leftover:
        raise StorageError(
            f"backup {backup_id}: {len(leftover)} object(s) could not be deleted "
            f"(first: {leftover[0].key}); it stays 'deleting' and the next run retries"
        )
    catalog.mark_deleted(backup_id)
    return removed


def _refuse_deletion(
    catalog: Catalog, decision: RetentionDecision, others: list[BackupRecord]
) -> str | None:
    """Why `decision` may not be carried out now (the catalog may have changed since the
    plan): the newest verified backup of its target, a running backup whose lock is now
    held, or objects a backup that stays references."""
    verified = catalog.list_backups(target=decision.target, statuses={BackupStatus.VERIFIED})
    # Newest by recorded time, as the plan goes (the catalog lists by start).
    newest = max(
        verified, key=lambda r: (r.finished_at or r.started_at, r.started_at, r.id), default=None
    )
    if newest is not None and newest.id == decision.id:
        return f"it is the newest verified backup of {decision.target}"
    if decision.status == BackupStatus.RUNNING and lock_is_held(
        catalog.url, backup_lock(decision.target)
    ):
        return f"it is running and a process holds the lock of {decision.target}"
    record = next((r for r in others if r.id == decision.id), None)
    if record is not None and record.keep_until is not None and record.keep_until > utcnow():
        pin = Pin(label=record.label, keep_until=record.keep_until)
        return f"it is {pin.describe()}"
    prefix = backup_prefix(decision.target, decision.id)
    referrers = [
        r.id
        for r in others
        if r.id != decision.id and any(a.key.startswith(prefix) for a in r.artifacts)
    ]
    if referrers:
        return f"its objects are referenced by backup {', '.join(sorted(referrers))}"
    return None


def apply_retention(
    catalog: Catalog, storage: Storage, decisions: Iterable[RetentionDecision]
) -> list[str]:
    """Delete what the plan says to delete; returns the deleted ids. Re-checks, just before
    each deletion, that it is not the newest verified backup of its target, not a running
    backup whose process holds the lock, and not referenced by a backup that stays."""
    deleted: list[str] = []
    others = catalog.list_backups()
    for decision in decisions:
        if decision.action != "delete":
            continue
        reason = _refuse_deletion(catalog, decision, [r for r in others if r.id not in deleted])
        if reason is not None:
            log.error("refusing to delete %s: %s", decision.id, reason)
            continue
        delete_backup(catalog, storage, decision.id)
        deleted.append(decision.id)
    return deleted


def import_backup(catalog: Catalog, storage: Storage, target: str, backup_id: str) -> bool:
    """Record a committed backup found in storage (storage wins over the catalog) with the
    seal of its manifest as found; it is listed as stored until verification reads it back.
    Refused (False, nothing recorded) when its manifest is not its own or is dated in the
    future: checked again here, as storage may have changed since the plan."""
    key = manifest_key(target, backup_id)
    data = storage.get_bytes(key)
    try:
        manifest = parse_manifest(data, key)
    except ManifestError as exc:
        log.warning("not importing %s/%s: %s", target, backup_id, exc)
        return False
    refusals = _refusals(
        Orphan(
            target=target,
            backup_id=backup_id,
            objects=0,
            newest=manifest.finished_at,
            committed=True,
            manifest_problems=tuple(ownership_problems(manifest, target, backup_id)),
            dated=max(manifest.started_at, manifest.finished_at),
        ),
        utcnow(),
    )
    if refusals:
        log.warning("not importing %s/%s: %s", target, backup_id, "; ".join(refusals))
        return False
    catalog.import_stored(manifest, storage.describe(), seal_manifest(data))
    return True


def collect_garbage(catalog: Catalog, storage: Storage, plan: GarbagePlan) -> GarbageReport:
    """Carry out a garbage plan: remove unfinished uploads older than its cutoff (unless a
    backup is live), import the committed folders it may, delete the uncommitted ones it lets
    go; refused folders are left as they are (logged)."""
    if plan.live_backups:
        log.info("unfinished uploads left alone while backup %s runs", ", ".join(plan.live_backups))
        removed = 0
    else:
        removed = storage.cleanup_incomplete(plan.cutoff)
    report = plan.report(removed)
    for item in plan.actions:
        if item.action == "import" and not import_backup(
            catalog, storage, item.target, item.backup_id
        ):
            report.orphans_imported.remove(item.backup_id)
            report.orphans_kept.append(item.backup_id)
        elif item.action == "delete":
            discard_objects(storage, item.target, item.backup_id)
        elif item.action == "refuse":
            log.warning("not importing %s/%s: %s", item.target, item.backup_id, item.reason)
    return report
