"""config_drift on real servers: desired max_connections / work_mem on the embedded
PostgreSQL 18 (ALTER SYSTEM is reset afterwards), and maxmemory-policy on a scratch
redis-server; the diff is shown in a dry run, the apply fixes the reloadable settings and
lists the one that needs a restart, and a second window finds nothing left to do. A real
Prometheus started with a 30d retention against a desired 15d (listed, needs a restart).
A files target backed up and verified, then changed: diffs for text files, names only for
the `.env`, and no secret value anywhere."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from runbook.catalog import MaintenanceStatus, Outcome
from runbook.config import load_config
from runbook.config.maintenance import SettingValue
from runbook.errors import RunbookError
from runbook.manifest import new_backup_id
from runbook.runtime import open_runtime
from tasks.backups.dump import run_backup
from tasks.backups.verify import verify_backup
from tasks.maintenance.config_drift import (
    ActualSetting,
    postgres_equal,
    prometheus_equal,
    redis_equal,
)
from tasks.maintenance.file_drift import mask_secrets
from tasks.maintenance.report import window_markdown
from tests.support.maintenance import run_procedures, scratch_redis_server
from tests.support.prometheus_server import prometheus_server


def show(dsn: str, name: str) -> str:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT setting FROM pg_settings WHERE name = %s", (name,)).fetchone()[
            0
        ]


@pytest.fixture
def pg18_reset(pg18):
    """The session's embedded server, its ALTER SYSTEM changes undone after the test."""
    yield pg18
    with psycopg.connect(pg18.admin_dsn, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM RESET work_mem")
        conn.execute("ALTER SYSTEM RESET max_connections")
        conn.execute("SELECT pg_reload_conf()")


def test_postgres_and_redis_drift_shown_then_fixed_online(
    pg18_reset, make_database, write_config, tmp_path
):
    dsn = make_database(pg18_reset, seed=False)
    work_mem = show(dsn, "work_mem")
    assert work_mem != "12288"
    with scratch_redis_server(tmp_path / "redis", "--maxmemory-policy", "noeviction") as port:
        config = write_config(
            {
                "postgres": [{"name": "app", "dsn": dsn}],
                "redis": [{"name": "cache", "url": f"redis://127.0.0.1:{port}/0"}],
            },
            maintenance={
                "windows": {
                    "monthly": {"duration": "4h", "procedures": ["config_drift"]},
                    "weekly": {"duration": "1h", "procedures": ["config_drift"]},
                },
                "config_drift": {
                    "postgres": {
                        "app": {
                            "max_connections": 1000,
                            "work_mem": "12MB",
                            "shared_buffers": "128MB",  # as it is: no action
                            "no_such_setting": 1,
                        }
                    },
                    "redis": {"cache": {"maxmemory-policy": "allkeys-lru", "maxmemory": "0"}},
                },
            },
        )
        dry = run_procedures(config, ["config_drift"], dry_run=True)
        by = {(a.target, a.object): a for a in dry.actions}
        assert set(by) == {
            ("app", "max_connections"),
            ("app", "work_mem"),
            ("app", "no_such_setting"),
            ("cache", "maxmemory-policy"),
        }
        assert by["app", "work_mem"].outcome == Outcome.DRY_RUN
        assert "desired 12MB" in by["app", "work_mem"].reason
        assert by["app", "max_connections"].outcome == Outcome.SKIPPED
        assert "needs a restart" in by["app", "max_connections"].error
        assert by["app", "no_such_setting"].outcome == Outcome.FAILED
        assert by["cache", "maxmemory-policy"].before["actual"] == "noeviction"
        assert show(dsn, "work_mem") == work_mem, "a dry run changes nothing"

        run = run_procedures(config, ["config_drift"], dry_run=False)
        by = {(a.target, a.object): a for a in run.actions}
        assert run.status == MaintenanceStatus.FAILED  # the unknown setting
        assert by["app", "work_mem"].outcome == Outcome.DONE
        assert by["app", "work_mem"].after["actual"] == "12288"
        assert show(dsn, "work_mem") == "12288"
        assert by["app", "max_connections"].outcome == Outcome.SKIPPED
        assert show(dsn, "max_connections") != "1000", "never written: needs a restart"
        assert by["cache", "maxmemory-policy"].after["actual"] == "allkeys-lru"

        again = run_procedures(config, ["config_drift"], dry_run=True)
        assert {a.object for a in again.actions} == {"max_connections", "no_such_setting"}


@pytest.mark.parametrize(
    ("desired", "actual", "equal"),
    [
        ("1GB", ActualSetting("shared_buffers", "131072", "8kB", vartype="integer"), True),
        ("128MB", ActualSetting("shared_buffers", "16384", "8kB", vartype="integer"), True),
        ("4MB", ActualSetting("work_mem", "4096", "kB", vartype="integer"), True),
        ("8MB", ActualSetting("work_mem", "4096", "kB", vartype="integer"), False),
        ("1min", ActualSetting("statement_timeout", "60000", "ms", vartype="integer"), True),
        (200, ActualSetting("max_connections", "100", None, vartype="integer"), False),
        (True, ActualSetting("log_connections", "on", None, vartype="bool"), True),
        (
            "scram-sha-256",
            ActualSetting("password_encryption", "scram-sha-256", None, vartype="enum"),
            True,
        ),
    ],
)
def test_postgres_values_compare_in_the_servers_unit(
    desired: SettingValue, actual: ActualSetting, equal: bool
):
    assert postgres_equal(desired, actual) is equal


def test_redis_values_compare_with_memory_units():
    assert redis_equal("1gb", str(1024**3))
    assert redis_equal("allkeys-lru", "allkeys-lru")
    assert not redis_equal("allkeys-lru", "noeviction")


# --- Prometheus ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus_30d(tmp_path_factory) -> Iterator[str]:
    """A real Prometheus started with --storage.tsdb.retention.time=30d."""
    folder = tmp_path_factory.mktemp("prometheus")
    with prometheus_server(folder, "--storage.tsdb.retention.time=30d") as url:
        yield url


def metrics_target(url: str) -> dict[str, object]:
    return {"name": "metrics", "url": url, "queries": [{"name": "up", "query": "up"}]}


def test_prometheus_flags_drift_is_listed_as_needing_a_restart(prometheus_30d, write_config):
    """Runbook 001's `retention.time: 15d` against a server started with 30d: shown with
    its desired and actual value, `skipped` as needing a restart (in a dry run and when
    applying), never failed; a flag as it is gives no action, an unknown one fails."""
    config = write_config(
        {"prometheus": [metrics_target(prometheus_30d)]},
        maintenance={
            "config_drift": {
                "prometheus": {
                    "metrics": {
                        "storage.tsdb.retention.time": "15d",
                        "--storage.tsdb.retention.size": "0B",  # as it is: no action
                        "web.enable-lifecycle": False,  # as it is: no action
                        "no.such.flag": 1,
                    }
                }
            }
        },
    )
    for dry_run in (True, False):
        run = run_procedures(config, ["config_drift"], dry_run=dry_run)
        by = {a.object: a for a in run.actions}
        assert set(by) == {"storage.tsdb.retention.time", "no.such.flag"}
        retention = by["storage.tsdb.retention.time"]
        assert retention.outcome == Outcome.SKIPPED
        assert retention.before["actual"] == "30d" and retention.before["desired"] == "15d"
        assert retention.statement == "--storage.tsdb.retention.time=15d"
        assert "needs a restart" in retention.error and "Prometheus" in retention.error
        assert "storage.tsdb.retention.time: 30d, desired 15d" in retention.reason
        assert by["no.such.flag"].outcome == Outcome.FAILED
        assert "no flag 'no.such.flag'" in by["no.such.flag"].error
    assert run.status == MaintenanceStatus.FAILED  # the unknown flag only

    same = write_config(
        {"prometheus": [metrics_target(prometheus_30d)]},
        maintenance={
            "config_drift": {"prometheus": {"metrics": {"storage.tsdb.retention.time": "720h"}}}
        },
    )
    run = run_procedures(same, ["config_drift"], dry_run=True)
    assert run.actions == [] and run.status == MaintenanceStatus.DONE  # 720h is 30d


def test_prometheus_values_compare_by_value():
    assert prometheus_equal("15d", "15d") and prometheus_equal("360h", "15d")
    assert prometheus_equal("1d12h", "36h") and not prometheus_equal("15d", "30d")
    assert prometheus_equal("512MB", "512MiB") and prometheus_equal("1GB", "1024MB")
    assert prometheus_equal(False, "false") and not prometheus_equal(True, "false")
    assert not prometheus_equal("debug", "info")


def test_desired_settings_must_name_a_target(write_config):
    path = write_config(
        {}, maintenance={"config_drift": {"prometheus": {"nope": {"x": 1}}}}
    )
    with pytest.raises(RunbookError, match=r"maintenance\.config_drift\.prometheus\.nope"):
        load_config(path)


# --- files targets ---------------------------------------------------------------------------

OLD_SECRET, NEW_SECRET = "env-old-s3cret-7f3a", "env-new-s3cret-9c1d"
OLD_INLINE, NEW_INLINE = "inline-old-hunter2", "inline-new-hunter3"


def test_files_changed_since_the_last_verified_backup(write_config, tmp_path, caplog, capsys):
    """A files target backed up and verified through the backup code; then one text file
    changed (with a secret-looking line in it), one added, one removed, and the `.env`
    changed: the text file has its diff (the inline secret masked), the added and removed
    ones theirs, the `.env` its name only. No secret value appears in the actions' JSON, the
    ledger's rows, the plan and report artifacts or the logs."""
    caplog.set_level(logging.DEBUG)
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "app.conf").write_text(
        f"port = 8080\nworkers = 4\npassword: {OLD_INLINE}\nlog_level = info\n"
    )
    (conf / "old.conf").write_text("legacy = true\n")
    (conf / ".env").write_text(f"DB_PASSWORD={OLD_SECRET}\nMODE=prod\n")
    (conf / "same.conf").write_text("untouched = yes\n")
    config = write_config(
        {"files": [{"name": "conf", "paths": [str(conf)]}]},
        maintenance={"windows": {"monthly": {"duration": "4h", "procedures": ["config_drift"]}}},
    )
    runtime = open_runtime(config)
    none_yet = run_procedures(config, ["config_drift"], dry_run=True)
    (missing,) = none_yet.actions
    assert missing.outcome == Outcome.SKIPPED and "no verified backup of conf" in missing.error

    backup_id = new_backup_id()
    run_backup(runtime.config, runtime.config.target("conf"), runtime.catalog,
               runtime.storage, backup_id)
    assert verify_backup(runtime.catalog, runtime.storage, backup_id).ok
    nothing = run_procedures(config, ["config_drift"], dry_run=True)
    assert nothing.actions == [], "unchanged files: no action"

    (conf / "app.conf").write_text(
        f"port = 9090\nworkers = 4\npassword: {NEW_INLINE}\nlog_level = info\n"
    )
    (conf / "new.conf").write_text("feature_x = on\n")
    (conf / "old.conf").unlink()
    (conf / ".env").write_text(f"DB_PASSWORD={NEW_SECRET}\nMODE=prod\n")
    published: dict[str, str] = {}
    run = run_procedures(config, ["config_drift"], dry_run=False, published=published)

    assert run.status == MaintenanceStatus.DONE, run.error
    by = {Path(a.object).name: a for a in run.actions}
    assert set(by) == {"app.conf", "new.conf", "old.conf", ".env"}
    assert all(a.outcome == Outcome.SKIPPED and "report only" in a.error for a in run.actions)
    app = by["app.conf"]
    assert app.object == str(conf / "app.conf")
    assert app.before["change"] == "changed" and app.before["backup"] == backup_id
    diff = str(app.before["diff"])
    assert "-port = 8080" in diff and "+port = 9090" in diff and " workers = 4" in diff
    assert f"--- {conf / 'app.conf'} (backup {backup_id})" in diff
    assert "password: ***" in diff  # the secret-looking line: key kept, value masked
    assert by["new.conf"].before["change"] == "added"
    assert "+feature_x = on" in str(by["new.conf"].before["diff"])
    assert by["old.conf"].before["change"] == "removed"
    assert "-legacy = true" in str(by["old.conf"].before["diff"])
    env = by[".env"]
    assert env.before == {"change": "changed", "backup": backup_id, "secret": True}
    assert "name only" in env.reason

    report = window_markdown(run)
    assert "+port = 9090" in report and "+port = 9090" in published["maintenance-plan"]
    rows = json.dumps([a.json_row() for a in run.actions])
    ledger = ledger_text(tmp_path / "catalog.db")
    assert backup_id in ledger and "+port = 9090" in ledger  # the ledger holds the diff
    logs = caplog.text + "".join(capsys.readouterr())
    for secret in (OLD_SECRET, NEW_SECRET, OLD_INLINE, NEW_INLINE):
        for where, text in [
            ("actions", rows),
            ("ledger", ledger),
            ("report", report),
            ("plan", published["maintenance-plan"]),
            ("logs", logs),
        ]:
            assert secret not in text, (secret, where)

    # Storage is not trusted: a damaged archive gives no diff, but a failed action.
    stored = runtime.config.storage.path / runtime.catalog.get_backup(backup_id).artifacts[0].key
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    damaged = run_procedures(config, ["config_drift"], dry_run=True)
    (failed,) = damaged.actions
    assert failed.outcome == Outcome.FAILED and "does not match its manifest" in failed.error
    assert f"runbook backups verify {backup_id}" in failed.error


def ledger_text(catalog: Path) -> str:
    """Every value of every row of the catalog's maintenance tables, as text."""
    with sqlite3.connect(catalog) as conn:
        tables = [
            name
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if name.startswith("maintenance")
        ]
        assert tables
        return "\n".join(
            str(row) for table in tables for row in conn.execute(f'SELECT * FROM "{table}"')
        )


def test_secret_lines_are_masked_in_diffs():
    assert mask_secrets("DB_PASSWORD=abc") == "DB_PASSWORD=***"
    assert mask_secrets('  "api_key": "xyz",') == '  "api_key": ***'
    assert mask_secrets("url = postgres://app:pw123@db/app") == "url = postgres://app:***@db/app"
    assert mask_secrets("port = 5432") == "port = 5432"
