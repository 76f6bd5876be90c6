"""Runbook: a team's operations runbook as scheduled, retried, observable Prefect flows."""

__version__ = "0.1.0"
