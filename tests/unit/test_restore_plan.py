"""plan_restore is pure: each destination and request gives its actions, what needs a
confirmation, or a refusal naming the flag that would allow it."""

from __future__ import annotations

import pytest

from tasks.restore.plan import (
    DestinationFacts,
    RestoreRefused,
    RestoreRequest,
    plan_restore,
    require_confirmation,
)


def pg(**facts):
    base = {"kind": "postgres", "where": "u@h:5432/app_copy", "exists": False, "backup_id": "B"}
    return DestinationFacts(**{**base, **facts})


def files(**facts):
    return DestinationFacts(**{"kind": "files", "where": "/restore", "exists": False, **facts})


def ask(**request):
    return RestoreRequest(**{"target": "app", "into": "x", **request})


def test_a_new_database_is_created_and_needs_no_confirmation():
    plan = plan_restore(ask(), pg(hooks=(["stop app"], ["start app"])))
    assert plan.confirm == []
    assert plan.actions[0] == "pre-restore step: stop app"
    assert "create database u@h:5432/app_copy" in plan.actions
    assert plan.actions[-1] == "post-restore step (always): start app"
    require_confirmation(plan, ask())  # nothing to confirm


@pytest.mark.parametrize(
    ("request_", "facts", "refusal"),
    [
        (ask(), pg(exists=True, is_source=True), "source database.*--replace-source"),
        (ask(overwrite="clean"), pg(exists=True, is_source=True), "source database"),
        (ask(), pg(exists=True, contents="3 relations"), "not empty.*--clean"),
        (ask(overwrite="in-place"), pg(), "files targets"),
        (ask(), files(original_paths=True), "original paths.*--in-place"),
        (ask(), files(exists=True, contents="2 entries"), "not empty"),
        (ask(schema="shop"), files(), "--schema is for PostgreSQL"),
        (ask(overwrite="replace-source"), files(), "PostgreSQL targets"),
    ],
)
def test_refusals(request_, facts, refusal):
    with pytest.raises(RestoreRefused, match=refusal):
        plan_restore(request_, facts)


@pytest.mark.parametrize(
    ("request_", "facts", "reason"),
    [
        (ask(overwrite="replace-source"), pg(exists=True, is_source=True), "REPLACES the source"),
        (ask(overwrite="clean"), pg(exists=True, contents="3 relations"), "dropped there"),
        (ask(overwrite="in-place"), files(original_paths=True), "over their original paths"),
    ],
)
def test_overwriting_needs_a_confirmation(request_, facts, reason):
    plan = plan_restore(request_, facts)
    assert reason in plan.confirm[0]
    with pytest.raises(RestoreRefused, match="confirmation needed.*--yes"):
        require_confirmation(plan, request_)
    confirmed = RestoreRequest(**{**request_.__dict__, "confirmed": True})
    require_confirmation(plan, confirmed)


def test_clean_into_an_empty_database_needs_no_confirmation():
    plan = plan_restore(ask(overwrite="clean"), pg(exists=True))
    assert plan.confirm == []
    assert any("--clean --if-exists" in action for action in plan.actions)
