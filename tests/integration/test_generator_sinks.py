"""Generator sinks against real services: the legacy ERP in PostgreSQL, Kafka with the registry."""

from __future__ import annotations

import io
import struct
import uuid
from collections import Counter
from decimal import Decimal

import fastavro
import psycopg
import pytest
from psycopg import sql

from retail_backbone.generator import GeneratorConfig, build_world, contracts, generate_events
from retail_backbone.generator.legacy_erp import seed_legacy_erp
from retail_backbone.generator.sinks import produce_to_kafka
from retail_backbone.stack.components import ALL_COMPONENTS
from retail_backbone.stack.components.postgres import dsn

SMALL = GeneratorConfig(
    seed=21, days=1, n_products=120, n_locations=6, n_customers=400, events_per_day=3_000
)


def test_seed_legacy_erp_loads_the_starting_world(stack):
    cfg = stack.require("postgres")
    world = build_world(SMALL)
    database = f"legacy_erp_it_{uuid.uuid4().hex[:8]}"
    try:
        summary = seed_legacy_erp(world, dsn(cfg), database)
        again = seed_legacy_erp(world, dsn(cfg), database)  # reseeding replaces, not appends
        carried = sum(world.carried)
        expected = {
            "locations": SMALL.n_locations,
            "products": SMALL.n_products,
            "customers": SMALL.n_customers,
            "inventory": carried,
        }
        assert summary.rows == again.rows == expected
        with psycopg.connect(dsn(cfg, database)) as conn:
            counts = {
                t: conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))
                ).fetchone()[0]
                for t in expected
            }
            assert counts == expected
            total = conn.execute("SELECT sum(list_price) FROM products").fetchone()[0]
            assert total == sum((p.list_price for p in world.products), Decimal("0.00"))
            on_hand = conn.execute("SELECT sum(on_hand) FROM inventory").fetchone()[0]
            assert on_hand == sum(world.initial_on_hand)
            c = world.customers[0]
            row = conn.execute(
                "SELECT email, city, home_store, segment FROM customers WHERE customer_id = %s",
                (c.customer_id,),
            ).fetchone()
            assert row[0] == c.person.email and row[1] == c.person.city
            assert row[2] == world.locations[c.home_store].location_id
            kinds = dict(conn.execute("SELECT kind, count(*) FROM locations GROUP BY 1").fetchall())
            assert kinds == {"FC": len(world.fcs), "STORE": len(world.stores)}
    finally:
        with psycopg.connect(dsn(cfg), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )


def _has_registry() -> bool:
    return any(c.name == "registry" for c in ALL_COMPONENTS)


@pytest.mark.skipif(not _has_registry(), reason="the stack has no schema registry component")
def test_produce_to_kafka_in_confluent_wire_format(stack):
    from confluent_kafka import Consumer

    cfg = stack.require("kafka", "registry")
    bootstrap = f"{cfg.host}:{cfg.port('kafka')}"
    registry = f"http://{cfg.host}:{cfg.port('registry')}"
    prefix = f"it.generator.{uuid.uuid4().hex[:8]}."
    events = list(generate_events(SMALL))
    summary = produce_to_kafka(
        iter(events), bootstrap, registry, partitions=2, topic_prefix=prefix, progress=False
    )
    assert summary.events == len(events)
    expected = Counter(prefix + e["envelope"]["event_type"] for e in events)
    assert summary.by_topic == dict(expected)

    by_id = {e["envelope"]["event_id"]: e for e in events}
    schemas = {c.event_type: c.parsed for c in contracts().values()}
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"it-gen-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe(sorted(expected))
    got = {}
    try:
        for _ in range(120):
            for msg in consumer.consume(num_messages=1_000, timeout=1):
                assert msg.error() is None
                value = msg.value()
                magic, schema_id = struct.unpack(">bI", value[:5])
                event_type = msg.topic()[len(prefix) :]
                assert magic == 0
                assert schema_id == summary.schema_ids[f"{msg.topic()}-value"]
                record = fastavro.schemaless_reader(io.BytesIO(value[5:]), schemas[event_type])
                event_id = str(record["envelope"]["event_id"])
                assert msg.key().decode() == by_id[event_id]["envelope"]["partition_key"]
                got[event_id] = record
            if len(got) == len(events):
                break
    finally:
        consumer.close()
    assert set(got) == set(by_id)
    order = next(e for e in events if e["envelope"]["event_type"] == "order_placed")
    assert got[order["envelope"]["event_id"]]["total"] == order["total"]


@pytest.mark.skipif(not _has_registry(), reason="the stack has no schema registry component")
def test_produce_to_kafka_paces_to_the_target_rate(stack):
    cfg = stack.require("kafka", "registry")
    bootstrap = f"{cfg.host}:{cfg.port('kafka')}"
    registry = f"http://{cfg.host}:{cfg.port('registry')}"
    prefix = f"it.generator.{uuid.uuid4().hex[:8]}."
    events = list(generate_events(SMALL))[:1_500]
    summary = produce_to_kafka(
        iter(events), bootstrap, registry, rate=1_000, partitions=1, topic_prefix=prefix,
        progress=False,
    )  # fmt: skip
    assert summary.events == 1_500
    # Pacing is the feature under test: 1,500 events at 1,000/s cannot finish sooner.
    assert summary.seconds > 1.3
