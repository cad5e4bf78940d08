"""Streaming mode of every registered pipeline translates for Dataflow (dry run, no cloud).

The Kafka read plans its partitions when the pipeline is built, so the topics must exist on a
reachable broker: the stack's Kafka, with per-test topics. Nothing is staged or submitted.
"""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from retail_backbone.pipelines.registry import PIPELINES, get_pipeline
from retail_backbone.templates.dataflow import translate

STREAMING_STEPS = {
    "inventory": {"ReadFromKafka", "DecodeEvents", "UpdateStockLedger"},
    "personalization": {"ReadFromKafka", "DecodeEvents", "BuildCustomerProfiles"},
}


@pytest.fixture(scope="module")
def topics(stack):
    cfg = stack.require("kafka")
    bootstrap = f"{cfg.host}:{cfg.port('kafka')}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [f"dryrun.{uuid.uuid4().hex[:8]}.{i}" for i in range(2)]
    for future in admin.create_topics([NewTopic(n, 2, 1) for n in names]).values():
        future.result(15)
    yield bootstrap, names
    for future in admin.delete_topics(names).values():
        future.result(15)


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_streaming_mode_translates_for_dataflow(name, topics):
    bootstrap, names = topics
    graph = translate(
        get_pipeline(name),
        [
            "--mode=streaming",
            f"--bootstrap_servers={bootstrap}",
            f"--topics={','.join(names)}",
            "--postgres_dsn=env:NOT_NEEDED_OFFLINE",
            "--pii_hash_key=env:NOT_NEEDED_OFFLINE",
        ],
    )
    assert graph.job_type == "JOB_TYPE_STREAMING"
    assert STREAMING_STEPS[name] <= graph.top_level_steps
    assert set(graph.environments) == {"beam:env:docker:v1"}
