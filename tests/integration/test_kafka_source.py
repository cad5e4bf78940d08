"""ReadFromKafkaEvents, Python engine, against the real broker on Prism (and the direct runner)."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState
from apache_beam.transforms import window
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from retail_backbone.io.dead_letters import Origin
from retail_backbone.io.kafka import KafkaRecord, KafkaUnavailable
from retail_backbone.io.kafka_source import (
    KafkaIOOptions,
    ReadFromKafkaEvents,
    StartPosition,
    StopPosition,
    kafka_io_args,
    kafka_io_engine,
    plan_partition_reads,
)
from retail_backbone.pipelines.runners import runner_args
from retail_backbone.testing import collect

T0 = 1_764_000_000_000  # record timestamps of the produced events (2025-11-24)


@pytest.fixture
def kafka(stack):
    cfg = stack.require("kafka", "prism")
    return cfg, f"{cfg.host}:{cfg.port('kafka')}"


@pytest.fixture
def new_topic(kafka):
    """Creates topics named after the test; deletes them afterwards."""
    _, bootstrap = kafka
    admin = AdminClient({"bootstrap.servers": bootstrap})
    created: list[str] = []

    def make(partitions: int) -> str:
        topic = f"it.kafka-source.{uuid.uuid4().hex[:8]}"
        admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(10)
        created.append(topic)
        return topic

    yield make
    if created:
        for future in admin.delete_topics(created).values():
            with contextlib.suppress(KafkaException):  # a test may have deleted it already
                future.result(10)


def produce(bootstrap: str, topic: str, first: int, count: int, partitions: int) -> None:
    """Values ``v<i>``, keys ``k<i>``, partition ``i % partitions``, timestamp ``T0 + 10 * i``."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in range(first, first + count):
        producer.produce(
            topic,
            f"v{i}".encode(),
            key=f"k{i}".encode(),
            partition=i % partitions,
            timestamp=T0 + 10 * i,
        )
    assert producer.flush(15) == 0


def read(cfg, runner: str = "prism", **kwargs) -> list[tuple[KafkaRecord, int]]:
    """Run a bounded read; return each record with its element timestamp (ms)."""
    out = collect(
        lambda p: {
            "records": p
            | ReadFromKafkaEvents(**kwargs)
            | beam.Map(lambda r, ts=beam.DoFn.TimestampParam: (r, ts.micros // 1000))
        },
        PipelineOptions(runner_args(runner, cfg)),
    )
    return out.get("records", [])


def values(records: list[tuple[KafkaRecord, int]]) -> list[str]:
    return sorted(r.value.decode() for r, _ in records)


def expected(first: int, count: int) -> list[str]:
    return sorted(f"v{i}" for i in range(first, first + count))


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "_it_end_offsets"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.5)


@pytest.mark.slow
def test_reads_exactly_the_produced_set_then_resumes_from_committed_offsets(kafka, new_topic):
    cfg, bootstrap = kafka
    topic, group = new_topic(6), f"it-{uuid.uuid4().hex[:8]}"  # 6 partitions, one SDK harness
    produce(bootstrap, topic, 0, 600, partitions=6)
    kwargs = dict(bootstrap=bootstrap, topics=topic, group_id=group, stop=StopPosition.when_idle(2))

    first = read(cfg, **kwargs)  # start defaults to the committed offsets: none yet -> earliest

    assert values(first) == expected(0, 600)  # every record once: no loss, no duplicates
    assert len({(r.partition, r.offset) for r, _ in first}) == 600
    for record, element_ms in first:
        i = int(record.value[1:])
        assert (record.key, record.topic, record.partition) == (f"k{i}".encode(), topic, i % 6)
        assert record.timestamp_ms == element_ms == T0 + 10 * i
        assert record.origin == Origin.kafka(topic, record.partition, record.offset)
    # Committed from bundle finalizers once Prism had persisted each bundle's output.
    ends = end_offsets(bootstrap, topic, 6)
    wait_for(lambda: committed(bootstrap, group, topic, 6) == ends, 10, "the commits of run 1")

    produce(bootstrap, topic, 600, 300, partitions=6)
    second = read(cfg, **kwargs)

    assert values(second) == expected(600, 300)  # only what came after run 1's commits
    ends = end_offsets(bootstrap, topic, 6)
    wait_for(lambda: committed(bootstrap, group, topic, 6) == ends, 10, "the commits of run 2")


@pytest.mark.slow
def test_replays_a_time_range_and_stops_at_explicit_offsets(kafka, new_topic):
    cfg, bootstrap = kafka
    topic = new_topic(3)
    produce(bootstrap, topic, 0, 300, partitions=3)  # offsets of partition p: i // 3 for i % 3 == p

    replay = read(
        cfg,
        bootstrap=bootstrap,
        topics=topic,
        start=StartPosition.at_timestamp(T0 + 10 * 100),
        stop=StopPosition.at_timestamp(T0 + 10 * 250),
    )
    assert values(replay) == expected(100, 150)

    # Partition p holds v<3k+p> at offset k: offsets [10, 20) of every partition are v30..v59.
    ranged = read(
        cfg,
        bootstrap=bootstrap,
        topics=topic,
        start=StartPosition.at_offsets({0: 10, 1: 10, 2: 10}),
        stop=StopPosition.at_offsets({0: 20, 1: 20, 2: 20}),
    )
    assert values(ranged) == expected(30, 30)
    assert {(r.partition, r.offset) for r, _ in ranged} == {
        (p, o) for p in range(3) for o in range(10, 20)
    }


@pytest.mark.slow
def test_bounded_read_and_commits_on_the_direct_runner(kafka, new_topic):
    cfg, bootstrap = kafka
    topic, group = new_topic(2), f"it-{uuid.uuid4().hex[:8]}"
    produce(bootstrap, topic, 0, 100, partitions=2)

    records = read(
        cfg,
        "direct",
        bootstrap=bootstrap,
        topics=topic,
        group_id=group,
        stop=StopPosition.at_offsets({0: 50, 1: 50}),
    )

    assert values(records) == expected(0, 100)
    # The FnApiRunner behind the direct runner calls bundle finalizers too.
    assert committed(bootstrap, group, topic, 2) == {0: 50, 1: 50}


def test_unreachable_broker_fails_when_the_pipeline_is_built(kafka):
    cfg, _ = kafka
    p = beam.Pipeline(options=PipelineOptions(runner_args("prism", cfg)))
    # Raised while the graph is built, i.e. before any job is submitted.
    with pytest.raises(KafkaUnavailable, match=r"Kafka at 127\.0\.0\.1:1 is unreachable"):
        _ = p | ReadFromKafkaEvents("127.0.0.1:1", "retail.events", launch_timeout=2)


def test_missing_topic_fails_when_the_pipeline_is_built(kafka):
    cfg, bootstrap = kafka
    p = beam.Pipeline(options=PipelineOptions(runner_args("prism", cfg)))
    with pytest.raises(
        KafkaUnavailable, match=rf"topic 'it.no-such-topic' does not exist on Kafka at {bootstrap}"
    ):
        _ = p | ReadFromKafkaEvents(bootstrap, "it.no-such-topic")


def test_positions_are_validated_at_launch(kafka, new_topic):
    _, bootstrap = kafka
    topic = new_topic(2)
    produce(bootstrap, topic, 0, 10, partitions=2)

    with pytest.raises(ValueError, match=r"must name every partition; missing \[\('it\."):
        plan_partition_reads(bootstrap, topic, StartPosition.at_offsets({0: 0}))
    with pytest.raises(ValueError, match=r"outside \[0, 5\]"):
        plan_partition_reads(bootstrap, topic, StartPosition.at_offsets({0: 0, 1: 6}))
    with pytest.raises(ValueError, match="needs a group_id"):
        plan_partition_reads(bootstrap, topic, StartPosition.committed())
    with pytest.raises(ValueError, match="Java-engine stop"):
        plan_partition_reads(
            bootstrap, topic, StartPosition.earliest(), StopPosition.after_records(5)
        )
    plan = plan_partition_reads(
        bootstrap, topic, StartPosition.latest(), StopPosition.at_timestamp(T0 + 10 * 4)
    )
    # Stop before the launch-time end: the range is empty rather than negative.
    assert [(r.partition, r.start, r.stop) for r in plan] == [(0, 5, 5), (1, 5, 5)]


def test_engine_option_round_trips_and_java_is_refused_off_flink(kafka):
    cfg, bootstrap = kafka
    options = PipelineOptions([*runner_args("prism", cfg), *kafka_io_args("java")])
    assert kafka_io_engine(options) == "java"
    assert options.view_as(KafkaIOOptions).kafka_io == "java"
    assert kafka_io_engine(PipelineOptions([])) is None
    with pytest.raises(ValueError, match="unknown Kafka engine"):
        kafka_io_args("scala")  # type: ignore[arg-type]
    p = beam.Pipeline(options=options)
    with pytest.raises(ValueError, match="--kafka_io=java needs the flink runner"):
        _ = p | ReadFromKafkaEvents(bootstrap, "retail.events")


class _AppendJson(beam.DoFn):
    """Appends each element as a JSON line; the SDK harness runs in this process (LOOPBACK)."""

    def __init__(self, path: str) -> None:
        self._path = path

    def process(self, element):
        with open(self._path, "a") as fh:
            fh.write(json.dumps(element) + "\n")
        yield element


def _lines(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _stop(result) -> None:
    if PipelineState.is_terminal(result.state):
        return  # failed already: the test's own assertion says why
    result.cancel()
    with contextlib.suppress(RuntimeError):  # a cancelled portable job raises from here
        result.wait_until_finish(30)
    assert result.state in (PipelineState.CANCELLED, PipelineState.CANCELLING)


@pytest.mark.slow
def test_unbounded_read_discovers_new_partitions_and_idle_watermark_closes_windows(
    kafka, new_topic, tmp_path
):
    cfg, bootstrap = kafka
    topic = new_topic(2)
    # Event times ten minutes ago: only the idle rule can move the watermark past their window.
    minute = (int(time.time() * 1000) // 60_000 - 10) * 60_000
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(20):
        producer.produce(topic, f"a{i}".encode(), partition=i % 2, timestamp=minute + i)
    assert producer.flush(10) == 0
    raw, windows = tmp_path / "raw.jsonl", tmp_path / "windows.jsonl"

    p = beam.Pipeline(options=PipelineOptions(runner_args("prism", cfg)))
    records = p | ReadFromKafkaEvents(
        bootstrap,
        topic,
        start=StartPosition.earliest(),
        max_out_of_orderness=5,
        discover_partitions_every=1,
    )
    _ = (
        records
        | "Coordinates" >> beam.Map(lambda r: [r.partition, r.offset, r.value.decode()])
        | "WriteRaw" >> beam.ParDo(_AppendJson(str(raw)))
    )
    _ = (
        records
        | beam.WindowInto(window.FixedWindows(60))
        | beam.Map(lambda r: ("n", 1))
        | beam.CombinePerKey(sum)
        | beam.Map(lambda kv, w=beam.DoFn.WindowParam: [w.start.micros // 1000, kv[1]])
        | "WriteWindows" >> beam.ParDo(_AppendJson(str(windows)))
    )
    result = p.run()
    try:
        wait_for(lambda: len(_lines(raw)) >= 20, 60, "the first 20 records")
        # The window closes while the job runs: both partitions are idle, so the watermark
        # moved to now - 5 s. One on-time pane with all 20 records, none late.
        wait_for(lambda: _lines(windows), 30, "the window to close")
        time.sleep(2)
        assert _lines(windows) == [[minute, 20]]
        assert result.state == PipelineState.RUNNING

        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_partitions([NewPartitions(topic, 4)])[topic].result(10)
        producer = Producer({"bootstrap.servers": bootstrap})  # fresh partition metadata
        for i in range(8):
            producer.produce(topic, f"b{i}".encode(), partition=2 + i % 2)
        assert producer.flush(10) == 0
        wait_for(lambda: len(_lines(raw)) >= 28, 60, "the records of the new partitions")
    finally:
        _stop(result)

    got = _lines(raw)
    assert len(got) == 28
    assert sorted(v for _, _, v in got) == sorted(
        [f"a{i}" for i in range(20)] + [f"b{i}" for i in range(8)]
    )
    assert {(p, o) for p, o, _ in got if p >= 2} == {(2, o) for o in range(4)} | {
        (3, o) for o in range(4)
    }


@pytest.mark.slow
def test_topic_deleted_mid_run_fails_the_job_with_a_clear_error(kafka, new_topic):
    cfg, bootstrap = kafka
    topic = new_topic(2)
    produce(bootstrap, topic, 0, 10, partitions=2)
    p = beam.Pipeline(options=PipelineOptions(runner_args("prism", cfg)))
    _ = (
        p
        | ReadFromKafkaEvents(bootstrap, topic, discover_partitions_every=None)
        | beam.Map(lambda r: None)
    )
    result = p.run()
    time.sleep(3)
    admin = AdminClient({"bootstrap.servers": bootstrap})  # outlives its future
    admin.delete_topics([topic])[topic].result(10)

    with pytest.raises(RuntimeError) as failure:
        result.wait_until_finish(60)
    assert result.state == PipelineState.FAILED
    assert (
        f"KafkaTopicDeleted: topic '{topic}' was deleted from Kafka at {bootstrap} while it "
        "was read" in str(failure.value)
    )
