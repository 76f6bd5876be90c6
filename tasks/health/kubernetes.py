"""Kubernetes health: runbook 003's morning `kubectl get pods` (and 001's nodes, HPAs and
rollouts) as named check results, read through the official `kubernetes` client.

Checks, each a CheckResult whose `target` is always the configured target's name:

- `kubernetes.api`: GET /version answers; value = latency in seconds. Unreachable (refused,
  timed out, TLS failure) -> the caller's `unreachable` status; 401/403 -> critical
  "unauthorized". When this is not ok it is the only result (nothing else could be asked).
- `kubernetes.nodes`: cluster scoped, once per target. A node whose Ready condition is not True
  -> critical; MemoryPressure/DiskPressure/PIDPressure True -> warn.
- Per namespace, named `kubernetes.<check>[<namespace>]` (e.g. `kubernetes.crashloop[shop]`);
  with no namespaces configured, one result per check for all namespaces, named without a
  suffix (`kubernetes.crashloop`). Objects are always named `namespace/name` in messages.
  - `pods_not_ready`: Running pods whose Ready condition is not True, Pending pods older than
    PENDING_GRACE, pods in phase Unknown -> warn. Succeeded (Jobs) and Failed pods (evicted,
    failed Job attempts) are not counted, nor pods being deleted.
  - `crashloop`: containers (init containers too) waiting with a reason in WAITING_FAILURES
    -> critical naming pod/container/reason.
  - `restarts`: containers whose last termination (lastState.terminated.finishedAt) lies within
    `restart_window`, graded on restarts within the window of the worst container. restartCount
    is cumulative over the pod's life, so it is only counted whole when the pod itself started
    within the window; otherwise the container counts 1 (the one restart known to be inside).
  - `deployments`: desired replicas > 0 and unavailableReplicas > 0 or availableReplicas below
    desired -> critical when none is available, warn otherwise.
  - `hpa_at_max`: autoscaling/v2 HPAs with currentReplicas >= maxReplicas -> warn (HPAs pinned
    with minReplicas == maxReplicas are always "at max" and are left out).
  - `usage` (with `metrics: true`): metrics.k8s.io usage of every container against its
    limits (`kubectl top pods --containers` beside the pod specs). Graded with `usage` on the
    highest % of a limit (memory or CPU) any container uses; the message names it, the
    containers above their requests (they live on the node's spare capacity) and how many set
    no memory limit. metrics.k8s.io not served (no metrics-server) -> unknown with the hint.
  - `network_policies` (with `network_policies: true`, runbook 003): a namespace with no
    NetworkPolicy -> warn; the message names the policies and whether one selects every pod.
  `selector` (a label selector, runbook 002's `-l app=counterfactual-lab`) narrows the pods,
  their usage and the deployments to the matching ones; HPAs and NetworkPolicies are not
  filtered.
  A namespace that GET /api/v1/namespaces/{name} says does not exist -> each of its checks
  critical "namespace not found" (listing pods there would just answer an empty list). When the
  credentials may not read namespaces (403), the lists are checked anyway.
  A list the API refuses (403, RBAC) or fails (5xx) -> unknown, naming the reason. A server
  that stops answering mid-run -> the caller's `unreachable` status for the checks left, which
  then fail at once instead of each waiting for its own timeout.

The API is read through `runbook.systems.kubernetes` (plain JSON, page by page, typed errors);
this module grades what it returns. The bearer token (from the target or the kubeconfig) never
appears in a message.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.utils import parse_quantity

from runbook.config import KubernetesTarget, Threshold
from runbook.formatting import shorten
from runbook.health import CheckResult, Status, describe, grade, measured, timer
from runbook.systems.kubernetes import (
    MASK,
    Cluster,
    KubernetesApiError,
    KubernetesConfigError,
    KubernetesUnreachable,
    connect,
)

PENDING_GRACE = timedelta(minutes=5)  # a pod still Pending after this is stuck, not starting
MAX_NAMED = 5  # objects named in one message
WAITING_FAILURES = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "InvalidImageName",
        "RunContainerError",
    }
)
PRESSURE_CONDITIONS = ("MemoryPressure", "DiskPressure", "PIDPressure")
NAMESPACED_CHECKS = ("pods_not_ready", "crashloop", "restarts", "deployments", "hpa_at_max")


def check_kubernetes(
    target: KubernetesTarget, unreachable: Status = Status.CRITICAL
) -> list[CheckResult]:
    """Every check of one Kubernetes target; a failed check is a result, never an exception."""
    secrets = [target.token.get_secret_value()] if target.token else []
    try:
        cluster = connect(target)
    except KubernetesConfigError as exc:
        result = CheckResult(
            check="kubernetes.api",
            target=target.name,
            status=Status.CRITICAL,
            message=f"cannot configure the Kubernetes client: {exc}",
        )
        return _redacted([result], secrets)
    with cluster:
        results = _check_cluster(cluster, target, unreachable)
    return _redacted(results, cluster.secrets())


# --- the checks ------------------------------------------------------------------------------


def _check_cluster(
    cluster: Cluster, target: KubernetesTarget, unreachable: Status
) -> list[CheckResult]:
    api = _check_api(cluster, target.name, unreachable)
    if api.status != Status.OK:
        return [api]
    results = [api, _check_nodes(cluster, target.name, unreachable)]
    now = datetime.now(UTC)
    for namespace in target.namespaces or [None]:
        results += _check_namespace(cluster, target, namespace, now, unreachable)
    return results


def _check_api(cluster: Cluster, name: str, unreachable: Status) -> CheckResult:
    with timer() as elapsed:
        try:
            info = cluster.version()
        except KubernetesUnreachable as exc:
            return _result("kubernetes.api", name, unreachable, str(exc), elapsed())
        except KubernetesApiError as exc:
            if exc.status in (401, 403):
                message = (
                    f"unauthorized: {cluster.host} answered HTTP {exc.status} to GET /version "
                    "(token expired, revoked or for another cluster?)"
                )
            else:
                message = f"{cluster.host} answered GET /version with {exc}"
            return _result("kubernetes.api", name, Status.CRITICAL, message, elapsed())
        latency = elapsed()
    return CheckResult(
        check="kubernetes.api",
        target=name,
        status=Status.OK,
        value=round(latency, 4),
        unit="s",
        message=f"reachable, Kubernetes {info.get('gitVersion', '?')}, {latency * 1000:.0f} ms",
        duration=round(latency, 4),
    )


def _check_nodes(cluster: Cluster, name: str, unreachable: Status) -> CheckResult:
    with timer() as elapsed:
        try:
            nodes = cluster.nodes()
        except (KubernetesUnreachable, KubernetesApiError) as exc:
            return _failure("kubernetes.nodes", name, exc, "list nodes", unreachable, elapsed())
    not_ready: list[str] = []
    pressured: list[str] = []
    for node in nodes:
        node_name = node.get("metadata", {}).get("name", "?")
        conditions = _conditions(node)
        ready = conditions.get("Ready", {})
        if ready.get("status") != "True":
            why = ready.get("reason") or "no Ready condition"
            not_ready.append(f"{node_name} not Ready ({ready.get('status', '?')}: {why})")
        for kind in PRESSURE_CONDITIONS:
            if conditions.get(kind, {}).get("status") == "True":
                pressured.append(f"{node_name} {kind}")
    parts = []
    if not_ready:
        parts.append(f"{len(not_ready)} of {len(nodes)} nodes not Ready: {_names(not_ready)}")
    if pressured:
        parts.append(f"pressure: {_names(pressured)}")
    if not nodes:
        status, message = Status.CRITICAL, "no nodes registered: nothing can be scheduled"
    elif parts:
        status, message = (Status.CRITICAL if not_ready else Status.WARN), "; ".join(parts)
    else:
        status, message = Status.OK, f"{len(nodes)} nodes Ready, no pressure"
    return _result(
        "kubernetes.nodes", name, status, message, elapsed(), len(not_ready) + len(pressured)
    )


def _check_namespace(
    cluster: Cluster,
    target: KubernetesTarget,
    namespace: str | None,
    now: datetime,
    unreachable: Status,
) -> list[CheckResult]:
    name = target.name
    where = f"namespace {namespace}" if namespace else "all namespaces"

    def check(short: str) -> str:
        return f"kubernetes.{short}[{namespace}]" if namespace else f"kubernetes.{short}"

    if namespace is not None:
        with timer() as elapsed:
            try:
                cluster.namespace(namespace)
            except KubernetesApiError as exc:
                if exc.status == 404:
                    message = f"namespace {namespace} not found (kubectl get namespaces)"
                    return [
                        _result(check(short), name, Status.CRITICAL, message, elapsed())
                        for short in namespaced_checks(target)
                    ]
                # 403: may not read namespaces; the lists below tell what they can
            except KubernetesUnreachable:
                pass  # each list below reports it with its own check name

    results: list[CheckResult] = []
    with timer() as elapsed:
        try:
            pods = cluster.pods(namespace, target.selector)
        except (KubernetesUnreachable, KubernetesApiError) as exc:
            action = f"list pods in {where}"
            results += [
                _failure(check(short), name, exc, action, unreachable, elapsed())
                for short in ("pods_not_ready", "crashloop", "restarts")
            ]
            pods = None
        else:
            live = [p for p in pods if not p.get("metadata", {}).get("deletionTimestamp")]
            took = elapsed()
            results += [
                _pods_not_ready(check("pods_not_ready"), name, live, now, took),
                _crashloop(check("crashloop"), name, live, took),
                _restarts(check("restarts"), name, live, now, target, took),
            ]
    with timer() as elapsed:
        try:
            deployments = cluster.deployments(namespace, target.selector)
        except (KubernetesUnreachable, KubernetesApiError) as exc:
            action = f"list deployments in {where}"
            results.append(
                _failure(check("deployments"), name, exc, action, unreachable, elapsed())
            )
        else:
            results.append(_deployments(check("deployments"), name, deployments, elapsed()))
    with timer() as elapsed:
        try:
            hpas = cluster.hpas(namespace)
        except (KubernetesUnreachable, KubernetesApiError) as exc:
            action = f"list horizontalpodautoscalers in {where}"
            results.append(_failure(check("hpa_at_max"), name, exc, action, unreachable, elapsed()))
        else:
            results.append(_hpa_at_max(check("hpa_at_max"), name, hpas, elapsed()))
    if target.metrics:
        results.append(_check_usage(cluster, target, namespace, pods, unreachable))
    if target.network_policies and namespace is not None:
        results.append(_check_policies(cluster, target, namespace, unreachable))
    return results


def namespaced_checks(target: KubernetesTarget) -> list[str]:
    """The short names of the per-namespace checks this target makes."""
    shorts = list(NAMESPACED_CHECKS)
    if target.metrics:
        shorts.append("usage")
    if target.network_policies:
        shorts.append("network_policies")
    return shorts


def _check_usage(
    cluster: Cluster,
    target: KubernetesTarget,
    namespace: str | None,
    pods: list[dict[str, Any]] | None,
    unreachable: Status,
) -> CheckResult:
    check = f"kubernetes.usage[{namespace}]" if namespace else "kubernetes.usage"
    where = f"namespace {namespace}" if namespace else "all namespaces"
    with timer() as elapsed:
        if pods is None:
            message = f"not measured: the pods of {where} could not be listed"
            return _result(check, target.name, Status.UNKNOWN, message, elapsed())
        try:
            metrics = cluster.pod_metrics(namespace)
        except (KubernetesUnreachable, KubernetesApiError) as exc:
            if isinstance(exc, KubernetesApiError) and exc.status == 404:
                message = (
                    "metrics.k8s.io is not served: install metrics-server, or set metrics: "
                    "false on this target"
                )
                return _result(check, target.name, Status.UNKNOWN, message, elapsed())
            action = f"read pod metrics in {where}"
            return _failure(check, target.name, exc, action, unreachable, elapsed())
        return usage_result(check, target.name, pods, metrics, target.usage, elapsed())


def _check_policies(
    cluster: Cluster, target: KubernetesTarget, namespace: str, unreachable: Status
) -> CheckResult:
    check = f"kubernetes.network_policies[{namespace}]"
    with timer() as elapsed:
        try:
            policies = cluster.network_policies(namespace)
        except (KubernetesUnreachable, KubernetesApiError) as exc:
            action = f"list networkpolicies in namespace {namespace}"
            return _failure(check, target.name, exc, action, unreachable, elapsed())
    if not policies:
        message = (
            f"no NetworkPolicy in namespace {namespace}: every pod accepts traffic from "
            "anywhere in the cluster"
        )
        return _result(check, target.name, Status.WARN, message, elapsed(), 0)
    names = [p.get("metadata", {}).get("name", "?") for p in policies]
    everything = [
        n
        for n, p in zip(names, policies, strict=True)
        if not ((p.get("spec") or {}).get("podSelector") or {})
    ]
    scope = (
        f"; {', '.join(everything)} selects every pod"
        if everything
        else "; none selects every pod (no default policy)"
    )
    message = f"{len(policies)} NetworkPolic{'y' if len(policies) == 1 else 'ies'}: "
    message += _names(names) + scope
    return _result(check, target.name, Status.OK, message, elapsed(), len(policies))


def _quantity(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(parse_quantity(value))
    except (ValueError, TypeError):
        return None


def _amount(resource: str, value: float) -> str:
    if resource == "cpu":
        return f"{value * 1000:.0f}m"
    return f"{value / 2**20:.0f}Mi"


def usage_result(
    check: str,
    name: str,
    pods: list[dict[str, Any]],
    metrics: list[dict[str, Any]],
    threshold: Threshold,
    took: float = 0.0,
) -> CheckResult:
    """Every container's usage (PodMetrics) against the requests and limits of its pod spec;
    graded on the highest % of a limit."""
    specs: dict[tuple[str, str, str], dict[str, Any]] = {}
    for pod in pods:
        meta = pod.get("metadata", {})
        for container in (pod.get("spec") or {}).get("containers") or []:
            key = (meta.get("namespace", ""), meta.get("name", ""), container.get("name", ""))
            specs[key] = container.get("resources") or {}
    worst_share: tuple[float, str] | None = None
    over_request: list[str] = []
    unlimited: list[str] = []
    measured_containers = 0
    for item in metrics:
        meta = item.get("metadata", {})
        for container in item.get("containers") or []:
            key = (meta.get("namespace", ""), meta.get("name", ""), container.get("name", ""))
            resources = specs.get(key)
            if resources is None:
                continue  # a pod the selector left out, or gone since it was listed
            measured_containers += 1
            label = "/".join(key)
            for resource in ("memory", "cpu"):
                used = _quantity((container.get("usage") or {}).get(resource))
                if used is None:
                    continue
                request = _quantity((resources.get("requests") or {}).get(resource))
                limit = _quantity((resources.get("limits") or {}).get(resource))
                if request and used > request:
                    over_request.append(
                        f"{label} {resource} {_amount(resource, used)} > "
                        f"{_amount(resource, request)}"
                    )
                if limit:
                    share = 100 * used / limit
                    text = (
                        f"{label} {resource} {_amount(resource, used)} of "
                        f"{_amount(resource, limit)} limit ({share:.1f}%)"
                    )
                    if worst_share is None or share > worst_share[0]:
                        worst_share = (share, text)
                elif resource == "memory":
                    unlimited.append(label)
    notes = []
    if over_request:
        notes.append(f"{len(over_request)} above their requests: {_names(over_request)}")
    if unlimited:
        notes.append(f"{len(unlimited)} with no memory limit: {_names(unlimited)}")
    tail = "".join(f"; {n}" for n in notes)
    if measured_containers == 0:
        status = Status.OK if not specs else Status.UNKNOWN
        message = "no pods" if not specs else "no metrics for these pods yet (metrics-server)"
        return _result(check, name, status, message, took)
    if worst_share is None:
        message = f"{measured_containers} containers measured, none sets a limit{tail}"
        return _result(check, name, Status.OK, message, took)
    value = round(worst_share[0], 1)
    message = f"busiest: {worst_share[1]}; {measured_containers} containers measured{tail}"
    return measured(check, name, value, threshold, message, unit="%", duration=took)


def _pods_not_ready(
    check: str, name: str, pods: list[dict[str, Any]], now: datetime, took: float
) -> CheckResult:
    bad: list[str] = []
    for pod in pods:
        status = pod.get("status") or {}
        phase = status.get("phase")
        label = _label(pod)
        if phase == "Running":
            if _conditions(pod).get("Ready", {}).get("status") != "True":
                waiting = [
                    c.get("name", "?")
                    for c in status.get("containerStatuses") or []
                    if not c.get("ready")
                ]
                detail = f" ({', '.join(waiting)} not ready)" if waiting else ""
                bad.append(f"{label} Running but not Ready{detail}")
        elif phase == "Pending":
            created = _timestamp(pod.get("metadata", {}).get("creationTimestamp"))
            if created is not None and now - created > PENDING_GRACE:
                bad.append(f"{label} Pending for {_age(now - created)}{_pending_reason(pod)}")
        elif phase == "Unknown":
            bad.append(f"{label} in phase Unknown (its node stopped reporting)")
    if bad:
        status_, message = Status.WARN, f"{len(bad)} pods not ready: {_names(bad)}"
    else:
        status_, message = Status.OK, f"{len(pods)} pods, all ready or completed"
    return _result(check, name, status_, message, took, len(bad))


def _crashloop(check: str, name: str, pods: list[dict[str, Any]], took: float) -> CheckResult:
    bad: list[str] = []
    for pod in pods:
        for container in _container_statuses(pod):
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason not in WAITING_FAILURES:
                continue
            entry = f"{_label(pod)}/{container.get('name', '?')}: {reason}"
            if reason == "CrashLoopBackOff":
                entry += f" ({container.get('restartCount', 0)} restarts)"
            elif waiting.get("message"):
                entry += f" ({shorten(waiting['message'], 80)})"
            bad.append(entry)
    if bad:
        return _result(
            check,
            name,
            Status.CRITICAL,
            f"{len(bad)} containers failing: {_names(bad)}",
            took,
            len(bad),
        )
    return _result(
        check, name, Status.OK, "no container crash-looping or failing to start", took, 0
    )


def _restarts(
    check: str,
    name: str,
    pods: list[dict[str, Any]],
    now: datetime,
    target: KubernetesTarget,
    took: float,
) -> CheckResult:
    window = target.restart_window
    restarted: list[tuple[int, str]] = []
    for pod in pods:
        started = _timestamp((pod.get("status") or {}).get("startTime"))
        pod_in_window = started is not None and now - started <= window
        for container in _container_statuses(pod):
            last = ((container.get("lastState") or {}).get("terminated")) or {}
            finished = _timestamp(last.get("finishedAt"))
            if finished is None or now - finished > window:
                continue
            total = int(container.get("restartCount") or 0)
            count = max(total, 1) if pod_in_window else 1
            why = last.get("reason") or "terminated"
            detail = (
                f"{_label(pod)}/{container.get('name', '?')}: {count} restarts within "
                f"{_age(window)} ({total} in total), last {_age(now - finished)} ago "
                f"({why}, exit {last.get('exitCode', '?')})"
            )
            restarted.append((count, detail))
    worst = max(restarted, default=(0, ""), key=lambda item: item[0])
    if restarted:
        message = f"{len(restarted)} containers restarted within {_age(window)}; worst: {worst[1]}"
    else:
        message = f"no container restarted within {_age(window)}"
    return CheckResult(
        check=check,
        target=name,
        status=grade(worst[0], target.restarts),
        value=worst[0],
        threshold=describe(target.restarts, " restarts"),
        message=message,
        duration=round(took, 4),
    )


def _deployments(
    check: str, name: str, deployments: list[dict[str, Any]], took: float
) -> CheckResult:
    down: list[str] = []
    degraded: list[str] = []
    for deployment in deployments:
        spec = deployment.get("spec") or {}
        status = deployment.get("status") or {}
        desired = spec.get("replicas", 1)
        if not desired:
            continue  # scaled to zero on purpose
        available = status.get("availableReplicas") or 0
        unavailable = status.get("unavailableReplicas") or 0
        if unavailable > 0 or available < desired:
            entry = f"{_label(deployment)} {available}/{desired} available"
            (degraded if available else down).append(entry)
    bad = down + degraded
    if not bad:
        return _result(
            check,
            name,
            Status.OK,
            f"{len(deployments)} deployments, all replicas available",
            took,
            0,
        )
    status_ = Status.CRITICAL if down else Status.WARN
    return _result(
        check, name, status_, f"{len(bad)} deployments degraded: {_names(bad)}", took, len(bad)
    )


def _hpa_at_max(check: str, name: str, hpas: list[dict[str, Any]], took: float) -> CheckResult:
    at_max: list[str] = []
    for hpa in hpas:
        spec = hpa.get("spec") or {}
        maximum = spec.get("maxReplicas")
        if maximum is None or spec.get("minReplicas", 1) == maximum:
            continue  # pinned: always "at max" by design
        current = (hpa.get("status") or {}).get("currentReplicas") or 0
        if current >= maximum:
            at_max.append(f"{_label(hpa)} {current}/{maximum} replicas")
    if at_max:
        message = f"{len(at_max)} autoscalers at maxReplicas: {_names(at_max)}"
        return _result(check, name, Status.WARN, message, took, len(at_max))
    return _result(check, name, Status.OK, f"{len(hpas)} autoscalers below maxReplicas", took, 0)


# --- helpers ---------------------------------------------------------------------------------


def _result(
    check: str, name: str, status: Status, message: str, took: float, value: Any = None
) -> CheckResult:
    return CheckResult(
        check=check,
        target=name,
        status=status,
        value=value,
        message=message,
        duration=round(took, 4),
    )


def _failure(
    check: str, name: str, exc: Exception, action: str, unreachable: Status, took: float
) -> CheckResult:
    """A list that failed: unreachable -> the caller's status; refused or broken -> unknown."""
    if isinstance(exc, KubernetesUnreachable):
        return _result(check, name, unreachable, f"cannot {action}: {exc}", took)
    assert isinstance(exc, KubernetesApiError)
    hint = " (RBAC: grant get/list on it)" if exc.status in (401, 403) else ""
    return _result(check, name, Status.UNKNOWN, f"cannot {action}: {exc}{hint}", took)


def _redacted(results: list[CheckResult], secrets: list[str]) -> list[CheckResult]:
    """Last line of defence: no message carries a token, whatever built it."""
    secrets = [s for s in secrets if len(s) >= 4]
    if not secrets:
        return results
    out = []
    for result in results:
        message = result.message
        for secret in secrets:
            message = message.replace(secret, MASK)
        out.append(result.model_copy(update={"message": message}))
    return out


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_NAMED])
    return shown + (f" and {len(items) - MAX_NAMED} more" if len(items) > MAX_NAMED else "")


def _label(obj: dict[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    return f"{metadata.get('namespace', '?')}/{metadata.get('name', '?')}"


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return {c.get("type"): c for c in conditions if isinstance(c, dict)}


def _container_statuses(pod: dict[str, Any]) -> list[dict[str, Any]]:
    status = pod.get("status") or {}
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


def _pending_reason(pod: dict[str, Any]) -> str:
    scheduled = _conditions(pod).get("PodScheduled", {})
    if scheduled.get("status") == "False":
        return (
            f" ({scheduled.get('reason', 'not scheduled')}: "
            f"{shorten(scheduled.get('message', ''), 80)})"
        )
    for container in _container_statuses(pod):
        reason = ((container.get("state") or {}).get("waiting") or {}).get("reason")
        if reason:
            return f" ({container.get('name', '?')}: {reason})"
    return ""


def _timestamp(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 2 * 3600:
        return f"{seconds // 60}m"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"
