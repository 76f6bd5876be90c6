"""Sending a message through a notification route's channel: a JSON POST (Slack-compatible or
generic webhooks) or an email over SMTP. Errors name the route and are typed: `NotSent`
(network, 5xx, 429, timeouts: worth retrying) or `Refused` (a wrong password, URL or key:
never retried). URLs, keys and passwords are secrets: they never appear in an error.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage

import httpx

from runbook.config import Route
from runbook.errors import PermanentError, TransientError


class NotSent(TransientError):
    """A route's channel did not answer (network, 5xx, 429, a timeout): worth retrying."""


class Refused(PermanentError):
    """A route's channel refused the message (wrong password, URL or key): never retried."""


def post_json(route: str, url: str, payload: dict, timeout: float) -> None:
    try:
        response = httpx.post(url, json=payload, timeout=timeout)
    except httpx.HTTPError as exc:
        # The URL is a secret: name the route and the kind of failure only.
        raise NotSent(f"route {route}: webhook not reached ({type(exc).__name__})") from None
    if response.status_code >= 300:
        message = f"route {route}: webhook answered HTTP {response.status_code}"
        if response.status_code in (408, 429) or response.status_code >= 500:
            raise NotSent(message)
        raise Refused(message)  # a wrong URL or key: retrying cannot help


def send_email(route: Route, message: EmailMessage) -> None:
    """SMTP with STARTTLS (smtp://) or TLS from the first byte (smtps://), certificate
    verified, then AUTH when a username is set. Refuses to log in or send in clear text unless
    `starttls: false` says so."""
    email = route.email
    assert email is not None
    context = ssl.create_default_context(cafile=str(email.ca_file) if email.ca_file else None)
    if not email.verify_tls:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    timeout = email.timeout.total_seconds()
    try:
        if email.implicit_tls:
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                email.host, email.port, timeout=timeout, context=context
            )
        else:
            client = smtplib.SMTP(email.host, email.port, timeout=timeout)
        with client:
            client.ehlo()
            if not email.implicit_tls and email.starttls:
                client.starttls(context=context)
                client.ehlo()
            if email.username:
                password = email.password.get_secret_value() if email.password else ""
                client.login(email.username, password)
            client.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        text = str(exc)
        if email.password is not None:
            text = text.replace(email.password.get_secret_value(), "***")
        message = (
            f"route {route.name}: mail via {email.host}:{email.port} failed: "
            f"{type(exc).__name__}: {text}"
        )
        permanent = (
            smtplib.SMTPAuthenticationError,
            smtplib.SMTPNotSupportedError,
            smtplib.SMTPRecipientsRefused,
            smtplib.SMTPSenderRefused,
            ssl.SSLCertVerificationError,
        )
        raise (Refused if isinstance(exc, permanent) else NotSent)(message) from None
