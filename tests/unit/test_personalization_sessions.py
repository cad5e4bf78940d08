"""Session windows in streaming: a late event that bridges two sessions merges them, once."""

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window
from apache_beam.utils.timestamp import Timestamp

from retail_backbone.testing import make_event
from retail_backbone.transforms.inventory.windowing import WindowingOptions
from retail_backbone.transforms.personalization import BuildCustomerProfiles, ExtractCatalog

T0 = 1_764_000_000_000  # a multiple of 60 s
MIN = 60_000


def _view(event_id, minutes):
    return make_event(
        "product_viewed",
        event_id=event_id,
        event_time_ms=T0 + minutes * MIN,
        payload={"customer_id": "C1", "sku": "S1", "session_id": "s", "channel": "WEB"},
    )


def _stamped(*events):
    return [window.TimestampedValue(e, Timestamp(micros=e.event_time_ms * 1000)) for e in events]


def _at(minutes):
    return Timestamp(micros=(T0 + minutes * MIN) * 1000)


def test_a_late_event_merges_two_sessions_into_one():
    product = make_event(
        "product_upserted",
        event_time_ms=T0 - MIN,
        payload={"sku": "S1", "brand": "Acme", "categories": ["Home", "Kitchen"]},
    )
    stream = (
        TestStream()
        .advance_watermark_to(_at(-2))
        .add_elements(_stamped(product, _view("a", 0), _view("b", 40)))
        .advance_processing_time(20)
        # 40 min apart with a 30 min gap: two sessions, both closed by the watermark.
        .advance_watermark_to(_at(120))
        .advance_processing_time(20)
        # Late (100 min behind the watermark, within the 3 h lateness) and 20 min from both:
        # Beam merges the two session windows into one.
        .add_elements(_stamped(_view("late", 20)))
        .advance_processing_time(20)
        .advance_watermark_to(_at(130))
        .advance_processing_time(20)
        .advance_watermark_to_infinity()
    )
    opts = WindowingOptions(
        "streaming",
        confirm_panes=False,
        early_firing_seconds=10,
        allowed_lateness_seconds=3 * 3600,
        late_check_shards=1,
        watermark_tick_seconds=60,
    )
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as p:
        events = p | stream
        catalog = events | "Catalog" >> ExtractCatalog(opts)
        result = events | "Profiles" >> BuildCustomerProfiles(opts, catalog=catalog, hash_key="k")

        def check_spans(spans):
            intervals = {(s.start_ms - T0, s.end_ms - T0) for s in spans}
            gap = 30 * MIN
            # Both separate sessions were reported, and later the merged one.
            assert (0, gap) in intervals
            assert (40 * MIN, 40 * MIN + gap) in intervals
            assert (0, 40 * MIN + gap) in intervals

        def check_final_profile(profiles):
            final = max(profiles, key=lambda pr: (pr.sessions == 1, pr.version))
            # Every pane's spans folded together: one session of 40 minutes, not three.
            assert final.sessions == 1
            assert final.mean_session_seconds == 40 * 60
            assert final.category_affinity == [["Home/Kitchen", 1.0]]
            # Before the late event some pane saw two sessions; no pane ever counted the merged
            # span next to the two it replaced (early panes may see none yet).
            assert any(pr.sessions == 2 for pr in profiles)
            assert all(pr.sessions <= 2 for pr in profiles)

        assert_that(result.sessions, check_spans, label="Spans")
        assert_that(result.profiles, check_final_profile, label="Profiles")
        assert_that(result.dead_letters, equal_to([]), label="NoDeadLetters")
