"""Fake Kubernetes, Docker Engine and Alertmanager API servers, and an application with a
maintenance-mode endpoint, for tests.

Each fake is a stdlib `ThreadingHTTPServer` on 127.0.0.1 (port 0) that answers the paths the
official clients (`kubernetes` 37.x, `docker` 7.x) really request, with JSON in the shapes the
real servers send. Every request is recorded (`fake.requests`) and every path the fake does not
know is answered 404 and kept in `fake.unhandled`, so a test can assert the client asked for
nothing the fake had to guess at.

The builders (`pod`, `container_status`, `deployment`, `hpa`, `node`, `docker_container`) make
objects in the real API shapes; tests change the fake's state through them, not by patching the
code under test.

Import the fixtures into a test module with
`from tests.support.fake_apis import fake_docker, fake_kubernetes  # noqa: F401` (likewise
`fake_alertmanager`, `fake_app`).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

Response = tuple[int, Any, dict[str, str]]  # status, JSON body (or str, bytes), extra headers


def ago(delta: timedelta) -> str:
    """An RFC 3339 timestamp `delta` before now, as both APIs write them (UTC, 'Z')."""
    return (datetime.now(UTC) - delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def closed_port_url(scheme: str = "http") -> str:
    """A URL on 127.0.0.1 whose port refuses connections (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"{scheme}://127.0.0.1:{port}"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body or b"null")


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients closing kept-alive connections at exit is not an error of the fake


@dataclass
class FakeServer:
    """Routing, recording and the server thread; subclasses implement `answer`."""

    requests: list[Request] = field(default_factory=list)
    delay: float = 0.0  # seconds to wait before answering: a server too slow for the timeout
    slow: dict[str, float] = field(default_factory=dict)  # path -> delay for that path only
    unhandled: list[str] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _scheme: str = "http"

    def answer(self, request: Request) -> Response | None:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"{self._scheme}://{host}:{port}"

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    def start(self, tls: tuple[Path, Path] | None = None) -> None:
        """Serve on a free port of 127.0.0.1; `tls` = (certificate, key) serves HTTPS."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as both real servers speak
            disable_nagle_algorithm = True  # headers and body go out in two writes

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                )
                fake.requests.append(request)
                pause = fake.slow.get(request.path, fake.delay)
                if pause:
                    time.sleep(pause)
                answer = fake.answer(request)
                if answer is None:
                    fake.unhandled.append(f"{self.command} {self.path}")
                    answer = (404, "404 page not found\n", {})
                status, body, headers = answer
                if isinstance(body, bytes):  # a raw stream (docker logs)
                    data = body
                    content_type = headers.pop("Content-Type", "application/octet-stream")
                elif isinstance(body, str):
                    data, content_type = body.encode(), "text/plain; charset=utf-8"
                else:
                    data, content_type = json.dumps(body).encode(), "application/json"
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # keep pytest output clean; requests are in fake.requests

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self._scheme = "https"
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


# --- Kubernetes ------------------------------------------------------------------------------


def _uid(*parts: str) -> str:
    digest = hashlib.sha1("/".join(parts).encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def container_status(
    name: str = "app",
    *,
    ready: bool = True,
    restarts: int = 0,
    waiting: str | None = None,
    waiting_message: str = "",
    last_finished: timedelta | None = None,
    last_reason: str = "Error",
    last_exit_code: int = 1,
    image: str = "registry.example.com/app:1.4.2",
) -> dict[str, Any]:
    """One entry of pod.status.containerStatuses (core/v1 ContainerStatus)."""
    if waiting is not None:
        state: dict[str, Any] = {"waiting": {"reason": waiting, "message": waiting_message}}
    else:
        state = {"running": {"startedAt": ago(timedelta(minutes=30))}}
    last_state: dict[str, Any] = {}
    if last_finished is not None:
        last_state = {
            "terminated": {
                "exitCode": last_exit_code,
                "reason": last_reason,
                "startedAt": ago(last_finished + timedelta(minutes=10)),
                "finishedAt": ago(last_finished),
                "containerID": f"containerd://{_uid(name, 'previous').replace('-', '')}",
            }
        }
    return {
        "name": name,
        "state": state,
        "lastState": last_state,
        "ready": ready,
        "restartCount": restarts,
        "image": image,
        "imageID": f"{image.split(':')[0]}@sha256:{'ab' * 32}",
        "containerID": f"containerd://{_uid(name).replace('-', '')}",
        "started": waiting is None,
    }


def pod(
    name: str,
    namespace: str = "default",
    *,
    phase: str = "Running",
    ready: bool | None = None,
    containers: list[dict[str, Any]] | None = None,
    age: timedelta = timedelta(days=5),
    started: timedelta | None = None,
    unschedulable: bool = False,
    resources: dict[str, dict[str, str]] | None = None,
    node_name: str = "node-1",
) -> dict[str, Any]:
    """A core/v1 Pod as the API lists it. `ready` defaults to all containers ready;
    `resources` ({"requests": {"memory": "128Mi"}, "limits": {...}}) is every container's."""
    statuses = containers if containers is not None else [container_status()]
    if ready is None:
        ready = phase == "Running" and all(c["ready"] for c in statuses)
    created = ago(age)
    start_time = ago(started if started is not None else age - timedelta(seconds=2))
    ready_status = "True" if ready else "False"
    conditions: list[dict[str, Any]] = [
        {
            "type": "PodScheduled",
            "status": "True",
            "lastProbeTime": None,
            "lastTransitionTime": created,
        },
    ]
    status: dict[str, Any] = {"phase": phase, "conditions": conditions, "qosClass": "Burstable"}
    if phase == "Pending" and unschedulable:
        conditions[0] = {
            "type": "PodScheduled",
            "status": "False",
            "lastProbeTime": None,
            "lastTransitionTime": created,
            "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient cpu.",
        }
    else:
        conditions += [
            {
                "type": "Initialized",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": start_time,
            },
            {
                "type": "Ready",
                "status": ready_status,
                "lastProbeTime": None,
                "lastTransitionTime": start_time,
            },
            {
                "type": "ContainersReady",
                "status": ready_status,
                "lastProbeTime": None,
                "lastTransitionTime": start_time,
            },
        ]
        status.update(
            hostIP="10.0.1.12",
            podIP="10.244.1.17",
            podIPs=[{"ip": "10.244.1.17"}],
            startTime=start_time,
            containerStatuses=statuses,
        )
    if phase == "Succeeded":
        for entry in statuses:
            entry["state"] = {
                "terminated": {
                    "exitCode": 0,
                    "reason": "Completed",
                    "startedAt": start_time,
                    "finishedAt": start_time,
                }
            }
            entry["ready"] = False
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": _uid(namespace, name),
            "resourceVersion": "48151",
            "creationTimestamp": created,
            "labels": {"app": name.rsplit("-", 2)[0]},
        },
        "spec": {
            "containers": [
                {
                    "name": c["name"],
                    "image": c["image"],
                    "resources": dict(resources or {}),
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "imagePullPolicy": "IfNotPresent",
                }
                for c in statuses
            ],
            "restartPolicy": "Never" if phase == "Succeeded" else "Always",
            "nodeName": "" if phase == "Pending" else node_name,
            "serviceAccountName": "default",
        },
        "status": status,
    }


def deployment(
    name: str, namespace: str = "default", *, replicas: int = 3, available: int | None = None
) -> dict[str, Any]:
    """An apps/v1 Deployment whose status has `available` of `replicas` available."""
    available = replicas if available is None else available
    labels = {"app": name}
    status: dict[str, Any] = {
        "observedGeneration": 4,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": available,
        "conditions": [
            {
                "type": "Available",
                "status": "True" if available else "False",
                "lastUpdateTime": ago(timedelta(hours=1)),
                "lastTransitionTime": ago(timedelta(hours=1)),
                "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                "message": "Deployment has minimum availability.",
            },
        ],
    }
    if available:  # the API omits zero counts
        status["availableReplicas"] = available
    if replicas - available:
        status["unavailableReplicas"] = replicas - available
    if not available:
        del status["readyReplicas"]
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": _uid("deploy", namespace, name),
            "resourceVersion": "9001",
            "generation": 4,
            "creationTimestamp": ago(timedelta(days=30)),
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]},
            },
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
            },
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
        },
        "status": status,
    }


def hpa(
    name: str, namespace: str = "default", *, current: int, max_replicas: int, min_replicas: int = 2
) -> dict[str, Any]:
    """An autoscaling/v2 HorizontalPodAutoscaler scaling deployment `name`."""
    limited = current >= max_replicas
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": _uid("hpa", namespace, name),
            "resourceVersion": "777",
            "creationTimestamp": ago(timedelta(days=30)),
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
        "status": {
            "currentReplicas": current,
            "desiredReplicas": current,
            "lastScaleTime": ago(timedelta(minutes=20)),
            "currentMetrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "current": {
                            "averageUtilization": 95 if limited else 40,
                            "averageValue": "950m" if limited else "400m",
                        },
                    },
                }
            ],
            "conditions": [
                {
                    "type": "AbleToScale",
                    "status": "True",
                    "reason": "ReadyForNewScale",
                    "lastTransitionTime": ago(timedelta(days=1)),
                },
                {
                    "type": "ScalingLimited",
                    "status": "True" if limited else "False",
                    "reason": "TooManyReplicas" if limited else "DesiredWithinRange",
                    "lastTransitionTime": ago(timedelta(minutes=20)),
                },
            ],
        },
    }


def node(
    name: str,
    *,
    ready: bool = True,
    pressure: tuple[str, ...] = (),
    allocatable: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A core/v1 Node; `pressure` names conditions that are True (e.g. "DiskPressure");
    `allocatable` its schedulable cpu/memory/pods (default: 2 CPUs, ~7.7 GiB, 110 pods)."""
    allocatable = allocatable or {
        "cpu": "2",
        "memory": "8049436Ki",
        "pods": "110",
        "ephemeral-storage": "46779957006",
    }
    now = ago(timedelta(seconds=10))
    conditions = []
    for kind in ("MemoryPressure", "DiskPressure", "PIDPressure"):
        hit = kind in pressure
        conditions.append(
            {
                "type": kind,
                "status": "True" if hit else "False",
                "lastHeartbeatTime": now,
                "lastTransitionTime": ago(timedelta(hours=2)),
                "reason": f"Kubelet{'Has' if hit else 'HasNo'}{kind}",
                "message": f"kubelet has {'' if hit else 'no '}{kind.lower()}",
            }
        )
    conditions.append(
        {
            "type": "Ready",
            "status": "True" if ready else "Unknown",
            "lastHeartbeatTime": now,
            "lastTransitionTime": ago(timedelta(hours=2)),
            "reason": "KubeletReady" if ready else "NodeStatusUnknown",
            "message": "kubelet is posting ready status"
            if ready
            else "Kubelet stopped posting node status.",
        }
    )
    return {
        "metadata": {
            "name": name,
            "uid": _uid("node", name),
            "resourceVersion": "31337",
            "creationTimestamp": ago(timedelta(days=90)),
            "labels": {"kubernetes.io/hostname": name},
        },
        "spec": {"podCIDR": "10.244.1.0/24"},
        "status": {
            "capacity": {**allocatable, "ephemeral-storage": "50620216Ki"},
            "allocatable": allocatable,
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": "10.0.1.12"},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "machineID": "m",
                "systemUUID": "s",
                "bootID": "b",
                "kernelVersion": "6.8.0",
                "osImage": "Ubuntu 24.04 LTS",
                "containerRuntimeVersion": "containerd://1.7.22",
                "kubeletVersion": "v1.31.2",
                "kubeProxyVersion": "v1.31.2",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    }


def _status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> Any:
    """A meta/v1 Status, as the API server answers errors."""
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


_LISTS = {  # collection path suffix -> (state attribute, list kind, apiVersion)
    ("api/v1", "pods"): ("pods", "PodList", "v1"),
    ("api/v1", "events"): ("events", "EventList", "v1"),
    ("apis/networking.k8s.io/v1", "networkpolicies"): (
        "network_policies",
        "NetworkPolicyList",
        "networking.k8s.io/v1",
    ),
    ("apis/apps/v1", "deployments"): ("deployments", "DeploymentList", "apps/v1"),
    ("apis/autoscaling/v2", "horizontalpodautoscalers"): (
        "hpas",
        "HorizontalPodAutoscalerList",
        "autoscaling/v2",
    ),
    ("apis/metrics.k8s.io/v1beta1", "pods"): (
        "pod_metrics",
        "PodMetricsList",
        "metrics.k8s.io/v1beta1",
    ),
    ("apis/metrics.k8s.io/v1beta1", "nodes"): (
        "node_metrics",
        "NodeMetricsList",
        "metrics.k8s.io/v1beta1",
    ),
}
_VERSION = r"v\d+(?:(?:alpha|beta)\d+)?"
_NAMESPACED = re.compile(rf"^/(api/v1|apis/[a-z.0-9]+/{_VERSION})/namespaces/([^/]+)/([a-z]+)$")
_CLUSTER = re.compile(rf"^/(api/v1|apis/[a-z.0-9]+/{_VERSION})/([a-z]+)$")


def pod_metrics(
    name: str, namespace: str = "default", containers: dict[str, tuple[str, str]] | None = None
) -> dict[str, Any]:
    """A metrics.k8s.io/v1beta1 PodMetrics as metrics-server lists it (`kubectl top pods`):
    containers = {container: (cpu, memory)} in quantities ("2346425n", "15444Ki")."""
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "creationTimestamp": ago(timedelta(0)),
            "labels": {"app": name.rsplit("-", 2)[0]},
        },
        "timestamp": ago(timedelta(seconds=12)),
        "window": "17.2s",
        "containers": [
            {"name": container, "usage": {"cpu": cpu, "memory": memory}}
            for container, (cpu, memory) in (containers or {"app": ("2346425n", "15444Ki")}).items()
        ],
    }


def network_policy(
    name: str, namespace: str = "default", match_labels: dict[str, str] | None = None
) -> dict[str, Any]:
    """A networking.k8s.io/v1 NetworkPolicy; `match_labels` None selects every pod (the usual
    default-deny)."""
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": _uid(namespace, f"netpol-{name}"),
            "resourceVersion": "48190",
            "creationTimestamp": ago(timedelta(days=30)),
        },
        "spec": {
            "podSelector": {"matchLabels": match_labels} if match_labels else {},
            "policyTypes": ["Ingress"],
        },
    }


def node_metrics(name: str, cpu: str = "180113596n", memory: str = "1432048Ki") -> dict[str, Any]:
    """A metrics.k8s.io/v1beta1 NodeMetrics as metrics-server lists it (`kubectl top nodes`)."""
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": ago(timedelta(0)),
            "labels": {"kubernetes.io/hostname": name},
        },
        "timestamp": ago(timedelta(seconds=9)),
        "window": "20.028s",
        "usage": {"cpu": cpu, "memory": memory},
    }


@dataclass
class FakeKubernetes(FakeServer):
    """A Kubernetes API server: /version, namespaces, pods, deployments, HPAs and nodes.

    Like the real one, listing pods in a namespace that does not exist answers 200 with no
    items; only GET /api/v1/namespaces/{name} says 404. `token` (when set) must come as
    `Authorization: Bearer <token>`, else 401. `forbidden` names resources ("nodes",
    "namespaces", "pods", ...) answered 403 as RBAC would. `echo_auth` makes error bodies quote
    the Authorization header received, as a badly behaved proxy might, to test that no message
    leaks it.
    """

    token: str | None = None
    echo_auth: bool = False
    namespaces: set[str] = field(default_factory=lambda: {"default", "kube-system"})
    pods: list[dict[str, Any]] = field(default_factory=list)
    deployments: list[dict[str, Any]] = field(default_factory=list)
    hpas: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    network_policies: list[dict[str, Any]] = field(default_factory=list)
    # (namespace, pod, container, previous) -> the text `kubectl logs [--previous]` prints
    pod_logs: dict[tuple[str, str, str, bool], str] = field(default_factory=dict)
    # (namespace, pod, container) -> [(when written, line)] of the running container: answers
    # sinceSeconds and timestamps=true as the kubelet does (takes precedence over pod_logs)
    pod_log_lines: dict[tuple[str, str, str], list[tuple[datetime, str]]] = field(
        default_factory=dict
    )
    nodes: list[dict[str, Any]] = field(default_factory=lambda: [node("node-1")])
    # Rollouts (PATCH of a deployment's pod template, as `kubectl rollout restart`): "ns/name"
    # -> seconds until the new pods are available (None: never, a stuck rollout; not listed:
    # 0.3 s); `deadline_exceeded` names those whose stuck rollout passed progressDeadlineSeconds.
    rollouts: dict[str, float | None] = field(default_factory=dict)
    deadline_exceeded: set[str] = field(default_factory=set)
    _rolled: dict[str, float] = field(default_factory=dict)  # "ns/name" -> when patched
    # metrics.k8s.io/v1beta1 (metrics-server); `metrics_served` False: not installed, its paths
    # answer 404 as the API server does for a group it does not serve
    pod_metrics: list[dict[str, Any]] = field(default_factory=list)
    node_metrics: list[dict[str, Any]] = field(default_factory=list)
    metrics_served: bool = True
    forbidden: set[str] = field(default_factory=set)
    version: dict[str, str] = field(
        default_factory=lambda: {
            "major": "1",
            "minor": "31",
            "gitVersion": "v1.31.2",
            "gitCommit": "5864a4677267e6adeae276ad85882a8714d69d9d",
            "gitTreeState": "clean",
            "buildDate": "2024-10-22T20:28:14Z",
            "goVersion": "go1.22.8",
            "compiler": "gc",
            "platform": "linux/amd64",
        }
    )

    def add(self, *objects: dict[str, Any]) -> None:
        """Add pods, deployments, HPAs, nodes or their metrics (told apart by their shape)."""
        for obj in objects:
            spec = obj.get("spec", {})
            if "window" in obj:  # metrics.k8s.io
                (self.node_metrics if "usage" in obj else self.pod_metrics).append(obj)
            elif "podSelector" in spec:
                self.network_policies.append(obj)
            elif "involvedObject" in obj:
                self.events.append(obj)
            elif "containers" in spec:
                self.pods.append(obj)
            elif "scaleTargetRef" in spec:
                self.hpas.append(obj)
            elif "template" in spec:
                self.deployments.append(obj)
            else:
                self.nodes.append(obj)
            namespace = obj["metadata"].get("namespace")
            if namespace:
                self.namespaces.add(namespace)

    def answer(self, request: Request) -> Response | None:
        if request.method not in ("GET", "PATCH"):
            return None
        if self.token is not None:
            # As kube-apiserver: the scheme is case-insensitive (the in-cluster loader of the
            # official client sends "bearer").
            scheme, _, sent = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or sent != self.token:
                message = "Unauthorized" + self._echo(request)
                return 401, _status(401, "Unauthorized", message), {}
        path = request.path
        match = re.fullmatch(r"/apis/apps/v1/namespaces/([^/]+)/deployments/([^/]+)", path)
        if match:
            return self._deployment(request, *match.groups())
        if request.method != "GET":
            return None
        if path in ("/version", "/version/"):
            return 200, self.version, {}
        if path.startswith("/apis/metrics.k8s.io/") and not self.metrics_served:
            message = "the server could not find the requested resource"
            return 404, _status(404, "NotFound", message, {}), {}
        match = re.fullmatch(r"/api/v1/namespaces/([^/]+)", path)
        if match:
            return self._namespace(match.group(1))
        match = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/log", path)
        if match:
            return self._pod_log(request, *match.groups())
        match = _NAMESPACED.match(path)
        if match:
            group, namespace, resource = match.groups()
            return self._list(request, group, resource, namespace)
        match = _CLUSTER.match(path)
        if match:
            group, resource = match.groups()
            if (group, resource) == ("api/v1", "nodes"):
                if "nodes" in self.forbidden:
                    return self._forbidden("nodes", None, echo=self._echo(request))
                return 200, self._page(request, self.nodes, "NodeList", "v1"), {}
            return self._list(request, group, resource, None)
        return None

    def _deployment(self, request: Request, namespace: str, name: str) -> Response:
        """GET or PATCH (strategic merge: maps merged, as for a pod template's annotations)
        one apps/v1 Deployment. A PATCH that changes the pod template bumps the generation and
        starts a rollout, whose status the reads then report (`rollouts`)."""
        if "deployments" in self.forbidden:
            return self._forbidden("deployments", namespace, name=name)
        found = [
            d
            for d in self.deployments
            if d["metadata"]["namespace"] == namespace and d["metadata"]["name"] == name
        ]
        if not found:
            message = f'deployments.apps "{name}" not found'
            details = {"name": name, "group": "apps", "kind": "deployments"}
            return 404, _status(404, "NotFound", message, details), {}
        deployment = found[0]
        if request.method == "PATCH":
            if request.headers.get("content-type") != "application/strategic-merge-patch+json":
                message = f"unsupported patch type {request.headers.get('content-type')!r}"
                return 415, _status(415, "UnsupportedMediaType", message), {}
            template = json.dumps(deployment["spec"]["template"], sort_keys=True)
            _merge(deployment, request.json())
            if json.dumps(deployment["spec"]["template"], sort_keys=True) != template:
                deployment["metadata"]["generation"] += 1
                self._rolled[f"{namespace}/{name}"] = time.monotonic()
            deployment["metadata"]["resourceVersion"] = str(
                int(deployment["metadata"]["resourceVersion"]) + 1
            )
        self._roll(deployment)
        return 200, {"kind": "Deployment", "apiVersion": "apps/v1", **deployment}, {}

    def _roll(self, deployment: dict[str, Any]) -> None:
        """The status the deployment controller would report by now for a rollout started by
        a PATCH: one surge pod updated but not available until its time has come."""
        meta, spec = deployment["metadata"], deployment["spec"]
        ref = f"{meta['namespace']}/{meta['name']}"
        began = self._rolled.get(ref)
        if began is None:
            return
        replicas = spec["replicas"]
        after = self.rollouts.get(ref, 0.3)
        status = deployment["status"]
        status["observedGeneration"] = meta["generation"]
        progressing = {
            "type": "Progressing",
            "status": "True",
            "lastUpdateTime": ago(timedelta(0)),
            "lastTransitionTime": ago(timedelta(0)),
            "reason": "NewReplicaSetAvailable",
            "message": f'ReplicaSet "{meta["name"]}-{meta["generation"]}" has successfully '
            "progressed.",
        }
        if after is not None and time.monotonic() - began >= after:
            status.update(
                replicas=replicas,
                updatedReplicas=replicas,
                readyReplicas=replicas,
                availableReplicas=replicas,
            )
            status.pop("unavailableReplicas", None)
        else:
            status.update(
                replicas=replicas + 1,
                updatedReplicas=1,
                readyReplicas=replicas,
                availableReplicas=replicas,
                unavailableReplicas=1,
            )
            progressing["reason"] = "ReplicaSetUpdated"
            progressing["message"] = f'ReplicaSet "{meta["name"]}" is progressing.'
            if ref in self.deadline_exceeded:
                progressing.update(status="False", reason="ProgressDeadlineExceeded")
                progressing["message"] = f'ReplicaSet "{meta["name"]}" has timed out progressing.'
        others = [c for c in status.get("conditions", []) if c["type"] != "Progressing"]
        status["conditions"] = [*others, progressing]

    def _pod_log(self, request: Request, namespace: str, name: str) -> Response:
        """GET .../pods/{name}/log?container=&previous=&tailLines=, as the API server answers."""
        container = request.query.get("container", [""])[0]
        previous = request.query.get("previous", ["false"])[0].lower() == "true"
        timed = None if previous else self.pod_log_lines.get((namespace, name, container))
        if timed is not None:
            return 200, _timed_log(request, timed), {}
        text = self.pod_logs.get((namespace, name, container, previous))
        if text is None:
            what = "previous terminated container" if previous else "container"
            message = f'{what} "{container}" in pod "{name}" not found'
            return 400, _status(400, "BadRequest", message), {}
        tail = int(request.query.get("tailLines", ["0"])[0] or 0)
        lines = text.splitlines(keepends=True)
        return 200, "".join(lines[-tail:] if tail else lines), {}

    def _namespace(self, name: str) -> Response:
        if "namespaces" in self.forbidden:
            return self._forbidden("namespaces", None, name=name)
        if name not in self.namespaces:
            return (
                404,
                _status(
                    404,
                    "NotFound",
                    f'namespaces "{name}" not found',
                    {"name": name, "kind": "namespaces"},
                ),
                {},
            )
        return (
            200,
            {
                "kind": "Namespace",
                "apiVersion": "v1",
                "metadata": {
                    "name": name,
                    "uid": _uid("ns", name),
                    "resourceVersion": "12",
                    "creationTimestamp": ago(timedelta(days=200)),
                    "labels": {"kubernetes.io/metadata.name": name},
                },
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            },
            {},
        )

    def _list(
        self, request: Request, group: str, resource: str, namespace: str | None
    ) -> Response | None:
        known = _LISTS.get((group, resource))
        if known is None:
            return None
        if resource in self.forbidden:
            return self._forbidden(resource, namespace, echo=self._echo(request))
        attribute, kind, api_version = known
        if attribute == "deployments":
            for deployment in self.deployments:
                self._roll(deployment)
        selector = request.query.get("labelSelector", [""])[0]
        items = [
            item
            for item in getattr(self, attribute)
            if (namespace is None or item["metadata"]["namespace"] == namespace)
            and _selected(item["metadata"].get("labels") or {}, selector)
        ]
        return 200, self._page(request, items, kind, api_version), {}

    @staticmethod
    def _page(
        request: Request, items: list[dict[str, Any]], kind: str, api_version: str
    ) -> dict[str, Any]:
        """`limit` and `continue` as the API server pages lists (continue = an opaque token)."""
        start = int(request.query.get("continue", ["0"])[0])
        limit = int(request.query.get("limit", ["0"])[0]) or len(items) or 1
        page = items[start : start + limit]
        metadata: dict[str, Any] = {"resourceVersion": "48200"}
        if start + limit < len(items):
            metadata["continue"] = str(start + limit)
            metadata["remainingItemCount"] = len(items) - start - limit
        return {"kind": kind, "apiVersion": api_version, "metadata": metadata, "items": page}

    def _echo(self, request: Request) -> str:
        if not self.echo_auth:
            return ""
        return f" (credentials {request.headers.get('authorization', '')!r})"

    @staticmethod
    def _forbidden(
        resource: str, namespace: str | None, name: str | None = None, echo: str = ""
    ) -> Response:
        who = 'User "system:serviceaccount:monitoring:runbook"'
        verb = "get" if name else "list"
        where = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
        message = (
            f'{resource} is forbidden: {who} cannot {verb} resource "{resource}" '
            f'in API group "" {where}{echo}'
        )
        return 403, _status(403, "Forbidden", message, {"kind": resource}), {}


# --- Docker Engine ---------------------------------------------------------------------------

DOCKER_API_VERSION = "1.46"  # Docker Engine 27.x


def docker_container(
    name: str,
    project: str | None = "shop",
    *,
    status: str = "running",
    exit_code: int = 0,
    health: str | None = None,
    health_output: str = "",
    restart_count: int = 0,
    restart_policy: str = "unless-stopped",
    oom_killed: bool = False,
    image: str = "registry.example.com/shop/web:2.3.1",
) -> dict[str, Any]:
    """A container as GET /containers/{id}/json describes it (compose labels when `project`)."""
    container_id = hashlib.sha256(name.encode()).hexdigest()
    labels = {"org.opencontainers.image.version": "2.3.1"}
    if project:
        service = name.removeprefix(f"{project}-").rsplit("-", 1)[0]
        labels.update(
            {
                "com.docker.compose.project": project,
                "com.docker.compose.service": service,
                "com.docker.compose.container-number": "1",
                "com.docker.compose.oneoff": "False",
                "com.docker.compose.version": "2.29.1",
                "com.docker.compose.project.working_dir": f"/srv/{project}",
            }
        )
    state: dict[str, Any] = {
        "Status": status,
        "Running": status in ("running", "restarting"),
        "Paused": status == "paused",
        "Restarting": status == "restarting",
        "OOMKilled": oom_killed,
        "Dead": status == "dead",
        "Pid": 4242 if status == "running" else 0,
        "ExitCode": exit_code,
        "Error": "",
        "StartedAt": ago(timedelta(hours=3)),
        "FinishedAt": ago(timedelta(minutes=5)) if status == "exited" else "0001-01-01T00:00:00Z",
    }
    healthcheck = None
    if health is not None:
        log = [
            {
                "Start": ago(timedelta(seconds=40 - 10 * i)),
                "End": ago(timedelta(seconds=39 - 10 * i)),
                "ExitCode": 0 if health == "healthy" else 1,
                "Output": health_output,
            }
            for i in range(3)
        ]
        state["Health"] = {
            "Status": health,
            "FailingStreak": 0 if health != "unhealthy" else 3,
            "Log": log,
        }
        healthcheck = {
            "Test": ["CMD-SHELL", "curl -fsS http://localhost:8000/health || exit 1"],
            "Interval": 10_000_000_000,
            "Timeout": 5_000_000_000,
            "Retries": 3,
        }
    config: dict[str, Any] = {
        "Hostname": container_id[:12],
        "Image": image,
        "Labels": labels,
        "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
        "Cmd": ["gunicorn", "app:app"],
        "Tty": False,
    }
    if healthcheck:
        config["Healthcheck"] = healthcheck
    return {
        "Id": container_id,
        "Created": ago(timedelta(days=2)),
        "Path": "gunicorn",
        "Args": ["app:app"],
        "State": state,
        "Image": "sha256:" + hashlib.sha256(image.encode()).hexdigest(),
        "Name": f"/{name}",
        "RestartCount": restart_count,
        "Driver": "overlay2",
        "Platform": "linux",
        "HostConfig": {
            "RestartPolicy": {"Name": restart_policy, "MaximumRetryCount": 0},
            "NetworkMode": f"{project or 'bridge'}_default",
        },
        "Config": config,
        "Mounts": [],
        "NetworkSettings": {
            "Networks": {
                f"{project or 'bridge'}_default": {
                    "IPAddress": "172.18.0.3",
                    "Gateway": "172.18.0.1",
                }
            }
        },
    }


def docker_stats(container: dict[str, Any]) -> dict[str, Any]:
    """GET /containers/{id}/stats?stream=0 (cgroup v2 shape): 25 % of one CPU, 256 MiB of 1 GiB."""
    running = container["State"]["Running"]
    return {
        "read": ago(timedelta(0)),
        "preread": ago(timedelta(seconds=1)),
        "name": container["Name"],
        "id": container["Id"],
        "pids_stats": {"current": 7 if running else 0},
        "cpu_stats": {
            "cpu_usage": {"total_usage": 1_250_000_000},
            "system_cpu_usage": 20_000_000_000,
            "online_cpus": 2,
        },
        "precpu_stats": {
            "cpu_usage": {"total_usage": 1_000_000_000},
            "system_cpu_usage": 18_000_000_000,
            "online_cpus": 2,
        },
        "memory_stats": {
            "usage": 300 * 2**20 if running else 0,
            "limit": 2**30,
            "stats": {"inactive_file": 44 * 2**20 if running else 0},
        },
    }


def _summary(container: dict[str, Any]) -> dict[str, Any]:
    """The GET /containers/json entry for an inspected container."""
    state = container["State"]
    status_text = {
        "running": "Up 3 hours",
        "exited": f"Exited ({state['ExitCode']}) 5 minutes ago",
        "restarting": f"Restarting ({state['ExitCode']}) 2 seconds ago",
        "dead": "Dead",
        "paused": "Up 3 hours (Paused)",
        "created": "Created",
    }[state["Status"]]
    if "Health" in state and state["Status"] == "running":
        label = {"starting": "health: starting"}.get(
            state["Health"]["Status"], state["Health"]["Status"]
        )
        status_text += f" ({label})"
    return {
        "Id": container["Id"],
        "Names": [container["Name"]],
        "Image": container["Config"]["Image"],
        "ImageID": container["Image"],
        "Command": "gunicorn app:app",
        "Created": 1_730_000_000,
        "Ports": [],
        "Labels": container["Config"]["Labels"],
        "State": state["Status"],
        "Status": status_text,
        "HostConfig": {"NetworkMode": container["HostConfig"]["NetworkMode"]},
        "NetworkSettings": {"Networks": container["NetworkSettings"]["Networks"]},
        "Mounts": [],
    }


def _merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
    """A strategic merge patch on maps (what a restartedAt annotation needs): maps merge,
    null deletes, anything else replaces."""
    for key, value in patch.items():
        if value is None:
            into.pop(key, None)
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _selected(labels: dict[str, str], selector: str) -> bool:
    """A Kubernetes equality-based label selector: `a=b,c!=d,e,!f` (all must hold)."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _rfc3339(moment: datetime) -> str:
    """As the kubelet and dockerd write log times: RFC 3339 with nanoseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def _timed_log(request: Request, lines: list[tuple[datetime, str]]) -> str:
    """GET .../log?sinceSeconds=&timestamps=&tailLines= of a container's timed lines."""
    since = int(request.query.get("sinceSeconds", ["0"])[0] or 0)
    if since:
        start = datetime.now(UTC) - timedelta(seconds=since)
        lines = [(when, line) for when, line in lines if when >= start]
    tail = int(request.query.get("tailLines", ["0"])[0] or 0)
    if tail:
        lines = lines[-tail:]
    stamp = request.query.get("timestamps", ["false"])[0].lower() == "true"
    return "".join((f"{_rfc3339(when)} " if stamp else "") + f"{line}\n" for when, line in lines)


def _label_matches(labels: dict[str, str], wanted: str) -> bool:
    key, equals, value = wanted.partition("=")
    return key in labels and (not equals or labels[key] == value)


@dataclass
class FakeDocker(FakeServer):
    """A Docker Engine API: version negotiation, /_ping, /version, container list and inspect.

    `GET /containers/json` honours `all` and the `label` and `status` filters as dockerd does
    (both the list form {"label": ["k=v"]} and the legacy map form {"label": {"k=v": true}}).
    `broken` maps an unversioned path ("/containers/json") to an error status to answer.
    """

    containers: list[dict[str, Any]] = field(default_factory=list)
    # container name -> (stream 1 stdout | 2 stderr, line[, when written]) in the order
    # written; lines with their time answer `since` as dockerd does
    logs: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    api_version: str = DOCKER_API_VERSION
    broken: dict[str, int] = field(default_factory=dict)  # unversioned path -> error status
    # container name -> (memory_stats.usage, memory_stats.limit) instead of docker_stats'
    memory: dict[str, tuple[int, int]] = field(default_factory=dict)

    def add(self, *containers: dict[str, Any]) -> None:
        self.containers.extend(containers)

    def filters_received(self) -> list[dict[str, Any]]:
        """The `filters` of every container list request, decoded."""
        return [
            json.loads(r.query["filters"][0])
            for r in self.requests
            if r.path.endswith("/containers/json") and "filters" in r.query
        ]

    def answer(self, request: Request) -> Response | None:
        match = re.fullmatch(r"(?:/v(\d+\.\d+))?(/.*)", request.path)
        assert match is not None
        version, path = match.groups()
        headers = {
            "Api-Version": self.api_version,
            "Docker-Experimental": "false",
            "Ostype": "linux",
            "Server": "Docker/27.1.1 (linux)",
        }
        if version is not None and version > self.api_version:
            message = (
                f"client version {version} is too new. "
                f"Maximum supported API version is {self.api_version}"
            )
            return 400, {"message": message}, headers
        if path == "/_ping" and request.method in ("GET", "HEAD"):
            return 200, "OK", {**headers, "Cache-Control": "no-cache, no-store, must-revalidate"}
        if request.method != "GET":
            return None
        if path in self.broken:
            status = self.broken[path]
            return status, {"message": f"simulated engine failure {status} on {path}"}, headers
        if path == "/version":
            return (
                200,
                {
                    "Platform": {"Name": "Docker Engine - Community"},
                    "Components": [
                        {
                            "Name": "Engine",
                            "Version": "27.1.1",
                            "Details": {"ApiVersion": self.api_version, "Os": "linux"},
                        }
                    ],
                    "Version": "27.1.1",
                    "ApiVersion": self.api_version,
                    "MinAPIVersion": "1.24",
                    "GitCommit": "cc13f95",
                    "GoVersion": "go1.21.12",
                    "Os": "linux",
                    "Arch": "amd64",
                    "KernelVersion": "6.8.0-45-generic",
                    "BuildTime": "2024-07-23T19:19:36.000000000+00:00",
                },
                headers,
            )
        if path == "/containers/json":
            return 200, [_summary(c) for c in self._listed(request)], headers
        match = re.fullmatch(r"/containers/([^/]+)/(json|stats|logs)", path)
        if match:
            found = self._find(match.group(1))
            if found is None:
                return 404, {"message": f"No such container: {match.group(1)}"}, headers
            if match.group(2) == "stats":
                stats = docker_stats(found)
                usage_limit = self.memory.get(found["Name"].lstrip("/"))
                if usage_limit is not None:
                    stats["memory_stats"].update(usage=usage_limit[0], limit=usage_limit[1])
                return 200, stats, headers
            if match.group(2) == "logs":
                return (
                    200,
                    self._log_frames(request, found),
                    {
                        **headers,
                        "Content-Type": "application/vnd.docker.multiplexed-stream",
                    },
                )
            return 200, found, headers
        return None

    def _log_frames(self, request: Request, container: dict[str, Any]) -> bytes:
        """The multiplexed stream dockerd sends for a container without a TTY: per line an
        8-byte header (stream, 3 zero bytes, big-endian length) and the line."""
        lines = self.logs.get(container["Name"].lstrip("/"), [])
        since = float(request.query.get("since", ["0"])[0] or 0)
        if since:
            lines = [e for e in lines if len(e) < 3 or e[2].timestamp() >= since]
        tail = request.query.get("tail", ["all"])[0]
        if tail != "all":
            lines = lines[-int(tail) :] if int(tail) else []
        stamp = request.query.get("timestamps", ["0"])[0] in ("1", "true", "True")
        out = b""
        for stream, line, *when in lines:
            written = _rfc3339(when[0]) if when else ago(timedelta(seconds=1))
            data = ((written + " ") if stamp else "") + line + "\n"
            encoded = data.encode()
            out += bytes([stream, 0, 0, 0]) + len(encoded).to_bytes(4, "big") + encoded
        return out

    def _listed(self, request: Request) -> list[dict[str, Any]]:
        show_all = request.query.get("all", ["0"])[0] not in ("0", "false", "")
        filters = json.loads(request.query.get("filters", ["{}"])[0])
        labels = filters.get("label", [])
        statuses = filters.get("status", [])
        if isinstance(labels, dict):  # legacy {"k=v": true}
            labels = [k for k, v in labels.items() if v]
        if isinstance(statuses, dict):
            statuses = [k for k, v in statuses.items() if v]
        out = []
        for container in self.containers:
            state = container["State"]["Status"]
            if not show_all and not statuses and state != "running":
                continue
            if statuses and state not in statuses:
                continue
            if not all(_label_matches(container["Config"]["Labels"], w) for w in labels):
                continue
            out.append(container)
        return out

    def _find(self, ref: str) -> dict[str, Any] | None:
        for container in self.containers:
            if ref in (container["Name"].lstrip("/"), container["Id"]):
                return container
        matches = [c for c in self.containers if c["Id"].startswith(ref)]
        return matches[0] if len(matches) == 1 else None


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def fake_kubernetes() -> Iterator[FakeKubernetes]:
    """A fresh fake Kubernetes API server; state is set by the test before it checks."""
    fake = FakeKubernetes()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_docker() -> Iterator[FakeDocker]:
    """A fresh fake Docker Engine API (tcp://127.0.0.1:PORT); containers are added by the test."""
    fake = FakeDocker()
    fake.start()
    yield fake
    fake.stop()


# --- Alertmanager and an application's maintenance mode -----------------------------------------


@dataclass
class FakeAlertmanager(FakeServer):
    """Alertmanager's API v2 silences: POST /api/v2/silences creates one (answering its
    silenceID), DELETE /api/v2/silence/{id} expires it, GET /api/v2/silences lists them with
    their state, as Alertmanager 0.25 does."""

    silences: dict[str, dict[str, Any]] = field(default_factory=dict)

    def active(self) -> list[dict[str, Any]]:
        return [s for s in self.silences.values() if s["status"]["state"] == "active"]

    def answer(self, request: Request) -> Response | None:
        if request.path == "/api/v2/silences" and request.method == "POST":
            body = request.json()
            missing = [k for k in ("matchers", "startsAt", "endsAt") if k not in body]
            if missing or not body["matchers"]:
                return 400, f"missing {missing or 'matchers'}", {}
            silence_id = _uid("silence", str(len(self.silences)), body["endsAt"])
            self.silences[silence_id] = {
                **body,
                "id": silence_id,
                "status": {"state": "active"},
            }
            return 200, {"silenceID": silence_id}, {}
        if request.path == "/api/v2/silences" and request.method == "GET":
            return 200, list(self.silences.values()), {}
        match = re.fullmatch(r"/api/v2/silence/([^/]+)", request.path)
        if match and request.method == "DELETE":
            silence = self.silences.get(match.group(1))
            if silence is None:
                return 404, "silence not found", {}
            silence["status"] = {"state": "expired"}
            return 200, "", {}
        return None


@dataclass
class FakeMaintenanceApp(FakeServer):
    """An application's admin endpoint (runbook 000: POST / DELETE
    /admin/maintenance-mode): records each call in order; `fail` maps a method to the status
    it answers instead of 200."""

    calls: list[str] = field(default_factory=list)  # "POST /admin/maintenance-mode", ...
    fail: dict[str, int] = field(default_factory=dict)
    in_maintenance: bool = False

    def answer(self, request: Request) -> Response | None:
        if request.path != "/admin/maintenance-mode":
            return None
        self.calls.append(f"{request.method} {request.path}")
        status = self.fail.get(request.method, 200)
        if status == 200:
            self.in_maintenance = request.method == "POST"
        return status, {"maintenance": self.in_maintenance}, {}


@pytest.fixture
def fake_alertmanager() -> Iterator[FakeAlertmanager]:
    fake = FakeAlertmanager()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_app() -> Iterator[FakeMaintenanceApp]:
    fake = FakeMaintenanceApp()
    fake.start()
    yield fake
    fake.stop()
