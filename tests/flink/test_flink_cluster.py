"""Beam pipelines on the real Flink session cluster, submitted through the Beam Flink job server."""

from __future__ import annotations

import tempfile
import uuid

import apache_beam as beam
import requests
from apache_beam.io.kafka import ReadFromKafka, WriteToKafka
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState

from retail_backbone.pipelines.runners import runner_args


def _flink_get(cfg, path: str) -> dict:
    resp = requests.get(f"http://{cfg.host}:{cfg.port('flink_rest')}{path}", timeout=10)
    resp.raise_for_status()
    return resp.json()


def test_status_reports_flink_healthy(stack):
    cfg = stack.require("flink")
    [status] = stack.stack.status(["flink"])
    assert status.state == "healthy", status.detail
    assert status.port == cfg.port("flink_rest")
    assert len(status.pids) == 2  # JobManager and TaskManager
    overview = _flink_get(cfg, "/overview")
    assert overview["taskmanagers"] == 1
    assert overview["slots-total"] == 2


def test_word_count_runs_on_flink_and_the_job_finishes(stack, tmp_path):
    cfg = stack.require("jobserver")
    job_name = f"it-flink-wordcount-{uuid.uuid4().hex[:8]}"
    args = runner_args("flink", cfg)
    assert args == [
        "--runner=PortableRunner",
        f"--job_endpoint=127.0.0.1:{cfg.port('jobserver')}",
        "--environment_type=LOOPBACK",
        f"--kafka_expansion_service=127.0.0.1:{cfg.port('jobserver_expansion')}",
        "--max_cache_memory_usage_mb=256",
    ]
    out = tmp_path / "counts"
    words = ["the", "quick", "fox", "and", "the", "lazy", "dog", "and", "the", "cat"]

    pipeline = beam.Pipeline(options=PipelineOptions([*args, f"--job_name={job_name}"]))
    (
        pipeline
        | beam.Create(words)
        | beam.combiners.Count.PerElement()
        | beam.MapTuple(lambda word, n: f"{word}\t{n}")
        | beam.io.WriteToText(str(out), shard_name_template="")
    )
    result = pipeline.run()
    assert result.wait_until_finish() == PipelineState.DONE

    assert sorted(out.read_text().splitlines()) == [
        "and\t2",
        "cat\t1",
        "dog\t1",
        "fox\t1",
        "lazy\t1",
        "quick\t1",
        "the\t3",
    ]
    # The work really ran on the Flink cluster: the session cluster lists the job as finished.
    jobs = [j for j in _flink_get(cfg, "/jobs/overview")["jobs"] if j["name"] == job_name]
    assert len(jobs) == 1, jobs
    assert jobs[0]["state"] == "FINISHED"
    assert jobs[0]["tasks"]["finished"] == jobs[0]["tasks"]["total"] > 0


def test_job_server_expansion_service_expands_java_kafkaio(stack, tmp_path, monkeypatch):
    """KafkaIO is on the job server's classpath: Python's Kafka transforms expand against it.

    Expansion only; no Kafka broker and no Java SDK harness are needed for that.
    """
    cfg = stack.require("jobserver")
    # The SDK downloads the Java environment's artifact (the ~180 MB job-server jar) into a
    # mkdtemp() folder per expansion and never deletes it; keep it inside pytest's tmp_path.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    expansion = f"{cfg.host}:{cfg.port('jobserver_expansion')}"
    bootstrap = {"bootstrap.servers": "127.0.0.1:1"}
    pipeline = beam.Pipeline()
    records = pipeline | ReadFromKafka(
        consumer_config=bootstrap, topics=["t"], max_num_records=1, expansion_service=expansion
    )
    _ = records | WriteToKafka(producer_config=bootstrap, topic="t2", expansion_service=expansion)
    proto = pipeline.to_runner_api()

    # The Java environment is the one that stages the job server's own jar.
    java_envs = {
        env_id
        for env_id, env in proto.components.environments.items()
        if any(b"job-server" in dep.role_payload for dep in env.dependencies)
    }
    assert java_envs, dict(proto.components.environments)
    names = {
        t.unique_name for t in proto.components.transforms.values() if t.environment_id in java_envs
    }
    assert any("/KafkaIO.Read/" in n for n in names)
    assert any("/KafkaIO.WriteRecords/" in n for n in names)
