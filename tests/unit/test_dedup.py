import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from retail_backbone.io.dead_letters import Origin
from retail_backbone.testing import make_event
from retail_backbone.transforms.dedup import DeduplicateEvents

T0 = 1_764_000_000_000


def _events():
    base = [make_event(event_id=f"e{i}", event_time_ms=T0 + i * 1000) for i in range(20)]
    dupes = [
        e._replace(ingest_time_ms=e.ingest_time_ms + 10, origin=Origin.kafka("t", 0, 99))
        for e in base[::3]
    ]
    return base, dupes


@pytest.mark.parametrize("mode", ["batch", "streaming"])
def test_one_event_per_id_and_duplicates_counted(mode):
    base, dupes = _events()
    p = TestPipeline()
    out = (
        p
        | beam.Create(base + dupes)
        | DeduplicateEvents(mode=mode, shards=4)
        | beam.Map(lambda e: (e.event_id, e.origin.kind))
    )
    assert_that(out, equal_to([(e.event_id, "INTERNAL") for e in base]))
    result = p.run()
    result.wait_until_finish()
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(beam.metrics.MetricsFilter().with_namespace("dedup"))[
            "counters"
        ]
    }
    assert counters == {"unique": 20, "duplicates": len(dupes)}


def test_batch_keeps_the_earliest_ingested_copy_whatever_the_order():
    base, dupes = _events()
    with TestPipeline() as p:
        out = (
            p
            | beam.Create(list(reversed(dupes + base)))
            | DeduplicateEvents(mode="batch")
            | beam.Map(lambda e: e.origin.kind)
        )
        assert_that(out, equal_to(["INTERNAL"] * 20))


def test_streaming_forgets_ids_after_the_ttl():
    # Copies of one event share its event time; the id is remembered for the TTL after the end
    # of its event-time bucket (here: bucket 10 s + TTL 60 s = until T0 + 70 s).
    e1 = make_event(event_id="same", event_time_ms=T0)
    copy_soon = e1._replace(ingest_time_ms=e1.ingest_time_ms + 1)
    copy_late = e1._replace(ingest_time_ms=e1.ingest_time_ms + 2)
    stamped = [beam.window.TimestampedValue(e, T0 / 1000) for e in (e1, copy_soon, copy_late)]
    stream = (
        TestStream()
        .advance_watermark_to(T0 / 1000)
        .add_elements([stamped[0]])
        .advance_watermark_to((T0 + 30_000) / 1000)
        .add_elements([stamped[1]])  # within the TTL: dropped
        .advance_watermark_to((T0 + 90_000) / 1000)  # past T0 + 70 s: forgotten
        .add_elements([stamped[2]])
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as p:
        out = (
            p
            | stream
            | DeduplicateEvents(mode="streaming", ttl_seconds=60, shards=2, bucket_seconds=10)
            | beam.Map(lambda e: e.ingest_time_ms - e1.ingest_time_ms)
        )
        assert_that(out, equal_to([0, 2]))


def test_streaming_catches_duplicates_across_sealed_chunks():
    # chunk_ids=3: the 20 ids of one bucket end up in six sealed chunks plus the open set, and a
    # copy of any of them, arriving in a later bundle, is still dropped.
    base, _ = _events()
    copies = [e._replace(ingest_time_ms=e.ingest_time_ms + 5) for e in base]
    stream = (
        TestStream()
        .advance_watermark_to(T0 / 1000)
        .add_elements([beam.window.TimestampedValue(e, e.event_time_ms / 1000) for e in base])
        .add_elements([beam.window.TimestampedValue(e, e.event_time_ms / 1000) for e in copies])
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as p:
        out = (
            p
            | stream
            | DeduplicateEvents(mode="streaming", shards=1, bucket_seconds=3600, chunk_ids=3)
            | beam.Map(lambda e: (e.event_id, e.ingest_time_ms))
        )
        assert_that(out, equal_to([(e.event_id, e.ingest_time_ms) for e in base]))
