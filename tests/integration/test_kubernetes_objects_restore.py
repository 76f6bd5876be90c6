"""Kubernetes objects restored into a cluster (issue 16) against the fake API server through
the official client: server-side apply (field manager runbook), the plan from the server's
dry run (created / changed which fields / unchanged) that writes nothing, namespace remaps,
conflicts refused unless forced, refusals that touch nothing, Secrets never shown."""

from __future__ import annotations

import base64
import copy

import pytest

from runbook.catalog import RestoreLog, RestoreStatus
from runbook.manifest import new_backup_id
from runbook.runtime import open_runtime
from tasks.backups.dump import run_backup
from tasks.restore.plan import RestoreRefused, RestoreRequest
from tasks.restore.run import RestoreRun, planned_record, preflight
from tests.integration.test_kubernetes_objects_backup import PASSWORD, fill
from tests.integration.test_restore_core import restore
from tests.support.fake_kube_objects import fake_kube_objects  # noqa: F401

ENCODED = base64.b64encode(PASSWORD.encode()).decode()
INTO = "k8s://cluster"


@pytest.fixture
def backed_up(fake_kube_objects, write_config):  # noqa: F811 - the fixture
    """A verified backup of the platform namespace, and the fake as it was then."""
    fill(fake_kube_objects)
    config = write_config(
        {
            "kubernetes": [{"name": "cluster", "api_url": fake_kube_objects.url}],
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
    runtime = open_runtime(config)
    target = runtime.config.target("k8s")
    run_backup(runtime.config, target, runtime.catalog, runtime.storage, new_backup_id())
    from tasks.backups.verify import verify_backup

    backup = runtime.catalog.list_backups(target="k8s")[0]
    assert verify_backup(runtime.catalog, runtime.storage, backup.id).ok
    return runtime, fake_kube_objects


def plan(runtime, **request):
    run = RestoreRun(
        runtime.config, runtime.catalog, runtime.storage, RestoreRequest(target="k8s", **request)
    )
    checked = preflight(run)
    return checked, planned_record(run, checked)


def changes(checked) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {c.label: (c.change, c.fields) for c in checked.facts.changes}


def owned(obj):
    """What a restore must bring back: the object without what the server manages."""
    return {k: v for k, v in obj.items() if k in ("data", "type", "spec")}


def test_export_delete_restore_brings_the_objects_back(backed_up):
    runtime, fake = backed_up
    before = {
        key: fake.live(*key)
        for key in [
            ("ConfigMap", "platform", "app-config"),
            ("Deployment", "platform", "api"),
            ("Secret", "platform", "db-credentials"),
            ("NetworkPolicy", "platform", "default-deny"),
        ]
    }
    for key in list(before)[:3]:
        fake.remove(*key)

    # The plan: the server's dry run, per object; nothing is written.
    stored = copy.deepcopy((fake.more, fake.deployments, fake.hpas, fake.network_policies))
    checked, planned = plan(runtime, into=INTO)
    assert changes(checked) == {
        "ConfigMap platform/app-config": ("created", ()),
        "Deployment platform/api": ("created", ()),
        "Secret platform/db-credentials": ("created", ()),
        "Service platform/api": ("unchanged", ()),
        "Ingress platform/api": ("unchanged", ()),
        "HorizontalPodAutoscaler platform/api": ("unchanged", ()),
        "NetworkPolicy platform/default-deny": ("unchanged", ()),
    }
    assert checked.plan.confirm == []  # only creations: nothing live is changed
    assert planned.status == RestoreStatus.PLANNED and "create Secret platform/db-credentials" in (
        "\n".join(planned.plan)
    )
    assert fake.applies and all(dry for *_, dry in fake.applies)
    assert (fake.more, fake.deployments, fake.hpas, fake.network_policies) == stored
    assert fake.live("ConfigMap", "platform", "app-config") is None
    assert RestoreLog(runtime.catalog).list() == []  # a plan is not a restore
    assert ENCODED not in planned.model_dump_json() and PASSWORD not in str(checked)

    done = restore(runtime, target="k8s", into=INTO)
    assert done.status == RestoreStatus.RESTORED, (done.error, done.checks)
    assert done.kind == "kubernetes" and done.into == "k8s://cluster (namespaces platform)"
    by_name = {c.name: c for c in done.checks}
    assert by_name["apply Secret platform/db-credentials"].detail == "created"
    assert by_name["apply ConfigMap platform/app-config"].detail == "created"
    assert by_name["apply NetworkPolicy platform/default-deny"].detail == "unchanged"
    assert by_name["object Deployment platform/api"].ok
    for key, obj in before.items():
        back = fake.live(*key)
        assert back is not None and owned(back) == owned(obj), key
        if key[0] != "NetworkPolicy":  # applied back by Runbook
            assert back["metadata"]["managedFields"][-1]["manager"] == "runbook"
    secret = fake.live("Secret", "platform", "db-credentials")
    assert secret["data"]["password"] == ENCODED
    text = done.model_dump_json()
    assert ENCODED not in text and PASSWORD not in text

    # Applying again changes nothing.
    checked, _ = plan(runtime, into=INTO)
    assert {c.change for c in checked.facts.changes} == {"unchanged"}


def test_a_changed_object_conflicts_unless_forced_and_confirmed(backed_up):
    runtime, fake = backed_up
    live = fake.find("ConfigMap", "platform", "app-config")
    live["data"]["LOG_LEVEL"] = "debug"  # `kubectl edit` since the backup (manager kubectl)
    live["metadata"].setdefault("labels", {})["edited"] = "yes"

    with pytest.raises(RestoreRefused, match=r'conflict.*"kubectl".*\.data\.LOG_LEVEL') as refused:
        plan(runtime, into=INTO)
    assert "--force-conflicts" in str(refused.value)
    assert all(dry for *_, dry in fake.applies)  # nothing was applied

    checked, planned = plan(runtime, into=INTO, force_conflicts=True)
    assert changes(checked)["ConfigMap platform/app-config"] == ("changed", ("data",))
    assert "are changed in place: ConfigMap platform/app-config (data)" in checked.plan.confirm[0]
    with pytest.raises(RestoreRefused, match="confirmation needed"):
        restore(runtime, target="k8s", into=INTO, force_conflicts=True)
    assert fake.find("ConfigMap", "platform", "app-config")["data"]["LOG_LEVEL"] == "debug"

    done = restore(runtime, target="k8s", into=INTO, force_conflicts=True, confirmed=True)
    assert done.status == RestoreStatus.RESTORED, (done.error, done.checks)
    check = next(c for c in done.checks if c.name == "apply ConfigMap platform/app-config")
    assert check.detail == "changed: data"
    back = fake.live("ConfigMap", "platform", "app-config")
    assert back["data"] == {"LOG_LEVEL": "info", "FEATURE_X": "on"}
    assert back["metadata"]["labels"] == {"edited": "yes"}  # not in the backup: left alone


def test_namespace_remap_and_refusals_that_touch_nothing(backed_up):
    runtime, fake = backed_up
    fake.namespaces.add("platform-restored")

    for request, message in [
        ({"namespaces": ("nowhere",)}, "namespace 'nowhere' does not exist in cluster"),
        ({"namespaces": ("other=x",)}, "the backup holds no namespace 'other'"),
        ({"kinds": ("Job",)}, "--kind Job: the backup holds no Job objects"),
        ({"overwrite": "clean"}, "--clean is not for Kubernetes objects"),
    ]:
        with pytest.raises(RestoreRefused, match=message):
            restore(runtime, target="k8s", into=INTO, **request)
    with pytest.raises(Exception, match="no kubernetes target 'elsewhere'"):
        restore(runtime, target="k8s", into="k8s://elsewhere")
    assert fake.applies == [] and RestoreLog(runtime.catalog).list() == []

    done = restore(
        runtime,
        target="k8s",
        into=INTO,
        namespaces=("platform=platform-restored",),
        kinds=("ConfigMap", "Secret"),
    )
    assert done.status == RestoreStatus.RESTORED, (done.error, done.checks)
    moved = fake.live("ConfigMap", "platform-restored", "app-config")
    assert moved["data"] == {"LOG_LEVEL": "info", "FEATURE_X": "on"}
    assert fake.live("Secret", "platform-restored", "db-credentials")["data"] == {
        "password": ENCODED
    }
    assert fake.live("Deployment", "platform-restored", "api") is None  # not a chosen kind
    assert {c.name for c in done.checks if c.name.startswith("apply")} == {
        "apply ConfigMap platform-restored/app-config",
        "apply Secret platform-restored/db-credentials",
    }
