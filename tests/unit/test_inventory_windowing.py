"""The per-mode windowing wrapper: early, on-time and late panes; data beyond the lateness."""

import json

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window
from apache_beam.utils.timestamp import Timestamp

from retail_backbone.generator import contracts
from retail_backbone.io.events import record_from_json
from retail_backbone.testing import StateCell, TimerRecorder, make_event
from retail_backbone.transforms.inventory.windowing import (
    WindowForMode,
    WindowingOptions,
    _LateDeadLetterFn,
    event_dead_letter,
    event_json_bytes,
)

T0 = 1_764_000_000_000  # a multiple of 60 s


def _stamped(*events):
    return [window.TimestampedValue(e, Timestamp(micros=e.event_time_ms * 1000)) for e in events]


def _at(ms):
    return Timestamp(micros=(T0 + ms) * 1000)


def _streaming():
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return options


class _PaneFn(beam.DoFn):
    def process(self, element, pane=beam.DoFn.PaneInfoParam, win=beam.DoFn.WindowParam):
        _, ids = element
        yield (int(win.start) * 1000 - T0, pane.timing, sorted(ids))


TIMING = {0: "EARLY", 1: "ON_TIME", 2: "LATE"}


def test_early_on_time_and_late_panes_and_data_beyond_the_lateness():
    opts = WindowingOptions(
        "streaming",
        confirm_panes=False,
        early_firing_seconds=10,
        allowed_lateness_seconds=300,
        late_check_shards=1,
        watermark_tick_seconds=10,
    )
    e1, e2, e3, e4 = (
        make_event(event_id=f"e{i}", event_time_ms=T0 + i * 1000) for i in (1, 2, 3, 4)
    )
    stream = (
        TestStream()
        .advance_watermark_to(_at(0))
        .add_elements(_stamped(e1))
        .advance_processing_time(15)  # early pane: e1
        .add_elements(_stamped(e2))
        .advance_watermark_to(_at(61_000))  # on-time pane: e1, e2
        .add_elements(_stamped(e3))  # late, within the lateness: late pane e1, e2, e3
        .advance_processing_time(15)
        .advance_watermark_to(_at(400_000))
        .add_elements(_stamped(e4))  # 396 s behind the watermark: beyond the 300 s lateness
        .advance_processing_time(15)
        .advance_watermark_to_infinity()
    )
    p = TestPipeline(options=_streaming())
    windowed = (
        p | stream | WindowForMode(opts, window.FixedWindows(60), pipeline="test", stage="Panes")
    )
    panes = (
        windowed.elements
        | beam.Map(lambda e: ("k", e.event_id))
        | beam.GroupByKey()
        | beam.ParDo(_PaneFn())
        | beam.Map(lambda x: (x[0], TIMING[x[1]], x[2]))
    )
    assert_that(
        panes,
        equal_to(
            [
                (0, "EARLY", ["e1"]),
                (0, "ON_TIME", ["e1", "e2"]),
                (0, "LATE", ["e1", "e2", "e3"]),
            ]
        ),
        label="Panes",
    )
    assert_that(
        windowed.dead_letters | beam.Map(lambda d: (d.error_class, d.event_id, d.stage)),
        equal_to([("late", "e4", "Panes")]),
        label="DeadLetters",
    )
    p.run().wait_until_finish()
    # Counters are asserted below on the FnApiRunner: the Python DirectRunner that runs
    # TestStream drops counter updates of some bundles downstream of timer-firing steps.


def test_late_elements_become_counted_dead_letters():
    e = make_event(event_id="e1", event_time_ms=T0)
    fn = _LateDeadLetterFn(300_000, "test", "Stage", event_dead_letter)
    p = TestPipeline()
    letters = p | beam.Create([(e, T0 + 400_000)]) | beam.ParDo(fn)
    assert_that(
        letters | beam.Map(lambda d: (d.error_class, d.stage, d.event_id, d.event_time_ms)),
        equal_to([("late", "Stage", "e1", T0)]),
    )
    result = p.run()
    result.wait_until_finish()
    found = {
        (c.key.metric.namespace, c.key.metric.name): c.committed
        for c in result.metrics().query()["counters"]
    }
    assert found == {
        ("late_data", "Stage"): 1,
        ("dead_letters", "Stage"): 1,
        ("dead_letters", "Stage.late"): 1,
    }


def test_batch_uses_the_same_windows_with_the_default_trigger_and_drops_nothing():
    events = [make_event(event_id=f"e{i}", event_time_ms=T0 + i * 50_000) for i in range(4)]
    with TestPipeline() as p:
        windowed = (
            p
            | beam.Create(events)
            | WindowForMode(
                WindowingOptions("batch"), window.FixedWindows(60), pipeline="t", stage="s"
            )
        )
        panes = (
            windowed.elements
            | beam.Map(lambda e: ("k", e.event_id))
            | beam.GroupByKey()
            | beam.ParDo(_PaneFn())
            | beam.Map(lambda x: (x[0], TIMING[x[1]], x[2]))
        )
        assert_that(
            panes,
            equal_to(
                [
                    (0, "ON_TIME", ["e0", "e1"]),
                    (60_000, "ON_TIME", ["e2"]),
                    (120_000, "ON_TIME", ["e3"]),
                ]
            ),
            label="Panes",
        )
        assert_that(windowed.dead_letters, equal_to([]), label="NoDeadLetters")


def test_the_dead_letter_payload_decodes_back_to_the_same_event():
    record = {
        "adjustment_id": "a",
        "sku": "S",
        "location": "L",
        "delta": -2,
        "reason": "SALE",
        "reference_id": None,
    }
    event = make_event("inventory_adjusted", event_time_ms=T0, payload=record)
    doc = json.loads(event_json_bytes(event))
    assert doc["envelope"]["event_time"] == T0
    decoded = record_from_json(contracts()["inventory_adjusted"].text, doc)
    assert {k: v for k, v in decoded.items() if k != "envelope"} == record


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "online"},
        {"mode": "batch", "early_firing_seconds": 0},
        {"mode": "batch", "allowed_lateness_seconds": -1},
    ],
)
def test_invalid_options_fail_at_construction(kwargs):
    with pytest.raises(ValueError):
        WindowingOptions(**kwargs)


def test_past_the_data_the_late_check_holds_its_output_for_a_while_then_lets_go(monkeypatch):
    """Re-arming just after the firing keeps a watermark hold; after hold_seconds it stops."""
    import retail_backbone.transforms.inventory.windowing as windowing_module
    from retail_backbone.transforms.inventory.windowing import _DropLateFn

    clock = [100.0]
    monkeypatch.setattr(windowing_module.time, "time", lambda: clock[0])
    fn = _DropLateFn(lateness_ms=3_600_000, tick_ms=60_000, time_of=lambda t: t, hold_seconds=5)
    state, timer = StateCell(), TimerRecorder()
    t0 = 1_764_000_000_000
    assert list(fn.process((0, t0), state, timer)) == [t0]
    firings = 0
    while timer.at is not None and firings < 10_000:
        at, timer.at = timer.at, None
        list(fn._tick(Timestamp(micros=at * 1000), state, timer))
        firings += 1
        if at > t0 + 3_600_000:
            clock[0] += 1.0  # one bundle per firing while holding
    known = state.value[0]
    assert t0 + 3_600_000 < known < t0 + 3_600_000 + 60_000 + 10  # held 1 ms at a time
    assert 5 <= firings < 40  # doubling up to the end of the data, then the 5 s hold
    # A new element ends the hold and is judged by the known watermark.
    assert list(fn.process((0, t0 + 4_000_000), state, timer)) == [t0 + 4_000_000]
