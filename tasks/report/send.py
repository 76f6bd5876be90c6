"""Sending the daily report through the routes configured for it: the markdown as a Slack
message (cut to what Slack shows), as JSON for a generic webhook, or as an email."""

from __future__ import annotations

from email.message import EmailMessage

from runbook.channels import post_json, send_email
from runbook.config import Route

SLACK_TEXT = 3500  # Slack cuts longer messages; the file and the artifact have all of it


def send_report(route: Route, subject: str, markdown: str) -> None:
    if route.slack is not None:
        text = markdown if len(markdown) <= SLACK_TEXT else markdown[:SLACK_TEXT] + "\n..."
        post_json(
            route.name,
            route.slack.url.get_secret_value(),
            {"text": f"*{subject}*\n{text}"},
            route.slack.timeout.total_seconds(),
        )
    elif route.webhook is not None:
        post_json(
            route.name,
            route.webhook.url.get_secret_value(),
            {"event": "runbook-daily-report", "summary": subject, "markdown": markdown},
            route.webhook.timeout.total_seconds(),
        )
    elif route.email is not None:
        message = EmailMessage()
        message["From"], message["To"] = route.email.from_, ", ".join(route.email.to)
        message["Subject"] = f"{route.email.subject_prefix} {subject}".strip()
        message.set_content(markdown)
        send_email(route, message)
