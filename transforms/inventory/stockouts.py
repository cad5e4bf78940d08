"""Stock alerts: one per change of a key's stock state, the same in batch and streaming.

Example::

    alerts = {"events": events, "forecasts": forecasts} | "DetectStockouts" >> DetectStockouts(
        mode="streaming", default_reorder_point=5)
    alerts.alerts        # StockAlert rows: STOCKOUT, LOW_STOCK, RECOVERED
    alerts.dead_letters  # invalid (and, streaming, late) events

States, judged after each millisecond of a key's ledger history (so same-instant movements never
raise a transient alert): ``OUT`` when available <= 0, ``LOW`` when available <= the reorder
point, ``OK`` above it. Each change raises one alert: into ``OUT`` -> ``STOCKOUT``, into ``LOW``
-> ``LOW_STOCK``, from ``LOW``/``OUT`` into ``OK`` -> ``RECOVERED``. A key whose first state is
``OK`` raises nothing. Staying in a state raises nothing, so there is no storm of repeats; the
alert id is ``uuid5(sku, location, state, version)``, so a rerun or a replayed pane gives the
same ids.

The reorder point of a key at time t is the ``reorder_point`` of its latest ``DemandForecast``
with ``version <= t`` (the forecast made at the end of a day applies from the next midnight; of
two rows for one day the higher ``revision`` wins), else ``default_reorder_point``. A new
reorder point is itself a change that can raise an alert.

Why batch and streaming agree: alerts are computed from the ledger's history in event-time order
per key (the same movements and replay as ``UpdateStockLedger``, with the forecasts as
threshold movements), never from the order of panes.

- batch: ``CombinePerKey`` collects each key's movements and forecasts; the replay lists every
  change.
- streaming: the ledger's sharded state (see ``ledger``) replays each key's pending movements
  when a pane arrives and emits a change once the watermark is ``settle_seconds`` past it. By
  default that is the fold delay (allowed lateness + margin), when the history before the change
  is final: every movement and forecast not dead-lettered as late has been applied, so the alerts
  are exactly the batch alerts. A smaller value alerts sooner (0: as soon as the watermark passes
  the change) and still equals batch when nothing arrives behind the watermark; otherwise a late
  movement (or a forecast pane) can revise a change after it was emitted: it is not retracted,
  and a revised change dated before one already emitted is not emitted.

Alerts are emitted when the fold timer fires, which wakes at most once per
``watermark_tick_seconds`` of event time per shard, and a firing counts only once
``WindowingOptions.confirm_seconds`` of wall time have passed (``ledger._ShardLedgerFn._horizon``):
that is the streaming alert latency on top of ``settle_seconds``. The reorder point of a day
arrives when its daily window fires, so with a small ``settle_seconds`` a change just after
midnight may be judged with the previous day's threshold.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms import window
from apache_beam.utils.timestamp import Timestamp

from retail_backbone.transforms.inventory.ledger import (
    MOVEMENT_SOURCES,
    REORDER,
    KeyMovements,
    Transition,
    _LedgerCombineFn,
    _options,
    _ShardLedgerFn,
    shard_of,
)
from retail_backbone.transforms.inventory.types import (
    LOW_STOCK,
    RECOVERED,
    STOCKOUT,
    DemandForecast,
    StockAlert,
)
from retail_backbone.transforms.inventory.windowing import WindowingOptions, window_into

__all__ = ["ALERT_NAMESPACE", "DetectStockouts", "StockoutResult", "alert_id"]

#: uuid5 namespace of alert ids.
ALERT_NAMESPACE = uuid.UUID("6f3c2a4e-5b1d-5c8e-9a7f-0d2e4b6c8a10")
_NAMESPACE = "stockouts"
_ALERT_STATE = {"OUT": STOCKOUT, "LOW": LOW_STOCK, "OK": RECOVERED}


def alert_id(sku: str, location: str, state: str, version: int) -> str:
    """The deterministic id of an alert."""
    return str(uuid.uuid5(ALERT_NAMESPACE, f"{sku}\x1f{location}\x1f{state}\x1f{version}"))


def _alert(key: tuple[str, str], tr: Transition) -> StockAlert:
    state = _ALERT_STATE[tr.state]
    return StockAlert(
        alert_id=alert_id(key[0], key[1], state, tr.version),
        sku=key[0],
        location=key[1],
        state=state,
        previous_state=tr.previous or "UNKNOWN",
        available=tr.available,
        reorder_point=tr.reorder_point,
        version=tr.version,
    )


class _EmitAlertsFn(beam.DoFn):
    """Transitions -> ``StockAlert``s, counted per state (``stockouts/<STATE>``)."""

    def __init__(self) -> None:
        self._counters = {s: Metrics.counter(_NAMESPACE, s) for s in _ALERT_STATE.values()}

    def process(self, element: tuple[tuple[str, str], Transition]) -> Iterator[StockAlert]:
        key, tr = element
        alert = _alert(key, tr)
        self._counters[alert.state].inc()
        yield alert


def _each_change(element: tuple[tuple[str, str], Any]) -> Iterator[tuple[Any, Transition]]:
    key, (_, transitions) = element
    for tr in transitions:
        yield key, tr


class _ReorderMovementFn(beam.DoFn):
    """``DemandForecast`` -> the threshold movement of its key, stamped at its version."""

    def process(self, row: DemandForecast) -> Iterator[Any]:
        movement = (row.version, REORDER, row.revision, float(row.reorder_point))
        yield window.TimestampedValue(
            ((row.sku, row.location), movement), Timestamp(micros=row.version * 1000)
        )


class StockoutResult(NamedTuple):
    """Outputs of ``DetectStockouts``."""

    alerts: beam.PCollection
    dead_letters: beam.PCollection


class DetectStockouts(beam.PTransform):
    """Events (and optional forecasts) -> ``StockAlert``s; see the module docstring.

    Apply it to a PCollection of events or to ``{"events": ..., "forecasts": ...}``.

    Args:
        mode: ``batch`` or ``streaming``.
        windowing: firing interval and allowed lateness (default ``WindowingOptions(mode)``).
        pipeline: pipeline name recorded on dead letters.
        movements: which events move on-hand (see ``ledger``).
        default_reorder_point: threshold of ``LOW_STOCK`` for keys without a forecast.
        settle_seconds: streaming: emit a change once the watermark is this far past it
            (default and maximum: ``windowing.fold_delay_seconds``, which makes the alerts
            exactly the batch alerts).
        shards: streaming: state shards.

    Returns:
        ``StockoutResult(alerts, dead_letters)``.
    """

    def __init__(
        self,
        mode: str,
        *,
        windowing: WindowingOptions | None = None,
        pipeline: str = "inventory",
        movements: str = "adjustments",
        default_reorder_point: float = 5.0,
        settle_seconds: int | None = None,
        shards: int = 16,
        label: str | None = None,
    ) -> None:
        super().__init__(label)
        self._options = _options(mode, windowing)
        if movements not in MOVEMENT_SOURCES:
            raise ValueError(f"movements must be one of {MOVEMENT_SOURCES}, not {movements!r}")
        most = self._options.fold_delay_seconds
        settle = most if settle_seconds is None else settle_seconds
        if not 0 <= settle <= most:
            raise ValueError(f"settle_seconds must be between 0 and {most} (the fold delay)")
        if shards <= 0:
            raise ValueError("shards must be positive")
        self._pipeline = pipeline
        self._movements = movements
        self._default_rop = float(default_reorder_point)
        self._settle_ms = settle * 1000
        self._shards = shards

    def expand(self, inputs: Any) -> StockoutResult:
        if isinstance(inputs, dict):
            events, forecasts = inputs["events"], inputs.get("forecasts")
        else:
            events, forecasts = inputs, None
        stage = self.label or "DetectStockouts"
        options = self._options
        movements, dead = events | "KeyMovements" >> KeyMovements(
            options, self._pipeline, stage, _NAMESPACE, self._movements
        )
        if forecasts is not None:
            thresholds = (
                forecasts
                | "ReorderPoints" >> beam.ParDo(_ReorderMovementFn())
                | "WindowReorderPoints" >> window_into(options, accumulation="discarding")
            )
            movements = (movements, thresholds) | "WithReorderPoints" >> beam.Flatten()
        if not options.streaming:
            changes = (
                movements
                | "ReplayPerKey"
                >> beam.CombinePerKey(
                    _LedgerCombineFn(track_state=True, default_reorder_point=self._default_rop)
                )
                | "ListChanges" >> beam.FlatMap(_each_change)
            )
        else:
            shards = self._shards
            changes = (
                movements
                | "KeyByShard" >> beam.Map(lambda kv: (shard_of(kv[0], shards), kv))
                | "GroupPane" >> beam.GroupByKey()
                | "ApplyToShard"
                >> beam.ParDo(
                    _ShardLedgerFn(
                        _NAMESPACE,
                        options.fold_delay_seconds * 1000,
                        options.watermark_tick_seconds * 1000,
                        track_state=True,
                        settle_ms=self._settle_ms,
                        default_reorder_point=self._default_rop,
                        confirm_seconds=options.confirm_seconds,
                    )
                )
            )
        alerts = changes | "EmitAlerts" >> beam.ParDo(_EmitAlertsFn()).with_output_types(StockAlert)
        return StockoutResult(alerts=alerts, dead_letters=dead)
