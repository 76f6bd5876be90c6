"""Docker health: runbook 000's `docker-compose ps` as named check results, read through the
official `docker` client (unix:///var/run/docker.sock in production, tcp://host:port too).

Checks, each a CheckResult with `target` = the configured target's name:

- `docker.engine`: the client negotiates the API version (GET /version), then /_ping and
  /version answer; value = ping latency in seconds. Unreachable -> the caller's `unreachable`
  status and it is the only result.
- `docker.containers`: containers (all=True; only those labelled
  com.docker.compose.project=<project> when `project` is set, filtered by the engine):
  exited with a non-zero code or dead -> critical; restarting, paused or created but never
  started -> warn; exited 0 -> ok (a finished one-shot such as a migration) unless its restart
  policy is `always` or `unless-stopped`, which says it should be running -> warn. A project
  with no containers at all -> critical (the stack is not deployed, or the name is wrong).
  Compose one-off containers (`docker compose run`, label oneoff=True) are left out of every
  check: they are leftovers of someone's command, not the service.
- `docker.health`: running containers whose State.Health.Status is "unhealthy" -> critical,
  naming each with the first 100 characters of its last health-check output. "starting" is ok:
  the engine itself turns it into "unhealthy" once the start period is over and the retries
  have failed.
- `docker.restarts`: the highest RestartCount (restarts by the engine's restart policy since the
  container was created or last started by hand), graded with `restarts`, naming the worst.

The engine is read through `runbook.systems.docker`; this module grades what it returns.
"""

from __future__ import annotations

from typing import Any

from runbook.config import DockerTarget
from runbook.health import CheckResult, Status, describe, grade, timer
from runbook.systems.docker import (
    PROJECT_LABEL,
    DockerApiError,
    DockerClientError,
    DockerUnreachable,
    Engine,
    container_name,
)

SHOULD_RUN_POLICIES = ("always", "unless-stopped")
MAX_NAMED = 5  # containers named in one message
HEALTH_OUTPUT_CHARS = 100


def check_docker(target: DockerTarget, unreachable: Status = Status.CRITICAL) -> list[CheckResult]:
    """Every check of one Docker engine; a failed check is a result, never an exception."""
    with timer() as elapsed:
        try:
            engine = Engine(target.url, target.timeout.total_seconds())
        except DockerUnreachable as exc:
            return [_result("docker.engine", target, unreachable, str(exc), elapsed())]
        except DockerClientError as exc:
            return [_result("docker.engine", target, Status.CRITICAL, str(exc), elapsed())]
    with engine:
        result = _check_engine(engine, target, unreachable)
        if result.status != Status.OK:
            return [result]
        return [result, *_check_containers(engine, target, unreachable)]


def _check_engine(engine: Engine, target: DockerTarget, unreachable: Status) -> CheckResult:
    with timer() as elapsed:
        try:
            engine.ping()
            latency = elapsed()
            version = engine.version()
        except DockerApiError as exc:
            return _result("docker.engine", target, Status.CRITICAL, str(exc), elapsed())
        except DockerUnreachable as exc:
            return _result("docker.engine", target, unreachable, str(exc), elapsed())
        took = elapsed()
    return CheckResult(
        check="docker.engine",
        target=target.name,
        status=Status.OK,
        value=round(latency, 4),
        unit="s",
        message=(
            f"Docker {version.get('Version', '?')} (API {version.get('ApiVersion', '?')}), "
            f"ping {latency * 1000:.0f} ms"
        ),
        duration=round(took, 4),
    )


def _check_containers(
    engine: Engine, target: DockerTarget, unreachable: Status
) -> list[CheckResult]:
    checks = ("docker.containers", "docker.health", "docker.restarts")
    with timer() as elapsed:
        try:
            containers = engine.containers(target.project)
        except DockerApiError as exc:
            message = f"cannot list containers: {exc.reason}"
            return [_result(check, target, Status.UNKNOWN, message, elapsed()) for check in checks]
        except DockerUnreachable as exc:
            message = f"cannot list containers: {exc.reason}"
            return [_result(check, target, unreachable, message, elapsed()) for check in checks]
        took = elapsed()
    return [
        _containers_state(containers, target, took),
        _health(containers, target, took),
        _restarts(containers, target, took),
    ]


def _containers_state(
    containers: list[dict[str, Any]], target: DockerTarget, took: float
) -> CheckResult:
    critical: list[str] = []
    warn: list[str] = []
    counts: dict[str, int] = {}
    for attrs in containers:
        state = attrs.get("State") or {}
        status = state.get("Status", "unknown")
        counts[status] = counts.get(status, 0) + 1
        name = container_name(attrs)
        code = state.get("ExitCode", 0)
        policy = ((attrs.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or "no"
        oom = ", OOM killed" if state.get("OOMKilled") else ""
        if status == "dead":
            critical.append(f"{name} dead{oom}")
        elif status == "exited" and code != 0:
            critical.append(f"{name} exited ({code}){oom}")
        elif status == "exited" and policy in SHOULD_RUN_POLICIES:
            warn.append(f"{name} exited (0) but its restart policy is {policy} (stopped by hand?)")
        elif status == "restarting":
            warn.append(f"{name} restarting (last exit {code}){oom}")
        elif status == "paused":
            warn.append(f"{name} paused")
        elif status == "created":
            warn.append(f"{name} created but never started")
    scope = f"project {target.project}" if target.project else "the engine"
    if not containers and target.project:
        message = (
            f"no containers labelled {PROJECT_LABEL}={target.project} "
            "(stack not deployed, or another project name? `docker compose ls`)"
        )
        return _result("docker.containers", target, Status.CRITICAL, message, took, 0)
    bad = critical + warn
    if bad:
        status_ = Status.CRITICAL if critical else Status.WARN
        message = f"{len(bad)} of {len(containers)} containers of {scope}: {_names(bad)}"
        return _result("docker.containers", target, status_, message, took, len(bad))
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none"
    message = f"{len(containers)} containers of {scope}: {summary}"
    return _result("docker.containers", target, Status.OK, message, took, 0)


def _health(containers: list[dict[str, Any]], target: DockerTarget, took: float) -> CheckResult:
    unhealthy: list[str] = []
    counts = {"healthy": 0, "starting": 0}
    for attrs in containers:
        state = attrs.get("State") or {}
        health = state.get("Health") or {}
        if not state.get("Running") or not health:
            continue  # stopped containers keep a stale status; docker.containers covers them
        status = health.get("Status")
        if status == "unhealthy":
            log = health.get("Log") or []
            output = " ".join(str((log[-1] if log else {}).get("Output") or "").split())
            detail = output[:HEALTH_OUTPUT_CHARS] or "no output"
            streak = health.get("FailingStreak")
            failing = f", {streak} checks failed in a row" if streak else ""
            unhealthy.append(f"{container_name(attrs)} unhealthy{failing}: {detail}")
        elif status in counts:
            counts[status] += 1
    if unhealthy:
        message = f"{len(unhealthy)} containers unhealthy: {_names(unhealthy)}"
        return _result("docker.health", target, Status.CRITICAL, message, took, len(unhealthy))
    message = f"{counts['healthy']} healthy, {counts['starting']} starting, none unhealthy"
    return _result("docker.health", target, Status.OK, message, took, 0)


def _restarts(containers: list[dict[str, Any]], target: DockerTarget, took: float) -> CheckResult:
    counted = [(int(attrs.get("RestartCount") or 0), container_name(attrs)) for attrs in containers]
    worst = max(counted, default=(0, ""), key=lambda item: item[0])
    restarted = sum(1 for count, _ in counted if count)
    if worst[0]:
        message = (
            f"{restarted} containers restarted by the engine; worst: {worst[1]} "
            f"({worst[0]} restarts)"
        )
    else:
        message = f"no restarts among {len(counted)} containers"
    return CheckResult(
        check="docker.restarts",
        target=target.name,
        status=grade(worst[0], target.restarts),
        value=worst[0],
        threshold=describe(target.restarts, " restarts"),
        message=message,
        duration=round(took, 4),
    )


# --- helpers ---------------------------------------------------------------------------------


def _result(
    check: str, target: DockerTarget, status: Status, message: str, took: float, value: Any = None
) -> CheckResult:
    return CheckResult(
        check=check,
        target=target.name,
        status=status,
        value=value,
        message=message,
        duration=round(took, 4),
    )


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_NAMED])
    return shown + (f" and {len(items) - MAX_NAMED} more" if len(items) > MAX_NAMED else "")
