"""Validate a restored database against its backup manifest: Great Expectations for what it
expresses well (row counts, ordered columns, primary keys), SQL for the rest (sequences,
orphaned foreign keys, schema sets and fingerprint) and pg_amcheck for physical corruption.

GX cannot compare two databases, so every expected value comes from the manifest's `source`
(measured inside the dump's snapshot). A failed check is a result, never an exception.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from pydantic import BaseModel
from sqlalchemy.engine import URL

from runbook.catalog import DrillCheck
from runbook.errors import PermanentError
from runbook.secrets import redact, split_dsn
from runbook.systems.pg_tools import binary_version, client_env
from runbook.systems.postgres import connect, schema_facts, schema_fingerprint

DETAIL_LIMIT = 400
DATA_DOCS_SITE = "runbook_drill"


class ValidationResult(BaseModel):
    checks: list[DrillCheck]
    gx_result: dict | None  # the GX validation results as JSON, one entry per table
    data_docs: str | None  # path of the Data Docs index when built
    seconds: dict[str, float]  # "gx", "sql", "amcheck"

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> list[DrillCheck]:
        return [c for c in self.checks if not c.ok]

    def check(self, name: str) -> DrillCheck:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)


def validate_restore(
    dsn: str,
    source: dict,
    *,
    schema_name: str | None = None,
    amcheck: str | None = None,
    data_docs_dir: Path | None = None,
    amcheck_timeout: float = 1800,
) -> ValidationResult:
    """Check the restored database at `dsn` against the manifest's `source` facts.

    1. read the restored schema (psycopg) and run the SQL checks: sequences, foreign-key
       orphans, sets of tables / indexes / extensions, schema fingerprint;
    2. per expected table, one GX suite: row count, ordered columns, primary key;
    3. pg_amcheck (heap + btree) when a binary is given, last, because --install-missing adds
       the amcheck extension (removed again afterwards if we added it).

    `schema_name` restricts the expectations to one schema (a per-schema archive).
    Connection failures raise the classified errors of runbook.systems.postgres; findings
    never raise.
    """
    expected_schema = source.get("schema")
    if not expected_schema:
        raise PermanentError(
            "the manifest's source has no schema facts (source.schema): this backup was taken "
            "by a Runbook too old to validate a restore against; take a new backup"
        )
    _, password = split_dsn(dsn)
    expected = _Expected(source, schema_name)
    seconds: dict[str, float] = {"gx": 0.0, "sql": 0.0, "amcheck": 0.0}

    started = time.monotonic()
    with connect(dsn, autocommit=True) as conn:
        restored = schema_facts(conn)
        sql_checks = _sql_checks(conn, expected, restored, schema_name, source)
    seconds["sql"] = round(time.monotonic() - started, 3)

    started = time.monotonic()
    present = {f"{t['schema']}.{t['name']}" for t in restored["tables"]}
    gx_checks, gx_result, data_docs = _gx_checks(dsn, expected, present, data_docs_dir)
    seconds["gx"] = round(time.monotonic() - started, 3)

    checks = gx_checks + sql_checks
    if amcheck:
        started = time.monotonic()
        had_amcheck = any(e["name"] == "amcheck" for e in restored["extensions"])
        checks.append(_amcheck(dsn, amcheck, amcheck_timeout, drop_after=not had_amcheck))
        seconds["amcheck"] = round(time.monotonic() - started, 3)

    secrets = [password]
    checks = [c.model_copy(update={"detail": _one_line(c.detail, secrets)}) for c in checks]
    if gx_result is not None and password:
        gx_result = json.loads(redact(json.dumps(gx_result), secrets))
    return ValidationResult(
        checks=checks, gx_result=gx_result, data_docs=data_docs, seconds=seconds
    )


# --- what the manifest expects -------------------------------------------------------------


class _Expected:
    """The manifest's facts, narrowed to one schema for a per-schema archive."""

    def __init__(self, source: dict[str, Any], schema_name: str | None):
        schema = source["schema"]

        def keep(item_schema: str) -> bool:
            return schema_name is None or item_schema == schema_name

        self.tables = [t for t in schema.get("tables", []) if keep(t["schema"])]
        self.indexes = [i for i in schema.get("indexes", []) if keep(i["schema"])]
        self.foreign_keys = [f for f in schema.get("foreign_keys", []) if keep(f["schema"])]
        self.sequences = [s for s in schema.get("sequences", []) if keep(s["schema"])]
        self.extensions = list(schema.get("extensions", []))
        self.row_counts: dict[str, int] = source.get("row_counts", {})
        self.partitioned = {
            (t["schema"], t["name"]) for t in schema.get("tables", []) if t.get("partitioned")
        }


# --- SQL checks ----------------------------------------------------------------------------

_SEQUENCE_STATE = """
    SELECT c.oid, ps.last_value, ps.start_value, ps.increment_by
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_sequences ps ON ps.schemaname = n.nspname AND ps.sequencename = c.relname
    WHERE c.relkind = 'S' AND n.nspname = %s AND c.relname = %s
"""

# Columns whose DEFAULT calls the sequence (nextval('shop.invoice_no')): not OWNED BY, so the
# manifest's owned_by misses them, but they collide just the same.
_DEFAULT_USERS = """
    SELECT n.nspname, c.relname, a.attname
    FROM pg_depend d
    JOIN pg_attrdef ad ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
    JOIN pg_class c ON c.oid = ad.adrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
    WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = %s AND c.relkind IN ('r', 'p')
      AND NOT c.relispartition
    ORDER BY 1, 2, 3
"""


def _sql_checks(
    conn: psycopg.Connection,
    expected: _Expected,
    restored: dict[str, Any],
    schema_name: str | None,
    source: dict[str, Any],
) -> list[DrillCheck]:
    checks = [_sequence_check(conn, seq) for seq in expected.sequences]
    restored_fks = {(f["schema"], f["table"], f["name"]) for f in restored["foreign_keys"]}
    checks += [_foreign_key_check(conn, fk, expected, restored_fks) for fk in expected.foreign_keys]

    def keep(item_schema: str) -> bool:
        return schema_name is None or item_schema == schema_name

    checks.append(
        _set_check(
            "schema tables",
            "tables",
            {f"{t['schema']}.{t['name']}" for t in expected.tables},
            {f"{t['schema']}.{t['name']}" for t in restored["tables"] if keep(t["schema"])},
        )
    )
    checks.append(
        _set_check(
            "schema indexes",
            "indexes",
            {f"{i['schema']}.{i['table']}.{i['name']}" for i in expected.indexes},
            {
                f"{i['schema']}.{i['table']}.{i['name']}"
                for i in restored["indexes"]
                if keep(i["schema"])
            },
        )
    )
    if schema_name is None:
        checks.append(
            _set_check(
                "schema extensions",
                "extensions",
                {e["name"] for e in expected.extensions},
                {e["name"] for e in restored["extensions"]},
            )
        )
        checks.append(_fingerprint_check(source, restored))
    else:
        # pg_dump --schema dumps no extensions, and the fingerprint covers the whole database.
        checks.append(
            DrillCheck(name="schema extensions", ok=True, detail="skipped (schema archive)")
        )
        checks.append(
            DrillCheck(name="schema fingerprint", ok=True, detail="skipped (schema archive)")
        )
    return checks


def _sequence_check(conn: psycopg.Connection, seq: dict[str, Any]) -> DrillCheck:
    name = f"{seq['schema']}.{seq['name']}"
    check = f"sequence {name}"
    try:
        row = conn.execute(_SEQUENCE_STATE, (seq["schema"], seq["name"])).fetchone()
        if row is None:
            return DrillCheck(
                name=check, ok=False, detail="sequence missing from the restored database"
            )
        oid, last_value, start, increment = row
        if start is None:
            return DrillCheck(
                name=check, ok=False, detail="cannot read the sequence (no privilege on it)"
            )
        # NULL last_value: never called (setval(..., false) or fresh): next value is start.
        current = last_value if last_value is not None else start - increment
        fed: list[tuple[str, str, str]] = []
        owner = seq.get("owned_by")
        if owner:
            fed.append((owner["schema"], owner["table"], owner["column"]))
        fed += [tuple(r) for r in conn.execute(_DEFAULT_USERS, (oid,)) if tuple(r) not in fed]
        if not fed:
            return DrillCheck(
                name=check, ok=True, detail=f"last_value {current}; feeds no column to compare"
            )
        ok = True
        parts = []
        for schema, table, column in fed:
            agg = sql.SQL("max" if increment > 0 else "min")
            query = sql.SQL("SELECT {}({}) FROM {}.{}").format(
                agg, sql.Identifier(column), sql.Identifier(schema), sql.Identifier(table)
            )
            extreme = conn.execute(query).fetchone()[0]
            label = f"{agg.as_string(conn)}({schema}.{table}.{column})"
            if extreme is None:
                parts.append(f"last_value {current}, {table} is empty")
            elif not isinstance(extreme, int):
                parts.append(f"{label} is not an integer ({type(extreme).__name__})")
            elif (current >= extreme) if increment > 0 else (current <= extreme):
                relation = ">=" if increment > 0 else "<="
                parts.append(f"last_value {current} {relation} {label} {extreme}")
            else:
                ok = False
                relation = "<" if increment > 0 else ">"
                parts.append(
                    f"last_value {current} {relation} {label} {extreme}: "
                    "the next insert would collide"
                )
        return DrillCheck(name=check, ok=ok, detail="; ".join(parts))
    except psycopg.Error as exc:
        return DrillCheck(name=check, ok=False, detail=f"query failed: {exc}")


def _foreign_key_check(
    conn: psycopg.Connection,
    fk: dict[str, Any],
    expected: _Expected,
    restored_fks: set[tuple[str, str, str]],
) -> DrillCheck:
    check = f"foreign key {fk['schema']}.{fk['table']}.{fk['name']}"
    child = f"{fk['schema']}.{fk['table']}"
    parent = f"{fk['ref_schema']}.{fk['ref_table']}"
    cols, ref_cols = fk["columns"], fk["ref_columns"]
    if not cols or len(cols) != len(ref_cols):
        return DrillCheck(name=check, ok=False, detail="manifest lists no columns for this key")

    def relation(schema: str, table: str) -> sql.Composable:
        # A partitioned table's rows live in its partitions; a plain one's are ONLY its own.
        only = sql.SQL("") if (schema, table) in expected.partitioned else sql.SQL("ONLY ")
        return sql.SQL("{}{}.{}").format(only, sql.Identifier(schema), sql.Identifier(table))

    query = sql.SQL(
        "SELECT count(*) FROM {child} AS c WHERE {not_null} "
        "AND NOT EXISTS (SELECT 1 FROM {parent} AS p WHERE {join})"
    ).format(
        child=relation(fk["schema"], fk["table"]),
        parent=relation(fk["ref_schema"], fk["ref_table"]),
        # MATCH SIMPLE: a row with any NULL key column references nothing.
        not_null=sql.SQL(" AND ").join(
            sql.SQL("c.{} IS NOT NULL").format(sql.Identifier(c)) for c in cols
        ),
        join=sql.SQL(" AND ").join(
            sql.SQL("p.{} = c.{}").format(sql.Identifier(r), sql.Identifier(c))
            for c, r in zip(cols, ref_cols, strict=True)
        ),
    )
    try:
        orphans = conn.execute(query).fetchone()[0]
    except psycopg.Error as exc:
        return DrillCheck(name=check, ok=False, detail=f"query failed: {exc}")
    where = f"{child} ({', '.join(cols)}) -> {parent} ({', '.join(ref_cols)})"
    present = (fk["schema"], fk["table"], fk["name"]) in restored_fks
    if orphans:
        detail = f"{orphans} orphan rows in {where}: expected 0"
    else:
        detail = f"0 orphan rows in {where}"
    if not present:
        detail += "; the constraint is missing from the restored database"
    return DrillCheck(name=check, ok=orphans == 0 and present, detail=detail)


def _set_check(name: str, what: str, expected: set[str], found: set[str]) -> DrillCheck:
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if not missing and not unexpected:
        return DrillCheck(name=name, ok=True, detail=f"{len(found)} {what} match the manifest")
    parts = []
    if missing:
        parts.append(f"missing {_names(missing)}")
    if unexpected:
        parts.append(f"unexpected {_names(unexpected)}")
    return DrillCheck(
        name=name,
        ok=False,
        detail=f"{'; '.join(parts)} ({len(found)} {what} found, {len(expected)} expected)",
    )


def _names(names: list[str], limit: int = 8) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _fingerprint_check(source: dict[str, Any], restored: dict[str, Any]) -> DrillCheck:
    want = source.get("schema_fingerprint")
    got = schema_fingerprint(restored)
    if not want:
        return DrillCheck(name="schema fingerprint", ok=False, detail="manifest has no fingerprint")
    if got == want:
        return DrillCheck(name="schema fingerprint", ok=True, detail=f"{got[:12]} matches")
    # Name the sections that differ by fingerprinting each one alone.
    empty = {"tables": [], "indexes": [], "foreign_keys": [], "sequences": [], "extensions": []}
    differ = [
        section
        for section in empty
        if schema_fingerprint({**empty, section: source["schema"].get(section, [])})
        != schema_fingerprint({**empty, section: restored[section]})
    ]
    where = f"; differs in {', '.join(differ)}" if differ else ""
    return DrillCheck(
        name="schema fingerprint",
        ok=False,
        detail=f"restored {got[:12]} != manifest {want[:12]}{where}",
    )


# --- Great Expectations --------------------------------------------------------------------


def gx_connection(dsn: str) -> tuple[str, dict[str, Any]]:
    """A libpq DSN -> (SQLAlchemy URL without password, connect_args: password and options).

    TCP with one host: postgresql+psycopg://user@host:port/db. Socket directories and
    multi-host lists go in the query (?host=/tmp/x&port=5432), where SQLAlchemy's psycopg
    dialect hands them to libpq unchanged. The password stays out of the URL so GX never
    holds it in anything it may print or serialize.
    """
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    password = params.pop("password", None)
    user = params.pop("user", None)
    dbname = params.pop("dbname", None)
    host = params.pop("host", None)
    port = params.pop("port", None)
    options = params.pop("options", None)
    tcp = bool(host) and not host.startswith("/") and "," not in host
    if tcp and port and not port.isdigit():
        tcp = False
    query = dict(params)
    if not tcp:
        query.update({k: v for k, v in (("host", host), ("port", port)) if v})
    url = URL.create(
        "postgresql+psycopg",
        username=user or None,
        host=host if tcp else None,
        port=int(port) if tcp and port else None,
        database=dbname or None,
        query=query,
    )
    connect_args = {"password": password} if password else {}
    if options:
        connect_args["options"] = options  # extended per schema with search_path
    return url.render_as_string(hide_password=False), connect_args


def _gx_checks(
    dsn: str, expected: _Expected, present: set[str], data_docs_dir: Path | None
) -> tuple[list[DrillCheck], dict | None, str | None]:
    tables = [t for t in expected.tables if not t.get("partitioned")]
    checks: list[DrillCheck] = []
    to_validate = []
    for table in tables:
        name = f"{table['schema']}.{table['name']}"
        if name in present:
            to_validate.append(table)
        else:
            checks.append(
                DrillCheck(
                    name=f"rows {name}", ok=False, detail="table missing from the restored database"
                )
            )
    if not to_validate:
        return checks, None, None

    try:
        session = _GxSession(dsn, data_docs_dir)
    except Exception as exc:  # GX's own failure must not hide the SQL findings
        checks.append(DrillCheck(name="gx", ok=False, detail=f"GX could not start: {exc}"))
        return checks, None, None

    validations = []
    data_docs = None
    try:
        for table in to_validate:
            name = f"{table['schema']}.{table['name']}"
            try:
                result = session.validate_table(table, expected.row_counts.get(name))
            except Exception as exc:  # one table's GX failure must not end the drill
                checks.append(
                    DrillCheck(
                        name=f"rows {name}",
                        ok=False,
                        detail=f"GX could not validate the table: {exc}",
                    )
                )
                continue
            validations.append(result)
            checks += _checks_from_gx(name, result)
        if data_docs_dir is not None and validations:
            try:
                data_docs = session.build_data_docs()
            except Exception as exc:
                checks.append(
                    DrillCheck(name="data docs", ok=False, detail=f"could not build: {exc}")
                )
    finally:
        session.dispose()

    statistics = {"evaluated_expectations": 0, "successful_expectations": 0}
    for v in validations:
        for key in statistics:
            statistics[key] += v["statistics"][key]
    gx_result = {
        "success": all(v["success"] for v in validations),
        "statistics": statistics,
        "validations": validations,
    }
    return checks, gx_result, data_docs


class _GxSession:
    """One ephemeral GX context; one SQL datasource per schema, whose connections put that
    schema first on search_path, so tables are named without GX's schema handling (it
    lower-cases schema names and deprecates `schema_name` on table assets)."""

    def __init__(self, dsn: str, data_docs_dir: Path | None):
        # Set before the import: GX reads it when the context is created (offline hosts would
        # log upload errors); the import itself costs about 3 s, so only drills pay for it.
        os.environ["GX_ANALYTICS_ENABLED"] = "false"
        import great_expectations as gx  # noqa: PLC0415
        import great_expectations.expectations as gxe  # noqa: PLC0415
        from great_expectations.data_context.types.base import (  # noqa: PLC0415
            ProgressBarsConfig,
        )

        self.gx, self.gxe = gx, gxe
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(
            globally=False, metric_calculations=False
        )
        self.data_docs_dir = Path(data_docs_dir).resolve() if data_docs_dir else None
        if self.data_docs_dir is not None:
            self.data_docs_dir.mkdir(parents=True, exist_ok=True)
            self.context.add_data_docs_site(
                site_name=DATA_DOCS_SITE,
                site_config={
                    "class_name": "SiteBuilder",
                    "show_how_to_buttons": False,
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                    "store_backend": {
                        "class_name": "TupleFilesystemStoreBackend",
                        "base_directory": str(self.data_docs_dir),
                    },
                },
            )
        self.url, self.connect_args = gx_connection(dsn)
        self.datasources: dict[str, Any] = {}

    def datasource(self, schema: str) -> Any:
        if schema not in self.datasources:
            connect_args = dict(self.connect_args)
            setting = f"search_path={_quote_ident(schema)},pg_catalog"
            # libpq splits `options` on spaces unless they are backslash-escaped.
            setting = setting.replace("\\", "\\\\").replace(" ", "\\ ")
            options = [connect_args.get("options"), f"-c {setting}"]
            connect_args["options"] = " ".join(o for o in options if o)
            with warnings.catch_warnings():
                # "a more specific PostgresDatasource may be more appropriate": that one
                # rejects socket-only URLs.
                warnings.simplefilter("ignore", UserWarning)
                self.datasources[schema] = self.context.data_sources.add_sql(
                    f"restored {schema}",
                    connection_string=self.url,
                    kwargs={"connect_args": connect_args},
                )
        return self.datasources[schema]

    def validate_table(self, table: dict[str, Any], row_count: int | None) -> dict[str, Any]:
        gx, gxe = self.gx, self.gxe
        name = f"{table['schema']}.{table['name']}"
        # Quoted, so GX neither lower-cases the name nor leaves "Order Items" unquoted.
        asset = self.datasource(table["schema"]).add_table_asset(
            name=name, table_name=_quote_ident(table["name"])
        )
        batch = asset.add_batch_definition_whole_table("whole table")
        suite = self.context.suites.add(gx.ExpectationSuite(name=f"restore {name}"))
        if row_count is not None:
            suite.add_expectation(gxe.ExpectTableRowCountToEqual(value=row_count))
        suite.add_expectation(
            gxe.ExpectTableColumnsToMatchOrderedList(column_list=[c[0] for c in table["columns"]])
        )
        pk = table.get("primary_key") or []
        if len(pk) == 1:
            suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column=pk[0]))
        elif pk:
            suite.add_expectation(gxe.ExpectCompoundColumnsToBeUnique(column_list=list(pk)))
        for column in pk:
            suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=column))
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=f"restore {name}", data=batch, suite=suite)
        )
        return definition.run().to_json_dict()

    def build_data_docs(self) -> str | None:
        urls = self.context.build_data_docs(site_names=[DATA_DOCS_SITE])
        index = self.data_docs_dir / "index.html" if self.data_docs_dir else None
        return str(index) if urls and index and index.is_file() else None

    def dispose(self) -> None:
        # Pooled connections would keep the scratch database busy (DROP DATABASE waits).
        for datasource in self.datasources.values():
            try:
                datasource.get_engine().dispose()
            except Exception:
                pass


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _checks_from_gx(name: str, result: dict[str, Any]) -> list[DrillCheck]:
    rows: DrillCheck | None = None
    columns: DrillCheck | None = None
    key_parts: list[str] = []
    key_ok = True
    for item in result["results"]:
        kind = item["expectation_config"]["type"]
        kwargs = item["expectation_config"]["kwargs"]
        found = item.get("result") or {}
        error = (item.get("exception_info") or {}).get("exception_message")
        ok = bool(item["success"])
        if kind == "expect_table_row_count_to_equal":
            want, got = kwargs["value"], found.get("observed_value")
            detail = f"GX error: {error}" if error else f"{got} rows, expected {want} (manifest)"
            if not ok and isinstance(got, int):
                detail += f": {abs(want - got)} {'missing' if got < want else 'extra'}"
            rows = DrillCheck(name=f"rows {name}", ok=ok, detail=detail)
        elif kind == "expect_table_columns_to_match_ordered_list":
            columns = DrillCheck(
                name=f"columns {name}",
                ok=ok,
                detail=f"GX error: {error}"
                if error
                else _columns_detail(kwargs["column_list"], found.get("observed_value") or []),
            )
        elif kind in ("expect_column_values_to_be_unique", "expect_compound_columns_to_be_unique"):
            key_ok &= ok
            label = kwargs.get("column") or f"({', '.join(kwargs.get('column_list', []))})"
            if error:
                key_parts.append(f"{label} uniqueness: GX error: {error}")
            else:
                count = found.get("unexpected_count", 0)
                examples = list(dict.fromkeys(map(str, found.get("partial_unexpected_list") or [])))
                sample = f" (e.g. {', '.join(examples[:3])})" if examples else ""
                key_parts.append(f"{label}: {count} rows with a duplicated value{sample}")
        elif kind == "expect_column_values_to_not_be_null":
            key_ok &= ok
            if error:
                key_parts.append(f"{kwargs['column']} not null: GX error: {error}")
            else:
                key_parts.append(f"{kwargs['column']}: {found.get('unexpected_count', 0)} nulls")
    checks = [c for c in (rows, columns) if c is not None]
    if key_parts:
        checks.append(
            DrillCheck(name=f"primary key {name}", ok=key_ok, detail="; ".join(key_parts))
        )
    return checks


def _columns_detail(want: list[str], got: list[str]) -> str:
    if want == got:
        return f"{len(got)} columns in the manifest's order"
    missing = [c for c in want if c not in got]
    unexpected = [c for c in got if c not in want]
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing)}")
    if unexpected:
        parts.append(f"unexpected {', '.join(unexpected)}")
    if not parts:
        parts.append("order differs")
    return f"{'; '.join(parts)}: found [{', '.join(got)}], expected [{', '.join(want)}]"


# --- pg_amcheck ----------------------------------------------------------------------------


def _amcheck(dsn: str, binary: str, timeout: float, drop_after: bool) -> DrillCheck:
    """pg_amcheck's default checks (every heap, every btree); --install-missing creates the
    amcheck extension it needs, which we drop again so the scratch copy stays faithful."""
    version = binary_version(binary)
    if version is None:
        return DrillCheck(name="amcheck", ok=False, detail=f"{binary} is not a usable pg_amcheck")
    conninfo, env = client_env(dsn)
    try:
        with connect(dsn) as conn:
            server_major = conn.info.server_version // 10000
        if version[0] < server_major:
            return DrillCheck(
                name="amcheck",
                ok=False,
                detail=f"pg_amcheck {version[1]} is older than the server ({server_major}): "
                f"use a pg_amcheck {server_major} or newer",
            )
        try:
            done = subprocess.run(
                [binary, "--install-missing", "--no-password", conninfo],
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return DrillCheck(
                name="amcheck", ok=False, detail=f"pg_amcheck timed out after {timeout:.0f} s"
            )
        output = (done.stdout + "\n" + done.stderr).strip()
        if done.returncode == 0 and not done.stdout.strip():
            return DrillCheck(
                name="amcheck",
                ok=True,
                detail=f"pg_amcheck {version[1]}: no corruption in heap tables and btree indexes",
            )
        first = " | ".join(output.splitlines()[:3]) or "no output"
        return DrillCheck(
            name="amcheck", ok=False, detail=f"pg_amcheck exit {done.returncode}: {first}"
        )
    finally:
        if drop_after:
            _drop_amcheck(dsn)


def _drop_amcheck(dsn: str) -> None:
    try:
        with connect(dsn, autocommit=True) as conn:
            conn.execute("DROP EXTENSION IF EXISTS amcheck")
    except Exception:  # the scratch database is dropped after the drill anyway
        pass


# --- helpers -------------------------------------------------------------------------------


def _one_line(text: str, secrets: list[str | None]) -> str:
    text = " ".join(redact(str(text), secrets).split())
    return text if len(text) <= DETAIL_LIMIT else text[: DETAIL_LIMIT - 1] + "…"
