"""The inventory job streaming on Flink equals the batch backfill of the same events.

The events go to Kafka in a shuffled order (each event moved by up to ten minutes, well inside
the allowed lateness of one hour); the streaming job reads them with the Java engine (KafkaIO, the
engine Flink runs) until the end offsets at launch, with early firings; the batch job reads the
same events from files on the direct runner. Postgres tables and Bigtable cells must be equal.
"""

from __future__ import annotations

import uuid

import pytest

from retail_backbone.generator import (
    GeneratorConfig,
    generate_events,
    produce_to_kafka,
    write_files,
)
from retail_backbone.pipelines import inventory
from retail_backbone.pipelines.runners import runner_args
from retail_backbone.stack.components.postgres import dsn as pg_dsn
from retail_backbone.testing import (
    inventory_bigtable_levels,
    inventory_postgres_state,
    shuffled_within,
)

pytestmark = pytest.mark.flink

SHUFFLE_MS = 10 * 60 * 1000


@pytest.fixture
def stores(stack, monkeypatch):
    cfg = stack.require("kafka", "registry", "postgres", "bigtable", "jobserver")
    monkeypatch.setenv("BIGTABLE_EMULATOR_HOST", f"{cfg.host}:{cfg.port('bigtable')}")
    return cfg


def test_streaming_on_flink_equals_the_batch_backfill_and_a_replay_changes_nothing(
    stores, tmp_path
):
    cfg = stores
    gen_cfg = GeneratorConfig(
        seed=23, days=2, n_products=40, n_locations=3, n_customers=400, events_per_day=4000
    )
    events = list(generate_events(gen_cfg))
    write_files(iter(events), tmp_path, "avro")
    base = f"it{uuid.uuid4().hex[:8]}."
    arrival = shuffled_within(events, SHUFFLE_MS, seed=5)
    assert arrival != events  # the shuffle really reorders
    sent = produce_to_kafka(
        iter(arrival),
        f"{cfg.host}:{cfg.port('kafka')}",
        f"http://{cfg.host}:{cfg.port('registry')}",
        topic_prefix=f"{base}retail.",
        partitions=2,
        progress=False,
    )
    inventory_events = sum(
        n for topic, n in sent.by_topic.items() if topic.removeprefix(base) in inventory.TOPICS
    )
    assert inventory_events > 100

    dsn = pg_dsn(cfg)
    streaming_sfx, batch_sfx = f"_s{uuid.uuid4().hex[:6]}", f"_b{uuid.uuid4().hex[:6]}"
    streaming_argv = [
        *runner_args("flink", cfg),
        "--mode=streaming",
        "--topics=" + ",".join(base + t for t in inventory.TOPICS),
        "--stop_at_end",
        "--early_firing_seconds=2",
        f"--bootstrap_servers={cfg.host}:{cfg.port('kafka')}",
        f"--registry_url=http://{cfg.host}:{cfg.port('registry')}",
        f"--postgres_dsn={dsn}",
        f"--table_suffix={streaming_sfx}",
    ]
    streaming = inventory.run(streaming_argv)
    batch = inventory.run(
        [
            *runner_args("direct", cfg),
            "--mode=batch",
            f"--input={tmp_path}",
            f"--postgres_dsn={dsn}",
            f"--table_suffix={batch_sfx}",
        ]
    )
    try:
        # Nothing lost: every record read, none dead-lettered, the same movements applied.
        assert streaming["events_in"] == inventory_events == batch["events_in"]
        assert streaming["dead_letters"] == 0 == batch["dead_letters"]
        assert streaming["ledger"] == batch["ledger"]

        got, want = (
            inventory_postgres_state(dsn, streaming_sfx),
            inventory_postgres_state(dsn, batch_sfx),
        )
        assert got["stock_levels"] == want["stock_levels"]
        assert got["stock_alerts"] == want["stock_alerts"]
        # Forecast rows carry the streaming revision (0 in batch); every other column is equal.
        assert [r[:-1] for r in got["demand_forecast"]] == [r[:-1] for r in want["demand_forecast"]]
        assert len(got["stock_levels"]) > 20 and got["stock_alerts"]
        assert inventory_bigtable_levels(streaming_sfx) == inventory_bigtable_levels(batch_sfx)
        # Every alert was also published to inventory.alerts<suffix>, once.
        published = _alert_ids(cfg, f"inventory.alerts{streaming_sfx}")
        assert sorted(published) == sorted(r[0] for r in got["stock_alerts"])

        # Replaying the streaming range changes nothing: every re-emitted stock level and alert
        # is stale. Forecast rows may be rewritten with a higher revision (the revision counts
        # processing-time panes, which differ between runs) but identical values.
        replay = inventory.run(streaming_argv)
        assert replay["events_in"] == inventory_events
        written = {label: c["written"] for label, c in replay["sinks"].items()}
        assert written["WriteStockLevels"] == written["ServeStockLevels"] == 0
        assert written["WriteStockAlerts"] == 0
        after = inventory_postgres_state(dsn, streaming_sfx)
        assert after["stock_levels"] == got["stock_levels"]
        assert after["stock_alerts"] == got["stock_alerts"]
        assert [r[:-1] for r in after["demand_forecast"]] == [
            r[:-1] for r in got["demand_forecast"]
        ]
        # Kafka is not idempotent across runs: the replay published every alert again, with
        # the same deterministic id, so consumers can drop the copies.
        republished = _alert_ids(cfg, f"inventory.alerts{streaming_sfx}")
        assert sorted(republished) == sorted(published * 2)
    finally:
        _drop(dsn, streaming_sfx, batch_sfx)


def _alert_ids(cfg, topic: str) -> list[str]:
    """Every alert id on ``topic`` (Avro through the registry), read to the end offsets."""
    from confluent_kafka import Consumer, TopicPartition

    from retail_backbone.io.kafka import snapshot_offset_ranges
    from retail_backbone.schemas.serde import AvroDeserializer, RegistryClient

    bootstrap = f"{cfg.host}:{cfg.port('kafka')}"
    decode = AvroDeserializer(RegistryClient(f"http://{cfg.host}:{cfg.port('registry')}"))
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex})
    ids = []
    try:
        for rng in snapshot_offset_ranges(bootstrap, topic):
            consumer.assign([TopicPartition(topic, rng.partition, rng.start)])
            position = rng.start
            while position < rng.stop:
                batch = consumer.consume(500, timeout=10)
                assert batch, f"{topic}/{rng.partition}: nothing after offset {position}"
                for message in batch:
                    if message.error() is None:
                        ids.append(decode.deserialize(message.value())[0]["alert_id"])
                        position = message.offset() + 1
    finally:
        consumer.close()
    return ids


def _drop(dsn: str, *suffixes: str) -> None:
    import psycopg
    from google.cloud import bigtable

    from retail_backbone.stack.components.bigtable import INSTANCE, PROJECT

    client = bigtable.Client(project=PROJECT, admin=True)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for sfx in suffixes:
            for table in ("stock_levels", "stock_alerts", "demand_forecast"):
                conn.execute(f"DROP TABLE IF EXISTS {table}{sfx}")
            bt = client.instance(INSTANCE).table(f"stock_levels{sfx}")
            if bt.exists():
                bt.delete()
