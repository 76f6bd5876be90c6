"""DR drills of Kubernetes objects and Prometheus TSDB targets (issue 16): the backup
restored into the drill's work folder and checked file by file; Kubernetes manifests parsed
and dry-run applied into the (fake) API server, which stores nothing; a Prometheus snapshot
served by the real `prometheus` binary, which is stopped afterwards; RTO and RPO measured and
the drill recorded."""

from __future__ import annotations

import os

import psutil

from runbook.catalog import DrillStatus
from runbook.manifest import new_backup_id
from runbook.runtime import open_runtime
from tasks.backups.dump import run_backup
from tasks.backups.verify import verify_backup
from tasks.drills.drill import DrillRun, run_drill
from tests.integration.test_kubernetes_objects_backup import PASSWORD, fill
from tests.integration.test_prometheus_backup import backup, scraping
from tests.support.fake_kube_objects import fake_kube_objects  # noqa: F401
from tests.support.prometheus_server import prometheus_server


def drill(runtime, target: str):
    return run_drill(
        DrillRun(runtime.config, runtime.catalog, runtime.storage, runtime.config.target(target))
    )


def checks(record) -> dict:
    return {c.name: c for c in record.checks}


def test_a_drill_of_kubernetes_objects(fake_kube_objects, write_config):  # noqa: F811
    fake = fake_kube_objects
    fill(fake)
    config = write_config(
        {
            "kubernetes": [{"name": "cluster", "api_url": fake.url, "timeout": "2s"}],
            "kubernetes_objects": [
                {
                    "name": "k8s",
                    "cluster": "cluster",
                    "namespaces": ["platform"],
                    "secrets": ["db-credentials"],
                    "rto": "15m",
                    "rpo": "1h",
                }
            ],
        }
    )
    runtime = open_runtime(config)
    backup_id = new_backup_id()
    run_backup(runtime.config, runtime.config.target("k8s"), runtime.catalog, runtime.storage,
               backup_id)  # fmt: skip
    assert verify_backup(runtime.catalog, runtime.storage, backup_id).ok
    stored = repr((fake.more, fake.deployments, fake.hpas, fake.network_policies))

    record = drill(runtime, "k8s")
    assert record.passed, [c for c in record.checks if not c.ok]
    found = checks(record)
    assert found["file checksums"].ok
    assert found["manifests"].detail.startswith("7 of 7 manifests parse")
    assert "7 of 7 objects accepted by cluster 'cluster' (dryRun=All" in (
        found["server dry run"].detail
    )
    assert found["rto"].ok and "target 15m" in found["rto"].detail
    assert found["rpo"].ok and record.rpo_seconds >= 0 and record.rto_seconds > 0
    assert len(fake.applies) == 7 and all(dry for *_, dry in fake.applies)
    assert repr((fake.more, fake.deployments, fake.hpas, fake.network_policies)) == stored
    assert PASSWORD not in record.model_dump_json()
    assert runtime.catalog and record.scratch is None
    assert not any(p.startswith("runbook-drill-k8s-") for p in os.listdir("/tmp"))

    # A cluster that lost the namespace refuses the objects: the drill fails and says which.
    fake.namespaces.discard("platform")
    failed = drill(runtime, "k8s")
    assert failed.status == DrillStatus.FAILED
    refused = checks(failed)["server dry run"]
    assert not refused.ok and "0 of 7 objects accepted" in refused.detail
    assert 'namespaces \\"platform\\" not found' in refused.detail or (
        'namespaces "platform" not found' in refused.detail
    )

    # An API server that does not answer: the backup itself is still drilled, and it says so.
    fake.namespaces.add("platform")
    fake.stop()
    offline = drill(runtime, "k8s")
    assert offline.passed, [c for c in offline.checks if not c.ok]
    assert checks(offline)["server dry run"].detail.startswith("not checked: the API server")
    assert checks(offline)["manifests"].ok


def prometheus_processes() -> set[int]:
    return {p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "prometheus"}


def test_a_drill_of_a_prometheus_snapshot_serves_it_with_prometheus(tmp_path, write_config):
    folder = tmp_path / "prom"
    with prometheus_server(folder, "--web.enable-admin-api", "--web.enable-lifecycle") as url:
        scraping(folder, url)
        config = write_config(
            {
                "prometheus_tsdb": [
                    {"name": "metrics", "url": url, "data_dir": str(folder / "data"), "rto": "5m"}
                ]
            }
        )
        runtime = open_runtime(config)
        record = backup(runtime, "metrics")
        assert verify_backup(runtime.catalog, runtime.storage, record.id).ok
    before = prometheus_processes()

    drilled = drill(runtime, "metrics")
    assert drilled.passed, [c for c in drilled.checks if not c.ok]
    found = checks(drilled)
    assert found["file checksums"].ok
    served = found["prometheus serves the snapshot"]
    assert served.ok and "started on the restored data dir" in served.detail
    series = int(served.detail.split(" serves ")[1].split(" series")[0])
    assert series >= 1
    assert drilled.timings["validation"] > 0 and found["rto"].ok and found["rpo"].ok
    assert prometheus_processes() <= before  # stopped
    assert not any(p.startswith("runbook-drill-metrics-") for p in os.listdir("/tmp"))
