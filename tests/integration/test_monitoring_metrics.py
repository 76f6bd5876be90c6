"""What the backup and drill pushes say, read from a real catalog (SQLite and PostgreSQL) in the
states the flows leave it: no backup yet, a verified backup followed by a failed one, a backup
found corrupt; a passed drill followed by a refused one (not a verdict), then a failed one."""

from __future__ import annotations

from datetime import timedelta

import pytest

from runbook.catalog import BackupStep, Catalog, DrillCheck, DrillLog, DrillResults, utcnow
from runbook.config import load_config
from tasks.backups.metrics import backup_metrics
from tasks.drills.metrics import drill_metrics
from tests.integration.test_catalog import manifest


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog(request, tmp_path, pg15):
    if request.param == "sqlite":
        yield Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
        return
    name = pg15.create_database("rbmetrics")
    found = Catalog(pg15.url(name))
    yield found
    found.close()
    pg15.drop_database(name)


@pytest.fixture
def config(write_config):
    return load_config(
        write_config(
            {
                "postgres": [
                    {"name": "app", "dsn": "postgresql://u@127.0.0.1/app", "rpo": "1h"},
                    {"name": "other", "dsn": "postgresql://u@127.0.0.1/other", "rto": "20m"},
                ]
            },
            health={"drill_max_age": "7d"},
        )
    )


def values(text: str) -> dict[str, float]:
    """name -> value of an exposition text without labels; checks each has HELP and TYPE."""
    found = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name, value = line.split(" ")
        assert f"# TYPE {name} gauge" in text and f"# HELP {name} " in text
        found[name] = float(value)
    return found


def test_backup_gauges_follow_the_catalog(catalog, config) -> None:
    # Nothing yet: the RPO (health.backup_max_age for a target without rpo), and "never".
    assert values(backup_metrics(config, catalog, "other")) == {
        "runbook_backup_rpo_target_seconds": 26 * 3600,
        "runbook_backup_last_verified_timestamp_seconds": 0,
    }

    t0 = utcnow().replace(microsecond=0) - timedelta(hours=3)
    catalog.start("b1", target="app", kind="postgres", storage="local", started_at=t0)
    catalog.mark_stored("b1", manifest("b1", t0))
    checked = t0 + timedelta(minutes=5)
    catalog.mark_verified("b1", started_at=t0, finished_at=checked, keys=["app/b1/database"])
    t1 = t0 + timedelta(hours=1)
    catalog.start("b2", target="app", kind="postgres", storage="local", started_at=t1)
    catalog.mark_failed("b2", BackupStep.CONNECT, "refused", at=t1 + timedelta(seconds=3))
    b1 = catalog.get_backup("b1")

    assert values(backup_metrics(config, catalog, "app")) == {
        "runbook_backup_rpo_target_seconds": 3600,
        "runbook_backup_last_verified_timestamp_seconds": b1.finished_at.timestamp(),
        "runbook_backup_last_verified_bytes": 10,
        "runbook_backup_last_result": 0,
        "runbook_backup_last_timestamp_seconds": (t1 + timedelta(seconds=3)).timestamp(),
        "runbook_backup_verification_last_result": 1,
        "runbook_backup_verification_last_timestamp_seconds": checked.timestamp(),
    }
    # another target's verifications are not this one's
    assert catalog.latest_verification("other") is None

    # b1 read back damaged: no verified backup is left, the newest verification failed.
    later = checked + timedelta(hours=1)
    problem = {"key": "app/b1/database", "problem": "checksum", "detail": "differs"}
    catalog.mark_corrupt("b1", started_at=later, finished_at=later, problems=[problem])
    found = values(backup_metrics(config, catalog, "app"))
    assert found["runbook_backup_last_verified_timestamp_seconds"] == 0
    assert "runbook_backup_last_verified_bytes" not in found
    assert found["runbook_backup_verification_last_result"] == 0
    assert found["runbook_backup_verification_last_timestamp_seconds"] == later.timestamp()


def drill(log: DrillLog, drill_id: str, at, *, ok: bool, rto: float | None = None) -> None:
    log.start(drill_id, "other", at, "host", 1, None)
    results = DrillResults(
        backup_id="b1",
        rto_seconds=rto,
        rpo_seconds=60.0 if rto else None,
        checks=[DrillCheck(name="restore", ok=ok)],
    )
    log.finish(drill_id, results)


def test_drill_gauges_are_the_newest_verdicts(catalog, config) -> None:
    log = DrillLog(catalog)
    assert drill_metrics(config, catalog, "other") == ""  # no drill: nothing to push
    t0 = utcnow() - timedelta(days=2)
    drill(log, "d1", t0, ok=True, rto=42.5)
    log.start("d2", "other", t0 + timedelta(hours=1), "host", 1, None)
    log.refuse("d2", "the drill server is the source", DrillResults())
    d1 = log.get("d1")
    assert values(drill_metrics(config, catalog, "other")) == {
        "runbook_drill_last_result": 1,
        "runbook_drill_last_timestamp_seconds": d1.finished_at.timestamp(),
        "runbook_drill_max_age_seconds": 7 * 86400,
        "runbook_drill_rto_seconds": 42.5,
        "runbook_drill_rpo_seconds": 60.0,
        "runbook_drill_rto_target_seconds": 1200,  # not on the record: the config's
    }
    drill(log, "d3", t0 + timedelta(hours=2), ok=False)  # failed before measuring
    found = values(drill_metrics(config, catalog, "other"))
    assert found["runbook_drill_last_result"] == 0
    assert found["runbook_drill_last_timestamp_seconds"] == log.get("d3").finished_at.timestamp()
    assert "runbook_drill_rto_seconds" not in found and "runbook_drill_rpo_seconds" not in found
