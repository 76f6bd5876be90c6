"""Prefect results on S3 (runbook.yaml's `result_storage:`), against moto's S3 server on
127.0.0.1: a backup flow run persists its result object in the bucket and a fresh client reads
it back through the block on the server; `runbook deploy` saves that block and gives every
deployment the setting, and a process worker's flow run (its own process, which finds the
block class through Runbook's prefect.collections entry point) persists its result there too.
The AWS keys come from the environment only: they are in no block document, log, job variable
or result object."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from runbook import results
from runbook.config import load_config
from runbook.storage import ObjectNotFound
from tests.support.cli import cli
from tests.support.s3 import REGION, s3_client

pytestmark = pytest.mark.usefixtures("prefect_harness")

KEY_ID = "AKIARBRESULTSTEST01"
SECRET = "rbresults-Zq4-never-stored-anywhere"
PREFIX = "prefect-results"


@pytest.fixture
def results_bucket(moto_server, monkeypatch):
    """A fresh bucket; the AWS keys only in this process's environment (moto takes any)."""
    bucket = f"rbresults-{uuid.uuid4().hex[:12]}"
    s3_client(moto_server).create_bucket(Bucket=bucket)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    yield bucket
    client = s3_client(moto_server)
    for item in client.list_objects_v2(Bucket=bucket).get("Contents", ()):
        client.delete_object(Bucket=bucket, Key=item["Key"])
    client.delete_bucket(Bucket=bucket)


def result_settings(moto_server: str, bucket: str) -> dict:
    return {
        "kind": "s3",
        "bucket": bucket,
        "prefix": PREFIX,
        "endpoint_url": moto_server,
        "region": REGION,
    }


def bucket_objects(moto_server: str, bucket: str) -> dict[str, bytes]:
    client = s3_client(moto_server)
    listed = client.list_objects_v2(Bucket=bucket).get("Contents", ())
    return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def files_target(tmp_path: Path) -> dict:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "app.conf").write_text("x = 1\n")
    return {"files": [{"name": "conf", "paths": ["etc"]}]}


def block_document_text() -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        document = client.read_block_document_by_name(
            results.BLOCK_NAME, results.BLOCK_TYPE_SLUG, include_secrets=True
        )
    assert document.data == {
        "bucket": document.data["bucket"],
        "prefix": PREFIX,
        "endpoint_url": document.data["endpoint_url"],
        "region": REGION,
    }
    return document.model_dump_json()


def test_a_flow_persists_its_result_in_the_bucket_and_a_fresh_client_reads_it(
    write_config, moto_server, results_bucket, tmp_path
):
    from prefect.client.orchestration import get_client
    from prefect.results import ResultRecordMetadata

    from flows.backup import backup

    config = write_config(
        files_target(tmp_path), result_storage=result_settings(moto_server, results_bucket)
    )
    with results.result_storage_of(load_config(config)):
        state = backup(return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary.ok

    metadata = state.data.metadata
    assert isinstance(metadata, ResultRecordMetadata)
    assert metadata.storage_block_id is not None
    stored = bucket_objects(moto_server, results_bucket)
    key = f"{PREFIX}/{metadata.storage_key}"
    assert key in stored, sorted(stored)
    assert not Path(metadata.storage_key).is_absolute()  # not a local path
    assert SECRET.encode() not in stored[key] and KEY_ID.encode() not in stored[key]

    # A fresh client: the flow run's state from the API, its result from S3 via the block.
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(state.state_details.flow_run_id)
        logs = client.read_logs()
    assert flow_run.state.result().backups[0].id == summary.backups[0].id
    # ... and nowhere else: without the object the result cannot be read.
    s3_client(moto_server).delete_object(Bucket=results_bucket, Key=key)
    with pytest.raises(ObjectNotFound, match=metadata.storage_key):
        flow_run.state.result()

    text = block_document_text() + json.dumps([log.message for log in logs])
    assert SECRET not in text and KEY_ID not in text


def test_deploy_saves_the_block_and_a_process_workers_run_persists_there(
    write_config, moto_server, results_bucket, tmp_path, monkeypatch
):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    monkeypatch.setenv("PREFECT_API_URL", api_url)
    config = write_config(
        files_target(tmp_path), result_storage=result_settings(moto_server, results_bucket)
    )
    code, out, err = cli("deploy", "--config", str(config), "--json")
    assert code == 0, out + err

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("backup/backup-on-demand")
        flow_run = client.create_flow_run_from_deployment(deployment.id)
    env = deployment.job_variables["env"]
    assert env[results.SETTING] == results.BLOCK_SLUG
    text = json.dumps(deployment.job_variables) + block_document_text() + out + err
    assert SECRET not in text and KEY_ID not in text

    worker_env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    worker_env.update(PREFECT_API_URL=api_url, PREFECT_HOME=str(tmp_path / "worker-home"))
    worker = subprocess.run(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "runbook-process"]
        + ["--type", "process", "--run-once"],
        env=worker_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert worker.returncode == 0, worker.stdout[-3000:] + worker.stderr[-3000:]

    deadline = time.monotonic() + 60  # the state is final when the worker exits; allow a lag
    with get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(flow_run.id).state
            if state is not None and state.is_final() or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert state is not None and state.is_completed(), worker.stdout[-3000:] + worker.stderr[-3000:]
    stored = bucket_objects(moto_server, results_bucket)
    key = f"{PREFIX}/{state.data.storage_key}"  # ResultRecordMetadata, from the API
    assert key in stored, sorted(stored)
    # The worker loads flows/backup.py as the module `backup`, so its summary is pickled as
    # backup.BackupRunSummary: a reader needs flows/ on its path (Prefect's script loading).
    monkeypatch.syspath_prepend(str(Path(__file__).parents[2] / "flows"))
    assert state.result().backups[0].target == "conf"
    local = tmp_path / "worker-home" / "storage"
    assert not local.exists() or not any(local.iterdir())  # nothing on the worker's disk
    assert SECRET not in worker.stdout + worker.stderr
