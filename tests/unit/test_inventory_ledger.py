"""UpdateStockLedger: movements, replay order, clamping, folding, pipelines, generator truth."""

import random
from itertools import accumulate

import apache_beam as beam
import pytest
from apache_beam.metrics import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.timestamp import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from retail_backbone.generator import GeneratorConfig, generate_events
from retail_backbone.io.dead_letters import DeadLetter, Origin
from retail_backbone.io.events import event_from_record
from retail_backbone.testing import StateCell, TimerRecorder, make_event
from retail_backbone.transforms.inventory.ledger import (
    _EMPTY,
    COUNT,
    LEDGER_EVENT_TYPES,
    MOVE,
    RESERVE,
    InvalidEvent,
    UpdateStockLedger,
    _apply,
    _LedgerCombineFn,
    _ShardLedgerFn,
    stock_movements,
    table_movements,
)
from retail_backbone.transforms.inventory.types import StockLevel

T0 = 1_764_000_000_000
L_MS = 3_600_000


def adjusted(t, delta, reason="RECEIPT", sku="A", loc="L1"):
    payload = {
        "adjustment_id": "adj",
        "sku": sku,
        "location": loc,
        "delta": delta,
        "reason": reason,
        "reference_id": None,
    }
    return make_event("inventory_adjusted", event_time_ms=T0 + t, payload=payload)


def counted(t, quantity, sku="A", loc="L1"):
    payload = {
        "count_id": "c",
        "sku": sku,
        "location": loc,
        "quantity": quantity,
        "counted_by": "EMP-1",
    }
    return make_event("stock_counted", event_time_ms=T0 + t, payload=payload)


def placed(t, *lines):
    payload = {
        "order_id": "o",
        "lines": [
            {"line_no": n, "sku": sku, "quantity": q, "fulfillment_location": loc}
            for n, (sku, q, loc) in enumerate(lines, start=1)
        ],
    }
    return make_event("order_placed", event_time_ms=T0 + t, payload=payload)


def cancelled(t, *lines):
    payload = {
        "order_id": "o",
        "lines": [
            {"line_no": n, "sku": sku, "quantity": q, "location": loc}
            for n, (sku, q, loc) in enumerate(lines, start=1)
        ],
    }
    return make_event("order_cancelled", event_time_ms=T0 + t, payload=payload)


def shipped(t, loc, *lines):
    payload = {
        "shipment_id": "s",
        "order_id": "o",
        "location": loc,
        "lines": [{"line_no": n, "sku": s, "quantity": q} for n, (s, q) in enumerate(lines, 1)],
        "carrier": None,
    }
    return make_event("order_shipped", event_time_ms=T0 + t, payload=payload)


def returned(t, quantity, restockable=True, sku="A", loc="L1"):
    payload = {
        "return_id": "r",
        "order_id": "o",
        "customer_id": "c",
        "sku": sku,
        "quantity": quantity,
        "location": loc,
        "restockable": restockable,
        "reason": "CHANGED_MIND",
    }
    return make_event("return_processed", event_time_ms=T0 + t, payload=payload)


def replay(movements):
    return _LedgerCombineFn().extract_output(list(movements))


def counters(result, namespace):
    query = result.metrics().query(MetricsFilter().with_namespace(namespace))
    return {c.key.metric.name: c.committed for c in query["counters"]}


# -- movements of each event type ---------------------------------------------------------------


def test_movements_per_event_type_with_adjustments_as_the_source_of_on_hand():
    key = ("A", "L1")
    assert stock_movements(counted(5, 12)) == [(key, (T0 + 5, COUNT, 12, 0))]
    assert stock_movements(adjusted(1, 40)) == [(key, (T0 + 1, MOVE, 40, 0))]
    # A sale takes the units off on-hand and consumes the reservation the order made.
    assert stock_movements(adjusted(1, -2, "SALE")) == [(key, (T0 + 1, MOVE, -2, 2))]
    assert stock_movements(adjusted(1, -1, "SHRINK")) == [(key, (T0 + 1, MOVE, -1, 0))]
    assert stock_movements(placed(2, ("A", 2, "L1"), ("B", 1, "L2"))) == [
        (key, (T0 + 2, RESERVE, 2, 0)),
        (("B", "L2"), (T0 + 2, RESERVE, 1, 0)),
    ]
    assert stock_movements(cancelled(3, ("A", 2, "L1"))) == [(key, (T0 + 3, MOVE, 0, 2))]
    # Mirrored by their SALE / RETURN adjustments: no effect of their own.
    assert stock_movements(shipped(4, "L1", ("A", 2))) == []
    assert stock_movements(returned(5, 1)) == []
    assert stock_movements(make_event("product_viewed")) is None


def test_movements_from_documents():
    key = ("A", "L1")
    assert stock_movements(shipped(4, "L1", ("A", 2)), "documents") == [
        (key, (T0 + 4, MOVE, -2, 2))
    ]
    assert stock_movements(returned(5, 1), "documents") == [(key, (T0 + 5, MOVE, 1, 0))]
    assert stock_movements(returned(5, 1, restockable=False), "documents") == []
    assert stock_movements(adjusted(1, -2, "SALE"), "documents") == []
    assert stock_movements(adjusted(1, 1, "RETURN"), "documents") == []
    assert stock_movements(adjusted(1, 9, "RECEIPT"), "documents") == [(key, (T0 + 1, MOVE, 9, 0))]


@pytest.mark.parametrize(
    "event",
    [counted(1, -1), placed(1, ("A", 0, "L1")), cancelled(1, ("A", -2, "L1")), adjusted(1, "3")],
)
def test_invalid_quantities_reject_the_whole_event(event):
    with pytest.raises(InvalidEvent) as info:
        stock_movements(event)
    assert info.value.reason == "invalid_quantity"


# -- replay ---------------------------------------------------------------------------------------


def test_count_replaces_everything_before_it_and_deltas_after_it_apply():
    movements = [
        (T0 + 1, MOVE, 50, 0),
        (T0 + 5, MOVE, -3, 0),  # same millisecond as the count: the count states the end of it
        (T0 + 5, COUNT, 20, 0),
        (T0 + 6, MOVE, -4, 0),
        (T0 + 2, COUNT, 99, 0),  # older count: superseded
    ]
    ledger = replay(reversed(movements))
    assert (ledger.on_hand, ledger.last_count, ledger.version, ledger.applied) == (
        16,
        T0 + 5,
        T0 + 6,
        5,
    )


def test_two_counts_in_one_millisecond_the_larger_wins_whatever_the_order():
    a, b = (T0, COUNT, 7, 0), (T0, COUNT, 9, 0)
    assert replay([a, b]).on_hand == replay([b, a]).on_hand == 9


def test_reservations_clamp_at_zero_and_count_the_clamped_units():
    movements = [
        (T0 + 1, MOVE, 0, 5),  # release of an order never seen
        (T0 + 2, RESERVE, 3, 0),
        (T0 + 3, MOVE, -2, 2),  # sale consumes 2
        (T0 + 4, MOVE, 0, 4),  # cancel of 4 finds 1
    ]
    ledger = replay(movements)
    assert (ledger.reserved, ledger.clamped, ledger.on_hand) == (0, 8, -2)


def test_within_a_millisecond_reservations_come_before_releases():
    ledger = replay([(T0, MOVE, 0, 2), (T0, RESERVE, 2, 0)])
    assert (ledger.reserved, ledger.clamped) == (0, 0)


MOVEMENT = st.tuples(
    st.integers(0, 40),  # few distinct times: many ties
    st.sampled_from([RESERVE, MOVE, MOVE, COUNT]),
    st.integers(-5, 9),
    st.integers(0, 6),
).map(
    lambda m: (
        T0 + m[0],
        m[1],
        abs(m[2]) + 1 if m[1] == RESERVE else (abs(m[2]) if m[1] == COUNT else m[2]),
        m[3] if m[1] == MOVE else 0,
    )
)


@settings(max_examples=150, deadline=None)
@given(st.lists(MOVEMENT, max_size=60), st.randoms(use_true_random=False))
def test_any_arrival_order_and_bundling_gives_the_same_ledger(movements, rnd):
    """Combiner lifting: bundles in any order, merged in any order, give the sorted replay."""
    fn = _LedgerCombineFn()
    expected = _apply(_EMPTY, sorted(movements))
    shuffled = list(movements)
    rnd.shuffle(shuffled)
    cuts = sorted(rnd.randrange(len(shuffled) + 1) for _ in range(rnd.randrange(4)))
    bundles = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(shuffled)], strict=True)]
    accs = []
    for bundle in bundles:
        acc = fn.create_accumulator()
        for m in bundle:
            acc = fn.add_input(acc, m)
        accs.append(fn.compact(acc))
    rnd.shuffle(accs)
    assert fn.extract_output(fn.merge_accumulators(accs)) == expected


@settings(max_examples=150, deadline=None)
@given(st.lists(MOVEMENT, max_size=60))
def test_reservations_never_go_negative_and_clamping_has_the_closed_form(movements):
    ledger = replay(movements)
    assert ledger.reserved >= 0
    # r_n = max(0, r_{n-1} + d_n) has the closed form S_N - min(0, min_k S_k).
    deltas = [x if rank == RESERVE else -y for _, rank, x, y in sorted(movements) if rank != COUNT]
    sums = [0, *accumulate(deltas)]
    assert ledger.reserved == sums[-1] - min(0, min(sums))
    assert ledger.clamped == ledger.reserved - sums[-1]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 30), st.integers(-9, 9)), max_size=20),
    st.integers(0, 50),
    st.integers(10, 30),
    st.lists(st.tuples(st.integers(31, 60), st.integers(-9, 9)), max_size=20),
)
def test_counts_reset_on_hand(before, quantity, t_count, after):
    movements = [(T0 + t, MOVE, d, 0) for t, d in before if t <= t_count]
    movements += [(T0 + t_count, COUNT, quantity, 0)]
    movements += [(T0 + t, MOVE, d, 0) for t, d in after]
    assert replay(movements).on_hand == quantity + sum(d for _, d in after)


# -- streaming state, driven directly -------------------------------------------------------------


def run_shard(fn, arrivals, panes, watermarks, fired=None):
    """Feed ``arrivals`` pane by pane, firing the fold timer as the watermark passes it.

    ``fired``: a list that receives the number of timer firings.
    """
    ledgers, armed, pace, timer = StateCell(), StateCell(), StateCell(), TimerRecorder()
    out = []

    def fire_due(watermark):
        while timer.at is not None and timer.at <= watermark:
            at, timer.at = timer.at, None
            timer.fired += 1
            out.extend(fn._fold(Timestamp(micros=at * 1000), ledgers, armed, pace, timer))

    start = 0
    for end, watermark in zip(panes, watermarks, strict=True):
        out.extend(fn.process((0, arrivals[start:end]), ledgers, armed, timer))
        start = end
        fire_due(watermark)
    fire_due(1 << 62)
    if fired is not None:
        fired.append(timer.fired)
    return out, ledgers.value


def _arrival_plan(movements, rnd, lateness_ms):
    """Arrival order with every movement at most ``lateness_ms`` behind the watermark.

    Each movement arrives at ``t + jitter`` (jitter < lateness); the watermark after a pane is
    the earliest arrival time still to come, so no movement is ever later than the lateness.
    """
    keyed = sorted(
        ((m[0] + rnd.randrange(lateness_ms), key, m) for key, m in movements), key=lambda x: x[0]
    )
    arrivals = [(key, m) for _, key, m in keyed]
    cuts = sorted({rnd.randrange(1, len(arrivals) + 1) for _ in range(rnd.randrange(1, 8))})
    if cuts[-1] != len(arrivals):
        cuts.append(len(arrivals))
    watermarks = [keyed[c][0] if c < len(keyed) else 1 << 62 for c in cuts]
    return arrivals, cuts, watermarks


SPREAD_MOVEMENT = st.tuples(
    st.sampled_from([("A", "L1"), ("A", "L2"), ("B", "L1")]),
    st.integers(0, 6 * L_MS),
    st.sampled_from([RESERVE, MOVE, MOVE, COUNT]),
    st.integers(0, 9),
    st.integers(0, 4),
).map(
    lambda m: (
        m[0],
        (T0 + m[1], m[2], m[3] + 1 if m[2] == RESERVE else m[3], m[4] if m[2] == MOVE else 0),
    )
)


@settings(max_examples=60, deadline=None)
@given(st.lists(SPREAD_MOVEMENT, min_size=1, max_size=80), st.randoms(use_true_random=False))
def test_streaming_state_gives_the_batch_ledger_for_any_order_within_the_lateness(movements, rnd):
    """Folding is exact: any arrival order within the lateness ends at the batch result."""
    fn = _ShardLedgerFn("test", fold_delay_ms=L_MS, fold_step_ms=60_000)
    arrivals, panes, watermarks = _arrival_plan(movements, rnd, L_MS)
    levels, book = run_shard(fn, arrivals, panes, watermarks)
    by_key = {}
    for key, m in movements:
        by_key.setdefault(key, []).append(m)
    for key, ms in by_key.items():
        expected = _apply(_EMPTY, sorted(ms))
        ledger, pending, _ = book[key]
        final = _apply(ledger, pending)
        assert final._replace(folded_until=0) == expected._replace(folded_until=0)
        # The last row emitted for the key is the batch row.
        last = [lv for lv in levels if (lv.sku, lv.location) == key][-1]
        assert (last.on_hand, last.reserved, last.version, last.movements_applied) == (
            expected.on_hand,
            expected.reserved,
            expected.version,
            expected.applied,
        )
    # Everything older than the lateness was folded: the state is bounded.
    assert all(not pending for _, pending, _ in book.values())


def test_a_backlog_folds_in_a_few_wakes_not_one_per_fold_step():
    """Three days of history reach the state before the watermark moves, then it jumps.

    One wake per fold step would be 4,320 timer firings, each a bundle on Flink (the stall that
    kept the watermark from ever leaving the stage); doubling steps need a few dozen.
    """
    fn = _ShardLedgerFn("test", fold_delay_ms=L_MS, fold_step_ms=60_000)
    key = ("A", "L1")
    arrivals = [(key, (T0 + i * 60_000, MOVE, 1, 0)) for i in range(3 * 1440)]
    fired = []
    _, book = run_shard(fn, arrivals, [len(arrivals)], [1 << 62], fired=fired)
    assert book[key][0].on_hand == 3 * 1440
    assert not book[key][1]
    assert 1 <= fired[0] <= 30


def test_a_movement_below_the_folded_point_is_applied_and_counted():
    fn = _ShardLedgerFn("test", fold_delay_ms=L_MS, fold_step_ms=60_000)
    key = ("A", "L1")
    arrivals = [
        (key, (T0, COUNT, 10, 0)),
        (key, (T0 + 3 * L_MS, MOVE, 5, 0)),
        (key, (T0 + L_MS // 2, MOVE, -2, 0)),
    ]
    levels, book = run_shard(fn, arrivals, [2, 3], [T0 + 5 * L_MS, 1 << 62])
    assert book[key][0].on_hand == 13
    assert levels[-1].on_hand == 13


# -- the transform ---------------------------------------------------------------------------------


def test_batch_ledger_rows_dead_letters_and_counters():
    events = [
        counted(0, 10),
        placed(1_000, ("A", 3, "L1"), ("B", 1, "L2")),
        adjusted(2_000, -3, "SALE"),
        shipped(2_000, "L1", ("A", 3)),
        placed(3_000, ("A", 5, "L1")),
        cancelled(4_000, ("A", 9, "L1")),
        counted(5_000, -4),  # invalid
        make_event("product_viewed", event_time_ms=T0),
    ]
    p = TestPipeline()
    result = p | beam.Create(events) | UpdateStockLedger("batch", pipeline="test")
    assert_that(
        result.levels,
        equal_to(
            [
                StockLevel("A", "L1", 7, 0, 7, T0 + 4_000, 5, 4, T0),
                StockLevel("B", "L2", 0, 1, -1, T0 + 1_000, 1, 0, None),
            ]
        ),
        label="Levels",
    )
    assert_that(
        result.dead_letters | beam.Map(lambda d: (d.stage, d.error_class, d.event_time_ms)),
        equal_to([("UpdateStockLedger", "invalid_quantity", T0 + 5_000)]),
        label="DeadLetters",
    )
    run = p.run()
    run.wait_until_finish()
    assert counters(run, "inventory_ledger") == {
        "movements": 6,
        "events_ignored": 1,
        "events_mirrored": 1,
        "events_invalid": 1,
        "keys": 2,
        "reservation_units_clamped": 4,
    }
    assert counters(run, "dead_letters") == {
        "UpdateStockLedger": 1,
        "UpdateStockLedger.invalid_quantity": 1,
    }


def test_dead_letter_payload_is_the_event_as_json():
    p = TestPipeline()
    result = p | beam.Create([counted(0, -1)]) | UpdateStockLedger("batch", pipeline="test")
    assert_that(
        result.dead_letters
        | beam.Map(
            lambda d: (type(d).__name__, d.payload.startswith(b"{"), b'"quantity": -1' in d.payload)
        ),
        equal_to([(DeadLetter.__name__, True, True)]),
    )
    p.run().wait_until_finish()


def test_documents_mode_moves_stock_on_shipments_and_returns():
    events = [
        counted(0, 10),
        placed(1, ("A", 4, "L1")),
        shipped(2, "L1", ("A", 4)),
        adjusted(2, -4, "SALE"),  # ignored: the shipment carries it
        returned(3, 1),
        adjusted(3, 1, "RETURN"),  # ignored: the return carries it
        adjusted(4, -1, "SHRINK"),
    ]
    with TestPipeline() as p:
        levels = (
            p | beam.Create(events) | UpdateStockLedger("batch", movements="documents")
        ).levels
        assert_that(
            levels | beam.Map(lambda r: (r.on_hand, r.reserved, r.available)),
            equal_to([(6, 0, 6)]),
        )


def _generated_events(seed=3, days=2):
    cfg = GeneratorConfig(
        seed=seed, days=days, n_products=120, n_locations=6, n_customers=1500, events_per_day=30_000
    )
    stream = generate_events(cfg)
    origin = Origin("INTERNAL")
    events = [
        event_from_record(r, origin, now_ms=cfg.end_ms)
        for r in stream
        if r["envelope"]["event_type"] in LEDGER_EVENT_TYPES
    ]
    return stream, events


def test_batch_ledger_equals_the_generators_own_stock():
    """Every key's on-hand and reserved equal the generator's ledger after the last event."""
    stream, events = _generated_events()
    world, truth = stream.world, stream.ledger
    expected = {
        (p.sku, loc.location_id): (
            truth.on_hand[i * truth.n_loc + j],
            truth.reserved[i * truth.n_loc + j],
        )
        for i, p in enumerate(world.products)
        for j, loc in enumerate(world.locations)
    }
    random.Random(1).shuffle(events)  # arrival order does not matter

    with TestPipeline() as p:
        levels = (p | beam.Create(events) | UpdateStockLedger("batch")).levels
        assert_that(
            levels
            | beam.Map(lambda r: ((r.sku, r.location), (r.on_hand, r.reserved), r.clamped_units)),
            lambda rows: _all_match(rows, expected),
        )


def _all_match(rows, expected):
    assert len(rows) > 100
    wrong = [r for r in rows if expected[r[0]] != r[1] or r[2] != 0]
    assert not wrong, wrong[:5]
    # Every slot the generator holds stock or reservations in has a row.
    assert {k for k, v in expected.items() if v != (0, 0)} <= {r[0] for r in rows}


# -- the Arrow (backfill) input -------------------------------------------------------------------


def _tables(tmp_path, records):
    import pyarrow.parquet as pq

    from retail_backbone.generator import write_files

    write_files(records, tmp_path, "parquet")
    return [
        (path.parent.parent.name, pq.read_table(path))
        for path in sorted(tmp_path.rglob("*.parquet"))
    ]


def _grouped(pairs):
    out = {}
    for key, movement in pairs:
        out.setdefault(key, []).append(movement)
    return {k: sorted(v) for k, v in out.items()}


@pytest.mark.parametrize("movements", ["adjustments", "documents"])
def test_table_movements_equal_event_movements_on_generated_data(tmp_path, movements):
    cfg = GeneratorConfig(
        seed=5, days=2, n_products=60, n_locations=4, n_customers=800, events_per_day=20_000
    )
    records = [r for r in generate_events(cfg) if r["envelope"]["event_type"] in LEDGER_EVENT_TYPES]
    origin = Origin("INTERNAL")
    expected = _grouped(
        pair
        for r in records
        for pair in stock_movements(event_from_record(r, origin, now_ms=cfg.end_ms), movements)
    )
    got = {}
    for event_type, table in _tables(tmp_path, records):
        grouped, invalid = table_movements(event_type, table, movements)
        assert invalid == []
        for key, ms in grouped.items():
            got.setdefault(key, []).extend(ms)
    assert {k: sorted(v) for k, v in got.items()} == expected


def test_arrow_input_gives_the_same_levels_and_dead_letters_invalid_rows():
    import pyarrow as pa

    envelope = pa.struct([("event_id", pa.string()), ("event_time", pa.timestamp("ms", tz="UTC"))])
    counts = pa.table(
        {
            "envelope": pa.array(
                [{"event_id": "e1", "event_time": T0}, {"event_id": "e2", "event_time": T0 + 1}],
                envelope,
            ),
            "sku": ["A", "A"],
            "location": ["L1", "L1"],
            "quantity": pa.array([10, -1], pa.int32()),
        }
    )
    line = pa.struct(
        [("sku", pa.string()), ("quantity", pa.int32()), ("fulfillment_location", pa.string())]
    )
    orders = pa.table(
        {
            "envelope": pa.array([{"event_id": "e3", "event_time": T0 + 2}], envelope),
            "lines": pa.array(
                [[{"sku": "A", "quantity": 3, "fulfillment_location": "L1"}]], pa.list_(line)
            ),
        }
    )
    p = TestPipeline()
    result = (
        p
        | beam.Create([("stock_counted", counts), ("order_placed", orders)])
        | UpdateStockLedger("batch", input_format="arrow")
    )
    assert_that(
        result.levels,
        equal_to([StockLevel("A", "L1", 10, 3, 7, T0 + 2, 2, 0, T0)]),
        label="Levels",
    )
    assert_that(
        result.dead_letters | beam.Map(lambda d: (d.error_class, d.event_id)),
        equal_to([("invalid_quantity", "e2")]),
        label="DeadLetters",
    )
    run = p.run()
    run.wait_until_finish()
    assert counters(run, "inventory_ledger") == {"movements": 2, "events_invalid": 1, "keys": 1}


def test_arrow_input_is_batch_only():
    with pytest.raises(ValueError):
        UpdateStockLedger("streaming", input_format="arrow")


def test_a_firing_counts_only_once_its_confirmation_time_has_passed(monkeypatch):
    """Streaming on a real runner: elements held by the early trigger get time to land."""
    import retail_backbone.transforms.inventory.ledger as ledger_module

    fn = _ShardLedgerFn("test", fold_delay_ms=L_MS, fold_step_ms=60_000, confirm_seconds=6)
    clock = [1000.0]
    monkeypatch.setattr(ledger_module.time, "time", lambda: clock[0])

    horizon, firings = fn._horizon(T0, ())
    assert horizon < T0  # nothing confirmed yet
    clock[0] += 3
    horizon, firings = fn._horizon(T0 + 5_000, firings)
    assert horizon < T0
    clock[0] += 4  # the first firing is now 7 s old, the second 4 s
    horizon, firings = fn._horizon(T0 + 9_000, firings)
    assert horizon == T0
    assert [t for t, _ in firings] == [T0, T0 + 5_000, T0 + 9_000]
    clock[0] += 10
    horizon, firings = fn._horizon(T0 + 20_000, firings)
    assert horizon == T0 + 9_000
    assert [t for t, _ in firings] == [T0 + 9_000, T0 + 20_000]  # older confirmed ones dropped


def test_without_confirmation_the_firing_itself_is_the_horizon():
    fn = _ShardLedgerFn("test", fold_delay_ms=L_MS, fold_step_ms=60_000)
    assert fn._horizon(T0, ()) == (T0, ())
