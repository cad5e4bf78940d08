"""The file source and the Kafka source give the same events for the same generated data."""

import datetime as dt
import uuid

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from retail_backbone import generator as gen
from retail_backbone.io.events import DecodeEvents
from retail_backbone.io.files import ReadEventFiles
from retail_backbone.io.kafka_source import ReadFromKafkaEvents, StopPosition
from retail_backbone.pipelines.runners import runner_args
from retail_backbone.testing import collect

CFG = gen.GeneratorConfig(
    seed=21,
    start=dt.date(2025, 11, 24),
    days=1,
    events_per_day=2500,
    n_products=60,
    n_customers=250,
    n_locations=3,
)


@pytest.mark.slow
def test_same_events_from_files_and_from_kafka(stack, tmp_path):
    cfg = stack.require("kafka", "registry", "prism")
    bootstrap = f"{cfg.host}:{cfg.port('kafka')}"
    registry = f"http://{cfg.host}:{cfg.port('registry')}"
    prefix = f"it.agree.{uuid.uuid4().hex[:8]}."
    gen.write_files(gen.generate_events(CFG), str(tmp_path / "files"), "avro")
    sent = gen.produce_to_kafka(
        gen.generate_events(CFG), bootstrap, registry, topic_prefix=prefix, progress=False
    )
    topics = sorted(sent.by_topic)
    options = PipelineOptions(runner_args("prism", cfg))

    from_files = collect(
        lambda p: {"events": (p | ReadEventFiles(str(tmp_path / "files"), "agree")).events},
        options,
    )["events"]

    def from_kafka(p):
        records = p | ReadFromKafkaEvents(bootstrap, topics, stop=StopPosition.when_idle(3))
        decoded = records | DecodeEvents("agree", fmt="avro", registry_url=registry)
        return {"events": decoded.events, "dead": decoded.dead_letters}

    kafka = collect(from_kafka, options)
    assert kafka.get("dead", []) == []

    def comparable(events):
        return sorted((e._replace(origin=None) for e in events), key=lambda e: e.event_id)

    assert len(from_files) == sum(sent.by_topic.values())
    assert comparable(kafka["events"]) == comparable(from_files)
