"""The HTTP section: the configured debug endpoints (runbook 000:
/api/v1/debug/performance, /api/v1/analytics/recent-patterns), fetched once each with its own
timeout; the body is kept (JSON when it parses), cut to a few hundred kilobytes."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from runbook.config import DebugEndpoint, DiagnosticsSettings
from runbook.systems.http import plain_headers, redact_url
from tasks.diagnose.sections import Collected

BODY_BYTES = 256 * 1024


def fetch_endpoint(endpoint: DebugEndpoint) -> dict[str, Any]:
    started = time.monotonic()
    with httpx.Client(
        timeout=endpoint.timeout.total_seconds(), verify=endpoint.verify_tls, follow_redirects=False
    ) as client:
        with client.stream("GET", endpoint.url, headers=plain_headers(endpoint.headers)) as reply:
            body = b""
            for chunk in reply.iter_bytes():
                body += chunk
                if len(body) >= BODY_BYTES:
                    break
    text = body[:BODY_BYTES].decode(errors="replace")
    try:
        parsed: Any = json.loads(text)
    except ValueError:
        parsed = text
    return {
        "url": redact_url(endpoint.url),
        "status": reply.status_code,
        "seconds": round(time.monotonic() - started, 3),
        "content_type": reply.headers.get("content-type"),
        "cut": len(body) >= BODY_BYTES,
        "body": parsed,
    }


def collect_http(endpoint: DebugEndpoint, settings: DiagnosticsSettings) -> Collected:
    answer = fetch_endpoint(endpoint)
    findings = []
    if answer["status"] >= 400:
        findings.append(f"debug endpoint {endpoint.name} answered HTTP {answer['status']}")
    summary = f"HTTP {answer['status']} in {answer['seconds']:.2f}s from {answer['url']}"
    return Collected(data=answer, summary=summary, findings=findings)
