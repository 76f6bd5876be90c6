"""Prometheus TSDB backups (issue 16) against a real Prometheus (Debian's package): a snapshot
through the admin API, its folder archived like a files target and removed afterwards; the
restore is a TSDB data dir that another Prometheus serves the same samples from."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from runbook.catalog import BackupStatus, RestoreStatus
from runbook.manifest import new_backup_id, read_manifest
from runbook.runtime import open_runtime
from tasks.backups.dump import run_backup
from tasks.backups.verify import verify_backup
from tasks.restore.plan import RestoreRefused
from tests.integration.test_restore_core import restore
from tests.support.prometheus_server import prometheus_server

SELF_SCRAPE = """global:
  scrape_interval: 1s
scrape_configs:
  - job_name: self
    static_configs: [{targets: ["%s"]}]
"""


def instant(url: str, query: str) -> list[dict]:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=10).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def scraping(folder: Path, url: str) -> None:
    """Make the server scrape itself every second, and wait for a few samples."""
    (folder / "prometheus.yml").write_text(SELF_SCRAPE % url.removeprefix("http://"))
    assert httpx.post(f"{url}/-/reload", timeout=10).status_code == 200
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = instant(url, 'count_over_time(up{job="self"}[5m])')
        if found and float(found[0]["value"][1]) >= 3:
            return
        time.sleep(0.5)
    pytest.fail("prometheus did not scrape itself")


def backup(runtime, target: str):
    backup_id = new_backup_id()
    try:
        run_backup(
            runtime.config, runtime.config.target(target), runtime.catalog, runtime.storage,
            backup_id,
        )  # fmt: skip
    except Exception:  # noqa: BLE001 - the record says how it failed
        pass
    return runtime.catalog.get_backup(backup_id)


def test_a_tsdb_snapshot_is_backed_up_verified_and_restored_into_a_data_dir(tmp_path, write_config):
    folder = tmp_path / "prom"
    with prometheus_server(folder, "--web.enable-admin-api", "--web.enable-lifecycle") as url:
        scraping(folder, url)
        data = folder / "data"
        config = write_config(
            {"prometheus_tsdb": [{"name": "metrics", "url": url, "data_dir": str(data)}]}
        )
        runtime = open_runtime(config)

        record = backup(runtime, "metrics")
        assert record.status == BackupStatus.STORED, record.error
        assert record.kind == "prometheus"
        assert verify_backup(runtime.catalog, runtime.storage, record.id).ok
        manifest = read_manifest(runtime.storage, "metrics", record.id)
        source = manifest.source
        assert source["blocks"] and source["prometheus_version"].startswith("2.")
        assert any(c["path"].endswith("/meta.json") for c in source["file_checksums"])
        assert source["files"] == len(source["file_checksums"]) >= 4  # chunks, index, meta, ...
        assert list((data / "snapshots").iterdir()) == []  # removed afterwards
        taken = time.time()

    # Restored into a folder, checked file by file, served by another Prometheus.
    restored = tmp_path / "restored"
    done = restore(runtime, target="metrics", into=str(restored / "data"))
    assert done.status == RestoreStatus.RESTORED, (done.error, done.checks)
    assert done.kind == "prometheus"
    checksums = next(c for c in done.checks if c.name == "file checksums")
    assert checksums.ok and f"{source['files']} of {source['files']} files" in checksums.detail
    assert any(f"--storage.tsdb.path={restored / 'data'}" in s for s in done.next_steps)
    assert {p.name for p in (restored / "data").iterdir()} >= set(source["blocks"])

    with prometheus_server(restored) as again:  # no scrape targets: only the restored data
        found = instant(again, f'count_over_time(up{{job="self"}}[10m] @ {taken:.0f})')
        assert found and float(found[0]["value"][1]) >= 3

    # Never over the live TSDB, and never in place.
    with pytest.raises(RestoreRefused, match="original paths"):
        restore(runtime, target="metrics", into=str(data))
    with pytest.raises(Exception, match="--in-place is for files targets"):
        restore(runtime, target="metrics", into="", overwrite="in-place", confirmed=True)


def test_without_the_admin_api_the_backup_fails_at_the_snapshot_and_says_why(
    tmp_path, write_config
):
    folder = tmp_path / "prom"
    with prometheus_server(folder) as url:
        config = write_config(
            {"prometheus_tsdb": [{"name": "metrics", "url": url, "data_dir": str(folder / "data")}]}
        )
        record = backup(open_runtime(config), "metrics")
    assert record.status == BackupStatus.FAILED and record.failed_step == "snapshot"
    assert "admin APIs disabled: start Prometheus with --web.enable-admin-api" in record.error
    assert record.artifacts == []


def test_a_data_dir_that_is_not_the_servers_fails_at_the_snapshot(tmp_path, write_config):
    folder = tmp_path / "prom"
    elsewhere = tmp_path / "not-the-data-dir"
    elsewhere.mkdir()
    with prometheus_server(folder, "--web.enable-admin-api") as url:
        config = write_config(
            {"prometheus_tsdb": [{"name": "metrics", "url": url, "data_dir": str(elsewhere)}]}
        )
        record = backup(open_runtime(config), "metrics")
    assert record.status == BackupStatus.FAILED and record.failed_step == "snapshot"
    assert "data_dir must be its --storage.tsdb.path" in record.error
