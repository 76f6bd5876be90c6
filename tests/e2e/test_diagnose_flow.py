"""`runbook diagnose` end to end: real PostgreSQL with a blocked query, real Redis, a fake
Docker engine with a crashing container, an HTTP debug endpoint; the bundle stored, read back,
left alone by backup retention, and no secret anywhere (bundle, manifest, artifact, output)."""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest
import zstandard
from typer.testing import CliRunner

from runbook.catalog import utcnow
from runbook.cli import app
from runbook.errors import RunFailed
from runbook.manifest import list_manifests
from runbook.runtime import open_runtime
from tasks.backups.retention import find_orphans, plan_garbage
from tasks.diagnose.bundle import list_bundles
from tests.support.artifacts import artifact_markdown
from tests.support.fake_apis import FakeDocker, docker_container, fake_docker  # noqa: F401

pytestmark = pytest.mark.usefixtures("prefect_harness")

PASSWORD = "Planted-Pw-7731"  # reaches the config through ${APP_DB_PASSWORD}
TOKEN = "planted-token-55c9e1"  # only in the environment (OPS_API_TOKEN)


class DebugApp:
    """/api/v1/debug/performance: answers with the DSN and the token in its body, as a careless
    debug endpoint would."""

    def __init__(self, dsn: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                body = {"p95_ms": 812, "database": dsn, "auth": f"Bearer {TOKEN}"}
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v1/debug/performance"


def bundle_files(runtime, key: str) -> dict[str, bytes]:
    stored = b"".join(runtime.storage.get(key))
    plain = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stored)).read()
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_runbook_diagnose_collects_stores_verifies_and_redacts(
    pg15,
    make_database,
    write_config,
    fake_docker: FakeDocker,  # noqa: F811
    monkeypatch,
):
    monkeypatch.setenv("APP_DB_PASSWORD", PASSWORD)
    monkeypatch.setenv("OPS_API_TOKEN", TOKEN)
    plain_dsn = make_database(pg15, seed=False)
    dbname = psycopg.conninfo.conninfo_to_dict(plain_dsn)["dbname"]
    dsn = f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/{dbname}"  # trust: any password
    app_server = DebugApp(dsn)
    fake_docker.add(
        docker_container("shop-worker-1", status="restarting", exit_code=1, restart_count=4)
    )
    fake_docker.logs["shop-worker-1"] = [
        (1, "INFO starting worker"),
        (2, f"ERROR cannot connect to {dsn}: password={PASSWORD} token={TOKEN}"),
    ]
    config = write_config(
        {
            "postgres": [
                {
                    "name": "app",
                    "dsn": "postgresql://postgres:${APP_DB_PASSWORD}@127.0.0.1:5432/" + dbname,
                }
            ],
            "redis": [{"name": "cache", "url": "redis://127.0.0.1:6379/0"}],
            "docker": [
                {
                    "name": "box",
                    "url": fake_docker.url.replace("http://", "tcp://"),
                    "project": "shop",
                }
            ],
        },
        diagnostics={
            "endpoints": [{"name": "perf", "url": app_server.url}],
            "long_query": "1s",
        },
    )

    # A blocker holding a row, a blocked UPDATE whose text carries the DSN.
    with psycopg.connect(plain_dsn, autocommit=True) as setup:
        setup.execute("CREATE TABLE jobs (id int PRIMARY KEY, owner text)")
        setup.execute("INSERT INTO jobs VALUES (1, 'nobody')")
    blocker = psycopg.connect(plain_dsn)
    blocker.execute("UPDATE jobs SET owner = 'batch' WHERE id = 1")
    blocked = psycopg.connect(plain_dsn, autocommit=True)
    waiter = threading.Thread(
        target=lambda: blocked.execute(
            "UPDATE jobs SET owner = %s WHERE id = 1", (f"worker via {dsn}",)
        ),
        daemon=True,
    )
    waiter.start()
    time.sleep(1.5)
    try:
        result = CliRunner().invoke(
            app, ["diagnose", "--incident", "db-locks", "--json", "--config", str(config)]
        )
        markdown = artifact_markdown("diagnostics")
    finally:
        blocker.rollback()
        waiter.join(10)
        blocker.close()
        blocked.close()
        app_server.server.shutdown()

    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)["bundle"]
    assert {"id", "key", "verified", "sections"} <= set(out)
    assert out["verified"] is True
    sections = {(s["name"], s["target"]): s for s in out["sections"]}
    assert set(sections) == {
        ("postgres", "app"),
        ("redis", "cache"),
        ("docker", "box"),
        ("host", "localhost"),
        ("http", "perf"),
        ("health", "catalog"),
    }
    assert all(s["ok"] for s in out["sections"]), out["sections"]
    assert all({"name", "target", "ok", "bytes", "detail"} <= set(s) for s in out["sections"])
    assert "1 blocked" in sections[("postgres", "app")]["detail"]
    assert out["key"].startswith("_diagnostics/bundles/") and out["key"].endswith(".tar.zst")

    runtime = open_runtime(config)
    files = bundle_files(runtime, out["key"])
    assert {"README.md", "bundle.json", "sections/postgres-app.json"} <= set(files)
    pg = json.loads(files["sections/postgres-app.json"])
    (pair,) = pg["data"]["blocking"]
    assert pair["blocker_state"] == "idle in transaction"
    assert "UPDATE jobs SET owner = $1" in pair["blocked_query"]
    docker = json.loads(files["sections/docker-box.json"])
    assert docker["data"]["containers"][0]["logs"][-1].count("***") >= 3  # the line, scrubbed
    perf = json.loads(files["sections/http-perf.json"])
    assert perf["data"]["body"]["p95_ms"] == 812 and perf["data"]["body"]["database"] == "***"
    assert files["README.md"].decode().index("## Findings") < files["README.md"].decode().index(
        "## Sections"
    )

    # Findings first in the artifact; the plain output names the bundle.
    plain_run = CliRunner().invoke(app, ["diagnose", "-t", "cache", "--config", str(config)])
    assert markdown.index("## Findings") < markdown.index("## Sections")
    assert "is blocked by pid" in markdown and "(db-locks)" in markdown
    assert plain_run.exit_code == 0, plain_run.output
    assert "verified" in plain_run.stdout and "cache" in plain_run.stdout

    # No secret anywhere: the bundle's files, its manifest, the artifact, what was printed.
    manifest = runtime.storage.get_bytes(out["key"].replace("bundle.tar.zst", "manifest.json"))
    everything = [*files.values(), manifest, markdown.encode(), result.stdout.encode()]
    everything += [plain_run.stdout.encode(), plain_run.stderr.encode()]
    for blob in everything:
        for secret in (PASSWORD, TOKEN, dsn):
            assert secret.encode() not in blob

    # Backups' retention, garbage collection and import never see the bundles.
    assert list_manifests(runtime.storage) == []
    orphans = find_orphans(runtime.catalog, runtime.storage)
    assert orphans == []
    assert plan_garbage(orphans, utcnow(), timedelta(0)).actions == []
    swept = CliRunner().invoke(app, ["retention", "--apply", "--json", "--config", str(config)])
    assert swept.exit_code == 0, swept.output
    assert json.loads(swept.stdout)["deleted"] == []
    assert len(list_bundles(runtime.storage, "_diagnostics")) == 2  # both runs' bundles


def test_a_health_run_turning_critical_starts_one_bundle_per_episode(write_config):
    from flows.daily_health import daily_health
    from tests.support.fake_apis import closed_port_url

    config = write_config(
        {"http": [{"name": "api", "url": closed_port_url() + "/health", "timeout": "2s"}]},
        diagnostics={"on_critical": True},
    )
    runtime = open_runtime(config)

    first = RunFailed.summary_of(daily_health(return_state=True).result(raise_on_failure=False))
    second = RunFailed.summary_of(daily_health(return_state=True).result(raise_on_failure=False))
    assert first.status == second.status == "critical"
    (bundle,) = list_bundles(runtime.storage, "_diagnostics")  # once for the episode
    assert first.diagnostics == bundle.bundle_id and second.diagnostics is None
    assert bundle.incident == f"health-{first.run_id}"

    # the episode ends (the check is not critical for one run), a new one is diagnosed again
    write_config({"http": []}, diagnostics={"on_critical": True})
    daily_health(only=["backups"], return_state=True)
    assert len(list_bundles(runtime.storage, "_diagnostics")) == 1
    write_config(
        {"http": [{"name": "api", "url": closed_port_url() + "/health", "timeout": "2s"}]},
        diagnostics={"on_critical": True},
    )
    third = RunFailed.summary_of(daily_health(return_state=True).result(raise_on_failure=False))
    assert third.diagnostics is not None
    assert len(list_bundles(runtime.storage, "_diagnostics")) == 2
