"""What a drill checks beyond file checksums for the backups that are folders of something:

- Kubernetes objects: every manifest parses, its kind is one Runbook backs up with that
  kind's apiVersion, its name and namespace match its path; then, when the target's API
  server answers, each object is applied with the server's dry run (dryRun=All, forced:
  nothing is written, conflicts with live owners are no fault of the backup).
- Prometheus TSDB: the real `prometheus` binary started on the restored data dir (a free
  port of 127.0.0.1, retention off so old blocks are not deleted), asked which series the
  blocks hold over their time range, then stopped.
Each returns named checks; the drill decides (tasks/drills/steps.py).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from runbook.catalog import DrillCheck
from runbook.config import Config, KubernetesObjectsTarget

SERVE_TIMEOUT = 120.0  # seconds for prometheus to load the blocks and answer /-/ready


# --- Kubernetes objects ----------------------------------------------------------------------


def check_manifests(tree: Path) -> tuple[list[DrillCheck], list[dict[str, Any]]]:
    """Parse every <namespace>/<Kind>/<name>.yaml; (checks, the objects that parsed)."""
    from runbook.systems.kubernetes_objects import KINDS  # noqa: PLC0415 - lazy client

    problems, objects = [], []
    files = sorted(tree.rglob("*.yaml"))
    for path in files:
        relative = path.relative_to(tree)
        try:
            obj = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            problems.append(f"{relative}: not YAML ({str(exc).splitlines()[0]})")
            continue
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        if not isinstance(meta, dict):
            problems.append(f"{relative}: not a Kubernetes object")
            continue
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        expected = (relative.parts[0], kind, f"{meta.get('name')}.yaml")
        if kind not in KINDS:
            problems.append(f"{relative}: kind {kind!r} is not one Runbook backs up")
        elif api_version != KINDS[kind][2]:
            problems.append(f"{relative}: apiVersion {api_version!r}, expected {KINDS[kind][2]}")
        elif (meta.get("namespace"), *expected[1:]) != relative.parts or not meta.get("name"):
            problems.append(f"{relative}: holds {kind} {meta.get('namespace')}/{meta.get('name')}")
        else:
            objects.append(obj)
    ok = bool(files) and not problems
    detail = f"{len(objects)} of {len(files)} manifests parse as the object their path names" + (
        f"; {'; '.join(problems[:5])}" if problems else ""
    )
    return [DrillCheck(name="manifests", ok=ok, detail=detail)], objects


def dry_run_apply(
    config: Config, target: KubernetesObjectsTarget, objects: list[dict[str, Any]]
) -> list[DrillCheck]:
    """Each object applied with the server's dry run into the target's cluster (nothing is
    written); when the API server does not answer, one check says it was not checked."""
    from runbook.systems.kubernetes import (  # noqa: PLC0415 - lazy client
        KubernetesApiError,
        KubernetesUnreachable,
    )
    from runbook.systems.kubernetes_objects import ObjectReader  # noqa: PLC0415

    cluster = next(t for t in config.targets.kubernetes if t.name == target.cluster)
    refused: list[str] = []
    try:
        with ObjectReader.connect(cluster) as reader:
            reader.version()
            for obj in objects:
                meta = obj["metadata"]
                try:
                    reader.apply(obj, force=True, dry_run=True)
                except KubernetesApiError as exc:  # the message names fields, never Secret data
                    what = f"{obj['kind']} {meta['namespace']}/{meta['name']}"
                    reason = str(exc) if obj["kind"] != "Secret" else f"HTTP {exc.status}"
                    refused.append(f"{what}: {reason}")
    except KubernetesUnreachable as exc:
        detail = f"not checked: the API server of cluster {cluster.name!r} is unreachable ({exc})"
        return [DrillCheck(name="server dry run", ok=True, detail=detail)]
    detail = (
        f"{len(objects) - len(refused)} of {len(objects)} objects accepted by cluster "
        f"{cluster.name!r} (dryRun=All, nothing written)"
        + (f"; refused: {'; '.join(refused[:5])}" if refused else "")
    )
    return [DrillCheck(name="server dry run", ok=not refused, detail=detail)]


# --- Prometheus TSDB -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _blocks(data_dir: Path) -> list[dict[str, Any]]:
    metas = []
    for meta in sorted(data_dir.glob("*/meta.json")):
        try:
            metas.append(json.loads(meta.read_text()))
        except ValueError:
            continue  # a damaged meta.json is the checksum check's finding
    return metas


def serve_tsdb(data_dir: Path, workdir: Path) -> list[DrillCheck]:
    """Start prometheus on the restored data dir, ask for the series of its blocks, stop it."""
    binary = shutil.which("prometheus")
    if binary is None:
        detail = "the prometheus binary is not installed (apt-get install prometheus)"
        return [DrillCheck(name="prometheus serves the snapshot", ok=False, detail=detail)]
    blocks = _blocks(data_dir)
    if not blocks:
        detail = "the restored data dir holds no block (no meta.json)"
        return [DrillCheck(name="prometheus serves the snapshot", ok=False, detail=detail)]
    start = min(b["minTime"] for b in blocks) / 1000
    end = max(b["maxTime"] for b in blocks) / 1000
    in_blocks = sum(int((b.get("stats") or {}).get("numSeries") or 0) for b in blocks)
    config = workdir / "prometheus-drill.yml"
    config.write_text("global:\n  scrape_interval: 1h\nscrape_configs: []\n")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = workdir / "prometheus-drill.log"
    args = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=100y",  # old blocks are what the drill is about
    ]
    started = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        version = _wait_ready(proc, url)
        if version is None:
            tail = log_path.read_text(errors="replace")[-300:].strip().replace("\n", " | ")
            detail = f"prometheus did not become ready on {url}: {tail}"
            return [DrillCheck(name="prometheus serves the snapshot", ok=False, detail=detail)]
        ready = time.monotonic() - started
        answer = httpx.get(
            f"{url}/api/v1/series",
            params={"match[]": '{__name__=~".+"}', "start": start, "end": end},
            timeout=60,
        ).json()
        series = (answer.get("data") or []) if answer.get("status") == "success" else []
        names = sorted({s.get("__name__", "") for s in series})
        ok = bool(series)
        detail = (
            f"prometheus {version} started on the restored data dir in {ready:.1f}s and serves "
            f"{len(series)} series ({len(names)} metrics, e.g. {', '.join(names[:3]) or '-'}) "
            f"from {len(blocks)} block(s) holding {in_blocks} series"
            if ok
            else f"prometheus {version} answered no series over the blocks' time range: {answer}"
        )
        return [DrillCheck(name="prometheus serves the snapshot", ok=ok, detail=detail[:1000])]
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _wait_ready(proc: subprocess.Popen[bytes], url: str) -> str | None:
    """prometheus's version once /-/ready answers; None when it exits or takes too long."""
    deadline = time.monotonic() + SERVE_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                info = httpx.get(f"{url}/api/v1/status/buildinfo", timeout=5).json()
                return str((info.get("data") or {}).get("version") or "?")
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return None
