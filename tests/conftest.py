"""Shared fixtures: real PostgreSQL (service 15 + embedded 18), Redis, moto S3, and one Prefect
test harness per session (started lazily by the tests that run flows)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "runbook")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

pytest_plugins = [
    "tests.support.s3",
    "tests.support.pg",
    "tests.support.config",
    "tests.support.prefect_server",
    "tests.support.monitoring",
    "tests.support.podman",
]


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect server and database for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
