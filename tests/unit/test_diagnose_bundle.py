"""Diagnostics bundles: stored and read back like a backup (damage is found, not called good),
kept by their own retention, and scrubbed of every secret the config and environment hold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runbook.config import Config, DiagnosticsSettings
from runbook.storage.local import LocalStorage
from tasks.diagnose.bundle import (
    BundleManifest,
    StoredBundle,
    bundle_folder,
    delete_bundle,
    list_bundles,
    plan_bundle_retention,
    verify_bundle,
    write_bundle,
)
from tasks.diagnose.sections import Collected, Section, bundle_secrets, collect_bounded

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SETTINGS = DiagnosticsSettings()


def header(bundle_id: str, created: datetime = NOW) -> BundleManifest:
    return BundleManifest(
        bundle_id=bundle_id,
        created_at=created,
        key="",
        bytes=0,
        logical_bytes=0,
        sha256="",
        members=[],
        sections=[Section(name="host", target="localhost", ok=True, bytes=5)],
    )


def store(storage: LocalStorage, bundle_id: str, created: datetime = NOW) -> BundleManifest:
    files = [("README.md", b"# hi\n"), ("sections/host-localhost.json", b'{"a": 1}' * 500)]
    return write_bundle(storage, SETTINGS, header(bundle_id, created), files)


def test_a_stored_bundle_reads_back_and_damage_is_named(tmp_path):
    storage = LocalStorage(tmp_path)
    written = store(storage, "20261201T120000Z-aaaaaa")
    assert written.key == "_diagnostics/bundles/20261201T120000Z-aaaaaa/bundle.tar.zst"
    assert written.members == ["README.md", "sections/host-localhost.json"]
    assert verify_bundle(storage, "_diagnostics", written).verified

    path = tmp_path / written.key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    check = verify_bundle(storage, "_diagnostics", written)
    assert not check.verified and any("sha256" in p for p in check.problems)

    path.write_bytes(bytes(data[:-10]))
    check = verify_bundle(storage, "_diagnostics", written)
    assert any(f"{len(data) - 10} bytes stored, {len(data)} written" in p for p in check.problems)

    path.unlink()
    (tmp_path / bundle_folder("_diagnostics", written.bundle_id) / "manifest.json").write_text("{}")
    check = verify_bundle(storage, "_diagnostics", written)
    assert any(p.endswith("bundle.tar.zst: missing") for p in check.problems)
    assert any("not the manifest this bundle wrote" in p for p in check.problems)


def test_bundle_retention_keeps_the_newest_and_the_young():
    bundles = [
        StoredBundle(bundle_id=f"202611{d:02d}T000000Z-00000{d % 10}", created_at=None)
        for d in range(1, 11)
    ]
    now = datetime(2026, 11, 11, tzinfo=UTC)
    plan = {d.bundle_id[:8]: d.action for d in plan_bundle_retention(bundles, 3, 5, now)}
    # newest 3 (10, 9, 8) by count; 6 and 7 by age (younger than 5 days); 5 and older go
    assert [k for k, a in sorted(plan.items()) if a == "keep"] == [
        "20261106",
        "20261107",
        "20261108",
        "20261109",
        "20261110",
    ]
    assert plan["20261101"] == "delete"
    assert all(d.action == "keep" for d in plan_bundle_retention(bundles, 10, 0, now))


def test_list_and_delete_bundles_manifest_first(tmp_path):
    storage = LocalStorage(tmp_path)
    store(storage, "20261101T000000Z-000001", NOW - timedelta(days=30))
    store(storage, "20261201T000000Z-000002")
    storage.put_bytes("_diagnostics/bundles/20261102T000000Z-dead00/bundle.tar.zst", b"partial")
    found = {b.bundle_id: b for b in list_bundles(storage, "_diagnostics")}
    assert found["20261102T000000Z-dead00"].created_at is None  # died before its manifest
    assert found["20261101T000000Z-000001"].created_at == NOW - timedelta(days=30)
    assert delete_bundle(storage, "_diagnostics", "20261101T000000Z-000001") == 2
    assert "20261101T000000Z-000001" not in {
        b.bundle_id for b in list_bundles(storage, "_diagnostics")
    }


def test_every_secret_of_the_config_and_environment_is_scrubbed():
    config = Config.model_validate(
        {
            "targets": {
                "postgres": [{"name": "app", "dsn": "postgresql://app:Pg-Secret-1@db:5432/app"}],
                "redis": [{"name": "cache", "url": "redis://:Redis%2FSecret@cache:6379/0"}],
                "http": [
                    {"name": "api", "url": "http://api/health", "headers": {"X-Key": "hdr-key-9"}}
                ],
            },
            "notifications": {
                "routes": [
                    {
                        "name": "mail",
                        "when": ["critical"],
                        "email": {"to": ["a@b.c"], "smtp": "smtp://m:587", "password": "Smtp-Pw-3"},
                    }
                ]
            },
        }
    )
    secrets = bundle_secrets(config, {"OPS_API_TOKEN": "env-token-77", "HOME": "/root"})
    for expected in ("Pg-Secret-1", "Redis/Secret", "hdr-key-9", "Smtp-Pw-3", "env-token-77"):
        assert expected in secrets
    assert "/root" not in secrets

    def leaky() -> Collected:
        return Collected(
            data={"line": "dsn=postgresql://app:Pg-Secret-1@db:5432/app key Redis%2FSecret"},
            summary="token env-token-77",
            findings=["header hdr-key-9"],
        )

    section, data = collect_bounded("x", "y", leaky, 5, secrets, 10_000)
    text = data.decode() + section.detail + " ".join(section.findings)
    for secret in ("Pg-Secret-1", "Redis%2FSecret", "Redis/Secret", "hdr-key-9", "env-token-77"):
        assert secret not in text

    def boom() -> Collected:
        raise RuntimeError("could not log in with Smtp-Pw-3")

    failed, data = collect_bounded("x", "y", boom, 5, secrets, 10_000)
    assert not failed.ok and "RuntimeError: could not log in with ***" == failed.detail
    assert b"Smtp-Pw-3" not in data


@pytest.mark.parametrize("prefix", ["diagnostics", "app", "_"])
def test_the_prefix_can_never_be_a_target_folder(prefix):
    with pytest.raises(ValueError):
        DiagnosticsSettings(prefix=prefix)
