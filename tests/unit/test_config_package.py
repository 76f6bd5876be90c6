"""runbook.config is a package split by area; `from runbook.config import X` keeps working for
every model, and reading a config never starts Prefect."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import runbook.config

ROOT = Path(__file__).resolve().parents[2]


def test_every_public_name_of_every_area_is_exported_from_the_package():
    areas = [m.name for m in pkgutil.iter_modules(runbook.config.__path__)]
    assert {"core", "storage", "backups", "targets", "health", "root", "loading"} <= set(areas)
    missing = []
    for area in areas:
        module = importlib.import_module(f"runbook.config.{area}")
        for name, value in vars(module).items():
            defined_here = getattr(value, "__module__", None) == module.__name__
            if name.startswith("_") or not defined_here or not inspect.isclass(value):
                continue
            if getattr(runbook.config, name, None) is not value:
                missing.append(f"{area}.{name}")
    assert missing == []
    assert all(hasattr(runbook.config, name) for name in runbook.config.__all__)


def test_check_config_does_not_import_prefect():
    code = (
        "import json, sys\n"
        "from typer.testing import CliRunner\n"
        "from runbook.cli import app\n"
        "result = CliRunner().invoke(app, ['check-config', '--config', sys.argv[1], '--json'])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'prefect')\n"
        "print(json.dumps({'code': result.exit_code, 'loaded': loaded}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "runbook.example.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    )
    assert json.loads(out.stdout.splitlines()[-1]) == {"code": 0, "loaded": []}
