"""security_audit: runbook 000's weekly security scan and 001/004's monthly audit, report only:
each finding graded (critical, warn, info) with its remedy, compared with the previous audit
of the same target (new, still open, resolved). It changes nothing: every action is recorded
`skipped` ("report only"), so a window's verdict never depends on it.

- PostgreSQL: pg_hba rules (pg_hba_file_rules) with `trust`, `password` or `md5` for
  addresses other than loopback; `ssl` off; `password_encryption` not scram-sha-256; roles
  whose stored password is md5; superusers (other than `allowed_superusers`) and CREATEROLE
  roles; CREATE on schema public for PUBLIC; `log_connections` off; installed extensions
  older than the available version.
- Redis: the default user without a password (ACL GETUSER, else requirepass);
  `protected-mode no` (critical with a non-loopback bind and no password); the default user
  allowed the dangerous commands (FLUSHALL, CONFIG, DEBUG, ...) without renaming or ACL.
- HTTP targets: served over plain HTTP; TLS below 1.2 accepted, found by two handshakes
  of our own, one with a context capped at TLS 1.1 and one capped at 1.2 (a TLS 1.3-only
  server gets a third, uncapped): critical when nothing newer is accepted; a certificate
  near expiry by the target's `tls_days` (warn under 30 days, critical under 7 or expired),
  read from whichever handshake succeeded (a legacy-only server's too). A machine whose
  OpenSSL cannot offer TLS 1.1 says so (info) rather than calling the server clean.
- Files targets, walked as their backup walks them: world-writable files and folders
  (folders with the sticky bit excepted; critical for a secret), and files that look like
  secrets (`maintenance.config_drift.secret_files`: `.env`, `*secret*`, `*.key`) readable by
  every user. Only names and modes are read, never a file's content.

The object of a finding is stable (`hba host all all 0.0.0.0/0 trust`, `role-md5 bob`), so
the next audit can tell what is new and what was resolved; one `(audit)` action per target
sums it up and marks that the audit ran even when it found nothing.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import psycopg
from cryptography import x509
from cryptography.x509.oid import NameOID

from runbook.catalog.db import utcnow
from runbook.catalog.maintenance import Figure, MaintenanceAction, Outcome
from runbook.config import HttpTarget, MaintenanceSettings
from runbook.config.core import Threshold
from runbook.errors import PermanentError
from runbook.systems.http import describe_failure, redact_url
from tasks.maintenance.files import Entry, looks_secret, walk_entries
from tasks.maintenance.procedure import MaintenanceSession, MeasureContext
from tasks.maintenance.targets import FILES, HTTP, POSTGRES, REDIS, RedisSession, kind_of

CRITICAL, WARN, INFO = "critical", "warn", "info"
GRADES = (CRITICAL, WARN, INFO)
SUMMARY = "(audit)"
REPORT_ONLY = "report only"  # the audit changes nothing; each remedy says how
DANGEROUS = ("FLUSHALL", "FLUSHDB", "CONFIG", "DEBUG", "KEYS", "SHUTDOWN")


@dataclass(frozen=True)
class Finding:
    key: str  # stable across audits: what makes "new" and "resolved"
    grade: str
    finding: str
    remedy: str


@dataclass(frozen=True)
class AuditFacts:
    findings: list[Finding]
    audited_at: str  # "2026-12-01 02:00 UTC"
    previous: list[MaintenanceAction] = field(default_factory=list)  # the last audit's rows


def _non_local(address: str | None) -> bool:
    if address in (None, ""):
        return True  # `all`, `samehost`-less rules with no address: any
    if address in ("samehost", "samenet"):
        return address == "samenet"
    try:
        return not ipaddress.ip_network(address, strict=False).is_loopback
    except ValueError:
        return True  # a host name: assume it is reachable from elsewhere


def hba_findings(rows: list[tuple[Any, ...]]) -> list[Finding]:
    """(type, database, user_name, address, netmask, auth_method) rows of pg_hba_file_rules."""
    found = []
    for kind, databases, users, address, netmask, method in rows:
        if kind == "local" or method not in ("trust", "password", "md5"):
            continue
        network = address or "all"
        if address and netmask:
            try:
                network = str(ipaddress.ip_network(f"{address}/{netmask}", strict=False))
            except ValueError:
                network = f"{address}/{netmask}"
        if not _non_local(network if network != "all" else None):
            continue
        rule = f"{kind} {','.join(databases or [])} {','.join(users or [])} {network} {method}"
        grade = CRITICAL if method in ("trust", "password") else WARN
        what = {
            "trust": "lets anyone in without a password",
            "password": "sends passwords in clear text",
            "md5": "uses md5 password hashes (weak, deprecated)",
        }[method]
        found.append(
            Finding(
                f"hba {rule}",
                grade,
                f"pg_hba rule `{rule}` {what} from non-local addresses",
                "use scram-sha-256 (and hostssl) for remote rules, then SELECT pg_reload_conf()",
            )
        )
    return found


def postgres_findings(session: MaintenanceSession, allowed: list[str]) -> list[Finding]:
    found: list[Finding] = []
    try:
        rows = session.query(
            "SELECT type, database, user_name, address, netmask, auth_method "
            "FROM pg_hba_file_rules WHERE error IS NULL"
        )
        found += hba_findings(rows)
    except psycopg.errors.InsufficientPrivilege:
        found.append(
            Finding(
                "hba unreadable",
                INFO,
                "pg_hba_file_rules is not readable by this role: the hba rules were not audited",
                "audit with a superuser, or GRANT SELECT ON pg_hba_file_rules",
            )
        )
    settings = dict(
        session.query(
            "SELECT name, setting FROM pg_settings "
            "WHERE name IN ('ssl', 'password_encryption', 'log_connections')"
        )
    )
    if settings.get("ssl") == "off":
        found.append(
            Finding(
                "ssl off",
                WARN,
                "ssl is off: connections are not encrypted",
                "set ssl = on with a certificate (ssl_cert_file, ssl_key_file)",
            )
        )
    if settings.get("password_encryption", "scram-sha-256") != "scram-sha-256":
        found.append(
            Finding(
                "password_encryption",
                WARN,
                f"password_encryption is {settings['password_encryption']}: new passwords are "
                "stored as md5",
                "ALTER SYSTEM SET password_encryption = 'scram-sha-256'; then reset passwords",
            )
        )
    if settings.get("log_connections") == "off":
        found.append(
            Finding(
                "log_connections off",
                INFO,
                "log_connections is off: logins leave no trace",
                "ALTER SYSTEM SET log_connections = on; SELECT pg_reload_conf()",
            )
        )
    found += _role_findings(session, allowed)
    public = session.query(
        "SELECT 1 FROM pg_namespace n, "
        "aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a "
        "WHERE n.nspname = 'public' AND a.grantee = 0 AND a.privilege_type = 'CREATE'"
    )
    if public:
        found.append(
            Finding(
                "public create",
                WARN,
                "every role may CREATE in schema public (CVE-2018-1058 search_path attacks)",
                "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
            )
        )
    for name, installed, available in session.query(
        "SELECT name, installed_version, default_version FROM pg_available_extensions "
        "WHERE installed_version IS NOT NULL AND installed_version <> default_version"
    ):
        found.append(
            Finding(
                f"extension {name}",
                INFO,
                f"extension {name} is at {installed}, {available} is available",
                f"ALTER EXTENSION {name} UPDATE",
            )
        )
    return found


def _role_findings(session: MaintenanceSession, allowed: list[str]) -> list[Finding]:
    found = []
    for name, superuser, createrole in session.query(
        "SELECT rolname, rolsuper, rolcreaterole FROM pg_roles "
        "WHERE (rolsuper OR rolcreaterole) AND rolname NOT LIKE 'pg\\_%' ORDER BY rolname"
    ):
        if superuser and name not in allowed:
            found.append(
                Finding(
                    f"superuser {name}",
                    WARN,
                    f"role {name} is a superuser",
                    f"ALTER ROLE {name} NOSUPERUSER (or add it to allowed_superusers)",
                )
            )
        elif createrole and not superuser:
            found.append(
                Finding(
                    f"createrole {name}",
                    INFO,
                    f"role {name} has CREATEROLE (it can create and grant roles)",
                    f"ALTER ROLE {name} NOCREATEROLE unless it manages roles",
                )
            )
    try:
        md5 = session.query(
            "SELECT rolname FROM pg_authid WHERE rolpassword LIKE 'md5%' ORDER BY rolname"
        )
    except psycopg.errors.InsufficientPrivilege:
        md5 = []
    for (name,) in md5:
        found.append(
            Finding(
                f"role-md5 {name}",
                WARN,
                f"role {name} has an md5 password hash",
                f"SET password_encryption = 'scram-sha-256'; ALTER ROLE {name} PASSWORD ...",
            )
        )
    return found


def redis_findings(config: dict[str, str], nopass: bool, commands: str | None) -> list[Finding]:
    """From CONFIG GET protected-mode / bind, whether the default user needs no password, and
    its ACL command rules (None: no ACL, Redis < 6). Pure."""
    found = []
    binds = config.get("bind", "").split()
    exposed = not binds or any(_non_local(b.lstrip("-")) for b in binds if b != "*")
    exposed = exposed or "*" in binds
    if nopass:
        found.append(
            Finding(
                "default user nopass",
                CRITICAL if exposed else WARN,
                "the default user needs no password"
                + (" and the server listens beyond loopback" if exposed else ""),
                "ACL SETUSER default on >PASSWORD (or requirepass), and put the password "
                "in the target's url",
            )
        )
    if config.get("protected-mode") == "no":
        found.append(
            Finding(
                "protected-mode no",
                CRITICAL if exposed and nopass else WARN,
                f"protected-mode is no, bind {' '.join(binds) or '(all interfaces)'}",
                "CONFIG SET protected-mode yes, bind to the addresses clients use",
            )
        )
    if commands is not None and nopass and ("+@all" in commands or "+@dangerous" in commands):
        found.append(
            Finding(
                "dangerous commands",
                WARN,
                f"the default user may run {', '.join(DANGEROUS)} (no ACL, not renamed)",
                "ACL SETUSER default -@dangerous (or rename-command in redis.conf)",
            )
        )
    return found


def _redis_facts(session: RedisSession) -> list[Finding]:
    client = session.client
    config = {**client.config_get("protected-mode"), **client.config_get("bind")}
    try:
        user = client.call("ACL", "GETUSER", "default") or []
        fields = {user[i].decode(): user[i + 1] for i in range(0, len(user) - 1, 2)}
        flags = [f.decode() for f in fields.get("flags", [])]
        raw = fields.get("commands", b"")
        commands = raw.decode() if isinstance(raw, bytes) else None
        nopass = "nopass" in flags and "on" in flags
    except PermanentError:  # Redis < 6: no ACL
        nopass = not client.config_get("requirepass").get("requirepass")
        commands = None
    return redis_findings(config, nopass, commands)


# --- HTTP targets ----------------------------------------------------------------------------

LEGACY = ("TLSv1", "TLSv1.1", "SSLv3")
TLS_REMEDY = (
    "accept TLS 1.2 and 1.3 only (nginx: ssl_protocols TLSv1.2 TLSv1.3; Apache: SSLProtocol "
    "-all +TLSv1.2 +TLSv1.3; HAProxy: ssl-min-ver TLSv1.2), then reload the server"
)


@dataclass(frozen=True)
class Handshake:
    """One TLS handshake of ours: the version agreed and the server's certificate (DER), or
    why the server refused it."""

    version: str | None
    certificate: bytes | None = None
    refused: str | None = None
    unsupported_here: bool = False  # this machine's OpenSSL cannot offer those versions


def handshake(
    host: str, port: int, timeout: float, lowest: ssl.TLSVersion, highest: ssl.TLSVersion | None
) -> Handshake:
    """A handshake offering only `lowest`..`highest`, the certificate not verified (an
    expired or self-signed one is still read). Raises OSError when no connection is made."""
    try:
        with warnings.catch_warnings():  # TLSv1/TLSv1_1 are deprecated: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.set_ciphers("DEFAULT:@SECLEVEL=0")  # offer what an old server would take
            context.minimum_version = lowest
            if highest is not None:
                context.maximum_version = highest
    except (ValueError, ssl.SSLError) as exc:
        return Handshake(None, refused=str(exc), unsupported_here=True)
    with socket.create_connection((host, port), timeout=timeout) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                return Handshake(tls.version(), tls.getpeercert(binary_form=True))
        except ssl.SSLError as exc:
            reason = exc.reason or str(exc)
            here = reason in ("NO_PROTOCOLS_AVAILABLE", "NO_SUITABLE_SIGNATURE_ALGORITHM")
            return Handshake(None, refused=reason, unsupported_here=here)


def _crossed(value: float, level: float | None, op: str) -> bool:
    if level is None:
        return False
    beyond = value > level if op.startswith(">") else value < level
    return beyond or (op.endswith("=") and value == level)


def certificate_finding(
    certificate: x509.Certificate, limits: Threshold, now: datetime
) -> Finding | None:
    """A finding when the certificate is expired or within the target's `tls_days`."""
    not_after = certificate.not_valid_after_utc
    days = (not_after - now).total_seconds() / 86400
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    who = f"certificate CN={names[0].value}" if names else "the certificate"
    when = f"notAfter {not_after:%Y-%m-%d %H:%M} UTC"
    if days < 0:
        grade, text = CRITICAL, f"{who} expired {-days:.1f} days ago ({when})"
    elif _crossed(days, limits.critical, limits.op):
        grade, text = CRITICAL, f"{who} expires in {days:.1f} days ({when})"
    elif _crossed(days, limits.warn, limits.op):
        grade, text = WARN, f"{who} expires in {days:.1f} days ({when})"
    else:
        return None
    return Finding(
        "certificate expiry",
        grade,
        text,
        "renew it (certbot renew, or your CA) and reload the server before it expires",
    )


def tls_findings(legacy: Handshake, tls12: Handshake, newest: Handshake | None) -> list[Finding]:
    """From the handshake capped at TLS 1.1, the one capped at 1.2, and (when that failed)
    an uncapped one. Pure."""
    modern = tls12.version or (newest.version if newest else None)
    if legacy.version in LEGACY:
        return [
            Finding(
                "tls below 1.2",
                WARN if modern else CRITICAL,
                f"the server accepts {legacy.version} (TLS below 1.2 is deprecated, RFC 8996)"
                + ("" if modern else "; it accepts nothing newer"),
                TLS_REMEDY,
            )
        ]
    if legacy.unsupported_here:
        return [
            Finding(
                "tls below 1.2 unprobed",
                INFO,
                "this machine's OpenSSL cannot offer TLS 1.0/1.1, so whether the server "
                f"accepts them is unknown ({legacy.refused})",
                "probe it from a machine that can: openssl s_client -tls1_1 -connect HOST:PORT",
            )
        ]
    return []


def http_findings(target: HttpTarget, now: datetime) -> list[Finding]:
    """Plain HTTP, TLS versions and the certificate of an HTTP target's URL."""
    parts = urlsplit(target.url)
    shown = redact_url(target.url)
    if parts.scheme == "http":
        return [
            Finding(
                "plain http",
                WARN,
                f"{shown} is served over plain HTTP: requests and answers (tokens, cookies, "
                "data) cross the network readable and alterable",
                "serve it over HTTPS (TLS 1.2 or newer) and point the target's url at https://",
            )
        ]
    host, port = parts.hostname or "", parts.port or 443
    timeout = target.timeout.total_seconds()
    try:
        legacy = handshake(host, port, timeout, ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1)
        tls12 = handshake(host, port, timeout, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
        newest = None  # a TLS 1.3-only server: one more handshake, uncapped
        if tls12.version is None:
            newest = handshake(host, port, timeout, ssl.TLSVersion.TLSv1_2, None)
    except OSError as exc:
        raise PermanentError(
            f"{shown}: cannot audit TLS: {describe_failure(exc, timeout, host)}"
        ) from None
    found = tls_findings(legacy, tls12, newest)
    der = tls12.certificate or (newest.certificate if newest else None) or legacy.certificate
    if der is None:
        refused = (newest or tls12).refused
        raise PermanentError(f"{shown}: no TLS handshake succeeded ({refused})")
    expiry = certificate_finding(x509.load_der_x509_certificate(der), target.tls_days, now)
    return found + ([expiry] if expiry else [])


# --- files targets ---------------------------------------------------------------------------


def files_findings(entries: Iterable[Entry], secret_files: list[str]) -> list[Finding]:
    """World-writable entries and secret-looking files readable by every user, from the
    entries' modes (lstat: links are skipped, their mode means nothing). Pure."""
    found = []
    for entry in entries:
        mode = entry.info.st_mode
        if stat.S_ISLNK(mode):
            continue
        bits = stat.S_IMODE(mode)
        path = str(entry.path)
        secret = stat.S_ISREG(mode) and looks_secret(path, secret_files)
        folder = stat.S_ISDIR(mode)
        if bits & stat.S_IWOTH and not (folder and bits & stat.S_ISVTX):
            what = "folder" if folder else ("secret file" if secret else "file")
            found.append(
                Finding(
                    f"world-writable {path}",
                    CRITICAL if secret else WARN,
                    f"{what} {path} is writable by every user (mode {bits:04o})",
                    f"chmod o-w {path}",
                )
            )
        if secret and bits & stat.S_IROTH:
            found.append(
                Finding(
                    f"secret readable {path}",
                    WARN,
                    f"{path} looks like a secret (config_drift.secret_files) and every user "
                    f"may read it (mode {bits:04o})",
                    f"chmod o-r {path} (600 for a secret), then rotate what it holds if "
                    "others could log in",
                )
            )
    return found


class SecurityAudit:
    name: ClassVar[str] = "security_audit"
    destructive: ClassVar[bool] = False
    kinds: ClassVar[tuple[str, ...]] = (POSTGRES, REDIS, HTTP, FILES)

    def measure(self, context: MeasureContext) -> AuditFacts:
        kind = kind_of(context.target)
        if kind == POSTGRES:
            allowed = context.settings.security_audit.allowed_superusers
            findings = postgres_findings(context.session, allowed)
        elif kind == REDIS:
            findings = _redis_facts(context.session)
        elif kind == HTTP:
            findings = http_findings(context.target, datetime.now(UTC))
        else:
            secret_files = context.settings.config_drift.secret_files
            findings = files_findings(walk_entries(context.target), secret_files)
        previous = context.ledger.latest(context.target.name, self.name)
        return AuditFacts(findings, f"{utcnow():%Y-%m-%d %H:%M:%S} UTC", previous)

    def plan(
        self, facts: AuditFacts, settings: MaintenanceSettings, target: Any
    ) -> list[MaintenanceAction]:
        return audit_actions(facts, target.name)

    def apply(self, session: Any, action: MaintenanceAction) -> dict[str, Figure]:
        raise AssertionError("security_audit plans nothing to apply")  # all concluded: skipped


def audit_actions(facts: AuditFacts, target: str) -> list[MaintenanceAction]:
    """Pure: one action per finding (new or still open), one per finding of the previous
    audit that is gone (resolved), and the `(audit)` summary; all `skipped`: report only."""
    before = {
        a.object: a
        for a in facts.previous
        if a.object != SUMMARY and a.before.get("status") != "resolved"
    }
    summary = next((a for a in facts.previous if a.object == SUMMARY), None)
    since = f" since the audit of {summary.before.get('audited_at')}" if summary else ""
    rows = []
    ordered = sorted(facts.findings, key=lambda f: (GRADES.index(f.grade), f.key))
    for finding in ordered:
        status = "open" if finding.key in before else ("new" if facts.previous else "first")
        rows.append(
            _row(
                target,
                finding.key,
                finding.grade,
                status,
                f"[{finding.grade}] {finding.finding}; remedy: {finding.remedy}"
                + (f" (new{since})" if status == "new" else ""),
            )
        )
    current = {f.key for f in facts.findings}
    resolved = [a for key, a in before.items() if key not in current]
    for old in resolved:
        rows.append(
            _row(
                target,
                old.object,
                str(old.before.get("grade")),
                "resolved",
                f"resolved{since}: {old.reason.split('; remedy:')[0]}",
            )
        )
    counts = {g: sum(1 for f in facts.findings if f.grade == g) for g in GRADES}
    new = sum(1 for r in rows if r.before["status"] == "new")
    text = ", ".join(f"{n} {g}" for g, n in counts.items() if n) or "no findings"
    summary_row = _row(
        target,
        SUMMARY,
        "",
        "summary",
        f"{len(facts.findings)} finding(s): {text}; {new} new, {len(resolved)} resolved{since}",
        {**counts, "audited_at": facts.audited_at},
    )
    return [summary_row, *rows]


def _row(
    target: str,
    key: str,
    grade: str,
    status: str,
    reason: str,
    extra: dict[str, Figure] | None = None,
) -> MaintenanceAction:
    figures: dict[str, Figure] = {"grade": grade or None, "status": status, **(extra or {})}
    return MaintenanceAction(
        procedure=SecurityAudit.name,
        target=target,
        object=key,
        statement="",
        reason=reason,
        before=figures,
        outcome=Outcome.SKIPPED,
        error=REPORT_ONLY,
    )
