"""ReadFromKafkaEvents on Flink: the Java engine (KafkaIO through the job server's expansion port).

Every Java-engine job leaks its class loader in the TaskManager (the EMBEDDED Java harness keeps
threads alive), about 50 MB of metaspace each: this file runs two such jobs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from pathlib import Path

import apache_beam as beam
import pytest
import requests
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from retail_backbone.io.kafka import KafkaRecord, KafkaUnavailable
from retail_backbone.io.kafka_source import (
    ReadFromKafkaEvents,
    StartPosition,
    StopPosition,
    kafka_io_args,
)
from retail_backbone.pipelines.flink_ops import TERMINAL_STATES, FlinkRest
from retail_backbone.pipelines.runners import runner_args

T0 = 1_764_000_000_000


@pytest.fixture
def flink_kafka(stack):
    cfg = stack.require("kafka", "jobserver")
    return cfg, f"{cfg.host}:{cfg.port('kafka')}"


@pytest.fixture
def topic(flink_kafka):
    _, bootstrap = flink_kafka
    admin = AdminClient({"bootstrap.servers": bootstrap})
    name = f"it.kafka-java.{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(name, 3, 1)])[name].result(10)
    yield name
    with contextlib.suppress(KafkaException):
        admin.delete_topics([name])[name].result(10)


def produce(bootstrap: str, topic: str, count: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in range(count):
        producer.produce(
            topic, f"v{i}".encode(), key=f"k{i}".encode(), partition=i % 3, timestamp=T0 + i
        )
    assert producer.flush(15) == 0


class _AppendJson(beam.DoFn):
    """Appends each record as a JSON line; the Python steps run in this process (LOOPBACK)."""

    def __init__(self, path: str) -> None:
        self._path = path

    def process(self, record: KafkaRecord, ts=beam.DoFn.TimestampParam):
        line = [record.partition, record.offset, record.value.decode(), record.timestamp_ms]
        with open(self._path, "a") as fh:
            fh.write(json.dumps([*line, ts.micros // 1000, str(record.origin)]) + "\n")
        yield record


def _lines(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _flink_job(cfg, name: str) -> dict:
    url = f"http://{cfg.host}:{cfg.port('flink_rest')}/jobs/overview"
    jobs = [j for j in requests.get(url, timeout=10).json()["jobs"] if j["name"] == name]
    assert len(jobs) == 1, jobs
    return jobs[0]


def _diagnosis(cfg, name: str, out: Path) -> str:
    """What a timed-out wait needs to be understood: records seen, job state, checkpoints."""
    flink = FlinkRest.from_config(cfg)
    job = _flink_job(cfg, name)
    counts = flink.checkpoints(job["jid"]).get("counts", {})
    others = [(j.name, j.state) for j in flink.jobs() if j.state not in TERMINAL_STATES]
    return (
        f"{len(_lines(out))} records written; job {job['state']}, tasks {job.get('tasks')}; "
        f"checkpoints {counts}; unfinished jobs {others}"
    )


def _expected(count: int, topic: str) -> list:
    return sorted(
        [i % 3, i // 3, f"v{i}", T0 + i, T0 + i, f"{topic}/{i % 3}/{i // 3}"] for i in range(count)
    )


def test_streaming_read_on_flink_returns_exactly_the_produced_records(flink_kafka, topic, tmp_path):
    cfg, bootstrap = flink_kafka
    produce(bootstrap, topic, 90)
    out, job_name = tmp_path / "records.jsonl", f"it-kafka-java-{uuid.uuid4().hex[:8]}"
    options = PipelineOptions([*runner_args("flink", cfg), "--streaming", f"--job_name={job_name}"])

    p = beam.Pipeline(options=options)
    _ = (
        p
        # No engine given: the Flink runner picks the Java engine (KafkaIO).
        | ReadFromKafkaEvents(
            bootstrap, topic, start=StartPosition.earliest(), stop=StopPosition.after_records(90)
        )
        | beam.ParDo(_AppendJson(str(out)))
    )
    # The expansion resolved no artifacts: the job-server jar was not downloaded.
    assert not any(Path(p.local_tempdir).iterdir())
    result = p.run()
    assert result.wait_until_finish() == PipelineState.DONE

    assert sorted(_lines(out)) == _expected(90, topic)  # no loss, no duplicates, timestamps
    job = _flink_job(cfg, job_name)  # the read really ran on the session cluster
    assert job["state"] == "FINISHED"


@pytest.mark.slow
def test_unbounded_read_on_flink_streams_and_commits_offsets_at_checkpoints(
    flink_kafka, topic, tmp_path
):
    cfg, bootstrap = flink_kafka
    group = f"it-{uuid.uuid4().hex[:8]}"
    produce(bootstrap, topic, 60)
    out, job_name = tmp_path / "records.jsonl", f"it-kafka-java-{uuid.uuid4().hex[:8]}"
    options = PipelineOptions(
        [
            *runner_args("flink", cfg),
            *kafka_io_args("java"),
            "--streaming",
            f"--job_name={job_name}",
            # KafkaIO commits when Flink finalizes a checkpoint.
            "--checkpointing_interval=2000",
        ]
    )
    p = beam.Pipeline(options=options)
    _ = (
        p
        | ReadFromKafkaEvents(bootstrap, topic, group_id=group)  # committed, else earliest
        | beam.ParDo(_AppendJson(str(out)))
    )
    result = p.run()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        deadline = time.monotonic() + 120
        while len(_lines(out)) < 60 and time.monotonic() < deadline:
            time.sleep(1)
        assert len(_lines(out)) == 60, _diagnosis(cfg, job_name, out)
        tps = [TopicPartition(topic, partition) for partition in range(3)]
        offsets: list[int] = []
        deadline = time.monotonic() + 60  # a few checkpoints after the last record
        while time.monotonic() < deadline:
            offsets = [tp.offset for tp in consumer.committed(tps, timeout=10)]
            if offsets == [20, 20, 20]:
                break
            time.sleep(1)
        assert result.state == PipelineState.RUNNING
        assert offsets == [20, 20, 20], _diagnosis(cfg, job_name, out)
    finally:
        consumer.close()
        result.cancel()
        # Cancelling through the job server leaves the Flink job running: cancel it in Flink.
        jid = _flink_job(cfg, job_name)["jid"]
        rest = f"http://{cfg.host}:{cfg.port('flink_rest')}/jobs/{jid}"
        requests.patch(f"{rest}?mode=cancel", timeout=10)
    assert sorted(_lines(out)) == _expected(60, topic)


def test_python_engine_is_refused_on_flink(flink_kafka, topic):
    cfg, bootstrap = flink_kafka
    for args, engine in (([], "python"), (kafka_io_args("python"), None)):
        p = beam.Pipeline(options=PipelineOptions([*runner_args("flink", cfg), *args]))
        with pytest.raises(ValueError, match=r"--kafka_io=python cannot run on the flink runner"):
            _ = p | ReadFromKafkaEvents(bootstrap, topic, engine=engine)


def test_java_engine_validates_before_the_job_starts(flink_kafka, topic):
    cfg, bootstrap = flink_kafka
    p = beam.Pipeline(options=PipelineOptions(runner_args("flink", cfg)))
    with pytest.raises(KafkaUnavailable, match=r"topic 'it.nothing' does not exist on Kafka at"):
        _ = p | "Missing" >> ReadFromKafkaEvents(bootstrap, "it.nothing")
    with pytest.raises(ValueError, match="the java engine \\(KafkaIO\\) cannot stop at idle"):
        _ = p | "Idle" >> ReadFromKafkaEvents(bootstrap, topic, stop=StopPosition.when_idle(1))
    with pytest.raises(ValueError, match="cannot start at explicit offsets"):
        _ = p | "Offsets" >> ReadFromKafkaEvents(
            bootstrap, topic, start=StartPosition.at_offsets({0: 0, 1: 0, 2: 0})
        )


def test_java_engine_warns_of_empty_partitions_that_hold_the_watermark(flink_kafka, topic, caplog):
    # KafkaIO's create-time watermark of a partition waits for its first record.
    cfg, bootstrap = flink_kafka
    produce(bootstrap, topic, 2)  # partitions 0 and 1 get a record each, 2 stays empty
    p = beam.Pipeline(options=PipelineOptions(runner_args("flink", cfg)))
    with caplog.at_level(logging.WARNING, logger="retail_backbone.io.kafka_source"):
        _ = p | ReadFromKafkaEvents(bootstrap, topic)
    assert f"1 empty partition(s) ({topic}/2) hold the read's watermark" in caplog.text
