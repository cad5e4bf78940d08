"""Helpers for tests of pipelines built on retail-backbone (shipped with the library).

Example::

    from retail_backbone.testing import make_event

    e = make_event("order_placed", event_time_ms=1_764_000_000_000, payload={"order_id": "o-1"})
"""

from __future__ import annotations

import base64
import pickle
import tempfile
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import apache_beam as beam

from retail_backbone.io.dead_letters import Origin
from retail_backbone.io.events import Event

__all__ = [
    "StateCell",
    "TimerRecorder",
    "collect",
    "inventory_bigtable_levels",
    "inventory_postgres_state",
    "make_event",
    "shuffled_within",
]


def make_event(
    event_type: str = "product_viewed",
    *,
    event_id: str | None = None,
    event_time_ms: int = 1_764_000_000_000,
    ingest_time_ms: int | None = None,
    partition_key: str = "k",
    payload: dict[str, Any] | None = None,
    origin: Origin | None = None,
) -> Event:
    """An ``Event`` with sensible defaults; every argument can be overridden."""
    return Event(
        event_id=event_id or str(uuid.uuid4()),
        event_type=event_type,
        event_time_ms=event_time_ms,
        ingest_time_ms=ingest_time_ms if ingest_time_ms is not None else event_time_ms + 50,
        source="WEB",
        partition_key=partition_key,
        schema_subject=f"retail.{event_type}-value",
        schema_version=1,
        trace_id=None,
        attributes={},
        payload=payload or {},
        origin=origin or Origin("INTERNAL"),
    )


def collect(
    build: Callable[[beam.Pipeline], Mapping[str, beam.PCollection]],
    options: beam.options.pipeline_options.PipelineOptions | None = None,
) -> dict[str, list[Any]]:
    """Run a pipeline and return the elements of the named PCollections ``build`` returns.

    Elements travel through files, so this works on any runner (a list captured by a lambda
    would be pickled and filled in a copy).

    Example::

        out = collect(lambda p: {"events": (p | ReadEventFiles(root, "t")).events})
        assert len(out["events"]) == 42
    """
    with tempfile.TemporaryDirectory() as tmp:
        p = beam.Pipeline(options=options)
        for name, pcoll in build(p).items():
            _ = (
                pcoll
                | f"Encode{name}" >> beam.Map(lambda x: base64.b64encode(pickle.dumps(x)).decode())
                | f"Write{name}" >> beam.io.WriteToText(f"{tmp}/{name}", shard_name_template="")
            )
        result = p.run()
        result.wait_until_finish()
        out: dict[str, list[Any]] = {}
        for path in Path(tmp).iterdir():
            lines = path.read_text().splitlines()
            out[path.name] = [pickle.loads(base64.b64decode(line)) for line in lines]
        return out


def inventory_postgres_state(dsn: str, suffix: str = "") -> dict[str, list[tuple]]:
    """Every row of the inventory job's Postgres tables (with ``suffix``), sorted."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        return {
            table: conn.execute(f"SELECT * FROM {table}{suffix} ORDER BY 1, 2, 3").fetchall()
            for table in ("stock_levels", "stock_alerts", "demand_forecast")
        }


def inventory_bigtable_levels(
    suffix: str = "", project: str | None = None, instance: str | None = None
) -> dict[tuple[str, str], tuple]:
    """The inventory job's Bigtable stock levels (newest cells) by (sku, location)."""
    from google.cloud import bigtable
    from google.cloud.bigtable.row_filters import CellsColumnLimitFilter

    from retail_backbone.io.sinks.bigtable import STOCK_LEVELS_BIGTABLE, decode_cells
    from retail_backbone.stack.components.bigtable import INSTANCE, PROJECT

    spec = STOCK_LEVELS_BIGTABLE.renamed(f"stock_levels{suffix}")
    client = bigtable.Client(project=project or PROJECT, admin=True)
    table = client.instance(instance or INSTANCE).table(spec.name)
    rows = {}
    for data in table.read_rows(filter_=CellsColumnLimitFilter(1)):
        row = decode_cells(spec, data)
        rows[(row.sku, row.location)] = (row.on_hand, row.reserved, row.available, row.version)
    return rows


PERSONALIZATION_TABLES = ("profiles", "recommendations", "related_products")


def personalization_bigtable_state(
    suffix: str = "", project: str | None = None, instance: str | None = None
) -> dict[str, dict[bytes, dict]]:
    """The newest cell (value and timestamp) of every column of the personalization tables.

    Newest only: that is what readers see. Older cells (a streaming run's earlier panes) stay
    until Bigtable's garbage collection, which runs asynchronously, removes them.
    """
    from google.cloud import bigtable
    from google.cloud.bigtable.row_filters import CellsColumnLimitFilter

    from retail_backbone.stack.components.bigtable import INSTANCE, PROJECT

    tables = bigtable.Client(project=project or PROJECT, admin=True).instance(instance or INSTANCE)
    state = {}
    for name in PERSONALIZATION_TABLES:
        rows = {}
        for data in tables.table(f"{name}{suffix}").read_rows(filter_=CellsColumnLimitFilter(1)):
            rows[data.row_key] = {
                (family, qualifier): [(c.value, c.timestamp_micros) for c in cells]
                for family, columns in data.cells.items()
                for qualifier, cells in columns.items()
            }
        state[name] = rows
    return state


def personalization_graph_state(uri: str, suffix: str = "") -> dict[str, list]:
    """Product nodes and every relationship from them (properties included), sorted."""
    from retail_backbone.io.sinks.graph import GraphSpec, graph_driver

    spec = GraphSpec(suffix=suffix)
    with graph_driver(uri) as driver:
        nodes, _, _ = driver.execute_query(
            f"MATCH (n:{spec.product}) RETURN n.sku AS sku, properties(n) AS props ORDER BY sku"
        )
        edges, _, _ = driver.execute_query(
            f"MATCH (a:{spec.product})-[e]->(b) RETURN a.sku AS a, type(e) AS kind, "
            "coalesce(b.sku, b.name) AS b, properties(e) AS props ORDER BY a, kind, b"
        )
    return {"nodes": [r.data() for r in nodes], "edges": [r.data() for r in edges]}


def drop_personalization_state(uri: str | None, *suffixes: str) -> None:
    """Delete the Bigtable tables and graph nodes/constraints of the given table suffixes."""
    from google.cloud import bigtable

    from retail_backbone.io.sinks.graph import GraphSpec, graph_driver
    from retail_backbone.stack.components.bigtable import INSTANCE, PROJECT

    instance = bigtable.Client(project=PROJECT, admin=True).instance(INSTANCE)
    for suffix in suffixes:
        for name in PERSONALIZATION_TABLES:
            table = instance.table(f"{name}{suffix}")
            if table.exists():
                table.delete()
        if uri is None:
            continue
        spec = GraphSpec(suffix=suffix)
        with graph_driver(uri) as driver:
            driver.execute_query(
                f"MATCH (n) WHERE n:{spec.product} OR n:{spec.category} DETACH DELETE n"
            )
            for name in (f"{spec.product.lower()}_sku", f"{spec.category.lower()}_name"):
                driver.execute_query(f"DROP CONSTRAINT {name} IF EXISTS")


def shuffled_within(events: list[dict], max_shift_ms: int, seed: int) -> list[dict]:
    """Events in a shuffled arrival order: each delayed by less than ``max_shift_ms``.

    Keep the shift inside the allowed lateness to test order independence.
    """
    import random

    rng = random.Random(seed)
    return sorted(events, key=lambda e: e["envelope"]["event_time"] + rng.randrange(max_shift_ms))


class StateCell:
    """A value cell with the interface of Beam's ReadModifyWriteState.

    For driving a stateful ``DoFn``'s ``process`` and timer callbacks directly in unit tests.
    """

    def __init__(self) -> None:
        self.value: Any = None

    def read(self) -> Any:
        return self.value

    def write(self, value: Any) -> None:
        self.value = value

    def clear(self) -> None:
        self.value = None


class TimerRecorder:
    """A timer with the interface of Beam's timer parameter: keeps the time it is set to (ms)."""

    def __init__(self) -> None:
        self.at: int | None = None
        self.fired = 0  # for harnesses that fire it: how often they did

    def set(self, timestamp: Any) -> None:
        self.at = timestamp.micros // 1000

    def clear(self) -> None:
        self.at = None


def customer_profile(**overrides: Any) -> Any:
    """A ``CustomerProfile`` of a customer with no activity, with ``overrides`` applied."""
    from retail_backbone.transforms.personalization.types import CustomerProfile

    base: dict[str, Any] = dict(
        customer_key="k",
        customer_id="C",
        email=None,
        phone=None,
        address=None,
        recency_days=None,
        frequency=0,
        monetary=0.0,
        r_score=0,
        f_score=0,
        m_score=0,
        segment="prospect",
        ltv=0.0,
        aov=0.0,
        return_rate=0.0,
        category_affinity=[],
        brand_affinity=[],
        last_viewed=[],
        bought=[],
        sessions=0,
        mean_session_seconds=0.0,
        preferred_channel=None,
        preferred_store=None,
        as_of_ms=0,
        version=0,
    )
    return CustomerProfile(**{**base, **overrides})
