"""Validate a restored database against its backup manifest, reading each table once.

1. Measure (SQL, over a few connections at once): one scan per table yields its row count,
   the NULLs in each primary-key column and the number of distinct keys; the foreign-key
   orphan and sequence queries run in the same pool. Schema sets and the fingerprint compare
   catalog facts.
2. Judge (Great Expectations): one expectation suite over a table of those facts, one row per
   table of the manifest (restored?, rows vs the manifest's count, ordered columns, duplicated
   and NULL keys), validated once per drill; its result and Data Docs name failing tables.
   GX's import and context are set up while the scans run.
3. pg_amcheck (heap + btree, --jobs) for physical corruption, last.

GX cannot compare two databases, so every expected value comes from the manifest's `source`
(measured inside the dump's snapshot). A failed check is a result, never an exception.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from pydantic import BaseModel

from runbook.catalog import DrillCheck
from runbook.errors import PermanentError
from runbook.secrets import redact, split_dsn
from runbook.systems.pg_tools import binary_version, client_env
from runbook.systems.postgres import connect, schema_facts, schema_fingerprint

DETAIL_LIMIT = 400
DATA_DOCS_SITE = "runbook_drill"
GX_ASSET = "restored tables"
# Sorting the keys for count(DISTINCT ...) in memory rather than in temporary files.
SCAN_WORK_MEM = "64MB"


class ValidationResult(BaseModel):
    checks: list[DrillCheck]
    gx_result: dict | None  # the GX validation result as JSON (one validation per drill)
    data_docs: str | None  # path of the Data Docs index when built
    seconds: dict[str, float]  # "gx", "sql", "amcheck"
    breakdown: dict[str, float] = {}  # seconds per part: each table's scan, GX set-up, ...

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
    jobs: int = 2,
) -> ValidationResult:
    """Check the restored database at `dsn` against the manifest's `source` facts.

    1. read the restored schema; over `jobs` connections, scan every expected table once
       (rows, key NULLs, distinct keys) and run the sequence and foreign-key queries, while
       Great Expectations is set up in this thread;
    2. judge the per-table facts with one GX suite (rows, ordered columns, primary key) and
       compare schema sets and fingerprint;
    3. pg_amcheck (heap + btree, `--jobs`) when a binary is given, last, because
       --install-missing adds the amcheck extension (removed again afterwards if we added it).

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
    breakdown: dict[str, float] = {}
    seconds: dict[str, float] = {"gx": 0.0, "sql": 0.0, "amcheck": 0.0}

    started = time.monotonic()
    with connect(dsn, autocommit=True) as conn:
        restored = schema_facts(conn)
        sizes = _table_sizes(conn)
    breakdown["schema facts"] = _since(started)
    present = {f"{t['schema']}.{t['name']}" for t in restored["tables"]}
    tables = [t for t in expected.tables if not t.get("partitioned")]
    to_scan = sorted(
        (t for t in tables if _name(t) in present), key=lambda t: -sizes.get(_name(t), 0)
    )

    with _Pool(dsn, jobs) as pool:
        scans = {_name(t): pool.submit(f"scan {_name(t)}", _scan_table, t) for t in to_scan}
        sequences = [pool.submit("sequences", _sequence_check, s) for s in expected.sequences]
        restored_fks = {(f["schema"], f["table"], f["name"]) for f in restored["foreign_keys"]}
        fks = [
            pool.submit("foreign keys", _foreign_key_check, fk, expected, restored_fks)
            for fk in expected.foreign_keys
        ]
        gx_started = time.monotonic()
        # GX's import and context while the scans run; nothing to judge without tables.
        gx = _GxSession.start(data_docs_dir) if tables else _GxUnavailable("no tables")
        breakdown["gx: set-up"] = _since(gx_started)
        found = {name: pool.result(future) for name, future in scans.items()}
        sql_checks = [pool.result(f) for f in sequences] + [pool.result(f) for f in fks]
    breakdown.update(pool.seconds)
    # Wall clock of the SQL work; GX's set-up overlapped it.
    seconds["sql"] = round(max(pool.finished, started + breakdown["schema facts"]) - started, 3)
    sql_checks += _schema_checks(expected, restored, schema_name, source)

    gx_started = time.monotonic()
    facts = [_TableFacts.of(t, restored, found, expected.row_counts) for t in tables]
    table_checks = [check for f in facts for check in f.checks()]
    gx_checks, gx_result, data_docs = gx.judge(facts, table_checks)
    breakdown["gx: validation and data docs"] = _since(gx_started)
    seconds["gx"] = round(breakdown["gx: set-up"] + breakdown["gx: validation and data docs"], 3)

    checks = table_checks + gx_checks + sql_checks
    if amcheck:
        started = time.monotonic()
        had_amcheck = any(e["name"] == "amcheck" for e in restored["extensions"])
        checks.append(_amcheck(dsn, amcheck, amcheck_timeout, jobs, drop_after=not had_amcheck))
        seconds["amcheck"] = breakdown["amcheck"] = _since(started)

    secrets = [password]
    checks = [c.model_copy(update={"detail": _one_line(c.detail, secrets)}) for c in checks]
    if gx_result is not None and password:
        gx_result = json.loads(redact(json.dumps(gx_result), secrets))
    return ValidationResult(
        checks=checks,
        gx_result=gx_result,
        data_docs=data_docs,
        seconds=seconds,
        breakdown=breakdown,
    )


def _name(table: dict[str, Any]) -> str:
    return f"{table['schema']}.{table['name']}"


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)


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


# --- the pool of connections ---------------------------------------------------------------


class _Pool:
    """`jobs` threads, each with its own connection to the restored database (opened on its
    first piece of work, closed at the end), so several tables are read at once. Records each
    piece's seconds under its label (summed for labels shared by many pieces)."""

    def __init__(self, dsn: str, jobs: int):
        self.dsn = dsn
        self.executor = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="validate")
        self.local = threading.local()
        self.connections: list[psycopg.Connection] = []
        self.lock = threading.Lock()
        self.seconds: dict[str, float] = {}
        self.finished = 0.0  # when the last piece of work ended (time.monotonic)

    def __enter__(self) -> _Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        for conn in self.connections:  # open connections would keep DROP DATABASE waiting
            conn.close()

    def _connection(self) -> psycopg.Connection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = connect(self.dsn, autocommit=True)
            conn.execute(sql.SQL("SET work_mem = {}").format(sql.Literal(SCAN_WORK_MEM)))
            self.local.conn = conn
            with self.lock:
                self.connections.append(conn)
        return conn

    def submit(self, label: str, fn: Callable[..., Any], *args: Any) -> Future:
        def work() -> Any:
            conn = self._connection()
            started = time.monotonic()
            try:
                return fn(conn, *args)
            finally:
                with self.lock:
                    self.seconds[label] = round(self.seconds.get(label, 0) + _since(started), 3)
                    self.finished = max(self.finished, time.monotonic())

        return self.executor.submit(work)

    @staticmethod
    def result(future: Future) -> Any:
        return future.result()


_TABLE_SIZES = """
    SELECT n.nspname || '.' || c.relname, pg_relation_size(c.oid)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""


def _table_sizes(conn: psycopg.Connection) -> dict[str, int]:
    return dict(conn.execute(_TABLE_SIZES).fetchall())


# --- one scan per table --------------------------------------------------------------------


class _Scan(BaseModel):
    """What one read of a table found: rows, NULLs per key column, and, for the rows whose
    key has no NULL, how many share a key with another row (and a few such keys)."""

    rows: int | None = None
    key_nulls: dict[str, int] = {}
    duplicated_rows: int = 0
    duplicated_examples: list[str] = []
    error: str | None = None


def _scan_table(conn: psycopg.Connection, table: dict[str, Any]) -> _Scan:
    """One sequential scan: count(*), count(*) FILTER (key column IS NULL) per key column,
    and count(DISTINCT key) over the keyed rows. Only when keys repeat, a second query names
    how many rows share a key and a few of those keys."""
    relation = sql.SQL("ONLY {}.{}").format(
        sql.Identifier(table["schema"]), sql.Identifier(table["name"])
    )
    key = [sql.Identifier(c) for c in table.get("primary_key") or []]
    items: list[sql.Composable] = [sql.SQL("count(*)")]
    if key:
        keyed = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(k) for k in key)
        value = key[0] if len(key) == 1 else sql.SQL("ROW({})").format(sql.SQL(", ").join(key))
        items += [sql.SQL("count(*) FILTER (WHERE {} IS NULL)").format(k) for k in key]
        items.append(sql.SQL("count(*) FILTER (WHERE {})").format(keyed))
        items.append(sql.SQL("count(DISTINCT {}) FILTER (WHERE {})").format(value, keyed))
    query = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(items), relation)
    try:
        row = conn.execute(query).fetchone()
        scan = _Scan(rows=row[0])
        if not key:
            return scan
        columns = table["primary_key"]
        scan.key_nulls = dict(zip(columns, row[1 : 1 + len(key)], strict=True))
        keyed_rows, distinct = row[-2], row[-1]
        if distinct < keyed_rows:
            duplicated = sql.SQL(
                "SELECT coalesce(sum(n), 0), (array_agg(k ORDER BY k))[1:3] FROM ("
                "SELECT {value}::text AS k, count(*) AS n FROM {relation} WHERE {keyed} "
                "GROUP BY {key} HAVING count(*) > 1) AS d"
            ).format(value=value, relation=relation, keyed=keyed, key=sql.SQL(", ").join(key))
            count, examples = conn.execute(duplicated).fetchone()
            scan.duplicated_rows, scan.duplicated_examples = int(count), list(examples or [])
        return scan
    except psycopg.Error as exc:
        return _Scan(error=f"query failed: {exc}")


class _TableFacts(BaseModel):
    """One row of the facts table GX judges, and the drill checks it stands for."""

    table: str
    restored: bool
    row_count: int | None = None
    expected_row_count: int | None = None
    columns: list[str] = []
    expected_columns: list[str]
    primary_key: list[str] = []
    scan: _Scan | None = None

    @classmethod
    def of(
        cls,
        table: dict[str, Any],
        restored: dict[str, Any],
        scans: dict[str, _Scan],
        row_counts: dict[str, int],
    ) -> _TableFacts:
        name = _name(table)
        found = next(
            (
                t
                for t in restored["tables"]
                if (t["schema"], t["name"]) == (table["schema"], table["name"])
            ),
            None,
        )
        scan = scans.get(name)
        return cls(
            table=name,
            restored=found is not None,
            row_count=scan.rows if scan else None,
            expected_row_count=row_counts.get(name),
            columns=[c[0] for c in found["columns"]] if found else [],
            expected_columns=[c[0] for c in table["columns"]],
            primary_key=list(table.get("primary_key") or []),
            scan=scan,
        )

    @property
    def duplicated_key_rows(self) -> int | None:
        if not self.primary_key or self.scan is None or self.scan.error:
            return None
        return self.scan.duplicated_rows

    @property
    def null_key_rows(self) -> int | None:
        if not self.primary_key or self.scan is None or self.scan.error:
            return None
        return sum(self.scan.key_nulls.values())

    def row(self) -> dict[str, Any]:
        """The facts-table row: lists as text, unknown figures as None (GX skips those)."""
        return {
            "table": self.table,
            "restored": self.restored,
            "row_count": self.row_count,
            "expected_row_count": self.expected_row_count if self.row_count is not None else None,
            "columns": ", ".join(self.columns) if self.restored else None,
            "expected_columns": ", ".join(self.expected_columns),
            "duplicated_key_rows": self.duplicated_key_rows,
            "null_key_rows": self.null_key_rows,
        }

    def checks(self) -> list[DrillCheck]:
        name = self.table
        if not self.restored:
            return [
                DrillCheck(
                    name=f"rows {name}", ok=False, detail="table missing from the restored database"
                )
            ]
        checks = []
        scan = self.scan
        if scan is not None and scan.error:
            checks.append(DrillCheck(name=f"rows {name}", ok=False, detail=scan.error))
        elif self.expected_row_count is not None and scan is not None:
            want, got = self.expected_row_count, scan.rows
            detail = f"{got} rows, expected {want} (manifest)"
            if got != want:
                detail += f": {abs(want - got)} {'missing' if got < want else 'extra'}"
            checks.append(DrillCheck(name=f"rows {name}", ok=got == want, detail=detail))
        checks.append(
            DrillCheck(
                name=f"columns {name}",
                ok=self.columns == self.expected_columns,
                detail=_columns_detail(self.expected_columns, self.columns),
            )
        )
        if self.primary_key and scan is not None and not scan.error:
            key = self.primary_key
            label = key[0] if len(key) == 1 else f"({', '.join(key)})"
            sample = (
                f" (e.g. {', '.join(scan.duplicated_examples)})" if scan.duplicated_examples else ""
            )
            parts = [f"{label}: {scan.duplicated_rows} rows with a duplicated value{sample}"]
            parts += [f"{column}: {scan.key_nulls.get(column, 0)} nulls" for column in key]
            ok = scan.duplicated_rows == 0 and not any(scan.key_nulls.values())
            checks.append(DrillCheck(name=f"primary key {name}", ok=ok, detail="; ".join(parts)))
        elif self.primary_key and scan is not None:
            checks.append(DrillCheck(name=f"primary key {name}", ok=False, detail=scan.error or ""))
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


# --- SQL checks: sequences, foreign keys (in the pool), schema sets and fingerprint ---------

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


def _schema_checks(
    expected: _Expected,
    restored: dict[str, Any],
    schema_name: str | None,
    source: dict[str, Any],
) -> list[DrillCheck]:
    """Sets of tables, indexes and extensions, and the fingerprint: catalog facts only."""
    checks: list[DrillCheck] = []

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

# The facts-table columns GX judges, with the drill check each expectation stands for.
_EXPECTATIONS = (
    ("restored", "rows", "table missing from the restored database"),
    ("row_count", "rows", "row count differs from the manifest"),
    ("columns", "columns", "ordered columns differ from the manifest"),
    ("duplicated_key_rows", "primary key", "rows share a primary key"),
    ("null_key_rows", "primary key", "rows with a NULL primary-key column"),
)


_gx_import: threading.Thread | None = None
_gx_import_lock = threading.Lock()


def warm_up() -> None:
    """Start importing Great Expectations in a background thread (seconds of CPU), so that a
    drill pays for it while pg_restore runs rather than after. Once per process."""
    global _gx_import
    with _gx_import_lock:
        if _gx_import is None and "great_expectations" not in sys.modules:
            _gx_import = threading.Thread(target=_import_gx, name="gx-import", daemon=True)
            _gx_import.start()


def _import_gx() -> None:
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    try:
        import great_expectations  # noqa: F401, PLC0415 - the point is to import it early
    except Exception:  # _GxSession imports it again and reports the failure
        pass


class _GxSession:
    """One ephemeral GX context per drill and one validation: an expectation suite over the
    facts table (one row per table of the manifest), its result and, where configured, Data
    Docs. GX reads no table itself: the scans measured, GX judges and documents."""

    def __init__(self, data_docs_dir: Path | None):
        # Set before the import: GX reads it when the context is created (offline hosts would
        # log upload errors); the import itself costs seconds, so only validations pay it.
        os.environ["GX_ANALYTICS_ENABLED"] = "false"
        if _gx_import is not None:
            _gx_import.join()  # a warm-up under way: let it finish the import
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

    @classmethod
    def start(cls, data_docs_dir: Path | None) -> _GxSession | _GxUnavailable:
        try:
            return cls(data_docs_dir)
        except Exception as exc:  # GX's own failure must not hide the SQL findings
            return _GxUnavailable(f"GX could not start: {exc}")

    def judge(
        self, facts: list[_TableFacts], table_checks: list[DrillCheck]
    ) -> tuple[list[DrillCheck], dict | None, str | None]:
        """Validate the facts table; a failed "gx" check when GX fails or disagrees with the
        table checks, a failed "data docs" check when they cannot be built."""
        if not facts:
            return [], None, None
        try:
            result = self._validate(facts)
        except Exception as exc:
            return (
                [DrillCheck(name="gx", ok=False, detail=f"GX could not validate: {exc}")],
                None,
                None,
            )
        checks = []
        if result["success"] != all(c.ok for c in table_checks):
            checks.append(
                DrillCheck(
                    name="gx",
                    ok=False,
                    detail=f"GX's verdict (success={result['success']}) differs from the table "
                    "checks; see the GX result",
                )
            )
        data_docs = None
        if self.data_docs_dir is not None:
            try:
                data_docs = self._build_data_docs()
            except Exception as exc:
                checks.append(
                    DrillCheck(name="data docs", ok=False, detail=f"could not build: {exc}")
                )
        return (
            checks,
            {
                "success": result["success"],
                "statistics": {
                    key: result["statistics"][key]
                    for key in ("evaluated_expectations", "successful_expectations")
                },
                "validations": [result],
            },
            data_docs,
        )

    def _validate(self, facts: list[_TableFacts]) -> dict[str, Any]:
        import pandas as pd  # noqa: PLC0415 - GX's own dependency, loaded with it

        gx, gxe = self.gx, self.gxe
        asset = self.context.data_sources.add_pandas("restore").add_dataframe_asset(GX_ASSET)
        batch = asset.add_batch_definition_whole_dataframe("one row per table")
        suite = self.context.suites.add(gx.ExpectationSuite(name="restore"))
        either = "either_value_is_missing"
        suite.add_expectation(
            gxe.ExpectColumnValuesToBeInSet(
                column="restored",
                value_set=[True],
                description="Every table of the manifest is in the restored database",
            )
        )
        suite.add_expectation(
            gxe.ExpectColumnPairValuesToBeEqual(
                column_A="row_count",
                column_B="expected_row_count",
                ignore_row_if=either,
                description="Each table has the rows the manifest counted inside the dump's "
                "snapshot",
            )
        )
        suite.add_expectation(
            gxe.ExpectColumnPairValuesToBeEqual(
                column_A="columns",
                column_B="expected_columns",
                ignore_row_if=either,
                description="Each table has the manifest's columns, in its order",
            )
        )
        suite.add_expectation(
            gxe.ExpectColumnValuesToBeInSet(
                column="duplicated_key_rows",
                value_set=[0],
                description="No two rows share a primary key",
            )
        )
        suite.add_expectation(
            gxe.ExpectColumnValuesToBeInSet(
                column="null_key_rows",
                value_set=[0],
                description="No primary-key column is NULL",
            )
        )
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name="restore", data=batch, suite=suite)
        )
        frame = pd.DataFrame([f.row() for f in facts], dtype=object)
        result = definition.run(
            batch_parameters={"dataframe": frame},
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["table"]},
        )
        # numpy scalars and the like as plain JSON, as the catalog stores it
        return json.loads(json.dumps(result.to_json_dict(), default=str))

    def _build_data_docs(self) -> str | None:
        urls = self.context.build_data_docs(site_names=[DATA_DOCS_SITE])
        index = self.data_docs_dir / "index.html" if self.data_docs_dir else None
        return str(index) if urls and index and index.is_file() else None


class _GxUnavailable:
    """Stands in for a GX session that could not start: the drill fails with the reason."""

    def __init__(self, reason: str):
        self.reason = reason

    def judge(
        self, facts: list[_TableFacts], table_checks: list[DrillCheck]
    ) -> tuple[list[DrillCheck], dict | None, str | None]:
        if not facts:
            return [], None, None
        return [DrillCheck(name="gx", ok=False, detail=self.reason)], None, None


# --- pg_amcheck ----------------------------------------------------------------------------


def _amcheck(dsn: str, binary: str, timeout: float, jobs: int, drop_after: bool) -> DrillCheck:
    """pg_amcheck's default checks (every heap, every btree) over `jobs` connections;
    --install-missing creates the amcheck extension it needs, which we drop again so the
    scratch copy stays faithful."""
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
                [binary, "--install-missing", f"--jobs={max(1, jobs)}", "--no-password", conninfo],
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
