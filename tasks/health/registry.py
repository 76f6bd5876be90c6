"""Running health checks as Prefect tasks, each under a hard deadline, and recording them.

Every check module exposes a plain function (tasks/http.py, postgres.py, redis.py, ...); this
module maps check kinds to them, runs one under a deadline in a daemon thread (so a system
that hangs despite its own timeouts can never stall the run: its check turns unknown or
critical and the run goes on), and records results with their failing streaks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Literal, get_args

from runbook.catalog import HealthHistory
from runbook.config import Config
from runbook.errors import RunbookError
from runbook.health import CheckResult, Status
from runbook.runtime import Runtime

# What `--only` accepts, in report order. "backups" is the freshness of verified backups and
# of passed DR drills.
CheckKind = Literal[
    "http", "postgres", "redis", "prometheus", "kubernetes", "docker", "host", "logs", "backups"
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


def check_plan(config: Config, kinds: list[str]) -> list[tuple[str, str | None]]:
    """(kind, target name) for every check to run; http runs all endpoints in one task."""
    plan: list[tuple[str, str | None]] = []
    for kind in kinds:
        if kind == "backups":
            if config.backup_targets():
                plan.append(("backups", None))
        elif kind == "http":
            if config.targets.http:
                plan.append(("http", None))
        else:
            for target in getattr(config.targets, kind):
                if kind in ("postgres", "redis") and not target.health.enabled:
                    continue
                plan.append((kind, target.name))
    return plan


def _target(config: Config, kind: str, name: str):  # noqa: ANN202 - one of many models
    for target in getattr(config.targets, kind):
        if target.name == name:
            return target
    raise RunbookError(f"no {kind} target named {name!r}")


def _run_kind(runtime: Runtime, kind: str, name: str | None, now: datetime) -> list[CheckResult]:
    config = runtime.config
    unreachable = Status(config.health.unreachable)
    if kind == "http":
        from tasks.health.http import check_http

        return check_http(
            config.targets.http, unreachable=unreachable, concurrency=config.health.concurrency
        )
    if kind == "backups":
        from tasks.health.freshness import check_backup_freshness, check_drill_freshness

        return check_backup_freshness(config, runtime.catalog, now) + check_drill_freshness(
            config, runtime.catalog, now
        )
    target = _target(config, kind, name)
    if kind == "postgres":
        from tasks.health.postgres import check_postgres_health

        return check_postgres_health(target, unreachable)
    if kind == "redis":
        from tasks.health.redis import check_redis_health

        return check_redis_health(target, unreachable)
    if kind == "prometheus":
        from tasks.health.prometheus import check_prometheus

        return check_prometheus(target, unreachable)
    if kind == "kubernetes":
        from tasks.health.kubernetes import check_kubernetes

        return check_kubernetes(target, unreachable)
    if kind == "docker":
        from tasks.health.docker import check_docker

        return check_docker(target, unreachable)
    if kind == "host":
        from tasks.health.host import check_host

        return check_host(target)
    if kind == "logs":
        from tasks.health.logs import check_logs

        history = HealthHistory(runtime.catalog)
        key = f"logs:{target.name}"
        results, state = check_logs(target, history.get_state(key))
        history.put_state(key, state)
        return results
    raise RunbookError(f"unknown check kind {kind!r}")


def deadline_for(config: Config, kind: str) -> float:
    seconds = config.health.check_timeout.total_seconds()
    if kind == "http" and config.targets.http:
        # All endpoints run concurrently; each has its own timeout inside check_http.
        seconds = max(seconds, max(t.timeout.total_seconds() for t in config.targets.http) + 5)
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
