"""Versioned writes into the graph store (Neo4j over Bolt): product nodes and co-purchase edges.

Example::

    from retail_backbone.io.sinks.graph import GraphSpec, WriteToGraphVersioned, ensure_graph_schema

    spec = GraphSpec()                                   # labels Product and Category
    ensure_graph_schema("bolt://127.0.0.1:7687", spec)   # at launch: constraints and indexes
    failed = edges | "WriteProductGraph" >> WriteToGraphVersioned(
        "bolt://127.0.0.1:7687", spec, kind="edges", pipeline="personalization")
    # failed: PCollection[DeadLetter]; merge it into the pipeline's dead-letter sink.

The model::

    (:Product {sku, category, brand, active, version})-[:IN_CATEGORY]->(:Category {name})
    (:Product)-[:BOUGHT_WITH {window, count, total, weight, as_of_ms, days, counts,
                              version}]->(:Product)
    (:Product)-[:VIEWED_WITH {...the same properties...}]->(:Product)

Edges are undirected in meaning and stored once, from the smaller sku to the larger
(``CoPurchaseEdge.a < b``); query them without a direction: ``(p)-[:BOUGHT_WITH]-(q)``.

Idempotence: each batch is one ``UNWIND $rows AS r MERGE ... SET ...`` statement whose ``SET``
only runs when the row ranks above the stored one: properties are replaced, never incremented,
and a row that does not rank higher changes nothing (counted as ``skipped_stale``: rows sent
minus rows the statement reports as applied). Edges rank by ``(version, total)``: a late event
within the allowed lateness adds evidence to an older day without raising the edge's newest
event time, so of two rows with one version the one with more evidence (``total``, the sinks'
tie-breaker, as ``movements_applied`` for stock levels) wins. Products rank by ``version``.
A replay, a retried batch or an out-of-order older row therefore leaves the graph as it was.
The uniqueness
constraints on ``Product.sku`` and ``Category.name`` (created at launch by
``ensure_graph_schema``) make concurrent ``MERGE``s of one node from several workers safe; a
deadlock between two such batches is a ``TransientError`` and retried.

Same contract as the other sinks (``io/sinks/base.py``): batches, retries with backoff, circuit
breaker to ``sink_unavailable`` dead letters, bisection of bad rows, counters. Writes use one
auto-commit transaction per batch and no driver-side retries (``BatchGuard`` owns them).

Per-test or blue/green graphs: ``GraphSpec(suffix="_t1234")`` writes labels ``Product_t1234``
and ``Category_t1234`` (relationship types stay the same; they only join those nodes).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.transforms.display import DisplayDataItem

from retail_backbone.io.sinks.base import (
    BatchResult,
    BatchWriter,
    ErrorKind,
    SinkConfigError,
    SinkPolicy,
    SinkTarget,
    VersionedWriteFn,
    checked_version,
    decode_row,
    field_of,
    resolve_secret,
)

__all__ = [
    "GraphSpec",
    "GraphTarget",
    "WriteToGraphVersioned",
    "ensure_graph_schema",
    "graph_driver",
]

_LOG = logging.getLogger(__name__)
_LABEL = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
KINDS = ("edges", "products")
#: Relationship types of co-purchase edges (``CoPurchaseEdge.kind``).
EDGE_KINDS = ("BOUGHT_WITH", "VIEWED_WITH")


@dataclasses.dataclass(frozen=True)
class GraphSpec:
    """Node labels of the product graph, declared once.

    Attributes:
        product_label: label of product nodes (key ``sku``).
        category_label: label of category nodes (key ``name``).
        suffix: appended to both labels (per-test or blue/green graphs).
    """

    product_label: str = "Product"
    category_label: str = "Category"
    suffix: str = ""

    def __post_init__(self) -> None:
        for label in (self.product, self.category):
            if not _LABEL.match(label):
                raise SinkConfigError(f"graph label {label!r}: letters, digits and _ only")

    @property
    def product(self) -> str:
        return self.product_label + self.suffix

    @property
    def category(self) -> str:
        return self.category_label + self.suffix

    def schema_statements(self) -> list[str]:
        """Constraints and indexes, each ``IF NOT EXISTS`` (safe to run at every launch)."""
        p, c = self.product, self.category
        statements = [
            f"CREATE CONSTRAINT {p.lower()}_sku IF NOT EXISTS FOR (n:{p}) REQUIRE n.sku IS UNIQUE",
            f"CREATE CONSTRAINT {c.lower()}_name IF NOT EXISTS "
            f"FOR (n:{c}) REQUIRE n.name IS UNIQUE",
        ]
        statements += [
            f"CREATE INDEX {kind.lower()}_weight IF NOT EXISTS FOR ()-[e:{kind}]-() ON (e.weight)"
            for kind in EDGE_KINDS
        ]
        return statements

    def edge_statement(self, kind: str) -> str:
        if kind not in EDGE_KINDS:
            raise ValueError(f"unknown edge kind {kind!r}")
        p = self.product
        return (
            "UNWIND $rows AS r "
            f"MERGE (a:{p} {{sku: r.a}}) "
            f"MERGE (b:{p} {{sku: r.b}}) "
            f"MERGE (a)-[e:{kind}]->(b) "
            "WITH e, r WHERE e.version IS NULL OR e.version < r.version "
            "OR (e.version = r.version AND coalesce(e.total, -1) < r.total) "
            "SET e.window = r.window, e.count = r.count, e.total = r.total, "
            "e.weight = r.weight, e.as_of_ms = r.as_of_ms, e.days = r.days, "
            "e.counts = r.counts, e.version = r.version "
            "RETURN count(e) AS applied"
        )

    def product_statement(self) -> str:
        p, c = self.product, self.category
        return (
            "UNWIND $rows AS r "
            f"MERGE (p:{p} {{sku: r.sku}}) "
            "WITH p, r WHERE p.version IS NULL OR p.version < r.version "
            "SET p.category = r.category, p.top_category = r.top_category, "
            "p.brand = r.brand, p.active = r.active, p.version = r.version "
            "WITH p, r "
            f"OPTIONAL MATCH (p)-[old:IN_CATEGORY]->(:{c}) DELETE old "
            "WITH DISTINCT p, r "
            f"MERGE (c:{c} {{name: r.category}}) "
            "MERGE (p)-[:IN_CATEGORY]->(c) "
            "RETURN count(p) AS applied"
        )


def graph_driver(uri: str, user: str | None = None, password: str | None = None, **config: Any):
    """A neo4j driver; ``password`` may be ``env:VAR``. No auth when ``user`` is not given."""
    from neo4j import GraphDatabase

    auth = (user, resolve_secret(password or "")) if user else None
    return GraphDatabase.driver(uri, auth=auth, **config)


def ensure_graph_schema(
    uri: str, spec: GraphSpec, user: str | None = None, password: str | None = None
) -> list[str]:
    """Create the constraints and indexes of ``spec`` if missing (at launch).

    Returns:
        The statements that were run.

    Raises:
        SinkConfigError: the graph store refused or could not be reached.
    """
    from neo4j.exceptions import DriverError, Neo4jError

    statements = spec.schema_statements()
    try:
        with graph_driver(uri, user, password, connection_timeout=10) as driver:
            for statement in statements:
                driver.execute_query(statement)
    except (DriverError, Neo4jError, OSError) as exc:
        raise SinkConfigError(f"graph store {uri}: {type(exc).__name__}: {exc}") from exc
    return statements


def _edge_params(row: Any) -> dict[str, Any]:
    return {
        "a": row.a,
        "b": row.b,
        "window": row.window,
        "count": row.count,
        "total": row.total,
        "weight": float(row.weight),
        "as_of_ms": row.as_of_ms,
        "days": list(row.days),
        "counts": list(row.counts),
        "version": checked_version(row.version),
    }


def _product_params(row: Any) -> dict[str, Any]:
    return {
        "sku": row.sku,
        "category": row.category,
        "top_category": row.top_category,
        "brand": row.brand,
        "active": bool(row.active),
        "version": checked_version(row.version),
    }


class _GraphWriter(BatchWriter):
    store = "graph"

    def __init__(
        self,
        uri: str,
        spec: GraphSpec,
        kind: str,
        policy: SinkPolicy,
        user: str | None,
        password: str | None,
    ) -> None:
        if kind not in KINDS:
            raise SinkConfigError(f"graph sink kind must be one of {KINDS}, not {kind!r}")
        self._uri = uri
        self._spec = spec
        self._kind = kind
        self._policy = policy
        self._user = user
        self._password = password  # a reference (env:VAR) or literal; resolved in open()
        self._driver = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_driver": None}

    @property
    def target(self) -> str:
        return f"{self._spec.product}/{self._kind}"

    def key(self, row: Any) -> tuple:
        if self._kind == "edges":
            return (field_of(row, "kind"), field_of(row, "a"), field_of(row, "b"))
        return (field_of(row, "sku"),)

    def version(self, row: Any) -> int:
        return field_of(row, "version")

    def tiebreak(self, row: Any) -> int:
        return field_of(row, "total") if self._kind == "edges" else 0

    def open(self) -> None:
        from neo4j import exceptions as nx

        self._transient = (
            nx.ServiceUnavailable,
            nx.SessionExpired,
            nx.TransientError,
            nx.ConnectionAcquisitionTimeoutError,
            nx.DatabaseUnavailable,
            ConnectionError,
            TimeoutError,
            OSError,
        )
        self._row_errors = (nx.CypherTypeError, nx.ConstraintError, TypeError, ValueError)
        self._connect()

    def _connect(self) -> None:
        self._driver = graph_driver(
            self._uri,
            self._user,
            self._password,
            connection_timeout=self._policy.connect_timeout_s,
            connection_acquisition_timeout=self._policy.connect_timeout_s,
            max_transaction_retry_time=0,
        )

    def _run(self, statement: str, params: list[dict[str, Any]]) -> int:
        from neo4j import Query

        with self._driver.session() as session:
            query = Query(statement, timeout=self._policy.call_timeout_s)
            record = session.run(query, rows=params).single()
            return record["applied"] if record else 0

    def write(self, rows: Sequence[Any]) -> BatchResult:
        if self._driver is None:
            self._connect()
        result = BatchResult()
        if self._kind == "products":
            params = [_product_params(r) for r in rows]
            result.written = self._run(self._spec.product_statement(), params)
        else:
            by_kind: dict[str, list[dict[str, Any]]] = {}
            for row in rows:
                by_kind.setdefault(row.kind, []).append(_edge_params(row))
            for kind in sorted(by_kind):
                result.written += self._run(self._spec.edge_statement(kind), by_kind[kind])
        result.stale = len(rows) - result.written
        return result

    def classify(self, error: BaseException) -> ErrorKind:
        from neo4j import exceptions as nx

        if isinstance(error, self._transient):
            return ErrorKind.TRANSIENT
        if isinstance(error, nx.AuthError | nx.Forbidden):
            return ErrorKind.BATCH
        if isinstance(error, self._row_errors):
            return ErrorKind.ROW
        return ErrorKind.BATCH

    def reset(self) -> None:
        # A fresh pool: connections broken by an outage would otherwise be handed out again.
        if self._driver is not None:
            driver, self._driver = self._driver, None
            try:
                driver.close()
            except Exception as exc:  # closing a broken pool may fail; it is gone anyway
                _LOG.debug("graph sink: closing the old driver failed: %s", exc)

    def close(self) -> None:
        self.reset()

    def display_data(self) -> dict[str, Any]:
        return {"graph": self._uri, "labels": self.target}


class WriteToGraphVersioned(beam.PTransform):
    """Write ``CoPurchaseEdge`` (``kind="edges"``) or ``ProductInfo`` (``kind="products"``) rows.

    Returns a PCollection of ``DeadLetter`` (rows not written, with the reason).

    Args:
        uri: Bolt URI, e.g. ``bolt://127.0.0.1:7687``.
        spec: node labels.
        kind: ``edges`` or ``products``.
        pipeline: pipeline name for dead letters and the counters' namespace.
        policy: batching, retry and breaker settings.
        user: Bolt user (no auth when ``None``).
        password: literal or ``env:VAR`` (resolved on the workers, never in display data).
        create_schema: create constraints and indexes while building the pipeline.
        label: step label (also the dead letters' ``stage``).
    """

    def __init__(
        self,
        uri: str,
        spec: GraphSpec,
        *,
        kind: str,
        pipeline: str,
        policy: SinkPolicy | None = None,
        user: str | None = None,
        password: str | None = None,
        create_schema: bool = True,
        label: str | None = None,
    ) -> None:
        super().__init__(label)
        if kind not in KINDS:
            raise SinkConfigError(f"graph sink kind must be one of {KINDS}, not {kind!r}")
        self._uri = uri
        self._spec = spec
        self._kind = kind
        self._pipeline = pipeline
        self._policy = policy or SinkPolicy()
        self._user = user
        self._password = password
        self._create_schema = create_schema

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        if self._create_schema:
            ensure_graph_schema(self._uri, self._spec, self._user, self._password)
        writer = _GraphWriter(
            self._uri, self._spec, self._kind, self._policy, self._user, self._password
        )
        return rows | "MergeVersioned" >> beam.ParDo(
            VersionedWriteFn(writer, self._policy, self._pipeline, self.label)
        )

    def display_data(self) -> dict[str, Any]:
        return {
            "graph": DisplayDataItem(self._uri, label="Graph store"),
            "labels": DisplayDataItem(f"{self._spec.product}/{self._kind}", label="Writes"),
        }


@dataclasses.dataclass(frozen=True)
class GraphTarget(SinkTarget):
    """Nodes or edges of the product graph at ``uri``.

    ``kind="products"``: ``ProductInfo`` rows; ``kind="edges"``: ``CoPurchaseEdge`` rows.
    """

    uri: str
    spec: GraphSpec
    kind: str
    user: str | None = None
    password: str | None = None
    store = "graph"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SinkConfigError(f"graph sink kind must be one of {KINDS}, not {self.kind!r}")

    @property
    def name(self) -> str:
        return f"{self.spec.product}/{self.kind}"

    def decode(self, payload: bytes) -> Any:
        from retail_backbone.transforms.personalization.types import CoPurchaseEdge, ProductInfo

        return decode_row(CoPurchaseEdge if self.kind == "edges" else ProductInfo, payload)

    def writer(self, policy: SinkPolicy) -> BatchWriter:
        return _GraphWriter(self.uri, self.spec, self.kind, policy, self.user, self.password)

    def transform(self, pipeline: str, policy: SinkPolicy | None = None) -> beam.PTransform:
        return WriteToGraphVersioned(
            self.uri,
            self.spec,
            kind=self.kind,
            pipeline=pipeline,
            policy=policy,
            user=self.user,
            password=self.password,
            create_schema=False,
        )

    def ensure(self) -> list[str]:
        return ensure_graph_schema(self.uri, self.spec, self.user, self.password)
