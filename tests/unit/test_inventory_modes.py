"""Streaming (TestStream) runs of the inventory transforms, and batch/streaming equivalence."""

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window
from apache_beam.utils.timestamp import Timestamp

from retail_backbone.generator import GeneratorConfig, generate_events
from retail_backbone.io.dead_letters import Origin
from retail_backbone.io.events import event_from_record
from retail_backbone.testing import collect, make_event
from retail_backbone.transforms.inventory import (
    DetectStockouts,
    ForecastDemand,
    UpdateStockLedger,
    WindowingOptions,
)
from retail_backbone.transforms.inventory.ledger import LEDGER_EVENT_TYPES

T0 = 1_764_000_000_000
MIN_MS = 60_000
HOUR_MS = 3_600_000
STEP_MS = 6 * HOUR_MS


def _streaming():
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return options


def _stamped(events):
    return [window.TimestampedValue(e, Timestamp(micros=e.event_time_ms * 1000)) for e in events]


def _at(ms):
    return Timestamp(micros=(T0 + ms) * 1000)


def _adjusted(t, delta, reason="RECEIPT"):
    payload = {
        "adjustment_id": "a",
        "sku": "A",
        "location": "L1",
        "delta": delta,
        "reason": reason,
        "reference_id": None,
    }
    return make_event(
        "inventory_adjusted", event_id=f"adj{t}", event_time_ms=T0 + t, payload=payload
    )


def test_streaming_ledger_early_panes_late_corrections_and_data_beyond_the_lateness():
    opts = WindowingOptions(
        "streaming",
        confirm_panes=False,
        early_firing_seconds=10,
        allowed_lateness_seconds=3600,
        late_check_shards=1,
        watermark_tick_seconds=600,
    )
    count = make_event(
        "stock_counted",
        event_id="cnt",
        event_time_ms=T0 + 1_000,
        payload={"count_id": "c", "sku": "A", "location": "L1", "quantity": 10, "counted_by": "x"},
    )
    order = make_event(
        "order_placed",
        event_id="ord",
        event_time_ms=T0 + 2_000,
        payload={
            "order_id": "o",
            "lines": [{"line_no": 1, "sku": "A", "quantity": 3, "fulfillment_location": "L1"}],
        },
    )
    stream = (
        TestStream()
        .advance_watermark_to(_at(0))
        .add_elements(_stamped([count, order]))
        .advance_processing_time(15)  # early pane: 10 on hand, 3 reserved
        .advance_watermark_to(_at(30 * MIN_MS))
        .add_elements(_stamped([_adjusted(10_000, -1, "SHRINK")]))  # late, within the lateness
        .advance_processing_time(15)  # corrected: 9 on hand
        .advance_watermark_to(_at(3 * HOUR_MS))
        .add_elements(_stamped([_adjusted(20_000, -5, "SHRINK")]))  # beyond the lateness
        .advance_processing_time(15)
        .advance_watermark_to_infinity()
    )
    with TestPipeline(options=_streaming()) as p:
        ledger = p | stream | UpdateStockLedger("streaming", windowing=opts, shards=1)
        assert_that(
            ledger.levels
            | beam.Map(lambda r: (r.on_hand, r.reserved, r.version - T0, r.movements_applied)),
            equal_to([(10, 3, 2_000, 2), (9, 3, 10_000, 3)]),
            label="Levels",
        )
        assert_that(
            ledger.dead_letters | beam.Map(lambda d: (d.error_class, d.event_id)),
            equal_to([("late", "adj20000")]),
            label="DeadLetters",
        )


def _generated(days=2):
    cfg = GeneratorConfig(
        seed=11, days=days, n_products=80, n_locations=4, n_customers=1000, events_per_day=25_000
    )
    origin = Origin("INTERNAL")
    return [
        event_from_record(r, origin, now_ms=cfg.end_ms)
        for r in generate_events(cfg)
        if r["envelope"]["event_type"] in LEDGER_EVENT_TYPES
    ]


def _build(events, mode, opts):
    ledger = events | "UpdateStockLedger" >> UpdateStockLedger(mode, windowing=opts, shards=1)
    demand = events | "ForecastDemand" >> ForecastDemand(mode, windowing=opts, shards=1)
    alerts = {"events": events, "forecasts": demand.forecasts} | "DetectStockouts" >> (
        DetectStockouts(mode, windowing=opts, default_reorder_point=3, shards=1)
    )
    dead = (
        ledger.dead_letters,
        demand.dead_letters,
        alerts.dead_letters,
    ) | "AllDeadLetters" >> beam.Flatten()
    return ledger.levels, demand.forecasts, alerts.alerts, dead


def _final_levels(rows):
    best = {}
    for r in rows:
        key = (r.sku, r.location)
        if key not in best or (r.version, r.movements_applied) > (
            best[key].version,
            best[key].movements_applied,
        ):
            best[key] = r
    return best


def _final_forecasts(rows):
    best = {}
    for r in rows:
        key = (r.sku, r.location, r.day)
        if key not in best or r.revision > best[key].revision:
            best[key] = r
    return {k: v._replace(revision=0) for k, v in best.items()}


def test_batch_and_streaming_give_the_same_final_state_on_generated_data():
    events = _generated()
    batch_opts = WindowingOptions("batch")

    def batch(p):
        levels, forecasts, alerts, dead = _build(p | beam.Create(events), "batch", batch_opts)
        return {"levels": levels, "forecasts": forecasts, "alerts": alerts, "dead": dead}

    expected = collect(batch)
    assert not expected["dead"]
    expected_levels = _final_levels(expected["levels"])
    expected_forecasts = _final_forecasts(expected["forecasts"])
    expected_alerts = sorted(expected["alerts"])
    assert len(expected_levels) > 100 and len(expected_forecasts) > 50 and expected_alerts

    # Arrival in ingest-time order (mobile events arrive up to 30 min late), six hours at a
    # time; the watermark trails the arrivals by 25 minutes, so some events are behind it when
    # they arrive, none by more than the allowed lateness. Per step the watermark moves less
    # than the stateful steps' margin beyond the lateness (in a live stream it moves seconds per
    # pane), so every forecast reaches the alerts before their settle time.
    events.sort(key=lambda e: (e.ingest_time_ms, e.event_id))
    first = events[0].ingest_time_ms - events[0].ingest_time_ms % HOUR_MS
    stream = TestStream().advance_watermark_to(Timestamp(micros=(first - HOUR_MS) * 1000))
    i = 0
    hour = first
    while i < len(events):
        batch_events = []
        while i < len(events) and events[i].ingest_time_ms < hour + STEP_MS:
            batch_events.append(events[i])
            i += 1
        if batch_events:
            stream = stream.add_elements(_stamped(batch_events))
        stream = stream.advance_processing_time(120).advance_watermark_to(
            Timestamp(micros=(hour + STEP_MS - 25 * MIN_MS) * 1000)
        )
        hour += STEP_MS
    # The stream goes on (no more data) for a few hours before it is drained: the last day's
    # forecast fires on time and its reorder points reach the alerts while their window is open.
    for _ in range(4):
        hour += STEP_MS
        stream = stream.advance_watermark_to(Timestamp(micros=hour * 1000)).advance_processing_time(
            120
        )
    stream = stream.advance_watermark_to_infinity()

    opts = WindowingOptions(
        "streaming",
        confirm_panes=False,
        early_firing_seconds=60,
        allowed_lateness_seconds=12 * 3600,
        late_check_shards=1,
        watermark_tick_seconds=2 * 3600,
    )
    with TestPipeline(options=_streaming()) as p:
        levels, forecasts, alerts, dead = _build(p | stream, "streaming", opts)
        assert_that(dead, equal_to([]), label="NoDeadLetters")
        assert_that(
            levels, lambda rows: _same(_final_levels(rows), expected_levels), label="Levels"
        )
        assert_that(
            forecasts,
            lambda rows: _same(_final_forecasts(rows), expected_forecasts),
            label="Forecasts",
        )
        # Alerts are emitted once each, settled: exactly the batch alerts.
        assert_that(alerts, equal_to(expected_alerts), label="Alerts")


def _same(actual, expected):
    assert actual.keys() == expected.keys()
    wrong = [(k, actual[k], expected[k]) for k in expected if actual[k] != expected[k]]
    assert not wrong, wrong[:3]
