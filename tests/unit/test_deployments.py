"""prefect.yaml: every deployment points at a real flow, with parameters the flow accepts and
defaults for all of them (so "Quick run" in the UI works), and valid schedules."""

from __future__ import annotations

import inspect

import pytest
import yaml

from deployments.serve import build_deployments, declared_deployments, load_flow
from deployments.spec import PREFECT_YAML


def test_prefect_yaml_has_an_explicit_pull_step():
    data = yaml.safe_load(PREFECT_YAML.read_text())
    assert data["pull"], "without a pull step a deployment is tied to the deploying folder"


@pytest.mark.parametrize("spec", declared_deployments(), ids=lambda s: s["name"])
def test_deployment_parameters_match_the_flow(spec):
    flow = load_flow(spec["entrypoint"])
    signature = inspect.signature(flow.fn)
    for name in spec.get("parameters", {}):
        assert name in signature.parameters, f"{spec['name']}: flow has no parameter {name}"
    required = [p.name for p in signature.parameters.values() if p.default is inspect._empty]
    assert required == [], f"{spec['name']}: parameters without defaults {required}"


def test_serve_builds_every_deployment_with_its_schedules(tmp_path, monkeypatch):
    monkeypatch.delenv("RUNBOOK_TIMEZONE", raising=False)
    config = tmp_path / "runbook.yaml"
    config.write_text("timezone: Europe/Berlin\n")
    built = {d.name: d for d in build_deployments(config_path=str(config))}
    assert set(built) == {s["name"] for s in declared_deployments()}
    nightly = built["backup-nightly"]
    assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"]
    assert nightly.schedules[0].schedule.timezone == "Europe/Berlin"  # from runbook.yaml
    assert [s.schedule.cron for s in built["health-daily"].schedules] == ["0 6 * * *"]
    assert built["health-hourly"].parameters["only"] == [
        "http",
        "postgres",
        "redis",
        "prometheus",
        "alertmanager",
        "kubernetes",
        "docker",
        "host",
    ]
    monthly = built["drill-monthly"].schedules[0].schedule
    assert "BYDAY=1SU" in monthly.rrule and monthly.timezone == "Europe/Berlin"
    assert built["backup-on-demand"].schedules == []
    assert built["retention-daily"].parameters["dry_run"] is False
    # maintenance: weekly on the other Sundays, monthly on the first (never both at once),
    # a Quick run of the on-demand deployment changes nothing
    weekly = built["maintenance-weekly"].schedules[0].schedule
    assert "BYDAY=2SU,3SU,4SU,5SU;BYHOUR=2;BYMINUTE=0" in weekly.rrule
    assert weekly.timezone == "Europe/Berlin"
    monthly = built["maintenance-monthly"].schedules[0].schedule
    assert "BYDAY=1SU;BYHOUR=2;BYMINUTE=0" in monthly.rrule
    assert built["maintenance-weekly"].parameters["dry_run"] is False
    assert built["maintenance-monthly"].parameters["window"] == "monthly"
    assert built["maintenance-on-demand"].parameters["dry_run"] is True
    assert built["maintenance-on-demand"].schedules == []
    # capacity: daily samples; the monthly and quarterly reviews never on the same day
    assert [s.schedule.cron for s in built["capacity-collect"].schedules] == ["30 5 * * *"]
    monthly = built["capacity-report-monthly"].schedules[0].schedule
    quarterly = built["capacity-report-quarterly"].schedules[0].schedule
    assert monthly.cron == "0 8 1 2,3,5,6,8,9,11,12 *" and quarterly.cron == "0 8 1 1,4,7,10 *"
    assert quarterly.timezone == "Europe/Berlin"
    assert built["capacity-report-quarterly"].parameters["period"] == "quarter"
    assert built["capacity-report-on-demand"].schedules == []
    # restore: never scheduled; a Quick run gives no target and no destination (does nothing)
    assert built["restore-on-demand"].schedules == []
    assert built["restore-on-demand"].parameters["into"] == ""
    assert built["restore-on-demand"].parameters["confirm"] is False
    # the daily report at 18:00 in the config's timezone, for today
    report = built["daily-report"].schedules[0].schedule
    assert report.cron == "0 18 * * *" and report.timezone == "Europe/Berlin"
    assert built["daily-report"].parameters == {"day": ""}
    # diagnose: never scheduled; a Quick run diagnoses every target
    assert built["diagnose-on-demand"].schedules == []
    assert built["diagnose-on-demand"].parameters == {"targets": [], "incident": ""}


def test_serve_adds_a_backup_deployment_per_schedule_with_the_config_names(tmp_path, monkeypatch):
    monkeypatch.delenv("RUNBOOK_TIMEZONE", raising=False)
    config = tmp_path / "runbook.yaml"
    config.write_text(
        "timezone: America/New_York\n"
        'backup: {schedules: {hourly: "15 * * * *"}}\n'
        "targets:\n"
        "  postgres: [{name: app, dsn: 'postgresql://u@h/db', schedule: hourly}]\n"
        "  files: [{name: etc, paths: [.]}]\n"
    )
    built = {d.name: d for d in build_deployments(config_path=str(config))}
    hourly = built["backup-hourly"]
    assert [s.schedule.cron for s in hourly.schedules] == ["15 * * * *"]
    assert hourly.schedules[0].schedule.timezone == "America/New_York"
    assert hourly.parameters["schedule"] == "hourly"
    assert "app" in hourly.description
    form = built["backup-on-demand"]._parameter_openapi_schema.properties
    assert form["targets"]["items"]["enum"] == ["app", "etc"]
    assert "config_path" not in form
    drill_form = built["drill-on-demand"]._parameter_openapi_schema.properties
    assert drill_form["targets"]["items"]["enum"] == ["app"]
    maintenance_form = built["maintenance-on-demand"]._parameter_openapi_schema.properties
    assert maintenance_form["targets"]["items"]["enum"] == ["app"]  # PostgreSQL targets only
    assert maintenance_form["window"]["enum"] == ["weekly", "monthly"]
    assert "vacuum" in maintenance_form["procedures"]["items"]["enum"]
    assert maintenance_form["dry_run"]["default"] is True
    restore_form = built["restore-on-demand"]._parameter_openapi_schema.properties
    assert restore_form["target"]["enum"] == ["", "app", "etc"]  # PostgreSQL and files targets
    assert restore_form["overwrite"]["enum"] == ["no", "clean", "replace-source", "in-place"]
    assert "DSN" in restore_form["into"]["description"]
    diagnose_form = built["diagnose-on-demand"]._parameter_openapi_schema.properties
    assert diagnose_form["targets"]["items"]["enum"] == ["app"]  # host and health always come


def test_capacity_collect_hourly_is_built_only_when_capacity_hourly_names_sources(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("RUNBOOK_TIMEZONE", raising=False)
    config = tmp_path / "runbook.yaml"
    config.write_text("targets:\n  host: [{name: here}]\n")
    built = {d.name for d in build_deployments(config_path=str(config))}
    assert "capacity-collect" in built and "capacity-collect-hourly" not in built

    config.write_text(
        "timezone: Europe/Berlin\ntargets:\n  host: [{name: here}]\ncapacity: {hourly: [here]}\n"
    )
    built = {d.name: d for d in build_deployments(config_path=str(config))}
    hourly = built["capacity-collect-hourly"]
    assert [s.schedule.cron for s in hourly.schedules] == ["20 * * * *"]
    assert hourly.schedules[0].schedule.timezone == "Europe/Berlin"
    assert hourly.parameters == {"hourly": True} and "here" in hourly.description
    assert built["capacity-collect"].parameters == {}  # the daily run takes every source
    assert hourly.entrypoint == built["capacity-collect"].entrypoint
