"""Labels and pins from the command line: `runbook backup --label --keep-until`, the label in
`backups list` (plain and --json) and in the manifest, retention keeping the pinned backup,
and bad input refused with exit 2 before anything runs."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

import flows.backup  # noqa: F401 - Prefect sets up its logging on import, outside CliRunner's streams
from runbook.catalog import BackupStatus, Catalog, utcnow
from runbook.manifest import read_manifest
from runbook.runtime import open_runtime
from tests.support.cli import cli


@pytest.fixture
def files_config(write_config, tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "app.conf").write_text("x = 1\n")
    return str(
        write_config(
            {"files": [{"name": "conf", "paths": [str(etc)]}]},
            retention={"keep_last": 1, "daily": 0, "weekly": 0, "monthly": 0, "grace": "1h"},
        )
    )


@pytest.mark.usefixtures("prefect_harness")
def test_a_labelled_pinned_backup_is_listed_and_outlives_keep_last(files_config):
    config = files_config
    before = utcnow()
    code, out, err = cli(
        "backup", "--label", "emergency-20261201-2207", "--keep-until", "7d",
        "--config", config, "--json",
    )  # fmt: skip
    assert code == 0, out + err
    (pinned,) = json.loads(out)["backups"]
    assert pinned["status"] == "verified" and pinned["label"] == "emergency-20261201-2207"
    until = datetime.fromisoformat(pinned["keep_until"])
    assert before + timedelta(days=7) <= until <= utcnow() + timedelta(days=7)

    for _ in range(2):  # two ordinary backups after it
        code, out, err = cli("backup", "--config", config, "--json")
        assert code == 0, out + err
        assert json.loads(out)["backups"][0]["label"] is None

    runtime = open_runtime(config)
    manifest = read_manifest(runtime.storage, "conf", pinned["id"])
    assert manifest.label == "emergency-20261201-2207" and manifest.keep_until == until

    code, out, _ = cli("backups", "list", "--config", config, "--json")
    listed = json.loads(out)["backups"]
    assert [b["label"] for b in listed] == [None, None, "emergency-20261201-2207"]
    assert listed[2]["keep_until"] == pinned["keep_until"]

    code, out, _ = cli("backups", "list", "--config", config)
    assert code == 0 and "label" in out and "pinned until" in out
    row = next(line for line in out.splitlines() if pinned["id"] in line)
    assert "emergency-20261201-2207" in row and until.strftime("%Y-%m-%d %H:%M") in row

    code, out, _ = cli("backups", "list", "--label", "emergency-20261201-2207", "--config", config)
    assert code == 0 and pinned["id"] in out and listed[0]["id"] not in out

    code, out, err = cli("retention", "--apply", "--config", config, "--json")
    assert code == 0, out + err
    plan = {d["id"]: d for d in json.loads(out)["decisions"]}
    assert plan[pinned["id"]]["action"] == "keep"
    assert plan[pinned["id"]]["reasons"] == [
        f"pinned until {until.strftime('%Y-%m-%d %H:%M')} UTC (label emergency-20261201-2207)"
    ]
    assert plan[listed[0]["id"]]["reasons"][0] == "newest verified"
    assert plan[listed[1]["id"]]["action"] == "delete"  # keep_last 1, not pinned
    catalog = runtime.catalog
    assert catalog.get_backup(pinned["id"]).status == BackupStatus.VERIFIED
    assert catalog.get_backup(listed[1]["id"]).status == BackupStatus.DELETED

    code, out, _ = cli("retention", "--config", config)  # the plain plan says why
    assert "pinned until" in out and "emergency-20261201-2207" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--keep-until", "yesterday"], "--keep-until 'yesterday': expected a date"),
        (["--keep-until", "2020-01-01"], "--keep-until '2020-01-01': 2020-01-02 00:00 UTC is in"),
        (["--label", "emergency/1"], "--label 'emergency/1': a label is"),
    ],
)
def test_bad_labels_and_pins_exit_2_naming_the_option(files_config, args, message):
    code, out, err = cli("backup", *args, "--config", files_config)
    assert code == 2 and out == ""
    assert err.startswith(f"runbook: {message}") and "Traceback" not in err
    assert Catalog(open_runtime(files_config).config.catalog).list_backups() == []  # nothing ran


def test_a_catalog_rebuilt_from_storage_keeps_the_pin(files_config):
    """Storage wins: the label and pin travel in the manifest, so an imported backup has them."""
    from runbook.manifest import Manifest, ManifestArtifact, artifact_key
    from runbook.pins import Pin

    runtime = open_runtime(files_config)
    at = utcnow()
    key = artifact_key("conf", "b1", "files", "tar")
    pin = Pin(label="pre-maintenance-weekly", keep_until=at + timedelta(days=3))
    manifest = Manifest(
        backup_id="b1", target="conf", kind="files", started_at=at, finished_at=at,
        artifacts=[ManifestArtifact(name="files", key=key, content="tar", bytes=1,
                                    logical_bytes=1, sha256="0" * 64, seconds=0)],
        label=pin.label, keep_until=pin.keep_until,
    )  # fmt: skip
    record = runtime.catalog.import_stored(manifest, runtime.storage.describe())
    assert (record.label, record.keep_until) == (pin.label, pin.keep_until)


@pytest.mark.usefixtures("prefect_harness")
def test_the_pre_maintenance_backup_carries_the_windows_label(files_config):
    from flows.maintenance import back_up_first

    assert back_up_first(["conf"], label="pre-maintenance-weekly") == {"conf": None}
    (record,) = open_runtime(files_config).catalog.list_backups(target="conf")
    assert record.label == "pre-maintenance-weekly" and record.keep_until is None


def _take_backups(config: str, count: int) -> list[str]:
    """`count` verified backups of `conf`, oldest first (without Prefect)."""
    from runbook.manifest import new_backup_id
    from tasks.backups.dump import run_backup
    from tasks.backups.verify import verify_backup

    runtime = open_runtime(config)
    ids = []
    for _ in range(count):
        backup_id = new_backup_id()
        run_backup(runtime.config, runtime.config.target("conf"), runtime.catalog,
                   runtime.storage, backup_id)  # fmt: skip
        assert verify_backup(runtime.catalog, runtime.storage, backup_id).ok
        ids.append(backup_id)
    return ids


@pytest.mark.usefixtures("prefect_harness")
def test_an_existing_backup_is_pinned_kept_by_retention_and_unpinned(files_config):
    config = files_config
    older, newer = _take_backups(config, 2)

    before = utcnow()
    code, out, err = cli(
        "backups", "pin", older, "--keep-until", "3d", "--label", "before-upgrade",
        "--config", config, "--json",
    )  # fmt: skip
    assert code == 0, out + err
    pinned = json.loads(out)["backup"]
    until = datetime.fromisoformat(pinned["keep_until"])
    assert pinned["id"] == older and pinned["label"] == "before-upgrade"
    assert pinned["status"] == "verified"  # pinning changes no status
    assert before + timedelta(days=3) <= until <= utcnow() + timedelta(days=3)
    code, out, _ = cli("backups", "pin", older, "--keep-until", "2099-01-01", "--config", config)
    assert code == 0
    assert out.strip() == (
        f"backup {older} (conf, verified): pinned until 2099-01-02 00:00 UTC (label before-upgrade)"
    )

    code, out, err = cli("retention", "--config", config, "--json")  # keep_last 1: a dry run
    assert code == 0, out + err
    plan = {d["id"]: d for d in json.loads(out)["decisions"]}
    assert plan[older]["action"] == "keep"
    assert plan[older]["reasons"] == ["pinned until 2099-01-02 00:00 UTC (label before-upgrade)"]

    code, out, _ = cli("backups", "unpin", older, "--config", config)
    assert code == 0
    assert out.strip() == (
        f"backup {older} (conf, verified): no longer pinned (was until 2099-01-02 00:00 UTC)"
    )
    code, out, _ = cli("backups", "unpin", older, "--config", config, "--json")
    shown = json.loads(out)
    assert code == 0 and shown["was_pinned"] is False
    assert shown["backup"]["keep_until"] is None and shown["backup"]["label"] == "before-upgrade"

    code, out, err = cli("retention", "--apply", "--config", config, "--json")
    assert code == 0, out + err
    plan = {d["id"]: d for d in json.loads(out)["decisions"]}
    assert plan[older]["action"] == "delete" and plan[newer]["action"] == "keep"

    # A deleted backup, an unknown id, a bad or past date: exit 2, one line naming the value.
    for args, message in [
        ([older, "--keep-until", "7d"], f"backup {older} is deleted: only a stored, verified"),
        (["nope", "--keep-until", "7d"], "unknown backup id 'nope'"),
        ([newer, "--keep-until", "soon"], "--keep-until 'soon': expected a date"),
        ([newer, "--keep-until", "2020-01-01"], "--keep-until '2020-01-01': 2020-01-02 00:00"),
        ([newer, "--keep-until", "7d", "--label", "a b"], "--label 'a b': a label is"),
    ]:
        code, out, err = cli("backups", "pin", *args, "--config", config)
        assert code == 2 and out == "", (args, out, err)
        assert err.startswith(f"runbook: {message}"), err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, _, err = cli("backups", "unpin", "nope", "--config", config)
    assert code == 2 and "unknown backup id 'nope'" in err
    assert open_runtime(config).catalog.get_backup(newer).keep_until is None
