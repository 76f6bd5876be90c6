"""The fake Kubernetes API (tests/support/fake_apis.py) plus batch/v1 Jobs, as a Prefect
Kubernetes worker creates them: POST .../namespaces/{ns}/jobs answers the Job with its
generated name and uid (201), GET reads it back. Like kube-apiserver, a Job for a namespace
that does not exist is 404 and a manifest the Job schema refuses is 422 (checked with
kubernetes-validate's schemas of Kubernetes 1.37, strict: unknown fields are errors)."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import kubernetes_validate
import pytest

from tests.support.fake_apis import FakeKubernetes, Request, Response, _status, _uid, ago

KUBERNETES_VERSION = "1.37.0"
_JOBS = re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs(?:/([^/]+))?$")


# prefect-kubernetes puts these two Job fields in the pod spec of every Job and refuses a
# template without them there (KubernetesWorkerJobConfiguration._validate_job_manifest);
# kube-apiserver drops such unknown fields with a warning (fieldValidation=Warn, the default
# for API clients), so they are the one strictness exception, and only there.
PREFECT_POD_SPEC_EXTRAS = ("parallelism", "completions")


def validate_manifest(manifest: dict[str, Any]) -> list[str]:
    """What kubernetes-validate (strict) says about one manifest (empty: valid)."""
    manifest = json.loads(json.dumps(manifest))
    if manifest.get("kind") == "Job":
        pod_spec = manifest.get("spec", {}).get("template", {}).get("spec", {})
        for name in PREFECT_POD_SPEC_EXTRAS:
            pod_spec.pop(name, None)
    try:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(str(p) for p in exc.path)
        return [f"{manifest.get('kind')} {where}: {exc.message}"]
    return []


@dataclass
class FakeKubernetesJobs(FakeKubernetes):
    jobs: list[dict[str, Any]] = field(default_factory=list)  # as created, with their metadata

    def answer(self, request: Request) -> Response | None:
        match = _JOBS.match(request.path)
        if match is None:
            return super().answer(request)
        if self.token is not None and request.headers.get("authorization") != (
            f"Bearer {self.token}"
        ):
            return 401, _status(401, "Unauthorized", "Unauthorized"), {}
        namespace, name = match.groups()
        if request.method == "POST" and name is None:
            return self._create(namespace, request.json())
        if request.method == "GET" and name is not None:
            for job in self.jobs:
                if job["metadata"]["namespace"] == namespace and job["metadata"]["name"] == name:
                    return 200, job, {}
            details = {"name": name, "group": "batch", "kind": "jobs"}
            return 404, _status(404, "NotFound", f'jobs.batch "{name}" not found', details), {}
        return None

    def _create(self, namespace: str, job: dict[str, Any]) -> Response:
        if namespace not in self.namespaces:
            message = f'namespaces "{namespace}" not found'
            return 404, _status(404, "NotFound", message, {"name": namespace}), {}
        problems = validate_manifest(job)
        if problems:
            message = f"Job.batch is invalid: {'; '.join(problems)}"
            return 422, _status(422, "Invalid", message, {"kind": "Job", "group": "batch"}), {}
        meta = job.setdefault("metadata", {})
        if meta.get("namespace", namespace) != namespace:
            message = "the namespace of the provided object does not match the namespace sent"
            return 400, _status(400, "BadRequest", message), {}
        name = meta.get("name") or meta["generateName"] + secrets.token_hex(3)[:5]
        meta.update(
            name=name,
            namespace=namespace,
            uid=_uid("job", namespace, name),
            resourceVersion="48301",
            generation=1,
            creationTimestamp=ago(timedelta(0)),
        )
        job["status"] = {}
        self.jobs.append(json.loads(json.dumps(job)))
        return 201, job, {}


@pytest.fixture
def fake_kubernetes_jobs() -> Iterator[FakeKubernetesJobs]:
    fake = FakeKubernetesJobs()
    fake.start()
    yield fake
    fake.stop()
