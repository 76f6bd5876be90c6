"""The steps a target's restore runs before and after it (`targets.*.restore.pre/post`): HTTP
calls (tasks/maintenance/mode.py's call_hook) and commands (an argument list, a timeout, extra
environment: runbook 004's `docker-compose stop` / `start`). Each result names the step; env
values and header values are secrets and never appear in one."""

from __future__ import annotations

import os
import subprocess
import time

from runbook.catalog import RestoreCheck
from runbook.config import RestoreHook
from runbook.secrets import describe_url, redact
from tasks.maintenance.mode import ModeError, call_hook


def run_command(hook: RestoreHook) -> str:
    """Run a command step; raises RuntimeError (secrets redacted) unless it exits 0."""
    env = {**os.environ, **{k: v.get_secret_value() for k, v in hook.env.items()}}
    secrets = [v.get_secret_value() for v in hook.env.values()]
    started = time.monotonic()
    try:
        done = subprocess.run(
            hook.command,
            env=env,
            cwd=hook.cwd,
            capture_output=True,
            text=True,
            timeout=hook.timeout.total_seconds(),
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"did not finish within {hook.timeout.total_seconds():g}s") from None
    except OSError as exc:
        raise RuntimeError(f"could not start: {exc.strerror or exc}") from None
    seconds = time.monotonic() - started
    if done.returncode != 0:
        tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise RuntimeError(redact(f"exit {done.returncode}: {tail}", secrets)[:500])
    return f"exit 0 in {seconds:.1f}s"


def hook_label(hook: RestoreHook) -> str:
    """What the step is called in results: its name, its command, or its call (no secret)."""
    if hook.name:
        return hook.name
    if hook.command is not None:
        return " ".join(hook.command)
    return f"{hook.http.method} {describe_url(hook.http.url)}"


def run_hook(hook: RestoreHook, phase: str) -> RestoreCheck:
    """One step; its failure is a result, never an exception."""
    name = f"{phase}: {hook_label(hook)}"
    try:
        detail = call_hook(hook.http) if hook.http is not None else run_command(hook)
    except (ModeError, RuntimeError) as exc:
        return RestoreCheck(name=name, ok=False, detail=str(exc))
    return RestoreCheck(name=name, ok=True, detail=detail)


def run_hooks(hooks: list[RestoreHook], phase: str, *, stop_at_failure: bool) -> list[RestoreCheck]:
    """The steps in order. Pre steps stop at the first failure (the restore does not start);
    post steps all run whatever happened."""
    results = []
    for hook in hooks:
        result = run_hook(hook, phase)
        results.append(result)
        if stop_at_failure and not result.ok:
            break
    return results
