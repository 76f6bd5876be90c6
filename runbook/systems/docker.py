"""The Docker engine as Runbook reads it, through the official `docker` client
(unix:///var/run/docker.sock in production, tcp://host:port too).

`Engine(url, timeout)` negotiates the API version (GET /version) when it is made; `ping`,
`version` and `containers` read the engine; `df`, the listings and the `remove_*` calls are
what maintenance's docker_cleanup reads and removes (never with force).

Errors are typed, each with a short `reason`: DockerUnreachable (no answer: refused, reset,
missing socket, timed out; worth retrying), DockerApiError (the engine answered with an error
status), DockerClientError (the engine cannot be talked to at all: a URL the client does not
understand, a failed version negotiation).
"""

from __future__ import annotations

import re
from types import TracebackType
from typing import Any

import docker
import requests
from docker.errors import APIError, DockerException

from runbook.errors import PermanentError, TransientError
from runbook.formatting import shorten

PROJECT_LABEL = "com.docker.compose.project"
ONEOFF_LABEL = "com.docker.compose.oneoff"

# requests wraps socket errors (refused, reset, missing unix socket) in these. Not OSError: every
# requests and docker error (APIError included) is one.
_NETWORK_ERRORS = (requests.exceptions.ConnectionError, requests.exceptions.Timeout)


class DockerUnreachable(TransientError):
    """No answer from the engine; `reason` says why ('timed out', '[Errno 111] ...')."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class DockerApiError(PermanentError):
    """The engine answered with an error; `reason` is 'HTTP 500: <its explanation>'."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class DockerClientError(PermanentError):
    """The engine cannot be talked to: a URL the client does not understand, or an error
    answer to the API version negotiation."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class Engine:
    """One Docker engine (a context manager)."""

    def __init__(self, url: str, timeout: float) -> None:
        """Connect and negotiate the API version; raises DockerUnreachable or
        DockerClientError."""
        self.url = url
        try:
            self._client = docker.DockerClient(base_url=url, timeout=timeout)
        except DockerException as exc:
            reason = _reason(exc)
            if _network_failure(exc):
                raise DockerUnreachable(self._cannot_reach(reason), reason) from exc
            message = f"cannot talk to the Docker engine at {url}: {reason}"
            raise DockerClientError(message, reason) from exc

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def ping(self) -> None:
        """GET /_ping; raises DockerUnreachable or DockerApiError."""
        self._call(self._client.ping)

    def version(self) -> dict[str, Any]:
        """GET /version: Version, ApiVersion, Os, Arch..."""
        return self._call(self._client.version)

    def containers(self, project: str | None = None) -> list[dict[str, Any]]:
        """Inspected containers (attrs of GET /containers/{id}/json), running or not, sorted by
        name; only the compose project's when `project` is set. Compose one-off containers
        (`docker compose run`) are left out: leftovers of someone's command, not a service."""
        filters = {"label": [f"{PROJECT_LABEL}={project}"]} if project else None
        found = self._call(
            self._client.containers.list, all=True, filters=filters, ignore_removed=True
        )
        out = []
        for container in found:
            labels = (container.attrs.get("Config") or {}).get("Labels") or {}
            if project and labels.get(PROJECT_LABEL) != project:
                continue  # the engine filters already; never return another project's containers
            if labels.get(ONEOFF_LABEL) == "True":
                continue
            out.append(container.attrs)
        return sorted(out, key=container_name)

    # --- what `docker system df` / `docker system prune` see (docker_cleanup) -----------------

    def df(self) -> dict[str, Any]:
        """GET /system/df: LayersSize, Images, Containers, Volumes, BuildCache (as `docker
        system df -v`)."""
        return self._call(self._client.df)

    def container_summaries(self, project: str | None = None) -> list[dict[str, Any]]:
        """GET /containers/json?all=1&size=1: every container as `docker ps -as` lists it (State,
        Labels, Created, SizeRw), one-off containers included; only the compose project's when
        `project` is set (checked here too, never trusting the engine's filter alone)."""
        filters = {"label": [f"{PROJECT_LABEL}={project}"]} if project else None
        found = self._call(self._client.api.containers, all=True, size=True, filters=filters)
        if project:
            found = [c for c in found if (c.get("Labels") or {}).get(PROJECT_LABEL) == project]
        return found

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        """GET /containers/{id}/json; DockerApiError with reason 'HTTP 404...' once it is gone."""
        return self._call(self._client.api.inspect_container, container_id)

    def images(self, *, dangling: bool) -> list[dict[str, Any]]:
        """GET /images/json (only the untagged ones with `dangling`)."""
        filters = {"dangling": True} if dangling else None
        return self._call(self._client.api.images, filters=filters)

    def networks(self) -> list[dict[str, Any]]:
        """GET /networks."""
        return self._call(self._client.api.networks)

    def inspect_network(self, network_id: str) -> dict[str, Any]:
        """GET /networks/{id}: its Containers are the ones attached now."""
        return self._call(self._client.api.inspect_network, network_id)

    def volumes(self) -> list[dict[str, Any]]:
        """GET /volumes: the named volumes."""
        return self._call(self._client.api.volumes).get("Volumes") or []

    def remove_container(self, container_id: str) -> None:
        """DELETE /containers/{id} without force: the engine refuses a running container."""
        self._call(self._client.api.remove_container, container_id, v=False, force=False)

    def remove_image(self, image_id: str) -> None:
        """DELETE /images/{id} without force: the engine refuses an image a container uses."""
        self._call(self._client.api.remove_image, image_id, force=False, noprune=False)

    def remove_network(self, network_id: str) -> None:
        self._call(self._client.api.remove_network, network_id)

    def remove_volume(self, name: str) -> None:
        """DELETE /volumes/{name} without force: the engine refuses a volume in use."""
        self._call(self._client.api.remove_volume, name, force=False)

    def stats(self, container_id: str) -> dict[str, Any]:
        """GET /containers/{id}/stats?stream=0: one sample, as `docker stats --no-stream`."""
        return self._call(self._client.api.stats, container_id, stream=False)

    def logs(self, container_id: str, tail: int) -> str:
        """The last `tail` lines of stdout and stderr, with timestamps (`docker logs --tail`)."""
        data = self._call(
            self._client.api.logs,
            container_id,
            stdout=True,
            stderr=True,
            tail=tail,
            timestamps=True,
        )
        return data.decode(errors="replace") if isinstance(data, bytes) else str(data)

    def logs_since(self, container_id: str, since: int, tail: int) -> str:
        """stdout and stderr written since the unix time `since` (whole seconds, as the engine
        takes it), at most the last `tail` lines, each prefixed with its RFC 3339 time
        (`docker logs --since --timestamps`)."""
        data = self._call(
            self._client.api.logs,
            container_id,
            stdout=True,
            stderr=True,
            tail=tail,
            since=max(since, 1),
            timestamps=True,
        )
        return data.decode(errors="replace") if isinstance(data, bytes) else str(data)

    def _call(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except APIError as exc:
            reason = _api_error(exc)
            message = f"the Docker engine at {self.url} answered {reason}"
            raise DockerApiError(message, reason) from exc
        except _NETWORK_ERRORS as exc:
            reason = _reason(exc)
            raise DockerUnreachable(self._cannot_reach(reason), reason) from exc

    def _cannot_reach(self, reason: str) -> str:
        return f"cannot reach the Docker engine at {self.url}: {reason}"


def container_name(attrs: dict[str, Any]) -> str:
    """The container's name without the leading slash, or its short id."""
    return str(attrs.get("Name") or attrs.get("Id", "?")[:12]).lstrip("/")


def _network_failure(exc: BaseException) -> bool:
    """The version negotiation wraps the connection error in a plain DockerException."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, APIError):
            return False  # the engine answered, with an error
        if isinstance(seen, _NETWORK_ERRORS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, requests.exceptions.Timeout) or "timed out" in text.lower():
        return "timed out"
    errno = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    if errno:
        return errno.group(0).strip()
    return shorten(text, 200)


def _api_error(exc: APIError) -> str:
    status = exc.status_code if exc.response is not None else "?"
    explanation = " ".join(str(exc.explanation or "").split())[:200]
    return f"HTTP {status}: {explanation}" if explanation else f"HTTP {status}"
