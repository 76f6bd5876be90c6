"""Kubernetes objects backups (issue 16, first slice) against the fake API server through the
official client: the configured kinds of the configured namespaces exported as YAML with the
server-managed fields stripped, Secrets only when listed and never in the manifest or the
catalog, and restored into a folder `kubectl apply --server-side` takes back."""

from __future__ import annotations

import base64
import json
import stat

import pytest
import yaml

from runbook.catalog import BackupStatus, RestoreStatus
from runbook.config import load_config
from runbook.errors import ConfigError
from runbook.manifest import new_backup_id, read_manifest
from runbook.runtime import open_runtime
from runbook.systems.kubernetes_objects import exportable, made_by_the_cluster
from tasks.backups.dump import run_backup
from tasks.backups.verify import verify_backup
from tests.integration.test_restore_core import restore
from tests.support.fake_apis import deployment, hpa, network_policy
from tests.support.fake_kube_objects import fake_kube_objects, managed  # noqa: F401

PASSWORD = "s3cr3t-db-pass-7f2a"


def fill(fake) -> None:
    ns = "platform"
    fake.put(
        managed("ConfigMap", "app-config", ns, data={"LOG_LEVEL": "info", "FEATURE_X": "on"}),
        managed("ConfigMap", "kube-root-ca.crt", ns, data={"ca.crt": "..."}),
        {
            **managed("ConfigMap", "owned", ns, data={}),
            "metadata": {
                "name": "owned",
                "namespace": ns,
                "ownerReferences": [{"kind": "Deployment", "name": "api", "uid": "u1"}],
            },
        },
        managed(
            "Service",
            "api",
            ns,
            spec={
                "type": "ClusterIP",
                "clusterIP": "10.96.12.34",
                "clusterIPs": ["10.96.12.34"],
                "selector": {"app": "api"},
                "ports": [{"port": 80, "targetPort": 8000, "protocol": "TCP"}],
            },
            status={"loadBalancer": {}},
        ),
        managed(
            "Ingress",
            "api",
            ns,
            spec={"rules": [{"host": "api.example.com"}]},
        ),
        managed(
            "Secret",
            "db-credentials",
            ns,
            type="Opaque",
            data={"password": base64.b64encode(PASSWORD.encode()).decode()},
        ),
        managed("Secret", "not-listed", ns, type="Opaque", data={"token": "eA=="}),
        {"kind": "Deployment", **deployment("api", ns)},
        {"kind": "HorizontalPodAutoscaler", **hpa("api", ns, current=2, max_replicas=5)},
        {"kind": "NetworkPolicy", **network_policy("default-deny", ns)},
        managed("ConfigMap", "elsewhere", "other-team", data={"x": "1"}),
    )


@pytest.fixture
def k8s_runtime(fake_kube_objects, write_config):  # noqa: F811 - the fixture
    fill(fake_kube_objects)
    config = write_config(
        {
            "kubernetes": [{"name": "cluster", "api_url": fake_kube_objects.url}],
            "kubernetes_objects": [
                {
                    "name": "k8s",
                    "cluster": "cluster",
                    "namespaces": ["platform", "empty-ns"],
                    "secrets": ["db-credentials", "absent"],
                }
            ],
        }
    )
    return open_runtime(config)


def test_objects_are_exported_stripped_and_restored_into_a_folder(k8s_runtime, tmp_path):
    runtime = k8s_runtime
    backup_id = new_backup_id()
    run_backup(runtime.config, runtime.config.target("k8s"), runtime.catalog, runtime.storage,
               backup_id)  # fmt: skip
    assert verify_backup(runtime.catalog, runtime.storage, backup_id).ok
    record = runtime.catalog.get_backup(backup_id)
    assert record.status == BackupStatus.VERIFIED and record.kind == "kubernetes"

    manifest = read_manifest(runtime.storage, "k8s", backup_id)
    names = {(o["namespace"], o["kind"], o["name"]) for o in manifest.source["objects"]}
    assert names == {
        ("platform", "ConfigMap", "app-config"),
        ("platform", "Service", "api"),
        ("platform", "Ingress", "api"),
        ("platform", "Deployment", "api"),
        ("platform", "HorizontalPodAutoscaler", "api"),
        ("platform", "NetworkPolicy", "default-deny"),
        ("platform", "Secret", "db-credentials"),
    }  # not: kube-root-ca.crt, the owned one, the unlisted Secret, other namespaces
    assert manifest.warnings == [
        "Secret absent exists in none of the namespaces platform, empty-ns (not backed up)"
    ]
    encoded = base64.b64encode(PASSWORD.encode()).decode()
    for text in (manifest.to_json().decode(), record.model_dump_json()):
        assert PASSWORD not in text and encoded not in text

    into = tmp_path / "restored"
    done = restore(runtime, target="k8s", into=str(into))
    assert done.status == RestoreStatus.RESTORED, (done.error, done.checks)
    assert done.kind == "kubernetes"
    assert any("kubectl apply --server-side" in step for step in done.next_steps)
    assert encoded not in done.model_dump_json()

    config_map = yaml.safe_load((into / "platform/ConfigMap/app-config.yaml").read_text())
    assert config_map == {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {
            "name": "app-config",
            "namespace": "platform",
            "annotations": {"team": "platform"},
        },
        "data": {"LOG_LEVEL": "info", "FEATURE_X": "on"},
    }
    service = yaml.safe_load((into / "platform/Service/api.yaml").read_text())
    assert "clusterIP" not in service["spec"] and "status" not in service
    assert service["spec"]["ports"][0]["port"] == 80
    deploy = yaml.safe_load((into / "platform/Deployment/api.yaml").read_text())
    assert deploy["apiVersion"] == "apps/v1" and "status" not in deploy
    assert set(deploy["metadata"]) == {"name", "namespace"}
    secret_file = into / "platform/Secret/db-credentials.yaml"
    assert yaml.safe_load(secret_file.read_text())["data"]["password"] == encoded
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600  # private, as written


def test_a_namespace_without_objects_fails_the_backup_unless_there_are_some(
    fake_kube_objects,  # noqa: F811 - the fixture
    write_config,
):
    config = write_config(
        {
            "kubernetes": [{"name": "cluster", "api_url": fake_kube_objects.url}],
            "kubernetes_objects": [{"name": "k8s", "cluster": "cluster", "namespaces": ["void"]}],
        }
    )
    runtime = open_runtime(config)
    backup_id = new_backup_id()
    with pytest.raises(Exception, match="no objects in namespaces void"):
        run_backup(runtime.config, runtime.config.target("k8s"), runtime.catalog,
                   runtime.storage, backup_id)  # fmt: skip
    assert runtime.catalog.get_backup(backup_id).status == BackupStatus.FAILED


def test_the_cluster_must_be_a_kubernetes_target(tmp_path):
    path = tmp_path / "runbook.yaml"
    path.write_text(
        json.dumps(
            {
                "targets": {
                    "kubernetes_objects": [{"name": "k8s", "cluster": "nope", "namespaces": ["a"]}]
                }
            }
        )
    )
    with pytest.raises(
        ConfigError, match=r"targets.kubernetes_objects\[0\].cluster: no kubernetes"
    ):
        load_config(path)


def test_stripping_keeps_what_apply_needs_and_nothing_the_server_owns():
    service = managed(
        "Service",
        "api",
        "ns",
        spec={"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "ports": [{"port": 80}]},
        status={"loadBalancer": {}},
    )
    out = exportable(service)
    assert list(out)[:3] == ["apiVersion", "kind", "metadata"]
    assert out["metadata"] == {
        "name": "api",
        "namespace": "ns",
        "annotations": {"team": "platform"},
    }
    assert out["spec"] == {"ports": [{"port": 80}]} and "status" not in out
    assert service["spec"]["clusterIP"] == "10.0.0.1"  # the original is left as it was
    assert made_by_the_cluster(
        {"kind": "Service", "metadata": {"namespace": "default", "name": "kubernetes"}}
    )
    assert not made_by_the_cluster(service)
