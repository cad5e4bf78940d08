"""Every decoding failure lands in the dead-letter topic with its reason and coordinates."""

import datetime as dt
import struct
import uuid

from apache_beam.options.pipeline_options import PipelineOptions
from confluent_kafka import Consumer, Producer, TopicPartition

from retail_backbone import generator as gen
from retail_backbone.io.dead_letter_sinks import WriteDeadLetters
from retail_backbone.io.dead_letters import DeadLetter, dlq_topic
from retail_backbone.io.events import DecodeEvents
from retail_backbone.io.kafka import ReadKafkaOffsetRanges, snapshot_offset_ranges
from retail_backbone.pipelines.runners import runner_args
from retail_backbone.schemas.catalog import SCHEMAS_DIR
from retail_backbone.schemas.serde import AvroDeserializer, AvroSerializer, RegistryClient
from retail_backbone.testing import collect

ORDER_V1 = (SCHEMAS_DIR / "order_placed" / "v1.avsc").read_text()


def _order_events(n: int) -> list[dict]:
    cfg = gen.GeneratorConfig(
        seed=5,
        days=1,
        events_per_day=4000,
        n_products=50,
        n_customers=200,
        n_locations=3,
        snapshot=False,
    )
    orders = [e for e in gen.generate_events(cfg) if e["envelope"]["event_type"] == "order_placed"]
    for e in orders:  # these are v1 records
        e.pop("currency", None)
        e.pop("coupon_code", None)
        e["envelope"]["schema_version"] = 1
    return orders[:n]


def _consume_all(bootstrap: str, topic: str) -> list:
    ranges = snapshot_offset_ranges(bootstrap, topic)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "it", "log_level": 0})
    out = []
    try:
        for r in ranges:
            consumer.assign([TopicPartition(topic, r.partition, r.start)])
            while len([m for m in out if m.partition() == r.partition]) < r.stop - r.start:
                out += [m for m in consumer.consume(500, timeout=5) if m.error() is None]
    finally:
        consumer.close()
    return out


def test_decoding_failures_go_to_the_dlq_topic_and_files(stack, tmp_path):
    cfg = stack.require("kafka", "registry", "prism")
    bootstrap = f"{cfg.host}:{cfg.port('kafka')}"
    registry = f"http://{cfg.host}:{cfg.port('registry')}"
    run = uuid.uuid4().hex[:8]
    topic, pipeline = f"it.decode.{run}", f"itdecode{run}"
    client = RegistryClient(registry)
    serializer = AvroSerializer(client, f"{topic}-value", ORDER_V1)
    good = _order_events(3)
    early = _order_events(4)[3]
    early["envelope"]["event_time"] = int(
        dt.datetime(1999, 12, 31, tzinfo=dt.UTC).timestamp() * 1000
    )
    valid_bytes = serializer.serialize(good[0])
    payloads = [
        *(serializer.serialize(e) for e in good),  # offsets 0..2: fine
        b"\x07" + valid_bytes[1:],  # 3: bad magic byte
        b"\x00" + struct.pack(">I", 987_654_321) + valid_bytes[5:],  # 4: unknown schema id
        valid_bytes[:3],  # 5: shorter than the header
        valid_bytes[:40],  # 6: Avro body ends early
        valid_bytes[:5] + b"\xff" * 60,  # 7: corrupt body
        serializer.serialize(early),  # 8: event time before 2000
        valid_bytes + b"\x00" * 20_000,  # 9: over the (test) size limit
    ]
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for value in payloads:
        producer.produce(topic, value, partition=0)
    assert producer.flush(10) == 0
    ranges = snapshot_offset_ranges(bootstrap, topic)

    def build(p):
        records = p | ReadKafkaOffsetRanges(bootstrap, ranges)
        decoded = records | DecodeEvents(
            pipeline, fmt="avro", registry_url=registry, max_bytes=10_000
        )
        decoded.dead_letters | WriteDeadLetters(
            pipeline, bootstrap=bootstrap, registry_url=registry, files_dir=str(tmp_path / "dlq")
        )
        return {"events": decoded.events}

    out = collect(build, PipelineOptions(runner_args("prism", cfg)))
    assert sorted(e.event_id for e in out["events"]) == sorted(
        e["envelope"]["event_id"] for e in good
    )

    dlq = _consume_all(bootstrap, dlq_topic(pipeline))
    reader = AvroDeserializer(client)
    letters = {
        d.origin.offset: d
        for d in (DeadLetter.from_avro(reader.deserialize(m.value())[0]) for m in dlq)
    }
    assert {o: d.error_class for o, d in letters.items()} == {
        3: "BadMagicByte",
        4: "UnknownSchemaId",
        5: "TruncatedPayload",
        6: "TruncatedPayload",
        7: "CorruptPayload",
        8: "event_time_out_of_range",
        9: "PayloadTooLarge",
    }
    for offset, letter in letters.items():
        assert letter.payload == payloads[offset]
        assert (letter.origin.kind, letter.origin.topic, letter.origin.partition) == (
            "KAFKA",
            topic,
            0,
        )
        assert letter.pipeline == pipeline and letter.stage == "DecodeEvents"
        assert letter.attempt == 1 and letter.first_seen_ms <= letter.last_seen_ms
    files = list((tmp_path / "dlq").glob("dt=*/*.jsonl"))
    from_files = [DeadLetter.from_json(line) for f in files for line in f.read_text().splitlines()]
    assert sorted(d.origin.offset for d in from_files) == sorted(letters)
