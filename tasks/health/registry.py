"""Which health checks exist and how one runs: the registry maps each check kind to its check
function (one module per system in this wing), the plan lists what a run checks, and a check
runs under a hard deadline in a daemon thread, so a system that hangs despite its own
timeouts can never stall the run: its check turns unknown or critical and the run goes on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from runbook.catalog import HealthHistory
from runbook.config import Config
from runbook.errors import RunbookError
from runbook.health import CheckResult, Status
from runbook.runtime import Runtime
from tasks.health.alertmanager import check_alertmanager
from tasks.health.capacity import check_capacity
from tasks.health.docker import check_docker
from tasks.health.freshness import check_backup_freshness, check_drill_freshness
from tasks.health.host import check_host
from tasks.health.http import check_http
from tasks.health.kubernetes import check_kubernetes
from tasks.health.log_streams import Feed, StreamRead, read_log_streams
from tasks.health.logs import check_logs
from tasks.health.postgres import check_postgres_health
from tasks.health.prometheus import check_prometheus
from tasks.health.redis import check_redis_health_since

# What `--only` accepts, in report order. "backups" is the freshness of verified backups and
# of passed DR drills; "capacity" the P10 days until 90 % of each limited resource (it runs
# when the config has a `capacity:` section).
CheckKind = Literal[
    "http",
    "postgres",
    "redis",
    "prometheus",
    "alertmanager",
    "kubernetes",
    "docker",
    "host",
    "logs",
    "backups",
    "capacity",
]


CHECK_KINDS: tuple[str, ...] = get_args(CheckKind)


def select_kinds(only: list[str] | None) -> list[str]:
    if not only:
        return list(CHECK_KINDS)
    names = [n.strip() for item in only for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in CHECK_KINDS]
    if unknown:
        raise RunbookError(
            f"unknown check kind {unknown[0]!r} (choose from {', '.join(CHECK_KINDS)})"
        )
    return [k for k in CHECK_KINDS if k in names]


@dataclass(frozen=True)
class Check:
    """How to check one kind of system: `run(runtime, target, now)` -> results. A check that is
    not `per_target` runs once for all its targets (HTTP endpoints run concurrently inside it;
    backup freshness covers every backup target)."""

    run: Callable[[Runtime, Any, datetime], list[CheckResult]]
    per_target: bool = True


def _unreachable(runtime: Runtime) -> Status:
    return Status(runtime.config.health.unreachable)


def _http(runtime: Runtime, _target: None, _now: datetime) -> list[CheckResult]:
    config = runtime.config
    return check_http(
        config.targets.http,
        unreachable=_unreachable(runtime),
        concurrency=config.health.concurrency,
    )


def _freshness(runtime: Runtime, _target: None, now: datetime) -> list[CheckResult]:
    config, catalog = runtime.config, runtime.catalog
    return check_backup_freshness(config, catalog, now) + check_drill_freshness(
        config, catalog, now
    )


def _logs(runtime: Runtime, target: Any, now: datetime) -> list[CheckResult]:
    history = HealthHistory(runtime.catalog)
    key = f"logs:{target.name}"  # where the log offsets of this target live between runs
    targets = runtime.config.targets
    engines = {t.name: t for t in targets.docker}
    clusters = {t.name: t for t in targets.kubernetes}

    def streams(previous: dict[str, Any], feed: Feed) -> StreamRead:
        return read_log_streams(target, engines, clusters, previous, now, feed)

    results, state = check_logs(target, history.get_state(key), streams)
    history.put_state(key, state)
    return results


def _redis(runtime: Runtime, target: Any, now: datetime) -> list[CheckResult]:
    history = HealthHistory(runtime.catalog)
    key = f"redis:{target.name}"  # the hit counters of the previous run: the hit rate interval
    results, state = check_redis_health_since(
        target, _unreachable(runtime), history.get_state(key), now
    )
    history.put_state(key, state)
    return results


def _alertmanager(runtime: Runtime, target: Any, now: datetime) -> list[CheckResult]:
    history = HealthHistory(runtime.catalog)
    key = f"alertmanager:{target.name}"  # the alerts the previous run saw firing
    results, state = check_alertmanager(
        target, _unreachable(runtime), history.get_state(key), now
    )
    history.put_state(key, state)
    return results


def _with_unreachable(check: Callable[[Any, Status], list[CheckResult]]) -> Check:
    return Check(lambda runtime, target, _now: check(target, _unreachable(runtime)))


# kind -> how to check it; the order of CheckKind is the report order.
REGISTRY: dict[str, Check] = {
    "http": Check(_http, per_target=False),
    "postgres": _with_unreachable(check_postgres_health),
    "redis": Check(_redis),
    "prometheus": _with_unreachable(check_prometheus),
    "alertmanager": Check(_alertmanager),
    "kubernetes": _with_unreachable(check_kubernetes),
    "docker": _with_unreachable(check_docker),
    "host": Check(lambda _runtime, target, _now: check_host(target)),
    "logs": Check(_logs),
    "backups": Check(_freshness, per_target=False),
    "capacity": Check(
        lambda runtime, _target, now: check_capacity(runtime.config, runtime.catalog, now),
        per_target=False,
    ),
}


def check_plan(config: Config, kinds: list[str]) -> list[tuple[str, str | None]]:
    """(kind, target name) for every check to run; a kind that is not per target runs once
    when it has anything to check."""
    plan: list[tuple[str, str | None]] = []
    for kind in kinds:
        if kind == "backups":
            if config.backup_targets():
                plan.append((kind, None))
        elif kind == "capacity":
            if "capacity" in config.model_fields_set:
                plan.append((kind, None))
        elif not REGISTRY[kind].per_target:
            if getattr(config.targets, kind):
                plan.append((kind, None))
        else:
            for target in getattr(config.targets, kind):
                if kind in ("postgres", "redis") and not target.health.enabled:
                    continue
                plan.append((kind, target.name))
    return plan


def _target(config: Config, kind: str, name: str) -> Any:
    for target in getattr(config.targets, kind):
        if target.name == name:
            return target
    raise RunbookError(f"no {kind} target named {name!r}")


def run_kind(runtime: Runtime, kind: str, name: str | None, now: datetime) -> list[CheckResult]:
    """One kind of check for one target (or for all of them, when not per target)."""
    check = REGISTRY.get(kind)
    if check is None:
        raise RunbookError(f"unknown check kind {kind!r} (choose from {', '.join(CHECK_KINDS)})")
    target = _target(runtime.config, kind, name) if check.per_target else None
    return check.run(runtime, target, now)


def deadline_for(config: Config, kind: str) -> float:
    seconds = config.health.check_timeout.total_seconds()
    if kind == "http" and config.targets.http:
        # All endpoints run concurrently; each has its own timeout inside check_http.
        seconds = max(seconds, max(t.timeout.total_seconds() for t in config.targets.http) + 5)
    if kind == "host" and config.targets.host:
        # The CPU sample sleeps inside the check.
        sample = max(t.cpu_sample.total_seconds() for t in config.targets.host)
        seconds = max(seconds, sample + 10)
    return seconds


def run_with_deadline(
    fn: Callable[[], list[CheckResult]],
    deadline: float,
    kind: str,
    label: str,
    unreachable: Status,
) -> list[CheckResult]:
    """fn() in a daemon thread; past the deadline its check is reported as not answering."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["results"] = fn()
        except BaseException as exc:  # noqa: BLE001 - becomes an unknown result
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True, name=f"check-{kind}-{label}")
    thread.start()
    thread.join(deadline)
    if thread.is_alive():
        return [
            CheckResult(
                check=f"{kind}.deadline",
                target=label,
                status=unreachable,
                message=f"no answer within {deadline:.0f}s (check abandoned)",
                duration=deadline,
            )
        ]
    if "error" in box:
        exc = box["error"]
        return [
            CheckResult(
                check=f"{kind}.error",
                target=label,
                status=Status.UNKNOWN,
                message=f"the check itself failed: {type(exc).__name__}: {exc}",
            )
        ]
    return box["results"]  # type: ignore[return-value]
