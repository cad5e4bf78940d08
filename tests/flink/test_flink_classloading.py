"""Beam is loaded once per Flink process, from the cluster's class path, not once per job.

Java-engine (KafkaIO) jobs used to leave ~50 MB of TaskManager metaspace behind each: the EMBEDDED
Java SDK harness leaves a thread running that kept the job's class loader (and its copy of Beam).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import apache_beam as beam
import pytest
import requests
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from retail_backbone.io.kafka_source import ReadFromKafkaEvents, StartPosition, StopPosition
from retail_backbone.pipelines.runners import runner_args

JCMD = shutil.which("jcmd")


def _taskmanager_pid(cfg) -> int:
    return int(cfg.pid_path("flink-taskmanager").read_text().strip())


def _class_path(pid: int) -> list[str]:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return [e for e in argv[argv.index(b"-classpath") + 1].decode().split(":") if e]


def _metaspace_mb(pid: int) -> float:
    """Metaspace in use after a full GC (which unloads the classes of unreachable loaders)."""
    subprocess.run([JCMD, str(pid), "GC.run"], capture_output=True, check=True, timeout=60)
    out = subprocess.run(
        [JCMD, str(pid), "VM.metaspace"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    value, unit = re.search(r"Both:.*?committed,\s+([\d.]+) ([KMG]B)[^,]*used", out).groups()
    return float(value) * {"KB": 1 / 1024, "MB": 1.0, "GB": 1024.0}[unit]


def test_cluster_loads_beam_from_its_class_path_parent_first(stack):
    cfg = stack.require("flink")
    rest = f"http://{cfg.host}:{cfg.port('flink_rest')}"
    config = {e["key"]: e["value"] for e in requests.get(f"{rest}/jobmanager/config").json()}
    assert config["classloader.resolve-order"] == "parent-first"
    for name in ("flink-jobmanager", "flink-taskmanager"):
        jars = [Path(p).name for p in _class_path(int(cfg.pid_path(name).read_text()))]
        assert any(j.startswith("beam-flink-lib-") for j in jars), (name, jars)
        assert jars[-1].startswith("flink-dist-"), (name, jars)


@pytest.fixture
def kafka_topic(stack):
    cfg = stack.require("kafka", "jobserver")
    bootstrap = f"{cfg.host}:{cfg.port('kafka')}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    name = f"it.flink-classloading.{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(10)
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(20):
        producer.produce(name, f"v{i}".encode(), key=f"k{i}".encode())
    assert producer.flush(15) == 0
    yield cfg, bootstrap, name
    with contextlib.suppress(KafkaException):
        admin.delete_topics([name])[name].result(10)


class _AppendValue(beam.DoFn):
    """Appends each record's value to a file; the Python steps run in this process (LOOPBACK)."""

    def __init__(self, path: str) -> None:
        self._path = path

    def process(self, record):
        with open(self._path, "a") as fh:
            fh.write(record.value.decode() + "\n")
        yield record


def _run_java_engine_job(cfg, bootstrap: str, topic: str, out: Path) -> None:
    options = PipelineOptions(
        [*runner_args("flink", cfg), "--streaming", f"--job_name=it-classloading-{out.stem}"]
    )
    p = beam.Pipeline(options=options)
    _ = (
        p
        | ReadFromKafkaEvents(
            bootstrap, topic, start=StartPosition.earliest(), stop=StopPosition.after_records(20)
        )
        | beam.ParDo(_AppendValue(str(out)))
    )
    assert p.run().wait_until_finish() == PipelineState.DONE
    assert sorted(out.read_text().split()) == sorted(f"v{i}" for i in range(20))


@pytest.mark.slow
@pytest.mark.skipif(JCMD is None, reason="jcmd (JDK) is needed to read the TaskManager's metaspace")
def test_java_engine_jobs_leave_no_metaspace_behind(kafka_topic, tmp_path):
    cfg, bootstrap, topic = kafka_topic
    pid = _taskmanager_pid(cfg)
    # The first such job after a TaskManager start loads Beam and KafkaIO into it (~60 MB), once.
    _run_java_engine_job(cfg, bootstrap, topic, tmp_path / "warm-up.txt")
    before = _metaspace_mb(pid)
    for i in range(2):
        _run_java_engine_job(cfg, bootstrap, topic, tmp_path / f"job-{i}.txt")
    grown = _metaspace_mb(pid) - before
    # A per-job copy of Beam is ~50 MB; what is left is reflection accessors and the like.
    assert grown < 15, f"TaskManager metaspace grew {grown:.1f} MB over two Java-engine jobs"
    assert _taskmanager_pid(cfg) == pid
