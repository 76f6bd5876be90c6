"""docker_cleanup on a real engine: podman serving the Docker Engine API
(tests/support/podman.py), through the official `docker` client. Exited containers of the
project are removed, running ones and other projects' are kept, a dry run lists each object
with its bytes and removes nothing; dangling images, unused networks, volumes only when
listed; a container started again after the plan is left alone."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from runbook.catalog import MaintenanceStatus, Outcome
from runbook.config.maintenance import DockerCleanupSettings
from runbook.errors import RunbookError
from runbook.systems.docker import Engine
from tasks.maintenance.docker_cleanup import DockerCleanup, usage_figures
from tests.support.maintenance import run_procedures
from tests.support.podman import PROJECT_LABEL, Podman

PROJECT = "shop"


def config_for(write_config, podman: Podman, **cleanup):
    return write_config(
        {"docker": [{"name": "engine", "url": podman.url, "timeout": "30s"}]},
        maintenance={
            "windows": {"weekly": {"duration": "1h", "procedures": ["docker_cleanup"]}},
            "docker_cleanup": {"project": PROJECT, **cleanup},
        },
    )


def by_object(run) -> dict[str, object]:
    return {a.object: a for a in run.actions}


def test_exited_containers_of_the_project_removed_running_and_other_projects_kept(
    write_config, podman: Podman
):
    podman.run("shop-web-1", PROJECT, ["sleep", "300"])  # running: never touched
    podman.exited("shop-migrate-1", PROJECT)
    podman.exited("shop-job-1", PROJECT)
    podman.exited("billing-job-1", "billing")  # another project
    podman.exited("loose-1", None)  # no project at all
    time.sleep(3.2)
    podman.exited("shop-fresh-1", PROJECT)  # exited just now: younger than older_than
    config = config_for(write_config, podman, older_than="3s")

    dry = run_procedures(config, ["docker_cleanup"], dry_run=True)
    assert dry.status == MaintenanceStatus.DONE, dry.error
    actions = by_object(dry)
    assert set(actions) == {"container shop-job-1", "container shop-migrate-1"}
    job = actions["container shop-job-1"]
    assert job.outcome == Outcome.DRY_RUN and job.target == "engine"
    assert job.statement.startswith("docker rm ") and "reclaimable" in job.reason
    assert "project shop" in job.reason and "stopped" in job.reason
    assert job.before["kind"] == "container" and job.before["bytes"] >= 0
    assert job.before["containers"] == 6  # `docker system df` before
    assert len(podman.states()) == 6, "a dry run removes nothing"

    podman.podman("rm", "shop-fresh-1")  # again, so that it has just exited when planned
    podman.exited("shop-fresh-1", PROJECT)
    run = run_procedures(config, ["docker_cleanup"], dry_run=False)
    assert run.status == MaintenanceStatus.DONE, run.error
    assert {a.object: a.outcome.value for a in run.actions} == {
        "container shop-job-1": "done",
        "container shop-migrate-1": "done",
    }
    assert podman.states() == {
        "shop-web-1": "running",
        "shop-fresh-1": "exited",
        "billing-job-1": "exited",
        "loose-1": "exited",
    }
    last = max(run.actions, key=lambda a: a.finished_at)
    assert last.after["containers"] == 4 and last.after["still_listed"] is False
    assert "docker_cleanup: re-measured, 2 of 2 treated object(s) now under" in " ".join(run.notes)


def test_dangling_images_networks_and_only_listed_volumes(write_config, podman: Podman):
    labels = {PROJECT_LABEL: PROJECT}
    old_web = podman.import_image("localhost/shop-web:latest", labels, b"v1")
    podman.import_image("localhost/shop-web:latest", labels, b"v2")  # v1 is dangling now
    other = podman.import_image("localhost/billing:latest", {PROJECT_LABEL: "billing"}, b"b1")
    podman.import_image("localhost/billing:latest", {PROJECT_LABEL: "billing"}, b"b2")
    used = podman.import_image("localhost/shop-api:latest", labels, b"a1")
    podman.exited("shop-api-old-1", PROJECT, image="localhost/shop-api:latest")
    podman.import_image("localhost/shop-api:latest", labels, b"a2")  # dangling, but used
    podman.run("shop-worker-1", PROJECT, ["sleep", "300"], image=used)  # running: keeps it
    with podman.client() as client:
        client.networks.create("shop_default", labels=labels)
        client.networks.create("billing_default", labels={PROJECT_LABEL: "billing"})
        client.volumes.create("shop_cache", labels=labels)
        client.volumes.create("shop_db", labels=labels)  # not listed: never removed
    config = config_for(write_config, podman, older_than="0s", volumes=["shop_cache"])

    dry = run_procedures(config, ["docker_cleanup"], dry_run=True)
    actions = by_object(dry)
    assert set(actions) == {
        "container shop-api-old-1",
        f"image {old_web[:12]}",
        "network shop_default",
        "volume shop_cache",
    }, "not the other project's image or network, not the image a running container uses"
    image = actions[f"image {old_web[:12]}"]
    assert image.before["bytes"] > 1_000_000  # the busybox layer
    assert "dangling" in image.reason and image.statement == f"docker rmi {old_web[:12]}"

    run = run_procedures(config, ["docker_cleanup"], dry_run=False)
    assert run.status == MaintenanceStatus.DONE, run.error
    assert all(a.outcome == Outcome.DONE for a in run.actions)
    with podman.client() as client:
        image_ids = {i["Id"].removeprefix("sha256:") for i in client.api.images()}
        networks = {n["Name"] for n in client.api.networks()}
        volumes = {v["Name"] for v in client.api.volumes()["Volumes"]}
    assert old_web not in image_ids and other in image_ids and used in image_ids
    assert "shop_default" not in networks and "billing_default" in networks
    assert volumes == {"shop_db"}
    assert by_object(run)["network shop_default"].after["still_listed"] is False
    assert by_object(run)["volume shop_cache"].after["still_listed"] is False
    removed = by_object(run)[f"image {old_web[:12]}"]
    assert removed.after["still_listed"] is False
    assert removed.after["images_bytes"] < removed.before["images_bytes"]


def test_a_container_started_again_after_the_plan_is_left_alone(write_config, podman: Podman):
    podman.run("shop-cron-1", PROJECT, ["sleep", "300"]).stop(timeout=0)  # exited
    config = config_for(write_config, podman, older_than="0s")
    from runbook.runtime import open_runtime
    from tasks.maintenance.procedure import MeasureContext
    from tasks.maintenance.targets import open_session

    runtime = open_runtime(config)
    settings = runtime.config.maintenance
    [target] = runtime.config.targets.docker
    procedure = DockerCleanup()
    with open_session(target, settings, runtime) as session:
        context = MeasureContext(session, target, settings, None)
        [action] = procedure.plan(procedure.measure(context), settings, target)
        with podman.client() as client:
            client.containers.get("shop-cron-1").start()  # someone starts it meanwhile
        with pytest.raises(RuntimeError, match="running now: left alone"):
            procedure.apply(session, action)
    assert podman.states()["shop-cron-1"] == "running"


def test_df_figures_match_the_engine(podman: Podman):
    podman.exited("shop-a-1", PROJECT)
    with Engine(podman.url, 30) as engine:
        figures = usage_figures(engine.df())
    assert figures["containers"] == 1 and figures["images"] == 1
    assert figures["images_bytes"] > 1_000_000


def test_bad_settings_name_the_field(write_config, podman: Podman):
    with pytest.raises(ValidationError, match="older_than"):
        DockerCleanupSettings(older_than="-1h")
    with pytest.raises(ValidationError, match="project"):
        DockerCleanupSettings(project="Shop Front")
    config = write_config(
        {"docker": [{"name": "engine", "url": podman.url}]},
        maintenance={"docker_cleanup": {"older_than": "soon"}},
    )
    from runbook.runtime import open_runtime

    with pytest.raises(RunbookError, match=r"maintenance\.docker_cleanup\.older_than"):
        open_runtime(config)


def test_the_plan_never_takes_a_paused_container_or_a_volume_the_engine_counts_in_use():
    from datetime import timedelta

    from runbook.catalog.db import utcnow
    from runbook.config import DockerTarget, MaintenanceSettings
    from tasks.maintenance.docker_cleanup import ContainerFact, DockerCleanupFacts, VolumeFact

    now = utcnow()
    day_ago = now - timedelta(days=1)

    def container(name: str, state: str, project: str = PROJECT) -> ContainerFact:
        return ContainerFact(name, name, state, project, day_ago, day_ago, 10, "img", (), ())

    facts = DockerCleanupFacts(
        now,
        {},
        [
            container("paused-1", "paused"),
            container("restarting-1", "restarting"),
            container("dead-1", "dead"),
            container("other-1", "exited", "billing"),
        ],
        volumes=[VolumeFact("data", PROJECT, 100, refcount=1), VolumeFact("spare", None, 5, 0)],
    )
    settings = MaintenanceSettings(
        docker_cleanup={"project": PROJECT, "volumes": ["data", "spare"]}
    )
    actions = DockerCleanup().plan(facts, settings, DockerTarget(name="engine"))
    assert [a.object for a in actions] == ["container dead-1", "volume spare"]
