"""Every measured health value carries its unit, so the reports and the CLI show `2.1 %`,
`7.6 ms`, `0.012 s` (counts stay plain numbers): the check modules against the real PostgreSQL
and Redis and the fake Kubernetes and Docker APIs. HTTP, Prometheus, host, and backup and drill
freshness: the health flow in tests/e2e/test_ui_reports.py."""

from __future__ import annotations

from datetime import timedelta

from runbook.config import DockerTarget, KubernetesTarget, PostgresTarget, RedisTarget
from runbook.health import CheckResult
from tasks.health.docker import check_docker
from tasks.health.kubernetes import check_kubernetes
from tasks.health.postgres import check_postgres_health
from tasks.health.redis import check_redis_health
from tests.support.fake_apis import (
    FakeDocker,
    FakeKubernetes,
    container_status,
    docker_container,
    fake_docker,  # noqa: F401
    fake_kubernetes,  # noqa: F401
    pod,
)


def by_check(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.check.split("[")[0]: r for r in results}


def test_postgres_values_carry_units(pg15, make_database):
    checks = by_check(check_postgres_health(PostgresTarget(name="db", dsn=make_database(pg15))))

    units = {name: checks[name].unit for name in checks}
    assert units["postgres.connect"] == "ms"
    assert units["postgres.connections"] == "%"
    assert units["postgres.wraparound"] == "%"
    assert units["postgres.database_size"] == "GB"  # reported, not graded: its unit all the same
    assert units["postgres.long_queries"] == ""  # a count
    assert checks["postgres.connect"].display_value.endswith(" ms")
    assert checks["postgres.database_size"].display_value.endswith(" GB")


def test_redis_values_carry_units():
    target = RedisTarget(name="cache", url="redis://127.0.0.1:6379/0", timeout=timedelta(seconds=5))
    checks = by_check(check_redis_health(target))

    assert checks["redis.ping"].unit == "ms"
    assert checks["redis.ping"].display_value.endswith(" ms")
    assert checks["redis.evicted_keys"].unit == ""  # a count


def test_kubernetes_and_docker_values_carry_units(
    fake_kubernetes: FakeKubernetes,  # noqa: F811
    fake_docker: FakeDocker,  # noqa: F811
):
    fake_kubernetes.add(
        pod(
            "api-1",
            "shop",
            age=timedelta(days=2),
            containers=[container_status("app", restarts=2, last_finished=timedelta(hours=1))],
        )
    )
    cluster = by_check(
        check_kubernetes(
            KubernetesTarget(
                name="prod", api_url=fake_kubernetes.url, namespaces=["shop"], timeout="5s"
            )
        )
    )
    assert cluster["kubernetes.api"].unit == "s"
    assert cluster["kubernetes.restarts"].display_value == "1"  # a count: the check names it

    fake_docker.add(docker_container("shop-web-1", restart_count=3))
    engine = by_check(
        check_docker(
            DockerTarget(
                name="host",
                url=fake_docker.url.replace("http://", "tcp://"),
                project="shop",
                timeout="5s",
            )
        )
    )
    assert engine["docker.engine"].unit == "s"
    assert engine["docker.restarts"].display_value == "3"
