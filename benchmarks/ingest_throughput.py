"""Ingestion throughput: Kafka -> DecodeEvents -> DeduplicateEvents -> count, on the local runner.

Prints events/s and peak memory next to two baselines measured in the same run on the same
records: the raw confluent-kafka consume rate, and the raw fastavro decode rate (header stripped,
schemas parsed once). Not a test: nothing is asserted except that every event was counted.

Usage::

    .venv/bin/python benchmarks/ingest_throughput.py --events 100000

Needs the stack (kafka, registry, prism); it starts them.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import time
import uuid

import apache_beam as beam
import fastavro
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from confluent_kafka import Consumer, TopicPartition

from retail_backbone import generator as gen
from retail_backbone.io.events import DecodeEvents
from retail_backbone.io.kafka import snapshot_offset_ranges
from retail_backbone.io.kafka_source import ReadFromKafkaEvents, StopPosition
from retail_backbone.pipelines.runners import runner_args
from retail_backbone.stack import Stack, StackConfig
from retail_backbone.transforms.dedup import DeduplicateEvents

EVENT_TYPE = "product_viewed"


def _consume_all(bootstrap: str, topic: str) -> list[bytes]:
    values: list[bytes] = []
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}", "log_level": 0}
    )
    try:
        for rng in snapshot_offset_ranges(bootstrap, topic):
            if rng.stop <= rng.start:
                continue
            consumer.assign([TopicPartition(topic, rng.partition, rng.start)])
            got = 0
            while got < rng.stop - rng.start:
                want = min(1000, rng.stop - rng.start - got)  # never wait for records not there
                for msg in consumer.consume(want, timeout=5):
                    if msg.error() is None:
                        values.append(msg.value())
                        got += 1
    finally:
        consumer.close()
    return values


def _raw_decode(values: list[bytes], registry: str) -> float:
    import httpx

    schemas: dict[int, object] = {}
    started = time.perf_counter()
    for value in values:
        schema_id = int.from_bytes(value[1:5], "big")
        schema = schemas.get(schema_id)
        if schema is None:
            text = httpx.get(f"{registry}/schemas/ids/{schema_id}").json()["schema"]
            schema = schemas[schema_id] = fastavro.parse_schema(json.loads(text))
        stream = io.BytesIO(value)
        stream.seek(5)
        fastavro.schemaless_reader(stream, schema)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--runner", choices=["prism", "direct"], default="direct")
    parser.add_argument("--dedup", choices=["streaming", "batch"], default="streaming")
    parser.add_argument(
        "--bucket_seconds", type=int, default=None, help="streaming dedup state bucket"
    )
    parser.add_argument("--shards", type=int, default=None, help="streaming dedup shards")
    args = parser.parse_args()

    cfg = StackConfig.load()
    Stack(cfg).up(["kafka", "registry", "prism"])
    bootstrap = f"{cfg.host}:{cfg.port('kafka')}"
    registry = f"http://{cfg.host}:{cfg.port('registry')}"
    prefix = f"bench.ingest.{uuid.uuid4().hex[:8]}."
    topic = f"{prefix}{EVENT_TYPE}"

    config = gen.GeneratorConfig(
        seed=11, days=3, events_per_day=max(args.events // 2, 1000), snapshot=False
    )
    views = (e for e in gen.generate_events(config) if e["envelope"]["event_type"] == EVENT_TYPE)
    limited = (e for _, e in zip(range(args.events), views, strict=False))
    t0 = time.perf_counter()
    sent = gen.produce_to_kafka(
        limited,
        bootstrap,
        registry,
        topic_prefix=prefix,
        partitions=args.partitions,
        progress=False,
    )
    produce_s = time.perf_counter() - t0
    n = sent.by_topic[topic]

    t0 = time.perf_counter()
    values = _consume_all(bootstrap, topic)
    consume_s = time.perf_counter() - t0
    decode_s = _raw_decode(values, registry)
    del values

    dedup_args = {
        k: v for k, v in (("bucket_seconds", args.bucket_seconds), ("shards", args.shards)) if v
    }
    t0 = time.perf_counter()
    p = beam.Pipeline(options=PipelineOptions(runner_args(args.runner, cfg)))
    decoded = (
        p
        | "Read" >> ReadFromKafkaEvents(bootstrap, topic, stop=StopPosition.at_end())
        | "Decode" >> DecodeEvents("bench", fmt="avro", registry_url=registry)
    )
    _ = (
        decoded.events
        | "Dedup" >> DeduplicateEvents(args.dedup, **dedup_args)
        | "Count" >> beam.combiners.Count.Globally()
    )
    result = p.run()
    result.wait_until_finish()
    beam_s = time.perf_counter() - t0
    query = result.metrics().query(MetricsFilter().with_namespace("dedup").with_name("unique"))
    unique = sum(c.committed for c in query["counters"])
    if unique != n:
        raise SystemExit(f"counted {unique} unique events, produced {n}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"\n{n:,} {EVENT_TYPE} events, {args.partitions} partitions, Confluent Avro")
    print(f"{'stage':52} {'events/s':>10} {'seconds':>8}")
    rows = [
        ("produce (generator + AvroSerializer, idempotent)", n / produce_s, produce_s),
        ("baseline: raw confluent-kafka consume", n / consume_s, consume_s),
        ("baseline: raw fastavro decode (schema parsed once)", n / decode_s, decode_s),
        (f"Beam ({args.runner}): read -> decode -> dedupe -> count", n / beam_s, beam_s),
    ]
    for name, rate, secs in rows:
        print(f"{name:52} {rate:>10,.0f} {secs:>8.2f}")
    print(f"ratio to raw consume: {consume_s / beam_s:.3f}; to raw decode: {decode_s / beam_s:.3f}")
    print(f"peak RSS of this process (SDK harness, LOOPBACK): {peak_mb:,.0f} MB")
    print("(the Beam figure includes job submission and runner start-up)")


if __name__ == "__main__":
    main()
