"""Replay dead letters: re-inject their original payloads where they entered, once.

Example::

    backbone dlq replay --pipeline inventory --since 2026-11-27T00:00 --error-class sink_unavailable
    python -m retail_backbone.pipelines.dlq_replay --pipeline=inventory --source=files \\
        --files_dir=/data/dlq/inventory --plan_only

What it does, as a batch pipeline:

1. Reads the dead letters of ``--pipeline`` from the topic ``dlq.<pipeline>`` (everything there
   when the job starts) or from the dead-letter files.
2. Keeps those matching the filters: time range (event time when known, else when it failed),
   stages and error classes.
3. Drops copies (the same key and attempt, e.g. a retried bundle wrote it twice) and records
   already replayed by an earlier run (a ledger topic ``dlq.<pipeline>.replayed``), so running a
   replay twice re-injects nothing the second time.
4. Parks records that have failed ``--max_attempts`` times (topic ``dlq.<pipeline>.parked``).
5. Re-injects the rest: Kafka-origin payloads go back to their topic *unchanged* (no envelope
   around them, so replaying a replayed record never nests), with the attempt count and first
   failure time in Kafka headers; a new failure of the same payload then becomes a dead letter
   with ``attempt + 1``. File-origin JSON lines are written next to their source file as
   ``replay-<run>.jsonl`` for the next backfill of that day.

An event that already succeeded is not applied twice: sinks are idempotent (last writer wins by
version) and ``DeduplicateEvents`` drops an event id seen within its TTL.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from retail_backbone.io.dead_letter_sinks import dead_letter_key
from retail_backbone.io.dead_letters import DeadLetter, dlq_topic
from retail_backbone.io.kafka import ATTEMPT_HEADER, FIRST_SEEN_HEADER
from retail_backbone.io.kafka_sink import KafkaMessage, WriteToKafkaEvents
from retail_backbone.pipelines.connections import ConnectionOptions

__all__ = ["ReplayOptions", "ReplaySummary", "build_pipeline", "run"]

NAMESPACE = "dlq_replay"


def replayed_topic(pipeline: str) -> str:
    return f"{dlq_topic(pipeline)}.replayed"


def parked_topic(pipeline: str) -> str:
    return f"{dlq_topic(pipeline)}.parked"


class ReplayOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument(
            "--pipeline", default=None, help="Pipeline whose dead letters to replay (required)."
        )
        parser.add_argument(
            "--source",
            choices=["kafka", "files"],
            default="kafka",
            help="Where the dead letters are: the dlq.<pipeline> topic or files. Default: kafka.",
        )
        parser.add_argument(
            "--files_dir",
            default=None,
            help="Dead-letter folder (dt=YYYY-MM-DD/ partitions), --source=files.",
        )
        parser.add_argument(
            "--since", default=None, help="Only records at or after this ISO time (UTC)."
        )
        parser.add_argument(
            "--until", default=None, help="Only records before this ISO time (UTC)."
        )
        parser.add_argument(
            "--stage", action="append", default=[], help="Only these stages (repeatable)."
        )
        parser.add_argument(
            "--error_class",
            action="append",
            default=[],
            help="Only these error classes (repeatable).",
        )
        parser.add_argument(
            "--max_attempts",
            type=int,
            default=5,
            help="Park records that failed this many times. Default: 5.",
        )
        parser.add_argument(
            "--plan_only",
            action="store_true",
            help="Count what would be replayed or parked; write nothing.",
        )


def _iso_ms(value: str | None) -> int | None:
    if value is None:
        return None
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1000)


class ReplayFilter(NamedTuple):
    since_ms: int | None = None
    until_ms: int | None = None
    stages: frozenset[str] = frozenset()
    error_classes: frozenset[str] = frozenset()

    def matches(self, letter: DeadLetter) -> bool:
        when = letter.event_time_ms if letter.event_time_ms is not None else letter.last_seen_ms
        if self.since_ms is not None and when < self.since_ms:
            return False
        if self.until_ms is not None and when >= self.until_ms:
            return False
        if self.stages and letter.stage not in self.stages:
            return False
        return not self.error_classes or letter.error_class in self.error_classes


def ledger_key(letter: DeadLetter) -> str:
    """Identity of one failure: the same payload failing again later is a new attempt."""
    return f"{dead_letter_key(letter)}#{letter.attempt}"


class _ClassifyFn(beam.DoFn):
    """Filter, then route each dead letter to replay, park, skip or unreplayable."""

    def __init__(self, flt: ReplayFilter, max_attempts: int, already: frozenset[str]) -> None:
        self._flt = flt
        self._max = max_attempts
        self._already = already
        self._counters = {
            name: Metrics.counter(NAMESPACE, name)
            for name in (
                "read",
                "filtered_out",
                "already_replayed",
                "parked",
                "unreplayable",
                "replayed",
            )
        }

    def process(self, letter: DeadLetter) -> Iterator[Any]:
        self._counters["read"].inc()
        if not self._flt.matches(letter):
            self._counters["filtered_out"].inc()
            return
        if ledger_key(letter) in self._already:
            self._counters["already_replayed"].inc()
            return
        if letter.attempt >= self._max:
            self._counters["parked"].inc()
            yield beam.pvalue.TaggedOutput("park", letter)
            return
        if (letter.origin.kind == "KAFKA" and letter.origin.topic) or (
            letter.origin.kind == "FILE" and letter.origin.file and letter.payload
        ):
            self._counters["replayed"].inc()
            yield letter
        else:
            self._counters["unreplayable"].inc()
            yield beam.pvalue.TaggedOutput("park", letter)


class _ReinjectKafkaFn(beam.DoFn):
    """Produce the original payload to its topic with attempt/first-seen headers."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._producer = None

    def setup(self) -> None:
        from confluent_kafka import Producer

        self._producer = Producer(
            {
                "bootstrap.servers": self._bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "log_level": 3,
            }
        )

    def process(self, letter: DeadLetter) -> Iterator[str]:
        errors: list[str] = []
        self._producer.produce(
            letter.origin.topic,
            letter.payload,
            key=letter.event_id.encode() if letter.event_id else None,
            headers={
                ATTEMPT_HEADER: str(letter.attempt + 1).encode(),
                FIRST_SEEN_HEADER: str(letter.first_seen_ms).encode(),
            },
            on_delivery=lambda err, _m: errors.append(str(err)) if err else None,
        )
        self._producer.flush(30)
        if errors:
            raise RuntimeError(f"re-injecting into {letter.origin.topic} failed: {errors[0]}")
        yield ledger_key(letter)

    def teardown(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)


class _ReinjectFileFn(beam.DoFn):
    """Write JSON-line payloads next to their source file as ``replay-<run>.jsonl``."""

    def __init__(self, run_id: str) -> None:
        self._run_id = run_id

    def process(self, batch: tuple[str, list[DeadLetter]]) -> Iterator[str]:
        folder, letters = batch
        path = f"{folder}/replay-{self._run_id}.jsonl"
        with FileSystems.create(path) as fh:
            for letter in sorted(letters, key=ledger_key):
                fh.write(letter.payload.rstrip(b"\n") + b"\n")
        for letter in letters:
            yield ledger_key(letter)


class _ReadDeadLetterTopicFn(beam.DoFn):
    """Avro-decode ``retail.common.DeadLetter`` records read from the DLQ topic."""

    def __init__(self, registry_url: str) -> None:
        self._registry_url = registry_url
        self._client = None

    def setup(self) -> None:
        from retail_backbone.schemas.serde import AvroDeserializer, RegistryClient

        self._client = RegistryClient(self._registry_url)
        self._deserializer = AvroDeserializer(self._client)

    def process(self, record: Any) -> Iterator[DeadLetter]:
        decoded, _ = self._deserializer.deserialize(record.value)
        yield DeadLetter.from_avro(decoded)

    def teardown(self) -> None:
        if self._client is not None:
            self._client.close()


def _read_ledger(bootstrap: str, pipeline: str) -> frozenset[str]:
    """Keys replayed by earlier runs (the ledger topic is small: one short key per replay)."""
    from retail_backbone.io.kafka import KafkaUnavailable, snapshot_offset_ranges

    try:
        ranges = snapshot_offset_ranges(bootstrap, replayed_topic(pipeline), timeout=5)
    except KafkaUnavailable:
        return frozenset()
    from confluent_kafka import Consumer, TopicPartition

    keys: set[str] = set()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "_dlq_ledger", "log_level": 0})
    try:
        for rng in ranges:
            if rng.stop <= rng.start:
                continue
            consumer.assign([TopicPartition(rng.topic, rng.partition, rng.start)])
            offset = rng.start
            while offset < rng.stop:
                for msg in consumer.consume(500, timeout=5):
                    if msg.error() is None:
                        keys.add(msg.key().decode())
                        offset = msg.offset() + 1
    finally:
        consumer.close()
    return frozenset(keys)


class ReplaySummary(NamedTuple):
    counters: dict[str, int]


def build_pipeline(p: beam.Pipeline, opts: ReplayOptions, already: frozenset[str]) -> None:
    """Wire the replay onto ``p``; ``already`` holds ledger keys of earlier replays."""
    conn = opts.view_as(ConnectionOptions)
    if opts.source == "kafka":
        from retail_backbone.io.kafka import ReadKafkaOffsetRanges, snapshot_offset_ranges

        ranges = snapshot_offset_ranges(conn.bootstrap_servers, dlq_topic(opts.pipeline))
        letters = (
            p
            | "ReadDeadLetterTopic" >> ReadKafkaOffsetRanges(conn.bootstrap_servers, ranges)
            | "DecodeDeadLetters" >> beam.ParDo(_ReadDeadLetterTopicFn(conn.registry_url))
        )
    else:
        if not opts.files_dir:
            raise ValueError("--source=files needs --files_dir")
        letters = (
            p
            | "ReadDeadLetterFiles" >> beam.io.ReadFromText(f"{opts.files_dir.rstrip('/')}/dt=*/*")
            | "ParseDeadLetters" >> beam.Map(DeadLetter.from_json)
        )
    flt = ReplayFilter(
        _iso_ms(opts.since),
        _iso_ms(opts.until),
        frozenset(opts.stage),
        frozenset(opts.error_class),
    )
    unique = (
        letters
        | "KeyByLedgerKey" >> beam.Map(lambda d: (ledger_key(d), d))
        | "OnePerKey" >> beam.CombinePerKey(lambda ds: min(ds, key=lambda d: d.last_seen_ms))
        | "DropKeys" >> beam.Values()
    )
    routed = unique | "Classify" >> beam.ParDo(
        _ClassifyFn(flt, opts.max_attempts, already)
    ).with_outputs("park", main="replay")
    if opts.plan_only:
        return
    kafka_letters = routed.replay | "KafkaOrigin" >> beam.Filter(lambda d: d.origin.kind == "KAFKA")
    file_letters = routed.replay | "FileOrigin" >> beam.Filter(lambda d: d.origin.kind == "FILE")
    done_kafka = kafka_letters | "ReinjectKafka" >> beam.ParDo(
        _ReinjectKafkaFn(conn.bootstrap_servers)
    )
    done_files = (
        file_letters
        | "ByFolder" >> beam.Map(lambda d: (d.origin.file.rsplit("/", 1)[0], d))
        | "GroupByFolder" >> beam.GroupByKey()
        | "ReinjectFiles" >> beam.ParDo(_ReinjectFileFn(conn.run_id))
    )
    (
        (done_kafka, done_files)
        | "Replayed" >> beam.Flatten()
        | "LedgerMessages"
        >> beam.Map(lambda key: KafkaMessage(replayed_topic(opts.pipeline), key.encode(), b""))
        | "WriteLedger" >> WriteToKafkaEvents(conn.bootstrap_servers, NAMESPACE)
    )
    (
        routed.park
        | "ParkMessages"
        >> beam.Map(
            lambda d: KafkaMessage(
                parked_topic(opts.pipeline),
                ledger_key(d).encode(),
                d.to_json().encode(),
                d.event_id,
            )
        )
        | "WritePark" >> WriteToKafkaEvents(conn.bootstrap_servers, NAMESPACE)
    )


def run(argv: list[str] | None = None) -> ReplaySummary:
    """Run a replay and return its counters (see ``NAMESPACE`` counters in the docstring)."""
    opts = ReplayOptions(argv)
    conn = opts.view_as(ConnectionOptions)
    # Validated here, not by argparse: Beam parses every options class for every pipeline.
    if not opts.pipeline:
        raise ValueError("--pipeline is required: the pipeline whose dead letters to replay")
    if conn.run_id is None:
        conn.run_id = uuid.uuid4().hex[:12]
    already = _read_ledger(conn.bootstrap_servers, opts.pipeline)
    p = beam.Pipeline(options=opts)
    build_pipeline(p, opts, already)
    result = p.run()
    result.wait_until_finish()
    found = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(NAMESPACE))
    counters = {c.key.metric.name: c.committed for c in found["counters"]}
    return ReplaySummary(counters)


if __name__ == "__main__":
    print(json.dumps(run().counters))
