"""config_drift on real servers: desired max_connections / work_mem on the embedded
PostgreSQL 18 (ALTER SYSTEM is reset afterwards), and maxmemory-policy on a scratch
redis-server; the diff is shown in a dry run, the apply fixes the reloadable settings and
lists the one that needs a restart, and a second window finds nothing left to do."""

from __future__ import annotations

import psycopg
import pytest

from runbook.catalog import MaintenanceStatus, Outcome
from runbook.config.maintenance import SettingValue
from tasks.maintenance.config_drift import ActualSetting, postgres_equal, redis_equal
from tests.support.maintenance import run_procedures, scratch_redis_server


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
