"""config_drift: runbook 000/002's monthly configuration review, 001's
`ALTER SYSTEM SET max_connections = 200; ALTER SYSTEM SET shared_buffers = '1GB';` and its
Prometheus `retention.time: 15d`, as desired settings in runbook.yaml
(`maintenance.config_drift.postgres.<target>`, `.redis.<target>`, `.prometheus.<target>`)
compared with the servers'; and for files targets, what changed since the last verified
backup (tasks/maintenance/file_drift.py).

- measure: PostgreSQL's pg_settings (setting, unit, context, pending_restart) for the desired
  names; Redis's CONFIG GET; Prometheus's flags (/api/v1/status/flags).
- plan (pure): one action per setting whose value differs (memory and time units compared
  in the server's own unit: `1GB` equals `131072` pages of 8kB; Prometheus durations and
  sizes by value: `360h` equals `15d`): its desired and actual value. A PostgreSQL setting
  that only a restart changes (context `postmaster`), and every Prometheus flag (Prometheus
  reads them at start-up), is recorded `skipped`, "needs a restart", and listed: a window
  never restarts a server. An unknown name is a failed action.
- apply: PostgreSQL `ALTER SYSTEM SET` + `pg_reload_conf()`, then reads the setting back;
  Redis `CONFIG SET` and reads it back. After: the value now in force.
- files targets: one report-only action per file changed, added or removed since the last
  verified backup, by sha256, with a unified diff for text files; files that look like
  secrets (`secret_files`) by name only.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from psycopg import sql

from runbook.catalog.maintenance import Figure, MaintenanceAction, Outcome
from runbook.config import MaintenanceSettings
from runbook.config.maintenance import SettingValue
from tasks.maintenance.file_drift import FilesDrift, files_actions, measure_files
from tasks.maintenance.procedure import MaintenanceSession, MeasureContext
from tasks.maintenance.targets import (
    FILES,
    POSTGRES,
    PROMETHEUS,
    REDIS,
    PrometheusSession,
    RedisSession,
    kind_of,
)

MEMORY = {"B": 1, "kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
TIME = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
REDIS_MEMORY = {
    "b": 1,
    "k": 1000,
    "kb": 1024,
    "m": 1000**2,
    "mb": 1024**2,
    "g": 1000**3,
    "gb": 1024**3,
}
_AMOUNT = re.compile(r"^\s*(-?[0-9.]+)\s*([a-zA-Z]*)\s*$")
RESTART_CONTEXTS = ("postmaster", "internal")
PROMETHEUS_RESTART = (
    "needs a restart: Prometheus reads its flags at start-up; change --{name} where it is "
    "started (systemd unit, container args, Helm values) and restart it in a planned change; "
    "a window never restarts a server"
)
_PROM_DURATION = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$"
)
_PROM_DURATION_MS = (365 * 86_400_000, 7 * 86_400_000, 86_400_000, 3_600_000, 60_000, 1000, 1)
_PROM_BYTES = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4, "pb": 1024**5}
RELOAD_WAIT = 3.0


@dataclass(frozen=True)
class ActualSetting:
    name: str
    setting: str | None  # None: the server has no such setting
    unit: str | None = None
    context: str = ""
    vartype: str = ""
    pending_restart: bool = False


@dataclass(frozen=True)
class DriftFacts:
    kind: str
    desired: dict[str, SettingValue]
    actual: dict[str, ActualSetting]


def as_text(value: SettingValue) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _scaled(text: str, unit: str | None) -> float | None:
    """A PostgreSQL amount in the setting's base unit (`1GB` with unit `8kB` -> 131072)."""
    match = _AMOUNT.match(text)
    if not match:
        return None
    number, suffix = float(match.group(1)), match.group(2)
    if not unit:
        return number if not suffix else None
    base = _AMOUNT.match(unit)
    base_number = float(base.group(1)) if base and base.group(1) else 1.0
    base_unit = base.group(2) if base else unit
    for table in (MEMORY, TIME):
        if base_unit in table:
            if not suffix:
                return number  # already in the setting's unit
            if suffix not in table:
                return None
            return number * table[suffix] / (table[base_unit] * base_number)
    return None


def postgres_equal(desired: SettingValue, actual: ActualSetting) -> bool:
    want, have = as_text(desired), actual.setting or ""
    if actual.vartype == "bool":
        truthy = {"on", "true", "yes", "1"}
        return (want.lower() in truthy) == (have.lower() in truthy)
    if actual.vartype in ("integer", "real"):
        a, b = _scaled(want, actual.unit), _scaled(have, actual.unit)
        return a is not None and b is not None and abs(a - b) < 1e-9 * max(abs(a), 1)
    return want.lower() == have.lower()


def redis_equal(desired: SettingValue, actual: str) -> bool:
    want = as_text(desired).lower()
    if isinstance(desired, bool):
        want = "yes" if desired else "no"
    match = _AMOUNT.match(want)
    if match and match.group(2) in REDIS_MEMORY and actual.isdigit():
        return float(match.group(1)) * REDIS_MEMORY[match.group(2)] == float(actual)
    return want == actual.lower()


def _prometheus_amount(text: str) -> tuple[str, float] | None:
    """A Prometheus duration in ms (`15d`, `1d12h`, `0s`) or size in bytes (`512MB`, base 2)."""
    text = text.strip()
    match = _PROM_DURATION.match(text)
    if text and match and any(match.groups()):
        parts = zip(match.groups(), _PROM_DURATION_MS, strict=True)
        return "ms", sum(int(g or 0) * ms for g, ms in parts)
    amount = _AMOUNT.match(text)
    if amount:
        unit = amount.group(2).lower().replace("ib", "b")
        if unit in _PROM_BYTES:
            return "bytes", float(amount.group(1)) * _PROM_BYTES[unit]
    return None


def prometheus_equal(desired: SettingValue, actual: str) -> bool:
    """A desired flag value against the one Prometheus reports (`true`/`false` for flags
    without a value; durations and sizes by value)."""
    want = ("true" if desired else "false") if isinstance(desired, bool) else str(desired)
    if want.strip().lower() == actual.strip().lower():
        return True
    a, b = _prometheus_amount(want), _prometheus_amount(actual)
    return a is not None and a == b


class ConfigDrift:
    name: ClassVar[str] = "config_drift"
    destructive: ClassVar[bool] = False
    kinds: ClassVar[tuple[str, ...]] = (POSTGRES, REDIS, PROMETHEUS, FILES)

    def measure(self, context: MeasureContext) -> DriftFacts | FilesDrift:
        drift = context.settings.config_drift
        target = context.target
        kind = kind_of(target)
        if kind == FILES:
            return measure_files(context.session, drift)
        if kind == POSTGRES:
            desired = drift.postgres.get(target.name, {})
            return DriftFacts(POSTGRES, desired, _pg_settings(context.session, list(desired)))
        if kind == PROMETHEUS:
            desired = {n.lstrip("-"): v for n, v in drift.prometheus.get(target.name, {}).items()}
            prometheus: PrometheusSession = context.session
            flags = prometheus.client.flags() if desired else {}
            actual = {n: ActualSetting(n, flags.get(n), context="start-up") for n in desired}
            return DriftFacts(PROMETHEUS, desired, actual)
        desired = drift.redis.get(target.name, {})
        session: RedisSession = context.session
        actual = {}
        for name in desired:
            values = session.client.config_get(name)
            actual[name] = ActualSetting(name, values.get(name))
        return DriftFacts(REDIS, desired, actual)

    def plan(
        self, facts: DriftFacts | FilesDrift, settings: MaintenanceSettings, target: Any
    ) -> list[MaintenanceAction]:
        if isinstance(facts, FilesDrift):
            return files_actions(facts, self.name, target.name)
        actions = []
        for name, desired in facts.desired.items():
            actual = facts.actual.get(name) or ActualSetting(name, None)
            want = as_text(desired)
            if facts.kind == PROMETHEUS and isinstance(desired, bool):
                want = "true" if desired else "false"  # as Prometheus writes its flags
            before: dict[str, Figure] = {
                "setting": name,
                "desired": want,
                "actual": actual.setting,
                "unit": actual.unit,
                "context": actual.context or None,
                "pending_restart": actual.pending_restart,
            }
            common = {"procedure": self.name, "target": target.name, "object": name}
            if actual.setting is None:
                what = "flag" if facts.kind == PROMETHEUS else "setting"
                actions.append(
                    MaintenanceAction(
                        **common,
                        statement="",
                        reason=f"desired {name} = {want}",
                        before=before,
                        outcome=Outcome.FAILED,
                        error=f"the server has no {what} {name!r} (config_drift)",
                    )
                )
                continue
            if _equal(facts.kind, desired, actual):
                continue
            shown = f"{actual.setting}{actual.unit or ''}" if actual.unit else actual.setting
            reason = f"{name}: {shown}, desired {want}"
            if facts.kind == POSTGRES:
                statement = f"ALTER SYSTEM SET {name} = '{want}'; SELECT pg_reload_conf()"
            elif facts.kind == PROMETHEUS:
                statement = f"--{name}={want}"
            else:
                statement = f"CONFIG SET {name} {want}"
            restart = facts.kind == PROMETHEUS or (
                facts.kind == POSTGRES and actual.context in RESTART_CONTEXTS
            )
            if actual.pending_restart:
                reason += " (a change already waits for a restart)"
            actions.append(
                MaintenanceAction(
                    **common,
                    statement=statement,
                    reason=reason,
                    estimate_seconds=0.5,
                    before=before,
                    outcome=Outcome.SKIPPED if restart else Outcome.PLANNED,
                    error=_restart_reason(facts.kind, name, actual) if restart else None,
                )
            )
        return actions

    def apply(self, session: Any, action: MaintenanceAction) -> dict[str, Figure]:
        name, want = str(action.before["setting"]), str(action.before["desired"])
        if isinstance(session, RedisSession):
            session.client.call("CONFIG", "SET", name, want)
            now = session.client.config_get(name).get(name)
            if now is None or not redis_equal(want, now):
                raise RuntimeError(f"CONFIG SET {name} did not take: it reads {now!r}")
            return {"actual": now}
        return _alter_system(session, name, want)


def _equal(kind: str, desired: SettingValue, actual: ActualSetting) -> bool:
    if kind == POSTGRES:
        return postgres_equal(desired, actual)
    if kind == PROMETHEUS:
        return prometheus_equal(desired, actual.setting or "")
    return redis_equal(desired, actual.setting or "")


def _restart_reason(kind: str, name: str, actual: ActualSetting) -> str:
    if kind == PROMETHEUS:
        return PROMETHEUS_RESTART.format(name=name)
    return (
        f"needs a restart (context {actual.context}): change it in a planned restart; a window "
        "never restarts the server"
    )


def _pg_settings(session: MaintenanceSession, names: list[str]) -> dict[str, ActualSetting]:
    if not names:
        return {}
    rows = session.query(
        "SELECT name, setting, unit, context, vartype, pending_restart FROM pg_settings "
        "WHERE name = ANY(%s)",
        (names,),
    )
    return {r[0]: ActualSetting(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows}


def _alter_system(session: MaintenanceSession, name: str, want: str) -> dict[str, Figure]:
    session.run(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(want)))
    session.query("SELECT pg_reload_conf()")
    deadline = time.monotonic() + RELOAD_WAIT
    while True:  # the reload reaches this backend at its next command
        actual = _pg_settings(session, [name])[name]
        if postgres_equal(want, actual) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if not postgres_equal(want, actual):
        raise RuntimeError(
            f"ALTER SYSTEM SET {name} written but {name} is still {actual.setting} after "
            f"pg_reload_conf()" + (" (pending restart)" if actual.pending_restart else "")
        )
    return {"actual": actual.setting, "pending_restart": actual.pending_restart}
