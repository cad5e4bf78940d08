"""Daily demand per (sku, location), Holt's linear smoothing, safety stock and reorder point.

Example::

    demand = events | "ForecastDemand" >> ForecastDemand(
        mode="batch", alpha=0.3, beta=0.1, z=1.65, lead_time_days=2)
    demand.forecasts     # DemandForecast: one row per key per day (streaming: revised per pane)
    demand.dead_letters  # invalid order_placed events (and, streaming, late ones)

Daily sales are the units of ``order_placed`` lines per (sku, fulfillment location), summed in
event-time daily windows (UTC days) by ``windowing.WindowForMode``: in streaming the current
day's total is refined every few seconds (accumulating panes) and late panes follow within the
allowed lateness.

The series of a key runs from its first day with sales to its latest day with sales; days in
between without sales count as 0. Holt's linear exponential smoothing over it, with day 1
initialising ``level = y1, trend = 0`` and each later day t::

    f_t     = level_{t-1} + trend_{t-1}              # one-step forecast made the day before
    e_t     = y_t - f_t                              # its error
    level_t = alpha * y_t + (1 - alpha) * f_t
    trend_t = beta * (level_t - level_{t-1}) + (1 - beta) * trend_{t-1}

Each day's row then gives::

    forecast      = max(0, level + trend)            # units per day from tomorrow
    sigma         = sqrt(mean(e_t ** 2))             # RMS one-step error so far (0 on day 1)
    safety_stock  = z * sigma * sqrt(lead_time_days)
    reorder_point = forecast * lead_time_days + safety_stock

Sigma is the root mean square of the one-step forecast errors rather than the standard deviation
of daily demand: it measures what the smoothing fails to predict (a trend is not uncertainty),
and it is the spread the safety stock has to cover over the lead time.

Batch: all daily totals of a key are grouped and replayed once. Streaming: a stateful ``DoFn``
per state shard keeps, per key, the last ``keep_days`` daily totals and the smoothing state
before them; each daily pane replaces its day's total (highest pane index wins) and the key's
rows from that day on are recomputed and emitted with the next ``revision``. Days older than
``keep_days`` before the key's newest day are folded (they are past their window's lateness), so
the state per key is a few numbers. Replaying from the folded state performs the same float
operations as replaying from the start: the last revision of each row equals the batch row.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms import window
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from retail_backbone.io.dead_letters import DEAD_LETTERS
from retail_backbone.io.events import Event
from retail_backbone.transforms.inventory.ledger import InvalidEvent, _options, _positive, shard_of
from retail_backbone.transforms.inventory.types import DemandForecast
from retail_backbone.transforms.inventory.windowing import (
    WindowForMode,
    WindowingOptions,
    event_dead_letter,
    unwindow,
)
from retail_backbone.transforms.state_values import ShardBook

__all__ = ["DAY_MS", "ForecastDemand", "ForecastResult", "HoltParams", "holt_rows"]

DAY_MS = 86_400_000
_NAMESPACE = "forecast"
_EPOCH_DAY = dt.date(1970, 1, 1)


class HoltParams(NamedTuple):
    """Smoothing and inventory-policy parameters."""

    alpha: float = 0.3
    beta: float = 0.1
    z: float = 1.65
    lead_time_days: float = 2.0


class _Holt(NamedTuple):
    """Smoothing state after ``day`` (days since 1970-01-01); ``n == 0``: nothing yet."""

    day: int = -1
    n: int = 0
    level: float = 0.0
    trend: float = 0.0
    sq_err: float = 0.0
    n_err: int = 0


_START = _Holt()


def _step(state: _Holt, day: int, units: int, params: HoltParams) -> _Holt:
    if state.n == 0:
        return _Holt(day, 1, float(units), 0.0, 0.0, 0)
    f = state.level + state.trend
    e = units - f
    level = params.alpha * units + (1.0 - params.alpha) * f
    trend = params.beta * (level - state.level) + (1.0 - params.beta) * state.trend
    return _Holt(day, state.n + 1, level, trend, state.sq_err + e * e, state.n_err + 1)


def _row(
    key: tuple[str, str], state: _Holt, units: int, params: HoltParams, revision: int
) -> DemandForecast:
    forecast = max(0.0, state.level + state.trend)
    sigma = math.sqrt(state.sq_err / state.n_err) if state.n_err else 0.0
    safety = params.z * sigma * math.sqrt(params.lead_time_days)
    return DemandForecast(
        sku=key[0],
        location=key[1],
        day=(_EPOCH_DAY + dt.timedelta(days=state.day)).isoformat(),
        units=units,
        level=state.level,
        trend=state.trend,
        forecast=forecast,
        sigma=sigma,
        safety_stock=safety,
        reorder_point=forecast * params.lead_time_days + safety,
        days_observed=state.n,
        version=(state.day + 1) * DAY_MS,
        revision=revision,
    )


def holt_rows(
    key: tuple[str, str],
    state: _Holt,
    daily: dict[int, int],
    params: HoltParams,
    emit_from: int | None = None,
    revision: int = 0,
) -> tuple[_Holt, list[DemandForecast], dict[int, _Holt]]:
    """Replay ``daily`` (day -> units, days after ``state.day``) from ``state``, zero-filling gaps.

    Returns:
        The state after the last day, the rows for days ``>= emit_from`` (all when ``None``),
        and the state after each replayed day (for folding).
    """
    rows: list[DemandForecast] = []
    states: dict[int, _Holt] = {}
    if not daily:
        return state, rows, states
    first = min(daily) if state.n == 0 else state.day + 1
    for day in range(first, max(daily) + 1):
        units = daily.get(day, 0)
        state = _step(state, day, units, params)
        states[day] = state
        if emit_from is None or day >= emit_from:
            rows.append(_row(key, state, units, params, revision))
    return state, rows, states


class _OrderedUnitsFn(beam.DoFn):
    """``order_placed`` -> ``((sku, fulfillment_location), quantity)`` per line."""

    def __init__(self, pipeline: str, stage: str) -> None:
        self._pipeline = pipeline
        self._stage = stage
        self._lines = Metrics.counter(_NAMESPACE, "order_lines")
        self._invalid = Metrics.counter(_NAMESPACE, "events_invalid")

    def process(self, event: Event) -> Iterable[Any]:
        if event.event_type != "order_placed":
            return ()
        try:
            out = [
                (
                    (line["sku"], line["fulfillment_location"]),
                    _positive(line["quantity"], "order line"),
                )
                for line in event.payload["lines"]
            ]
        except InvalidEvent as exc:
            reason, message = exc.reason, str(exc)
        except (KeyError, TypeError) as exc:
            reason, message = "SchemaMismatch", f"{type(exc).__name__}: {exc}"
        else:
            self._lines.inc(len(out))
            return out
        self._invalid.inc()
        letter = event_dead_letter(event, self._pipeline, self._stage, reason, message)
        return [beam.pvalue.TaggedOutput(DEAD_LETTERS, letter)]


class _DailyTotalFn(beam.DoFn):
    """``(key, units)`` in a daily window -> ``(key, (day, units, pane index))``."""

    def process(
        self,
        element: tuple[tuple[str, str], int],
        win=beam.DoFn.WindowParam,
        pane=beam.DoFn.PaneInfoParam,
    ) -> Iterator[Any]:
        key, units = element
        day = int(win.start.micros // (DAY_MS * 1000))
        yield key, (day, units, pane.index)


def _latest_per_day(totals: Iterable[tuple[int, int, int]]) -> dict[int, int]:
    best: dict[int, tuple[int, int]] = {}
    for day, units, pane in totals:
        if day not in best or pane >= best[day][0]:
            best[day] = (pane, units)
    return {day: units for day, (_, units) in best.items()}


class _HoltSeriesFn(beam.DoFn):
    """Batch: a key's daily totals -> one row per day."""

    def __init__(self, params: HoltParams) -> None:
        self._params = params

    def process(self, element: tuple[tuple[str, str], Iterable[Any]]) -> Iterator[DemandForecast]:
        key, totals = element
        _, rows, _ = holt_rows(key, _START, _latest_per_day(totals), self._params)
        yield from rows


class _ShardHoltFn(beam.DoFn):
    """Streaming, per state shard: ``{key: [folded, {day: (pane, units)}, revision, emitted]}``."""

    SERIES = ReadModifyWriteStateSpec("series", PickleCoder())

    def __init__(self, params: HoltParams, keep_days: int) -> None:
        self._params = params
        self._keep_days = keep_days
        self._after_fold = Metrics.counter(_NAMESPACE, "days_after_fold")
        self._stale = Metrics.counter(_NAMESPACE, "stale_panes")

    def process(
        self,
        element: tuple[int, tuple[tuple[str, str], tuple[int, int, int]]],
        series=beam.DoFn.StateParam(SERIES),
    ) -> Iterator[DemandForecast]:
        _, (key, (day, units, pane)) = element
        book: dict = ShardBook(series.read() or {})
        entry = book.get(key)
        if entry is None:
            entry = book[key] = [_START, {}, 0, None]
        folded, days, revision, emitted_upto = entry
        if folded.n and day <= folded.day:
            # Past its window's lateness by construction of keep_days: cannot be applied.
            self._after_fold.inc()
            return
        if day in days and pane < days[day][0]:
            self._stale.inc()  # an older pane overtaken by a newer one: superseded
            return
        days[day] = (pane, units)
        revision += 1
        # From the changed day on, and from any gap day not emitted yet (a day without sales
        # gets its row when a later day arrives, as in batch).
        emit_from = day if emitted_upto is None else min(day, emitted_upto + 1)
        daily = {d: u for d, (_, u) in days.items()}
        _, rows, states = holt_rows(key, folded, daily, self._params, emit_from, revision)
        yield from rows
        newest = max(days)
        emitted_upto = newest if emitted_upto is None else max(emitted_upto, newest)
        old = [d for d in days if d <= newest - self._keep_days]
        if old:
            cutoff = max(old)
            folded = states[cutoff]
            days = {d: v for d, v in days.items() if d > cutoff}
        entry[:] = [folded, days, revision, emitted_upto]
        series.write(book)


class ForecastResult(NamedTuple):
    """Outputs of ``ForecastDemand``."""

    forecasts: beam.PCollection
    dead_letters: beam.PCollection


class ForecastDemand(beam.PTransform):
    """Events -> ``DemandForecast`` per (sku, location) per day; see the module docstring.

    Args:
        mode: ``batch`` or ``streaming``.
        windowing: firing interval and allowed lateness (default ``WindowingOptions(mode)``).
        pipeline: pipeline name recorded on dead letters.
        alpha: level smoothing factor in (0, 1].
        beta: trend smoothing factor in [0, 1].
        z: service-level factor of the safety stock (1.65 ~ 95%).
        lead_time_days: replenishment lead time.
        keep_days: streaming: days of daily totals kept open per key (more than the allowed
            lateness in days); older days are folded.
        shards: streaming: state shards.

    Returns:
        ``ForecastResult(forecasts, dead_letters)``.
    """

    def __init__(
        self,
        mode: str,
        *,
        windowing: WindowingOptions | None = None,
        pipeline: str = "inventory",
        alpha: float = 0.3,
        beta: float = 0.1,
        z: float = 1.65,
        lead_time_days: float = 2.0,
        keep_days: int = 3,
        shards: int = 16,
        label: str | None = None,
    ) -> None:
        super().__init__(label)
        self._options = _options(mode, windowing)
        if not 0 < alpha <= 1 or not 0 <= beta <= 1:
            raise ValueError("alpha must be in (0, 1] and beta in [0, 1]")
        if z < 0 or lead_time_days <= 0:
            raise ValueError("z must be >= 0 and lead_time_days > 0")
        min_keep = math.ceil(self._options.window_lateness_seconds * 1000 / DAY_MS) + 1
        if keep_days < min_keep:
            raise ValueError(f"keep_days must be at least {min_keep} for this allowed lateness")
        if shards <= 0:
            raise ValueError("shards must be positive")
        self._pipeline = pipeline
        self._params = HoltParams(alpha, beta, z, lead_time_days)
        self._keep_days = keep_days
        self._shards = shards

    def expand(self, events: beam.PCollection) -> ForecastResult:
        stage = self.label or "ForecastDemand"
        options = self._options
        windowed = events | "WindowDaily" >> WindowForMode(
            options, window.FixedWindows(DAY_MS // 1000), pipeline=self._pipeline, stage=stage
        )
        lines = windowed.elements | "OrderedUnits" >> beam.ParDo(
            _OrderedUnitsFn(self._pipeline, stage)
        ).with_outputs(DEAD_LETTERS, main="lines")
        totals = (
            lines.lines
            | "SumPerDay" >> beam.CombinePerKey(sum)
            | "TagDay" >> beam.ParDo(_DailyTotalFn())
            | "Unwindow" >> beam.WindowInto(window.GlobalWindows())
        )
        if not options.streaming:
            forecasts = (
                totals
                | "GroupSeries" >> beam.GroupByKey()
                | "Smooth"
                >> beam.ParDo(_HoltSeriesFn(self._params)).with_output_types(DemandForecast)
            )
        else:
            shards = self._shards
            forecasts = (
                totals
                | "KeyByShard" >> beam.Map(lambda kv: (shard_of(kv[0], shards), kv))
                | "Smooth"
                >> beam.ParDo(_ShardHoltFn(self._params, self._keep_days)).with_output_types(
                    DemandForecast
                )
            )
        dead = (
            windowed.dead_letters,
            lines[DEAD_LETTERS] | "UnwindowDeadLetters" >> unwindow(),
        ) | "MergeDeadLetters" >> beam.Flatten()
        return ForecastResult(forecasts=forecasts, dead_letters=dead)
