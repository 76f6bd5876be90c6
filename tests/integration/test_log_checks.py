"""Log checks against real files: baseline, appends, partial lines, rotation, state."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import pytest

from runbook.config import LogPattern, LogsTarget, Threshold
from runbook.health import CheckResult, Status
from tasks.health.logs import MAX_LINE, check_logs

NAMES = ("errors", "performance", "security")

# Runbook 000's greps; each line is (text, patterns it must match).
LINES = [
    ("2026-11-22T10:00:00 INFO started", ()),
    ("2026-11-22T10:00:01 ERROR db connection refused", ("errors",)),
    ("2026-11-22T10:00:02 CRITICAL disk full", ("errors",)),
    ("2026-11-22T10:00:03 FATAL cannot continue", ("errors",)),
    ("2026-11-22T10:00:04 WARN SLOW query took 3.2s", ("performance",)),
    ("2026-11-22T10:00:05 WARN TIMEOUT calling upstream", ("performance",)),
    ("2026-11-22T10:00:06 WARN MEMORY pressure", ("performance",)),
    ("2026-11-22T10:00:07 WARN AUTH failed for bob", ("security",)),
    ("2026-11-22T10:00:08 WARN UNAUTHORIZED /admin", ("security",)),
    ("2026-11-22T10:00:09 WARN FORBIDDEN /secrets", ("security",)),
    ("2026-11-22T10:00:10 ERROR TIMEOUT and FORBIDDEN at once", NAMES),
    ("2026-11-22T10:00:11 INFO ERRORS_TOTAL=0 error lowercase timeouts", ()),  # no \b match
]


def expected(lines: list[str]) -> dict[str, int]:
    table = dict(LINES)
    return {name: sum(name in table[line] for line in lines) for name in NAMES}


def append(path: Path, *lines: str, newline: bool = True) -> None:
    text = "\n".join(lines) + ("\n" if newline else "")
    with path.open("a", encoding="utf-8") as file:
        file.write(text)


def run(target: LogsTarget, state: dict) -> tuple[dict[str, CheckResult], dict]:
    results, new_state = check_logs(target, state)
    assert len(results) == len({r.check for r in results}), "one result per check"
    assert all(r.target == target.name for r in results)
    restored = json.loads(json.dumps(new_state))  # the caller stores it as JSON
    assert restored == new_state
    return {r.check: r for r in results}, restored


def counts(results: dict[str, CheckResult]) -> dict[str, int]:
    return {name: results[f"logs.{name}"].value for name in NAMES}


def zero() -> dict[str, int]:
    return dict.fromkeys(NAMES, 0)


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    folder = tmp_path / "log" / "app"
    folder.mkdir(parents=True)
    return folder


def target_for(*paths: Path | str) -> LogsTarget:
    return LogsTarget(name="app-logs", paths=[str(p) for p in paths])


# --- baseline and appends --------------------------------------------------------------------


def test_baseline_then_appended_lines_are_counted_exactly_per_pattern(logdir):
    log = logdir / "app.log"
    history = [text for text, _ in LINES] * 3
    append(log, *history)
    target = target_for(logdir / "*.log")

    results, state = run(target, {})
    assert counts(results) == zero()  # history before the first run is not news
    for name in NAMES:
        assert results[f"logs.{name}"].message == "baseline taken, counting from now"
        assert results[f"logs.{name}"].status == Status.OK
    assert results["logs.files"].status == Status.OK
    assert results["logs.files"].value == 1

    new_lines = [LINES[1][0], LINES[2][0], LINES[4][0], LINES[10][0], LINES[11][0], LINES[7][0]]
    append(log, *new_lines)
    results, state = run(target, state)
    assert counts(results) == expected(new_lines) == {"errors": 3, "performance": 2, "security": 2}
    errors = results["logs.errors"]
    assert errors.status == Status.WARN  # default errors: warn > 0, critical > 10
    assert errors.threshold == "warn > 0, critical > 10"
    assert f"({log}: 3)" in errors.message
    assert "ERROR db connection refused" in errors.message  # a sample line
    assert results["logs.performance"].status == Status.OK  # warn > 5
    assert results["logs.security"].status == Status.OK  # warn > 10

    again, state_again = run(target, state)
    assert counts(again) == zero()  # nothing new: nothing counted twice
    key = str(log)
    assert (
        state_again["files"][key]["offset"] == state["files"][key]["offset"] == log.stat().st_size
    )
    assert state_again["files"][key]["growing"] is False
    assert "0 matching lines since the last run" in again["logs.errors"].message


def test_thresholds_and_samples(logdir):
    log = logdir / "app.log"
    log.touch()
    target = LogsTarget(
        name="app-logs",
        paths=[str(log)],
        patterns=[
            LogPattern(name="errors", regex=r"\bERROR\b", count=Threshold(warn=2, critical=4))
        ],
    )
    _, state = run(target, {})
    long_error = "ERROR " + "x" * 300
    append(log, long_error, "ERROR two", "ERROR three", "ERROR four", "ERROR five")
    results, state = run(target, state)
    errors = results["logs.errors"]
    assert errors.value == 5
    assert errors.status == Status.CRITICAL
    samples = errors.message.split("e.g. ", 1)[1].split(" | ")
    assert samples == [long_error[:120], "ERROR two", "ERROR three"]


def test_a_partial_line_is_counted_once_completed(logdir):
    log = logdir / "app.log"
    append(log, "old ERROR before the baseline")
    append(log, "2026-11-22 ERROR half writ", newline=False)  # being written at baseline time
    target = target_for(log)
    _, state = run(target, {})

    results, state = run(target, state)
    assert counts(results) == zero()  # still no newline

    append(log, "ten, now complete")
    append(log, "2026-11-22 FATAL partial again", newline=False)
    results, state = run(target, state)
    assert counts(results)["errors"] == 1  # the completed line, not the new partial one
    assert "ERROR half written, now complete" in results["logs.errors"].message

    with log.open("a") as file:
        file.write(" - done\n")
    results, state = run(target, state)
    assert counts(results)["errors"] == 1
    assert "FATAL partial again - done" in results["logs.errors"].message

    results, _ = run(target, state)
    assert counts(results) == zero()


def test_a_line_longer_than_the_limit_is_cut_and_counted_once(logdir):
    log = logdir / "app.log"
    log.touch()
    target = target_for(log)
    _, state = run(target, {})
    with log.open("ab") as file:
        file.write(b"ERROR huge " + b"y" * (MAX_LINE * 2) + b" FORBIDDEN at the end\n")
        file.write(b"TIMEOUT \xff\xfe not utf-8\n")
    results, state = run(target, state)
    # ERROR is in the kept first MiB; FORBIDDEN is beyond it and not matched
    assert counts(results) == {"errors": 1, "performance": 1, "security": 0}
    assert "TIMEOUT \ufffd\ufffd not utf-8" in results["logs.performance"].message
    assert state["files"][str(log)]["offset"] == log.stat().st_size


# --- rotation --------------------------------------------------------------------------------


@pytest.mark.parametrize("glob", ["*.log", "app.log*"], ids=["rotated-out-of-glob", "in-glob"])
def test_rotation_by_rename_counts_the_old_tail_and_the_new_file(logdir, glob):
    log = logdir / "app.log"
    append(log, "2026-11-21 ERROR history")
    target = target_for(logdir / glob)
    _, state = run(target, {})

    # round 1: lines appended after the run, then logrotate `create`, then the new file
    append(log, "r1 ERROR before rotation", "r1 SLOW before rotation")
    log.rename(logdir / "app.log.1")
    append(log, "r1 AUTH in the new file")
    results, state = run(target, state)
    assert counts(results) == {"errors": 1, "performance": 1, "security": 1}
    message = results["logs.errors"].message
    assert "may be" not in message
    if glob == "*.log":  # found by its inode among the siblings
        assert f"{logdir / 'app.log.1'} (rotated from app.log): 1" in message

    # round 2: the application writes to the rotated file until it reopens its log
    append(logdir / "app.log.1", "r2 FATAL late write to the rotated file")
    append(log, "r2 ERROR new file", "r2 INFO fine")
    results, state = run(target, state)
    assert counts(results) == {"errors": 2, "performance": 0, "security": 0}

    # round 3: rotate again with dateext; app.log.1 keeps its name
    append(log, "r3 ERROR before second rotation")
    log.rename(logdir / "app.log-20261123")
    append(log, "r3 TIMEOUT new file", "r3 UNAUTHORIZED new file")
    results, state = run(target, state)
    assert counts(results) == {"errors": 1, "performance": 1, "security": 1}

    # round 4: shift names like logrotate's `rotate N` does, then rotate app.log
    (logdir / "app.log.1").rename(logdir / "app.log.2")
    append(log, "r4 CRITICAL before third rotation")
    log.rename(logdir / "app.log.1")
    append(log, "r4 MEMORY new file")
    results, state = run(target, state)
    assert counts(results) == {"errors": 1, "performance": 1, "security": 0}

    # round 5: nothing happens
    results, state = run(target, state)
    assert counts(results) == zero()
    assert all(r.status == Status.OK for r in results.values())


def test_a_rotated_file_is_followed_until_it_stops_growing(logdir):
    log = logdir / "app.log"
    log.touch()
    target = target_for(logdir / "*.log")
    _, state = run(target, {})
    append(log, "ERROR one")
    log.rename(logdir / "app.log.1")
    results, state = run(target, state)  # no new app.log yet
    assert counts(results)["errors"] == 1
    assert results["logs.files"].status == Status.CRITICAL
    rotated = str(logdir / "app.log.1")
    assert state["files"][rotated]["rotated"] is True

    results, state = run(target, state)  # quiet: no longer followed
    assert counts(results) == zero()
    assert rotated not in state["files"]


def test_copytruncate_reads_the_copy_from_the_old_offset_and_the_file_from_zero(logdir):
    log = logdir / "app.log"
    append(log, "2026-11-21 INFO history")
    target = target_for(logdir / "*.log")
    _, state = run(target, {})

    append(log, "ERROR after the run, before the copy", "INFO padding " + "z" * 200)
    shutil.copyfile(log, logdir / "app.log.1")  # logrotate copytruncate: copy ...
    with log.open("r+") as file:  # ... then truncate in place (same inode)
        file.truncate(0)
    append(log, "FATAL after the truncation")
    inode = log.stat().st_ino
    results, state = run(target, state)
    assert log.stat().st_ino == inode
    assert counts(results)["errors"] == 2
    message = results["logs.errors"].message
    assert "truncated in place (copytruncate)" in message
    assert "may have been lost" in message

    results, state = run(target, state)
    assert counts(results) == zero()


def test_copytruncate_with_the_copy_matched_by_the_glob_counts_nothing_twice(logdir):
    log = logdir / "app.log"
    append(log, "2026-11-21 INFO history")
    target = target_for(logdir / "app.log*")
    _, state = run(target, {})
    for round_ in range(3):
        append(log, f"r{round_} ERROR before the copy")
        if (logdir / "app.log.1").exists():
            (logdir / "app.log.1").rename(logdir / "app.log.2")
        shutil.copyfile(log, logdir / "app.log.1")
        with log.open("r+") as file:
            file.truncate(0)
        append(log, f"r{round_} FORBIDDEN after truncation")
        results, state = run(target, state)
        assert counts(results) == {"errors": 1, "performance": 0, "security": 1}, round_


def test_truncation_without_a_copy_says_lines_may_be_lost(logdir):
    log = logdir / "app.log"
    append(log, "INFO " + "a" * 500)
    target = target_for(log)
    _, state = run(target, {})
    append(log, "ERROR lost forever")
    with log.open("r+") as file:
        file.truncate(0)
    append(log, "ERROR in the truncated file")
    results, state = run(target, state)
    assert counts(results)["errors"] == 1
    assert "truncated (copytruncate?) and no copy was found" in results["logs.errors"].message


def test_a_file_rewritten_in_place_and_grown_past_the_offset_is_read_from_zero(logdir):
    log = logdir / "app.log"
    append(log, "INFO first generation")
    target = target_for(log)
    _, state = run(target, {})
    with log.open("r+") as file:  # same inode, new content, longer than the old offset
        file.truncate(0)
        file.write("ERROR second generation, a longer first line than before\n")
    results, _ = run(target, state)
    assert counts(results)["errors"] == 1


def test_a_rotated_and_gzipped_file_is_reported_with_the_uncounted_bytes(logdir):
    log = logdir / "app.log"
    append(log, "2026-11-21 INFO history")
    target = target_for(log)
    _, state = run(target, {})

    late = "2026-11-22 ERROR written after the run, then rotated and compressed\n"
    append(log, late.rstrip("\n"))
    rotated = logdir / "app.log.1"
    log.rename(rotated)
    with rotated.open("rb") as source, gzip.open(logdir / "app.log.1.gz", "wb") as archive:
        shutil.copyfileobj(source, archive)
    rotated.unlink()  # logrotate `compress` without `delaycompress`: the inode is gone
    append(log, "2026-11-22 TIMEOUT in the new file")

    results, state = run(target, state)
    assert counts(results) == {"errors": 0, "performance": 1, "security": 0}
    message = results["logs.errors"].message
    assert "rotated file not found" in message
    assert f"{len(late.encode())} bytes may be uncounted" in message

    results, _ = run(target, state)  # reported once
    assert "rotated file not found" not in results["logs.errors"].message


def test_a_growing_file_rotated_out_of_its_folder_is_reported(logdir, tmp_path):
    log = logdir / "app.log"
    log.touch()
    target = target_for(logdir / "*.log")
    _, state = run(target, {})
    append(log, "INFO growing")
    _, state = run(target, state)
    append(log, "ERROR written after the run")
    olddir = tmp_path / "old"  # logrotate `olddir`: not among the siblings
    olddir.mkdir()
    log.rename(olddir / "app.log.1")
    append(log, "INFO new file")
    results, _ = run(target, state)
    assert counts(results) == zero()
    assert "rotated file not found" in results["logs.errors"].message


def test_a_deleted_and_recreated_file_is_read_from_the_start(logdir):
    log = logdir / "app.log"
    append(log, "INFO " + "h" * 100)
    target = target_for(log)
    _, state = run(target, {})
    append(log, "INFO still growing")
    _, state = run(target, state)
    log.unlink()  # the new file may get the same inode number (looks like a truncation) or not
    append(log, "ERROR in the new file")
    results, _ = run(target, state)
    assert counts(results)["errors"] == 1
    message = results["logs.errors"].message
    assert "may have been lost" in message or "may be uncounted" in message


# --- globs, missing and unreadable files ------------------------------------------------------


def test_files_appearing_under_a_known_glob_are_read_from_the_start(logdir):
    append(logdir / "api.log", "INFO api history ERROR")
    target = target_for(logdir / "*.log")
    _, state = run(target, {})

    append(logdir / "worker.log", "ERROR worker failed", "SLOW job", "ERROR again")
    append(logdir / "worker.log.gz", "ERROR not a log, an archive")  # skipped by suffix
    results, state = run(target, state)
    assert counts(results) == {"errors": 2, "performance": 1, "security": 0}
    assert f"{logdir / 'worker.log'}: 2" in results["logs.errors"].message
    assert results["logs.files"].value == 2


def test_a_glob_that_matched_nothing_at_first_counts_files_that_appear_later(logdir):
    target = target_for(logdir / "*.log")
    results, state = run(target, {})
    assert results["logs.files"].status == Status.CRITICAL
    append(logdir / "late.log", "FATAL first words")
    results, state = run(target, state)
    assert counts(results)["errors"] == 1
    assert results["logs.files"].status == Status.OK


def test_a_newly_configured_glob_is_baselined_not_read_from_the_start(logdir, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    append(logdir / "app.log", "INFO start")
    append(other / "old.log", "ERROR years of history", "ERROR more history")
    _, state = run(target_for(logdir / "*.log"), {})

    wider = target_for(logdir / "*.log", other / "*.log")
    append(logdir / "app.log", "ERROR new in app")
    results, state = run(wider, state)
    assert counts(results)["errors"] == 1
    assert f"baseline taken for {other / '*.log'}" in results["logs.errors"].message

    append(other / "old.log", "ERROR now counted")
    results, _ = run(wider, state)
    assert counts(results)["errors"] == 1


def test_a_glob_matching_no_file_is_one_critical_result(logdir):
    append(logdir / "app.log", "INFO start")
    missing = "/var/log/does-not-exist-for-runbook/*.log"
    target = target_for(logdir / "app.log", missing, logdir / "nope.log")
    results, state = run(target, {})
    files = results["logs.files"]
    assert files.status == Status.CRITICAL
    assert f"no file matches {missing}" in files.message
    assert f"no file matches {logdir / 'nope.log'}" in files.message
    assert [r for r in results if r == "logs.files"] == ["logs.files"]
    append(logdir / "app.log", "ERROR still counted")
    results, _ = run(target, state)
    assert counts(results)["errors"] == 1
    assert results["logs.files"].status == Status.CRITICAL


def test_an_unreadable_file_is_unknown_with_the_error(logdir):
    append(logdir / "app.log", "INFO start")
    folder = logdir / "not-a-file.log"
    folder.mkdir()  # named like a log, cannot be read as one
    target = target_for(logdir / "app.log", folder)
    results, state = run(target, {})
    assert results["logs.files"].status == Status.UNKNOWN
    assert "Is a directory" in results["logs.files"].message
    append(logdir / "app.log", "INFO fine")
    results, state = run(target, state)
    assert results["logs.errors"].status == Status.UNKNOWN  # the count is incomplete
    append(logdir / "app.log", *(["ERROR"] * 11))
    results, _ = run(target, state)
    assert results["logs.errors"].status == Status.CRITICAL  # still shown as the worse


# --- state -----------------------------------------------------------------------------------


def test_state_round_trips_through_json_and_is_stable_when_nothing_changes(logdir):
    for name in ("a.log", "b.log"):
        append(logdir / name, "INFO x", "ERROR y")
    target = target_for(logdir / "*.log")
    _, state = run(target, {})
    text = json.dumps(state)
    assert set(state) == {"version", "paths", "files"}
    entry = state["files"][str(logdir / "a.log")]
    st = os.stat(logdir / "a.log")
    assert (entry["dev"], entry["ino"], entry["offset"]) == (st.st_dev, st.st_ino, st.st_size)
    for _ in range(3):
        results, state = run(target, json.loads(text))
        assert counts(results) == zero()
        assert json.dumps(state) == text


def test_an_unrecognised_state_takes_a_new_baseline(logdir):
    append(logdir / "app.log", "ERROR history")
    target = target_for(logdir / "app.log")
    results, state = run(target, {"version": 0, "whatever": True})
    assert counts(results) == zero()
    assert results["logs.errors"].message == "baseline taken, counting from now"
    assert state["version"] == 1
