"""Container and pod logs for the logs check: what `docker compose logs` and `kubectl logs -l
app=... --since=8h` show, read through the Docker and Kubernetes clients and counted with the
same patterns as log files.

Every line is read with its time (`--timestamps`). Per stream (one container, or one container
of one pod) the state keeps the time of the newest line counted and how many lines carried
exactly that time, so the next run counts only what came after, whatever the clock of the
machine Runbook runs on. A stream seen for the first time is read over the target's `since`
window (runbook 001 reads the last 8 hours); no run reads further back than `since`. At most
`max_lines` lines per stream and run are read, the newest; the message says when that cut
anything. A container that restarted writes a new log: Docker keeps one per container (read
whole), Kubernetes shows the current container's (the previous one's is in the diagnostics
bundle).

A source that cannot be read (engine or cluster down, RBAC) is an error of the run: the
patterns that would be ok turn unknown, and `logs.sources` says why.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from runbook.config import (
    DockerLogSource,
    DockerTarget,
    KubernetesLogSource,
    KubernetesTarget,
    LogsTarget,
)
from runbook.errors import PermanentError, TransientError
from runbook.systems.docker import Engine, container_name
from runbook.systems.kubernetes import KubernetesApiError, connect

Feed = Callable[[str, bytes], None]  # (stream label, one line) -> counted by the patterns

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d) ")


def stamp_ns(line: str) -> tuple[int, str] | None:
    """(nanoseconds since the epoch, the rest of the line) of a line prefixed by its RFC 3339
    time (nanosecond precision, as dockerd and the kubelet write it); None without one."""
    match = _STAMP.match(line)
    if match is None:
        return None
    whole, fraction, zone = match.groups()
    moment = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    nanos = int((fraction or "0").ljust(9, "0"))
    return int(moment.timestamp()) * 1_000_000_000 + nanos, line[match.end() :]


@dataclass
class Stream:
    """Where counting resumes in one stream: after the lines at time `ns`, `at_ns` of them."""

    ns: int = 0
    at_ns: int = 0

    @classmethod
    def parse(cls, raw: Any) -> Stream | None:
        if not isinstance(raw, dict):
            return None
        ns, at_ns = raw.get("ns"), raw.get("at_ns")
        if not (isinstance(ns, int) and isinstance(at_ns, int)):
            return None
        return cls(ns, at_ns)

    def dump(self) -> dict[str, int]:
        return {"ns": self.ns, "at_ns": self.at_ns}


@dataclass
class StreamRead:
    """What reading the container and pod sources gave."""

    state: dict[str, dict[str, int]] = field(default_factory=dict)  # stream key -> Stream
    watched: list[str] = field(default_factory=list)  # stream labels read
    empty: list[str] = field(default_factory=list)  # sources that matched nothing
    errors: list[str] = field(default_factory=list)  # sources (or streams) not read
    notes: list[str] = field(default_factory=list)


def count_stream(
    text: str, label: str, previous: Stream | None, window_ns: int, feed: Feed
) -> tuple[Stream, int]:
    """Feed the lines of `text` (timestamped) that come after `previous` and are not older
    than `window_ns`; returns where the next run resumes and how many lines were fed."""
    resume = previous or Stream(ns=window_ns, at_ns=0)
    newest, at_newest = resume.ns, resume.at_ns
    seen_at_resume = 0
    fed = 0
    for raw in text.splitlines():
        parsed = stamp_ns(raw)
        if parsed is None:
            continue  # a line without its time (a partial last line): read next run
        ns, line = parsed
        if ns < window_ns or ns < resume.ns:
            continue
        if ns == resume.ns:
            seen_at_resume += 1
            if previous is not None and seen_at_resume <= resume.at_ns:
                continue  # counted by the previous run
        feed(label, line.encode())
        fed += 1
        if ns > newest:
            newest, at_newest = ns, 1
        elif ns == newest:
            at_newest += 1
    return Stream(newest, at_newest), fed


@dataclass
class _Reader:
    target: LogsTarget
    previous: dict[str, Stream]
    now: datetime
    feed: Feed
    read: StreamRead = field(default_factory=StreamRead)

    @property
    def window_ns(self) -> int:
        return int((self.now - self.target.since).timestamp() * 1e9)

    def since_of(self, key: str) -> float:
        """Unix time from which the stream has to be asked for."""
        resume = self.previous.get(key)
        start = self.window_ns if resume is None else max(resume.ns, self.window_ns)
        return start / 1e9

    def counted(self, key: str, label: str, text: str) -> None:
        lines = text.count("\n")
        if lines >= self.target.max_lines:
            self.read.notes.append(
                f"{label}: only the newest {self.target.max_lines:,} lines were read"
            )
        stream, _fed = count_stream(text, label, self.previous.get(key), self.window_ns, self.feed)
        self.read.state[key] = stream.dump()
        self.read.watched.append(label)

    def docker(self, source: DockerLogSource, engine_target: DockerTarget) -> None:
        project = source.project or engine_target.project
        where = f"docker {source.target}" + (f" project {project}" if project else "")
        timeout = engine_target.timeout.total_seconds()
        try:
            with Engine(engine_target.url, timeout) as engine:
                containers = [
                    c for c in engine.containers(project) if _has_labels(c, source.labels)
                ]
                if not containers:
                    self.read.empty.append(where + _labels_text(source.labels))
                for container in containers:
                    name = container_name(container)
                    key = f"docker/{source.target}/{container['Id'][:12]}"
                    since = math.floor(self.since_of(key))
                    text = engine.logs_since(container["Id"], since, self.target.max_lines)
                    self.counted(key, name, text)
        except (TransientError, PermanentError) as exc:
            self.read.errors.append(f"{where}: {exc}")

    def kubernetes(self, source: KubernetesLogSource, cluster_target: KubernetesTarget) -> None:
        selector = f" -l {source.selector}" if source.selector else ""
        where = f"kubernetes {source.target} namespace {source.namespace}{selector}"
        try:
            with connect(cluster_target) as cluster:
                pods = cluster.pods(source.namespace, source.selector)
                if not pods:
                    self.read.empty.append(where)
                for pod in pods:
                    self._pod(cluster, source, pod)
        except (TransientError, PermanentError) as exc:
            self.read.errors.append(f"{where}: {exc}")

    def _pod(self, cluster: Any, source: KubernetesLogSource, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        started = {
            s["name"]
            for s in (pod.get("status") or {}).get("containerStatuses") or []
            if "waiting" not in (s.get("state") or {})
        }
        containers = [c["name"] for c in pod["spec"]["containers"]]
        if source.container is not None:
            containers = [c for c in containers if c == source.container]
        for container in containers:
            label = f"{source.namespace}/{name}/{container}"
            if container not in started:
                self.read.notes.append(f"{label}: not started, no log yet")
                continue
            key = f"k8s/{source.target}/{label}"
            seconds = max(1, math.ceil(self.now.timestamp() - self.since_of(key)) + 1)
            try:
                text = cluster.pod_log(
                    source.namespace,
                    name,
                    container,
                    previous=False,
                    tail=self.target.max_lines,
                    since_seconds=seconds,
                    timestamps=True,
                )
            except KubernetesApiError as exc:  # this container only (gone, not yet started)
                self.read.errors.append(f"{label}: {exc}")
                continue
            self.counted(key, label, text)


def _has_labels(container: dict[str, Any], wanted: list[str]) -> bool:
    labels = (container.get("Config") or {}).get("Labels") or {}
    for term in wanted:
        key, equals, value = term.partition("=")
        if key not in labels or (equals and labels[key] != value):
            return False
    return True


def _labels_text(labels: list[str]) -> str:
    return f" labels {', '.join(labels)}" if labels else ""


def read_log_streams(
    target: LogsTarget,
    engines: dict[str, DockerTarget],
    clusters: dict[str, KubernetesTarget],
    previous: dict[str, Any],
    now: datetime,
    feed: Feed,
) -> StreamRead:
    """Read every docker and kubernetes source of `target`, feeding the lines written since
    the run that returned `previous` (the state's "streams"; {} the first time)."""
    known = {k: s for k, raw in previous.items() if (s := Stream.parse(raw)) is not None}
    reader = _Reader(target, known, now.astimezone(UTC), feed)
    for source in target.docker:
        reader.docker(source, engines[source.target])
    for source in target.kubernetes:
        reader.kubernetes(source, clusters[source.target])
    return reader.read
