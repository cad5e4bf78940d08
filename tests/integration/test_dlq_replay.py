"""A dead letter fixed and replayed is applied exactly once; replays never nest or repeat."""

import uuid

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from confluent_kafka import Producer

from retail_backbone import generator as gen
from retail_backbone.io.dead_letter_sinks import WriteDeadLetters
from retail_backbone.io.dead_letters import DEAD_LETTERS, dead_letter
from retail_backbone.io.events import DecodeEvents
from retail_backbone.io.kafka import ReadKafkaOffsetRanges, snapshot_offset_ranges
from retail_backbone.pipelines import dlq_replay
from retail_backbone.pipelines.runners import runner_args
from retail_backbone.schemas.catalog import SCHEMAS_DIR
from retail_backbone.schemas.serde import AvroSerializer, RegistryClient
from retail_backbone.testing import collect

ORDER_V1 = (SCHEMAS_DIR / "order_placed" / "v1.avsc").read_text()


class _CheckCatalogFn(beam.DoFn):
    """A stage that fails for orders of products it does not know (the 'bug' to fix)."""

    def __init__(self, pipeline: str, known_skus: frozenset[str]) -> None:
        self._pipeline = pipeline
        self._known = known_skus

    def process(self, event):
        unknown = [line["sku"] for line in event.payload["lines"] if line["sku"] not in self._known]
        if unknown:
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTERS,
                dead_letter(
                    event.payload["_raw"],
                    event.origin,
                    self._pipeline,
                    "CheckCatalog",
                    f"unknown skus {unknown}",
                    error_class="UnknownSku",
                    event_id=event.event_id,
                    event_time_ms=event.event_time_ms,
                    attempt=event.payload["_attempt"],
                ),
            )
            return
        yield event.event_id


def _orders(n: int) -> list[dict]:
    cfg = gen.GeneratorConfig(
        seed=9,
        days=1,
        events_per_day=6000,
        n_products=40,
        n_customers=150,
        n_locations=3,
        snapshot=False,
    )
    out = []
    for e in gen.generate_events(cfg):
        if e["envelope"]["event_type"] == "order_placed":
            e.pop("currency", None)
            e.pop("coupon_code", None)
            e["envelope"]["schema_version"] = 1
            out.append(e)
        if len(out) == n:
            return out
    raise AssertionError("not enough orders generated")


@pytest.mark.slow
def test_fixed_dead_letters_are_applied_exactly_once(stack):
    cfg = stack.require("kafka", "registry", "prism")
    bootstrap = f"{cfg.host}:{cfg.port('kafka')}"
    registry = f"http://{cfg.host}:{cfg.port('registry')}"
    run = uuid.uuid4().hex[:8]
    topic, pipeline = f"it.replay.{run}", f"itreplay{run}"
    orders = _orders(5)
    for order in orders[:2]:
        order["lines"][0]["sku"] = "SKU-NEW"
    serializer = AvroSerializer(RegistryClient(registry), f"{topic}-value", ORDER_V1)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for order in orders:
        producer.produce(topic, serializer.serialize(order), partition=0)
    assert producer.flush(10) == 0
    known = frozenset(line["sku"] for o in orders[2:] for line in o["lines"])
    options = PipelineOptions(runner_args("prism", cfg))
    consumed: dict[int, int] = {}  # partition -> next offset, like a consumer group

    def run_job(catalog: frozenset[str]) -> list[str]:
        ranges = [
            r._replace(start=consumed.get(r.partition, 0))
            for r in snapshot_offset_ranges(bootstrap, topic)
        ]
        consumed.update({r.partition: r.stop for r in ranges})

        def build(p):
            records = p | ReadKafkaOffsetRanges(bootstrap, ranges)
            decoded = records | DecodeEvents(pipeline, fmt="avro", registry_url=registry)
            # keep what the failing stage needs to dead-letter the original bytes
            raw = records | beam.Map(lambda r: ((r.partition, r.offset), (r.value, r.attempt)))
            events = decoded.events | beam.Map(lambda e: ((e.origin.partition, e.origin.offset), e))
            joined = (
                {"e": events, "r": raw}
                | beam.CoGroupByKey()
                | beam.FlatMap(
                    lambda kv: [
                        e._replace(
                            payload={
                                **e.payload,
                                "_raw": kv[1]["r"][0][0],
                                "_attempt": kv[1]["r"][0][1],
                            }
                        )
                        for e in kv[1]["e"]
                    ]
                )
            )
            checked = joined | beam.ParDo(_CheckCatalogFn(pipeline, catalog)).with_outputs(
                DEAD_LETTERS, main="applied"
            )
            (
                (decoded.dead_letters, checked[DEAD_LETTERS])
                | beam.Flatten()
                | WriteDeadLetters(pipeline, bootstrap=bootstrap, registry_url=registry)
            )
            return {"applied": checked.applied}

        return collect(build, options).get("applied", [])

    def replay(*extra: str) -> dict[str, int]:
        argv = [
            *runner_args("prism", cfg),
            f"--pipeline={pipeline}",
            f"--bootstrap_servers={bootstrap}",
            f"--registry_url={registry}",
            *extra,
        ]
        return dlq_replay.run(argv).counters

    ids = [o["envelope"]["event_id"] for o in orders]
    applied = run_job(known)
    assert sorted(applied) == sorted(ids[2:])

    # Replay before the fix: the two fail again and come back as attempt 2.
    first = replay("--max_attempts=3")
    assert first.get("replayed") == 2
    assert run_job(known) == []

    # Attempt-1 letters are in the ledger; attempt-2 letters would be parked at max 2.
    dry = replay("--max_attempts=2", "--plan_only")
    assert (dry.get("already_replayed"), dry.get("parked"), dry.get("replayed", 0)) == (2, 2, 0)

    # The fix ships; replaying applies each exactly once.
    fixed_catalog = known | {"SKU-NEW"}
    second = replay("--max_attempts=3", "--error_class=UnknownSku")
    assert (second.get("replayed"), second.get("already_replayed")) == (2, 2)
    applied_after_fix = run_job(fixed_catalog)
    assert sorted(applied_after_fix) == sorted(ids[:2])

    # Nothing left to do: a third replay re-injects nothing, the job reads nothing new.
    third = replay("--max_attempts=3")
    assert third.get("replayed", 0) == 0 and third.get("already_replayed") == 4
    assert run_job(fixed_catalog) == []
    assert sorted(applied + applied_after_fix) == sorted(ids)
