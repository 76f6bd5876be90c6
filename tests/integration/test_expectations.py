"""validate_restore against real restores: a faithful copy passes every check, and each kind of
damage done to a copy is named by the check that owns it (and by no other)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from runbook.demo import seed_shop
from runbook.systems.pg_tools import pick_binary
from runbook.systems.postgres import (
    PostgresAuthFailed,
    exact_row_counts,
    exported_snapshot,
    schema_facts,
    schema_fingerprint,
)
from tasks.drills.validate import ValidationResult, validate_restore
from tests.support.pg import PASSWORD, PASSWORD_ROLE, PgServer

EXTRA_SQL = """
CREATE TABLE shop.events (at timestamptz NOT NULL DEFAULT now(), kind text);
INSERT INTO shop.events (kind) SELECT 'k' || g FROM generate_series(1, 5) g;
CREATE TABLE public.notes (id int PRIMARY KEY, body text);
INSERT INTO public.notes SELECT g, 'note ' || g FROM generate_series(1, 3) g;
"""


def take_source(dsn: str) -> dict:
    """The manifest's `source` as the backup takes it: facts inside the exported snapshot."""
    with exported_snapshot(dsn) as (conn, _):
        schema = schema_facts(conn)
        return {
            "server_major": conn.info.server_version // 10000,
            "row_counts": exact_row_counts(conn, schema["tables"]),
            "schema": schema,
            "schema_fingerprint": schema_fingerprint(schema),
        }


def dump(server: PgServer, dsn: str, path: Path, schema: str | None = None) -> Path:
    argv = [pick_binary("pg_dump", server.major).path, "-Fc", "-f", str(path), "-d", dsn]
    if schema:
        argv.append(f"--schema={schema}")
    subprocess.run(argv, check=True, capture_output=True, timeout=120)
    return path


@pytest.fixture
def restore() -> Iterator[Callable[[PgServer, Path], str]]:
    """restore(server, archive) -> name of a fresh database holding the archive."""
    created: list[tuple[PgServer, str]] = []

    def run(server: PgServer, archive: Path) -> str:
        name = server.create_database("rbdrill")
        created.append((server, name))
        binary = pick_binary("pg_restore", server.major).path
        subprocess.run(
            [binary, "--exit-on-error", "--no-owner", "-d", server.dsn(name), str(archive)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        return name

    yield run
    for server, name in created:
        server.drop_database(name)


@pytest.fixture(scope="module")
def pg15_backup(pg15: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One seeded PG15 database, its manifest facts and two archives (whole, schema shop)."""
    name = pg15.create_database("rbsource")
    dsn = pg15.dsn(name)
    try:
        with psycopg.connect(dsn) as conn:
            seed_shop(conn, customers=300, orders=3000)
            conn.execute(EXTRA_SQL)
        folder = tmp_path_factory.mktemp("pg15-backup")
        yield {
            "source": take_source(dsn),
            "whole": dump(pg15, dsn, folder / "database.pgdump"),
            "shop": dump(pg15, dsn, folder / "schema-shop.pgdump", schema="shop"),
        }
    finally:
        pg15.drop_database(name)


def failing(result: ValidationResult) -> dict[str, str]:
    return {c.name: c.detail for c in result.checks if not c.ok}


def extensions(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute("SELECT extname FROM pg_extension")}


# --- faithful restores ---------------------------------------------------------------------


def test_faithful_pg15_restore_passes_every_check(pg15, pg15_backup, restore, tmp_path):
    dsn = pg15.dsn(restore(pg15, pg15_backup["whole"]))
    docs = tmp_path / "docs"

    result = validate_restore(
        dsn,
        pg15_backup["source"],
        amcheck=pick_binary("pg_amcheck", pg15.major).path,
        data_docs_dir=docs,
    )

    assert failing(result) == {}
    names = {c.name for c in result.checks}
    assert {
        "rows shop.orders",
        "rows shop.customers",
        "rows shop.events",
        "rows public.notes",
        "columns shop.orders",
        "primary key shop.orders",
        "primary key shop.customers",
        "sequence shop.invoice_no",
        "sequence shop.orders_id_seq",
        "sequence shop.customers_id_seq",
        "foreign key shop.orders.orders_customer_id_fkey",
        "schema tables",
        "schema indexes",
        "schema extensions",
        "schema fingerprint",
        "amcheck",
    } <= names
    assert "primary key shop.events" not in names  # no primary key, nothing to check
    assert result.check("rows shop.orders").detail == "3000 rows, expected 3000 (manifest)"
    assert "no corruption" in result.check("amcheck").detail
    # The default-fed sequence is compared with the column it feeds, not skipped.
    assert "max(shop.orders.invoice) 3999" in result.check("sequence shop.invoice_no").detail
    assert result.gx_result is not None and result.gx_result["success"] is True
    # One validation per drill: the suite judges a facts table with one row per table.
    (validation,) = result.gx_result["validations"]
    assert result.gx_result["statistics"]["evaluated_expectations"] == 5
    assert {r["result"]["element_count"] for r in validation["results"]} == {4}
    assert set(result.seconds) == {"gx", "sql", "amcheck"}
    # Each table was read once, and that read is on record.
    assert {k for k in result.breakdown if k.startswith("scan ")} == {
        "scan shop.orders",
        "scan shop.customers",
        "scan shop.events",
        "scan public.notes",
    }
    assert result.data_docs == str(docs.resolve() / "index.html")
    assert (docs / "index.html").is_file()
    assert any((docs / "validations").rglob("*.html"))
    # --install-missing added amcheck; it is removed so the copy matches the manifest again.
    assert "amcheck" not in extensions(dsn)


def test_faithful_pg18_restore_over_a_socket_with_a_password(
    pg18, make_database, restore, tmp_path
):
    source_dsn = make_database(pg18)
    with psycopg.connect(source_dsn) as conn:
        conn.execute(EXTRA_SQL)
    source = take_source(source_dsn)
    archive = dump(pg18, source_dsn, tmp_path / "pg18.pgdump")
    name = restore(pg18, archive)
    socket_dir = conninfo_to_dict(pg18.admin_dsn)["host"]
    assert socket_dir.startswith("/")
    dsn = f"postgresql://{PASSWORD_ROLE}:{quote(PASSWORD)}@/{name}?host={quote(socket_dir)}"

    docs = tmp_path / "data-docs"
    result = validate_restore(
        dsn, source, amcheck=pick_binary("pg_amcheck", 18).path, data_docs_dir=docs
    )

    assert source["server_major"] == 18
    assert failing(result) == {}
    assert result.data_docs == str(docs / "index.html")
    pages = [p for p in docs.rglob("*") if p.is_file()]
    assert len(pages) > 2  # the index and a page per validated table
    leaking = [p for p in pages if PASSWORD.encode() in p.read_bytes()]
    assert not leaking
    assert result.check("rows shop.orders").detail == "3000 rows, expected 3000 (manifest)"
    assert result.check("amcheck").ok
    assert result.gx_result is not None and result.gx_result["success"] is True
    assert PASSWORD not in result.model_dump_json()
    assert PASSWORD not in json.dumps(result.gx_result)


def test_wrong_password_is_a_classified_error_without_the_password(pg18, make_database):
    dsn = pg18.dsn(make_database(pg18, seed=False), user=PASSWORD_ROLE, password="not-" + PASSWORD)
    with pytest.raises(PostgresAuthFailed) as caught:
        validate_restore(dsn, {"schema": {"tables": []}, "schema_fingerprint": "x"})
    assert "not-" + PASSWORD not in str(caught.value)


# --- damaged restores ----------------------------------------------------------------------

ADD_ORPHAN = """
ALTER TABLE shop.orders DROP CONSTRAINT orders_customer_id_fkey;
INSERT INTO shop.orders (customer_id, items) VALUES (-1, '{}');
ALTER TABLE shop.orders ADD CONSTRAINT orders_customer_id_fkey
    FOREIGN KEY (customer_id) REFERENCES shop.customers (id) NOT VALID;
"""

DAMAGE = {
    "dropped table": (
        "DROP TABLE shop.events",
        {
            "rows shop.events": "table missing from the restored database",
            "schema tables": "missing shop.events",
            "schema fingerprint": "differs in tables",
        },
    ),
    "deleted rows": (
        "DELETE FROM shop.orders WHERE id <= 7",
        {"rows shop.orders": "2993 rows, expected 3000 (manifest): 7 missing"},
    ),
    "sequence set back": (
        "SELECT setval('shop.invoice_no', 1)",
        {
            "sequence shop.invoice_no": "last_value 1 < max(shop.orders.invoice) 3999: "
            "the next insert would collide"
        },
    ),
    "orphan row": (
        ADD_ORPHAN,
        {
            "foreign key shop.orders.orders_customer_id_fkey": "1 orphan rows in shop.orders "
            "(customer_id) -> shop.customers (id): expected 0",
            "rows shop.orders": "3001 rows, expected 3000",
        },
    ),
    "duplicate primary key": (
        "ALTER TABLE shop.orders DROP CONSTRAINT orders_pkey;"
        " UPDATE shop.orders SET id = 2 WHERE id = 1",
        {
            "primary key shop.orders": "id: 2 rows with a duplicated value (e.g. 2); id: 0 nulls",
            "schema indexes": "missing shop.orders.orders_pkey",
            "schema fingerprint": "differs in tables, indexes",
        },
    ),
    "null primary key": (
        "ALTER TABLE public.notes DROP CONSTRAINT notes_pkey;"
        " ALTER TABLE public.notes ALTER COLUMN id DROP NOT NULL;"
        " UPDATE public.notes SET id = NULL WHERE id = 3",
        {
            "primary key public.notes": "id: 0 rows with a duplicated value; id: 1 nulls",
            "schema indexes": "missing public.notes.notes_pkey",
            "schema fingerprint": "differs in tables, indexes",
        },
    ),
    "dropped index": (
        "DROP INDEX shop.orders_items_idx",
        {
            "schema indexes": "missing shop.orders.orders_items_idx",
            "schema fingerprint": "differs in indexes",
        },
    ),
    "extra column": (
        "ALTER TABLE shop.customers ADD COLUMN vip boolean",
        {
            "columns shop.customers": "unexpected vip: found [id, name, city, created_at, vip]",
            "schema fingerprint": "differs in tables",
        },
    ),
    "unexpected extension": (
        "CREATE EXTENSION pg_trgm",
        {
            "schema extensions": "unexpected pg_trgm",
            "schema fingerprint": "differs in extensions",
        },
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damage_is_named_by_its_check_only(pg15, pg15_backup, restore, damage):
    statements, expected = DAMAGE[damage]
    dsn = pg15.dsn(restore(pg15, pg15_backup["whole"]))
    with psycopg.connect(dsn) as conn:
        conn.execute(statements)

    result = validate_restore(dsn, pg15_backup["source"])

    found = failing(result)
    assert set(found) == set(expected), found
    for name, text in expected.items():
        assert text in found[name], (name, found[name])


def test_schema_archive_expects_only_its_schema(pg15, pg15_backup, restore):
    dsn = pg15.dsn(restore(pg15, pg15_backup["shop"]))

    result = validate_restore(dsn, pg15_backup["source"], schema_name="shop")

    assert failing(result) == {}
    assert result.check("schema fingerprint").detail == "skipped (schema archive)"
    assert not any("public.notes" in c.name for c in result.checks)
    assert result.check("schema tables").detail == "3 tables match the manifest"

    # Read as a whole-database restore, the same copy lacks public.notes.
    whole = validate_restore(dsn, pg15_backup["source"])
    assert whole.check("rows public.notes").detail == "table missing from the restored database"
    assert "missing public.notes" in whole.check("schema tables").detail


# --- pg_amcheck ----------------------------------------------------------------------------


def test_amcheck_older_than_the_server_is_refused(pg18, make_database):
    dsn = make_database(pg18, seed=False)
    old = pick_binary("pg_amcheck", 15)
    assert old.major < 18, "this machine kind has PostgreSQL 15's pg_amcheck"
    source = take_source(dsn)

    result = validate_restore(dsn, source, amcheck=old.path)

    assert failing(result) == {
        "amcheck": f"pg_amcheck {old.version} is older than the server (18): "
        "use a pg_amcheck 18 or newer"
    }


def test_amcheck_reports_a_corrupt_heap_page(pg18, make_database):
    dsn = make_database(pg18, seed=False)
    # The victim is not in the manifest, so only pg_amcheck (built to survive bad pages) reads it.
    source = take_source(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE victim (id int, body text)")
        conn.execute("INSERT INTO victim SELECT g, repeat('x', 50) FROM generate_series(1, 500) g")
        conn.execute("VACUUM (FREEZE) victim")
        conn.execute("CHECKPOINT")
        conn.execute("CREATE EXTENSION pg_buffercache")
        # Out of shared buffers, so the next read sees the bytes written below.
        evicted = conn.execute("SELECT * FROM pg_buffercache_evict_relation('victim')").fetchone()
        conn.execute("DROP EXTENSION pg_buffercache")
        data_dir = conn.execute("SHOW data_directory").fetchone()[0]
        relpath = conn.execute("SELECT pg_relation_filepath('victim')").fetchone()[0]
        checksums = conn.execute("SHOW data_checksums").fetchone()[0]
    assert evicted[0] > 0, evicted
    with open(Path(data_dir) / relpath, "r+b") as heap:
        heap.seek(24)  # the line pointers of block 0
        heap.write(b"\xff" * 64)

    result = validate_restore(dsn, source, amcheck=pick_binary("pg_amcheck", 18).path)

    check = result.check("amcheck")
    assert not check.ok
    assert check.detail.startswith("pg_amcheck exit ")
    assert "victim" in check.detail, (checksums, check.detail)


# --- names ---------------------------------------------------------------------------------


def test_names_that_need_quoting_are_validated_not_mangled(pg15, make_database):
    dsn = make_database(pg15, seed=False)
    with psycopg.connect(dsn) as conn:
        conn.execute(
            'CREATE SCHEMA "My Sales";'
            ' CREATE TABLE "My Sales"."Order Items"'
            ' ("Id" int, "Qty" int, PRIMARY KEY ("Id", "Qty"));'
            ' INSERT INTO "My Sales"."Order Items" VALUES (1, 1), (1, 2);'
            " CREATE TABLE public.pg_class (x int);"  # shadowed by pg_catalog unless quoted right
        )
    source = take_source(dsn)

    result = validate_restore(dsn + " options='-c statement_timeout=60000'", source)

    assert failing(result) == {}
    assert result.check("rows My Sales.Order Items").detail == "2 rows, expected 2 (manifest)"
    assert result.check("primary key My Sales.Order Items").detail == (
        "(Id, Qty): 0 rows with a duplicated value; Id: 0 nulls; Qty: 0 nulls"
    )
    assert result.check("rows public.pg_class").detail == "0 rows, expected 0 (manifest)"
