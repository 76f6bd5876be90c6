"""Keeping secrets out of argv, logs, messages and artifacts."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from psycopg.conninfo import conninfo_to_dict, make_conninfo

MASK = "***"


def split_dsn(dsn: str) -> tuple[str, str | None]:
    """A PostgreSQL DSN -> (conninfo without the password, the password or None).

    The first part is safe for argv and messages; the password goes to PGPASSWORD.
    """
    params = conninfo_to_dict(dsn)
    password = params.pop("password", None)
    return make_conninfo(**params), (str(password) if password else None)


def describe_dsn(dsn: str) -> str:
    """user@host:port/dbname for messages: no password, no other options."""
    params = conninfo_to_dict(dsn)
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    user = params.get("user") or ""
    return f"{user + '@' if user else ''}{host}:{port}/{params.get('dbname', '')}"


def describe_url(url: str) -> str:
    """A URL with its userinfo removed (redis://host:port/0)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every occurrence of each secret (and its URL-encoded form) by ***."""
    for secret in secrets:
        if secret and len(secret) >= 1:
            text = text.replace(secret, MASK)
            encoded = quote(secret, safe="")
            if encoded != secret:
                text = text.replace(encoded, MASK)
    return text


def target_secrets(target: Any) -> list[str | None]:
    """Every secret a backup target's config holds, for `redact`: its DSN or URL whole and the
    password inside it, and a drill server's DSN and password."""
    values: list[str | None] = []
    for secret in (
        getattr(target, "dsn", None),
        getattr(getattr(target, "drill", None), "dsn", None),
    ):
        if secret is not None:
            dsn = secret.get_secret_value()
            try:
                values += [dsn, split_dsn(dsn)[1]]
            except Exception:  # noqa: BLE001 - an unparsable DSN is still redacted whole
                values.append(dsn)
    url = getattr(target, "url", None)
    if url is not None and hasattr(url, "get_secret_value"):
        raw = url.get_secret_value()
        values += [raw, urlsplit(raw).password]
    elif isinstance(url, str):  # an HTTP or Prometheus target's: only its userinfo is secret
        values.append(urlsplit(url).password)
    for value in (getattr(target, "headers", None) or {}).values():  # tokens of HTTP targets
        raw = value.get_secret_value()
        if len(raw) >= 3:  # `X-Debug: 1` is no secret, and masking every "1" would garble text
            values.append(raw)
    token = getattr(target, "token", None)  # a Kubernetes target's bearer token
    if token is not None and hasattr(token, "get_secret_value"):
        values.append(token.get_secret_value())
    return values
