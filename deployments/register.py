"""`runbook deploy`: register Runbook's deployments with a Prefect server.

1. Load runbook.yaml (unset ${VAR}s are noted, not fatal: the worker's environment has them).
2. Check that the server answers, in one line if it does not.
3. Create the process work pool when it is missing; or, with `--pool kubernetes`, refuse a
   config a pod cannot run (SQLite catalog, local storage, no result_storage, no image) and
   create or update the Kubernetes pool with infra/kubernetes/base-job-template.json. With
   result_storage, save its block on the server and set PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK
   in the pool's environment (runbook/results.py).
4. `prefect deploy --all` on prefect.yaml merged with one backup deployment per
   `backup.schedules` entry, with RUNBOOK_CONFIG, RUNBOOK_TIMEZONE and RUNBOOK_HOME set so
   workers find the config and schedules follow its timezone (output kept, shown on failure).
5. Give every deployment the parameter form of its flow with the config's target names as
   choices (UI Custom run), and read the deployments back for a summary.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import yaml
from cronsim import CronSim
from dateutil.rrule import rrulestr
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentUpdate
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags
from prefect.settings import PREFECT_API_URL

from deployments import kubernetes
from deployments.forms import parameter_schema
from deployments.spec import (
    CODE_ROOT,
    declared_deployments,
    load_flow,
    merged_prefect_yaml,
    rpo_warnings,
    work_pools,
)
from runbook.config import load_config
from runbook.errors import RunbookError
from runbook.results import result_env, save_block


@dataclass
class Deployed:
    flow: str
    name: str
    schedules: list[dict[str, str]]  # {"cron"|"rrule": ..., "timezone": ...}
    parameters: dict[str, Any]
    next_run: str | None
    id: str

    @property
    def full_name(self) -> str:
        return f"{self.flow}/{self.name}"

    def schedule_text(self) -> str:
        def rule(s: dict[str, str]) -> str:
            if s.get("cron"):
                return s["cron"]
            lines = s["rrule"].splitlines()  # the server adds a DTSTART line: show the rule
            return next((x for x in lines if not x.startswith("DTSTART")), lines[-1])

        return "; ".join(f"{rule(s)} ({s['timezone']})" for s in self.schedules)


@dataclass
class DeployResult:
    api_url: str
    work_pool: str
    config: str
    deployments: list[Deployed]
    worker_command: str
    run_example: str
    warnings: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "api_url": self.api_url,
            "config": self.config,
            "work_pool": self.work_pool,
            "deployments": [
                {
                    "name": d.full_name,
                    "id": d.id,
                    "schedules": d.schedules,
                    "next_run": d.next_run,
                    "parameters": d.parameters,
                }
                for d in self.deployments
            ],
            "worker_command": self.worker_command,
            "warnings": self.warnings,
        }


def _venv_tool(name: str) -> str:
    """The path of a tool of this environment as a person would type it here."""
    tool = Path(sys.executable).parent / name
    try:
        return str(tool.relative_to(Path.cwd()))
    except ValueError:
        return str(tool)


def api_url() -> str:
    url = os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()
    if not url:
        raise RunbookError(
            "PREFECT_API_URL is not set: start a server "
            f"({_venv_tool('prefect')} server start) and export "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    return url.rstrip("/")


def check_server(url: str) -> None:
    try:
        response = httpx.get(f"{url}/health", timeout=5)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        reason = type(exc).__name__ if not str(exc) else str(exc).splitlines()[0]
        raise RunbookError(
            f"cannot reach the Prefect server at {url} ({reason}); is it running? "
            f"({_venv_tool('prefect')} server start)"
        ) from None


def _prefect(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", *args],
        env=env,
        cwd=CODE_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _failure_lines(output: str, limit: int = 6) -> str:
    """The lines of a failed prefect command worth showing: its error, not the whole log."""
    lines = [line.rstrip() for line in output.splitlines() if line.strip()]
    errors = [
        line
        for line in lines
        if any(word in line for word in ("Error", "error", "failed", "Failed", "Invalid"))
    ]
    return "\n".join((errors or lines)[-limit:])


def next_run(schedule: dict[str, str], now: datetime | None = None) -> str | None:
    """The next time a cron or rrule schedule fires, in its timezone."""
    zone = ZoneInfo(schedule["timezone"])
    now = (now or datetime.now(zone)).astimezone(zone)
    if schedule.get("cron"):
        when = next(CronSim(schedule["cron"], now.replace(tzinfo=zone)))
    elif schedule.get("rrule"):
        # Local wall-clock times, as Prefect reads an rrule (its DTSTART, if any, is naive).
        local = now.replace(tzinfo=None, second=0, microsecond=0)
        rule = rrulestr(schedule["rrule"], dtstart=local)
        found = rule.after(now.replace(tzinfo=None))
        if found is None:
            return None
        when = found.replace(tzinfo=zone)
    else:
        return None
    return when.strftime("%Y-%m-%d %H:%M %Z")


def deploy_all(
    config_path: str,
    pool: str = "process",
    image: str | None = None,
    namespace: str | None = None,
) -> DeployResult:
    if pool not in kubernetes.POOLS:
        raise RunbookError(f"--pool: {pool!r} is not a work pool (process or kubernetes)")
    unset: list[str] = []
    config = load_config(config_path, unset=unset)
    image, namespace = kubernetes.image_and_namespace(image, namespace)
    if pool == "kubernetes":
        kubernetes.check_pool(config, image)
    url = api_url()
    check_server(url)
    env = {
        **os.environ,
        "PREFECT_API_URL": url,
        "RUNBOOK_CONFIG": config_path,
        "RUNBOOK_TIMEZONE": config.timezone,
        "RUNBOOK_HOME": os.environ.get("RUNBOOK_HOME", str(CODE_ROOT)),
    }
    results_env = _save_result_storage(config, env)
    if pool == "kubernetes":
        assert image is not None  # check_pool refused it
        chosen = kubernetes.kubernetes_pool(
            work_pools()["kubernetes"], Path(config_path), image, namespace, results_env
        )
        env["RUNBOOK_HOME"] = kubernetes.IMAGE_HOME  # the pull step runs in the image
        spec = merged_prefect_yaml(config, work_pool=chosen)
        _create_kubernetes_pool(chosen["name"], env)
    else:
        process = copy.deepcopy(work_pools()["process"])
        process.setdefault("job_variables", {}).setdefault("env", {}).update(results_env)
        spec = merged_prefect_yaml(config, work_pool=process)
        _create_process_pool(spec["definitions"]["work_pool"]["name"], env)
    work_pool = spec["definitions"]["work_pool"]["name"]
    with tempfile.NamedTemporaryFile(
        "w", prefix="runbook-prefect-", suffix=".yaml", delete=False
    ) as handle:
        yaml.safe_dump(spec, handle, sort_keys=False)
    try:
        done = _prefect(["deploy", "--all", "--prefect-file", handle.name], env)
    finally:
        os.unlink(handle.name)
    if done.returncode != 0:
        raise RunbookError(f"prefect deploy failed:\n{_failure_lines(done.stdout + done.stderr)}")
    declared = declared_deployments(config=config)
    deployed = _finish(declared, config)
    if pool == "kubernetes":
        warnings = [
            f"runbook.yaml is read from the ConfigMap runbook-config in namespace {namespace}: "
            f"kubectl -n {namespace} create configmap runbook-config "
            f"--from-file=runbook.yaml={config_path} --dry-run=client -o yaml | kubectl apply -f -"
        ]
        names = [e["name"] for e in kubernetes.secret_env(Path(config_path))]
        if names:
            warnings.append(
                f"the pods read {', '.join(names)} from the Secret {kubernetes.SECRET} in "
                f"namespace {namespace}: kubectl -n {namespace} create secret generic "
                f"{kubernetes.SECRET} " + " ".join(f"--from-literal={n}=..." for n in names)
            )
        worker_command = (
            "helm install prefect-worker prefect/prefect-worker -n "
            f"{namespace} -f infra/helm/values-runbook.yaml"
        )
    else:
        warnings = [
            f"{name} is not set in this environment: set it in the worker's environment"
            for name in sorted(set(unset))
        ]
        worker_command = f"{_venv_tool('prefect')} worker start --pool {work_pool}"
    warnings += rpo_warnings(config)
    warnings += _stale(declared)
    return DeployResult(
        api_url=url,
        work_pool=work_pool,
        config=config_path,
        deployments=deployed,
        worker_command=worker_command,
        run_example=f"{_venv_tool('prefect')} deployment run backup/backup-on-demand",
        warnings=warnings,
    )


def _save_result_storage(config: Any, env: dict[str, str]) -> dict[str, str]:
    """With result_storage, save its block on the server and return the environment that
    makes the deployments' runs use it (PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK)."""
    if config.result_storage is None:
        return {}
    try:
        save_block(config.result_storage)  # on PREFECT_API_URL's server, like _finish
    except httpx.HTTPError as exc:
        raise RunbookError(
            f"could not save the result storage block on {env['PREFECT_API_URL']}: "
            f"{type(exc).__name__}"
        ) from None
    return result_env(config)


def _create_process_pool(name: str, env: dict[str, str]) -> None:
    pool = _prefect(["work-pool", "create", name, "--type", "process"], env)
    if pool.returncode != 0 and "already exists" not in pool.stdout + pool.stderr:
        raise RunbookError(
            f"could not create work pool {name}: {_failure_lines(pool.stdout + pool.stderr)}"
        )


def _create_kubernetes_pool(name: str, env: dict[str, str]) -> None:
    """Create the pool, or update its base job template (a new Runbook version's)."""
    kubernetes.base_job_template()  # a clear error when the file is missing
    pool = _prefect(
        [
            "work-pool",
            "create",
            name,
            "--type",
            "kubernetes",
            "--base-job-template",
            str(kubernetes.BASE_JOB_TEMPLATE),
            "--overwrite",
        ],
        env,
    )
    if pool.returncode != 0:
        raise RunbookError(
            f"could not create work pool {name}: {_failure_lines(pool.stdout + pool.stderr)}"
        )


def _finish(declared: list[dict[str, Any]], config: Any) -> list[Deployed]:
    """Set each deployment's parameter form and read it back."""
    deployed = []
    with get_client(sync_client=True) as client:
        for spec in declared:
            flow = load_flow(spec["entrypoint"])
            found = client.read_deployment_by_name(f"{flow.name}/{spec['name']}")
            client.update_deployment(
                found.id,
                DeploymentUpdate(parameter_openapi_schema=parameter_schema(flow, config)),
            )
            schedules = []
            for item in found.schedules:
                schedule = item.schedule
                kind = "cron" if getattr(schedule, "cron", None) else "rrule"
                schedules.append(
                    {kind: getattr(schedule, kind), "timezone": schedule.timezone or "UTC"}
                )
            upcoming = [n for n in (next_run(s) for s in schedules) if n]
            deployed.append(
                Deployed(
                    flow=flow.name,
                    name=spec["name"],
                    schedules=schedules,
                    parameters=found.parameters,
                    next_run=min(upcoming) if upcoming else None,
                    id=str(found.id),
                )
            )
    return deployed


def _stale(declared: list[dict[str, Any]]) -> list[str]:
    """Runbook deployments on the server that are no longer declared (a removed schedule):
    Prefect never deletes them, so say so."""

    names = {spec["name"] for spec in declared}
    with get_client(sync_client=True) as client:
        tagged = client.read_deployments(
            deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=["runbook"]))
        )
        flows = {f.id: f.name for f in client.read_flows()}
    return [
        f"{flows.get(d.flow_id, '?')}/{d.name} is no longer declared (its schedule still runs): "
        f"{_venv_tool('prefect')} deployment delete {flows.get(d.flow_id, '?')}/{d.name}"
        for d in tagged
        if d.name not in names
    ]
