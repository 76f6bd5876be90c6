"""The health section: the latest finished health run from the catalog, its failing checks
first, so the bundle says what Runbook itself last saw."""

from __future__ import annotations

from runbook.catalog import Catalog, HealthHistory
from runbook.health import RANK, Status
from tasks.diagnose.sections import Collected


def collect_health(catalog: Catalog) -> Collected:
    history = HealthHistory(catalog)
    run = history.latest_run()
    if run is None:
        return Collected(data={"run": None, "checks": []}, summary="no health run recorded yet")
    checks = history.run_results(run.id)
    checks.sort(key=lambda c: (-RANK[Status(c.status)], c.check, c.target))
    failing = [c for c in checks if c.status != Status.OK]
    findings = [
        f"{c.status.value} {c.check} on {c.target}: {c.message}"
        + (f" ({c.streak} runs in a row)" if c.streak > 1 else "")
        for c in failing
    ]
    summary = (
        f"health run {run.id} at {run.started_at:%Y-%m-%d %H:%M} UTC: {run.status.value}"
        + (f" ({run.severity})" if run.severity else "")
        + f", {len(failing)} of {len(checks)} checks failing"
    )
    data = {
        "run": run.model_dump(mode="json"),
        "checks": [c.model_dump(mode="json") for c in checks],
    }
    return Collected(data=data, summary=summary, findings=findings)
