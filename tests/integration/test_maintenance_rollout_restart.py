"""rollout_restart through the official Kubernetes client against the fake API server
(tests/support/fake_apis.py: PATCH of apps/v1 deployments, rollout status that moves): the
patch carries the restartedAt annotation on the pod template as a strategic merge patch, a
rollout that becomes available is `done`, one that does not within the timeout (or passes its
progress deadline) is `failed` as stuck, a dry run patches nothing, deployments are chosen by
name and by label selector."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from runbook.catalog import MaintenanceStatus, Outcome
from runbook.config.maintenance import RolloutRestartSettings, RolloutSelection
from runbook.errors import RunbookError
from runbook.runtime import open_runtime
from tasks.maintenance.rollout_restart import RESTARTED_AT, rollout_state
from tests.support.fake_apis import (
    FakeKubernetes,
    deployment,
    fake_kubernetes,  # noqa: F401
)
from tests.support.maintenance import run_procedures

TOKEN = "rollout-test-token-5f2a9c"


def labelled(name: str, namespace: str = "default", **labels: str) -> dict:
    found = deployment(name, namespace)
    found["metadata"]["labels"] = {"app": name, **labels}
    return found


def config_for(write_config, fake: FakeKubernetes, selection: dict, **restart):
    return write_config(
        {"kubernetes": [{"name": "k8s", "api_url": fake.url, "token": TOKEN, "timeout": "5s"}]},
        maintenance={
            "windows": {"monthly": {"duration": "1h", "procedures": ["rollout_restart"]}},
            "rollout_restart": {
                "targets": {"k8s": selection},
                "timeout": "3s",
                "poll": "100ms",
                **restart,
            },
        },
    )


def patches(fake: FakeKubernetes) -> list:
    return [r for r in fake.requests if r.method == "PATCH"]


def test_restart_patches_the_annotation_and_waits_until_available(
    write_config,
    fake_kubernetes: FakeKubernetes,  # noqa: F811
):
    fake_kubernetes.token = TOKEN
    fake_kubernetes.add(deployment("api"), deployment("worker"), deployment("other"))
    fake_kubernetes.rollouts["default/worker"] = 0.8  # its new pods take a while
    config = config_for(
        write_config, fake_kubernetes, {"deployments": ["default/api", "default/worker"]}
    )

    dry = run_procedures(config, ["rollout_restart"], dry_run=True)
    assert [a.object for a in dry.actions] == [
        "deployment default/api",
        "deployment default/worker",
    ]
    assert all(a.outcome == Outcome.DRY_RUN for a in dry.actions)
    assert dry.actions[0].statement == "kubectl rollout restart deployment/api -n default"
    assert dry.actions[0].before["available_replicas"] == 3
    assert patches(fake_kubernetes) == [], "a dry run patches nothing"

    run = run_procedures(config, ["rollout_restart"], dry_run=False)
    assert run.status == MaintenanceStatus.DONE, run.error
    assert [a.outcome for a in run.actions] == [Outcome.DONE, Outcome.DONE]
    sent = patches(fake_kubernetes)
    assert [r.path for r in sent] == [
        "/apis/apps/v1/namespaces/default/deployments/api",
        "/apis/apps/v1/namespaces/default/deployments/worker",
    ]
    for request in sent:
        assert request.headers["content-type"] == "application/strategic-merge-patch+json"
        body = request.json()
        stamp = body["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
        assert abs(datetime.fromisoformat(stamp) - datetime.now(UTC)) < timedelta(minutes=1)
        assert body == {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
    worker = run.actions[1]
    assert worker.after["updated_replicas"] == 3 and worker.after["available_replicas"] == 3
    assert worker.after["observed_generation"] == 5  # the controller saw the new template
    assert worker.after["waited_seconds"] >= 0.7
    assert worker.after["restarted_at"] == stamp
    other = next(d for d in fake_kubernetes.deployments if d["metadata"]["name"] == "other")
    assert other["metadata"]["generation"] == 4, "a deployment not chosen is not restarted"
    assert TOKEN not in " ".join(run.notes) + str([a.json_row() for a in run.actions])


def test_a_rollout_that_never_becomes_available_is_failed_stuck(
    write_config,
    fake_kubernetes: FakeKubernetes,  # noqa: F811
):
    fake_kubernetes.add(deployment("api"), deployment("web"))
    fake_kubernetes.rollouts["default/api"] = None  # its new pod never gets ready
    config = config_for(
        write_config, fake_kubernetes, {"deployments": ["default/api", "default/web"]}
    )

    run = run_procedures(config, ["rollout_restart"], dry_run=False)
    assert run.status == MaintenanceStatus.FAILED
    api, web = run.actions
    assert api.outcome == Outcome.FAILED
    assert "stuck" in api.error and "1 of 3 new replicas updated" in api.error
    assert "after 3 s (rollout_restart.timeout)" in api.error
    assert 2.9 <= api.duration < 6
    assert web.outcome == Outcome.DONE, "the window goes on with the next deployment"


def test_a_passed_progress_deadline_is_stuck_at_once(
    write_config,
    fake_kubernetes: FakeKubernetes,  # noqa: F811
):
    fake_kubernetes.add(deployment("api"))
    fake_kubernetes.rollouts["default/api"] = None
    fake_kubernetes.deadline_exceeded.add("default/api")
    config = config_for(
        write_config, fake_kubernetes, {"deployments": ["default/api"]}, timeout="30s"
    )

    run = run_procedures(config, ["rollout_restart"], dry_run=False)
    [api] = run.actions
    assert api.outcome == Outcome.FAILED and "stuck: progress deadline exceeded" in api.error
    assert api.duration < 5


def test_selector_missing_deployments_and_ones_already_rolling(
    write_config,
    fake_kubernetes: FakeKubernetes,  # noqa: F811
):
    fake_kubernetes.add(
        labelled("api", restart="nightly"),
        labelled("cron", "batch", restart="nightly"),
        labelled("db", restart="never"),
        deployment("half", available=1),  # mid-rollout already: left alone
    )
    selection = {"deployments": ["default/half", "default/gone"], "selector": "restart=nightly"}
    config = config_for(write_config, fake_kubernetes, selection)

    dry = run_procedures(config, ["rollout_restart"], dry_run=True)
    outcome = {a.object: (a.outcome, a.error) for a in dry.actions}
    assert set(outcome) == {
        "deployment batch/cron",
        "deployment default/api",
        "deployment default/gone",
        "deployment default/half",
    }
    assert outcome["deployment default/api"][0] == Outcome.DRY_RUN
    assert outcome["deployment batch/cron"][0] == Outcome.DRY_RUN
    assert outcome["deployment default/gone"] == (
        Outcome.FAILED,
        "no such deployment (rollout_restart.targets)",
    )
    assert outcome["deployment default/half"][0] == Outcome.SKIPPED
    assert "already under way" in outcome["deployment default/half"][1]
    assert patches(fake_kubernetes) == []


def test_rollout_state_reads_like_kubectl():
    base = deployment("api")
    assert rollout_state(base).done
    waiting = deployment("api")
    waiting["metadata"]["generation"] = 5
    assert "controller" in rollout_state(waiting).message
    old_left = deployment("api")
    old_left["status"]["replicas"] = 4
    assert rollout_state(old_left).message == "1 old replicas pending termination"
    unavailable = deployment("api", available=2)
    assert not rollout_state(unavailable).done
    assert rollout_state(unavailable).message == "2 of 3 updated replicas available"


def test_bad_settings_name_the_field(write_config, fake_kubernetes):  # noqa: F811
    with pytest.raises(ValidationError, match=r"deployments\[0\]: 'api' is not namespace/name"):
        RolloutSelection(deployments=["api"])
    with pytest.raises(ValidationError, match="give deployments"):
        RolloutSelection()
    with pytest.raises(ValidationError, match="timeout"):
        RolloutRestartSettings(timeout="0s")
    config = write_config(
        {"kubernetes": [{"name": "k8s", "api_url": fake_kubernetes.url}]},
        maintenance={"rollout_restart": {"targets": {"prod": {"deployments": ["default/api"]}}}},
    )
    with pytest.raises(RunbookError, match=r"maintenance\.rollout_restart\.targets\.prod: no kub"):
        open_runtime(config)
