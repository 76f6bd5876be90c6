"""The Kubernetes API as Runbook reads it, through the official `kubernetes` client.

`connect(target)` configures a client from the target: api_url (+ token) first, then the
in-cluster service account, then the kubeconfig (default ~/.kube/config, never written back).
`Cluster` makes the reads: each GET answers plain JSON (`_preload_content=False`) rather than
the generated models, because big clusters list thousands of pods and a field the models reject
must not hide a crashloop; lists are read page by page as kubectl's --chunk-size does. Its one
write is `patch_deployment` (maintenance's rollout_restart: the restartedAt annotation).

Errors are typed: KubernetesConfigError (no client could be configured), KubernetesUnreachable
(no answer, a TLS failure, or an unreadable one; worth retrying), KubernetesApiError (the API
server answered with an error status). Once the server is unreachable, later reads fail at
once, so a server that hangs costs one timeout, not one per list. The bearer token (from the
target, the kubeconfig or the service account) never appears in their text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from types import TracebackType
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from runbook.config import KubernetesTarget
from runbook.errors import PermanentError, TransientError
from runbook.formatting import shorten

PAGE_SIZE = 500  # items per list request, as kubectl's --chunk-size
METRICS_GROUP, METRICS_VERSION = "metrics.k8s.io", "v1beta1"  # metrics-server (`kubectl top`)
MASK = "**********"

# One retry (a refused connect or a dropped keep-alive), not urllib3's three.
_RETRIES = urllib3.Retry(total=1, redirect=0)
_NETWORK_ERRORS = (urllib3.exceptions.HTTPError, OSError)


class KubernetesConfigError(PermanentError):
    """No client could be configured: kubeconfig missing or invalid, not running in a cluster."""


class KubernetesUnreachable(TransientError):
    """The API server could not be reached or the response could not be read."""


class KubernetesApiError(PermanentError):
    """The API server answered with an error: 'HTTP 403 Forbidden: <its message>'."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def connect(target: KubernetesTarget) -> Cluster:
    """A Cluster for the target; raises KubernetesConfigError. Nothing is sent yet."""
    secrets = [target.token.get_secret_value()] if target.token else []
    try:
        api = _api_client(target)
    except Exception as exc:  # kubeconfig missing or invalid, not running in a cluster
        raise KubernetesConfigError(_first_line(exc, secrets)) from None
    return Cluster(api, target.timeout.total_seconds(), secrets)


def _api_client(target: KubernetesTarget) -> k8s.ApiClient:
    """api_url (+ token) first, then in-cluster, then the kubeconfig (default ~/.kube/config)."""
    configuration = k8s.Configuration()
    configuration.retries = _RETRIES
    if not target.verify_tls:
        configuration.verify_ssl = False
    if target.api_url:
        configuration.host = target.api_url.rstrip("/")
        if target.token:
            configuration.api_key = {"authorization": target.token.get_secret_value()}
            configuration.api_key_prefix = {"authorization": "Bearer"}
        return k8s.ApiClient(configuration)
    if target.in_cluster:
        k8s_config.load_incluster_config(client_configuration=configuration)
        return k8s.ApiClient(configuration)
    return k8s_config.new_client_from_config(
        config_file=str(target.kubeconfig) if target.kubeconfig else None,
        context=target.context,
        persist_config=False,  # Runbook never writes the operator's kubeconfig
        client_configuration=configuration,
    )


class Cluster:
    """The API reads Runbook makes, each returning plain JSON dicts (a context manager)."""

    def __init__(self, api: k8s.ApiClient, timeout: float, secrets: list[str]) -> None:
        self._api = api
        self._secrets = secrets
        self._core = k8s.CoreV1Api(api)
        self._apps = k8s.AppsV1Api(api)
        self._autoscaling = k8s.AutoscalingV2Api(api)
        self._version = k8s.VersionApi(api)
        self._custom = k8s.CustomObjectsApi(api)
        self._networking = k8s.NetworkingV1Api(api)
        self.host = api.configuration.host
        self.timeout = timeout
        self._down: KubernetesUnreachable | None = None

    def close(self) -> None:
        self._api.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def secrets(self) -> list[str]:
        """The target's token and whatever bearer token the kubeconfig or cluster supplied."""
        keys = self._api.configuration.api_key.values()
        tokens = [str(v).removeprefix("Bearer ").strip() for v in keys]
        return [s for s in [*self._secrets, *tokens] if len(s) >= 4]  # tiny ones mangle text

    def scrub(self, text: str) -> str:
        """`text` without any of the cluster's secrets."""
        return _scrub(text, self.secrets())

    # --- reads -------------------------------------------------------------------------------

    def version(self) -> dict[str, Any]:
        """GET /version: gitVersion, platform..."""
        return self._get(self._version.get_code)

    def namespace(self, name: str) -> dict[str, Any]:
        """The namespace; KubernetesApiError with status 404 when it does not exist."""
        return self._get(self._core.read_namespace, name)

    def nodes(self) -> list[dict[str, Any]]:
        return self._list(self._core.list_node)

    def pods(self, namespace: str | None, selector: str | None = None) -> list[dict[str, Any]]:
        """The pods of a namespace, or of all namespaces (None); only those whose labels match
        the label `selector` (`app=counterfactual-lab`) when it is given."""
        params = {"label_selector": selector} if selector else {}
        if namespace is None:
            return self._list(self._core.list_pod_for_all_namespaces, **params)
        return self._list(self._core.list_namespaced_pod, namespace, **params)

    def deployments(
        self, namespace: str | None, selector: str | None = None
    ) -> list[dict[str, Any]]:
        """apps/v1 Deployments of a namespace or of all (None); only those whose labels match
        the label `selector` (`app=api,tier!=batch`) when it is given."""
        params = {"label_selector": selector} if selector else {}
        if namespace is None:
            return self._list(self._apps.list_deployment_for_all_namespaces, **params)
        return self._list(self._apps.list_namespaced_deployment, namespace, **params)

    def deployment(self, namespace: str, name: str) -> dict[str, Any]:
        """One apps/v1 Deployment (its spec and rollout status); KubernetesApiError 404 when
        it does not exist."""
        return self._get(self._apps.read_namespaced_deployment, name, namespace)

    def patch_deployment(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """PATCH a Deployment with a strategic merge patch (as `kubectl rollout restart` and
        `kubectl patch` send); answers the Deployment as patched."""
        return self._get(
            self._apps.patch_namespaced_deployment,
            name,
            namespace,
            patch,
            _content_type="application/strategic-merge-patch+json",
        )

    def hpas(self, namespace: str | None) -> list[dict[str, Any]]:
        """autoscaling/v2 HorizontalPodAutoscalers."""
        if namespace is None:
            return self._list(self._autoscaling.list_horizontal_pod_autoscaler_for_all_namespaces)
        return self._list(self._autoscaling.list_namespaced_horizontal_pod_autoscaler, namespace)

    def node_metrics(self) -> list[dict[str, Any]]:
        """metrics.k8s.io/v1beta1 NodeMetrics (`kubectl top nodes`): usage.cpu, usage.memory
        as quantities. KubernetesApiError 404 when no metrics server serves the API."""
        return self._list(
            self._custom.list_cluster_custom_object, METRICS_GROUP, METRICS_VERSION, "nodes"
        )

    def pod_metrics(self, namespace: str | None) -> list[dict[str, Any]]:
        """metrics.k8s.io/v1beta1 PodMetrics (`kubectl top pods`) of a namespace, or of all
        namespaces (None): each container's usage.cpu and usage.memory."""
        if namespace is None:
            return self._list(
                self._custom.list_cluster_custom_object, METRICS_GROUP, METRICS_VERSION, "pods"
            )
        return self._list(
            self._custom.list_namespaced_custom_object,
            METRICS_GROUP,
            METRICS_VERSION,
            namespace,
            "pods",
        )

    def network_policies(self, namespace: str) -> list[dict[str, Any]]:
        """networking.k8s.io/v1 NetworkPolicies of a namespace (`kubectl get networkpolicy`)."""
        return self._list(self._networking.list_namespaced_network_policy, namespace)

    def events(self, namespace: str | None) -> list[dict[str, Any]]:
        """core/v1 Events (`kubectl get events`)."""
        if namespace is None:
            return self._list(self._core.list_event_for_all_namespaces)
        return self._list(self._core.list_namespaced_event, namespace)

    def pod_log(
        self,
        namespace: str,
        pod: str,
        container: str,
        *,
        previous: bool,
        tail: int,
        since_seconds: int | None = None,
        timestamps: bool = False,
    ) -> str:
        """The last `tail` lines a container wrote (`kubectl logs --previous` when
        `previous`), only those of the last `since_seconds` when given, each line prefixed
        with its RFC 3339 time with `timestamps`; scrubbed of the cluster's secrets."""
        if self._down is not None:
            raise KubernetesUnreachable(str(self._down))
        window = {"since_seconds": since_seconds} if since_seconds else {}
        try:
            response = self._core.read_namespaced_pod_log(
                pod,
                namespace,
                container=container,
                previous=previous,
                tail_lines=tail,
                timestamps=timestamps,
                _preload_content=False,
                _request_timeout=self.timeout,
                **window,
            )
        except ApiException as exc:
            reason = self.scrub(str(exc.reason or ""))
            body = self.scrub(exc.body) if isinstance(exc.body, str) else None
            raise KubernetesApiError(exc.status, _api_error(exc.status, reason, body)) from None
        except _NETWORK_ERRORS as exc:
            reason = self.scrub(_network_reason(exc))
            raise KubernetesUnreachable(f"cannot reach {self.host}: {reason}") from exc
        try:
            return self.scrub(response.data.decode(errors="replace"))
        finally:
            response.release_conn()

    # --- one request -------------------------------------------------------------------------

    def _get(self, call: Callable[..., Any], *args: Any, **params: Any) -> dict[str, Any]:
        """One request (a GET, or a PATCH) as JSON. Raises KubernetesUnreachable or
        KubernetesApiError. Once the server is unreachable, later calls fail at once."""
        if self._down is not None:
            raise KubernetesUnreachable(str(self._down))
        try:
            return self._request(call, *args, **params)
        except KubernetesUnreachable as exc:
            self._down = exc
            raise

    def _request(self, call: Callable[..., Any], *args: Any, **params: Any) -> dict[str, Any]:
        try:
            response = call(*args, _preload_content=False, _request_timeout=self.timeout, **params)
        except ApiException as exc:
            if exc.status == 0:  # TLS failure: the client raises it without an HTTP status
                reason = _first_line(exc.reason, self.secrets())
                raise KubernetesUnreachable(f"cannot reach {self.host}: {reason}") from exc
            # scrubbed here, before the message is shortened and could cut a token in two, and
            # in the client's exception too, which stays reachable as __context__
            exc.body = self.scrub(exc.body) if isinstance(exc.body, str) else None
            exc.reason = self.scrub(str(exc.reason or ""))
            message = _api_error(exc.status, exc.reason, exc.body)
            raise KubernetesApiError(exc.status, message) from None
        except _NETWORK_ERRORS as exc:
            reason = self.scrub(_network_reason(exc))
            raise KubernetesUnreachable(f"cannot reach {self.host}: {reason}") from exc
        try:
            return json.loads(response.data)
        except (_NETWORK_ERRORS, ValueError) as exc:
            reason = self.scrub(shorten(str(exc), 200))
            raise KubernetesUnreachable(f"unreadable answer from {self.host}: {reason}") from exc
        finally:
            response.release_conn()

    def _list(self, call: Callable[..., Any], *args: Any, **params: Any) -> list[dict[str, Any]]:
        """Every item of a list, page by page as kubectl does."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = self._get(call, *args, limit=PAGE_SIZE, _continue=token, **params)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items


# --- error text ------------------------------------------------------------------------------


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, MASK)
    return text


def _api_error(status: int, reason: str, body: str | None) -> str:
    """'HTTP 403 Forbidden: <the API server's message>' from a Status body."""
    detail = ""
    try:
        parsed = json.loads(body or "")
        if isinstance(parsed, dict):
            detail = str(parsed.get("message") or "")
    except ValueError:
        detail = str(body or "")
    text = f"HTTP {status} {reason or ''}".rstrip()
    return f"{text}: {shorten(detail, 200)}" if detail.strip() else text


def _network_reason(exc: BaseException) -> str:
    inner = getattr(exc, "reason", None)
    if isinstance(inner, BaseException):
        exc = inner
    text = str(exc)
    errno = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    if errno:  # before the timeout test: urllib3's NewConnectionError is a ConnectTimeoutError
        return errno.group(0).strip()
    if isinstance(exc, urllib3.exceptions.TimeoutError | TimeoutError):
        return "timed out"
    return shorten(text, 200)


def _first_line(value: Any, secrets: list[str]) -> str:
    text = _scrub(str(value).strip(), secrets)
    return shorten(text.splitlines()[0] if text else type(value).__name__, 200)
