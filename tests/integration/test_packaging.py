"""What a wheel of Runbook carries: an installation (the container image, `pip install .`)
finds prefect.yaml and every catalog migration as package data, not beside a source checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_carries_prefect_yaml_and_the_migrations(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("runbook-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "deployments/prefect.yaml" in names
    migrations = {p.name for p in (ROOT / "runbook" / "migrations" / "versions").glob("*.py")}
    assert migrations and {f"runbook/migrations/versions/{m}" for m in migrations} <= names
    assert {"flows/backup.py", "tasks/backups/dump.py", "runbook/systems/postgres.py"} <= names
