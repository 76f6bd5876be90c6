"""What Runbook pushes to a Prometheus Pushgateway, and the push itself.

Every gauge Runbook pushes is declared here once (`GAUGES`: name, help, labels), so the push
code, the alert rules (infra/prometheus/) and the dashboard (infra/grafana/) can be checked
against one list. Each flow pushes one group, replaced whole by every push (HTTP PUT):

- health:  job=<pushgateway.job>,        instance=<host>  (tasks/health/notify.py)
- backups: job=<pushgateway.job>_backup, target=<name>    (tasks/backups/metrics.py)
- drills:  job=<pushgateway.job>_drill,  target=<name>    (tasks/drills/metrics.py)
- capacity: job=<pushgateway.job>_capacity               (tasks/capacity/metrics.py)

The values are read from the catalog when the flow ends, so a push is a complete snapshot of
its group and two flows never overwrite each other's series. A push that fails is a warning
(`push_or_warn`), never a failed backup or drill.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import httpx

from runbook.catalog import Catalog
from runbook.config import Config, PushgatewaySettings
from runbook.runtime import open_runtime
from runbook.secrets import describe_url, redact

log = logging.getLogger("runbook.metrics")


@dataclass(frozen=True)
class Gauge:
    name: str
    help: str
    labels: tuple[str, ...] = ()  # in the pushed text; the grouping key adds job, target, ...


GAUGES: dict[str, Gauge] = {}


def gauge(name: str, help: str, labels: tuple[str, ...] = ()) -> Gauge:  # noqa: A002
    if name in GAUGES:
        raise ValueError(f"gauge {name} declared twice")
    GAUGES[name] = Gauge(name, help, labels)
    return GAUGES[name]


# --- health (job=<job>, instance=<host>) --------------------------------------------------------
CHECK_STATUS = gauge(
    "runbook_check_status",
    "Health check status (0 ok, 1 unknown, 2 warn, 3 critical).",
    ("check", "target"),
)
CHECK_FAILING_RUNS = gauge(
    "runbook_check_failing_runs",
    "Consecutive health runs the check has been failing (warn, unknown or critical); 0 when ok.",
    ("check", "target"),
)
HEALTH_LAST_RUN = gauge(
    "runbook_health_last_run_timestamp_seconds", "When the health flow last finished."
)

# --- backups (job=<job>_backup, target=<name>) ---------------------------------------------------
BACKUP_LAST_VERIFIED = gauge(
    "runbook_backup_last_verified_timestamp_seconds",
    "End of the target's newest verified backup (0: the target has none).",
)
BACKUP_LAST_VERIFIED_BYTES = gauge(
    "runbook_backup_last_verified_bytes", "Bytes stored by the target's newest verified backup."
)
BACKUP_RPO_TARGET = gauge(
    "runbook_backup_rpo_target_seconds",
    "The target's RPO (targets.*.rpo, else health.backup_max_age).",
)
BACKUP_LAST_RESULT = gauge(
    "runbook_backup_last_result",
    "The target's newest finished backup: 1 committed to storage, 0 failed or locked out.",
)
BACKUP_LAST_TIMESTAMP = gauge(
    "runbook_backup_last_timestamp_seconds", "When the target's newest finished backup ended."
)
VERIFICATION_LAST_RESULT = gauge(
    "runbook_backup_verification_last_result",
    "The target's newest verification: 1 matched its manifest, 0 damage found.",
)
VERIFICATION_LAST_TIMESTAMP = gauge(
    "runbook_backup_verification_last_timestamp_seconds",
    "When the target's newest verification finished.",
)

# --- drills (job=<job>_drill, target=<name>) -----------------------------------------------------
DRILL_LAST_RESULT = gauge(
    "runbook_drill_last_result", "The target's newest DR drill: 1 passed, 0 failed."
)
DRILL_LAST_TIMESTAMP = gauge(
    "runbook_drill_last_timestamp_seconds", "When the target's newest DR drill finished."
)
DRILL_RTO = gauge(
    "runbook_drill_rto_seconds", "Restore time measured by the target's newest DR drill."
)
DRILL_RTO_TARGET = gauge("runbook_drill_rto_target_seconds", "The target's RTO (targets.*.rto).")
DRILL_RPO = gauge(
    "runbook_drill_rpo_seconds",
    "Data loss measured by the newest drill (drill start - backup end).",
)
DRILL_MAX_AGE = gauge(
    "runbook_drill_max_age_seconds", "How old the newest drill may get (health.drill_max_age)."
)

# --- capacity (job=<job>_capacity; every resource of the report in one group) -------------------
CAPACITY_DAYS_UNTIL = gauge(
    "runbook_capacity_days_until",
    "Days until the resource reaches threshold % of its limit, at quantile p10/p50/p90 of the"
    " forecast (absent: not within the horizon, or not forecast).",
    ("resource", "threshold", "quantile"),
)
CAPACITY_USED_RATIO = gauge(
    "runbook_capacity_used_ratio",
    "The resource's newest sample as a share of its limit (1 = full).",
    ("resource",),
)
CAPACITY_STATUS = gauge(
    "runbook_capacity_status",
    "The resource's forecast status (0 ok, 1 not growing, 2 not enough history, 3 warn,"
    " 4 critical).",
    ("resource",),
)
CAPACITY_REPORT_TIMESTAMP = gauge(
    "runbook_capacity_report_timestamp_seconds", "When the capacity report was generated."
)


Sample = tuple[Mapping[str, str], float]

_ESCAPE = re.compile(r'[\\"\n]')


def label_value(value: str) -> str:
    """A label value escaped for the text exposition format."""
    return _ESCAPE.sub(lambda m: {"\\": "\\\\", '"': '\\"', "\n": "\\n"}[m.group(0)], value)


def render(samples: Mapping[Gauge, Sequence[Sample]]) -> str:
    """The text exposition format (0.0.4) of each gauge's samples; a gauge with no samples is
    left out (a value Runbook does not know is absent, not 0)."""
    lines: list[str] = []
    for metric, values in samples.items():
        if not values:
            continue
        lines += [f"# HELP {metric.name} {metric.help}", f"# TYPE {metric.name} gauge"]
        for labels, value in values:
            if set(labels) != set(metric.labels):
                raise ValueError(
                    f"{metric.name}: labels {sorted(labels)} (declared {list(metric.labels)})"
                )
            text = ",".join(f'{k}="{label_value(labels[k])}"' for k in metric.labels)
            lines.append(
                f"{metric.name}{{{text}}} {value:.17g}" if text else f"{metric.name} {value:.17g}"
            )
    return "\n".join(lines) + "\n"


def group_path(grouping: Mapping[str, str]) -> str:
    """/metrics/job/<job>/<label>/<value>...: values with a slash (or empty) in base64."""
    if not grouping.get("job"):
        raise ValueError("a Pushgateway group needs a job")
    parts = []
    for name, value in [("job", grouping["job"])] + [
        (k, v) for k, v in grouping.items() if k != "job"
    ]:
        if "/" in value or not value:
            encoded = base64.urlsafe_b64encode(value.encode()).decode() or "="
            parts.append(f"{name}@base64/{encoded}")
        else:
            parts.append(f"{name}/{quote(value, safe='')}")
    return "/metrics/" + "/".join(parts)


class PushFailed(RuntimeError):
    """The Pushgateway could not be reached or refused the push (message without secrets)."""


def push(settings: PushgatewaySettings, grouping: Mapping[str, str], text: str) -> None:
    """Replace the group's metrics on the Pushgateway with `text` (HTTP PUT)."""
    url = settings.url.rstrip("/") + group_path(grouping)
    where = describe_url(settings.url)  # the URL may carry basic-auth userinfo
    try:
        response = httpx.put(
            url,
            content=text.encode(),
            headers={"Content-Type": "text/plain; version=0.0.4"},
            timeout=settings.timeout.total_seconds(),
        )
    except httpx.HTTPError as exc:
        said = redact(str(exc), [settings.url, urlsplit(settings.url).password])
        raise PushFailed(f"pushgateway {where}: {type(exc).__name__}: {said}") from None
    if response.status_code >= 300:
        detail = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
        raise PushFailed(f"pushgateway {where} answered HTTP {response.status_code} {detail}")


def push_or_warn(
    settings: PushgatewaySettings,
    grouping: Mapping[str, str],
    text: str,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
) -> bool:
    """Push, and on failure log a warning and return False: monitoring never fails a run."""
    try:
        push(settings, grouping, text)
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, the run's result stands
        (logger or log).warning(
            "metrics for %s not pushed: %s",
            ",".join(f"{k}={v}" for k, v in grouping.items()),
            exc if isinstance(exc, PushFailed) else type(exc).__name__,
        )
        return False
    return True


def push_per_target(
    config_path: str | None,
    targets: Sequence[str],
    kind: str,
    metrics_of: Callable[[Config, Catalog, str], str],
    logger: logging.Logger | logging.LoggerAdapter,
) -> list[str]:
    """Push each target's group (job=<pushgateway.job>_<kind>, target=<name>) with the text
    `metrics_of` reads from the catalog ("" = nothing to push yet) when a Pushgateway is
    configured; the targets pushed. Never raises: a failed push or catalog read is a warning."""
    try:
        runtime = open_runtime(config_path)
        settings = runtime.config.notifications.pushgateway
        if settings is None:
            return []
        texts = {t: metrics_of(runtime.config, runtime.catalog, t) for t in dict.fromkeys(targets)}
    except Exception as exc:  # noqa: BLE001 - monitoring never fails the run it reports
        # the type only: a catalog error's text may quote its URL
        logger.warning("%s metrics not pushed: %s reading the catalog", kind, type(exc).__name__)
        return []
    job = f"{settings.job}_{kind}"
    return [
        target
        for target, text in texts.items()
        if text and push_or_warn(settings, {"job": job, "target": target}, text, logger)
    ]
