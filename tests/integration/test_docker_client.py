"""runbook.systems.docker on its own (as the capacity report will use it): the project's
containers as the engine inspects them, and typed errors with a short reason."""

from __future__ import annotations

import pytest

from runbook.systems.docker import DockerApiError, DockerUnreachable, Engine, container_name
from tests.support.fake_apis import (
    FakeDocker,
    closed_port_url,
    docker_container,
    fake_docker,  # noqa: F401
)


def test_containers_of_a_project_without_one_offs(fake_docker: FakeDocker) -> None:  # noqa: F811
    leftover = docker_container("shop-web-run-1a2b", status="exited", exit_code=1)
    leftover["Config"]["Labels"]["com.docker.compose.oneoff"] = "True"
    fake_docker.add(
        docker_container("shop-worker-1"),
        docker_container("shop-web-1"),
        leftover,
        docker_container("billing-api-1", project="billing"),
    )

    with Engine(fake_docker.url.replace("http://", "tcp://"), timeout=5) as engine:
        engine.ping()
        shop = [container_name(c) for c in engine.containers("shop")]
        every = [container_name(c) for c in engine.containers()]

    assert shop == ["shop-web-1", "shop-worker-1"]
    assert every == ["billing-api-1", "shop-web-1", "shop-worker-1"]


def test_an_error_answer_is_a_typed_error(fake_docker: FakeDocker) -> None:  # noqa: F811
    fake_docker.broken["/containers/json"] = 500

    with Engine(fake_docker.url.replace("http://", "tcp://"), timeout=5) as engine:
        with pytest.raises(DockerApiError) as raised:
            engine.containers("shop")

    assert raised.value.reason.startswith("HTTP 500")
    assert str(raised.value).startswith(f"the Docker engine at {engine.url} answered HTTP 500")


def test_a_refused_port_is_unreachable() -> None:
    url = closed_port_url("tcp")

    with pytest.raises(DockerUnreachable) as raised:
        Engine(url, timeout=3)

    assert raised.value.reason == "[Errno 111] Connection refused"
    assert str(raised.value) == f"cannot reach the Docker engine at {url}: {raised.value.reason}"
