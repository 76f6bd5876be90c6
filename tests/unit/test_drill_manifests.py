"""A Kubernetes objects drill parses every manifest and names the one that is not the object
its path says (tasks/drills/served.py)."""

from __future__ import annotations

import yaml

from tasks.drills.served import check_manifests


def write(tree, relative, obj):
    path = tree / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else yaml.safe_dump(obj))


def config_map(name, namespace="platform", **extra):
    meta = {"name": name, "namespace": namespace}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"a": "1"}, **extra}


def test_every_manifest_is_the_object_its_path_names(tmp_path):
    write(tmp_path, "platform/ConfigMap/app.yaml", config_map("app"))
    meta = {"name": "api", "namespace": "platform"}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {}}
    write(tmp_path, "platform/Deployment/api.yaml", deployment)
    checks, objects = check_manifests(tmp_path)
    assert checks[0].ok
    assert checks[0].detail == "2 of 2 manifests parse as the object their path names"
    assert sorted(o["kind"] for o in objects) == ["ConfigMap", "Deployment"]


def test_a_wrong_manifest_is_named(tmp_path):
    write(tmp_path, "platform/ConfigMap/app.yaml", config_map("app"))
    write(tmp_path, "platform/ConfigMap/other.yaml", config_map("renamed"))
    write(tmp_path, "platform/Deployment/api.yaml", config_map("api"))
    write(tmp_path, "platform/ConfigMap/v2.yaml", config_map("v2", apiVersion="v2"))
    write(tmp_path, "platform/CronJob/job.yaml", {**config_map("job"), "kind": "CronJob"})
    write(tmp_path, "platform/ConfigMap/bad.yaml", "data: [unclosed")
    checks, objects = check_manifests(tmp_path)
    (check,) = checks
    assert not check.ok and check.detail.startswith("1 of 6 manifests parse")
    assert "platform/ConfigMap/other.yaml: holds ConfigMap platform/renamed" in check.detail
    assert "platform/Deployment/api.yaml: holds ConfigMap platform/api" in check.detail
    assert "platform/ConfigMap/v2.yaml: apiVersion 'v2', expected v1" in check.detail
    assert "platform/CronJob/job.yaml: kind 'CronJob' is not one Runbook backs up" in check.detail
    assert "platform/ConfigMap/bad.yaml: not YAML" in check.detail
    assert [o["metadata"]["name"] for o in objects] == ["app"]


def test_an_empty_tree_fails(tmp_path):
    (check,) = check_manifests(tmp_path)[0]
    assert not check.ok and check.detail.startswith("0 of 0 manifests")
