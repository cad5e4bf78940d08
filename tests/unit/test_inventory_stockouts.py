"""DetectStockouts: one alert per transition, thresholds from forecasts, deterministic ids."""

import uuid

import apache_beam as beam
import pytest
from apache_beam.metrics import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from retail_backbone.testing import make_event
from retail_backbone.transforms.inventory import DetectStockouts, WindowingOptions
from retail_backbone.transforms.inventory.ledger import (
    _EMPTY,
    COUNT,
    MOVE,
    REORDER,
    RESERVE,
    _apply_tracking_state,
)
from retail_backbone.transforms.inventory.stockouts import ALERT_NAMESPACE, alert_id
from retail_backbone.transforms.inventory.types import DemandForecast

T0 = 1_764_000_000_000


def changes(movements, rop=5.0):
    _, transitions = _apply_tracking_state(_EMPTY, sorted(movements), rop)
    return [(tr.version - T0, tr.previous, tr.state, tr.available) for tr in transitions]


def test_one_transition_per_state_change_and_none_while_the_state_holds():
    movements = [
        (T0, COUNT, 10, 0),  # OK: no alert for a first state of OK
        (T0 + 1, MOVE, -4, 0),  # 6: still OK
        (T0 + 2, MOVE, -2, 0),  # 4: LOW
        (T0 + 3, MOVE, -1, 0),  # 3: still LOW, no repeat
        (T0 + 4, RESERVE, 3, 0),  # available 0: OUT
        (T0 + 5, MOVE, -1, 0),  # -1: still OUT
        (T0 + 6, MOVE, 20, 0),  # 22 - 3 = 19: RECOVERED
    ]
    assert changes(movements) == [
        (2, "OK", "LOW", 4),
        (4, "LOW", "OUT", 0),
        (6, "OUT", "OK", 19),
    ]


def test_the_state_is_judged_once_per_millisecond_without_transient_alerts():
    # A count and a sale stamped with the same instant never raise a transient stockout.
    movements = [(T0, COUNT, 10, 0), (T0 + 1, MOVE, -10, 0), (T0 + 1, COUNT, 8, 0)]
    assert changes(movements) == []


def test_a_first_low_state_alerts_from_unknown():
    assert changes([(T0, COUNT, 2, 0)]) == [(0, None, "LOW", 2)]


def test_a_new_reorder_point_is_a_change_and_the_highest_revision_wins():
    movements = [
        (T0, COUNT, 10, 0),
        (T0 + 5, REORDER, 0, 12.0),  # provisional forecast
        (T0 + 5, REORDER, 1, 8.0),  # its revision: 10 > 8, still OK
        (T0 + 9, REORDER, 0, 15.0),  # a later day's forecast: LOW
    ]
    assert changes(movements) == [(9, "OK", "LOW", 10)]


def test_forecasts_alone_raise_nothing():
    assert changes([(T0, REORDER, 0, 3.0)]) == []


def test_alert_ids_are_uuid5_of_the_transition():
    expected = str(uuid.uuid5(ALERT_NAMESPACE, f"A\x1fL1\x1fSTOCKOUT\x1f{T0}"))
    assert alert_id("A", "L1", "STOCKOUT", T0) == expected
    assert alert_id("A", "L1", "STOCKOUT", T0 + 1) != expected


def _adjusted(t, delta, reason="SHRINK"):
    payload = {
        "adjustment_id": "a",
        "sku": "A",
        "location": "L1",
        "delta": delta,
        "reason": reason,
        "reference_id": None,
    }
    return make_event("inventory_adjusted", event_time_ms=T0 + t, payload=payload)


def _forecast(version, rop, revision=0):
    return DemandForecast(
        "A", "L1", "2025-11-24", 3, 3.0, 0.0, 3.0, 1.0, 2.0, rop, 1, version, revision
    )


def test_batch_alerts_with_thresholds_from_the_forecast_and_counters():
    events = [
        make_event(
            "stock_counted",
            event_time_ms=T0,
            payload={
                "count_id": "c",
                "sku": "A",
                "location": "L1",
                "quantity": 9,
                "counted_by": "x",
            },
        ),
        _adjusted(1_000, -4),  # 5 <= default 5: LOW
        _adjusted(2_000, -5),  # 0: OUT
        _adjusted(3_000, 30, "RECEIPT"),  # 30 > 20 (forecast from 2_500): RECOVERED
        _adjusted(4_000, -11),  # 19 <= 20: LOW
    ]
    forecasts = [_forecast(T0 + 2_500, 20.0), _forecast(T0 + 2_500, 40.0, revision=-1)]
    p = TestPipeline()
    events_pc = p | "Events" >> beam.Create(events)
    forecasts_pc = p | "Forecasts" >> beam.Create(forecasts)
    result = {"events": events_pc, "forecasts": forecasts_pc} | DetectStockouts("batch")
    assert_that(
        result.alerts
        | beam.Map(
            lambda a: (
                a.version - T0,
                a.previous_state,
                a.state,
                a.available,
                a.reorder_point,
                a.alert_id == alert_id("A", "L1", a.state, a.version),
            )
        ),
        equal_to(
            [
                (1_000, "OK", "LOW_STOCK", 5, 5.0, True),
                (2_000, "LOW", "STOCKOUT", 0, 5.0, True),
                (3_000, "OUT", "RECOVERED", 30, 20.0, True),
                (4_000, "OK", "LOW_STOCK", 19, 20.0, True),
            ]
        ),
    )
    run = p.run()
    run.wait_until_finish()
    found = {
        c.key.metric.name: c.committed
        for c in run.metrics().query(MetricsFilter().with_namespace("stockouts"))["counters"]
    }
    assert found["LOW_STOCK"] == 2 and found["STOCKOUT"] == 1 and found["RECOVERED"] == 1
    assert found["movements"] == 5


def test_settle_must_not_exceed_the_fold_delay():
    opts = WindowingOptions(
        "streaming",
        confirm_panes=False,
        allowed_lateness_seconds=600,
        watermark_tick_seconds=60,
        early_firing_seconds=10,
    )
    DetectStockouts("streaming", windowing=opts, settle_seconds=0)
    with pytest.raises(ValueError):
        DetectStockouts("streaming", windowing=opts, settle_seconds=opts.fold_delay_seconds + 1)
    with pytest.raises(ValueError):
        DetectStockouts("batch", windowing=opts)
