"""ForecastDemand: Holt's smoothing against a hand computation, batch rows, streaming revisions."""

import math

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window
from apache_beam.utils.timestamp import Timestamp

from retail_backbone.testing import make_event
from retail_backbone.transforms.inventory import ForecastDemand, WindowingOptions
from retail_backbone.transforms.inventory.forecast import _START, DAY_MS, HoltParams, holt_rows

DAY0 = 1_763_942_400_000  # 2025-11-24T00:00:00Z
PARAMS = HoltParams(alpha=0.5, beta=0.5, z=2.0, lead_time_days=4.0)

# The series 4, 0, 6 worked by hand (alpha = beta = 0.5, z = 2, lead time 4 days):
#   day 1: level 4, trend 0                       forecast 4, sigma 0, rop 4*4 = 16
#   day 2: f = 4, e = -4; level .5*0 + .5*4 = 2; trend .5*(2-4) + .5*0 = -1
#          forecast 1, sigma sqrt(16/1) = 4, safety 2*4*sqrt(4) = 16, rop 1*4 + 16 = 20
#   day 3: f = 2 - 1 = 1, e = 5; level .5*6 + .5*1 = 3.5; trend .5*(3.5-2) + .5*(-1) = .25
#          forecast 3.75, sigma sqrt((16+25)/2), safety 2*sigma*2, rop 3.75*4 + safety
SIGMA3 = math.sqrt(20.5)
HAND = [
    # day, units, level, trend, forecast, sigma, safety, reorder point
    ("2025-11-24", 4, 4.0, 0.0, 4.0, 0.0, 0.0, 16.0),
    ("2025-11-25", 0, 2.0, -1.0, 1.0, 4.0, 16.0, 20.0),
    ("2025-11-26", 6, 3.5, 0.25, 3.75, SIGMA3, 4 * SIGMA3, 15.0 + 4 * SIGMA3),
]


def _check(rows):
    assert [r.day for r in rows] == [h[0] for h in HAND]
    for row, (_, units, level, trend, forecast, sigma, safety, rop) in zip(rows, HAND, strict=True):
        assert row.units == units
        got = (row.level, row.trend, row.forecast, row.sigma, row.safety_stock, row.reorder_point)
        assert got == pytest.approx((level, trend, forecast, sigma, safety, rop), abs=1e-12)
    assert [r.version - DAY0 for r in rows] == [DAY_MS, 2 * DAY_MS, 3 * DAY_MS]
    assert [r.days_observed for r in rows] == [1, 2, 3]


def test_holt_rows_match_the_hand_computation_with_gaps_filled():
    day1 = DAY0 // DAY_MS
    _, rows, _ = holt_rows(("A", "L1"), _START, {day1: 4, day1 + 2: 6}, PARAMS)
    _check(rows)


def test_replaying_from_a_folded_state_is_bit_identical():
    day1 = DAY0 // DAY_MS
    _, all_rows, states = holt_rows(("A", "L1"), _START, {day1: 4, day1 + 2: 6}, PARAMS)
    _, tail, _ = holt_rows(("A", "L1"), states[day1], {day1 + 2: 6}, PARAMS)
    assert tail == all_rows[1:]


def test_forecast_never_goes_negative():
    day1 = DAY0 // DAY_MS
    _, rows, _ = holt_rows(("A", "L1"), _START, {day1: 10, day1 + 1: 0, day1 + 2: 0}, PARAMS)
    assert rows[-1].level + rows[-1].trend < 0
    assert rows[-1].forecast == 0.0


def _order(t, *lines, event_id=None):
    payload = {
        "order_id": "o",
        "lines": [
            {"line_no": n, "sku": sku, "quantity": q, "fulfillment_location": loc}
            for n, (sku, q, loc) in enumerate(lines, start=1)
        ],
    }
    return make_event("order_placed", event_id=event_id, event_time_ms=t, payload=payload)


EVENTS = [
    _order(DAY0 + 3_600_000, ("A", 3, "L1"), ("A", 1, "L1"), ("B", 2, "L1")),
    _order(DAY0 + DAY_MS + 60_000, ("B", 1, "L1")),  # day 2: nothing for A
    _order(DAY0 + 2 * DAY_MS + 7_200_000, ("A", 6, "L1")),
    make_event("product_viewed", event_time_ms=DAY0),
]


def test_batch_forecast_one_row_per_key_per_day():
    with TestPipeline() as p:
        demand = (
            p
            | beam.Create(EVENTS)
            | ForecastDemand("batch", alpha=0.5, beta=0.5, z=2.0, lead_time_days=4.0)
        )
        assert_that(
            demand.forecasts | beam.Filter(lambda r: r.sku == "A"),
            lambda rows: _check(sorted(rows, key=lambda r: r.day)),
            label="A",
        )
        assert_that(
            demand.forecasts
            | beam.Filter(lambda r: r.sku == "B")
            | beam.Map(lambda r: (r.day, r.units, r.revision)),
            equal_to([("2025-11-24", 2, 0), ("2025-11-25", 1, 0)]),
            label="B",
        )
        assert_that(demand.dead_letters, equal_to([]), label="NoDeadLetters")


def test_invalid_order_lines_are_dead_lettered():
    with TestPipeline() as p:
        demand = p | beam.Create([_order(DAY0, ("A", 0, "L1"))]) | ForecastDemand("batch")
        assert_that(demand.forecasts, equal_to([]), label="NoRows")
        assert_that(
            demand.dead_letters | beam.Map(lambda d: (d.stage, d.error_class)),
            equal_to([("ForecastDemand", "invalid_quantity")]),
            label="DeadLetters",
        )


def test_streaming_rows_are_revised_per_pane_and_end_at_the_batch_rows():
    def at(ms):
        return Timestamp(micros=ms * 1000)

    def stamped(*events):
        return [window.TimestampedValue(e, at(e.event_time_ms)) for e in events]

    first, second, third = EVENTS[0], _order(DAY0 + 5_000_000, ("A", 2, "L1")), EVENTS[2]
    stream = (
        TestStream()
        .advance_watermark_to(at(DAY0))
        .add_elements(stamped(first))
        .advance_processing_time(60)  # early pane for day 1: 4 units
        .add_elements(stamped(second))
        .advance_watermark_to(at(DAY0 + DAY_MS + 60_000))  # on time: 6 units
        .add_elements(stamped(third))
        .advance_watermark_to(at(DAY0 + 3 * DAY_MS))  # day 3 on time (day 2 filled with 0)
        .advance_watermark_to_infinity()
    )
    opts = WindowingOptions(
        "streaming",
        confirm_panes=False,
        early_firing_seconds=30,
        late_check_shards=1,
        watermark_tick_seconds=3600,
    )
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as p:
        demand = p | stream | ForecastDemand("streaming", windowing=opts, shards=1)
        assert_that(
            demand.forecasts
            | beam.Filter(lambda r: r.sku == "A")
            | beam.Map(lambda r: (r.day, r.units, r.revision)),
            equal_to(
                [
                    ("2025-11-24", 4, 1),
                    ("2025-11-24", 6, 2),
                    ("2025-11-25", 0, 3),  # the gap day, emitted with day 3
                    ("2025-11-26", 6, 3),
                ]
            ),
        )


@pytest.mark.parametrize(
    "kwargs",
    [{"alpha": 0}, {"beta": 1.5}, {"lead_time_days": 0}, {"z": -1}, {"keep_days": 1}],
)
def test_invalid_parameters_fail_at_construction(kwargs):
    with pytest.raises(ValueError):
        ForecastDemand("batch", **kwargs)
