"""Invoking the `runbook` command in-process for tests."""

from __future__ import annotations

from typer.testing import CliRunner

from runbook.cli import app


def cli(*args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `runbook *args`; unexpected exceptions propagate."""
    result = CliRunner().invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr
