"""Labels and pins (runbook.pins) and what retention does with a pinned backup (rule 7)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runbook.config import Retention
from runbook.manifest import Manifest, parse_manifest
from runbook.pins import PinError, parse_keep_until, parse_label, parse_pin
from tasks.backups.retention import RetentionCandidate, plan_retention

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
KEEP_TWO = Retention(keep_last=2, daily=0, weekly=0, monthly=0, yearly=0)


def history(pinned_until: datetime | None, status: str = "verified") -> list[RetentionCandidate]:
    """Five daily backups of one target, newest first; the oldest (db-5) carries the pin."""
    out = []
    for age in range(1, 6):
        at = NOW - age * DAY
        out.append(
            RetentionCandidate(
                id=f"db-{age}",
                target="db",
                status=status if age == 5 else "verified",
                started_at=at - timedelta(minutes=5),
                finished_at=at,
                label="emergency-20261115-1200" if age == 5 else None,
                keep_until=pinned_until if age == 5 else None,
            )
        )
    return out


def decisions(candidates: list[RetentionCandidate], now: datetime = NOW) -> dict:
    return {d.id: d for d in plan_retention(candidates, KEEP_TWO, now)}


def test_a_pinned_backup_is_kept_beyond_keep_last_and_says_why():
    until = datetime(2026, 12, 31, tzinfo=UTC)
    plan = decisions(history(until))
    assert {i for i, d in plan.items() if d.action == "keep"} == {"db-1", "db-2", "db-5"}
    assert {i for i, d in plan.items() if d.action == "delete"} == {"db-3", "db-4"}
    assert plan["db-5"].reasons == (
        "pinned until 2026-12-31 00:00 UTC (label emergency-20261115-1200)",
    )
    assert plan["db-4"].reasons == ("not in any bucket",)


def test_a_pin_that_expired_makes_the_backup_ordinary_again():
    until = NOW + 3 * DAY
    assert decisions(history(until))["db-5"].action == "keep"
    later = decisions(history(until), now=until + timedelta(seconds=1))
    assert later["db-5"].action == "delete"
    assert later["db-5"].reasons == (
        "not in any bucket",
        "pin expired 2026-11-23 12:00 UTC (label emergency-20261115-1200)",
    )
    # exactly at its end the pin no longer holds
    assert decisions(history(until), now=until)["db-5"].action == "delete"


def test_a_pinned_backup_in_a_bucket_keeps_both_reasons():
    until = NOW + DAY
    candidates = history(None)
    newest = candidates[0]
    candidates[0] = RetentionCandidate(
        **{**newest.__dict__, "keep_until": until, "label": "pre-maintenance-weekly"}
    )
    plan = decisions(candidates)
    assert plan["db-1"].reasons == (
        "newest verified",
        "keep_last 1/2",
        "pinned until 2026-11-21 12:00 UTC (label pre-maintenance-weekly)",
    )


def test_a_pinned_corrupt_backup_is_kept_past_grace_but_a_failed_one_is_not():
    until = NOW + 30 * DAY
    corrupt = decisions(history(until, status="corrupt"))["db-5"]
    assert corrupt.action == "keep" and corrupt.reasons[0].startswith("pinned until")
    failed = decisions(history(until, status="failed"))["db-5"]
    assert failed.action == "delete"  # a failed backup's objects are gone: nothing to pin
    assert failed.reasons == ("failed, older than grace 1d",)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-12-31", datetime(2027, 1, 1, tzinfo=UTC)),  # through that day
        ("2026-12-31T18:30Z", datetime(2026, 12, 31, 18, 30, tzinfo=UTC)),
        ("2026-12-31T18:30", datetime(2026, 12, 31, 18, 30, tzinfo=UTC)),  # no zone: UTC
        ("2026-12-31T19:30+01:00", datetime(2026, 12, 31, 18, 30, tzinfo=UTC)),
        ("7d", NOW + 7 * DAY),
        ("2w", NOW + 14 * DAY),
        ("12h", NOW + timedelta(hours=12)),
        ("", None),
        (None, None),
    ],
)
def test_keep_until_accepts_dates_moments_and_durations(value, expected):
    assert parse_keep_until(value, NOW) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yesterday", "expected a date (2026-12-31)"),
        ("2026-11-19", "is in the past"),
        ("2026-11-20T11:59Z", "is in the past"),
        ("2026-02-30", "expected a date"),
        ("0s", "longer than zero"),
        ("-3d", "longer than zero"),
    ],
)
def test_keep_until_refuses_the_past_and_nonsense_naming_the_option(value, message):
    with pytest.raises(PinError) as caught:
        parse_keep_until(value, NOW)
    assert str(caught.value).startswith(f"--keep-until {value!r}: ")
    assert message in str(caught.value)


@pytest.mark.parametrize("value", ["a/b", "../etc", "-x", "with space", "x" * 64, "ünicode"])
def test_labels_with_a_slash_or_odd_characters_are_refused(value):
    with pytest.raises(PinError, match=r"^--label .*: a label is 1-63"):
        parse_label(value)


def test_flow_parameters_are_named_as_parameters():
    with pytest.raises(PinError, match="^keep_until 'yesterday'"):
        parse_pin("ok", "yesterday", NOW, cli=False)
    assert parse_pin("emergency-20261120-1200", "1d", NOW).keep_until == NOW + DAY


def test_the_manifest_carries_the_pin_only_when_there_is_one():
    common = {
        "backup_id": "20261120T120000Z-abcdef",
        "target": "db",
        "kind": "files",
        "started_at": NOW,
        "finished_at": NOW,
        "artifacts": [],
    }
    plain = Manifest(**common).to_json()
    assert b"label" not in plain and b"keep_until" not in plain  # old shape kept
    pinned = Manifest(**common, label="emergency-1", keep_until=NOW + DAY)
    back = parse_manifest(pinned.to_json(), "db/x/manifest.json")
    assert (back.label, back.keep_until) == ("emergency-1", NOW + DAY)


def test_the_backup_report_names_labels_and_pins():
    from runbook.catalog import BackupRecord
    from tasks.backups.report import backup_report_markdown

    common = {"target": "db", "kind": "files", "status": "verified", "storage": "local:/x"}
    records = [
        BackupRecord(id="b1", started_at=NOW, label="emergency-1", keep_until=NOW + DAY, **common),
        BackupRecord(id="b2", started_at=NOW, **common),
    ]
    text = backup_report_markdown(records)
    assert "## Labels and pins" in text
    assert "- db `b1`: pinned until 2026-11-21 12:00 UTC (label emergency-1)" in text
    assert "`b2`" not in text.split("## Labels and pins")[1]
    assert "Labels and pins" not in backup_report_markdown(records[1:])
