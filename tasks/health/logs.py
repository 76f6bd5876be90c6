"""Log checks: lines matching runbook 000's greps, counted since the last run.

`check_logs(target, state) -> (results, new_state)`: the caller stores `new_state` (plain JSON)
and passes it back next run; `{}` means "never ran". Besides files, a target can read the logs
of containers and pods (`docker:` and `kubernetes:` sources, tasks.health.log_streams): the
caller passes `streams`, which reads them and feeds their lines to the same patterns.

What is counted
- A line is counted once per pattern when it matches (`grep -c` semantics: a line with two
  ERRORs counts 1), and only once it is complete: a last line without its newline is left for
  the next run (the offset stays at its start). Files are read in binary, line by line, with at
  most 1 MiB of a line kept (the rest of a longer line is skipped, not matched); lines are
  decoded as UTF-8 with errors="replace". Each file is read up to the size it had when opened.

First sightings
- First run (state without "files"): a baseline is taken at the end of the last complete line
  of every file; nothing is counted ("baseline taken, counting from now").
- A configured path or glob that was not in the previous run's config is baselined the same
  way (adding /var/log/big/*.log to the config does not count years of history).
- A file that appears later under a known path or glob (a new glob match, or the new file
  after a rotation) is new since the last run: it is read from the start.

Remembered per file (state["files"][path]): device + inode, the offset after the last counted
line, a SHA-256 of the file's first bytes (up to 1 KiB) to notice a file rewritten in place,
and whether it grew during the run.

Rotation
- `create` (rename + new file): the remembered inode is looked up among the siblings of the
  path (same directory, any name, or the resolved symlink's directory). The rotated file is
  read from the old offset to its end (a last partial line included: it will not be completed)
  and followed while it keeps growing (an application that reopens late); the new file at the
  path is read from 0. If the rotated name is itself matched by the configured glob
  (`app.log*`), it simply stays tracked under its new name: nothing is counted twice.
- `copytruncate` (same inode, now shorter than the offset, or different first bytes): the
  file is read from 0. The copy (a sibling whose first bytes match and which is at least as
  long as the offset) is read from the old offset; lines written between the copy and the
  truncation are lost, and the message says so.
- Rotated file gone (deleted, or compressed without `delaycompress`): compressed archives are
  not read. A `<name>*.gz` sibling whose decompressed start matches identifies it, and its
  length says how many bytes after the offset were not counted: "rotated file not found,
  N bytes may be uncounted". Without one, the message says so only for a file that was still
  growing at the last run (a quiet old rotation being deleted by `rotate N` is not news).
- Glob matches ending in .gz/.bz2/.xz/.zst/.lz4/.zip/.Z are skipped (rotated archives).

Results
- `logs.<pattern>` per pattern: value = matching lines since the last run, graded with the
  pattern's `count` threshold; the message gives the count per file, up to 3 sample lines
  (120 characters each) and notes about rotations. An unreadable file makes a pattern that
  would be ok `unknown` (its count is incomplete); warn/critical stay.
- `logs.files` (when the target has paths): critical "no file matches <path>" for every
  configured path or glob that matches no file, unknown for unreadable files, else ok with the
  number of files watched.
- `logs.sources` (when it has docker or kubernetes sources): critical for a source that
  matches no container or pod, unknown for one that could not be read (its patterns that
  would be ok turn unknown too), else ok with the number of streams read.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import os
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from runbook.config import LogPattern, LogsTarget
from runbook.health import CheckResult, Status, measured, timer, worst
from tasks.health.log_streams import Feed, StreamRead

STATE_VERSION = 1
MAX_LINE = 1 << 20  # bytes of one line that are kept and matched
FINGERPRINT_BYTES = 1024
SAMPLES = 3
SAMPLE_CHARS = 120
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip", ".Z")
GZ_CANDIDATES = 5  # newest `<name>*.gz` siblings checked when a rotated file vanished
_BACKWARD_CHUNK = 64 << 10
_GLOB_MAGIC = re.compile(r"[*?[]")


@dataclass
class _Entry:
    """What state["files"][path] remembers about one file."""

    dev: int
    ino: int
    offset: int
    fingerprint: str  # sha256 hex of the first `fingerprint_bytes` bytes
    fingerprint_bytes: int
    growing: bool = False  # the last run read something from it
    rotated: bool = False  # followed by inode, outside the configured paths

    @classmethod
    def parse(cls, raw: Any) -> _Entry | None:
        if not isinstance(raw, dict):
            return None
        try:
            entry = cls(
                dev=raw["dev"],
                ino=raw["ino"],
                offset=raw["offset"],
                fingerprint=raw["fingerprint"],
                fingerprint_bytes=raw["fingerprint_bytes"],
                growing=bool(raw.get("growing", False)),
                rotated=bool(raw.get("rotated", False)),
            )
        except (KeyError, TypeError):
            return None
        ints = (entry.dev, entry.ino, entry.offset, entry.fingerprint_bytes)
        if not all(isinstance(v, int) and v >= 0 for v in ints):
            return None
        return entry if isinstance(entry.fingerprint, str) else None

    def dump(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "dev": self.dev,
            "ino": self.ino,
            "offset": self.offset,
            "fingerprint": self.fingerprint,
            "fingerprint_bytes": self.fingerprint_bytes,
            "growing": self.growing,
        }
        if self.rotated:
            data["rotated"] = True
        return data

    @property
    def identity(self) -> tuple[int, int]:
        return (self.dev, self.ino)

    def same_start(self, head: bytes) -> bool:
        """The file still begins with the bytes fingerprinted at the last run."""
        if len(head) < self.fingerprint_bytes:
            return False
        return _digest(head[: self.fingerprint_bytes]) == self.fingerprint


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _name(path: str) -> str:
    return os.path.basename(path)


@dataclass
class _Open:
    path: str
    file: IO[bytes]
    stat: os.stat_result
    head: bytes  # the first FINGERPRINT_BYTES bytes (fewer for a shorter file)

    @property
    def identity(self) -> tuple[int, int]:
        return (self.stat.st_dev, self.stat.st_ino)

    def entry(self, offset: int, *, growing: bool, rotated: bool = False) -> _Entry:
        return _Entry(
            dev=self.stat.st_dev,
            ino=self.stat.st_ino,
            offset=offset,
            fingerprint=_digest(self.head),
            fingerprint_bytes=len(self.head),
            growing=growing,
            rotated=rotated,
        )


def _open(path: str) -> _Open:
    file = open(path, "rb")  # closed by the caller
    try:
        stat = os.fstat(file.fileno())
        head = file.read(FINGERPRINT_BYTES)
    except BaseException:
        file.close()
        raise
    return _Open(path, file, stat, head)


# --- counting --------------------------------------------------------------------------------


@dataclass
class _Tally:
    """Matches per pattern and file, samples, and what the run has to say about the files."""

    patterns: list[tuple[str, re.Pattern[str]]]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # pattern -> label -> n
    samples: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def line(self, label: str, raw: bytes) -> None:
        text = raw.rstrip(b"\r\n").decode("utf-8", errors="replace")
        for name, regex in self.patterns:
            if regex.search(text):
                per_file = self.counts.setdefault(name, {})
                per_file[label] = per_file.get(label, 0) + 1
                samples = self.samples.setdefault(name, [])
                if len(samples) < SAMPLES:
                    samples.append(text.strip()[:SAMPLE_CHARS])

    def scan(self, opened: _Open, start: int, label: str, *, to_eof: bool) -> int:
        """Count the complete lines from `start` up to the size at open; return the offset after
        the last one counted. `to_eof` also counts a last line without newline (a rotated file
        that will not be written again)."""
        limit = opened.stat.st_size
        file = opened.file
        file.seek(start)
        position = offset = start
        cut: bytes | None = None  # the kept first MAX_LINE bytes of an over-long line
        while position < limit:
            chunk = file.readline(MAX_LINE)
            if not chunk:
                break
            position += len(chunk)
            complete = chunk.endswith(b"\n")
            if cut is not None:  # the rest of an over-long line: skipped
                if complete:
                    self.line(label, cut)
                    cut, offset = None, position
                continue
            if complete:
                self.line(label, chunk)
                offset = position
            elif len(chunk) == MAX_LINE:
                cut = chunk
            elif to_eof:
                self.line(label, chunk)
                offset = position
        if cut is not None and to_eof:
            self.line(label, cut)
            offset = position
        return offset


def _last_line_end(opened: _Open) -> int:
    """Offset just after the last newline (where counting starts after a baseline). A last line
    without newline is left to be counted once complete, unless it is already over-long."""
    size = opened.stat.st_size
    file = opened.file
    end = size
    while end > 0 and size - end < MAX_LINE:
        start = max(0, end - _BACKWARD_CHUNK)
        file.seek(start)
        block = file.read(end - start)
        newline = block.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0 if end == 0 else size


# --- one run ---------------------------------------------------------------------------------


def _expand(specs: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """Files (absolute path -> the configured path or glob it came from) and the configured
    paths that match no file."""
    files: dict[str, str] = {}
    missing = []
    for spec in specs:
        pattern = os.path.expanduser(spec)
        if _GLOB_MAGIC.search(pattern):
            found = [
                p
                for p in sorted(glob.glob(pattern))
                if os.path.isfile(p) and not p.endswith(COMPRESSED_SUFFIXES)
            ]
        else:
            found = [pattern] if os.path.lexists(pattern) else []
        if not found:
            missing.append(spec)
        for path in found:
            files.setdefault(os.path.abspath(path), spec)
    return files, missing


class _LogRun:
    def __init__(self, target: LogsTarget, state: dict[str, Any]) -> None:
        self.target = target
        self.tally = _Tally([(p.name, re.compile(p.regex)) for p in target.patterns])
        files = state.get("files") if state.get("version") == STATE_VERSION else None
        self.first_run = not isinstance(files, dict)
        self.old: dict[str, _Entry] = {}
        if isinstance(files, dict):
            for path, raw in files.items():
                entry = _Entry.parse(raw)
                if entry is not None and isinstance(path, str):
                    self.old[path] = entry
        known = state.get("paths") if not self.first_run else None
        self.known_specs = set(known) if isinstance(known, list) else set()
        self.new: dict[str, _Entry] = {}
        self.claimed: set[str] = set()  # current files already accounted for
        self.from_start: set[str] = set()  # truncated in place: read from 0 whatever the spec
        self.baselined: list[str] = []  # specs baselined this run
        self.current: dict[str, os.stat_result] = {}
        self.by_identity: dict[tuple[int, int], str] = {}
        self.missing: list[str] = []
        self._siblings: dict[str, list[tuple[str, os.stat_result]]] = {}
        self.streams: StreamRead | None = None  # the container and pod sources, when read

    # --- steps

    def run(self) -> None:
        """1. find the configured files; 2. follow every remembered file by inode;
        3. recover truncated or vanished ones from a copy, or say what may be uncounted;
        4. read or baseline the files seen for the first time."""
        files, self.missing = _expand(self.target.paths)
        self._stat_current(files)
        lost: list[tuple[str, _Entry, bool]] = []  # (old path, entry, truncated in place)
        for old_path, entry in self.old.items():
            outcome = self._follow(old_path, entry)
            if outcome is not None:
                lost.append((old_path, entry, outcome))
        for old_path, entry, truncated in lost:
            self._recover(old_path, entry, truncated=truncated)
        for path in self.current:
            if path not in self.claimed:
                self._first_sighting(path, files[path])

    def _stat_current(self, files: dict[str, str]) -> None:
        for path in files:
            try:
                st = os.stat(path)
            except OSError as exc:
                self.tally.errors.append(f"cannot read {path}: {exc.strerror or exc}")
                continue
            if (st.st_dev, st.st_ino) in self.by_identity:
                continue  # the same file under a second name (symlink, hard link)
            self.current[path] = st
            self.by_identity[(st.st_dev, st.st_ino)] = path

    def _follow(self, old_path: str, entry: _Entry) -> bool | None:
        """Count what was appended to a remembered file. None when done; False when its inode
        is gone, True when it was truncated in place (both for `_recover`)."""
        path = self._locate(old_path, entry)
        if path is None:
            return False
        if path in self.claimed:
            return None  # a duplicate entry of a file already counted
        tracked = path in self.current
        if not tracked and path == old_path and not entry.rotated:
            return None  # no longer configured
        try:
            opened = _open(path)
        except OSError as exc:
            self.tally.errors.append(f"cannot read {path}: {exc.strerror or exc}")
            self.new[old_path] = entry  # resume from the same place once readable
            self.claimed.add(path)
            return None
        with opened.file:
            if opened.stat.st_ino != entry.ino:
                return False  # replaced between stat and open
            if opened.stat.st_size < entry.offset or not entry.same_start(opened.head):
                if path != old_path:
                    return False  # the inode was freed and reused by another file
                if tracked:
                    self.from_start.add(path)
                return True
            label = path if path == old_path else f"{path} (rotated from {_name(old_path)})"
            if tracked:
                offset = self.tally.scan(opened, entry.offset, path, to_eof=False)
                self.new[path] = opened.entry(offset, growing=offset > entry.offset)
            else:
                offset = self.tally.scan(opened, entry.offset, label, to_eof=True)
                # Followed until a run finds nothing new in it (the app has reopened its log).
                if offset > entry.offset or not entry.rotated:
                    grew = offset > entry.offset
                    self.new[path] = opened.entry(offset, growing=grew, rotated=True)
            self.claimed.add(path)
        return None

    def _locate(self, old_path: str, entry: _Entry) -> str | None:
        """Where the remembered inode is now: its old path, a configured file, or a sibling."""
        try:
            st = os.stat(old_path)
        except OSError:
            st = None
        if st is not None and st.st_ino == entry.ino:
            # the same device, or a device number that changed (reboot, NFS remount)
            if st.st_dev == entry.dev or self._starts_like(old_path, entry):
                # under the name it is counted by when it is also reached another way
                return self.by_identity.get((st.st_dev, st.st_ino), old_path)
        path = self.by_identity.get(entry.identity)
        if path is not None:
            return path
        for sibling, sst in self._siblings_of(old_path):
            if (sst.st_dev, sst.st_ino) == entry.identity:
                return sibling
        return None

    def _recover(self, old_path: str, entry: _Entry, *, truncated: bool) -> None:
        copy = self._find_copy(old_path, entry)
        if copy is not None:
            self._read_copy(copy, old_path, entry)
            if truncated:
                self.tally.notes.append(
                    f"{old_path} was truncated in place (copytruncate): its copy {copy} was "
                    "read from the last offset; lines written between the copy and the "
                    "truncation may have been lost"
                )
            return
        archive = self._find_archive(old_path, entry)
        if archive is not None:
            name, uncounted = archive
            if uncounted:
                self.tally.notes.append(
                    f"{old_path}: rotated file not found ({name} is compressed and not read), "
                    f"{uncounted} bytes may be uncounted"
                )
            return
        if truncated:
            self.tally.notes.append(
                f"{old_path} was truncated (copytruncate?) and no copy was found: lines "
                "written since the last run, before the truncation, may have been lost"
            )
        elif entry.growing and not entry.rotated:
            self.tally.notes.append(
                f"{old_path}: rotated file not found, bytes written after offset "
                f"{entry.offset} before the rotation may be uncounted"
            )

    def _find_copy(self, old_path: str, entry: _Entry) -> str | None:
        """The one plain sibling that starts like the remembered file and is at least as long as
        the offset (a copytruncate copy, or a move across filesystems)."""
        if entry.fingerprint_bytes == 0:
            return None  # an empty file's start matches anything
        matches = []
        for sibling, st in self._siblings_of(old_path):
            if sibling in self.claimed:
                continue
            if sibling.endswith(COMPRESSED_SUFFIXES) or st.st_size < entry.offset:
                continue
            if self._starts_like(sibling, entry):
                matches.append(sibling)
        return matches[0] if len(matches) == 1 else None

    def _read_copy(self, copy: str, old_path: str, entry: _Entry) -> None:
        try:
            opened = _open(copy)
        except OSError as exc:
            self.tally.errors.append(f"cannot read {copy}: {exc.strerror or exc}")
            return
        with opened.file:
            tracked = copy in self.current
            if tracked:
                offset = self.tally.scan(opened, entry.offset, copy, to_eof=False)
                self.new[copy] = opened.entry(offset, growing=offset > entry.offset)
            else:
                label = f"{copy} (copy of {_name(old_path)})"
                offset = self.tally.scan(opened, entry.offset, label, to_eof=True)
                self.new[copy] = opened.entry(offset, growing=True, rotated=True)
            self.claimed.add(copy)

    def _find_archive(self, old_path: str, entry: _Entry) -> tuple[str, int] | None:
        """(name, bytes after the offset) of a `<name>*.gz` sibling holding the remembered
        file. The size comes from the gzip trailer (modulo 4 GiB, as gzip stores it)."""
        if entry.fingerprint_bytes == 0:
            return None
        base = os.path.basename(old_path)
        candidates = [
            (st.st_mtime, sibling)
            for sibling, st in self._siblings_of(old_path)
            if os.path.basename(sibling).startswith(base) and sibling.endswith(".gz")
        ]
        for _, sibling in sorted(candidates, reverse=True)[:GZ_CANDIDATES]:
            try:
                with gzip.open(sibling, "rb") as archive:
                    head = archive.read(entry.fingerprint_bytes)
                if _digest(head) != entry.fingerprint or len(head) < entry.fingerprint_bytes:
                    continue
                with open(sibling, "rb") as raw:
                    raw.seek(-4, os.SEEK_END)
                    (size,) = struct.unpack("<I", raw.read(4))
            except (OSError, EOFError, gzip.BadGzipFile):
                continue
            return sibling, max(0, size - entry.offset)
        return None

    def _first_sighting(self, path: str, spec: str) -> None:
        baseline = self.first_run or spec not in self.known_specs
        if path in self.from_start:
            baseline = False
        try:
            opened = _open(path)
        except OSError as exc:
            self.tally.errors.append(f"cannot read {path}: {exc.strerror or exc}")
            return
        with opened.file:
            if baseline:
                self.new[path] = opened.entry(_last_line_end(opened), growing=False)
                if spec not in self.baselined:
                    self.baselined.append(spec)
            else:
                offset = self.tally.scan(opened, 0, path, to_eof=False)
                self.new[path] = opened.entry(offset, growing=offset > 0)
        self.claimed.add(path)

    # --- helpers

    def _siblings_of(self, path: str) -> list[tuple[str, os.stat_result]]:
        """Regular files next to `path` (and next to the file its symlink resolves to)."""
        folders = dict.fromkeys([os.path.dirname(path), os.path.dirname(os.path.realpath(path))])
        found: list[tuple[str, os.stat_result]] = []
        for folder in folders:
            if folder not in self._siblings:
                listing = []
                try:
                    with os.scandir(folder) as entries:
                        for item in entries:
                            try:
                                if item.is_file(follow_symlinks=False):
                                    listing.append((item.path, item.stat(follow_symlinks=False)))
                            except OSError:
                                continue
                except OSError:
                    pass
                self._siblings[folder] = sorted(listing)
            found.extend(self._siblings[folder])
        return found

    @staticmethod
    def _starts_like(path: str, entry: _Entry) -> bool:
        try:
            with open(path, "rb") as file:
                return entry.same_start(file.read(entry.fingerprint_bytes))
        except OSError:
            return False

    # --- outcome

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "version": STATE_VERSION,
            "paths": list(self.target.paths),
            "files": {path: entry.dump() for path, entry in sorted(self.new.items())},
        }
        if self.streams is not None:
            state["streams"] = self.streams.state
        return state

    def results(self, duration: float) -> list[CheckResult]:
        tally = self.tally
        streams = self.streams
        failed = tally.errors or (streams is not None and streams.errors)
        unreadable = Status.UNKNOWN if failed else Status.OK
        results = []
        if self.target.paths:
            results.append(self._files_result(duration))
        if streams is not None:
            results.append(_sources_result(self.target, streams, duration))
        for pattern in self.target.patterns:
            result = measured(
                f"logs.{pattern.name}",
                self.target.name,
                sum(tally.counts.get(pattern.name, {}).values()),
                pattern.count,
                self._pattern_message(pattern),
                duration=duration,
            )
            status = worst([result.status, unreadable])
            results.append(result.model_copy(update={"status": status}))
        return results

    def _files_result(self, duration: float) -> CheckResult:
        problems = [f"no file matches {spec}" for spec in self.missing] + self.tally.errors
        status = worst(
            [
                Status.CRITICAL if self.missing else Status.OK,
                Status.UNKNOWN if self.tally.errors else Status.OK,
            ]
        )
        if problems:
            message = "; ".join(problems)
        else:
            shown = ", ".join(list(self.current)[:5])
            more = f" and {len(self.current) - 5} more" if len(self.current) > 5 else ""
            message = f"{len(self.current)} file(s) watched: {shown}{more}"
        return CheckResult(
            check="logs.files",
            target=self.target.name,
            status=status,
            value=len(self.current),
            message=message,
            duration=round(duration, 4),
        )

    def _pattern_message(self, pattern: LogPattern) -> str:
        tally = self.tally
        streams = self.streams
        if self.first_run and streams is None:
            parts = ["baseline taken, counting from now"]
        else:
            per_file = tally.counts.get(pattern.name, {})
            total = sum(per_file.values())
            when = "since the last run"
            if self.first_run:  # only the container and pod logs were read, over `since`
                when = f"in the container and pod logs of the last {_hours(self.target)}"
            head = f"{total} matching line{'' if total == 1 else 's'} {when}"
            if per_file:
                head += " (" + ", ".join(f"{label}: {n}" for label, n in per_file.items()) + ")"
            parts = [head]
            samples = tally.samples.get(pattern.name)
            if samples:
                parts.append("e.g. " + " | ".join(samples))
            if self.first_run and self.target.paths:
                parts.append("log files: baseline taken, counting from now")
            parts += [f"baseline taken for {spec}, counting from now" for spec in self.baselined]
        parts += tally.notes + tally.errors
        if streams is not None:
            parts += streams.notes + streams.errors
        return "; ".join(parts)


def _hours(target: LogsTarget) -> str:
    seconds = target.since.total_seconds()
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds / 60:g} min"


def _sources_result(target: LogsTarget, streams: StreamRead, duration: float) -> CheckResult:
    problems = [f"nothing to read: no container or pod matches {w}" for w in streams.empty]
    problems += streams.errors
    status = worst(
        [
            Status.CRITICAL if streams.empty else Status.OK,
            Status.UNKNOWN if streams.errors else Status.OK,
        ]
    )
    if problems:
        message = "; ".join(problems)
    else:
        shown = ", ".join(streams.watched[:5])
        more = f" and {len(streams.watched) - 5} more" if len(streams.watched) > 5 else ""
        message = f"{len(streams.watched)} container log(s) read: {shown}{more}"
    return CheckResult(
        check="logs.sources",
        target=target.name,
        status=status,
        value=len(streams.watched),
        message=message,
        duration=round(duration, 4),
    )


def check_logs(
    target: LogsTarget,
    state: dict[str, Any],
    streams: Callable[[dict[str, Any], Feed], StreamRead] | None = None,
) -> tuple[list[CheckResult], dict]:
    """Results for the lines appended since the run that returned `state`, and the state to
    pass to the next run. `streams(previous stream state, feed)` reads the container and pod
    sources (when the target has any), feeding each line to the patterns."""
    with timer() as elapsed:
        run = _LogRun(target, state or {})
        run.run()
        if streams is not None and (target.docker or target.kubernetes):
            previous = (state or {}).get("streams")
            run.streams = streams(previous if isinstance(previous, dict) else {}, run.tally.line)
        duration = elapsed()
    return run.results(duration), run.state()
