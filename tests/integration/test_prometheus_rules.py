"""infra/prometheus/runbook-rules.yml with the real promtool (Debian's prometheus): the rules
are valid, their unit tests pass, and those unit tests can fail: each rule made to never fire,
or to fire for every series, breaks them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.promql import metric_names

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "infra" / "prometheus"
RULES = FOLDER / "runbook-rules.yml"
TESTS = FOLDER / "runbook-rules.test.yml"


def promtool(*args: str, cwd: Path = FOLDER) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is not installed (apt-get install -y prometheus)")
    return subprocess.run(
        ["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 6 rules found" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    done = promtool("test", "rules", str(TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_readmes_promtool_lines_run_as_written() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    lines = [line for b in blocks for line in b.splitlines() if "promtool " in line]
    assert len(lines) == 2, lines
    if shutil.which("promtool") is None:
        pytest.fail("promtool is not installed (apt-get install -y prometheus)")
    for line in lines:
        done = subprocess.run(
            ["bash", "-c", line], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0 and "SUCCESS" in done.stdout, (line, done.stdout, done.stderr)


def mutations() -> list[tuple[str, str, str]]:
    """(alert, how, expr): the rule never fires (`vector(1) < 0`), or fires for every series of
    its first metric (the bare metric, no condition)."""
    found = []
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            first = re.search(r"runbook_\w+", rule["expr"]).group(0)  # type: ignore[union-attr]
            assert first in metric_names(rule["expr"])
            found.append((rule["alert"], "never", "vector(1) < 0"))
            found.append((rule["alert"], "always", first))
    return found


@pytest.mark.parametrize(("alert", "how", "expr"), mutations(), ids=lambda v: str(v)[:40])
def test_the_unit_tests_catch_a_broken_rule(alert: str, how: str, expr: str, tmp_path) -> None:
    data = yaml.safe_load(RULES.read_text())
    for group in data["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == alert:
                rule["expr"] = expr
    (tmp_path / "runbook-rules.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    shutil.copy(TESTS, tmp_path / "runbook-rules.test.yml")
    assert promtool("check", "rules", "runbook-rules.yml", cwd=tmp_path).returncode == 0
    done = promtool("test", "rules", "runbook-rules.test.yml", cwd=tmp_path)
    assert done.returncode != 0, f"{alert} made to fire {how}: the unit tests still pass"
    assert f"alertname: {alert}" in done.stdout + done.stderr
