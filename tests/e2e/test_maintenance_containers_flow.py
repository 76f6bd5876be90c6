"""The maintenance flow through Prefect with the container procedures: the weekly window's
docker_cleanup on a real engine (podman serving the Docker Engine API) and the monthly window's
rollout_restart through the official Kubernetes client (fake API server): the plan artifact,
the ledger, the report artifact."""

from __future__ import annotations

import pytest

from flows.maintenance import maintenance
from runbook.catalog import MaintenanceLog, MaintenanceStatus
from runbook.runtime import open_runtime
from tests.support.artifacts import artifact_markdown
from tests.support.fake_apis import (
    FakeKubernetes,
    deployment,
    fake_kubernetes,  # noqa: F401
)
from tests.support.podman import Podman

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_weekly_docker_cleanup_and_monthly_rollout_restart(
    write_config,
    podman: Podman,
    fake_kubernetes: FakeKubernetes,  # noqa: F811
):
    podman.run("shop-web-1", "shop", ["sleep", "300"])
    podman.exited("shop-migrate-1", "shop")
    podman.exited("billing-job-1", "billing")
    fake_kubernetes.add(deployment("api"))
    config = write_config(
        {
            "docker": [{"name": "engine", "url": podman.url, "project": "shop", "timeout": "30s"}],
            "kubernetes": [{"name": "k8s", "api_url": fake_kubernetes.url}],
        },
        maintenance={
            "windows": {
                "weekly": {"duration": "1h", "procedures": ["docker_cleanup"]},
                "monthly": {"duration": "1h", "procedures": ["rollout_restart"]},
            },
            "docker_cleanup": {"older_than": "0s"},  # the target's project: shop
            "rollout_restart": {
                "targets": {"k8s": {"deployments": ["default/api"]}},
                "timeout": "10s",
                "poll": "100ms",
            },
        },
    )

    state = maintenance(window="weekly", return_state=True)
    assert state.is_completed(), state.message
    planned = state.result().run
    assert planned.targets == ["engine"]
    assert [(a.procedure, a.object) for a in planned.actions] == [
        ("docker_cleanup", "container shop-migrate-1")
    ]
    assert "shop-migrate-1" in artifact_markdown("maintenance-plan")
    assert len(podman.states()) == 3, "the dry run removed nothing"

    state = maintenance(window="weekly", dry_run=False, return_state=True)
    assert state.is_completed(), state.message
    run = state.result().run
    assert run.status == MaintenanceStatus.DONE
    [action] = run.actions
    assert action.outcome.value == "done" and action.after["still_listed"] is False
    assert action.after["containers"] == 2
    assert podman.states() == {"shop-web-1": "running", "billing-job-1": "exited"}
    report = artifact_markdown("maintenance-report")
    assert "Maintenance window weekly: DONE" in report and "shop-migrate-1" in report

    state = maintenance(window="monthly", dry_run=False, return_state=True)
    assert state.is_completed(), state.message
    restart = state.result().run
    assert [(a.object, a.outcome.value) for a in restart.actions] == [
        ("deployment default/api", "done")
    ]
    assert [r.path for r in fake_kubernetes.requests if r.method == "PATCH"] == [
        "/apis/apps/v1/namespaces/default/deployments/api"
    ]
    assert "Maintenance window monthly: DONE" in artifact_markdown("maintenance-report")

    ledger = MaintenanceLog(open_runtime(config).catalog)
    rows = ledger.list()
    assert [(r.window, r.dry_run) for r in rows] == [
        ("monthly", False),
        ("weekly", False),
        ("weekly", True),
    ]
    assert ledger.get(rows[1].id).actions[0].after["containers"] == 2
