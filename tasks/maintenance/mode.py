"""Maintenance mode: the configured HTTP calls that put the application into maintenance mode
and take it out (runbook 000: POST / DELETE http://localhost:8000/admin/maintenance-mode), and
an Alertmanager silence (API v2) over the window: created at enter with the configured matchers
and endsAt = window end + margin, expired at exit.

Header values are secrets and URLs may carry credentials: neither appears in a message here
(URLs are shown without userinfo and query, failures name the HTTP status only).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from runbook.config import AlertmanagerSilence, HttpCall
from runbook.secrets import describe_url, redact

SILENCE_CREATOR = "runbook"


class ModeError(Exception):
    """A maintenance mode call failed (its message holds no secret)."""


def _headers(headers: Mapping[str, SecretStr]) -> dict[str, str]:
    return {name: value.get_secret_value() for name, value in headers.items()}


def _request(
    method: str,
    url: str,
    headers: Mapping[str, SecretStr],
    timeout: float,
    json: object | None = None,
) -> httpx.Response:
    """One HTTP request; a failure is a ModeError that names the URL without secrets."""
    shown = describe_url(url)
    try:
        response = httpx.request(method, url, headers=_headers(headers), json=json, timeout=timeout)
    except httpx.HTTPError as exc:
        secrets = [v.get_secret_value() for v in headers.values()]
        secrets += [url, urlsplit(url).password]
        detail = redact(f"{type(exc).__name__}: {exc}", secrets)
        raise ModeError(f"{method} {shown}: {detail}") from None
    if response.status_code >= 300:
        raise ModeError(f"{method} {shown} answered HTTP {response.status_code}")
    return response


def call_hook(call: HttpCall) -> str:
    """The application's enter or exit call; returns what was done, for the run's notes."""
    response = _request(call.method, call.url, call.headers, call.timeout.total_seconds())
    return f"{call.method} {describe_url(call.url)}: HTTP {response.status_code}"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def silence_body(
    settings: AlertmanagerSilence, starts_at: datetime, ends_at: datetime, comment: str
) -> dict[str, object]:
    """The v2 `postableSilence`: equality matchers from the config, endsAt = the window's end
    plus the configured margin."""
    return {
        "matchers": [
            {"name": name, "value": value, "isRegex": False, "isEqual": True}
            for name, value in settings.matchers.items()
        ],
        "startsAt": _iso(starts_at),
        "endsAt": _iso(ends_at + settings.margin),
        "createdBy": SILENCE_CREATOR,
        "comment": comment,
    }


def create_silence(
    settings: AlertmanagerSilence, starts_at: datetime, ends_at: datetime, comment: str
) -> str:
    """POST /api/v2/silences; returns the silence id."""
    response = _request(
        "POST",
        f"{settings.url.rstrip('/')}/api/v2/silences",
        settings.headers,
        10.0,
        json=silence_body(settings, starts_at, ends_at, comment),
    )
    try:
        silence_id = response.json()["silenceID"]
    except (ValueError, KeyError, TypeError):
        raise ModeError(
            f"POST {describe_url(settings.url)}/api/v2/silences: no silenceID in the answer"
        ) from None
    return str(silence_id)


def expire_silence(settings: AlertmanagerSilence, silence_id: str) -> None:
    """DELETE /api/v2/silence/{id}: Alertmanager expires it (it stays listed as expired)."""
    _request(
        "DELETE",
        f"{settings.url.rstrip('/')}/api/v2/silence/{silence_id}",
        settings.headers,
        10.0,
    )
