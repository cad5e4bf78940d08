"""Kafka records and a bounded, Python-native read of offset ranges fixed at launch.

Example::

    ranges = snapshot_offset_ranges("127.0.0.1:9092", "retail.events")
    records = p | ReadKafkaOffsetRanges("127.0.0.1:9092", ranges)

The end offsets are taken when the pipeline is built (validated at launch: an unreachable broker
or a missing topic fails before the job starts), so the read is bounded and runs on every runner.
The unbounded splittable source with committed offsets and watermarks is ``ReadFromKafkaEvents``
in ``retail_backbone.io.kafka_source``; both produce ``KafkaRecord``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from retail_backbone.io.dead_letters import Origin

__all__ = [
    "KafkaRecord",
    "KafkaUnavailable",
    "OffsetRange",
    "ReadKafkaOffsetRanges",
    "ensure_topics",
    "snapshot_offset_ranges",
]


class KafkaRecord(NamedTuple):
    """One Kafka message with its coordinates.

    ``timestamp_ms`` is the record's Kafka timestamp (producers set it to the envelope's
    event time), or -1 when the broker reports none.
    """

    key: bytes | None
    value: bytes
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    #: How many times this payload failed before (``backbone dlq replay`` headers); 1 = fresh.
    attempt: int = 1
    #: When the payload first failed, for a replayed record (else None).
    first_seen_ms: int | None = None

    @property
    def origin(self) -> Origin:
        """Where the record came from, as dead letters and ``DecodeEvents`` record it."""
        return Origin.kafka(self.topic, self.partition, self.offset)


#: Kafka headers ``backbone dlq replay`` puts on a re-injected payload (the payload itself is
#: re-injected unchanged, so replays never nest).
ATTEMPT_HEADER = "retail-dlq-attempt"
FIRST_SEEN_HEADER = "retail-dlq-first-seen"


def replay_marks(headers: Any) -> tuple[int, int | None]:
    """``(attempt, first_seen_ms)`` from a record's headers: ``(1, None)`` for a fresh record.

    Accepts confluent-kafka's list of ``(key, value)`` pairs or KafkaIO's rows with ``key`` and
    ``value``; unreadable marks count as fresh rather than failing the read.
    """
    if not headers:
        return 1, None
    marks: dict[str, bytes] = {}
    for header in headers:
        key, value = header if isinstance(header, tuple) else (header.key, header.value)
        if key in (ATTEMPT_HEADER, FIRST_SEEN_HEADER) and value is not None:
            marks[key] = bytes(value)
    try:
        attempt = int(marks[ATTEMPT_HEADER]) if ATTEMPT_HEADER in marks else 1
        first = int(marks[FIRST_SEEN_HEADER]) if FIRST_SEEN_HEADER in marks else None
    except ValueError:
        return 1, None
    return max(attempt, 1), first


class OffsetRange(NamedTuple):
    """Offsets ``[start, stop)`` of one topic partition."""

    topic: str
    partition: int
    start: int
    stop: int


class KafkaUnavailable(Exception):
    """The broker cannot be reached or the topic does not exist."""


def ensure_topics(
    bootstrap: str,
    topics: list[str],
    partitions: int = 3,
    config: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> list[str]:
    """Create the topics that do not exist yet (at launch, never per element).

    Returns:
        The topics created.

    Raises:
        KafkaUnavailable: the broker does not answer, or a topic cannot be created.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise KafkaUnavailable(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
    missing = [t for t in topics if t not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [
            NewTopic(t, num_partitions=partitions, replication_factor=1, config=config or {})
            for t in missing
        ]
    )
    for topic, future in futures.items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise KafkaUnavailable(f"creating topic {topic} failed: {exc}") from exc
    return missing


def snapshot_offset_ranges(bootstrap: str, topic: str, timeout: float = 10.0) -> list[OffsetRange]:
    """The current ``[low, high)`` watermark offsets of every partition of ``topic``."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "_backbone_snapshot", "log_level": 0}
    )
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=timeout)
        except KafkaException as exc:
            raise KafkaUnavailable(f"Kafka at {bootstrap} is unreachable: {exc}") from exc
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            raise KafkaUnavailable(f"topic {topic!r} does not exist on {bootstrap}")
        ranges = []
        for partition in sorted(info.partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout
            )
            ranges.append(OffsetRange(topic, partition, low, high))
        return ranges
    finally:
        consumer.close()


class _ReadOffsetRangeFn(beam.DoFn):
    """Reads one partition's offset range with confluent-kafka; the client lives per worker."""

    def __init__(self, bootstrap: str, poll_timeout: float = 10.0) -> None:
        self._bootstrap = bootstrap
        self._poll_timeout = poll_timeout
        self._consumer = None
        self._read = Metrics.counter("kafka", "records_read")

    def setup(self) -> None:
        from confluent_kafka import Consumer

        self._consumer = Consumer(
            {
                "bootstrap.servers": self._bootstrap,
                "group.id": "_backbone_offset_range_reader",
                "enable.auto.commit": False,
                "log_level": 0,
            }
        )

    def process(self, rng: OffsetRange) -> Iterator[KafkaRecord]:
        from confluent_kafka import TopicPartition

        if rng.stop <= rng.start:
            return
        self._consumer.assign([TopicPartition(rng.topic, rng.partition, rng.start)])
        next_offset = rng.start
        while next_offset < rng.stop:
            msgs = self._consumer.consume(num_messages=500, timeout=self._poll_timeout)
            if not msgs:
                raise KafkaUnavailable(
                    f"no records from {rng.topic}[{rng.partition}] at offset {next_offset} "
                    f"within {self._poll_timeout}s (expected up to {rng.stop})"
                )
            for msg in msgs:
                if msg.error():
                    raise KafkaUnavailable(str(msg.error()))
                if msg.offset() >= rng.stop:
                    next_offset = rng.stop
                    break
                next_offset = msg.offset() + 1
                self._read.inc()
                yield KafkaRecord(
                    msg.key(),
                    msg.value(),
                    msg.topic(),
                    msg.partition(),
                    msg.offset(),
                    msg.timestamp()[1],
                    *replay_marks(msg.headers()),
                )
        self._consumer.unassign()

    def teardown(self) -> None:
        if self._consumer is not None:
            self._consumer.close()


@beam.ptransform_fn
@beam.typehints.with_output_types(KafkaRecord)
def ReadKafkaOffsetRanges(
    pbegin: beam.pvalue.PBegin, bootstrap: str, ranges: list[OffsetRange]
) -> beam.PCollection[KafkaRecord]:
    """Read the given offset ranges, one partition per element, spread over workers."""
    return (
        pbegin
        | "OffsetRanges" >> beam.Create(ranges)
        | "SpreadPartitions" >> beam.Reshuffle()
        | "ReadRanges" >> beam.ParDo(_ReadOffsetRangeFn(bootstrap))
    )
