"""Every on-demand deployment as an operator uses it from the Prefect UI (issue 13): a real
`prefect server start` with its UI, `runbook deploy`, a process worker, and headless Chromium
at 1400x900 on the V2 UI (what a browser without a saved preference gets).

For each deployment without a schedule: its page lists the parameters with their defaults,
"Custom run" shows every parameter's description, and "Run > Quick run" (clicked as a mouse
does) makes a flow run that the worker takes to Completed with its report artifact, whose
page renders the report. The restore deployment is the exception by design: its Quick run
refuses (a restore needs a target and a destination) and records nothing. Screenshots of
every page go to $RUNBOOK_UI_SCREENSHOTS (default: the test's tmp_path).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.browser import Browser, BrowserError
from tests.support.prefect_server import PrefectServer, Process, start_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = str(Path(sys.executable).with_name("runbook"))
WIDTH, HEIGHT = 1400, 900
RUN_TIMEOUT = 600.0
# The report each flow publishes, and a word its rendered page must show (the config's
# target names, or the flow's verdict).
REPORTS = {
    "backup-on-demand": ("backup-report", "shop-db"),
    "health-on-demand": ("health-report", "this-machine"),
    "drill-on-demand": ("drill-report", "shop-db"),
    "maintenance-on-demand": ("maintenance-report", "shop-db"),
    # no samples yet on a new install: the report says how to collect them
    "capacity-report-on-demand": ("capacity-report", "runbook capacity collect"),
    "diagnose-on-demand": ("diagnostics", "shop-db"),
}
REFUSED = {"restore-on-demand": "restore needs a target and `into`"}


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    server = start_server(tmp_path_factory.mktemp("prefect-ui-quick-run"), ui=True)
    yield server
    server.stop()


def api(server: PrefectServer, method: str, path: str, body: Any = None) -> Any:
    """One call of the server's API. A read that times out is asked again: with runs writing
    to its SQLite database, the test server can stall a reader for a while."""
    for attempt in range(3):
        try:
            response = httpx.request(method, f"{server.api_url}{path}", json=body, timeout=60)
            break
        except httpx.TimeoutException:
            if attempt == 2:
                raise
    response.raise_for_status()
    return response.json()


def on_demand_deployments(server: PrefectServer) -> dict[str, dict[str, Any]]:
    deployments = api(server, "POST", "/deployments/filter", {})
    schedules = {d["id"]: d.get("schedules") or [] for d in deployments}
    return {d["name"]: d for d in deployments if not schedules[d["id"]]}


def runs_of(server: PrefectServer, deployment_id: str) -> list[dict[str, Any]]:
    return api(
        server,
        "POST",
        "/flow_runs/filter",
        {"flow_runs": {"deployment_id": {"any_": [deployment_id]}}},
    )


def quick_run(browser: Browser, server: PrefectServer, deployment: dict, shots: Path) -> str:
    """Run > Quick run on the deployment's page; the id of the flow run it made. The UI says
    "Flow run created" in a toast once its request went through; a press lost while the menu
    was still opening (no toast, no run) is pressed again, never a second request."""
    before = {r["id"] for r in runs_of(server, deployment["id"])}
    toast = "document.body.innerText.includes('Flow run created')"
    for _attempt in range(3):
        open_deployment(browser, server, deployment)
        open_run_menu(browser)
        browser.click("Quick run", "[role=menuitem]")
        try:
            browser.wait_for(toast, timeout=20)
            break
        except BrowserError:
            if [r for r in runs_of(server, deployment["id"]) if r["id"] not in before]:
                break  # made, and its toast already gone
    else:
        shot = browser.screenshot(shots / f"{deployment['name']}-quick-run-failed.png")
        pytest.fail(f"Quick run of {deployment['name']} made no run ({shot}):\n" + browser.text())
    deadline = time.monotonic() + 90  # the run is there once the UI's POST returned
    while True:
        made = [r for r in runs_of(server, deployment["id"]) if r["id"] not in before]
        if made:
            browser.screenshot(shots / f"{deployment['name']}-quick-run.png")
            assert len(made) == 1, made
            return made[0]["id"]
        assert time.monotonic() < deadline, f"the UI said a run of {deployment['name']} was made"
        time.sleep(0.5)


def open_deployment(
    browser: Browser, server: PrefectServer, deployment: dict, query: str = ""
) -> None:
    """The deployment's page in the V2 UI, once it shows the deployment's name and its Run
    button (the page renders after the document has loaded)."""
    base = server.api_url.removesuffix("/api")
    browser.open(f"{base}/v2/deployments/deployment/{deployment['id']}{query}")
    name = json.dumps(deployment["name"])
    browser.wait_for(
        f"document.body.innerText.includes({name}) && [...document.querySelectorAll('button')]"
        ".some(b => b.innerText.trim() === 'Run')"
    )


def open_run_menu(browser: Browser) -> None:
    """Click Run until its menu shows (a press while the page is still settling can be lost
    on a busy machine; a menu that never opens still fails)."""
    shown = "[...document.querySelectorAll('[role=menuitem]')].some(e => e.offsetParent)"
    for _attempt in range(3):
        browser.click("Run")
        try:
            browser.wait_for(shown, timeout=10)
            time.sleep(0.5)  # the menu's opening animation: its items move until it ends
            return
        except BrowserError:
            continue
    raise BrowserError("the Run menu did not open after three clicks")


def wait_for_end(server: PrefectServer, worker: Process, run_ids: list[str]) -> dict[str, dict]:
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        runs = {i: api(server, "GET", f"/flow_runs/{i}") for i in run_ids}
        if all(r["state"] and r["state"]["type"] in FINAL for r in runs.values()):
            return runs
        assert worker.alive(), worker.log()[-3000:]
        if time.monotonic() > deadline:
            states = {r["name"]: r["state"]["name"] for r in runs.values()}
            pytest.fail(f"not finished in {RUN_TIMEOUT:.0f} s: {states}\n{worker.log()[-4000:]}")
        time.sleep(1)


FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def run_logs(server: PrefectServer, run_id: str) -> str:
    logs = api(server, "POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}})
    return "\n".join(f"{log['level']} {log['message']}" for log in logs)[-4000:]


def check_deployment_page(
    browser: Browser, server: PrefectServer, deployment: dict, shots: Path
) -> list[str]:
    """Its Parameters tab lists every parameter with the default the deployment runs with;
    Custom run explains every parameter with its description."""
    name = deployment["name"]
    schema = deployment["parameter_openapi_schema"]["properties"]
    problems: list[str] = []
    open_deployment(browser, server, deployment, "?tab=Parameters")  # the Parameters tab
    browser.wait_for("document.body.innerText.includes('Default')")
    shown = browser.text()
    browser.screenshot(shots / f"{name}-parameters.png")
    rows = {line.split("\t")[0].strip(): line for line in shown.splitlines()}
    for key, value in deployment["parameters"].items():
        if key not in shown:
            problems.append(f"{name}: parameter {key} not on its page")
        elif isinstance(value, bool | int) and not isinstance(value, list):
            row = next((line for k, line in rows.items() if k == key), None)
            wanted = json.dumps(value)
            following = shown[shown.index(key) : shown.index(key) + len(key) + 40]
            if wanted not in (row or "") + following:
                problems.append(f"{name}: default of {key} is not shown as {wanted}")
    open_deployment(browser, server, deployment)
    open_run_menu(browser)
    browser.click("Custom run", "[role=menuitem]")
    browser.wait_for("document.body.innerText.includes('Parameters')")
    browser.wait_for(f"document.body.innerText.includes({json.dumps(next(iter(schema)))})")
    form = " ".join(browser.text().split())
    browser.screenshot(shots / f"{name}-custom-run.png")
    for key, spec in schema.items():
        description = " ".join((spec.get("description") or "").split())
        if not description:
            problems.append(f"{name}: parameter {key} has no description")
        elif description[:60] not in form:
            problems.append(f"{name}: the description of {key} is not on Custom run")
    return problems


def check_run_pages(
    browser: Browser, server: PrefectServer, run: dict, report: tuple[str, str], shots: Path
) -> list[str]:
    """The flow-run page says Completed; the run's report artifact renders as a report."""
    base = server.api_url.removesuffix("/api")
    key, word = report
    name = run["name"]
    problems: list[str] = []
    browser.open(f"{base}/v2/runs/flow-run/{run['id']}")
    browser.wait_for("document.body.innerText.includes('Completed')")
    browser.screenshot(shots / f"{key}-flow-run.png")
    artifacts = api(
        server,
        "POST",
        "/artifacts/filter",
        {"artifacts": {"flow_run_id": {"any_": [run["id"]]}, "key": {"any_": [key]}}},
    )
    if not artifacts:
        return [f"{name}: no {key} artifact"]
    artifact = artifacts[0]
    browser.open(f"{base}/v2/artifacts/artifact/{artifact['id']}")
    heading = next(
        (
            line.lstrip("# ").strip()
            for line in str(artifact["data"]).splitlines()
            if line.startswith("#")
        ),
        None,
    )
    needle = heading or word
    try:
        browser.wait_for(f"document.body.innerText.includes({json.dumps(needle)})")
    except Exception:  # noqa: BLE001 - reported below with the screenshot
        problems.append(f"{name}: the {key} artifact page does not show {needle!r}")
    text = browser.text()
    browser.screenshot(shots / f"{key}-artifact.png")
    if "# " in text or "|---" in text.replace(" ", ""):
        problems.append(f"{name}: the {key} artifact shows raw markdown")
    try:
        browser.wait_for(f"document.body.innerText.includes({json.dumps(word)})", timeout=20)
    except BrowserError:
        problems.append(
            f"{name}: the {key} artifact page does not mention {word}: {browser.text()[:3000]!r}"
        )
    return problems


def test_every_on_demand_deployment_runs_from_the_ui(
    ui_server, pg15, make_database, write_config, tmp_path
):
    shots = Path(os.environ.get("RUNBOOK_UI_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "app.conf").write_text("listen 8080\n")
    config = write_config(
        {
            "postgres": [{"name": "shop-db", "dsn": make_database(pg15)}],
            "files": [{"name": "etc", "paths": [str(tmp_path / "etc")]}],
            "host": [
                {  # the UI path is under test here, not this machine's load
                    "name": "this-machine",
                    "mounts": ["/"],
                    "disk": {"warn": 99, "critical": 100},
                    "load_per_core": {"warn": 100, "critical": 200},
                    "memory": {"warn": 99, "critical": 100},
                    "cpu": {"warn": 100, "critical": 100},
                }
            ],
        }
    )
    deployed = subprocess.run(
        [RUNBOOK, "deploy", "--config", str(config)],
        env=ui_server.client_env(),
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-2000:]
    deployments = on_demand_deployments(ui_server)
    assert set(deployments) == set(REPORTS) | set(REFUSED), sorted(deployments)
    # two runs at a time, as a small pool would: six flows at once on the test server's
    # SQLite database make its API stall for tens of seconds
    worker = ui_server.spawn(
        "worker",
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "runbook-process"]
        + ["--limit", "2"],
        ROOT,
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_PREFETCH_SECONDS="1",
    )

    problems: list[str] = []
    with Browser(WIDTH, HEIGHT, timeout=60) as browser:
        for deployment in deployments.values():
            problems += check_deployment_page(browser, ui_server, deployment, shots)
        # The backup first: the drill restores the newest verified backup.
        order = ["backup-on-demand", *sorted(set(deployments) - {"backup-on-demand"})]
        finished: dict[str, dict] = {}
        first = quick_run(browser, ui_server, deployments[order[0]], shots)
        finished |= {order[0]: wait_for_end(ui_server, worker, [first])[first]}
        made = {name: quick_run(browser, ui_server, deployments[name], shots) for name in order[1:]}
        ended = wait_for_end(ui_server, worker, list(made.values()))
        finished |= {name: ended[run_id] for name, run_id in made.items()}

        for name, run in finished.items():
            state = run["state"]
            if name in REFUSED:
                message = state.get("message") or ""
                if state["type"] != "FAILED" or REFUSED[name] not in message + run_logs(
                    ui_server, run["id"]
                ):
                    problems.append(f"{name}: a Quick run must refuse, got {state['name']}")
                continue
            if state["type"] != "COMPLETED":
                problems.append(
                    f"{name}: ended {state['name']}: {state.get('message')}\n"
                    + run_logs(ui_server, run["id"])
                )
                continue
            problems += check_run_pages(browser, ui_server, run, REPORTS[name], shots)
    assert not problems, "\n".join(problems) + f"\n(screenshots in {shots})"

    # the refused restore recorded nothing
    from runbook.catalog import RestoreLog
    from runbook.runtime import open_runtime

    runtime = open_runtime(config)
    assert RestoreLog(runtime.catalog).list() == []
