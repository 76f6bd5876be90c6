"""The diagnose wing's Prefect tasks: one section, and storing the bundle (pack, store,
read back, retention)."""

from __future__ import annotations

import json
from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE

from runbook.runtime import open_runtime
from tasks.diagnose.bundle import (
    BundleManifest,
    delete_bundle,
    list_bundles,
    plan_bundle_retention,
    verify_bundle,
    write_bundle,
)
from tasks.diagnose.plan import PlannedSection, collect_section
from tasks.diagnose.report import DiagnosticsBundle, all_findings, bundle_markdown
from tasks.diagnose.sections import Section


@task(name="diagnose-section", task_run_name="diagnose-{name}-{target}", cache_policy=NO_CACHE)
def diagnose_section(config_path: str | None, name: str, target: str) -> tuple[Section, bytes]:
    """One section, bounded in time and size; a failure comes back as a failed section."""
    return collect_section(open_runtime(config_path), PlannedSection(name, target))


@task(name="store-diagnostics", cache_policy=NO_CACHE)
def store_diagnostics(
    config_path: str | None,
    bundle_id: str,
    incident: str | None,
    created_at: datetime,
    collected: list[tuple[Section, bytes]],
) -> DiagnosticsBundle:
    """Pack and store the bundle, read it back from storage, then apply the bundles' own
    retention (only once this one verified: a failing storage never deletes older ones)."""
    runtime = open_runtime(config_path)
    settings = runtime.config.diagnostics
    sections = [section for section, _ in collected]
    summary = DiagnosticsBundle(
        id=bundle_id,
        key="",
        incident=incident,
        created_at=created_at,
        verified=False,
        sections=sections,
        findings=all_findings(sections),
    )
    index = {
        "bundle_id": bundle_id,
        "incident": incident,
        "created_at": created_at.isoformat(),
        "findings": summary.findings,
        "sections": [s.model_dump(mode="json") for s in sections],
    }
    files = [
        ("README.md", bundle_markdown(summary, stored=False).encode()),
        ("bundle.json", json.dumps(index, indent=1).encode()),
    ] + [(section.filename, data) for section, data in collected]
    header = BundleManifest(
        bundle_id=bundle_id,
        incident=incident,
        created_at=created_at,
        key="",
        bytes=0,
        logical_bytes=0,
        sha256="",
        members=[],
        sections=sections,
        findings=summary.findings,
    )
    manifest = write_bundle(runtime.storage, settings, header, files)
    check = verify_bundle(runtime.storage, settings.prefix, manifest)
    deleted: list[str] = []
    if check.verified:
        plan = plan_bundle_retention(
            list_bundles(runtime.storage, settings.prefix),
            settings.keep_last,
            settings.keep_days,
            created_at,
        )
        for decision in plan:
            if decision.action == "delete" and decision.bundle_id != bundle_id:
                delete_bundle(runtime.storage, settings.prefix, decision.bundle_id)
                deleted.append(decision.bundle_id)
    return summary.model_copy(
        update={
            "key": manifest.key,
            "bytes": manifest.bytes,
            "verified": check.verified,
            "problems": check.problems,
            "deleted": deleted,
        }
    )
