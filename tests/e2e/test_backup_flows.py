"""The flows end to end through Prefect (one test server for the session) and the CLI."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from flows.backup import backup
from flows.retention import retention
from flows.verify_backups import verify_backups
from runbook.catalog import BackupStatus, BackupStep, utcnow
from runbook.errors import RunFailed
from runbook.runtime import open_runtime
from tests.support.artifacts import artifact_markdown
from tests.support.cli import cli
from tests.support.pg import PASSWORD, PASSWORD_ROLE
from tests.support.s3 import make_bucket

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_backup_flow_end_to_end(pg15, make_database, write_config, tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "app.conf").write_text("x = 1\n")
    write_config(
        {
            "postgres": [{"name": "app", "dsn": make_database(pg15), "schemas": ["shop"]}],
            "files": [{"name": "config", "paths": ["etc"]}],
        }
    )
    state = backup(return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary.ok
    assert [(b.target, b.status) for b in summary.backups] == [
        ("app", BackupStatus.VERIFIED),
        ("config", BackupStatus.VERIFIED),
    ]
    assert all(b.flow_run_id for b in summary.backups)

    # The summary is persisted: read back through the API from the flow run's stored result.
    from prefect.client.orchestration import get_client

    assert Path(state.data.metadata.storage_key).exists()
    with get_client(sync_client=True) as client:
        stored = client.read_flow_run(state.state_details.flow_run_id).state
    assert stored.result().backups[0].id == summary.backups[0].id

    markdown = artifact_markdown("backup-report")
    for record in summary.backups:
        for artifact in record.artifacts:
            assert artifact.sha256[:12] in markdown
    assert "2 of 2 verified" in markdown


def test_cli_backup_list_verify_json_and_exit_codes(pg15, make_database, write_config):
    config = write_config({"postgres": [{"name": "app", "dsn": make_database(pg15)}]})

    code, out, _ = cli("backup", "--config", str(config), "--json")
    assert code == 0
    made = json.loads(out)["backups"]
    assert len(made) == 1 and made[0]["status"] == "verified"
    backup_id = made[0]["id"]
    for field in ("id", "target", "kind", "status", "started_at", "finished_at", "artifacts"):
        assert field in made[0]
    assert set(made[0]["artifacts"][0]) >= {"key", "bytes", "sha256"}

    code, out, _ = cli("backups", "list", "--config", str(config), "--json")
    assert code == 0 and [b["id"] for b in json.loads(out)["backups"]] == [backup_id]

    code, out, _ = cli("verify", backup_id, "--config", str(config), "--json")
    report = json.loads(out)
    assert code == 0 and report["backup_id"] == backup_id and report["ok"] is True

    # Damage the archive: verify exits 1 and names the artifact and the kind of damage.
    key = made[0]["artifacts"][0]["key"]
    path = open_runtime(config).config.storage.path / key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    code, out, _ = cli("verify", "--latest", "--target", "app", "--config", str(config), "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    assert report["artifacts"] == [
        {
            "key": key,
            "ok": False,
            "problem": "checksum",
            "detail": report["artifacts"][0]["detail"],
            "bytes_read": report["artifacts"][0]["bytes_read"],
        }
    ]
    code, out, _ = cli("backups", "show", backup_id, "--config", str(config), "--json")
    shown = json.loads(out)
    assert shown["backup"]["status"] == "corrupt"
    assert [v["ok"] for v in shown["verifications"]] == [True, True, False]
    assert shown["backup"]["failed_step"] == "verify"

    # The plain output and the report say what to do about it.
    remedy = "the stored bytes changed since the backup; take a new backup"
    assert f"`{backup_id}`, checksum: {remedy}" in artifact_markdown("verification-report")
    code, out, _ = cli("verify", backup_id, "--config", str(config))
    assert code == 1 and f"what to do: {remedy}" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["backup", "--target", "nope"], "unknown backup target 'nope'"),
        (["verify", "20990101T000000Z-abcdef"], "unknown backup id '20990101T000000Z-abcdef'"),
        (["verify"], "give either a BACKUP_ID or --latest"),
        (["backups", "list", "--target", "nope"], "unknown backup target 'nope'"),
    ],
)
def test_operator_mistakes_exit_2_with_one_line(args, message, write_config):
    config = write_config({"files": [{"name": "f", "paths": ["."]}]})
    code, out, err = cli(*args, "--config", str(config))
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err + out


def test_bad_config_exits_2_naming_the_field(tmp_path):
    config = tmp_path / "runbook.yaml"
    config.write_text("targets:\n  postgres:\n    - name: app\n      dns: postgresql://x/y\n")
    code, out, err = cli("backup", "--config", str(config))
    assert code == 2
    assert "targets.postgres[0].dns: unknown field" in err
    assert "targets.postgres[0].dsn: field required" in err
    assert "Traceback" not in err and out == ""


def storage_behind(proxy, moto_server: str) -> dict:
    """S3 storage settings whose requests go through a fault-injecting proxy, unretried."""
    return make_bucket(moto_server).model_dump(mode="json") | {
        "endpoint_url": proxy.endpoint_url,
        "max_attempts": 1,
        "access_key_id": "testing",
        "secret_access_key": "testing",
    }


def test_storage_500s_are_retried_then_verified(
    pg15, make_database, write_config, moto_server, faulty_s3_proxy
):
    proxy = faulty_s3_proxy(fail_first=2, methods=("PUT",))
    storage = storage_behind(proxy, moto_server)
    write_config(
        {"postgres": [{"name": "app", "dsn": make_database(pg15)}]},
        storage=storage,
        backup={"retries": 3, "retry_delay": "0.1s"},
    )
    state = backup(return_state=True)
    assert state.is_completed(), state.message
    record = state.result().backups[0]
    assert record.status == BackupStatus.VERIFIED
    assert proxy.injected == 2
    assert record.attempts == 3  # two attempts hit a 500 (max_attempts=1), the third stored it


def test_wrong_password_fails_once_and_never_leaks(pg18, write_config, capfd):
    from prefect.settings import get_current_settings

    name = pg18.create_database("rbauth")
    wrong = "WrongPw-" + PASSWORD
    try:
        config = write_config(
            {
                "postgres": [
                    {"name": "app", "dsn": pg18.dsn(name, user=PASSWORD_ROLE, password=wrong)}
                ]
            },
            backup={"retries": 3, "retry_delay": "0.1s"},
        )
        started = time.monotonic()
        state = backup(return_state=True)
        assert state.is_failed()
        assert time.monotonic() - started < 30
        record = RunFailed.summary_of(state.result(raise_on_failure=False)).backups[0]
        assert record.status == BackupStatus.FAILED
        assert record.attempts == 1  # not retried
        assert "password authentication failed" in record.error
        assert record.failed_step == BackupStep.CONNECT
        assert "failed at connect: PostgresAuthFailed" in artifact_markdown("backup-report")
        assert wrong not in (record.error or "") and wrong not in (state.message or "")
    finally:
        pg18.drop_database(name)
    captured = capfd.readouterr()
    assert wrong not in captured.out + captured.err
    catalog = Path(open_runtime(config).config.catalog.removeprefix("sqlite:///"))
    prefect_url = get_current_settings().server.database.connection_url.get_secret_value()
    prefect_db = Path(prefect_url.split("///", 1)[1])
    for db in (catalog, prefect_db):
        for path in db.parent.glob(db.name + "*"):  # the database and its WAL
            assert wrong.encode() not in path.read_bytes(), path


def test_a_failed_backup_shows_its_failing_step_in_json_text_and_report(
    write_config, tmp_path, moto_server, faulty_s3_proxy
):
    """Storage answers every upload with 500: the backup fails in step `store`, and says so."""
    proxy = faulty_s3_proxy(fail_first=1000, methods=("PUT",))
    storage = storage_behind(proxy, moto_server)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "app.conf").write_text("x = 1\n")
    config = str(
        write_config(
            {"files": [{"name": "conf", "paths": ["etc"]}]},
            storage=storage,
            backup={"retries": 0},
        )
    )

    code, out, _ = cli("backup", "--config", config, "--json")
    made = json.loads(out)["backups"][0]
    assert code == 1 and made["status"] == "failed"
    assert made["failed_step"] == "store" and "TransientStorageError" in made["error"]
    assert "failed at store: TransientStorageError" in artifact_markdown("backup-report")

    code, out, _ = cli("backups", "list", "--all", "--config", config, "--json")
    assert code == 0 and json.loads(out)["backups"][0]["failed_step"] == "store"
    code, out, _ = cli("backups", "list", "--all", "--config", config)
    assert code == 0 and f"conf {made['id']}: failed at store: TransientStorageError" in out


def test_two_backup_flows_of_one_target_one_reports_locked(pg15, make_database, write_config):
    """The first backup holds the target's lock while it waits for a table lock the test
    holds; the second waits lock_timeout, then reports `locked` without dumping."""
    import psutil
    import psycopg

    dsn = make_database(pg15)
    write_config(
        {"postgres": [{"name": "app", "dsn": dsn}]},
        backup={"lock_timeout": "1s", "table_lock_timeout": "60s"},
    )
    states = []

    def run() -> None:
        states.append(backup(return_state=True))

    def dumps() -> int:
        return sum(1 for c in psutil.Process().children(recursive=True) if c.name() == "pg_dump")

    blocker = psycopg.connect(dsn)
    blocker.execute("LOCK TABLE shop.orders IN ACCESS EXCLUSIVE MODE")
    first = threading.Thread(target=run)
    first.start()
    waiting = (
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'runbook' "
        "AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + 60
    with psycopg.connect(dsn, autocommit=True) as probe:
        while probe.execute(waiting).fetchone()[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert probe.execute(waiting).fetchone()[0] == 1, "the first backup is not blocked"
    second = threading.Thread(target=run)
    second.start()
    most = 0
    while second.is_alive():
        most = max(most, dumps())
        time.sleep(0.05)
    blocker.rollback()
    blocker.close()
    first.join(120)

    assert most <= 1  # never two dumps of one target at once
    summaries = [RunFailed.summary_of(s.result(raise_on_failure=False)) for s in states]
    records = sorted((s.backups[0] for s in summaries), key=lambda r: r.status.value)
    assert [r.status for r in records] == [BackupStatus.LOCKED, BackupStatus.VERIFIED]
    locked = records[0]
    assert "another backup of target 'app' is running" in locked.error
    assert locked.artifacts == []
    failed_state = next(s for s in states if s.is_failed())
    assert "locked" in failed_state.message


def test_retention_flow_plans_then_applies(write_config, tmp_path):
    """A synthetic history: month-end verified backups, then only failures."""
    from runbook.catalog import BackupStep
    from runbook.manifest import Manifest, ManifestArtifact, artifact_key

    config = write_config(
        {"files": [{"name": "f", "paths": ["."]}]},
        retention={"keep_last": 1, "daily": 0, "weekly": 0, "monthly": 2, "grace": "1d"},
    )
    runtime = open_runtime(config)
    now = utcnow()

    def add(backup_id: str, age_days: float, status: BackupStatus, committed: bool) -> None:
        at = now - timedelta(days=age_days)
        catalog = runtime.catalog
        catalog.start(
            backup_id,
            target="f",
            kind="files",
            storage=runtime.storage.describe(),
            started_at=at,
        )
        key = artifact_key("f", backup_id, "files", "tar")
        runtime.storage.put_bytes(key, b"x")
        if not committed:
            catalog.mark_failed(backup_id, BackupStep.DUMP, "tar died", at=at)
            return
        manifest = Manifest(
            backup_id=backup_id,
            target="f",
            kind="files",
            started_at=at,
            finished_at=at,
            artifacts=[
                ManifestArtifact(
                    name="files",
                    key=key,
                    content="tar",
                    bytes=1,
                    logical_bytes=1,
                    sha256="0" * 64,
                    seconds=0,
                )
            ],
        )
        runtime.storage.put_bytes(manifest.key, manifest.to_json())
        catalog.mark_stored(backup_id, manifest)
        catalog.mark_verified(backup_id, started_at=at, finished_at=at, keys=[key])

    add("m3", 95, BackupStatus.VERIFIED, True)
    add("m2", 65, BackupStatus.VERIFIED, True)
    add("m1", 35, BackupStatus.VERIFIED, True)
    for day in range(30, 0, -1):
        add(f"fail{day:02d}", day - 0.5, BackupStatus.FAILED, False)
    runtime.storage.put_bytes("f/orphan-new/files.tar.zst", b"partial")  # a crashed run, fresh

    objects = sorted(i.key for i in runtime.storage.list())
    rows = {r.id: r.status for r in runtime.catalog.list_backups(include_deleted=True)}
    dry = retention(dry_run=True)
    # A dry run is the plan, not applied: storage and catalog are as they were.
    assert sorted(i.key for i in runtime.storage.list()) == objects
    assert {r.id: r.status for r in runtime.catalog.list_backups(include_deleted=True)} == rows
    assert dry.deleted == [] and dry.garbage["incomplete_uploads"] == 0
    assert "Retention, dry run" in artifact_markdown("retention-report")
    plan = {d.id: d for d in dry.decisions}
    assert plan["m1"].action == "keep" and "newest verified" in plan["m1"].reasons
    assert plan["m2"].action == "keep" and plan["m3"].action == "delete"
    assert plan["fail01"].action == "keep" and plan["fail02"].action == "delete"
    assert runtime.storage.exists(artifact_key("f", "m3", "files", "tar"))  # dry run
    assert dry.garbage["orphans_kept"] == ["orphan-new"]

    state = retention(dry_run=False, return_state=True)
    applied = state.result()
    assert task_run_names(state) == {"plan-retention", "apply-retention", "collect-garbage"}
    assert set(applied.deleted) == {"m3"} | {f"fail{d:02d}" for d in range(2, 31)}
    assert not runtime.storage.exists(artifact_key("f", "m3", "files", "tar"))
    assert runtime.catalog.get_backup("m3").status == BackupStatus.DELETED
    assert runtime.catalog.get_backup("m1").status == BackupStatus.VERIFIED
    assert runtime.storage.exists(artifact_key("f", "m1", "files", "tar"))
    assert runtime.storage.exists("f/orphan-new/files.tar.zst")  # within grace
    assert "Retention, applied" in artifact_markdown("retention-report")

    # A committed folder the catalog forgot is imported (storage wins), not deleted.
    runtime.catalog.mark_deleting("m2")  # the catalog forgets m2; its objects stay
    runtime.catalog.mark_deleted("m2")
    again = retention(dry_run=False)
    assert again.garbage["orphans_imported"] == ["m2"]
    assert runtime.catalog.get_backup("m2").status == BackupStatus.STORED


def task_run_names(state) -> set[str]:
    """The names of the task runs of a flow run, as the Prefect UI lists them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        return {t.name.rsplit("-", 1)[0] for t in client.read_task_runs(flow_run_filter=runs)}


def test_verify_flow_of_latest_backups(pg15, make_database, write_config):
    write_config(
        {
            "postgres": [
                {"name": "a", "dsn": make_database(pg15)},
                {"name": "b", "dsn": make_database(pg15)},
            ]
        }
    )
    assert backup().ok
    summary = verify_backups()
    assert summary.ok and sorted(r.target for r in summary.reports) == ["a", "b"]
    assert "2 of 2 backups match" in artifact_markdown("verification-report")


def test_verify_of_a_manifest_with_an_escaping_key_exits_1_without_a_traceback(
    write_config, tmp_path
):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "app.conf").write_text("x = 1\n")
    config = str(write_config({"files": [{"name": "conf", "paths": ["etc"]}]}))
    code, out, _ = cli("backup", "--config", config, "--json")
    made = json.loads(out)["backups"][0]
    assert code == 0 and made["status"] == "verified"
    path = open_runtime(config).config.storage.path / made["manifest_key"]
    manifest = json.loads(path.read_text())
    manifest["artifacts"][0]["key"] = "../../../x"
    path.write_text(json.dumps(manifest))

    code, out, err = cli("verify", made["id"], "--config", config, "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False and "Traceback" not in out + err
    assert report["artifacts"][0]["problem"] == "manifest"
    assert "../../../x" in report["artifacts"][0]["detail"]
    code, out, _ = cli("backups", "show", made["id"], "--config", config, "--json")
    assert json.loads(out)["backup"]["status"] == "corrupt"
