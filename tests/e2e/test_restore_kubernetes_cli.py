"""`runbook restore --into k8s://CLUSTER` end to end (issue 16): --dry-run prints the server's
plan per object and writes nothing, the apply runs through the restore flow with the
Interface's JSON and exit codes, a refusal exits 2 before Prefect with nothing touched, and no
Secret value is ever printed."""

from __future__ import annotations

import json

import pytest

from flows.restore import restore as restore_flow
from runbook.catalog import RestoreLog
from runbook.manifest import new_backup_id
from runbook.runtime import open_runtime
from tasks.backups.dump import run_backup
from tasks.backups.verify import verify_backup
from tests.integration.test_kubernetes_objects_backup import PASSWORD, fill
from tests.support.artifacts import artifact_markdown
from tests.support.cli import cli
from tests.support.fake_kube_objects import fake_kube_objects  # noqa: F401

pytestmark = pytest.mark.usefixtures("prefect_harness")

INTERFACE = {
    "id", "target", "backup_id", "into", "status", "started_at", "finished_at",
    "rto_seconds", "checks", "hooks", "error",
}  # fmt: skip


def test_restore_objects_into_the_cluster_from_the_command_line(
    fake_kube_objects,  # noqa: F811 - the fixture
    write_config,
):
    import base64

    fake = fake_kube_objects
    fill(fake)
    config = str(
        write_config(
            {
                "kubernetes": [{"name": "cluster", "api_url": fake.url}],
                "kubernetes_objects": [
                    {
                        "name": "k8s",
                        "cluster": "cluster",
                        "namespaces": ["platform"],
                        "secrets": ["db-credentials"],
                    }
                ],
            }
        )
    )
    runtime = open_runtime(config)
    backup_id = new_backup_id()
    run_backup(runtime.config, runtime.config.target("k8s"), runtime.catalog, runtime.storage,
               backup_id)  # fmt: skip
    assert verify_backup(runtime.catalog, runtime.storage, backup_id).ok
    encoded = base64.b64encode(PASSWORD.encode()).decode()
    fake.remove("ConfigMap", "platform", "app-config")
    fake.remove("Secret", "platform", "db-credentials")
    base = ("restore", "-t", "k8s", "--into", "k8s://cluster", "--config", config)

    code, out, err = cli(*base, "--dry-run", "--json")
    assert code == 0, out + err
    shown = json.loads(out)["restore"]
    assert set(shown) >= INTERFACE and shown["status"] == "planned"
    objects = {(o["kind"], o["name"]): o["change"] for o in shown["objects"]}
    assert objects[("ConfigMap", "app-config")] == "created"
    assert objects[("Secret", "db-credentials")] == "created"
    assert objects[("Deployment", "api")] == "unchanged"
    code, out, _ = cli(*base, "--dry-run")
    assert code == 0 and "PLAN (dry run, nothing changed)" in out
    assert "create Secret platform/db-credentials" in out
    assert fake.live("Secret", "platform", "db-credentials") is None
    assert all(dry for *_, dry in fake.applies)

    code, _, err = cli(*base, "--kind", "CronJob")
    assert code == 2 and "--kind CronJob" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli(*base, "--namespace", "absent-ns")
    assert code == 2 and "namespace 'absent-ns' does not exist" in err
    assert all(dry for *_, dry in fake.applies) and RestoreLog(runtime.catalog).list() == []

    code, out, err = cli(*base, "--json")
    assert code == 0, out + err
    shown = json.loads(out)["restore"]
    assert set(shown) >= INTERFACE and shown["status"] == "restored"
    assert shown["into"] == "k8s://cluster (namespaces platform)" and shown["error"] is None
    assert all(set(c) == {"name", "ok", "detail"} for c in shown["checks"])
    assert {"apply Secret platform/db-credentials", "object Secret platform/db-credentials"} <= {
        c["name"] for c in shown["checks"]
    }
    assert fake.live("Secret", "platform", "db-credentials")["data"]["password"] == encoded
    assert fake.live("ConfigMap", "platform", "app-config")["data"]["LOG_LEVEL"] == "info"
    for text in (out, err):
        assert encoded not in text and PASSWORD not in text

    markdown = artifact_markdown("restore-report")
    assert "RESTORED" in markdown and "apply Secret platform/db-credentials" in markdown
    assert encoded not in markdown and PASSWORD not in markdown

    code, out, err = cli(*base)  # again, plain: everything unchanged
    assert code == 0, out + err
    assert "RESTORED" in out and encoded not in out

    # The flow's dry run (a UI run with dry_run): the plan as an artifact, nothing applied.
    applied = len([a for a in fake.applies if not a[3]])
    fake.remove("ConfigMap", "platform", "app-config")
    state = restore_flow(target="k8s", into="k8s://cluster", dry_run=True, return_state=True)
    planned = state.result().restore
    assert state.is_completed() and planned.status == "planned"
    assert "  create ConfigMap platform/app-config" in planned.plan
    assert len([a for a in fake.applies if not a[3]]) == applied
    assert fake.live("ConfigMap", "platform", "app-config") is None
    assert "PLANNED" in artifact_markdown("restore-report")
    assert len(RestoreLog(runtime.catalog).list()) == 2  # the two applies; plans not recorded

    # `runbook drill` of the target: the manifests parsed and dry-run applied, recorded.
    dry_before = len(fake.applies)
    code, out, err = cli("drill", "-t", "k8s", "--config", config, "--json")
    assert code == 0, out + err
    drilled = json.loads(out)["drill"]
    found = {c["name"]: c for c in drilled["checks"]}
    assert drilled["passed"] and found["manifests"]["ok"] and found["file checksums"]["ok"]
    assert "7 of 7 objects accepted" in found["server dry run"]["detail"]
    assert all(dry for *_, dry in fake.applies[dry_before:])
    assert encoded not in out and PASSWORD not in out
    code, out, _ = cli("drills", "list", "-t", "k8s", "--config", config, "--json")
    assert code == 0 and json.loads(out)["drills"][0]["id"] == drilled["id"]
