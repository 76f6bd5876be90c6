"""check_docker against a fake Docker Engine API speaking the real JSON, through docker-py."""

from __future__ import annotations

import time
from typing import Any

import pytest

from runbook.config import DockerTarget
from runbook.health import CheckResult, Status
from tasks.health.docker import check_docker
from tests.support.fake_apis import (
    DOCKER_API_VERSION,
    FakeDocker,
    closed_port_url,
    docker_container,
    fake_docker,  # noqa: F401
)

CHECKS = {"docker.engine", "docker.containers", "docker.health", "docker.restarts"}


@pytest.fixture
def engine(fake_docker: FakeDocker) -> FakeDocker:  # noqa: F811
    """An engine running the healthy "shop" compose project and another project."""
    fake_docker.add(
        docker_container("shop-web-1", health="healthy", health_output="ok"),
        docker_container("shop-worker-1"),
        docker_container(
            "billing-api-1",
            project="billing",
            status="exited",
            exit_code=1,
            health="unhealthy",
            health_output="billing down",
            restart_count=50,
        ),
    )
    return fake_docker


def target(fake: FakeDocker, **overrides: Any) -> DockerTarget:
    values: dict[str, Any] = {
        "name": "shop-host",
        "url": fake.url.replace("http://", "tcp://"),
        "project": "shop",
        "timeout": "5s",
    }
    return DockerTarget(**{**values, **overrides})


def by_check(results: list[CheckResult]) -> dict[str, CheckResult]:
    checks = {r.check: r for r in results}
    assert len(checks) == len(results)
    return checks


def test_a_healthy_project_is_all_ok(engine: FakeDocker) -> None:
    results = check_docker(target(engine))

    checks = by_check(results)
    assert set(checks) == CHECKS
    assert {r.target for r in results} == {"shop-host"}
    assert all(r.status == Status.OK for r in results), [(r.check, r.message) for r in results]
    assert checks["docker.engine"].message.startswith(f"Docker 27.1.1 (API {DOCKER_API_VERSION})")
    assert checks["docker.containers"].message == "2 containers of project shop: 2 running"
    assert checks["docker.health"].message == "1 healthy, 0 starting, none unhealthy"
    assert checks["docker.restarts"].value == 0


def test_the_fake_answers_every_path_docker_py_requests(engine: FakeDocker) -> None:
    check_docker(target(engine))
    check_docker(target(engine, project=None))

    assert engine.unhandled == []
    paths = engine.paths()
    v = f"/v{DOCKER_API_VERSION}"
    assert paths[:3] == ["/version", f"{v}/_ping", f"{v}/version"]  # negotiation, then checks
    assert f"{v}/containers/json" in paths
    listing = next(r for r in engine.requests if r.path == f"{v}/containers/json")
    assert listing.query["all"] == ["1"]
    inspected = {p for p in paths if p.startswith(f"{v}/containers/") and p.endswith("/json")}
    assert len(inspected - {f"{v}/containers/json"}) == 3


def test_the_project_filter_is_sent_to_the_engine_and_other_projects_are_not_reported(
    engine: FakeDocker,
) -> None:
    results = check_docker(target(engine))

    assert engine.filters_received() == [{"label": ["com.docker.compose.project=shop"]}]
    billing = next(c for c in engine.containers if c["Name"] == "/billing-api-1")
    assert not any(billing["Id"] in p for p in engine.paths())  # never even inspected
    assert all("billing" not in r.message for r in results)
    assert all(r.status == Status.OK for r in results)

    unfiltered = by_check(check_docker(target(engine, project=None)))
    listings = [r for r in engine.requests if r.path.endswith("/containers/json")]
    assert "filters" not in listings[-1].query
    assert unfiltered["docker.containers"].status == Status.CRITICAL
    assert "billing-api-1 exited (1)" in unfiltered["docker.containers"].message


def test_an_unhealthy_container_is_critical_with_its_last_health_output(
    engine: FakeDocker,
) -> None:
    output = (
        "curl: (7) Failed to connect to localhost port 8000 after 0 ms: Couldn't connect "
        "to server; upstream postgres:5432 refused the connection, retrying in 5s"
    )
    assert len(output) > 100
    engine.add(
        docker_container("shop-api-1", health="unhealthy", health_output=output + "\n"),
        docker_container("shop-cron-1", health="starting"),
    )

    checks = by_check(check_docker(target(engine)))

    health = checks["docker.health"]
    assert health.status == Status.CRITICAL
    assert health.value == 1
    assert health.message == (
        "1 containers unhealthy: shop-api-1 unhealthy, 3 checks failed in a row: " + output[:100]
    )
    assert "shop-cron-1" not in health.message  # still starting: the engine will decide


def test_an_exited_container_with_an_error_code_is_critical(engine: FakeDocker) -> None:
    engine.add(
        docker_container("shop-worker-2", status="exited", exit_code=1),
        docker_container("shop-queue-1", status="exited", exit_code=137, oom_killed=True),
    )

    result = by_check(check_docker(target(engine)))["docker.containers"]

    assert result.status == Status.CRITICAL
    assert result.value == 2
    assert "shop-worker-2 exited (1)" in result.message
    assert "shop-queue-1 exited (137), OOM killed" in result.message


def test_exit_zero_is_fine_for_one_shots_but_not_for_services_meant_to_run(
    engine: FakeDocker,
) -> None:
    engine.add(
        docker_container("shop-migrate-1", status="exited", exit_code=0, restart_policy="no")
    )
    result = by_check(check_docker(target(engine)))["docker.containers"]
    assert result.status == Status.OK
    assert result.message == "3 containers of project shop: 1 exited, 2 running"

    engine.add(
        docker_container("shop-cache-1", status="exited", exit_code=0, restart_policy="always"),
        docker_container("shop-web-2", status="restarting", exit_code=2),
    )
    result = by_check(check_docker(target(engine)))["docker.containers"]
    assert result.status == Status.WARN
    assert "shop-cache-1 exited (0) but its restart policy is always" in result.message
    assert "shop-web-2 restarting (last exit 2)" in result.message
    assert "shop-migrate-1" not in result.message


def test_compose_one_off_containers_are_left_out(engine: FakeDocker) -> None:
    leftover = docker_container("shop-web-run-3f2a", status="exited", exit_code=1)
    leftover["Config"]["Labels"]["com.docker.compose.oneoff"] = "True"
    engine.add(leftover)

    checks = by_check(check_docker(target(engine)))

    assert checks["docker.containers"].status == Status.OK
    assert all("run-3f2a" not in r.message for r in checks.values())


@pytest.mark.parametrize(
    ("counts", "status"),
    [((0, 0), Status.OK), ((2, 1), Status.WARN), ((9, 3), Status.CRITICAL)],
)
def test_restart_counts_are_graded_naming_the_worst(
    fake_docker: FakeDocker,  # noqa: F811
    counts: tuple[int, int],
    status: Status,
) -> None:
    fake_docker.add(
        docker_container("shop-web-1", restart_count=counts[0]),
        docker_container("shop-worker-1", restart_count=counts[1]),
    )

    result = by_check(check_docker(target(fake_docker)))["docker.restarts"]

    assert result.status == status
    assert result.value == counts[0]
    assert result.threshold == "warn > 0 restarts, critical > 5 restarts"
    if counts[0]:
        assert result.message.endswith(f"worst: shop-web-1 ({counts[0]} restarts)")


def test_a_project_without_containers_is_critical(engine: FakeDocker) -> None:
    result = by_check(check_docker(target(engine, project="shpo")))["docker.containers"]

    assert result.status == Status.CRITICAL
    assert result.message.startswith("no containers labelled com.docker.compose.project=shpo")


@pytest.mark.parametrize("unreachable", [Status.UNKNOWN, Status.CRITICAL])
def test_a_refused_port_is_the_configured_unreachable_status(unreachable: Status) -> None:
    url = closed_port_url("tcp")
    down = DockerTarget(name="shop-host", url=url, project="shop", timeout="3s")

    results = check_docker(down, unreachable=unreachable)

    assert [(r.check, r.status) for r in results] == [("docker.engine", unreachable)]
    assert results[0].message == (
        f"cannot reach the Docker engine at {url}: [Errno 111] Connection refused"
    )


def test_an_engine_error_on_the_list_is_unknown_for_the_container_checks(
    engine: FakeDocker,
) -> None:
    engine.broken["/containers/json"] = 500

    results = check_docker(target(engine), unreachable=Status.CRITICAL)

    checks = by_check(results)
    assert checks["docker.engine"].status == Status.OK
    for name in CHECKS - {"docker.engine"}:
        assert checks[name].status == Status.UNKNOWN
        assert checks[name].message.startswith("cannot list containers: HTTP 500")


def test_an_engine_answering_errors_is_critical_not_unreachable(engine: FakeDocker) -> None:
    engine.broken["/version"] = 500  # the API version negotiation itself fails

    results = check_docker(target(engine), unreachable=Status.UNKNOWN)

    assert [(r.check, r.status) for r in results] == [("docker.engine", Status.CRITICAL)]
    assert "500 Server Error" in results[0].message


def test_an_engine_slower_than_the_timeout_is_unreachable(engine: FakeDocker) -> None:
    engine.delay = 2.0
    started = time.monotonic()

    results = check_docker(target(engine, timeout="0.3s"), unreachable=Status.UNKNOWN)

    assert time.monotonic() - started < 1.5
    assert [(r.check, r.status) for r in results] == [("docker.engine", Status.UNKNOWN)]
    assert results[0].message.endswith(": timed out")
