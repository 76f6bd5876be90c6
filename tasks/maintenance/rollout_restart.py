"""rollout_restart: runbook 002's nightly pod restart cronjob, as `kubectl rollout restart`
does it, on each Kubernetes target of the window that `rollout_restart.targets` names,
through the official client (runbook/systems/kubernetes.py).

- measure: the chosen deployments (by namespace/name, and those a label selector matches),
  each read for its replicas and rollout status; a named one that does not exist is a fact.
- plan (pure): one action per deployment: set `kubectl.kubernetes.io/restartedAt` on its pod
  template, so the controller replaces its pods one by one under its own rollout strategy
  (maxUnavailable/maxSurge). A deployment already mid-rollout or scaled to 0 is skipped with
  the reason; a named one that does not exist fails.
- apply: PATCH the annotation (a strategic merge patch, as kubectl sends), then read the
  rollout status every `poll` until it is complete as `kubectl rollout status` judges it (the
  controller saw the new generation, every replica updated and available, no old one left),
  or report it `stuck` (its progress deadline passed, or `timeout` did). After: generation,
  updated/available replicas, seconds waited, the restartedAt value.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from runbook.catalog.db import utcnow
from runbook.catalog.maintenance import Figure, MaintenanceAction, Outcome
from runbook.config import KubernetesTarget, MaintenanceSettings
from runbook.config.maintenance import RolloutSelection
from runbook.systems.kubernetes import Cluster, KubernetesApiError
from tasks.maintenance.procedure import MeasureContext
from tasks.maintenance.targets import KUBERNETES, KubernetesSession

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


class RolloutStuck(RuntimeError):
    """The rollout did not become available in time (or passed its progress deadline)."""


@dataclass(frozen=True)
class DeploymentFact:
    namespace: str
    name: str
    found: bool
    replicas: int = 0
    status: dict[str, Any] = field(default_factory=dict)
    generation: int = 0
    restarted_at: str | None = None  # the annotation a previous restart left

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class RolloutFacts:
    now: datetime
    deployments: list[DeploymentFact]


@dataclass(frozen=True)
class RolloutState:
    """Where a rollout stands, as `kubectl rollout status` reads a deployment."""

    done: bool
    stuck: bool
    message: str
    figures: dict[str, Figure]


def rollout_state(deployment: dict[str, Any]) -> RolloutState:
    """Pure: kubectl's DeploymentStatusViewer on one Deployment."""
    meta, spec = deployment.get("metadata") or {}, deployment.get("spec") or {}
    status = deployment.get("status") or {}
    generation = int(meta.get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0)
    replicas = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
    total = int(status.get("replicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    figures: dict[str, Figure] = {
        "generation": generation,
        "observed_generation": observed,
        "replicas": replicas,
        "updated_replicas": updated,
        "available_replicas": available,
    }
    if generation > observed:
        return RolloutState(False, False, "waiting for the controller to see the change", figures)
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and (
            condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            return RolloutState(
                False, True, "progress deadline exceeded (progressDeadlineSeconds)", figures
            )
    if updated < replicas:
        message = f"{updated} of {replicas} new replicas updated"
        return RolloutState(False, False, message, figures)
    if total > updated:
        message = f"{total - updated} old replicas pending termination"
        return RolloutState(False, False, message, figures)
    if available < updated:
        message = f"{available} of {updated} updated replicas available"
        return RolloutState(False, False, message, figures)
    return RolloutState(True, False, f"{available} of {replicas} replicas available", figures)


def _fact(deployment: dict[str, Any]) -> DeploymentFact:
    meta, spec = deployment.get("metadata") or {}, deployment.get("spec") or {}
    template = (spec.get("template") or {}).get("metadata") or {}
    return DeploymentFact(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        found=True,
        replicas=int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1),
        status=dict(deployment.get("status") or {}),
        generation=int(meta.get("generation") or 0),
        restarted_at=(template.get("annotations") or {}).get(RESTARTED_AT),
    )


def chosen_deployments(
    cluster: Cluster, selection: RolloutSelection, target: KubernetesTarget
) -> list[DeploymentFact]:
    """The deployments `selection` names and matches, each once, by namespace/name."""
    found: dict[str, DeploymentFact] = {}
    for ref in selection.deployments:
        namespace, name = ref.split("/", 1)
        try:
            found[ref] = _fact(cluster.deployment(namespace, name))
        except KubernetesApiError as exc:
            if exc.status != 404:
                raise
            found[ref] = DeploymentFact(namespace, name, found=False)
    if selection.selector is not None:
        namespaces: list[str | None] = list(selection.namespaces or target.namespaces) or [None]
        for namespace in namespaces:
            for deployment in cluster.deployments(namespace, selection.selector):
                fact = _fact(deployment)
                found.setdefault(fact.ref, fact)
    return [found[ref] for ref in sorted(found)]


def restart_patch(at: datetime) -> dict[str, Any]:
    """What `kubectl rollout restart` sends: the pod template annotated with the time."""
    stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}


def wait_for_rollout(
    cluster: Cluster, namespace: str, name: str, timeout: float, poll: float
) -> tuple[RolloutState, float]:
    """Read the deployment every `poll` seconds until its rollout is done; RolloutStuck when
    it passes its progress deadline or `timeout`. Returns the final state and seconds waited."""
    began = time.monotonic()
    while True:
        state = rollout_state(cluster.deployment(namespace, name))
        waited = time.monotonic() - began
        if state.done:
            return state, waited
        if state.stuck:
            raise RolloutStuck(f"stuck: {state.message} after {waited:.0f} s")
        if waited >= timeout:
            raise RolloutStuck(
                f"stuck: {state.message} after {timeout:g} s (rollout_restart.timeout)"
            )
        time.sleep(min(poll, max(timeout - waited, 0.01)))


class RolloutRestart:
    name: ClassVar[str] = "rollout_restart"
    destructive: ClassVar[bool] = True  # pods are replaced (one at a time, by the controller)
    kinds: ClassVar[tuple[str, ...]] = (KUBERNETES,)
    remeasure: ClassVar[bool] = False  # a restart is no threshold: a new plan proposes it again

    def measure(self, context: MeasureContext) -> RolloutFacts:
        session: KubernetesSession = context.session
        selection = context.settings.rollout_restart.targets.get(session.target.name)
        if selection is None:
            return RolloutFacts(utcnow(), [])
        return RolloutFacts(
            utcnow(), chosen_deployments(session.cluster, selection, session.target)
        )

    def plan(
        self, facts: RolloutFacts, settings: MaintenanceSettings, target: KubernetesTarget
    ) -> list[MaintenanceAction]:
        timeout = settings.rollout_restart.timeout.total_seconds()
        actions = []
        for deployment in facts.deployments:
            before: dict[str, Figure] = {
                "namespace": deployment.namespace,
                "name": deployment.name,
                "previous_restarted_at": deployment.restarted_at,
            }
            error = None
            outcome = Outcome.PLANNED
            if not deployment.found:
                error = "no such deployment (rollout_restart.targets)"
                outcome = Outcome.FAILED
                reason = f"restart {deployment.ref}"
            else:
                state = rollout_state(
                    {
                        "metadata": {"generation": deployment.generation},
                        "spec": {"replicas": deployment.replicas},
                        "status": deployment.status,
                    }
                )
                before.update(state.figures)
                reason = f"nightly restart of {deployment.ref}: {state.message}"
                if deployment.replicas == 0:
                    error, outcome = "scaled to 0: no pods to restart", Outcome.SKIPPED
                elif not state.done:
                    error = f"a rollout is already under way ({state.message})"
                    outcome = Outcome.SKIPPED
            actions.append(
                MaintenanceAction(
                    procedure=self.name,
                    target=target.name,
                    object=f"deployment {deployment.ref}",
                    statement=f"kubectl rollout restart deployment/{deployment.name} "
                    f"-n {deployment.namespace}",
                    reason=reason,
                    destructive=True,
                    estimate_seconds=timeout,
                    before=before,
                    outcome=outcome,
                    error=error,
                )
            )
        return actions

    def apply(self, session: KubernetesSession, action: MaintenanceAction) -> dict[str, Figure]:
        settings = session.settings.rollout_restart
        namespace, name = str(action.before["namespace"]), str(action.before["name"])
        patch = restart_patch(utcnow())
        patched = session.cluster.patch_deployment(namespace, name, patch)
        stamp = patch["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
        annotations = ((patched.get("spec") or {}).get("template") or {}).get("metadata") or {}
        if (annotations.get("annotations") or {}).get(RESTARTED_AT) != stamp:
            raise RolloutStuck("the API server did not keep the restartedAt annotation")
        state, waited = wait_for_rollout(
            session.cluster,
            namespace,
            name,
            settings.timeout.total_seconds(),
            settings.poll.total_seconds(),
        )
        return {**state.figures, "restarted_at": stamp, "waited_seconds": round(waited, 1)}
