"""The Kubernetes files of infra/ and the pool `runbook deploy --pool kubernetes` writes: every
manifest validates against the Kubernetes 1.37 schemas (kubernetes-validate, offline, strict),
the RBAC only reads (except the separate rollout role), the base job template is what
prefect-kubernetes' worker accepts and renders, and no secret value is in any of them."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
import yaml

from deployments import kubernetes
from deployments.spec import (
    declared_deployments,
    load_prefect_yaml,
    merged_prefect_yaml,
    work_pools,
)
from runbook.config import load_config
from tests.support.cli import cli
from tests.support.fake_kube_jobs import validate_manifest

ROOT = Path(__file__).resolve().parents[2]
RBAC = ROOT / "infra" / "helm" / "rbac.yaml"
VALUES = ROOT / "infra" / "helm" / "values-runbook.yaml"
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "*", "impersonate"}
SECRET_VALUE = "pw-Xq7-never-in-a-manifest"


def rbac_documents() -> list[dict]:
    return [d for d in yaml.safe_load_all(RBAC.read_text()) if d]


def template() -> dict:
    return json.loads(kubernetes.BASE_JOB_TEMPLATE.read_text())


@pytest.fixture
def k8s_config(write_config, monkeypatch) -> Path:
    """A config a pod can run: PostgreSQL catalog, S3 storage, secrets as ${VAR}s (set here to
    a value that must appear nowhere)."""
    monkeypatch.setenv("APP_DB_PASSWORD", SECRET_VALUE)
    monkeypatch.setenv("S3_SECRET", SECRET_VALUE)
    return write_config(
        {
            "postgres": [{"name": "app", "dsn": "postgresql://app:${APP_DB_PASSWORD}@db/app"}],
            "http": [{"name": "api", "url": "${API_URL:-http://api:8000/health}"}],
        },
        catalog="postgresql+psycopg://runbook@catalog-db/runbook",
        storage={
            "kind": "s3",
            "bucket": "acme-backups",
            "access_key_id": "AKIAEXAMPLE",
            "secret_access_key": "${S3_SECRET}",
        },
        result_storage={"kind": "s3", "bucket": "acme-prefect-results"},
    )


def kubernetes_pool(config: Path) -> dict:
    return kubernetes.kubernetes_pool(
        work_pools()["kubernetes"], config, "registry.example/runbook:1.0", "runbook-jobs"
    )


def rendered_job(job_variables: dict) -> dict:
    """The Job the worker would POST for a flow run of a deployment with these variables:
    prefect-kubernetes' own rendering and flow-run preparation."""
    from prefect.client.schemas.objects import FlowRun
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    configuration = asyncio.run(
        KubernetesWorkerJobConfiguration.from_template_and_values(template(), job_variables)
    )
    configuration.prepare_for_flow_run(
        FlowRun(id=uuid.uuid4(), name="brave-otter", flow_id=uuid.uuid4())
    )
    return configuration.job_manifest


# --- RBAC ------------------------------------------------------------------------------------


def test_every_rbac_manifest_validates_against_the_kubernetes_schemas() -> None:
    documents = rbac_documents()
    assert {d["kind"] for d in documents} == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    }
    assert [p for d in documents for p in validate_manifest(d)] == []


def test_rbac_reads_only_but_the_separate_rollout_role() -> None:
    roles = [d for d in rbac_documents() if d["kind"] in ("Role", "ClusterRole")]
    writers = {}
    for role in roles:
        for rule in role["rules"]:
            assert "*" not in rule["resources"] and "*" not in rule.get("apiGroups", [])
            if WRITE_VERBS & set(rule["verbs"]):
                writers.setdefault(role["metadata"]["name"], []).append(rule)
            assert "secrets" not in rule["resources"], "no blanket read of Secrets"
    assert set(writers) == {"runbook-rollout-restart"}
    for role in roles:
        if role["metadata"]["name"] == "runbook-rollout-restart":
            assert role["kind"] == "Role"  # namespaced: never cluster-wide
            assert role["rules"] == [
                {
                    "apiGroups": ["apps"],
                    "resources": ["deployments"],
                    "verbs": ["get", "list", "watch", "patch"],
                }
            ]


def test_rbac_grants_what_the_health_checks_read() -> None:
    granted = {
        (group, resource)
        for d in rbac_documents()
        if d["kind"] == "ClusterRole"
        for rule in d["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    wanted = {
        ("", "pods"),
        ("", "pods/log"),
        ("", "events"),
        ("", "nodes"),
        ("", "namespaces"),
        ("", "configmaps"),
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("autoscaling", "horizontalpodautoscalers"),
        ("networking.k8s.io", "networkpolicies"),
        ("metrics.k8s.io", "pods"),
        ("metrics.k8s.io", "nodes"),
    }
    assert wanted <= granted


def test_rbac_is_bound_in_the_namespaces_the_example_config_reads() -> None:
    config = load_config(ROOT / "runbook.example.yaml", unset=[])
    read = {ns for k in config.targets.kubernetes for ns in k.namespaces}
    read |= {ns for o in config.targets.kubernetes_objects for ns in o.namespaces}
    rollout = {
        ref.split("/")[0]
        for selection in config.maintenance.rollout_restart.targets.values()
        for ref in selection.deployments
    }
    bindings = [d for d in rbac_documents() if d["kind"] == "RoleBinding"]
    reader = {
        b["metadata"]["namespace"] for b in bindings if b["roleRef"]["name"].endswith("reader")
    }
    restart = {b["metadata"]["namespace"] for b in bindings if "rollout" in b["roleRef"]["name"]}
    assert read <= reader
    assert rollout <= restart
    pool = work_pools()["kubernetes"]["job_variables"]
    for binding in [*bindings, *(d for d in rbac_documents() if d["kind"] == "ClusterRoleBinding")]:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": pool["service_account_name"], "namespace": "runbook"}
        ]


# --- the base job template -------------------------------------------------------------------


def test_the_base_job_template_is_prefect_kubernetes_default_with_runbooks_variables() -> None:
    from prefect_kubernetes.worker import KubernetesWorker

    default = KubernetesWorker.get_default_base_job_template()
    ours = template()
    assert set(default["variables"]["properties"]) < set(ours["variables"]["properties"])
    assert set(ours["job_configuration"]) == set(default["job_configuration"])
    variables = ours["variables"]["properties"]
    assert variables["backoff_limit"]["default"] == 0
    assert variables["finished_job_ttl"]["default"] == 86400
    assert variables["pod_watch_timeout_seconds"]["default"] >= 600
    jsonschema.Draft202012Validator.check_schema(ours["variables"])


def test_the_pools_job_variables_conform_to_the_templates_variables() -> None:
    """What the Prefect server checks when `prefect deploy` registers a deployment."""
    from prefect.utilities.schema_tools.validation import validate

    config = ROOT / "runbook.example.yaml"
    validate(kubernetes_pool(config)["job_variables"], template()["variables"], raise_on_error=True)
    with pytest.raises(Exception, match="backoff_limit|-1"):
        validate({"backoff_limit": -1}, template()["variables"], raise_on_error=True)


@pytest.mark.usefixtures("prefect_harness")  # rendering resolves block references through the API
def test_every_deployment_renders_a_valid_job_with_image_resources_ttl_and_secret_refs(
    k8s_config: Path,
) -> None:
    config = load_config(k8s_config)
    spec = merged_prefect_yaml(config, work_pool=kubernetes_pool(k8s_config))
    assert len(spec["deployments"]) == len(declared_deployments(config=config)) > 10
    for deployment in spec["deployments"]:
        assert deployment["work_pool"]["name"] == "runbook-kubernetes"
        job = rendered_job(deployment["work_pool"]["job_variables"])
        assert validate_manifest(job) == [], deployment["name"]
        assert job["metadata"]["namespace"] == "runbook-jobs"
        assert job["spec"]["backoffLimit"] == 0
        assert job["spec"]["ttlSecondsAfterFinished"] == 86400
        pod = job["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["image"] == "registry.example/runbook:1.0"
        assert pod["serviceAccountName"] == "runbook"
        assert container["resources"] == {
            "requests": {"cpu": "250m", "memory": "512Mi"},
            "limits": {"cpu": "2", "memory": "2Gi"},
        }
        assert pod["volumes"] == [
            {"name": "runbook-config", "configMap": {"name": "runbook-config"}}
        ]
        env = {e["name"]: e for e in container["env"]}
        assert env["RUNBOOK_CONFIG"]["value"] == "/etc/runbook/runbook.yaml"
        assert env["APP_DB_PASSWORD"] == {
            "name": "APP_DB_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "runbook-secrets", "key": "APP_DB_PASSWORD"}},
        }
        assert env["S3_SECRET"]["valueFrom"]["secretKeyRef"]["key"] == "S3_SECRET"
        # ${API_URL:-...} has a default: optional, the pod starts without it
        assert env["API_URL"]["valueFrom"]["secretKeyRef"]["optional"] is True
        # Prefect, not Kubernetes, reschedules an evicted run (backoffLimit 0)
        assert env["PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR"]["value"] == "reschedule"
        assert SECRET_VALUE not in json.dumps(job)


SECRET_LIKE = ("password", "token", "secret", "api_key", "apikey", "auth_string", "credential")


def literal_secrets(value: object) -> Iterator[str]:
    """Keys or env entries that look like secrets and hold a literal value."""
    if isinstance(value, dict):
        name = str(value.get("name", "")).lower()
        if "value" in value and any(w in name for w in SECRET_LIKE) and value["value"]:
            yield f"env {value['name']}"
        for key, item in value.items():
            if isinstance(item, (dict, list)):
                yield from literal_secrets(item)
            elif any(w in str(key).lower() for w in SECRET_LIKE) and item not in (None, ""):
                yield f"{key}: {item}"
    elif isinstance(value, list):
        for item in value:
            yield from literal_secrets(item)


def test_no_secret_value_in_the_template_the_values_the_rbac_or_the_pool(k8s_config) -> None:
    embedded = yaml.safe_load(VALUES.read_text())["worker"]["config"]["baseJobTemplate"]
    documents = [
        template(),
        yaml.safe_load(VALUES.read_text()),
        json.loads(embedded["configuration"]),
        *rbac_documents(),
        load_prefect_yaml(),
        kubernetes_pool(k8s_config),
    ]
    assert [found for d in documents for found in literal_secrets(d)] == []
    # the check finds what it looks for
    assert list(literal_secrets({"env": [{"name": "PG_PASSWORD", "value": "x"}]})) == [
        "env PG_PASSWORD"
    ]
    for document in documents:
        assert SECRET_VALUE not in json.dumps(document)
    secret_refs = kubernetes_pool(k8s_config)["job_variables"]["env"]
    assert {e["name"] for e in secret_refs if "valueFrom" in e} == {
        "APP_DB_PASSWORD",
        "S3_SECRET",
        "API_URL",
    }


def test_the_helm_values_carry_the_pool_its_template_and_the_workers_service_account() -> None:
    values = yaml.safe_load(VALUES.read_text())
    worker = values["worker"]
    assert worker["config"]["workPool"] == work_pools()["kubernetes"]["name"]
    assert worker["config"]["type"] == "kubernetes"
    assert worker["apiConfig"] == "selfHostedServer"
    assert worker["selfHostedServerApiConfig"]["apiUrl"].endswith("/api")
    embedded = json.loads(worker["config"]["baseJobTemplate"]["configuration"])
    assert embedded == template(), (
        "values-runbook.yaml's baseJobTemplate differs from infra/kubernetes/"
        "base-job-template.json: paste the JSON under configuration: |"
    )
    assert values["serviceAccount"] == {"create": True, "name": "prefect-worker"}
    assert worker["image"]["prefectTag"].startswith("3.8.8-")


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"catalog": "sqlite:///catalog.db"}, "catalog: sqlite:///"),
        ({"storage": {"kind": "local", "path": "backups"}}, "storage.kind: local"),
        ({"result_storage": None}, "result_storage: not set"),
    ],
)
def test_deploy_and_check_config_refuse_what_a_pod_cannot_keep(
    write_config, monkeypatch, override, named
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    sections = {
        "catalog": "postgresql+psycopg://runbook@db/runbook",
        "storage": {"kind": "s3", "bucket": "acme-backups"},
        "result_storage": {"kind": "s3", "bucket": "acme-prefect-results"},
        **override,
    }
    config = write_config({}, **sections)

    code, out, err = cli(
        "deploy", "--config", str(config), "--pool", "kubernetes", "--image", "r/runbook:1"
    )
    assert code == 2, out + err
    assert named in err and "gone when the flow run's Job ends" in err
    assert "Traceback" not in out + err

    code, out, err = cli("check-config", "--config", str(config), "--pool", "kubernetes")
    assert code == 2 and named in err

    code, out, err = cli("check-config", "--config", str(config))  # the process pool is fine
    assert code == 0, out + err


def test_deploy_refuses_the_kubernetes_pool_without_an_image(k8s_config, monkeypatch) -> None:
    monkeypatch.delenv("RUNBOOK_IMAGE", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    code, out, err = cli("deploy", "--config", str(k8s_config), "--pool", "kubernetes")
    assert code == 2
    assert "image: no image is configured: pass --image" in err and "RUNBOOK_IMAGE" in err

    code, out, err = cli("deploy", "--config", str(k8s_config), "--pool", "docker")
    assert code == 2 and "--pool: 'docker' is not a work pool" in err
