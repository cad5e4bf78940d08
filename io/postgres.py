"""Batched, idempotent upserts of typed rows into PostgreSQL (any Postgres-wire SQL store).

Example::

    rows | "WriteCounts" >> UpsertRows(dsn, "event_counts", key_columns=("run_id", "event_type"))

Rows are NamedTuples; their field names are the column names. A retried bundle writes the same
keys again, so the result does not depend on retries. It serves unversioned result tables (the
smoke job's counts); versioned tables use ``retail_backbone.io.sinks.postgres``
(``WriteToPostgresVersioned``: staging tables, last writer wins by version, retries, a circuit
breaker and dead letters).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics

__all__ = ["UpsertRows"]


class _UpsertRowsFn(beam.DoFn):
    def __init__(self, dsn: str, table: str, key_columns: Sequence[str], batch_size: int) -> None:
        self._dsn = dsn
        self._table = table
        self._keys = tuple(key_columns)
        self._batch_size = batch_size
        self._conn = None
        self._batch: list[tuple] = []
        self._fields: tuple[str, ...] | None = None
        self._written = Metrics.counter("postgres", f"{table}_rows_written")

    def setup(self) -> None:
        import psycopg

        self._conn = psycopg.connect(self._dsn, autocommit=False)

    def process(self, row: tuple) -> Iterator[None]:
        self._fields = self._fields or row._fields
        self._batch.append(tuple(row))
        if len(self._batch) >= self._batch_size:
            self._flush()
        yield from ()  # a sink: nothing goes downstream

    def finish_bundle(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if not self._batch:
            return
        from psycopg import sql

        cols = self._fields
        updates = [c for c in cols if c not in self._keys]
        stmt = sql.SQL("INSERT INTO {t} ({c}) VALUES ({v}) ON CONFLICT ({k}) DO {action}").format(
            t=sql.Identifier(self._table),
            c=sql.SQL(", ").join(map(sql.Identifier, cols)),
            v=sql.SQL(", ").join(sql.Placeholder() * len(cols)),
            k=sql.SQL(", ").join(map(sql.Identifier, self._keys)),
            action=sql.SQL("UPDATE SET {}").format(
                sql.SQL(", ").join(
                    sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in updates
                )
            )
            if updates
            else sql.SQL("NOTHING"),
        )
        with self._conn.cursor() as cur:
            cur.executemany(stmt, self._batch)
        self._conn.commit()
        self._written.inc(len(self._batch))
        self._batch = []

    def teardown(self) -> None:
        if self._conn is not None:
            self._conn.close()


@beam.ptransform_fn
def UpsertRows(
    pcoll: beam.PCollection,
    dsn: str,
    table: str,
    key_columns: Sequence[str],
    batch_size: int = 500,
) -> beam.PCollection:
    """Upsert NamedTuple rows into ``table`` keyed by ``key_columns`` (table must exist)."""
    return pcoll | "Upsert" >> beam.ParDo(_UpsertRowsFn(dsn, table, key_columns, batch_size))
