"""Versioned, batched writes into PostgreSQL or any Postgres-wire distributed SQL store.

Example::

    from retail_backbone.io.sinks.postgres import (
        INVENTORY_TABLES, STOCK_LEVELS, WriteToPostgresVersioned, ensure_tables)

    ensure_tables("env:INVENTORY_PG_DSN", INVENTORY_TABLES)   # at launch, before p.run()
    failed = levels | "WriteStockLevels" >> WriteToPostgresVersioned(
        "env:INVENTORY_PG_DSN", STOCK_LEVELS, pipeline="inventory")
    # failed: PCollection[DeadLetter]; merge it into the pipeline's dead-letter sink.

A table is declared once as a ``TableSpec`` (name, columns with SQL types, key, version column,
mode); its DDL, staging table and statements are generated from it. Each batch is one
transaction:

1. ``COPY`` the rows into a session-local ``TEMP`` staging table (same columns, no constraints,
   ``ON COMMIT DELETE ROWS``; created once per connection, so nothing is created per batch).
2. ``INSERT INTO target SELECT ... FROM staging ORDER BY key ON CONFLICT (key) DO UPDATE SET ...
   WHERE excluded.version > target.version``: a row lands only if it is newer than the stored
   one. The statement's row count is the number written; the rest of the batch was stale.
   Insert-if-absent tables (append-only, e.g. alerts) use ``ON CONFLICT (key) DO NOTHING``.
   Ordering by key makes concurrent writers lock rows in the same order (fewer deadlocks).

Replays rewrite identical rows and are skipped as stale (equal versions never overwrite), so
running a backfill twice leaves byte-identical tables. Columns such as ``updated_at`` must come
from the data (event time), never from ``now()``, for the same reason.

Errors, by SQLSTATE class: 08 (connection), 40 (serialization failure, deadlock: distributed SQL
stores ask clients to retry these), 53 (resources), 57 (operator intervention, e.g. shutdown),
58 and lock timeouts are transient; 22 (data) and 23 (constraint) are bad rows (the batch is
bisected to find them); anything else (missing table, permissions) dead-letters the batch.

The connection string may be given as ``env:VARIABLE``: workers then read it from their own
environment, and it never appears in the pipeline graph. It is never put in display data (only
host, port, database and user are), logs or dead letters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
import psycopg
from apache_beam.transforms.display import DisplayDataItem
from psycopg import sql

from retail_backbone.io.sinks.base import (
    BatchResult,
    BatchWriter,
    ErrorKind,
    SinkConfigError,
    SinkPolicy,
    SinkTarget,
    VersionedWriteFn,
    decode_row,
    field_of,
    resolve_secret,
)
from retail_backbone.io.sinks.rows import DemandForecastRow, StockAlertRow, StockLevelRow

__all__ = [
    "DEMAND_FORECAST",
    "INVENTORY_TABLES",
    "STOCK_ALERTS",
    "STOCK_LEVELS",
    "Column",
    "DemandForecastRow",
    "PostgresTarget",
    "StockAlertRow",
    "StockLevelRow",
    "TableSpec",
    "WriteToPostgresVersioned",
    "ensure_tables",
    "redacted_dsn",
]

_LOG = logging.getLogger(__name__)
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class Column:
    """One column: name, SQL type as written in DDL, and whether NULL is allowed."""

    name: str
    sql_type: str
    nullable: bool = False


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """A versioned table, declared once; DDL and statements are generated from it.

    Attributes:
        name: table name (lower-case identifier, resolved through the search path).
        columns: every column, in COPY order.
        key: the primary key columns; ``ON CONFLICT`` targets them.
        version: the integer column that decides which write wins.
        tiebreak: an integer column that decides between two rows of one version (the higher
            wins), for rows streaming refines without a newer event; None: equal versions never
            overwrite.
        insert_if_absent: ``True`` for append-only tables: the first row per key stays.
        row_type: the NamedTuple rows are written as (used to decode dead-letter payloads).
    """

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    version: str = "version"
    tiebreak: str | None = None
    insert_if_absent: bool = False
    row_type: type | None = None

    def __post_init__(self) -> None:
        names = self.column_names
        bad = [n for n in (self.name, *names) if not _IDENTIFIER.match(n)]
        if bad:
            raise SinkConfigError(f"table {self.name}: not lower-case identifiers: {bad}")
        if len(set(names)) != len(names):
            raise SinkConfigError(f"table {self.name}: duplicate column names")
        needed = (*self.key, self.version, *([self.tiebreak] if self.tiebreak else []))
        missing = [n for n in needed if n not in names]
        if missing or not self.key:
            raise SinkConfigError(f"table {self.name}: key/version columns {missing} not declared")
        if self.row_type is not None and tuple(self.row_type._fields) != names:
            raise SinkConfigError(
                f"table {self.name}: row type {self.row_type.__name__} has fields "
                f"{self.row_type._fields}, columns are {names}"
            )

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def staging_name(self) -> str:
        return f"_staging_{self.name}"

    def renamed(self, name: str) -> TableSpec:
        """The same table under another name (per-test tables, blue/green loads)."""
        return dataclasses.replace(self, name=name)

    def decode(self, payload: bytes) -> Any:
        """A dead letter's payload back as a row of ``row_type``, ready to write again."""
        if self.row_type is None:
            raise SinkConfigError(f"table {self.name} has no row_type to decode into")
        return decode_row(self.row_type, payload)

    def _idents(self, names: Iterable[str]) -> sql.Composed:
        return sql.SQL(", ").join(map(sql.Identifier, names))

    def create_sql(self) -> sql.Composed:
        """``CREATE TABLE IF NOT EXISTS`` with NOT NULLs and the primary key."""
        defs = [
            sql.SQL("{} {}{}").format(
                sql.Identifier(c.name),
                sql.SQL(c.sql_type),
                sql.SQL("" if c.nullable else " NOT NULL"),
            )
            for c in self.columns
        ]
        return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}))").format(
            sql.Identifier(self.name), sql.SQL(", ").join(defs), self._idents(self.key)
        )

    def staging_sql(self) -> sql.Composed:
        """The session's staging table: no constraints, so bad rows fail in the INSERT."""
        defs = [
            sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.sql_type))
            for c in self.columns
        ]
        return sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS").format(
            sql.Identifier(self.staging_name), sql.SQL(", ").join(defs)
        )

    def copy_sql(self) -> sql.Composed:
        return sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(self.staging_name), self._idents(self.column_names)
        )

    def merge_sql(self) -> sql.Composed:
        """Staging -> target: newer versions win (or first writer wins for insert-if-absent)."""
        cols = self._idents(self.column_names)
        if self.insert_if_absent:
            action = sql.SQL("NOTHING")
        else:
            updates = [c for c in self.column_names if c not in self.key]
            if self.tiebreak:
                # Row comparison: the version decides, the tie-breaker only between equal ones
                # (a tie-breaker column added by a migration is NULL on old rows).
                newer = sql.SQL("(excluded.{v}, excluded.{b}) > (t.{v}, coalesce(t.{b}, -1))")
            else:
                newer = sql.SQL("excluded.{v} > t.{v}")
            action = sql.SQL("UPDATE SET {} WHERE {}").format(
                sql.SQL(", ").join(
                    sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c)) for c in updates
                ),
                newer.format(
                    v=sql.Identifier(self.version),
                    b=sql.Identifier(self.tiebreak or self.version),
                ),
            )
        return sql.SQL(
            "INSERT INTO {t} AS t ({cols}) SELECT {cols} FROM {s} ORDER BY {key} "
            "ON CONFLICT ({key}) DO {action}"
        ).format(
            t=sql.Identifier(self.name),
            s=sql.Identifier(self.staging_name),
            cols=cols,
            key=self._idents(self.key),
            action=action,
        )


# -- the inventory tables ----------------------------------------------------------------------


STOCK_LEVELS = TableSpec(
    name="stock_levels",
    columns=(
        Column("sku", "text"),
        Column("location", "text"),
        Column("on_hand", "integer"),
        Column("reserved", "integer"),
        Column("available", "integer"),
        Column("version", "bigint"),
        Column("updated_at", "timestamptz"),
        Column("movements_applied", "bigint"),
    ),
    key=("sku", "location"),
    tiebreak="movements_applied",
    row_type=StockLevelRow,
)
STOCK_ALERTS = TableSpec(
    name="stock_alerts",
    columns=(
        Column("alert_id", "text"),
        Column("sku", "text"),
        Column("location", "text"),
        Column("kind", "text"),
        Column("available", "integer"),
        Column("reorder_point", "double precision"),
        Column("version", "bigint"),
    ),
    key=("alert_id",),
    insert_if_absent=True,
    row_type=StockAlertRow,
)
DEMAND_FORECAST = TableSpec(
    name="demand_forecast",
    columns=(
        Column("sku", "text"),
        Column("location", "text"),
        Column("day", "date"),
        Column("forecast", "double precision"),
        Column("trend", "double precision"),
        Column("safety_stock", "double precision"),
        Column("reorder_point", "double precision"),
        Column("version", "bigint"),
        Column("revision", "integer"),
    ),
    key=("sku", "location", "day"),
    tiebreak="revision",
    row_type=DemandForecastRow,
)
INVENTORY_TABLES = (STOCK_LEVELS, STOCK_ALERTS, DEMAND_FORECAST)


# -- launch-time DDL ---------------------------------------------------------------------------


def redacted_dsn(dsn: str) -> str:
    """``user@host:port/dbname`` of a libpq DSN or URL (``env:NAME`` as is); no password."""
    if dsn.startswith("env:"):
        return dsn
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable connection string>"
    user = f"{info['user']}@" if info.get("user") else ""
    port = f":{info['port']}" if info.get("port") else ""
    return f"{user}{info.get('host', 'localhost')}{port}/{info.get('dbname', '')}"


def ensure_tables(
    dsn: str, specs: Iterable[TableSpec], *, connect_timeout_s: float = 10.0
) -> list[str]:
    """Create missing tables and add missing columns; refuse incompatible existing tables.

    Run at launch (``WriteToPostgresVersioned`` calls it while the pipeline is built unless
    ``create_tables=False``), never per element. Migrations are additive: a column added to an
    existing table is nullable (its old rows have no value). A column whose type differs from
    the spec, or a table without a unique index on exactly the key, is an error to fix by hand.

    Args:
        dsn: libpq connection string or ``env:VARIABLE``.
        specs: the tables.
        connect_timeout_s: how long to wait for the database.

    Returns:
        What was done, one line per change (empty when everything was in place).

    Raises:
        SinkConfigError: an existing table does not fit its spec, or the database is
            unreachable (the message names the table or the address, never the password).
    """
    changes: list[str] = []
    try:
        with psycopg.connect(
            resolve_secret(dsn), autocommit=True, connect_timeout=max(2, int(connect_timeout_s))
        ) as conn:
            for spec in specs:
                changes += _ensure_table(conn, spec)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SinkConfigError(f"cannot reach Postgres at {redacted_dsn(dsn)}: {first}") from exc
    for change in changes:
        _LOG.info("postgres sink: %s", change)
    return changes


def _ensure_table(conn: psycopg.Connection, spec: TableSpec) -> list[str]:
    changes = []
    with conn.transaction():
        existed = conn.execute("SELECT to_regclass(%s)", (spec.name,)).fetchone()[0] is not None
        conn.execute(spec.create_sql())
        if not existed:
            return [f"created table {spec.name}"]
        current = dict(
            conn.execute(
                "SELECT attname, atttypid FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (spec.name,),
            ).fetchall()
        )
        for col in spec.columns:
            wanted = conn.execute("SELECT %s::regtype::oid", (col.sql_type,)).fetchone()[0]
            if col.name not in current:
                conn.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                        sql.Identifier(spec.name), sql.Identifier(col.name), sql.SQL(col.sql_type)
                    )
                )
                changes.append(f"added column {spec.name}.{col.name} {col.sql_type} (nullable)")
            elif current[col.name] != wanted:
                have = conn.execute("SELECT %s::regtype::text", (current[col.name],)).fetchone()[0]
                raise SinkConfigError(
                    f"column {spec.name}.{col.name} is {have} but the spec says {col.sql_type}; "
                    f"migrate it by hand (ALTER TABLE {spec.name} ALTER COLUMN {col.name} TYPE ...)"
                )
        unique_keys = {
            frozenset(cols)
            for (cols,) in conn.execute(
                "SELECT array_agg(a.attname::text) FROM pg_index i JOIN pg_attribute a "
                "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                "WHERE i.indrelid = %s::regclass AND i.indisunique GROUP BY i.indexrelid",
                (spec.name,),
            )
        }
        if frozenset(spec.key) not in unique_keys:
            raise SinkConfigError(
                f"table {spec.name} has no primary key or unique index on exactly "
                f"({', '.join(spec.key)}), which ON CONFLICT needs; add one or drop the table"
            )
    return changes


# -- the writer --------------------------------------------------------------------------------

_TRANSIENT_CLASSES = {"08", "40", "53", "57", "58"}
_TRANSIENT_STATES = {"55P03", "55006"}  # lock_not_available, object_in_use
_ROW_CLASSES = {"22", "23"}


class _PostgresWriter(BatchWriter):
    store = "postgres"

    def __init__(self, dsn: str, spec: TableSpec, policy: SinkPolicy) -> None:
        self._dsn_ref = dsn
        self._spec = spec
        self._connect_timeout = max(2, int(policy.connect_timeout_s))  # libpq's minimum is 2
        self._statement_timeout_ms = int(policy.call_timeout_s * 1000)
        self.insert_if_absent = spec.insert_if_absent
        self._conn: psycopg.Connection | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_conn": None}

    @property
    def target(self) -> str:
        return self._spec.name

    def key(self, row: Any) -> tuple:
        return tuple(field_of(row, k) for k in self._spec.key)

    def version(self, row: Any) -> int:
        return field_of(row, self._spec.version)

    def tiebreak(self, row: Any) -> int:
        return field_of(row, self._spec.tiebreak) if self._spec.tiebreak else 0

    def open(self) -> None:
        # Resolved here so a missing secret fails setup() (a configuration error), not a batch.
        self._dsn = resolve_secret(self._dsn_ref)
        self._copy = self._spec.copy_sql()
        self._merge = self._spec.merge_sql()

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            conn = psycopg.connect(
                self._dsn,
                autocommit=True,
                connect_timeout=self._connect_timeout,
                application_name="retail-backbone-sink",
            )
            try:
                conn.execute(f"SET statement_timeout = {self._statement_timeout_ms}")
                conn.execute(self._spec.staging_sql())
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def write(self, rows: Sequence[Any]) -> BatchResult:
        names = self._spec.column_names
        values = [[field_of(row, n) for n in names] for row in rows]
        conn = self._connection()
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(self._copy) as copy:
                for row in values:
                    copy.write_row(row)
            cur.execute(self._merge)
            written = cur.rowcount
        return BatchResult(written=written, stale=len(rows) - written)

    def classify(self, error: BaseException) -> ErrorKind:
        if isinstance(error, psycopg.Error):
            state = error.sqlstate
            if state is None:
                if isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
                    return ErrorKind.TRANSIENT
                return ErrorKind.ROW  # a value psycopg cannot adapt belongs to one row
            if state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_STATES:
                return ErrorKind.TRANSIENT
            return ErrorKind.ROW if state[:2] in _ROW_CLASSES else ErrorKind.BATCH
        if isinstance(error, TypeError | ValueError | KeyError | AttributeError):
            return ErrorKind.ROW
        if isinstance(error, OSError):
            return ErrorKind.TRANSIENT
        return ErrorKind.BATCH

    def reset(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):  # already broken; we only want it gone
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        self.reset()

    def display_data(self) -> dict[str, Any]:
        return {
            "table": self._spec.name,
            "mode": "insert_if_absent" if self._spec.insert_if_absent else "newest_version_wins",
            "database": redacted_dsn(self._dsn_ref),
        }


class WriteToPostgresVersioned(beam.PTransform):
    """Write NamedTuple rows to a ``TableSpec`` table; returns a PCollection of ``DeadLetter``.

    Rows whose version is not newer than the stored one are skipped (``skipped_stale``); rows
    the database refuses, and rows not written because it was unreachable
    (``error_class="sink_unavailable"``), come out as dead letters. See ``sinks.base`` for the
    contract and the counters.

    Args:
        dsn: libpq connection string, or ``env:VARIABLE`` to read it on the workers.
        table: the table's spec.
        pipeline: pipeline name for dead letters and the counters' namespace.
        policy: batching, retry and breaker settings.
        create_tables: run ``ensure_tables`` while the pipeline is built (at launch).
        label: step label (also the dead letters' ``stage``).
    """

    def __init__(
        self,
        dsn: str,
        table: TableSpec,
        *,
        pipeline: str,
        policy: SinkPolicy | None = None,
        create_tables: bool = True,
        label: str | None = None,
    ) -> None:
        super().__init__(label)
        self._dsn = dsn
        self._table = table
        self._pipeline = pipeline
        self._policy = policy or SinkPolicy()
        self._create_tables = create_tables

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        fields = getattr(rows.element_type, "_fields", None)
        if fields is not None and set(self._table.column_names) - set(fields):
            raise SinkConfigError(
                f"{self.label}: rows of type {rows.element_type.__name__} lack columns "
                f"{sorted(set(self._table.column_names) - set(fields))} of {self._table.name}"
            )
        if self._create_tables:
            ensure_tables(
                self._dsn, [self._table], connect_timeout_s=self._policy.connect_timeout_s
            )
        writer = _PostgresWriter(self._dsn, self._table, self._policy)
        return rows | "UpsertVersioned" >> beam.ParDo(
            VersionedWriteFn(writer, self._policy, self._pipeline, self.label)
        )

    def display_data(self) -> dict[str, Any]:
        return {
            "table": DisplayDataItem(self._table.name, label="Table"),
            "database": DisplayDataItem(redacted_dsn(self._dsn), label="Database"),
        }


@dataclasses.dataclass(frozen=True)
class PostgresTarget(SinkTarget):
    """A ``TableSpec`` table in the database ``dsn`` (a libpq string or ``env:VAR``).

    Example::

        target = PostgresTarget(opts.postgres_dsn, STOCK_LEVELS)
        failed = levels | "WriteStockLevels" >> target.transform("inventory")
        row = target.decode(letter.payload)  # a sink dead letter's row, to write again
    """

    dsn: str
    spec: TableSpec
    store = "postgres"

    @property
    def name(self) -> str:
        return self.spec.name

    def decode(self, payload: bytes) -> Any:
        return self.spec.decode(payload)

    def writer(self, policy: SinkPolicy) -> BatchWriter:
        return _PostgresWriter(self.dsn, self.spec, policy)

    def transform(self, pipeline: str, policy: SinkPolicy | None = None) -> beam.PTransform:
        return WriteToPostgresVersioned(
            self.dsn, self.spec, pipeline=pipeline, policy=policy, create_tables=False
        )

    def ensure(self) -> list[str]:
        return ensure_tables(self.dsn, [self.spec])
