"""What a diagnostics bundle is made of: sections (one per system and target), each collected
under a hard deadline and a size cap, a failure kept as a failed section, never raised; and
the secrets every byte of the bundle is scrubbed of before it is stored or shown.

A section function takes (target, settings) and returns `Collected`: JSON-able data, the
findings a person should read first, and a one-line summary.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, SecretStr

from runbook.secrets import MASK, redact, split_dsn

# Environment variables whose values are treated as secrets wherever they appear.
SECRET_ENV = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE|CREDENTIAL|DSN)", re.I)
MIN_SECRET = 4  # shorter values would mangle ordinary text


@dataclass
class Collected:
    """What a section function gathered (before redaction and the size cap)."""

    data: dict[str, Any]
    summary: str = ""
    findings: list[str] = field(default_factory=list)


class Section(BaseModel):
    """One section of a bundle as stored and reported; `detail` is the summary or the error."""

    name: str  # postgres, redis, docker, kubernetes, host, http, health
    target: str
    ok: bool
    bytes: int = 0  # of the section's file in the bundle (before compression)
    detail: str = ""
    findings: list[str] = []
    seconds: float = 0.0
    truncated: bool = False

    @property
    def filename(self) -> str:
        return f"sections/{self.name}-{self.target}.json"


# --- secrets ---------------------------------------------------------------------------------


def _secret_values(value: Any) -> Iterable[str]:
    """Every SecretStr inside a config model (and the password inside a DSN or URL one)."""
    if isinstance(value, SecretStr):
        raw = value.get_secret_value()
        yield raw
        yield from _embedded_password(raw)
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _secret_values(getattr(value, name))
    elif isinstance(value, dict):
        for item in value.values():
            yield from _secret_values(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _secret_values(item)


def _embedded_password(raw: str) -> Iterable[str]:
    try:
        password = split_dsn(raw)[1]
    except Exception:  # noqa: BLE001 - not a DSN: a URL, a token
        password = None
    if password:
        yield password
    try:
        parts = urlsplit(raw)
        if parts.password:
            yield parts.password
            yield unquote(parts.password)
        if parts.username and parts.password is None and parts.scheme.startswith("redis"):
            yield parts.username  # redis://:token@ and redis://token@ forms
    except ValueError:
        pass


def bundle_secrets(config: Any, environ: dict[str, str] | None = None) -> list[str]:
    """Every secret the config holds (DSNs and their passwords, URLs, tokens, headers, SMTP
    passwords) and the values of secret-looking environment variables, longest first (a
    secret that contains another is masked whole)."""
    env = os.environ if environ is None else environ
    found = set(_secret_values(config))
    found |= {v for k, v in env.items() if SECRET_ENV.search(k)}
    return sorted((s for s in found if s and len(s) >= MIN_SECRET), key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    return redact(text, secrets)


# --- JSON ------------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """Rows from psycopg, docker and psutil as JSON values."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    if isinstance(value, timedelta):
        return round(value.total_seconds(), 3)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(value)
    if isinstance(value, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        return str(value.ip)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


# --- one section, bounded ----------------------------------------------------------------


def render_section(
    name: str, target: str, collected: Collected, secrets: list[str], limit: int, seconds: float
) -> tuple[Section, bytes]:
    """The section's file (pretty JSON, scrubbed) and its record; a file over `limit` bytes is
    cut there, marked as cut, and no longer parses as JSON (the record says so)."""
    document = {
        "section": name,
        "target": target,
        "summary": collected.summary,
        "findings": collected.findings,
        "data": jsonable(collected.data),
    }
    text = scrub(json.dumps(document, indent=1, ensure_ascii=False), secrets)
    data = text.encode()
    truncated = len(data) > limit
    if truncated:
        marker = f"\n... [cut at {limit} bytes of {len(data)}]\n".encode()
        data = data[:limit].decode(errors="ignore").encode() + marker
    section = Section(
        name=name,
        target=target,
        ok=True,
        bytes=len(data),
        detail=scrub(collected.summary, secrets) + (" (cut to size)" if truncated else ""),
        findings=[scrub(f, secrets) for f in collected.findings],
        seconds=round(seconds, 3),
        truncated=truncated,
    )
    return section, data


def failed_section(
    name: str, target: str, error: str, secrets: list[str], seconds: float
) -> tuple[Section, bytes]:
    detail = scrub(error, secrets)
    data = json.dumps(
        {"section": name, "target": target, "error": detail}, indent=1, ensure_ascii=False
    ).encode()
    return (
        Section(
            name=name,
            target=target,
            ok=False,
            bytes=len(data),
            detail=detail,
            seconds=round(seconds, 3),
        ),
        data,
    )


def collect_bounded(
    name: str,
    target: str,
    collect: Callable[[], Collected],
    deadline: float,
    secrets: list[str],
    limit: int,
) -> tuple[Section, bytes]:
    """collect() in a daemon thread; an exception or the deadline makes a failed section (a
    hung system costs the deadline, never the bundle)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["collected"] = collect()
        except BaseException as exc:  # noqa: BLE001 - becomes a failed section
            box["error"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True, name=f"diagnose-{name}-{target}")
    thread.start()
    thread.join(deadline)
    elapsed = time.monotonic() - started
    if thread.is_alive():
        return failed_section(
            name, target, f"no answer within {deadline:g}s (section abandoned)", secrets, elapsed
        )
    if "error" in box:
        exc = box["error"]
        return failed_section(name, target, f"{type(exc).__name__}: {exc}", secrets, elapsed)
    return render_section(name, target, box["collected"], secrets, limit, elapsed)


__all__ = [
    "MASK",
    "Collected",
    "Section",
    "bundle_secrets",
    "collect_bounded",
    "failed_section",
    "jsonable",
    "render_section",
    "scrub",
]
