"""Reading Prefect artifacts back in tests."""

from __future__ import annotations

from typing import Any


def latest_artifact(key: str) -> Any:
    """The newest artifact with this key, from the API the tests talk to."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            limit=1,
            sort="CREATED_DESC",
        )
    assert found, f"no artifact with key {key}"
    return found[0]


def artifact_markdown(key: str) -> str:
    return latest_artifact(key).data
