"""The stock ledger per (sku, location): on hand, reserved, available, in event-time order.

Example::

    ledger = events | "UpdateStockLedger" >> UpdateStockLedger(mode="batch")
    ledger.levels        # StockLevel rows: one per key (batch), one per key per pane (streaming)
    ledger.dead_letters  # invalid events (class invalid_quantity, ...) and, streaming, late ones

What moves stock (``movements="adjustments"``, the default, matching the generator's contract):

================== =====================================================================
event              effect
================== =====================================================================
stock_counted      ``on_hand = quantity`` at its event time: replaces everything before it
inventory_adjusted ``on_hand += delta``; a ``SALE`` (negative delta) also consumes ``-delta``
                   reserved units: the sale is the moment the reservation is fulfilled
order_placed       per line, ``reserved += quantity`` at the line's ``fulfillment_location``
order_cancelled    per line, ``reserved -= quantity`` at the line's ``location``
order_shipped      no effect (its ``SALE`` adjustment, same time and quantity, carries it)
return_processed   no effect (restockable units arrive as a ``RETURN`` adjustment)
================== =====================================================================

Why shipments do not move stock by default: the generator (``generator/shopping.py``) emits, for
every shipped line, ``order_shipped`` *and* an ``inventory_adjusted`` ``SALE`` of ``-quantity``
at the same instant, and for a till sale at a store only the ``SALE`` (no ``order_shipped``); a
restockable return emits ``return_processed`` *and* a ``RETURN`` adjustment. Its invariant
(``generator/inventory.py``) is that every change of on-hand is an ``inventory_adjusted`` event
except counts. Applying both the shipment and the sale would take the units off twice, and
consuming reservations only on ``order_shipped`` would leave every till sale's reservation open
for ever. So the adjustment is the single source of on-hand changes, and a ``SALE`` consumes the
reservation that the order made (online and in store alike).

``movements="documents"`` is for sources without mirror adjustments: ``order_shipped`` lines
consume (``reserved -= q``, ``on_hand -= q``), restockable ``return_processed`` units go back on
hand, and ``SALE``/``RETURN`` adjustments are then ignored (their documents carry them); other
adjustment reasons apply in both settings.

Ordering. Every event becomes one or more *movements* ``(t, rank, x, y)`` per key. A key's
result is the movements applied in ``(t, rank, x, y)`` order whatever order they arrived in:
within one millisecond reservations come first (rank 0), then on-hand deltas and releases
(rank 1, which commute among themselves), then counts (rank 2: a count states the stock at the
end of its millisecond; of two counts in one millisecond the larger wins). Releases that find
nothing reserved are clamped at zero and counted in ``clamped_units`` (sequential clamping, so
a backfill that starts mid-stream forgets releases of orders it never saw instead of carrying a
negative balance). Each row's ``version`` is the event time of the newest applied movement.

Batch. ``CombinePerKey`` over a ``CombineFn`` whose accumulator is the key's list of movements:
appending and concatenating are order-independent and mergeable, so combiner lifting
pre-aggregates per bundle before the shuffle, and the final ``extract_output`` sorts and replays
once per key. The accumulator is the key's movements in the run (no folding is needed: a bounded
run has a bounded history, and without a watermark nothing can be folded exactly).

Streaming. Portable runners (Flink, Prism, Dataflow v2) do not lift combiners in streaming, so a
global-window ``CombinePerKey`` with accumulating early panes would keep every element of every
key in the grouping's state for ever and re-merge them all at each pane. Instead: events older
than the allowed lateness are dead-lettered (``windowing.DropLateData``); movements are grouped by
state shard in the global window with early panes every N seconds, *discarding* (each movement
reaches the state once; the running total is the state, so each emitted row is still the whole
ledger, as an accumulating pane would be); a stateful ``DoFn`` per shard keeps ``{key: folded
ledger + movements not yet final}`` in one value and emits a ``StockLevel`` per key touched by the
pane. An event-time timer folds movements older than the watermark minus the fold delay (allowed
lateness + two ticks of the late check + two firing intervals, see
``WindowingOptions.fold_delay_seconds``): nothing older can still arrive (the late check
dead-letters it), so folding is exact and the state stays bounded by one fold delay of movements
plus one small tuple per key. State is touched once per shard per pane, not per element. Same
movements, same order: both modes give the same final rows. Should a movement still arrive below
the folded point (a watermark that jumped by more than the margin while it waited in the
grouping), it is applied to the folded ledger, exact for deltas and for releases that do not
clamp, and counted (``inventory_ledger/movements_after_fold``).
"""

from __future__ import annotations

import time
import zlib
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from retail_backbone.io.dead_letters import DEAD_LETTERS
from retail_backbone.io.events import Event
from retail_backbone.transforms.inventory.types import StockLevel
from retail_backbone.transforms.inventory.windowing import (
    WindowForMode,
    WindowingOptions,
    event_dead_letter,
    unwindow,
    window_into,
)
from retail_backbone.transforms.state_values import ShardBook
from retail_backbone.transforms.timer_pacing import next_wake

__all__ = [
    "LEDGER_EVENT_TYPES",
    "MOVEMENT_SOURCES",
    "LedgerResult",
    "UpdateStockLedger",
    "stock_movements",
]

#: Movement ranks: the order of movements within one millisecond.
RESERVE, MOVE, COUNT, REORDER = 0, 1, 2, 3
MOVEMENT_SOURCES = ("adjustments", "documents")
LEDGER_EVENT_TYPES = (
    "inventory_adjusted",
    "stock_counted",
    "order_placed",
    "order_cancelled",
    "order_shipped",
    "return_processed",
)
_NAMESPACE = "inventory_ledger"
_MIN_MS = -(1 << 62)

Key = tuple[str, str]
#: ``(event time ms, rank, x, y)``: RESERVE x units; MOVE on-hand by x and release y reserved;
#: COUNT on-hand to x; REORDER: x = revision, y = reorder point (see ``stockouts``).
Movement = tuple[int, int, Any, Any]


class InvalidEvent(ValueError):
    """An inventory event whose payload cannot be applied; ``reason`` is the dead-letter class."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _positive(quantity: Any, what: str) -> int:
    if not isinstance(quantity, int) or quantity <= 0:
        raise InvalidEvent("invalid_quantity", f"{what} quantity must be a positive integer")
    return quantity


def stock_movements(
    event: Event, movements: str = "adjustments"
) -> list[tuple[Key, Movement]] | None:
    """The keyed movements of one event, or ``None`` for an event type without stock effect.

    An event whose stock effect comes from its mirror adjustment (see the module docstring)
    gives ``[]``.

    Raises:
        InvalidEvent: a negative count or a non-positive line quantity (the whole event is
            rejected, so a dead letter replayed later cannot apply half an order twice).
    """
    kind, p, t = event.event_type, event.payload, event.event_time_ms
    if kind == "order_placed":
        return [
            (
                (line["sku"], line["fulfillment_location"]),
                (t, RESERVE, _positive(line["quantity"], "order line"), 0),
            )
            for line in p["lines"]
        ]
    if kind == "inventory_adjusted":
        delta, reason = p["delta"], p["reason"]
        if not isinstance(delta, int):
            raise InvalidEvent("invalid_quantity", "adjustment delta must be an integer")
        if movements == "adjustments":
            consumed = -delta if reason == "SALE" and delta < 0 else 0
        elif reason in ("SALE", "RETURN"):
            return []
        else:
            consumed = 0
        return [((p["sku"], p["location"]), (t, MOVE, delta, consumed))]
    if kind == "stock_counted":
        quantity = p["quantity"]
        if not isinstance(quantity, int) or quantity < 0:
            raise InvalidEvent("invalid_quantity", "counted quantity must be an integer >= 0")
        return [((p["sku"], p["location"]), (t, COUNT, quantity, 0))]
    if kind == "order_cancelled":
        return [
            (
                (line["sku"], line["location"]),
                (t, MOVE, 0, _positive(line["quantity"], "cancelled")),
            )
            for line in p["lines"]
        ]
    if kind == "order_shipped":
        if movements == "adjustments":
            return []
        location = p["location"]
        out = []
        for line in p["lines"]:
            q = _positive(line["quantity"], "shipped")
            out.append(((line["sku"], location), (t, MOVE, -q, q)))
        return out
    if kind == "return_processed":
        if movements == "adjustments" or not p["restockable"]:
            return []
        q = _positive(p["quantity"], "returned")
        return [((p["sku"], p["location"]), (t, MOVE, q, 0))]
    return None


class _ExtractMovementsFn(beam.DoFn):
    """Event -> ``(key, movement)`` pairs; invalid events to the dead letters.

    Counters (namespace given): ``movements``; ``events_ignored`` (other event types);
    ``events_mirrored`` (no effect of their own, see the module docstring); ``events_invalid``.
    Counted per bundle: a counter call per element would cost more than the extraction.
    """

    def __init__(self, namespace: str, pipeline: str, stage: str, movements: str) -> None:
        self._pipeline = pipeline
        self._stage = stage
        self._movements = movements
        self._c_movements = Metrics.counter(namespace, "movements")
        self._c_ignored = Metrics.counter(namespace, "events_ignored")
        self._c_mirrored = Metrics.counter(namespace, "events_mirrored")
        self._c_invalid = Metrics.counter(namespace, "events_invalid")

    def start_bundle(self) -> None:
        self._n = [0, 0, 0, 0]

    def process(self, event: Event) -> Iterable[Any]:
        try:
            out = stock_movements(event, self._movements)
        except InvalidEvent as exc:
            self._n[3] += 1
            return [self._reject(event, exc.reason, str(exc))]
        except (KeyError, TypeError, AttributeError) as exc:
            self._n[3] += 1
            return [self._reject(event, "SchemaMismatch", f"{type(exc).__name__}: {exc}")]
        if out is None:
            self._n[1] += 1
            return ()
        if not out:
            self._n[2] += 1
        self._n[0] += len(out)
        return out

    def _reject(self, event: Event, reason: str, message: str) -> Any:
        return beam.pvalue.TaggedOutput(
            DEAD_LETTERS, event_dead_letter(event, self._pipeline, self._stage, reason, message)
        )

    def finish_bundle(self) -> None:
        for counter, n in zip(
            (self._c_movements, self._c_ignored, self._c_mirrored, self._c_invalid),
            self._n,
            strict=True,
        ):
            if n:
                counter.inc(n)


# -- column-wise extraction (backfills) --------------------------------------------------------


def _millis_column(table: Any) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    times = pc.struct_field(table.column("envelope"), "event_time")
    unit = times.type.unit if pa.types.is_timestamp(times.type) else "ms"
    scale = {"s": 1000, "ms": 1, "us": 1 / 1000, "ns": 1 / 1_000_000}[unit]
    raw = pc.cast(times, pa.int64())
    return raw if scale == 1 else pc.cast(pc.multiply(raw, scale), pa.int64())


def table_movements(
    event_type: str, table: Any, movements: str = "adjustments"
) -> tuple[dict[Key, list[Movement]], list[int]]:
    """``stock_movements`` for a whole ``pyarrow.Table`` of one event type, column by column.

    The table has the contract's columns (the generator's Parquet layout: ``envelope`` struct,
    order lines as a list of structs). Movements come back grouped by key, ready to be one
    combiner input per key.

    Returns:
        ``({key: [movement, ...]}, [indices of invalid rows])``; invalid rows (a negative count,
        a non-positive line quantity) give no movement at all, like ``stock_movements``.
    """
    import pyarrow.compute as pc

    out: dict[Key, list[Movement]] = {}
    times = _millis_column(table).to_pylist()
    invalid: set[int] = set()
    if event_type in ("order_placed", "order_cancelled", "order_shipped"):
        if event_type == "order_shipped" and movements == "adjustments":
            return out, []
        lines = table.column("lines")
        flat = pc.list_flatten(lines)
        rows = pc.list_parent_indices(lines).to_pylist()
        skus = pc.struct_field(flat, "sku").to_pylist()
        quantities = pc.struct_field(flat, "quantity").to_pylist()
        if event_type == "order_placed":
            locations = pc.struct_field(flat, "fulfillment_location").to_pylist()
        elif event_type == "order_cancelled":
            locations = pc.struct_field(flat, "location").to_pylist()
        else:
            shipped_from = table.column("location").to_pylist()
            locations = [shipped_from[r] for r in rows]
        invalid = {r for r, q in zip(rows, quantities, strict=True) if q is None or q <= 0}
        for r, sku, q, loc in zip(rows, skus, quantities, locations, strict=True):
            if r in invalid:
                continue
            t = times[r]
            if event_type == "order_placed":
                movement = (t, RESERVE, q, 0)
            elif event_type == "order_cancelled":
                movement = (t, MOVE, 0, q)
            else:
                movement = (t, MOVE, -q, q)
            out.setdefault((sku, loc), []).append(movement)
        return out, sorted(invalid)
    if event_type not in ("inventory_adjusted", "stock_counted", "return_processed"):
        return out, []
    if event_type == "return_processed" and movements == "adjustments":
        return out, []
    skus = table.column("sku").to_pylist()
    locations = table.column("location").to_pylist()
    if event_type == "stock_counted":
        for i, (sku, loc, q) in enumerate(
            zip(skus, locations, table.column("quantity").to_pylist(), strict=True)
        ):
            if q is None or q < 0:
                invalid.add(i)
            else:
                out.setdefault((sku, loc), []).append((times[i], COUNT, q, 0))
    elif event_type == "return_processed":
        restock = table.column("restockable").to_pylist()
        for i, q in enumerate(table.column("quantity").to_pylist()):
            if q is None or q <= 0:
                invalid.add(i)
            elif restock[i]:
                out.setdefault((skus[i], locations[i]), []).append((times[i], MOVE, q, 0))
    else:
        reasons = table.column("reason").to_pylist()
        for i, delta in enumerate(table.column("delta").to_pylist()):
            reason = reasons[i]
            if delta is None:
                invalid.add(i)
                continue
            if movements == "adjustments":
                consumed = -delta if reason == "SALE" and delta < 0 else 0
            elif reason in ("SALE", "RETURN"):
                continue
            else:
                consumed = 0
            out.setdefault((skus[i], locations[i]), []).append((times[i], MOVE, delta, consumed))
    return out, sorted(invalid)


class _TableMovementsFn(beam.DoFn):
    """``(event_type, pyarrow.Table)`` -> ``(key, [movements])``; invalid rows dead-lettered."""

    def __init__(self, namespace: str, pipeline: str, stage: str, movements: str) -> None:
        self._pipeline = pipeline
        self._stage = stage
        self._movements = movements
        self._c_movements = Metrics.counter(namespace, "movements")
        self._c_invalid = Metrics.counter(namespace, "events_invalid")

    def process(self, element: tuple[str, Any]) -> Iterator[Any]:
        import json

        from retail_backbone.io.dead_letters import Origin, dead_letter

        event_type, table = element
        grouped, invalid = table_movements(event_type, table, self._movements)
        self._c_movements.inc(sum(len(v) for v in grouped.values()))
        yield from grouped.items()
        if invalid:
            self._c_invalid.inc(len(invalid))
            for i in invalid:
                row = table.slice(i, 1).to_pylist()[0]
                yield beam.pvalue.TaggedOutput(
                    DEAD_LETTERS,
                    dead_letter(
                        json.dumps(row, default=str, sort_keys=True).encode(),
                        Origin("INTERNAL"),
                        self._pipeline,
                        self._stage,
                        f"invalid quantity in {event_type} row {i}",
                        error_class="invalid_quantity",
                        event_id=row.get("envelope", {}).get("event_id"),
                    ),
                )


# -- replay -----------------------------------------------------------------------------------


class _Ledger(NamedTuple):
    """A key's ledger after some prefix of its movements (the folded part in streaming)."""

    on_hand: int = 0
    reserved: int = 0
    clamped: int = 0
    version: int | None = None
    applied: int = 0
    last_count: int | None = None
    folded_until: int = _MIN_MS  # streaming: movements before this are folded in
    # -- used by stockouts only:
    reorder_point: float | None = None  # from the forecast; None: the default
    state: str | None = None  # OUT | LOW | OK; None before the first stock movement
    alerted_upto: int = _MIN_MS  # streaming: transitions up to here were emitted


_EMPTY = _Ledger()


def _apply(ledger: _Ledger, movements: Iterable[Movement]) -> _Ledger:
    """Apply ``movements`` (sorted) to ``ledger``: the hot loop, without alert bookkeeping."""
    on_hand, reserved, clamped, version, applied, last_count = ledger[:6]
    for t, rank, x, y in movements:
        if rank == MOVE:
            on_hand += x
            if y:
                reserved -= y
                if reserved < 0:
                    clamped -= reserved
                    reserved = 0
        elif rank == RESERVE:
            reserved += x
        elif rank == COUNT:
            on_hand = x
            last_count = t
        else:
            continue
        applied += 1
        if version is None or t > version:
            version = t
    return ledger._replace(
        on_hand=on_hand,
        reserved=reserved,
        clamped=clamped,
        version=version,
        applied=applied,
        last_count=last_count,
    )


class Transition(NamedTuple):
    """A change of stock state found by the replay (``stockouts`` makes alerts of them)."""

    version: int
    previous: str | None
    state: str
    available: int
    reorder_point: float


def _classify(available: int, reorder_point: float) -> str:
    if available <= 0:
        return "OUT"
    if available <= reorder_point:
        return "LOW"
    return "OK"


def _apply_tracking_state(
    ledger: _Ledger, movements: list[Movement], default_reorder_point: float
) -> tuple[_Ledger, list[Transition]]:
    """Apply sorted ``movements`` and list the state changes, judged once per millisecond.

    The state is judged after all movements of a millisecond, so a count and a sale stamped
    with the same instant never raise a transient alert. A reorder-point movement changes the
    threshold (``x`` is the forecast's revision, ``y`` the reorder point: of two forecasts for
    the same time the higher revision is applied last and wins).
    """
    transitions: list[Transition] = []
    rop, state = ledger.reorder_point, ledger.state
    i, n = 0, len(movements)
    while i < n:
        t = movements[i][0]
        j = i
        stock = False
        while j < n and movements[j][0] == t:
            if movements[j][1] == REORDER:
                rop = movements[j][3]
            else:
                stock = True
            j += 1
        if stock:
            ledger = _apply(ledger, movements[i:j])
        i = j
        if ledger.version is None:
            continue  # only forecasts so far: nothing to judge
        threshold = default_reorder_point if rop is None else rop
        available = ledger.on_hand - ledger.reserved
        new = _classify(available, threshold)
        if new != state:
            if not (state is None and new == "OK"):
                transitions.append(Transition(t, state, new, available, threshold))
            state = new
    return ledger._replace(reorder_point=rop, state=state), transitions


def _level(key: Key, ledger: _Ledger) -> StockLevel:
    return StockLevel(
        sku=key[0],
        location=key[1],
        on_hand=ledger.on_hand,
        reserved=ledger.reserved,
        available=ledger.on_hand - ledger.reserved,
        version=ledger.version if ledger.version is not None else _MIN_MS,
        movements_applied=ledger.applied,
        clamped_units=ledger.clamped,
        last_count_ms=ledger.last_count,
    )


# -- batch ------------------------------------------------------------------------------------


class _LedgerCombineFn(beam.CombineFn):
    """Movements of one key -> its ledger (and, for stockouts, its state changes).

    The accumulator is a plain list of movement tuples: append and concatenate are the
    cheapest order-independent, mergeable operations there are, and a list of tuples is what
    Beam's fast coder encodes quickest when lifted accumulators cross the shuffle.
    """

    def __init__(self, track_state: bool = False, default_reorder_point: float = 0.0) -> None:
        self._track_state = track_state
        self._default_rop = default_reorder_point

    def create_accumulator(self) -> list[Movement]:
        return []

    def add_input(self, acc: list[Movement], movement: Movement | list[Movement]) -> list[Movement]:
        # A list is a key's movements pre-aggregated upstream (the Arrow path).
        if type(movement) is list:
            acc.extend(movement)
        else:
            acc.append(movement)
        return acc

    def add_inputs(self, acc: list[Movement], movements: Iterable[Movement]) -> list[Movement]:
        acc.extend(movements)
        return acc

    def merge_accumulators(self, accs: Iterable[list[Movement]]) -> list[Movement]:
        it = iter(accs)
        merged = next(it, None)
        if merged is None:
            return []
        for acc in it:
            merged.extend(acc)
        return merged

    def extract_output(self, acc: list[Movement]) -> Any:
        acc.sort()
        if self._track_state:
            return _apply_tracking_state(_EMPTY, acc, self._default_rop)
        return _apply(_EMPTY, acc)


class _EmitLevelFn(beam.DoFn):
    def __init__(self, namespace: str) -> None:
        self._keys = Metrics.counter(namespace, "keys")
        self._clamped = Metrics.counter(namespace, "reservation_units_clamped")

    def process(self, element: tuple[Key, _Ledger]) -> Iterator[StockLevel]:
        key, ledger = element
        self._keys.inc()
        if ledger.clamped:
            self._clamped.inc(ledger.clamped)
        yield _level(key, ledger)


# -- streaming --------------------------------------------------------------------------------


def shard_of(key: Key, shards: int) -> int:
    """The state shard of a key (stable across processes, unlike ``hash``)."""
    return zlib.crc32(f"{key[0]}\x00{key[1]}".encode()) % shards


class _ShardLedgerFn(beam.DoFn):
    """Per state shard: ``{key: [folded ledger, pending movements, next alert]}`` in one value.

    ``process`` takes one pane of movements for the shard, appends them, and emits the touched
    keys' current ``StockLevel`` (ledger mode). The ``FOLD`` timer (event time, at a multiple of
    ``fold_step_ms`` so a shard wakes at most once per step) folds movements older than the
    watermark minus ``fold_delay_ms`` into the ledger and, in stockout mode, emits state changes
    once the watermark is ``settle_ms`` past them. A timer that finds the watermark far ahead
    wakes next in doubling steps (``timer_pacing``), so a backlog costs a few wakes, not one per
    fold step.
    """

    LEDGERS = ReadModifyWriteStateSpec("ledgers", PickleCoder())
    ARMED = ReadModifyWriteStateSpec("armed", PickleCoder())
    # (timer_pacing.Pace of the FOLD loop, recent firings as (event ms, wall s)), see ``_fold``.
    PACE = ReadModifyWriteStateSpec("pace", PickleCoder())
    FOLD = TimerSpec("fold", TimeDomain.WATERMARK)

    def __init__(
        self,
        namespace: str,
        fold_delay_ms: int,
        fold_step_ms: int,
        track_state: bool = False,
        settle_ms: int = 0,
        default_reorder_point: float = 0.0,
        confirm_seconds: float = 0.0,
    ) -> None:
        if track_state and settle_ms > fold_delay_ms:
            raise ValueError("settle_ms must not exceed fold_delay_ms")
        self._confirm_seconds = confirm_seconds
        self._fold_delay_ms = fold_delay_ms
        self._fold_step_ms = fold_step_ms
        self._track_state = track_state
        self._settle_ms = settle_ms
        self._default_rop = default_reorder_point
        self._after_fold = Metrics.counter(namespace, "movements_after_fold")
        self._clamped = Metrics.counter(namespace, "reservation_units_clamped")
        self._keys = Metrics.counter(namespace, "keys")

    def _step(self, at_ms: int) -> int:
        step = self._fold_step_ms
        return -(-at_ms // step) * step

    def _need(self, entry: list) -> int | None:
        """When the watermark must next wake this key (ms, not yet rounded to a step)."""
        _, pending, alert_at = entry
        needs = []
        if pending:
            needs.append(pending[0][0] + self._fold_delay_ms)
        if alert_at is not None:
            needs.append(alert_at + self._settle_ms)
        return min(needs) if needs else None

    def _arm(self, timer, armed_state, at_ms: int | None, armed: int | None) -> None:
        if at_ms is None:
            return
        at = self._step(at_ms)
        if armed is None or at < armed:
            timer.set(Timestamp(micros=at * 1000))
            armed_state.write(at)

    def process(
        self,
        element: tuple[int, Iterable[tuple[Key, Movement]]],
        ledgers=beam.DoFn.StateParam(LEDGERS),
        armed_state=beam.DoFn.StateParam(ARMED),
        fold=beam.DoFn.TimerParam(FOLD),
    ) -> Iterator[Any]:
        _, pane = element
        book: dict[Key, list] = ShardBook(ledgers.read() or {})
        touched: dict[Key, list] = {}
        after_fold = 0
        for key, movement in pane:
            entry = touched.get(key) or book.get(key)
            if entry is None:
                entry = book[key] = [_EMPTY, [], None]
                self._keys.inc()
            touched[key] = entry
            if movement[0] < entry[0].folded_until:
                # Only when the watermark outran the margin (see the module docstring): exact
                # for deltas and releases that do not clamp; counted.
                after_fold += 1
                if self._track_state:
                    entry[0] = _apply_tracking_state(entry[0], [movement], self._default_rop)[0]
                else:
                    entry[0] = _apply(entry[0], [movement])
            else:
                entry[1].append(movement)
        if not touched:
            return
        if after_fold:
            self._after_fold.inc(after_fold)
        soonest = None
        for key, entry in touched.items():
            ledger, pending, _ = entry
            pending.sort()
            if self._track_state:
                _, transitions = _apply_tracking_state(ledger, pending, self._default_rop)
                entry[2] = next(
                    (tr.version for tr in transitions if tr.version > ledger.alerted_upto), None
                )
            else:
                yield _level(key, _apply(ledger, pending))
            need = self._need(entry)
            if need is not None and (soonest is None or need < soonest):
                soonest = need
        ledgers.write(book)
        self._arm(fold, armed_state, soonest, armed_state.read())

    @on_timer(FOLD)
    def _fold(
        self,
        fired=beam.DoFn.TimestampParam,
        ledgers=beam.DoFn.StateParam(LEDGERS),
        armed_state=beam.DoFn.StateParam(ARMED),
        pace_state=beam.DoFn.StateParam(PACE),
        fold=beam.DoFn.TimerParam(FOLD),
    ) -> Iterator[Any]:
        now = fired.micros // 1000
        pace, firings = pace_state.read() or (None, ())
        horizon, firings = self._horizon(now, firings)
        final_upto = horizon - self._fold_delay_ms  # movements up to here can no longer change
        settled_upto = horizon - self._settle_ms
        book: dict[Key, list] = ShardBook(ledgers.read() or {})
        soonest = latest = None
        clamped = 0
        for key, entry in book.items():
            ledger, pending, alert_at = entry
            if self._track_state and alert_at is not None and alert_at <= settled_upto:
                _, transitions = _apply_tracking_state(ledger, pending, self._default_rop)
                for tr in transitions:
                    if ledger.alerted_upto < tr.version <= settled_upto:
                        yield key, tr
                        ledger = ledger._replace(alerted_upto=tr.version)
                entry[0] = ledger
                entry[2] = next(
                    (tr.version for tr in transitions if tr.version > ledger.alerted_upto), None
                )
            if pending and pending[0][0] <= final_upto:
                cut = bisect_right(pending, (final_upto, REORDER + 1))
                done, entry[1] = pending[:cut], pending[cut:]
                before = ledger.clamped
                if self._track_state:
                    ledger, transitions = _apply_tracking_state(ledger, done, self._default_rop)
                    for tr in transitions:
                        # Settled by now (settle <= fold delay); emitted here if a pane never
                        # showed them before they became final.
                        if tr.version > ledger.alerted_upto:
                            yield key, tr
                            ledger = ledger._replace(alerted_upto=tr.version)
                else:
                    ledger = _apply(ledger, done)
                clamped += ledger.clamped - before
                entry[0] = ledger._replace(folded_until=final_upto + 1)
                if self._track_state and entry[2] is not None and entry[2] <= final_upto:
                    entry[2] = None
            need = self._need(entry)
            if need is not None:
                soonest = need if soonest is None else min(soonest, need)
                last = entry[1][-1][0] + self._fold_delay_ms if entry[1] else need
                latest = last if latest is None else max(latest, last)
        if clamped:
            self._clamped.inc(clamped)
        ledgers.write(book)
        armed_state.clear()
        if soonest is not None:
            # Never at or before the firing time; further ahead while the watermark is ahead
            # (a backlog): one wake per fold step through days of history would stall Flink.
            # Work behind the horizon may be due already: wake again soon (next bundle).
            at, pace = next_wake(now, max(soonest, now + 1), latest, self._fold_step_ms, pace)
            self._arm(fold, armed_state, at, None)
        pace_state.write((pace, firings))

    def _horizon(
        self, now: int, firings: tuple[tuple[int, float], ...]
    ) -> tuple[int, tuple[tuple[int, float], ...]]:
        """The event time up to which this shard has all its input, and the firings to keep.

        The watermark does not cover elements waiting in the grouping before this step: its
        early trigger holds them up to one firing interval of processing time, while the
        watermark moves on (hours per second in a backlog). Elements that were behind the
        watermark when they got there (reorder points: a daily window's output) cannot even
        hold it. So a firing's time counts only once ``confirm_seconds`` of wall time have
        passed since it fired: by then everything the watermark covered at that firing has
        left the grouping and is in this state. With ``confirm_seconds`` 0 (the batch-like
        unit harness, the DirectRunner's TestStream) the firing time itself counts.
        """
        if self._confirm_seconds <= 0:
            return now, ()
        wall = time.time()
        firings = (*firings, (now, wall))
        old_enough = [f for f in firings if wall - f[1] >= self._confirm_seconds]
        horizon = max((t for t, _ in old_enough), default=_MIN_MS)
        # Keep the newest confirmed firing and the ones still waiting.
        keep = tuple(f for f in firings if f[0] >= horizon)
        return min(horizon, now), keep


# -- the transform ----------------------------------------------------------------------------


class LedgerResult(NamedTuple):
    """Outputs of ``UpdateStockLedger``."""

    levels: beam.PCollection
    dead_letters: beam.PCollection


def _options(mode: str, windowing: WindowingOptions | None) -> WindowingOptions:
    options = windowing or WindowingOptions(mode=mode)
    if options.mode != mode:
        raise ValueError(f"windowing.mode is {options.mode!r} but mode is {mode!r}")
    return options


class KeyMovements(beam.PTransform):
    """Events -> keyed movements, windowed for the mode, plus dead letters (shared internals).

    Streaming: late events are dead-lettered first; movements are windowed in the global window
    with discarding early panes.
    """

    def __init__(
        self,
        options: WindowingOptions,
        pipeline: str,
        stage: str,
        namespace: str,
        movements: str,
        label: str | None = None,
    ) -> None:
        super().__init__(label)
        self._options = options
        self._pipeline = pipeline
        self._stage = stage
        self._namespace = namespace
        self._movements = movements

    def expand(self, events: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        dead = []
        if self._options.streaming:
            windowed = events | "Window" >> WindowForMode(
                self._options,
                pipeline=self._pipeline,
                stage=self._stage,
                accumulation="discarding",
            )
            events = windowed.elements
            dead.append(windowed.dead_letters)
        elif not events.windowing.is_default():
            events = events | "Window" >> window_into(self._options)
        extracted = events | "ExtractMovements" >> beam.ParDo(
            _ExtractMovementsFn(self._namespace, self._pipeline, self._stage, self._movements)
        ).with_outputs(DEAD_LETTERS, main="movements")
        if self._options.streaming or not events.windowing.is_default():
            # Dead letters leave in the plain global window, whatever the movements' triggers.
            dead.append(extracted[DEAD_LETTERS] | "UnwindowDeadLetters" >> unwindow())
        else:
            dead.append(extracted[DEAD_LETTERS])
        dead_letters = dead[0] if len(dead) == 1 else dead | "MergeDeadLetters" >> beam.Flatten()
        return extracted.movements, dead_letters


class UpdateStockLedger(beam.PTransform):
    """Events -> ``StockLevel`` per (sku, location); see the module docstring.

    Args:
        mode: ``batch`` or ``streaming``.
        windowing: firing interval and allowed lateness (default ``WindowingOptions(mode)``).
        pipeline: pipeline name recorded on dead letters.
        movements: ``adjustments`` (default) or ``documents``: which events move on-hand.
        shards: streaming: state shards (parallelism of the ledger state). Default 16.
        input_format: ``events`` (``Event``s, default) or, batch only, ``arrow``:
            ``(event_type, pyarrow.Table)`` pairs of whole row groups, for backfills read from
            Parquet without building an ``Event`` per row (same movements, same CombineFn; see
            ``table_movements``; dead letters of invalid rows carry the row as JSON).

    Returns:
        ``LedgerResult(levels, dead_letters)``.
    """

    def __init__(
        self,
        mode: str,
        *,
        windowing: WindowingOptions | None = None,
        pipeline: str = "inventory",
        movements: str = "adjustments",
        shards: int = 16,
        input_format: str = "events",
        label: str | None = None,
    ) -> None:
        super().__init__(label)
        if movements not in MOVEMENT_SOURCES:
            raise ValueError(f"movements must be one of {MOVEMENT_SOURCES}, not {movements!r}")
        if shards <= 0:
            raise ValueError("shards must be positive")
        if input_format not in ("events", "arrow") or (input_format == "arrow" and mode != "batch"):
            raise ValueError("input_format must be 'events', or 'arrow' in batch mode")
        self._input_format = input_format
        self._options = _options(mode, windowing)
        self._pipeline = pipeline
        self._movements = movements
        self._shards = shards

    def expand(self, events: beam.PCollection) -> LedgerResult:
        stage = self.label or "UpdateStockLedger"
        if self._input_format == "arrow":
            extracted = events | "TableMovements" >> beam.ParDo(
                _TableMovementsFn(_NAMESPACE, self._pipeline, stage, self._movements)
            ).with_outputs(DEAD_LETTERS, main="movements")
            movements, dead = extracted.movements, extracted[DEAD_LETTERS]
        else:
            movements, dead = events | "KeyMovements" >> KeyMovements(
                self._options, self._pipeline, stage, _NAMESPACE, self._movements
            )
        if not self._options.streaming:
            levels = (
                movements
                | "ReplayPerKey" >> beam.CombinePerKey(_LedgerCombineFn())
                | "EmitLevels" >> beam.ParDo(_EmitLevelFn(_NAMESPACE)).with_output_types(StockLevel)
            )
        else:
            shards = self._shards
            tick_ms = self._options.watermark_tick_seconds * 1000
            levels = (
                movements
                | "KeyByShard" >> beam.Map(lambda kv: (shard_of(kv[0], shards), kv))
                | "GroupPane" >> beam.GroupByKey()
                | "ApplyToShard"
                >> beam.ParDo(
                    _ShardLedgerFn(
                        _NAMESPACE,
                        self._options.fold_delay_seconds * 1000,
                        tick_ms,
                        confirm_seconds=self._options.confirm_seconds,
                    )
                ).with_output_types(StockLevel)
            )
        return LedgerResult(levels=levels, dead_letters=dead)
