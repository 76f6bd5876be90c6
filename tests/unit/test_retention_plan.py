"""plan_retention against fixed histories, plus a seeded brute-force property check."""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from runbook.config import Retention
from runbook.formatting import human_duration
from tasks.backups.retention import (
    Orphan,
    RetentionCandidate,
    RetentionDecision,
    plan_garbage,
    plan_retention,
    summarize,
)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def backup(
    id: str,
    at: datetime,
    status: str = "verified",
    target: str = "db",
    finished: bool = True,
) -> RetentionCandidate:
    """A backup that started ten minutes before `at` and finished at `at` (unless unfinished)."""
    return RetentionCandidate(
        id=id,
        target=target,
        status=status,
        started_at=at - timedelta(minutes=10) if finished else at,
        finished_at=at if finished else None,
    )


def only(**counts: int | str) -> Retention:
    """A policy with every count 0 except the ones given."""
    base: dict[str, int | str] = {
        "keep_last": 0,
        "daily": 0,
        "weekly": 0,
        "monthly": 0,
        "yearly": 0,
    }
    return Retention.model_validate({**base, **counts})


def kept(decisions: Iterable[RetentionDecision]) -> set[str]:
    return {d.id for d in decisions if d.action == "keep"}


def deleted(decisions: Iterable[RetentionDecision]) -> set[str]:
    return {d.id for d in decisions if d.action == "delete"}


def by_id(decisions: Iterable[RetentionDecision]) -> dict[str, RetentionDecision]:
    return {d.id: d for d in decisions}


def daily_history(first: date, last: date, hour: int = 2, target: str = "db") -> list:
    out = []
    day = first
    while day <= last:
        at = datetime(day.year, day.month, day.day, hour, tzinfo=UTC)
        out.append(backup(f"{target}-{day.isoformat()}", at, target=target))
        day += DAY
    return out


# --- the default policy over a long, regular history ----------------------------------------


def test_ninety_days_of_daily_backups_with_default_policy_keeps_exact_set():
    history = daily_history(date(2026, 8, 23), date(2026, 11, 20))
    assert len(history) == 90
    policy = Retention()
    assert (policy.keep_last, policy.daily, policy.weekly, policy.monthly) == (3, 7, 4, 12)

    decisions = plan_retention(history, policy, NOW)

    # 2026-11-20 is a Friday: days 14..20, Sundays 15/08/01 close the earlier ISO weeks, and
    # month ends Oct 31, Sep 30, Aug 31 (history starts Aug 23, so only 4 months exist).
    expected = {f"db-2026-11-{d:02d}" for d in (20, 19, 18, 17, 16, 15, 14, 8, 1)} | {
        "db-2026-10-31",
        "db-2026-09-30",
        "db-2026-08-31",
    }
    assert kept(decisions) == expected
    assert len(deleted(decisions)) == 90 - len(expected)
    assert summarize(decisions) == {"db": {"keep": 12, "delete": 78}}

    reasons = {d.id: d.reasons for d in decisions}
    assert reasons["db-2026-11-20"] == (
        "newest verified",
        "keep_last 1/3",
        "daily 2026-11-20",
        "weekly 2026-W47",
        "monthly 2026-11",
    )
    assert reasons["db-2026-11-19"] == ("keep_last 2/3", "daily 2026-11-19")
    assert reasons["db-2026-11-18"] == ("keep_last 3/3", "daily 2026-11-18")
    assert reasons["db-2026-11-15"] == ("daily 2026-11-15", "weekly 2026-W46")
    assert reasons["db-2026-11-14"] == ("daily 2026-11-14",)
    assert reasons["db-2026-11-08"] == ("weekly 2026-W45",)
    assert reasons["db-2026-11-01"] == ("weekly 2026-W44",)
    assert reasons["db-2026-10-31"] == ("monthly 2026-10",)
    assert reasons["db-2026-08-31"] == ("monthly 2026-08",)
    assert reasons["db-2026-11-13"] == ("not in any bucket",)
    assert reasons["db-2026-08-23"] == ("not in any bucket",)


def test_output_is_one_decision_per_candidate_sorted_by_target_then_newest_first():
    history = daily_history(date(2026, 11, 1), date(2026, 11, 5), target="zeta")
    history += daily_history(date(2026, 11, 3), date(2026, 11, 6), target="alpha")
    random.Random(7).shuffle(history)

    decisions = plan_retention(history, Retention(), NOW)

    assert [d.id for d in decisions] == [
        "alpha-2026-11-06",
        "alpha-2026-11-05",
        "alpha-2026-11-04",
        "alpha-2026-11-03",
        "zeta-2026-11-05",
        "zeta-2026-11-04",
        "zeta-2026-11-03",
        "zeta-2026-11-02",
        "zeta-2026-11-01",
    ]
    first = decisions[0]
    assert first.at == datetime(2026, 11, 6, 2, tzinfo=UTC)
    assert first.status == "verified" and first.target == "alpha"


# --- daily buckets -------------------------------------------------------------------------


def test_several_backups_a_day_only_the_newest_of_each_day_fills_daily():
    history = []
    for day in range(16, 21):
        for hour in (1, 9, 17):
            at = datetime(2026, 11, day, hour, tzinfo=UTC)
            history.append(backup(f"d{day}h{hour:02d}", at))

    decisions = by_id(plan_retention(history, only(daily=3), NOW))

    assert kept(decisions.values()) == {"d20h17", "d19h17", "d18h17"}
    assert decisions["d20h17"].reasons == ("newest verified", "daily 2026-11-20")
    assert decisions["d19h17"].reasons == ("daily 2026-11-19",)
    assert decisions["d20h09"].action == "delete"
    assert decisions["d20h09"].reasons == ("not in any bucket",)
    assert decisions["d17h17"].action == "delete"


def test_daily_counts_days_that_have_a_backup_not_calendar_days_back_from_now():
    history = [
        backup("nov20", datetime(2026, 11, 20, 3, tzinfo=UTC)),
        backup("nov10", datetime(2026, 11, 10, 3, tzinfo=UTC)),
        backup("oct01", datetime(2026, 10, 1, 3, tzinfo=UTC)),
        backup("sep01", datetime(2026, 9, 1, 3, tzinfo=UTC)),
    ]

    decisions = by_id(plan_retention(history, only(daily=3), NOW))

    assert kept(decisions.values()) == {"nov20", "nov10", "oct01"}
    assert decisions["oct01"].reasons == ("daily 2026-10-01",)
    assert decisions["sep01"].action == "delete"


def test_keep_last_keeps_the_n_newest_with_position_in_reason():
    history = daily_history(date(2026, 11, 10), date(2026, 11, 20))

    decisions = plan_retention(history, only(keep_last=4), NOW)

    assert [d.id for d in decisions if d.action == "keep"] == [
        "db-2026-11-20",
        "db-2026-11-19",
        "db-2026-11-18",
        "db-2026-11-17",
    ]
    assert by_id(decisions)["db-2026-11-17"].reasons == ("keep_last 4/4",)


def test_order_is_by_recorded_time_never_by_id():
    history = [
        backup("aaa-oldest", datetime(2026, 11, 1, tzinfo=UTC)),
        backup("mmm-middle", datetime(2026, 11, 2, tzinfo=UTC)),
        backup("zzz-newest", datetime(2026, 11, 3, tzinfo=UTC)),
    ]

    decisions = plan_retention(history, only(keep_last=1), NOW)

    assert kept(decisions) == {"zzz-newest"}
    assert [d.id for d in decisions] == ["zzz-newest", "mmm-middle", "aaa-oldest"]


def test_finished_at_wins_over_started_at():
    # long-run started first but finished last: it is the newer backup
    long_run = RetentionCandidate(
        id="long-run",
        target="db",
        status="verified",
        started_at=datetime(2026, 11, 19, 20, tzinfo=UTC),
        finished_at=datetime(2026, 11, 20, 4, tzinfo=UTC),
    )
    short_run = RetentionCandidate(
        id="short-run",
        target="db",
        status="verified",
        started_at=datetime(2026, 11, 19, 22, tzinfo=UTC),
        finished_at=datetime(2026, 11, 19, 23, tzinfo=UTC),
    )

    decisions = by_id(plan_retention([short_run, long_run], only(keep_last=1), NOW))

    assert decisions["long-run"].action == "keep"
    assert decisions["long-run"].at == datetime(2026, 11, 20, 4, tzinfo=UTC)
    assert decisions["long-run"].reasons == ("newest verified", "keep_last 1/1")
    assert decisions["short-run"].action == "delete"


def test_equal_times_are_planned_the_same_whatever_the_input_order():
    at = datetime(2026, 11, 20, 1, tzinfo=UTC)
    history = [backup(name, at) for name in ("b", "c", "a")]

    first = plan_retention(history, only(keep_last=1), NOW)
    second = plan_retention(list(reversed(history)), only(keep_last=1), NOW)

    assert first == second
    assert len(kept(first)) == 1


# --- monthly and yearly --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "last", "expected"),
    [
        (  # leap year: Feb 29, across the 2027/2028 boundary
            date(2027, 11, 20),
            date(2028, 4, 10),
            {"2028-04-10", "2028-03-31", "2028-02-29", "2028-01-31", "2027-12-31", "2027-11-30"},
        ),
        (  # common year: Feb 28, across the 2025/2026 boundary
            date(2025, 11, 20),
            date(2026, 4, 10),
            {"2026-04-10", "2026-03-31", "2026-02-28", "2026-01-31", "2025-12-31", "2025-11-30"},
        ),
    ],
)
def test_monthly_keeps_the_last_backup_of_each_month(first, last, expected):
    history = daily_history(first, last, hour=12)
    now = datetime(last.year, last.month, last.day, 18, tzinfo=UTC)

    decisions = by_id(plan_retention(history, only(monthly=12), now))

    assert kept(decisions.values()) == {f"db-{d}" for d in expected}
    feb = next(d for d in expected if d[5:7] == "02")
    assert decisions[f"db-{feb}"].reasons == (f"monthly {feb[:7]}",)
    assert decisions[f"db-{first.year + 1}-02-01"].action == "delete"


def test_monthly_count_limits_the_number_of_months():
    history = daily_history(date(2025, 11, 20), date(2026, 4, 10), hour=12)
    now = datetime(2026, 4, 10, 18, tzinfo=UTC)

    decisions = plan_retention(history, only(monthly=3), now)

    assert kept(decisions) == {"db-2026-04-10", "db-2026-03-31", "db-2026-02-28"}


def test_yearly_keeps_the_last_backup_of_each_year():
    history = [
        backup(f"y{year}m{month:02d}", datetime(year, month, 15, tzinfo=UTC))
        for year in (2022, 2023, 2024, 2025, 2026)
        for month in range(1, 13)
        if (year, month) <= (2026, 11)
    ]

    decisions = by_id(plan_retention(history, only(yearly=3), NOW))

    assert kept(decisions.values()) == {"y2026m11", "y2025m12", "y2024m12"}
    assert decisions["y2025m12"].reasons == ("yearly 2025",)
    assert decisions["y2023m12"].action == "delete"


# --- timezone ------------------------------------------------------------------------------


def test_late_utc_backup_counts_for_the_next_day_in_berlin():
    history = [
        backup("late", datetime(2026, 11, 19, 23, 30, tzinfo=UTC)),  # 00:30 Nov 20 in Berlin
        backup("evening", datetime(2026, 11, 19, 20, 0, tzinfo=UTC)),  # 21:00 Nov 19 in Berlin
        backup("day-before", datetime(2026, 11, 18, 12, 0, tzinfo=UTC)),
    ]

    in_utc = by_id(plan_retention(history, only(daily=2), NOW, tz="UTC"))
    in_berlin = by_id(plan_retention(history, only(daily=2), NOW, tz="Europe/Berlin"))

    assert in_utc["late"].reasons == ("newest verified", "daily 2026-11-19")
    assert kept(in_utc.values()) == {"late", "day-before"}
    assert in_berlin["late"].reasons == ("newest verified", "daily 2026-11-20")
    assert in_berlin["evening"].reasons == ("daily 2026-11-19",)
    assert kept(in_berlin.values()) == {"late", "evening"}
    assert in_berlin["day-before"].reasons == ("not in any bucket",)


def test_month_and_year_labels_follow_the_timezone():
    nov_in_berlin = backup("halloween-night", datetime(2026, 10, 31, 23, 30, tzinfo=UTC))
    old_year_in_new_york = backup("new-year", datetime(2027, 1, 1, 3, 0, tzinfo=UTC))
    now = datetime(2027, 1, 2, tzinfo=UTC)

    berlin = plan_retention([nov_in_berlin], only(monthly=1), now, tz="Europe/Berlin")
    utc = plan_retention([nov_in_berlin], only(monthly=1), now, tz="UTC")
    new_york = plan_retention([old_year_in_new_york], only(yearly=1), now, "America/New_York")

    assert berlin[0].reasons == ("newest verified", "monthly 2026-11")
    assert utc[0].reasons == ("newest verified", "monthly 2026-10")
    assert new_york[0].reasons == ("newest verified", "yearly 2026")


# --- ISO weeks -----------------------------------------------------------------------------


def test_weekly_sunday_closes_a_week_and_monday_starts_the_next():
    history = [
        backup("mon-23", datetime(2026, 11, 23, 10, tzinfo=UTC)),
        backup("sun-22", datetime(2026, 11, 22, 10, tzinfo=UTC)),
        backup("sat-21", datetime(2026, 11, 21, 10, tzinfo=UTC)),
    ]
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)

    decisions = by_id(plan_retention(history, only(weekly=2), now))

    assert decisions["mon-23"].reasons == ("newest verified", "weekly 2026-W48")
    assert decisions["sun-22"].reasons == ("weekly 2026-W47",)
    assert decisions["sat-21"].action == "delete"


def test_weekly_week_53_belongs_to_the_iso_year_not_the_calendar_year():
    # 2026 has 53 ISO weeks: W53 runs Mon 2026-12-28 .. Sun 2027-01-03.
    history = [
        backup("2027-01-04-mon", datetime(2027, 1, 4, 6, tzinfo=UTC)),
        backup("2027-01-02-sat", datetime(2027, 1, 2, 6, tzinfo=UTC)),
        backup("2026-12-31-thu", datetime(2026, 12, 31, 6, tzinfo=UTC)),
        backup("2026-12-27-sun", datetime(2026, 12, 27, 6, tzinfo=UTC)),
    ]
    now = datetime(2027, 1, 4, 12, tzinfo=UTC)

    decisions = by_id(plan_retention(history, only(weekly=3), now))

    assert decisions["2027-01-04-mon"].reasons == ("newest verified", "weekly 2027-W01")
    assert decisions["2027-01-02-sat"].reasons == ("weekly 2026-W53",)
    assert decisions["2026-12-27-sun"].reasons == ("weekly 2026-W52",)
    assert decisions["2026-12-31-thu"].action == "delete"


def test_weekly_late_december_can_be_week_one_of_next_year():
    history = [backup("2024-12-30", datetime(2024, 12, 30, 6, tzinfo=UTC))]

    decisions = plan_retention(history, only(weekly=1), datetime(2025, 1, 1, tzinfo=UTC))

    assert decisions[0].reasons == ("newest verified", "weekly 2025-W01")


# --- newest verified always kept -----------------------------------------------------------


def test_all_newer_backups_failed_keeps_the_old_verified_one():
    newest_verified = NOW - 60 * DAY
    history = [backup("verified-60d", newest_verified)]
    history += [backup(f"verified-{n}d", NOW - n * DAY) for n in (61, 62, 90)]
    # 40 failed runs after it: 6h, 1d6h, 2d6h, ... old
    history += [
        backup(f"failed-{n:02d}", NOW - n * DAY - timedelta(hours=6), status="failed")
        for n in range(40)
    ]

    decisions = by_id(plan_retention(history, only(), NOW))

    assert decisions["verified-60d"].action == "keep"
    assert decisions["verified-60d"].reasons == ("newest verified",)
    assert {decisions[f"verified-{n}d"].action for n in (61, 62, 90)} == {"delete"}
    assert decisions["failed-00"].action == "keep"
    assert decisions["failed-00"].reasons == ("failed, within grace",)
    for n in range(1, 40):
        assert decisions[f"failed-{n:02d}"].action == "delete"
        assert decisions[f"failed-{n:02d}"].reasons == ("failed, older than grace 1d",)

    with_default = by_id(plan_retention(history, Retention(), NOW))
    assert with_default["verified-60d"].reasons[0] == "newest verified"
    assert kept(with_default.values()) == {
        "failed-00",
        "verified-60d",
        "verified-61d",
        "verified-62d",
        "verified-90d",
    }


def test_all_counts_zero_keeps_only_the_newest_verified():
    history = daily_history(date(2026, 10, 1), date(2026, 11, 20))

    decisions = by_id(plan_retention(history, only(), NOW))

    assert kept(decisions.values()) == {"db-2026-11-20"}
    assert decisions["db-2026-11-20"].reasons == ("newest verified",)
    assert summarize(decisions.values()) == {"db": {"keep": 1, "delete": 50}}


def test_corrupt_newest_is_not_the_newest_verified():
    history = [
        backup("corrupt-new", NOW - 2 * DAY, status="corrupt"),
        backup("verified-prev", NOW - 3 * DAY),
        backup("verified-older", NOW - 4 * DAY),
    ]

    decisions = by_id(plan_retention(history, only(daily=1), NOW))

    assert decisions["corrupt-new"].action == "delete"
    assert decisions["corrupt-new"].reasons == ("corrupt, older than grace 1d",)
    # the corrupt one filled no daily bucket: the single daily slot goes to the verified one
    assert decisions["verified-prev"].reasons == ("newest verified", "daily 2026-11-17")
    assert decisions["verified-older"].action == "delete"


def test_recent_corrupt_is_kept_for_inspection():
    history = [
        backup("corrupt-recent", NOW - timedelta(hours=2), status="corrupt"),
        backup("verified", NOW - DAY),
    ]

    decisions = by_id(plan_retention(history, Retention(), NOW))

    assert decisions["corrupt-recent"].action == "keep"
    assert decisions["corrupt-recent"].reasons == ("corrupt, kept for inspection until grace",)
    assert decisions["verified"].reasons[0] == "newest verified"


def test_target_without_verified_backup_keeps_nothing_as_newest_verified():
    history = [
        backup("failed-old", NOW - 3 * DAY, status="failed"),
        backup("stored-recent", NOW - timedelta(hours=1), status="stored"),
    ]

    decisions = by_id(plan_retention(history, Retention(), NOW))

    assert decisions["failed-old"].action == "delete"
    assert decisions["stored-recent"].reasons == ("awaiting verification",)
    assert all("newest verified" not in d.reasons for d in decisions.values())


# --- other statuses and grace --------------------------------------------------------------


def test_stored_waits_for_verification_until_grace_and_fills_no_bucket():
    history = [
        backup("stored-new", NOW - timedelta(hours=3), status="stored"),
        backup("stored-old", NOW - 2 * DAY, status="stored"),
        backup("verified", NOW - 3 * DAY),
    ]

    decisions = by_id(plan_retention(history, only(keep_last=1), NOW))

    assert decisions["stored-new"].action == "keep"
    assert decisions["stored-new"].reasons == ("awaiting verification",)
    assert decisions["stored-old"].action == "delete"
    assert decisions["stored-old"].reasons == ("stored but never verified, older than grace 1d",)
    assert decisions["verified"].reasons == ("newest verified", "keep_last 1/1")


def test_running_is_kept_until_grace_then_deleted_as_abandoned():
    history = [
        backup("running-now", NOW - timedelta(minutes=20), status="running", finished=False),
        backup("running-stale", NOW - 2 * DAY, status="running", finished=False),
        backup("verified", NOW - 3 * DAY),
    ]

    decisions = by_id(plan_retention(history, Retention(grace="6h"), NOW))

    assert decisions["running-now"].action == "keep"
    assert decisions["running-now"].reasons == ("running",)
    assert decisions["running-now"].at == NOW - timedelta(minutes=20)  # started_at, no finish
    assert decisions["running-stale"].action == "delete"
    assert decisions["running-stale"].reasons == ("running, older than grace 6h (abandoned run)",)


def test_locked_is_kept_within_grace_and_deleted_after():
    history = [
        backup("locked-new", NOW - timedelta(minutes=10), status="locked"),
        backup("locked-old", NOW - timedelta(minutes=45), status="locked"),
    ]

    decisions = by_id(plan_retention(history, Retention(grace="30m"), NOW))

    assert decisions["locked-new"].reasons == ("locked, within grace",)
    assert decisions["locked-new"].action == "keep"
    assert decisions["locked-old"].reasons == ("locked, older than grace 30m",)
    assert decisions["locked-old"].action == "delete"


def test_deleting_rows_are_always_deleted_whatever_their_age():
    history = [
        backup("deleting-just-now", NOW - timedelta(seconds=5), status="deleting"),
        backup("deleting-future", NOW + timedelta(minutes=1), status="deleting"),
        backup("deleting-old", NOW - 30 * DAY, status="deleting"),
        backup("verified", NOW - DAY),
    ]

    decisions = by_id(plan_retention(history, Retention(grace="7d"), NOW))

    assert deleted(decisions.values()) == {"deleting-just-now", "deleting-future", "deleting-old"}
    assert decisions["deleting-just-now"].reasons == ("deleting, resume the earlier deletion",)
    assert decisions["verified"].action == "keep"


@pytest.mark.parametrize(
    ("age", "action"),
    [
        (timedelta(hours=24) - timedelta(seconds=1), "keep"),
        (timedelta(hours=24), "keep"),
        (timedelta(hours=24) + timedelta(seconds=1), "delete"),
    ],
)
def test_grace_boundary_deletes_only_when_strictly_older(age, action):
    history = [backup("failed", NOW - age, status="failed")]

    decisions = plan_retention(history, Retention(), NOW)

    assert decisions[0].action == action


def test_grace_in_reason_follows_the_policy():
    history = [backup("failed", NOW - 3 * DAY, status="failed")]

    decisions = plan_retention(history, Retention(grace="36h"), NOW)

    assert decisions[0].reasons == ("failed, older than grace 1d12h",)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(days=1), "1d"),
        (timedelta(hours=6), "6h"),
        (timedelta(minutes=30), "30m"),
        (timedelta(hours=36), "1d12h"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(days=14), "14d"),
        (timedelta(milliseconds=1500), "1s500ms"),
        (timedelta(0), "0s"),
    ],
)
def test_exact_duration_is_the_form_of_a_setting(value, text):
    assert human_duration(value, exact=True) == text


# --- targets -------------------------------------------------------------------------------


def test_two_targets_are_planned_independently():
    history = daily_history(date(2026, 11, 15), date(2026, 11, 20), target="busy")
    history += daily_history(date(2026, 6, 1), date(2026, 6, 4), target="quiet")

    decisions = plan_retention(history, only(keep_last=2), NOW)

    assert kept(decisions) == {
        "busy-2026-11-20",
        "busy-2026-11-19",
        "quiet-2026-06-04",
        "quiet-2026-06-03",
    }
    reasons = by_id(decisions)
    assert reasons["quiet-2026-06-04"].reasons == ("newest verified", "keep_last 1/2")
    assert summarize(decisions) == {
        "busy": {"keep": 2, "delete": 4},
        "quiet": {"keep": 2, "delete": 2},
    }


def test_summarize_counts_both_actions_even_when_zero():
    history = [backup("only", NOW - DAY)]

    assert summarize(plan_retention(history, Retention(), NOW)) == {"db": {"keep": 1, "delete": 0}}
    assert summarize([]) == {}
    assert plan_retention([], Retention(), NOW) == []


# --- bad input -----------------------------------------------------------------------------


def test_unknown_status_is_rejected():
    with pytest.raises(ValueError, match="unknown status 'ok'"):
        plan_retention([backup("x", NOW, status="ok")], Retention(), NOW)


def test_naive_datetimes_are_rejected():
    naive = RetentionCandidate("x", "db", "verified", datetime(2026, 11, 20), None)
    with pytest.raises(ValueError, match="timezone-aware"):
        plan_retention([naive], Retention(), NOW)
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        plan_retention([], Retention(), datetime(2026, 11, 20))


def test_duplicate_ids_are_rejected():
    with pytest.raises(ValueError, match="'x' appears more than once"):
        plan_retention([backup("x", NOW), backup("x", NOW - DAY)], Retention(), NOW)


# --- brute-force property check over seeded histories -----------------------------------------

STATUSES = ("verified", "verified", "verified", "stored", "corrupt", "failed", "running", "locked")
STATUSES += ("deleting",)
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Pacific/Auckland")


def random_history(rng: random.Random, now: datetime) -> list[RetentionCandidate]:
    history = []
    for target in rng.sample(["pg", "redis", "files"], rng.randint(1, 3)):
        for n in range(rng.randint(0, 50)):
            # mostly spread over ~14 months, sometimes bunched into the last two days
            span = 2 * 86400 if rng.random() < 0.2 else 420 * 86400
            finished = now - timedelta(seconds=rng.randint(0, span))
            status = rng.choice(STATUSES)
            started = finished - timedelta(seconds=rng.randint(0, 7200))
            unfinished = status == "running" or rng.random() < 0.1
            history.append(
                RetentionCandidate(
                    id=f"{target}-{n:03d}",
                    target=target,
                    status=status,
                    started_at=started,
                    finished_at=None if unfinished else finished,
                )
            )
    rng.shuffle(history)
    return history


def reference_period_keeps(verified_newest_first, label_of, count) -> dict[str, str]:
    """Newest backup of each of the `count` most recent periods, grouped rather than walked."""
    newest_of_period: dict[str, RetentionCandidate] = {}
    for candidate in verified_newest_first:
        newest_of_period.setdefault(label_of(candidate), candidate)
    periods = sorted(newest_of_period.items(), key=lambda item: item[1].at, reverse=True)
    return {candidate.id: label for label, candidate in periods[:count]}


@pytest.mark.parametrize("seed", range(12))
def test_properties_hold_for_seeded_random_histories(seed):
    rng = random.Random(seed)
    for _ in range(25):
        now = datetime(2026, 11, 20, 12, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 10**7))
        history = random_history(rng, now)
        policy = Retention(
            keep_last=rng.randint(0, 4),
            daily=rng.randint(0, 8),
            weekly=rng.randint(0, 5),
            monthly=rng.randint(0, 13),
            yearly=rng.randint(0, 2),
            grace=timedelta(hours=rng.choice([1, 6, 24, 72])),
        )
        tz = rng.choice(ZONES)
        zone = ZoneInfo(tz)

        decisions = plan_retention(history, policy, now, tz=tz)

        check_plan(history, decisions, policy, now, zone)
        assert plan_retention(list(reversed(history)), policy, now, tz=tz) == decisions


def check_plan(history, decisions, policy, now, zone):
    # one decision per candidate, sorted by target then newest first
    assert sorted(d.id for d in decisions) == sorted(c.id for c in history)
    order = [(d.target, -d.at.timestamp()) for d in decisions]
    assert order == sorted(order)
    counts = summarize(decisions)
    for target in {c.target for c in history}:
        mine = [d for d in decisions if d.target == target]
        assert counts[target] == {
            "keep": sum(d.action == "keep" for d in mine),
            "delete": sum(d.action == "delete" for d in mine),
        }

    for target in {c.target for c in history}:
        candidates = {c.id: c for c in history if c.target == target}
        mine = [d for d in decisions if d.target == target]
        verified = [d for d in mine if d.status == "verified"]  # already newest first
        verified_candidates = [candidates[d.id] for d in verified]

        # the newest verified backup is always kept, and it is the only "newest verified"
        newest_flags = [d.id for d in mine if "newest verified" in d.reasons]
        if verified:
            newest_at = max(candidates[d.id].at for d in verified)
            assert verified[0].at == newest_at
            assert verified[0].action == "keep"
            assert verified[0].reasons[0] == "newest verified"
            assert newest_flags == [verified[0].id]
        else:
            assert newest_flags == []

        # keep_last N keeps exactly the N newest verified
        by_keep_last = [d.id for d in verified if any(r.startswith("keep_last") for r in d.reasons)]
        assert by_keep_last == [d.id for d in verified[: policy.keep_last]]

        # each period rule matches an independent group-by reference
        labels = {
            "daily": lambda c: c.at.astimezone(zone).strftime("%Y-%m-%d"),
            "weekly": lambda c: "{}-W{:02d}".format(*c.at.astimezone(zone).isocalendar()[:2]),
            "monthly": lambda c: c.at.astimezone(zone).strftime("%Y-%m"),
            "yearly": lambda c: str(c.at.astimezone(zone).year),
        }
        for rule, label_of in labels.items():
            expected = reference_period_keeps(verified_candidates, label_of, getattr(policy, rule))
            actual = {
                d.id: r.removeprefix(f"{rule} ")
                for d in verified
                for r in d.reasons
                if r.startswith(f"{rule} ")
            }
            assert actual == expected, rule

        # verified: kept iff some rule kept it
        for d in verified:
            if d.action == "delete":
                assert d.reasons == ("not in any bucket",)
            else:
                assert d.reasons and "not in any bucket" not in d.reasons

        # everything else goes by age against grace; deleting always goes
        for d in mine:
            if d.status == "verified":
                continue
            assert len(d.reasons) == 1
            if d.status == "deleting":
                assert d.action == "delete"
            else:
                older = now - d.at > policy.grace
                assert d.action == ("delete" if older else "keep"), d


# --- garbage: folders in storage the catalog does not track --------------------------------


def orphan(backup_id: str, age: timedelta, committed: bool) -> Orphan:
    return Orphan(
        target="db", backup_id=backup_id, objects=2, newest=NOW - age, committed=committed
    )


def test_garbage_plan_imports_committed_folders_and_deletes_old_uncommitted_ones():
    grace = timedelta(hours=24)
    plan = plan_garbage(
        [
            orphan("forgotten", 30 * DAY, committed=True),
            orphan("crashed", grace + timedelta(seconds=1), committed=False),
            orphan("writing", grace, committed=False),
        ],
        NOW,
        grace,
    )
    assert plan.cutoff == NOW - grace
    actions = {a.backup_id: (a.action, a.reason) for a in plan.actions}
    assert actions == {
        "forgotten": ("import", "its manifest is in storage: storage wins"),
        "crashed": ("delete", "no manifest, older than grace 1d"),
        "writing": ("keep", "no manifest, within grace 1d"),
    }
    report = plan.report(incomplete_uploads=3)
    assert (report.orphans_imported, report.orphans_deleted, report.orphans_kept) == (
        ["forgotten"],
        ["crashed"],
        ["writing"],
    )
    assert report.incomplete_uploads == 3 and plan.report().incomplete_uploads == 0


def test_garbage_plan_of_nothing_is_empty():
    plan = plan_garbage([], NOW, timedelta(hours=1))
    assert plan.actions == [] and vars(plan.report()) == {
        "incomplete_uploads": 0,
        "orphans_deleted": [],
        "orphans_imported": [],
        "orphans_kept": [],
    }
