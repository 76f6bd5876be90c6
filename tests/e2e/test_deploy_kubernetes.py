"""`runbook deploy --pool kubernetes`, then the real prefect-kubernetes worker (`prefect worker
start --type kubernetes --run-once`, its own process, kubeconfig pointing at the fake API
server of tests/support/fake_kube_jobs.py) submits a flow run of a deployment: the Job it
creates in the configured namespace carries the image, service account, resources, TTL,
backoffLimit 0, runbook.yaml's ConfigMap and every secret as a Secret reference.

What this cannot show (no kube-apiserver here): the Job's pod being scheduled, pulling the
image and running the flow; admission (quotas, pod security); the observer that reports the
pod's end to Prefect (disabled here: it watches the cluster through kopf)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deployments import kubernetes
from tests.support.cli import cli
from tests.support.fake_kube_jobs import (
    FakeKubernetesJobs,
    fake_kubernetes_jobs,  # noqa: F401
    validate_manifest,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")

TOKEN = "eyJhbGciOiJSUzI1NiJ9.worker-test-token.c2lnbmF0dXJl"
IMAGE = "registry.example/platform/runbook:2026.12.1"
NAMESPACE = "runbook-jobs"
SECRET_VALUE = "pw-Zr8-never-in-a-job"


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": server}}],
                "users": [{"name": "prefect-worker", "user": {"token": TOKEN}}],
                "contexts": [
                    {
                        "name": "fake",
                        "context": {"cluster": "fake", "user": "prefect-worker"},
                    }
                ],
                "current-context": "fake",
            }
        )
    )
    return path


def test_deploy_to_the_kubernetes_pool_and_a_real_worker_creates_the_job(
    write_config,
    fake_kubernetes_jobs: FakeKubernetesJobs,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    monkeypatch.setenv("PREFECT_API_URL", api_url)
    monkeypatch.setenv("APP_DB_PASSWORD", SECRET_VALUE)
    config = write_config(
        {"postgres": [{"name": "app", "dsn": "postgresql://app:${APP_DB_PASSWORD}@db:5432/app"}]},
        catalog="postgresql+psycopg://runbook@catalog-db/runbook",
        storage={"kind": "s3", "bucket": "acme-backups", "region": "eu-west-1"},
        result_storage={"kind": "s3", "bucket": "acme-prefect-results", "region": "eu-west-1"},
    )
    fake = fake_kubernetes_jobs
    fake.token = TOKEN
    fake.namespaces.add(NAMESPACE)

    code, out, err = cli(
        "deploy",
        "--config",
        str(config),
        "--pool",
        "kubernetes",
        "--image",
        IMAGE,
        "--namespace",
        NAMESPACE,
    )
    assert code == 0, out + err
    assert "helm install prefect-worker prefect/prefect-worker" in out
    assert "create secret generic runbook-secrets --from-literal=APP_DB_PASSWORD=..." in out
    assert "create configmap runbook-config" in out
    assert SECRET_VALUE not in out + err

    template = json.loads(kubernetes.BASE_JOB_TEMPLATE.read_text())
    with get_client(sync_client=True) as client:
        pool = client.read_work_pool("runbook-kubernetes")
        deployment = client.read_deployment_by_name("health/health-on-demand")
        flow_run = client.create_flow_run_from_deployment(deployment.id)
    assert pool.type == "kubernetes"
    assert pool.base_job_template == template
    assert deployment.work_pool_name == "runbook-kubernetes"
    assert deployment.job_variables["image"] == IMAGE
    assert deployment.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": kubernetes.IMAGE_HOME}}
    ]

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "KUBERNETES_")) and k != "APP_DB_PASSWORD"
    }
    env.update(
        PREFECT_API_URL=api_url,
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        KUBECONFIG=str(kubeconfig(tmp_path / "kubeconfig", fake.url)),
        PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_ENABLED="false",
    )
    worker = subprocess.run(
        [
            sys.executable,
            "-m",
            "prefect",
            "worker",
            "start",
            "--pool",
            "runbook-kubernetes",
            "--type",
            "kubernetes",
            "--run-once",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert worker.returncode == 0, worker.stdout[-3000:] + worker.stderr[-3000:]
    assert fake.unhandled == []
    assert len(fake.jobs) == 1, worker.stdout[-3000:] + worker.stderr[-3000:]
    job = fake.jobs[0]
    assert validate_manifest(job) == []
    assert job["metadata"]["namespace"] == NAMESPACE
    assert job["metadata"]["labels"]["prefect.io/flow-run-id"] == str(flow_run.id)
    assert job["metadata"]["labels"]["prefect.io/deployment-name"] == "health-on-demand"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["ttlSecondsAfterFinished"] == 86400
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == IMAGE
    assert pod["serviceAccountName"] == "runbook"
    assert pod["restartPolicy"] == "Never"
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    }
    assert pod["volumes"] == [{"name": "runbook-config", "configMap": {"name": "runbook-config"}}]
    assert container["volumeMounts"] == [
        {"name": "runbook-config", "mountPath": "/etc/runbook", "readOnly": True}
    ]
    by_name = {e["name"]: e for e in container["env"]}
    assert by_name["APP_DB_PASSWORD"] == {
        "name": "APP_DB_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "runbook-secrets", "key": "APP_DB_PASSWORD"}},
    }
    assert by_name["RUNBOOK_CONFIG"]["value"] == "/etc/runbook/runbook.yaml"
    # Results go to the block runbook deploy saved; AWS keys by reference, optional (a role).
    assert by_name["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"]["value"] == (
        "runbook-s3-results/runbook-results"
    )
    assert by_name["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "runbook-secrets",
        "key": "AWS_SECRET_ACCESS_KEY",
        "optional": True,
    }
    assert by_name["PREFECT_API_URL"]["value"] == api_url  # the worker's, for the flow run
    assert by_name["PREFECT__FLOW_RUN_ID"]["value"] == str(flow_run.id)
    assert by_name["PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR"]["value"] == "reschedule"
    assert SECRET_VALUE not in json.dumps(job)
    posted = [r for r in fake.requests if r.method == "POST"]
    assert [r.path for r in posted] == [f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"]
    assert posted[0].headers["authorization"] == f"Bearer {TOKEN}"

    with get_client(sync_client=True) as client:
        submitted = client.read_flow_run(flow_run.id)
    assert submitted.infrastructure_pid == f"{NAMESPACE}:{job['metadata']['name']}"
    assert submitted.state is not None and submitted.state.type.value == "PENDING"
