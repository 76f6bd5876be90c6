"""A real container engine for tests: podman (Debian package) serving the Docker Engine API on a
unix socket, which the official `docker` client talks to as it does to Docker.

Everything lives in one temporary folder of its own (storage with the vfs driver, run state,
file locks, network configs, events), so it never meets another podman on the machine. As
these machines need (shared/NOTES-prefect-gx.md): runc as the runtime, cgroupfs, no default
ulimits. No registry can be reached: the image is a rootfs tar holding the static busybox of
the `busybox-static` package, brought in with `podman import`.

Missing packages are installed (apt-get, as root), as .ci/run does: the tests never skip.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

PACKAGES = ("podman", "runc", "busybox-static")
BUSYBOX = "/bin/busybox"  # busybox-static's: no shared libraries needed inside the image
IMAGE = "localhost/runbook-busybox:1"
PROJECT_LABEL = "com.docker.compose.project"


def _installed(package: str) -> bool:
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() == "install ok installed"


def ensure_installed() -> None:
    """podman, runc and the static busybox, installed with apt-get when missing (as root)."""
    missing = [package for package in PACKAGES if not _installed(package)]
    if not missing:
        return
    if os.geteuid() != 0:
        pytest.fail(
            f"the container tests need the Debian packages {' '.join(missing)}: "
            f"apt-get install {' '.join(missing)} (as root, .ci/run does it)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", *PACKAGES],
        check=True,
        env=env,
        timeout=900,
        stdout=subprocess.DEVNULL,
    )


def containers_conf(folder: Path) -> str:
    return f"""[containers]
default_ulimits = []
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{folder}/events.log"
tmp_dir = "{folder}/tmp"
lock_type = "file"

[network]
network_config_dir = "{folder}/networks"
"""


@dataclass
class Podman:
    """One podman service; `url` is its Docker Engine API (unix://...)."""

    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.folder / "podman.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.folder / "containers.conf")}

    def podman(self, *args: str, timeout: float = 120) -> str:
        """The podman command line on this instance's storage."""
        command = [
            "podman",
            "--root",
            str(self.folder / "root"),
            "--runroot",
            str(self.folder / "run"),
            "--storage-driver",
            "vfs",
            *args,
        ]
        done = subprocess.run(
            command, env=self.env, capture_output=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode()

    def start(self) -> None:
        for sub in ("root", "run", "tmp", "networks"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        (self.folder / "containers.conf").write_text(containers_conf(self.folder))
        self.import_image(IMAGE, {})
        log = (self.folder / "service.log").open("wb")
        self.process = subprocess.Popen(
            [
                "podman",
                "--root",
                str(self.folder / "root"),
                "--runroot",
                str(self.folder / "run"),
                "--storage-driver",
                "vfs",
                "system",
                "service",
                "--time=0",
                self.url,
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with self.client() as client:
                    client.ping()
                return
            except Exception:  # noqa: BLE001 - not up yet
                if self.process.poll() is not None or time.monotonic() > deadline:
                    text = (self.folder / "service.log").read_text(errors="replace")
                    raise RuntimeError(f"podman system service did not start: {text}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        """Remove every container (their processes with them), then stop the service."""
        try:
            if (self.folder / "root").exists():
                self.podman("rm", "--all", "--force", "--time", "0")
        finally:
            if self.process is not None and self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(20)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(10)

    @contextmanager
    def client(self) -> Iterator[docker.DockerClient]:
        client = docker.DockerClient(base_url=self.url, timeout=30)
        try:
            yield client
        finally:
            client.close()

    def import_image(self, reference: str, labels: dict[str, str], extra: bytes = b"") -> str:
        """A busybox image built here (`podman import` of a rootfs tar); `extra` makes its
        content differ, so importing the same reference again leaves the older one dangling.
        Returns the image id (sha256 hex)."""
        rootfs = self.folder / "rootfs.tar"
        with tarfile.open(rootfs, "w") as tar:
            tar.add(BUSYBOX, arcname="bin/busybox")
            link = tarfile.TarInfo("bin/sh")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
            marker = self.folder / "marker"
            marker.write_bytes(extra or b"base")
            tar.add(marker, arcname="etc/marker")
        changes = [arg for k, v in labels.items() for arg in ("--change", f"LABEL {k}={v}")]
        out = self.podman("import", "--quiet", *changes, str(rootfs), reference)
        return out.strip().splitlines()[-1].removeprefix("sha256:")

    def run(
        self, name: str, project: str | None, command: list[str], **kwargs: Any
    ) -> docker.models.containers.Container:
        """A container of the busybox image (no network), labelled with the compose project."""
        labels = {PROJECT_LABEL: project} if project else {}
        labels.update(kwargs.pop("labels", {}))
        with self.client() as client:
            return client.containers.run(
                kwargs.pop("image", IMAGE),
                ["/bin/busybox", *command],
                name=name,
                labels=labels,
                detach=True,
                network_mode=kwargs.pop("network_mode", "none"),
                **kwargs,
            )

    def exited(self, name: str, project: str | None, image: str = IMAGE) -> str:
        """A container that ran `true` and exited; returns its id."""
        container = self.run(name, project, ["true"], image=image)
        container.wait(timeout=30)
        return container.id

    def states(self) -> dict[str, str]:
        """Every container's name -> state, as the engine lists them."""
        with self.client() as client:
            return {c["Names"][0].lstrip("/"): c["State"] for c in client.api.containers(all=True)}

    def reset(self) -> None:
        """Between tests: no containers, networks, volumes or images but the base image."""
        self.podman("rm", "--all", "--force", "--time", "0")
        with self.client() as client:
            for network in client.api.networks():
                if network["Name"] not in ("bridge", "podman"):
                    client.api.remove_network(network["Id"])
            for volume in client.api.volumes().get("Volumes") or []:
                client.api.remove_volume(volume["Name"], force=True)
            for image in client.api.images():
                if IMAGE not in (image.get("RepoTags") or []) and IMAGE not in (
                    image.get("Names") or []
                ):
                    client.api.remove_image(image["Id"], force=True)


@pytest.fixture(scope="session")
def podman_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    """One podman service for the session, started here and stopped at its end."""
    ensure_installed()
    service = Podman(tmp_path_factory.mktemp("podman"))
    try:
        service.start()
        yield service
    finally:
        service.stop()


@pytest.fixture
def podman(podman_service: Podman) -> Iterator[Podman]:
    """The session's podman, emptied before and after the test."""
    podman_service.reset()
    yield podman_service
    podman_service.reset()
