"""The Redis drill's key-count comparison (tasks.drills.redis.compare_key_counts), plain."""

from __future__ import annotations

from tasks.drills.redis import compare_key_counts


def by_name(checks):
    return {c.name: c for c in checks}


def test_a_quiet_server_without_ttls_must_match_exactly():
    source = {"keys_per_db": {"db0": 25}, "keys_per_db_after": {"db0": 25}}
    ok = by_name(compare_key_counts(source, {"db0": 25}))["keys db0"]
    assert ok.ok and ok.detail == "25 keys restored, 25 at backup time"
    short = by_name(compare_key_counts(source, {"db0": 24}))["keys db0"]
    assert (
        not short.ok and short.detail == "24 keys restored, 25 at backup time; expected exactly 25"
    )
    extra = by_name(compare_key_counts(source, {"db0": 26}))["keys db0"]
    assert not extra.ok


def test_an_older_manifest_with_one_reading_is_exact():
    checks = by_name(compare_key_counts({"keys_per_db": {"db0": 3, "db2": 1}}, {"db0": 3}))
    assert checks["keys db0"].ok
    assert not checks["keys db2"].ok and checks["keys db2"].detail.startswith("0 keys restored")


def test_writes_during_the_snapshot_allow_the_range_between_the_readings():
    source = {"keys_per_db": {"db0": 100}, "keys_per_db_after": {"db0": 140}}
    for got in (100, 120, 140):
        check = by_name(compare_key_counts(source, {"db0": got}))["keys db0"]
        assert check.ok, check.detail
    check = by_name(compare_key_counts(source, {"db0": 120}))["keys db0"]
    assert check.detail == (
        "120 keys restored, 100 when the backup started and 140 when its snapshot arrived; "
        "within the expected 100-140"
    )
    for got in (99, 141):
        check = by_name(compare_key_counts(source, {"db0": got}))["keys db0"]
        assert not check.ok and "outside the expected 100-140" in check.detail


def test_keys_with_a_ttl_may_be_gone_but_persistent_keys_may_not():
    source = {
        "keys_per_db": {"db0": 30},
        "expires_per_db": {"db0": 10},
        "keys_per_db_after": {"db0": 30},
        "expires_per_db_after": {"db0": 10},
    }
    for got in (20, 25, 30):
        check = by_name(compare_key_counts(source, {"db0": got}))["keys db0"]
        assert check.ok, check.detail
        assert "10 keys had a TTL" in check.detail
    lost = by_name(compare_key_counts(source, {"db0": 19}))["keys db0"]
    assert not lost.ok and "outside the expected 20-30" in lost.detail


def test_a_database_only_in_the_restore_fails_and_databases_sort_by_number():
    checks = compare_key_counts(
        {"keys_per_db": {"db2": 1, "db10": 1}}, {"db2": 1, "db10": 1, "db3": 4}
    )
    assert [c.name for c in checks] == ["keys db2", "keys db3", "keys db10"]
    assert [c.ok for c in checks] == [True, False, True]


def test_an_empty_dataset_is_one_passing_check():
    checks = compare_key_counts({"keys_per_db": {}}, {})
    assert [(c.name, c.ok) for c in checks] == [("keys", True)]
