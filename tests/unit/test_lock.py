"""The environment under test is the locked one (constraints.txt), and the lock keeps what
Prefect 3.8.8 needs: FastAPI < 0.151 (its server dies at import otherwise) and SQLAlchemy < 2.1
(its scheduler never creates a run otherwise; tests/e2e/test_schedules.py proves the runs)."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, pinned = line.partition("==")
            assert pinned, f"constraints.txt: {line!r} is not pinned with =="
            pins[re.sub(r"[-_.]+", "-", name).lower()] = pinned
    return pins


def test_the_environment_is_the_locked_one():
    wrong = {}
    for name, pinned in locked().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            continue  # platform-specific pins (a wheel this machine does not need)
        if Version(installed) != Version(pinned):
            wrong[name] = (installed, pinned)
    assert wrong == {}, "installed != constraints.txt (run `make test` / `make lock`)"


def test_the_lock_satisfies_pyproject_and_what_prefect_needs():
    import tomllib

    pins = locked()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    requirements += [Requirement(r) for r in project["optional-dependencies"]["dev"]]
    for requirement in requirements:
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in pins, f"{name} is not in constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, pyproject wants {requirement}"
        )
    assert Version(pins["prefect"]) == Version("3.8.8")
    assert Version(pins["sqlalchemy"]) < Version("2.1")
    assert Version(pins["fastapi"]) < Version("0.151")
