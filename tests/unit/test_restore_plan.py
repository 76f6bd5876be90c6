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


def kube(*changes):
    from tasks.restore.plan import ObjectChange

    found = tuple(ObjectChange(*c) for c in changes)
    return DestinationFacts(
        kind="kubernetes", where="k8s://prod (namespaces platform)", exists=True,
        backup_id="B", changes=found,
    )  # fmt: skip


def test_kubernetes_objects_created_need_no_confirmation_and_changed_ones_do():
    created = kube(("ConfigMap", "platform", "app", "created"),
                   ("Service", "platform", "api", "unchanged"))  # fmt: skip
    plan = plan_restore(ask(), created)
    assert plan.confirm == []
    assert "  create ConfigMap platform/app" in plan.actions
    assert "  unchanged Service platform/api" in plan.actions
    assert any("1 created, 1 unchanged" in a for a in plan.actions)

    changed = kube(("Deployment", "platform", "api", "changed", ("metadata.labels", "spec")))
    plan = plan_restore(ask(), changed)
    assert plan.confirm == [
        "1 live object(s) in k8s://prod (namespaces platform) are changed in place: "
        "Deployment platform/api (metadata.labels, spec)"
    ]
    with pytest.raises(RestoreRefused, match="confirmation needed"):
        require_confirmation(plan, ask())


def test_kubernetes_conflicts_and_database_flags_are_refused():
    conflict = kube(("ConfigMap", "platform", "app", "conflict", (), 'conflict with "kubectl"'))
    with pytest.raises(RestoreRefused, match=r"1 object\(s\) conflict.*--force-conflicts"):
        plan_restore(ask(), conflict)
    plan = plan_restore(ask(force_conflicts=True), conflict)
    assert any("--force-conflicts" in a for a in plan.actions)
    for flags, message in [
        ({"overwrite": "clean"}, "--clean is not for Kubernetes objects"),
        ({"overwrite": "replace-source"}, "--replace-source is not for Kubernetes"),
        ({"schema": "s"}, "--schema is for PostgreSQL"),
    ]:
        with pytest.raises(RestoreRefused, match=message):
            plan_restore(ask(**flags), kube())
    with pytest.raises(RestoreRefused, match="--namespace and --kind are for Kubernetes"):
        plan_restore(ask(namespaces=("a=b",)), files())
