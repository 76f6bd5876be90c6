"""docker_cleanup: runbook 000's weekly `docker system df` and `docker system prune -f`, on each
docker target of the window, through the official Docker client (runbook/systems/docker.py).

- measure: `docker system df` (GET /system/df) for the disk use per kind; every container as
  `docker ps -as` lists it (all projects: an image or a network is in use whoever uses it),
  the stopped ones of the project inspected for when they stopped; dangling images; networks
  (the candidates inspected for what is attached now); the named volumes.
- plan (pure): one destructive action per object, with its reclaimable bytes:
  - a stopped container (exited, dead, or created and never started) of the compose project
    (`docker_cleanup.project`, else the target's `project`; neither: every project), stopped
    longer ago than `older_than`; never a running, paused or restarting one;
  - a dangling image created longer ago than `older_than`, carrying the project's label (any
    dangling image without a project, or with `all_dangling_images`), that no container uses
    but the ones this plan removes;
  - an unused network of the project (with `networks`), never the engine's own;
  - a named volume only when `volumes` lists it, no other project's, and unused.
- apply: remove one object, never with force: a container is inspected again first (one that
  was started since the plan, or changed project, is left alone and the action fails), and
  the engine itself refuses to remove a running container, an image or a volume in use. After:
  the figures of `docker system df` again, and whether the object is still listed (there, or
  among the networks).

Build cache is reported (`build_cache_bytes`) but not pruned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from runbook.catalog.db import utcnow
from runbook.catalog.maintenance import Figure, MaintenanceAction
from runbook.config import DockerTarget, MaintenanceSettings
from runbook.formatting import human_bytes, human_duration
from runbook.systems.docker import PROJECT_LABEL, DockerApiError, Engine
from tasks.maintenance.procedure import MeasureContext
from tasks.maintenance.targets import DOCKER, DockerSession

# never running, paused or restarting; podman says "stopped" for an exited container whose
# cleanup has not run yet
STOPPED = frozenset({"exited", "dead", "created", "stopped"})
BUILTIN_NETWORKS = frozenset({"bridge", "host", "none", "podman", "ingress", "docker_gwbridge"})
CONTAINER, IMAGE, NETWORK, VOLUME = "container", "image", "network", "volume"
REMOVE_SECONDS = 0.5  # one DELETE on a local engine, generously
_ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)


class CleanupRefused(RuntimeError):
    """The object changed since the plan (started again, another project, in use): left."""


@dataclass(frozen=True)
class ContainerFact:
    id: str
    name: str
    state: str  # created, running, paused, restarting, exited, dead
    project: str | None
    created: datetime
    finished: datetime | None  # when it stopped (inspected for stopped ones of the project)
    bytes: int  # SizeRw: its writable layer, what removing it frees
    image_id: str
    networks: tuple[str, ...]
    volumes: tuple[str, ...]


@dataclass(frozen=True)
class ImageFact:
    id: str
    created: datetime
    bytes: int
    project: str | None


@dataclass(frozen=True)
class NetworkFact:
    id: str
    name: str
    created: datetime | None
    project: str | None
    attached: tuple[str, ...]  # container ids the engine says are attached now


@dataclass(frozen=True)
class VolumeFact:
    name: str
    project: str | None
    bytes: int  # UsageData.Size of `docker system df -v` (-1: not measured)
    refcount: int


@dataclass(frozen=True)
class DockerCleanupFacts:
    now: datetime
    usage: dict[str, Figure]  # `docker system df` totals
    containers: list[ContainerFact] = field(default_factory=list)
    images: list[ImageFact] = field(default_factory=list)
    networks: list[NetworkFact] = field(default_factory=list)
    volumes: list[VolumeFact] = field(default_factory=list)


def project_of(settings: MaintenanceSettings, target: DockerTarget) -> str | None:
    """The compose project the cleanup is limited to: the procedure's, else the target's."""
    return settings.docker_cleanup.project or target.project


def _when(value: Any) -> datetime | None:
    """A Docker timestamp (unix seconds or RFC 3339 with nanoseconds) as UTC; None for the
    engine's zero time."""
    if value in (None, "", 0):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return None if when <= _ZERO_TIME else when


def usage_figures(df: dict[str, Any]) -> dict[str, Figure]:
    """The totals `docker system df` prints, per kind."""
    images = df.get("Images") or []
    containers = df.get("Containers") or []
    volumes = df.get("Volumes") or []
    cache = df.get("BuildCache") or []
    image_bytes = int(df.get("LayersSize") or 0) or sum(int(i.get("Size") or 0) for i in images)
    return {
        "images": len(images),
        "images_bytes": image_bytes,
        "containers": len(containers),
        "containers_bytes": sum(max(int(c.get("SizeRw") or 0), 0) for c in containers),
        "volumes": len(volumes),
        "volumes_bytes": sum(
            max(int((v.get("UsageData") or {}).get("Size") or 0), 0) for v in volumes
        ),
        "build_cache_bytes": sum(int(b.get("Size") or 0) for b in cache),
    }


def _listed_ids(df: dict[str, Any]) -> set[str]:
    """Every id and name `docker system df` lists (images without the sha256: prefix)."""
    seen: set[str] = set()
    for item in (df.get("Images") or []) + (df.get("Containers") or []):
        seen.add(str(item.get("Id", "")).removeprefix("sha256:"))
    for volume in df.get("Volumes") or []:
        seen.add(str(volume.get("Name", "")))
    return seen


def _container(summary: dict[str, Any], inspected: dict[str, Any] | None) -> ContainerFact:
    labels = summary.get("Labels") or {}
    names = summary.get("Names") or [summary.get("Id", "")[:12]]
    networks = (summary.get("NetworkSettings") or {}).get("Networks") or {}
    mounts = summary.get("Mounts") or []
    state = (inspected or {}).get("State") or {}
    return ContainerFact(
        id=str(summary["Id"]),
        name=str(names[0]).lstrip("/"),
        state=str(summary.get("State") or state.get("Status") or "").lower(),
        project=labels.get(PROJECT_LABEL),
        created=_when(summary.get("Created")) or _ZERO_TIME,
        finished=_when(state.get("FinishedAt")),
        bytes=max(int(summary.get("SizeRw") or 0), 0),
        image_id=str(summary.get("ImageID") or "").removeprefix("sha256:"),
        networks=tuple(sorted(networks)),
        volumes=tuple(
            str(m["Name"]) for m in mounts if m.get("Type") == "volume" and m.get("Name")
        ),
    )


def measure_engine(engine: Engine, project: str | None, networks: bool) -> DockerCleanupFacts:
    """What plan() needs from the engine (read only)."""
    df = engine.df()
    containers = []
    for summary in engine.container_summaries():
        labels = summary.get("Labels") or {}
        ours = project is None or labels.get(PROJECT_LABEL) == project
        stopped = str(summary.get("State") or "").lower() in STOPPED
        inspected = None
        if ours and stopped:
            try:
                inspected = engine.inspect_container(summary["Id"])
            except DockerApiError as exc:
                if not exc.reason.startswith("HTTP 404"):
                    raise
                continue  # removed meanwhile
        containers.append(_container(summary, inspected))
    images = [
        ImageFact(
            id=str(image["Id"]).removeprefix("sha256:"),
            created=_when(image.get("Created")) or _ZERO_TIME,
            bytes=int(image.get("Size") or 0),
            project=(image.get("Labels") or {}).get(PROJECT_LABEL),
        )
        for image in engine.images(dangling=True)
    ]
    found_networks = []
    for network in engine.networks() if networks else []:
        name = str(network.get("Name") or "")
        labels = network.get("Labels") or {}
        if name in BUILTIN_NETWORKS or (project and labels.get(PROJECT_LABEL) != project):
            continue
        attached = (engine.inspect_network(network["Id"]).get("Containers") or {}).keys()
        found_networks.append(
            NetworkFact(
                str(network["Id"]),
                name,
                _when(network.get("Created")),
                labels.get(PROJECT_LABEL),
                tuple(sorted(attached)),
            )
        )
    usage = {str(v.get("Name")): v for v in df.get("Volumes") or []}
    volumes = []
    for volume in engine.volumes():
        name = str(volume.get("Name") or "")
        data = (usage.get(name) or {}).get("UsageData") or {}
        volumes.append(
            VolumeFact(
                name,
                (volume.get("Labels") or {}).get(PROJECT_LABEL),
                int(data.get("Size", -1)),
                int(data.get("RefCount", 0) or 0),
            )
        )
    return DockerCleanupFacts(
        utcnow(), usage_figures(df), containers, images, found_networks, volumes
    )


class DockerCleanup:
    name: ClassVar[str] = "docker_cleanup"
    destructive: ClassVar[bool] = True
    kinds: ClassVar[tuple[str, ...]] = (DOCKER,)

    def measure(self, context: MeasureContext) -> DockerCleanupFacts:
        session: DockerSession = context.session
        project = project_of(context.settings, session.target)
        return measure_engine(session.engine, project, context.settings.docker_cleanup.networks)

    def plan(
        self, facts: DockerCleanupFacts, settings: MaintenanceSettings, target: DockerTarget
    ) -> list[MaintenanceAction]:
        cleanup = settings.docker_cleanup
        project = project_of(settings, target)
        cutoff = facts.now - cleanup.older_than
        older = human_duration(cleanup.older_than, exact=True)
        where = f"project {project}" if project else "any project"
        actions: list[MaintenanceAction] = []

        def add(kind: str, name: str, ident: str, nbytes: int, reason: str) -> None:
            command = {
                CONTAINER: f"docker rm {ident[:12]}",
                IMAGE: f"docker rmi {ident[:12]}",
                NETWORK: f"docker network rm {name}",
                VOLUME: f"docker volume rm {name}",
            }[kind]
            actions.append(
                MaintenanceAction(
                    procedure=self.name,
                    target=target.name,
                    object=f"{kind} {name}",
                    statement=command,
                    reason=f"{reason}; {human_bytes(max(nbytes, 0))} reclaimable",
                    destructive=True,
                    estimate_seconds=REMOVE_SECONDS,
                    before={
                        **facts.usage,
                        "kind": kind,
                        "id": ident,
                        "project": project,
                        "bytes": nbytes,
                    },
                )
            )

        removed: set[str] = set()
        for c in sorted(facts.containers, key=lambda c: c.name):
            stopped_at = c.finished or c.created
            if c.state not in STOPPED or (project and c.project != project):
                continue
            if stopped_at > cutoff:
                continue
            removed.add(c.id)
            since = human_duration(facts.now - stopped_at)
            add(
                CONTAINER,
                c.name,
                c.id,
                c.bytes,
                f"{c.state}, stopped {since} ago > {older}, {where}",
            )
        users: dict[str, set[str]] = {}
        for c in facts.containers:
            for key in (f"{IMAGE}:{c.image_id}", *(f"{VOLUME}:{v}" for v in c.volumes)):
                users.setdefault(key, set()).add(c.id)
            for network in c.networks:
                users.setdefault(f"{NETWORK}:{network}", set()).add(c.id)
        for image in sorted(facts.images, key=lambda i: i.id):
            labelled = project is None or cleanup.all_dangling_images or image.project == project
            if not labelled or image.created > cutoff:
                continue
            if users.get(f"{IMAGE}:{image.id}", set()) - removed:
                continue  # a container this plan keeps still uses it
            age = human_duration(facts.now - image.created)
            add(
                IMAGE,
                image.id[:12],
                image.id,
                image.bytes,
                f"dangling, created {age} ago > {older}",
            )
        for net in sorted(facts.networks, key=lambda n: n.name):
            in_use = (users.get(f"{NETWORK}:{net.name}", set()) | set(net.attached)) - removed
            if in_use or (net.created is not None and net.created > cutoff):
                continue
            add(NETWORK, net.name, net.id, 0, f"unused network of {where}")
        for volume in sorted(facts.volumes, key=lambda v: v.name):
            if volume.name not in cleanup.volumes:
                continue  # never a named volume unless listed
            if project and volume.project not in (None, project):
                continue
            if users.get(f"{VOLUME}:{volume.name}", set()) - removed:
                continue
            known = len(users.get(f"{VOLUME}:{volume.name}", set()))
            if volume.refcount > known:
                continue  # the engine counts a user the listing did not show
            add(
                VOLUME,
                volume.name,
                volume.name,
                volume.bytes,
                "listed in docker_cleanup.volumes, unused",
            )
        return actions

    def apply(self, session: DockerSession, action: MaintenanceAction) -> dict[str, Figure]:
        engine = session.engine
        kind, ident = str(action.before["kind"]), str(action.before["id"])
        project = action.before.get("project")
        if kind == CONTAINER:
            _check_still_stopped(engine, ident, project)
            engine.remove_container(ident)
        elif kind == IMAGE:
            engine.remove_image(ident)
        elif kind == NETWORK:
            attached = engine.inspect_network(ident).get("Containers") or {}
            if attached:
                raise CleanupRefused(f"{len(attached)} container(s) attached since the plan")
            engine.remove_network(ident)
        elif kind == VOLUME:
            engine.remove_volume(ident)
        else:
            raise CleanupRefused(f"unknown kind {kind!r}")
        df = engine.df()
        if kind == NETWORK:  # `docker system df` does not list networks
            listed = {str(n.get("Id")) for n in engine.networks()}
        else:
            listed = _listed_ids(df)
        return {
            **usage_figures(df),
            "removed": True,
            "still_listed": ident.removeprefix("sha256:") in listed,
            "reclaimed_bytes": max(int(action.before.get("bytes") or 0), 0),
        }


def _check_still_stopped(engine: Engine, container_id: str, project: Any) -> None:
    """The container is still stopped and of the project: one started since the plan is left
    alone (and the engine would refuse to remove it without force anyway)."""
    inspected = engine.inspect_container(container_id)
    state = str((inspected.get("State") or {}).get("Status") or "").lower()
    labels = (inspected.get("Config") or {}).get("Labels") or {}
    if state not in STOPPED:
        raise CleanupRefused(f"the container is {state or 'in an unknown state'} now: left alone")
    if project and labels.get(PROJECT_LABEL) != project:
        raise CleanupRefused(f"the container is no longer of project {project}: left alone")
