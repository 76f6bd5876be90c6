"""Runbook's container image (infra/docker/Dockerfile) built with podman for the tests.

No registry can be pulled from here, so the base image is made locally: a minimal Debian
bookworm with python3 (`debootstrap` from the mirror apt uses), brought in with `podman
import`. It is kept in podman's storage and reused, and so are the build's layers: only the
first build installs the dependencies (minutes); later ones copy the changed code.

As these machines need (shared/NOTES-prefect-gx.md): runc, cgroupfs and no default ulimits, in
a containers.conf passed through CONTAINERS_CONF. pip inside the build reaches the package
index this machine's pip uses: its index settings go in as a build secret (never in a layer),
its CA bundle as a read-only volume.

A missing tool fails the test with the Debian package to install (.ci/run installs them).
"""

from __future__ import annotations

import ast
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = {"podman": "podman", "runc": "runc", "debootstrap": "debootstrap", "make": "make"}
BASE = "localhost/runbook-test-base:latest"
IMAGE = "localhost/runbook-test"
DEPS_TAG = "deps"  # the dependency stage, tagged so that pruning dangling images keeps it
SUITE = "bookworm"
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
LOCK = Path(tempfile.gettempdir()) / "runbook-image-test.lock"  # one build at a time
# In the pip config handed to the build: found in the image, it would mean the secret leaked.
SECRET_MARKER = "runbook-image-test-pip-secret"
# PostgreSQL 15's own client beside the wheel's 18: the host's PostgreSQL 15 (Debian 15.20)
# keeps a `pg_attver` option on every column that its pg_dump 15 leaves out but pg_dump 18.6
# writes as `ALTER COLUMN ... SET (pg_attver=...)`, which PostgreSQL 18 refuses to restore.
PG_CLIENT_PACKAGES = "postgresql-client-15"
BUILD_TIMEOUT = 3600  # a first build downloads and installs every dependency

CONTAINERS_CONF = """[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
"""


def require_tools() -> None:
    """Fail (never skip) naming the Debian packages to install."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    missing = [pkg for tool, pkg in TOOLS.items() if shutil.which(tool, path=search) is None]
    if missing:
        pytest.fail(
            f"the image test needs the Debian packages {' '.join(missing)}: "
            f"apt-get install -y {' '.join(missing)} (as root; .ci/run does it)"
        )
    if os.geteuid() != 0:
        pytest.fail("the image test runs debootstrap and podman as root (as .ci/run does)")


def debian_archives() -> tuple[str, str | None]:
    """(the Debian archive, its security archive or None) that apt uses on this machine: the
    ones reachable without internet."""
    found: list[tuple[str, list[str]]] = []  # (uri, suites) of each `deb ... main` entry
    apt = Path("/etc/apt")
    for path in [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]:
        if path.is_file():
            for line in path.read_text().splitlines():
                words = [w for w in line.split("#", 1)[0].split() if not w.startswith("[")]
                if len(words) >= 4 and words[0] == "deb" and "main" in words[3:]:
                    found.append((words[1], [words[2]]))
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        for block in path.read_text().split("\n\n"):
            fields = {}
            for line in block.splitlines():
                if ":" in line and not line.startswith(("#", " ")):
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.split()
            if (
                "deb" in fields.get("types", [])
                and "main" in fields.get("components", [])
                and fields.get("enabled", ["yes"]) != ["no"]
            ):
                found += [(uri, fields.get("suites", [])) for uri in fields.get("uris", [])]
    main = [uri for uri, suites in found if not any("-security" in s for s in suites)]
    security = [uri for uri, suites in found if any("-security" in s for s in suites)]
    if not main:
        pytest.fail("no Debian archive in /etc/apt/sources.list*: debootstrap needs one")
    return main[0], (security[0] if security else None)


def pip_build_config() -> tuple[str, list[str]]:
    """(a pip config file's text, paths to mount read-only) for pip inside the build: the
    index settings of this machine's pip (`pip config list`, PIP_* variables included), the
    network ones only (a file:// index or a local folder does not exist in the build)."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    values: dict[str, str] = {}
    for line in listed.splitlines():
        key, _, raw = line.partition("=")
        section, _, name = key.rpartition(".")
        if section in ("global", "install", ":env:") and raw:
            values[name] = str(ast.literal_eval(raw))  # the environment comes last: it wins
    lines = ["[global]", f"# {SECRET_MARKER}"]
    for name in ("index-url", "extra-index-url"):
        urls = [u for u in values.get(name, "").split() if u.startswith(("http://", "https://"))]
        if urls:
            lines.append(f"{name} = {' '.join(urls)}")
    if values.get("trusted-host"):
        lines.append(f"trusted-host = {values['trusted-host']}")
    timeout = values.get("timeout") or values.get("default-timeout")
    if timeout:
        lines.append(f"timeout = {timeout}")
    mounts = [CA_BUNDLE] if Path(CA_BUNDLE).is_file() else []
    cert = values.get("cert")
    if cert and Path(cert).is_file():
        lines.append(f"cert = {cert}")
        mounts.append(cert)
    return "\n".join(lines) + "\n", sorted(set(mounts))


@dataclass
class Podman:
    """The podman command line with this machine's settings, on its default storage (kept
    between runs: the base image and the build's layers are the cache)."""

    conf: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.conf)}

    def __call__(
        self, *args: str, timeout: float = 300, check: bool = True, **kwargs
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["podman", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args[:3])} failed: {done.stderr[-3000:]}")
        return done

    def image_id(self, reference: str) -> str | None:
        done = self("image", "inspect", "--format", "{{.Id}}", reference, check=False)
        return done.stdout.strip() if done.returncode == 0 else None


def build_base(podman: Podman, workdir: Path) -> None:
    """The Debian base image, made once (debootstrap, then `podman import`)."""
    if podman.image_id(BASE):
        return
    rootfs = workdir / "rootfs"
    log = workdir / "debootstrap.log"
    mirror, security = debian_archives()
    try:
        with log.open("wb") as out:
            done = subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={BASE_PACKAGES}",
                    SUITE,
                    str(rootfs),
                    mirror,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=1800,
                check=False,
            )
        if done.returncode != 0:
            pytest.fail(f"debootstrap failed:\n{log.read_text(errors='replace')[-3000:]}")
        # apt in the image sees what Debian's own images do: the release, its updates and its
        # security updates (PostgreSQL clients come from there).
        sources = [f"deb {mirror} {SUITE} main", f"deb {mirror} {SUITE}-updates main"]
        if security:
            sources.append(f"deb {security} {SUITE}-security main")
        (rootfs / "etc/apt/sources.list").write_text("\n".join(sources) + "\n")
        # What slim images leave out too: package lists and caches, documentation, man pages.
        for pattern in (
            "var/cache/apt/*.bin",
            "var/cache/apt/archives/*.deb",
            "var/lib/apt/lists/*",
            "usr/share/doc/*",
            "usr/share/man/*",
            "usr/share/locale/*",
        ):
            for path in rootfs.glob(pattern):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        podman("import", "--quiet", "-", BASE, stdin=tar.stdout, timeout=600)
        tar.wait(60)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


@dataclass
class Build:
    image_id: str
    seconds: float
    size_bytes: int
    log: Path


def build_image(podman: Podman, workdir: Path) -> Build:
    """`make image` with podman from the base image; tags IMAGE:latest and IMAGE:deps. The
    image it replaces is removed (its layers are garbage once the tag moves)."""
    config_text, mounts = pip_build_config()
    secret = workdir / "pip.conf"
    secret.touch(mode=0o600)
    secret.write_text(config_text)
    flags = [
        "--network host",
        *(f"--volume {m}:{m}:ro" for m in mounts),
        f"--build-arg PG_CLIENT_PACKAGES={PG_CLIENT_PACKAGES}",
    ]
    log = workdir / "build.log"
    previous = podman.image_id(f"{IMAGE}:latest")
    started = time.monotonic()
    try:
        for tag, extra in (("latest", []), (DEPS_TAG, ["--target deps"])):
            with log.open("ab") as out:
                done = subprocess.run(
                    [
                        "make",
                        "--no-print-directory",
                        "image",
                        "ENGINE=podman",
                        f"IMAGE={IMAGE}",
                        f"TAG={tag}",
                        f"BASE_IMAGE={BASE}",
                        f"PIP_CONF={secret}",
                        f"IMAGE_FLAGS={' '.join([*flags, *extra])}",
                    ],
                    cwd=ROOT,
                    env=podman.env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=BUILD_TIMEOUT,
                    check=False,
                )
            if done.returncode != 0:
                pytest.fail(f"make image failed:\n{log.read_text(errors='replace')[-5000:]}")
    finally:
        secret.unlink()
    seconds = time.monotonic() - started
    image_id = podman.image_id(f"{IMAGE}:latest")
    assert image_id, f"make image tagged nothing:\n{log.read_text()[-3000:]}"
    if previous and previous != image_id:
        podman("rmi", previous, check=False)  # still used by a container elsewhere: kept
    size = json.loads(podman("image", "inspect", image_id).stdout)[0]["Size"]
    return Build(image_id, seconds, size, log)


@contextmanager
def build_lock() -> Iterator[None]:
    with LOCK.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class RunbookImage:
    """The built image, and `podman run` of it on the host's network."""

    podman: Podman
    build: Build
    names: list[str] = field(default_factory=list)

    def run(
        self,
        *command: str,
        env: dict[str, str] | None = None,
        volumes: dict[Path, str] | None = None,
        timeout: float = 300,
        user: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `command` in a fresh container (removed after) as the image's user (or
        `user`); the command's exit code, stdout and stderr."""
        name = f"runbook-image-test-{uuid.uuid4().hex[:8]}"
        self.names.append(name)
        args = ["run", "--rm", "--name", name, "--network", "host", "--pull", "never"]
        if user is not None:
            args += ["--user", user]
        for key, value in (env or {}).items():
            args += ["--env", f"{key}={value}"]
        for host, inside in (volumes or {}).items():
            args += ["--volume", f"{host}:{inside}"]
        try:
            return self.podman(*args, self.build.image_id, *command, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            self.podman("rm", "--force", "--time", "0", name, check=False)
            pytest.fail(f"{' '.join(command)} did not finish in the container within {timeout}s")

    def remove_containers(self) -> None:
        for name in self.names:
            self.podman("rm", "--force", "--ignore", "--time", "0", name, check=False)


def runbook_image(workdir: Path) -> RunbookImage:
    """Build (or reuse) the base image and the Runbook image; the build's duration and the
    image's size are printed (pytest -s) and kept in workdir/build.log."""
    require_tools()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    podman = Podman(conf)
    with build_lock():
        started = time.monotonic()
        build_base(podman, workdir)
        base_seconds = time.monotonic() - started
        build = build_image(podman, workdir)
    print(
        f"\nimage {IMAGE}:latest {build.size_bytes / 1e6:.0f} MB; base image "
        f"{base_seconds:.0f} s, make image {build.seconds:.0f} s"
    )
    return RunbookImage(podman, build)
