"""The alertmanager check kind against a real Alertmanager (prometheus-alertmanager on a free
port): alerts posted through its API v2 make the check warn or critical by their severity
label, matchers and silences choose what counts, and the run after names what started and
what stopped firing in between (the previous run's alerts kept in the catalog)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from runbook.catalog import HealthHistory
from runbook.config import AlertmanagerTarget
from runbook.health import CheckResult, Status
from runbook.runtime import open_runtime
from tasks.health.alertmanager import check_alertmanager
from tasks.health.registry import CHECK_KINDS, check_plan, run_kind
from tests.support.alertmanager import RealAlertmanager, real_alertmanager  # noqa: F401
from tests.support.fake_apis import closed_port_url

SECRET = "am-bearer-5ecret-4f3e2d1c"


@pytest.fixture
def am(real_alertmanager: RealAlertmanager) -> RealAlertmanager:  # noqa: F811
    return real_alertmanager


def by_check(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.check: r for r in results}


def now() -> datetime:
    return datetime.now(UTC)


def test_severity_labels_grade_the_firing_check(am: RealAlertmanager) -> None:
    target = AlertmanagerTarget(name="am", url=am.url)
    first, state = check_alertmanager(target, Status.CRITICAL, {}, now())
    firing = by_check(first)["alertmanager.firing"]
    assert (firing.status, firing.value, firing.message) == (Status.OK, 0, "no alerts firing")
    since = by_check(first)["alertmanager.since_last_run"]
    assert since.status == Status.OK and since.message.startswith("no previous run")

    am.post("QueueBacklog", "warning", instance="api-1")
    warned = by_check(check_alertmanager(target, Status.CRITICAL, state, now())[0])
    assert (warned["alertmanager.firing"].status, warned["alertmanager.firing"].value) == (
        Status.WARN,
        1,
    )
    assert 'QueueBacklog{instance="api-1"} warn' in warned["alertmanager.firing"].message

    am.post("DiskFull", "critical", instance="db-1")
    am.post("NightlyReport", "info")
    results, state = check_alertmanager(target, Status.CRITICAL, state, now())
    firing = by_check(results)["alertmanager.firing"]
    assert (firing.status, firing.value) == (Status.CRITICAL, 3), firing
    # worst first
    assert firing.message.startswith('3 alerts firing: DiskFull{instance="db-1"} critical')
    since = by_check(results)["alertmanager.since_last_run"]
    assert since.status == Status.OK and since.value == 3  # all three started since {}-run
    assert "3 started" in since.message


def test_the_next_run_names_alerts_that_stopped_firing(am: RealAlertmanager, write_config) -> None:
    config = write_config({"alertmanager": [{"name": "am", "url": am.url}]})
    runtime = open_runtime(config)
    assert ("alertmanager", "am") in check_plan(runtime.config, list(CHECK_KINDS))
    t0 = now()

    run_kind(runtime, "alertmanager", "am", t0)  # the first run: nothing to compare with
    am.post("ApiDown", "critical", service="api")
    am.post("SlowQueries", "warning", instance="db-1")
    night = by_check(run_kind(runtime, "alertmanager", "am", t0 + timedelta(hours=1)))
    assert night["alertmanager.firing"].status == Status.CRITICAL
    stored = HealthHistory(runtime.catalog).get_state("alertmanager:am")
    assert len(stored["alerts"]) == 2

    am.resolve("ApiDown", "critical", service="api")
    assert am.names() == {"SlowQueries"}  # the API lists active alerts only
    morning = by_check(run_kind(runtime, "alertmanager", "am", t0 + timedelta(hours=9)))
    firing, since = morning["alertmanager.firing"], morning["alertmanager.since_last_run"]
    assert (firing.status, firing.value) == (Status.WARN, 1)
    assert (since.status, since.value) == (Status.WARN, 1), since
    assert since.message == (
        "since the previous run 8.0 h ago: 1 no longer firing, resolved or silenced "
        '(ApiDown{service="api"} critical): review them'
    )

    quiet = by_check(run_kind(runtime, "alertmanager", "am", t0 + timedelta(hours=10)))
    assert quiet["alertmanager.since_last_run"].status == Status.OK
    assert quiet["alertmanager.since_last_run"].message.endswith("60 min ago: no change")


def test_matchers_filters_and_silences_choose_what_counts(
    am: RealAlertmanager,
) -> None:
    am.post("PodCrashLooping", "critical", namespace="counterfactual-lab", team="ml")
    am.post("PodCrashLooping", "critical", namespace="other", team="web")
    am.post("CertExpiring", "warning", namespace="counterfactual-lab", team="ml")

    ml = AlertmanagerTarget(name="ml", url=am.url, matchers={"team": "ml"})
    firing = by_check(check_alertmanager(ml, Status.CRITICAL, {}, now())[0])["alertmanager.firing"]
    assert (firing.status, firing.value) == (Status.CRITICAL, 2), firing
    assert 'matching team="ml"' in firing.message

    certs = AlertmanagerTarget(name="certs", url=am.url, filters=['alertname=~"Cert.*"'])
    firing = by_check(check_alertmanager(certs, Status.CRITICAL, {}, now())[0])[
        "alertmanager.firing"
    ]
    assert (firing.status, firing.value) == (Status.WARN, 1), firing

    am.silence(namespace="other")
    web = AlertmanagerTarget(name="web", url=am.url, matchers={"team": "web"})
    for _ in range(50):  # the silence applies once Alertmanager has processed it
        firing = by_check(check_alertmanager(web, Status.CRITICAL, {}, now())[0])[
            "alertmanager.firing"
        ]
        if firing.value == 0:
            break
    assert (firing.status, firing.value) == (Status.OK, 0), firing
    counted = web.model_copy(update={"silenced": True})
    firing = by_check(check_alertmanager(counted, Status.CRITICAL, {}, now())[0])[
        "alertmanager.firing"
    ]
    assert (firing.status, firing.value) == (Status.CRITICAL, 1)


def test_the_severity_mapping_is_configurable(am: RealAlertmanager) -> None:
    am.post("Custom", "P1")
    am.post("Unlabelled")
    target = AlertmanagerTarget(name="am", url=am.url, severities={"p1": "critical"}, unmapped="ok")
    firing = by_check(check_alertmanager(target, Status.CRITICAL, {}, now())[0])[
        "alertmanager.firing"
    ]
    assert (firing.status, firing.value) == (Status.CRITICAL, 2)
    only_unlabelled = target.model_copy(update={"matchers": {"alertname": "Unlabelled"}})
    firing = by_check(check_alertmanager(only_unlabelled, Status.CRITICAL, {}, now())[0])[
        "alertmanager.firing"
    ]
    assert (firing.status, firing.value) == (Status.OK, 1)


def test_unreachable_keeps_the_previous_state_and_hides_secrets(tmp_path: Path) -> None:
    url = closed_port_url().replace("http://", f"http://ops:{SECRET}@")
    target = AlertmanagerTarget(
        name="am", url=url, timeout="2s", headers={"Authorization": f"Bearer {SECRET}"}
    )
    previous = {"at": now().isoformat(), "alerts": {}}
    results, state = check_alertmanager(target, Status.UNKNOWN, previous, now())
    assert [(r.check, r.status) for r in results] == [("alertmanager.firing", Status.UNKNOWN)]
    assert "connection refused" in results[0].message.lower() or "cannot connect" in (
        results[0].message
    )
    assert state is previous
    assert SECRET not in results[0].model_dump_json()


def test_a_bad_filter_is_critical_with_alertmanagers_reason(
    am: RealAlertmanager,
) -> None:
    # passes our loose syntax check, and Alertmanager refuses it
    target = AlertmanagerTarget(name="am", url=am.url, filters=['alertname=~"("'])
    (result,) = check_alertmanager(target, Status.UNKNOWN, {}, now())[0]
    assert result.status == Status.CRITICAL
    assert "answered HTTP 400" in result.message


def test_bad_matchers_are_named() -> None:
    with pytest.raises(ValidationError, match="filters"):
        AlertmanagerTarget(name="am", url="http://127.0.0.1:9093", filters=["severity critical"])
    with pytest.raises(ValidationError, match="url"):
        AlertmanagerTarget(name="am", url="127.0.0.1:9093")
