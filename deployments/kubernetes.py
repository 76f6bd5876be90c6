"""The Kubernetes work pool: what `runbook deploy --pool kubernetes` checks and writes.

On a Kubernetes pool every flow run is a new pod whose disk is gone when the Job ends, so the
catalog must be PostgreSQL (its advisory locks are the per-target locks), the backups must
go to S3 and so must Prefect's results (result_storage, runbook/results.py); the pod runs
Runbook's image (`make image`, pushed) in a namespace of the cluster, reads runbook.yaml from a
ConfigMap and every ${VAR} of it from a Secret by reference.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import yaml

from deployments.spec import CODE_ROOT
from runbook.config.loading import _ENV_REF
from runbook.config.storage import LocalStorage
from runbook.errors import RunbookError

POOLS = ("process", "kubernetes")
BASE_JOB_TEMPLATE = CODE_ROOT / "infra" / "kubernetes" / "base-job-template.json"
SECRET = "runbook-secrets"  # the Secret holding the values of runbook.yaml's ${VAR}s
IMAGE_ENV = "RUNBOOK_IMAGE"
NAMESPACE_ENV = "RUNBOOK_NAMESPACE"
DEFAULT_NAMESPACE = "runbook"
IMAGE_HOME = "/opt/runbook"  # where the image holds the code (infra/docker: RUNBOOK_HOME)
# Prefect's setting runbook deploy sets when runbook.yaml has result_storage (runbook/results.py;
# not imported from there: check-config --pool kubernetes does not load Prefect).
RESULTS_SETTING = "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"
# The AWS credential variables a pod may read from the Secret (all optional: a role will do).
AWS_CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# Set by the worker or the image, never by a Secret.
_NOT_SECRETS = {"RUNBOOK_CONFIG", "RUNBOOK_HOME", "RUNBOOK_TIMEZONE", "HOME", "PATH"}


class KubernetesPoolError(RunbookError):
    """runbook.yaml or the options cannot work on a Kubernetes pool."""


def pool_problems(config: Any, image: str | None, check_image: bool = True) -> list[str]:
    """Why this config (and image) cannot run on a Kubernetes pool (empty: it can)."""
    problems = []
    if config.catalog.startswith("sqlite:"):
        problems.append(
            f"catalog: {config.catalog} is SQLite, a file on the pod's disk, which is gone when "
            "the flow run's Job ends (and each run is another pod); use a shared PostgreSQL "
            "catalog: catalog: postgresql+psycopg://runbook@db.example/runbook"
        )
    if isinstance(config.storage, LocalStorage):
        problems.append(
            f"storage.kind: local ({config.storage.path}) is a folder on the pod's disk, which "
            "is gone when the flow run's Job ends; use S3 storage (storage: {kind: s3, bucket: "
            "...})"
        )
    if config.result_storage is None:
        problems.append(
            "result_storage: not set, so Prefect keeps each flow's result on the pod's disk "
            "(PREFECT_HOME/storage), which is gone when the flow run's Job ends; set "
            "result_storage: {kind: s3, bucket: ...} (credentials from the pod's environment)"
        )
    if check_image and not image:
        problems.append(
            f"image: no image is configured: pass --image REGISTRY/runbook:TAG or set "
            f"${IMAGE_ENV} (build it with make image and push it where the cluster pulls from)"
        )
    return problems


def check_pool(config: Any, image: str | None, check_image: bool = True) -> None:
    problems = pool_problems(config, image, check_image)
    if problems:
        raise KubernetesPoolError("a Kubernetes pool cannot run this: " + "; ".join(problems))


def env_references(config_file: Path) -> dict[str, bool]:
    """The ${VAR}s runbook.yaml uses in its values -> whether each has a default (${VAR:-x}).
    Comments do not count: only what the config loader expands."""
    data = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
    found: dict[str, bool] = {}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            for match in _ENV_REF.finditer(value):
                name = match.group(1)
                if name:
                    found[name] = found.get(name, True) and match.group(2) is not None

    walk(data)
    return found


def secret_env(config_file: Path, secret: str = SECRET) -> list[dict[str, Any]]:
    """One EnvVar per ${VAR} of runbook.yaml, read from `secret` by reference (never a value);
    a ${VAR:-default} is optional: the pod starts without it and the default applies."""
    entries = []
    for name, has_default in sorted(env_references(config_file).items()):
        if name in _NOT_SECRETS:
            continue
        ref: dict[str, Any] = {"name": secret, "key": name}
        if has_default:
            ref["optional"] = True
        entries.append({"name": name, "valueFrom": {"secretKeyRef": ref}})
    return entries


def kubernetes_pool(
    pool: dict[str, Any],
    config_file: Path,
    image: str,
    namespace: str,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """prefect.yaml's Kubernetes pool definition with the image, the namespace, the Secret
    references of this config and `extra_env` (plain, non-secret values) filled in. With
    result storage (PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK in `extra_env`) the pod may also
    read the AWS credential variables from the Secret (optional: a role will do)."""
    pool = copy.deepcopy(pool)
    variables = pool.setdefault("job_variables", {})
    variables["image"] = image
    variables["namespace"] = namespace
    extra_env = extra_env or {}
    plain = [e for e in variables.get("env", []) if "valueFrom" not in e]
    plain = [e for e in plain if e["name"] not in extra_env]
    plain += [{"name": name, "value": value} for name, value in extra_env.items()]
    secrets = secret_env(config_file)
    if RESULTS_SETTING in extra_env:
        named = {e["name"] for e in secrets}
        secrets += [
            {
                "name": name,
                "valueFrom": {"secretKeyRef": {"name": SECRET, "key": name, "optional": True}},
            }
            for name in AWS_CREDENTIAL_ENV
            if name not in named
        ]
    variables["env"] = [*plain, *secrets]
    return pool


def base_job_template() -> dict[str, Any]:
    try:
        return json.loads(BASE_JOB_TEMPLATE.read_text())
    except FileNotFoundError:
        raise KubernetesPoolError(
            f"{BASE_JOB_TEMPLATE}: the base job template of the Kubernetes pool is missing "
            "(run runbook deploy --pool kubernetes from a checkout of Runbook)"
        ) from None


def image_and_namespace(image: str | None, namespace: str | None) -> tuple[str | None, str]:
    """The options, else $RUNBOOK_IMAGE / $RUNBOOK_NAMESPACE, else (None, "runbook")."""
    return (
        image or os.environ.get(IMAGE_ENV) or None,
        namespace or os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE,
    )
