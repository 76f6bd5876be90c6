"""`result_storage:` in runbook.yaml: what it accepts (no credentials), the Kubernetes refusal
without it, the pool's environment with it, and the block's reads and writes on moto's S3."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from deployments import kubernetes
from deployments.spec import work_pools
from runbook.config import load_config
from runbook.errors import RunbookError
from runbook.results import BLOCK_SLUG, SETTING, RunbookS3Results, result_env
from runbook.storage import ObjectNotFound
from tests.support.cli import cli
from tests.support.s3 import REGION, s3_client

POD_READY = {
    "catalog": "postgresql+psycopg://runbook@db/runbook",
    "storage": {"kind": "s3", "bucket": "acme-backups"},
}


@pytest.mark.parametrize("field", ["access_key_id", "secret_access_key", "session_token"])
def test_credentials_in_result_storage_are_refused_naming_the_field(write_config, field):
    config = write_config(
        {}, result_storage={"kind": "s3", "bucket": "acme-results", field: "AKIAEXAMPLE"}
    )
    with pytest.raises(RunbookError, match=f"result_storage.*{field}: result_storage takes no"):
        load_config(config)
    code, out, err = cli("check-config", "--config", str(config))
    assert code == 2 and f"{field}: result_storage takes no credentials" in err
    assert "AKIAEXAMPLE" not in out + err


def test_result_storage_defaults_and_the_env_it_gives(write_config):
    config = load_config(write_config({}, result_storage={"kind": "s3", "bucket": "acme-r"}))
    assert config.result_storage is not None
    assert config.result_storage.url() == "s3://acme-r/prefect-results"
    assert result_env(config) == {SETTING: BLOCK_SLUG}
    assert result_env(load_config(write_config({}))) == {}


def test_check_config_refuses_a_kubernetes_pool_without_result_storage(write_config):
    config = write_config({}, **POD_READY)
    code, out, err = cli("check-config", "--config", str(config), "--pool", "kubernetes")
    assert code == 2
    assert "result_storage: not set" in err and "gone when the flow run's Job ends" in err
    code, out, err = cli("check-config", "--config", str(config), "--pool", "kubernetes", "--json")
    assert code == 2 and "result_storage: not set" in json.loads(out)["error"]

    with_results = write_config(
        {}, **POD_READY, result_storage={"kind": "s3", "bucket": "acme-prefect-results"}
    )
    code, out, err = cli("check-config", "--config", str(with_results), "--pool", "kubernetes")
    assert code == 0, out + err


def test_the_kubernetes_pool_env_names_the_block_and_reads_aws_keys_by_reference(
    write_config, monkeypatch
):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "rbresults-never-in-the-pool")
    config = write_config(
        {}, **POD_READY, result_storage={"kind": "s3", "bucket": "acme-prefect-results"}
    )
    pool = kubernetes.kubernetes_pool(
        work_pools()["kubernetes"],
        config,
        "registry.example/runbook:1.0",
        "runbook-jobs",
        result_env(load_config(config)),
    )
    env = {e["name"]: e for e in pool["job_variables"]["env"]}
    assert env[SETTING] == {"name": SETTING, "value": BLOCK_SLUG}
    for name in kubernetes.AWS_CREDENTIAL_ENV:
        assert env[name] == {
            "name": name,
            "valueFrom": {
                "secretKeyRef": {"name": kubernetes.SECRET, "key": name, "optional": True}
            },
        }
    assert "rbresults-never-in-the-pool" not in json.dumps(pool)
    without = kubernetes.kubernetes_pool(
        work_pools()["kubernetes"], config, "registry.example/runbook:1.0", "runbook-jobs"
    )
    assert not {SETTING, *kubernetes.AWS_CREDENTIAL_ENV} & {
        e["name"] for e in without["job_variables"]["env"]
    }


def test_the_block_writes_and_reads_objects_under_its_prefix(moto_server, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    bucket = f"rbresults-{uuid.uuid4().hex[:12]}"
    client = s3_client(moto_server)
    client.create_bucket(Bucket=bucket)
    block = RunbookS3Results(
        bucket=bucket, prefix="results", endpoint_url=moto_server, region=REGION
    )
    assert block.write_path("abc123", b"sync", _sync=True) == f"s3://{bucket}/results/abc123"
    assert asyncio.run(block.awrite_path("def456", b"async")) == f"s3://{bucket}/results/def456"
    assert block.read_path("def456", _sync=True) == b"async"
    assert asyncio.run(block.aread_path("abc123")) == b"sync"
    assert client.get_object(Bucket=bucket, Key="results/abc123")["Body"].read() == b"sync"
    with pytest.raises(ObjectNotFound):
        block.read_path("missing", _sync=True)
    for key in ("results/abc123", "results/def456"):
        client.delete_object(Bucket=bucket, Key=key)
    client.delete_bucket(Bucket=bucket)
