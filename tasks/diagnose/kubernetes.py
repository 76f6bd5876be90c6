"""The Kubernetes section: pods with their containers' state, last state and restart reasons
(`kubectl describe pod | grep -A10 "Last State"`), warning events (`kubectl get events`), the
deployments' revisions and conditions, and the previous container's log of each pod that
restarted (`kubectl logs --previous`)."""

from __future__ import annotations

from typing import Any

from runbook.config import DiagnosticsSettings, KubernetesTarget
from runbook.systems.kubernetes import connect
from tasks.diagnose.sections import Collected

EVENTS_KEPT = 100
PREVIOUS_LOGS = 10  # containers whose previous log is read, worst first


def pod_state(pod: dict[str, Any]) -> dict[str, Any]:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    containers = []
    for c in status.get("containerStatuses") or []:
        state = c.get("state") or {}
        last = (c.get("lastState") or {}).get("terminated")
        containers.append(
            {
                "name": c.get("name"),
                "ready": c.get("ready"),
                "restarts": c.get("restartCount", 0),
                "state": next(iter(state), None),
                "reason": next((v.get("reason") for v in state.values() if v), None),
                "last_state": (
                    {
                        "reason": last.get("reason"),
                        "exit_code": last.get("exitCode"),
                        "finished_at": last.get("finishedAt"),
                    }
                    if last
                    else None
                ),
            }
        )
    return {
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "phase": status.get("phase"),
        "node": (pod.get("spec") or {}).get("nodeName"),
        "containers": containers,
    }


def _event(event: dict[str, Any]) -> dict[str, Any]:
    involved = event.get("involvedObject") or {}
    return {
        "type": event.get("type"),
        "reason": event.get("reason"),
        "object": f"{involved.get('kind', '?')}/{involved.get('name', '?')}",
        "namespace": (event.get("metadata") or {}).get("namespace"),
        "count": event.get("count"),
        "last_seen": event.get("lastTimestamp") or event.get("eventTime"),
        "message": (event.get("message") or "")[:500],
    }


def _deployment(item: dict[str, Any]) -> dict[str, Any]:
    meta, status = item.get("metadata") or {}, item.get("status") or {}
    return {
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "revision": (meta.get("annotations") or {}).get("deployment.kubernetes.io/revision"),
        "replicas": status.get("replicas"),
        "ready": status.get("readyReplicas", 0),
        "conditions": [
            {k: c.get(k) for k in ("type", "status", "reason", "message")}
            for c in status.get("conditions") or []
        ],
    }


def collect_kubernetes(target: KubernetesTarget, settings: DiagnosticsSettings) -> Collected:
    namespaces: list[str | None] = list(target.namespaces) or [None]
    pods, events, deployments = [], [], []
    errors: dict[str, str] = {}
    with connect(target) as cluster:
        for namespace in namespaces:
            pods += [pod_state(p) for p in cluster.pods(namespace)]
            try:
                events += [_event(e) for e in cluster.events(namespace)]
            except Exception as exc:  # noqa: BLE001 - RBAC may hide events only
                errors[f"events {namespace or 'all'}"] = str(exc)
            try:
                deployments += [_deployment(d) for d in cluster.deployments(namespace)]
            except Exception as exc:  # noqa: BLE001
                errors[f"deployments {namespace or 'all'}"] = str(exc)
        restarted = sorted(
            (
                (pod, c)
                for pod in pods
                for c in pod["containers"]
                if c["restarts"] or c["last_state"]
            ),
            key=lambda pc: -pc[1]["restarts"],
        )
        for pod, container in restarted[:PREVIOUS_LOGS]:
            try:
                text = cluster.pod_log(
                    pod["namespace"],
                    pod["name"],
                    container["name"],
                    previous=True,
                    tail=settings.log_lines,
                )
                container["previous_log"] = text.splitlines()
            except Exception as exc:  # noqa: BLE001 - the previous container may be gone
                container["previous_log_error"] = str(exc)
    warnings = [e for e in events if e["type"] == "Warning"]
    warnings.sort(key=lambda e: e["last_seen"] or "", reverse=True)
    data: dict[str, Any] = {
        "pods": pods,
        "events": warnings[:EVENTS_KEPT] + [e for e in events if e["type"] != "Warning"][:20],
        "deployments": deployments,
    }
    if errors:
        data["errors"] = errors
    findings = [
        f"pod {p['namespace']}/{p['name']} container {c['name']}: {c['restarts']} restarts, "
        f"last {c['last_state']['reason']} (exit {c['last_state']['exit_code']})"
        for p, c in restarted
        if c["last_state"]
    ]
    findings += [
        f"pod {p['namespace']}/{p['name']} container {c['name']} is {c['state']}: {c['reason']}"
        for p in pods
        for c in p["containers"]
        if c["state"] == "waiting"
    ]
    findings += [
        f"event {e['reason']} on {e['object']}: {e['message'][:160]}" for e in warnings[:5]
    ]
    summary = (
        f"{len(pods)} pods, {len(restarted)} containers restarted, "
        f"{len(warnings)} warning events, {len(deployments)} deployments"
    )
    return Collected(data=data, summary=summary, findings=findings)
