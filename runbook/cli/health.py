"""`runbook health`."""

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from runbook.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    ConfigOpt,
    JsonOpt,
    app,
    config_path_of,
    emit_json,
    fail,
    make_console,
    operator_errors,
    plain,
    run_flow,
)


def _health_value(check: Any) -> str:
    """A check's value with its unit, as people read it."""
    display = getattr(check, "display_value", None)
    if display is not None:
        return display() if callable(display) else str(display)
    return "" if check.value is None else str(check.value)


@app.command()
@operator_errors
def health(
    only: Annotated[
        str | None,
        typer.Option(
            "--only",
            help="Comma-separated check kinds: "
            "http, postgres, redis, prometheus, alertmanager, kubernetes, docker, host, logs, "
            "backups, capacity [default: all]",
        ),
    ] = None,
    watch_for: Annotated[
        str | None,
        typer.Option(
            "--watch",
            help="Run the checks again and again for this long (15m, 1h), then give one "
            "verdict and the worst moment",
        ),
    ] = None,
    every: Annotated[str, typer.Option("--every", help="With --watch: time between runs")] = "1m",
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the health checks now. Exit 0 when nothing is critical, 1 when something is
    (with --watch: when any run was critical)."""
    from runbook.config import load_config, parse_duration
    from tasks.health.registry import check_plan, select_kinds

    path = config_path_of(config)
    cfg = load_config(path)
    kinds = select_kinds([only] if only else None)  # unknown kinds fail before Prefect starts
    if not check_plan(cfg, kinds):
        fail(f"{path}: nothing to check for {', '.join(kinds)} (configure targets)")
    if watch_for is not None:
        from tasks.health.watch import check_watch_window

        try:
            duration = parse_duration(watch_for)
        except ValueError as exc:
            fail(f"--watch: {exc}")
        try:
            interval = parse_duration(every)
        except ValueError as exc:
            fail(f"--every: {exc}")
        try:
            check_watch_window(duration, interval)
        except ValueError as exc:  # the message names the option at fault
            fail(str(exc))
        _watch(
            path, kinds if only else [], duration.total_seconds(), interval.total_seconds(), as_json
        )
        return
    from flows.daily_health import daily_health

    _completed, report = run_flow(daily_health, path, only=kinds if only else [])
    if as_json:
        emit_json(
            {
                "status": report.status.value,
                "severity": report.severity,
                "run_id": report.run_id,
                "checks": [c.model_dump(mode="json") for c in report.checks],
                "events": report.events,
            }
        )
    else:
        from rich.table import Table

        from runbook.health import RANK

        colour = {"ok": "green", "warn": "yellow", "critical": "red", "unknown": "magenta"}
        table = Table(
            title=f"Health: {report.status.value}"
            + (f" ({report.severity})" if report.severity else "")
        )
        for column in ("status", "check", "target", "value", "threshold", "message"):
            table.add_column(column, overflow="fold")
        worst_first = sorted(report.checks, key=lambda c: -RANK[c.status])
        for c in worst_first:
            table.add_row(
                f"[{colour[c.status.value]}]{c.status.value}[/]",
                plain(c.check),
                plain(c.target),
                plain(_health_value(c)),
                plain(c.threshold),
                plain(c.message),
            )
        make_console().print(table)
    raise typer.Exit(EXIT_FAILED if report.critical else EXIT_OK)


def _sample_of(report: Any, at: datetime) -> Any:
    from runbook.health import RANK
    from tasks.health.watch import WatchSample

    failing = sorted(
        (c for c in report.checks if c.status.value != "ok"), key=lambda c: -RANK[c.status]
    )
    return WatchSample(
        at=at,
        run_id=report.run_id,
        status=report.status,
        severity=report.severity,
        checks=len(report.checks),
        failing=[f"{c.status.value} {c.check} on {c.target}" for c in failing],
    )


def _moment(sample: Any) -> str:
    level = f" ({sample.severity})" if sample.severity else ""
    what = ", ".join(sample.failing[:5]) or f"all {sample.checks} checks ok"
    more = f" and {len(sample.failing) - 5} more" if len(sample.failing) > 5 else ""
    return (
        f"{sample.at:%Y-%m-%d %H:%M:%S} UTC, run {sample.run_id}: "
        f"{sample.status.value}{level}: {what}{more}"
    )


def _watch(path: str, only: list[str], duration: float, every: float, as_json: bool) -> None:
    """`health --watch`: one flow run per slot, a line per run, then the verdict."""
    from flows.daily_health import daily_health
    from runbook.formatting import human_duration
    from tasks.health.watch import watch

    console = make_console()

    def run_once() -> Any:
        started = datetime.now(UTC)
        _completed, report = run_flow(daily_health, path, only=only)
        sample = _sample_of(report, started)
        if not as_json:
            console.print(plain(_moment(sample)))
        return sample

    outcome = watch(run_once, duration, every)
    if as_json:
        emit_json({"watch": {**outcome.model_dump(mode="json"), "counts": outcome.counts()}})
    else:
        counts = ", ".join(f"{n} {status}" for status, n in outcome.counts().items() if n)
        console.print(
            plain(
                f"Watched {human_duration(timedelta(seconds=duration), exact=True)} every "
                f"{human_duration(timedelta(seconds=every), exact=True)}: "
                f"{len(outcome.runs)} runs ({counts})"
            )
        )
        console.print(plain(f"Verdict: {outcome.summary()}"))
        console.print(plain(f"Worst moment: {_moment(outcome.worst)}"))
    raise typer.Exit(EXIT_FAILED if outcome.status.value == "critical" else EXIT_OK)
