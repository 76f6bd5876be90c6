"""The README's commands work as written: every `.venv/bin/runbook ...` line names a real
command with real options, every deployment it runs exists, every make target is defined."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deployments.spec import declared_deployments, load_flow
from runbook.cli import app

ROOT = Path(__file__).resolve().parents[2]  # the checkout

README = (ROOT / "README.md").read_text()


def shell_lines() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", README, flags=re.S)
    lines = []
    for block in blocks:
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line:
                lines.append(line)
    return lines


def runbook_commands() -> list[list[str]]:
    found = []
    for line in shell_lines():
        words = shlex.split(line)
        while words and "=" in words[0] and not words[0].startswith("-"):
            words = words[1:]  # VAR=value prefixes
        if words and words[0] == ".venv/bin/runbook":
            found.append(words[1:])
    return found


def test_the_readme_shows_runbook_commands():
    assert len(runbook_commands()) >= 5
    assert "make demo" in shell_lines() and "make test" in shell_lines()


@pytest.mark.parametrize("args", runbook_commands(), ids=" ".join)
def test_each_runbook_command_of_the_readme_parses(args):
    # --help after the arguments: click rejects unknown commands and options before it helps.
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output


def test_each_deployment_the_readme_runs_exists():
    names = {f"{load_flow(d['entrypoint']).name}/{d['name']}" for d in declared_deployments()}
    mentioned = set(re.findall(r"deployment run ([\w-]+/[\w-]+)", README))
    mentioned |= set(re.findall(r"`([\w-]+/[\w-]+-on-demand)`", README))
    assert mentioned and mentioned <= names, mentioned - names


def test_each_make_target_of_the_readme_exists():
    makefile = (ROOT / "Makefile").read_text()
    for target in re.findall(r"`make (\w+)`", README):
        assert re.search(rf"^{target}:", makefile, flags=re.M), target


def test_venv_tools_the_readme_uses_exist():
    venv = Path(ROOT / ".venv" / "bin")
    for line in shell_lines():
        for tool in re.findall(r"\.venv/bin/(\w+)", line):
            assert (venv / tool).exists(), f"README uses .venv/bin/{tool}"
