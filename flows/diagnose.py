"""The diagnose flow: collect everything before touching anything (runbooks 000, 001, 003).

1. Load the config and plan the sections: every PostgreSQL, Redis, Docker and Kubernetes
   target (or the targets asked for), the host, the HTTP debug endpoints, the latest health
   results.
2. Collect every section concurrently, each under a hard deadline and a size cap, secrets
   scrubbed; a section that fails is recorded as failed and the bundle goes on.
3. Store the bundle like a backup (tar -> zstd -> sha256 -> storage, manifest last), read it
   back from storage, and apply the bundles' own retention.
4. Publish a markdown artifact, findings first; return a DiagnosticsBundle. The run ends
   Failed only when the bundle could not be verified.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner

from runbook.catalog import utcnow
from runbook.errors import RunFailed
from runbook.manifest import new_backup_id
from runbook.runtime import open_runtime
from tasks.diagnose.plan import plan_sections
from tasks.diagnose.report import DiagnosticsBundle, bundle_markdown
from tasks.diagnose.tasks import diagnose_section, store_diagnostics


@flow(name="diagnose", task_runner=ThreadPoolTaskRunner(max_workers=8))
def diagnose(targets: list[str] = [], incident: str = "") -> DiagnosticsBundle:  # noqa: B006
    """Collect a diagnostics bundle (PostgreSQL, Redis, Docker, Kubernetes, host, HTTP debug
    endpoints, latest health) and store it beside the backups.

    Args:
        targets: Targets to diagnose (the host and the health results always come along).
            Empty: every target.
        incident: A name for the incident, kept with the bundle (e.g. "api-502s").
    """
    runtime = open_runtime()
    config_path = str(runtime.config.source)
    planned = plan_sections(runtime.config, list(targets))
    created_at = utcnow()
    bundle_id = new_backup_id(created_at)

    futures = [diagnose_section.submit(config_path, p.name, p.target) for p in planned]
    collected = [future.result() for future in futures]
    bundle = store_diagnostics(config_path, bundle_id, incident or None, created_at, collected)

    create_markdown_artifact(
        markdown=bundle_markdown(bundle), key="diagnostics", description="Latest diagnostics"
    )
    failed = [f"{s.name} {s.target}" for s in bundle.sections if not s.ok]
    get_run_logger().info(
        "diagnostics %s: %d sections (%d failed%s), %d findings, %s",
        bundle.id,
        len(bundle.sections),
        len(failed),
        f": {', '.join(failed)}" if failed else "",
        len(bundle.findings),
        "verified" if bundle.verified else "NOT verified",
    )
    if not bundle.verified:
        message = f"diagnostics {bundle.id} did not verify: {'; '.join(bundle.problems)}"
        return Failed(message=message, data=RunFailed(message, bundle))
    return bundle
