"""Typed rows of the inventory transforms: stock levels, stock alerts, demand forecasts.

Example::

    from retail_backbone.transforms.inventory.types import StockLevel

    row = StockLevel("SKU-1", "LOC-1", on_hand=12, reserved=2, available=10,
                     version=1_764_000_000_000, movements_applied=7)
    row.available  # 10

Every row carries ``version``: the event time (epoch ms) its values are valid at. Idempotent sinks
keep, per key, the row with the highest ``(version, movements_applied)`` (stock levels) or
``(version, revision)`` (forecasts): a second row with the same version can follow when late data
within the allowed lateness refines a key whose newest event is unchanged.

Coders: the rows are ``typing.NamedTuple`` classes registered with Beam's
``FastPrimitivesCoder``, which encodes named tuples field by field without a schema. Registering it
pins that choice, so schema inference never swaps in a ``RowCoder`` (whose handling of
``int | None`` fields differs between Beam versions).
"""

from __future__ import annotations

from typing import NamedTuple

from apache_beam import coders

__all__ = [
    "LOW_STOCK",
    "RECOVERED",
    "STOCKOUT",
    "DemandForecast",
    "StockAlert",
    "StockLevel",
]

STOCKOUT = "STOCKOUT"
LOW_STOCK = "LOW_STOCK"
RECOVERED = "RECOVERED"


class StockLevel(NamedTuple):
    """Stock of one sku at one location after every event up to ``version``.

    Attributes:
        sku: product.
        location: store or fulfillment center.
        on_hand: units physically there (last count plus later movements; may go negative when
            movements are missing, which is a data problem worth seeing, so it is not clamped).
        reserved: units promised to open orders (never negative).
        available: ``on_hand - reserved``.
        version: event time (epoch ms) of the last applied event.
        movements_applied: stock movements applied so far (one per adjustment, count or order
            line); it grows with every applied event, so it orders two rows with one ``version``.
        clamped_units: reservation releases that found nothing reserved, in units (releases of
            orders placed before the data starts, or lost ``order_placed`` events).
        last_count_ms: event time of the latest physical count applied, if any.
    """

    sku: str
    location: str
    on_hand: int
    reserved: int
    available: int
    version: int
    movements_applied: int
    clamped_units: int = 0
    last_count_ms: int | None = None


class StockAlert(NamedTuple):
    """One change of a key's stock state (see ``stockouts.DetectStockouts``).

    Attributes:
        alert_id: ``uuid5`` of sku, location, state and version: the same transition always has
            the same id, in either mode and on every rerun.
        sku: product.
        location: store or fulfillment center.
        state: ``STOCKOUT`` (available <= 0), ``LOW_STOCK`` (available <= reorder point) or
            ``RECOVERED`` (back above the reorder point).
        previous_state: the state before: ``OUT``, ``LOW``, ``OK`` or ``UNKNOWN`` (first event).
        available: available units after the event that caused the change.
        reorder_point: the threshold in force at that time.
        version: event time (epoch ms) of the event that caused the change.
    """

    alert_id: str
    sku: str
    location: str
    state: str
    previous_state: str
    available: int
    reorder_point: float
    version: int


class DemandForecast(NamedTuple):
    """Demand forecast of one sku at one location, made at the end of one day.

    Attributes:
        sku: product.
        location: fulfillment location of the ordered lines.
        day: the day (ISO date, UTC) whose sales close the series.
        units: units ordered that day.
        level: Holt level after that day.
        trend: Holt trend (units per day per day) after that day.
        forecast: expected units per day from the next day on (``max(0, level + trend)``).
        sigma: spread of daily demand used for safety stock (see ``forecast`` module).
        safety_stock: ``z * sigma * sqrt(lead_time_days)``.
        reorder_point: ``forecast * lead_time_days + safety_stock``.
        days_observed: days in the series so far (from the key's first day with sales).
        version: end of ``day`` (epoch ms, exclusive: the next midnight UTC).
        revision: 0 in batch; in streaming, grows each time the row is recomputed (early and
            late panes), so ``(version, revision)`` orders rows for the same day.
    """

    sku: str
    location: str
    day: str
    units: int
    level: float
    trend: float
    forecast: float
    sigma: float
    safety_stock: float
    reorder_point: float
    days_observed: int
    version: int
    revision: int = 0


for _row in (StockLevel, StockAlert, DemandForecast):
    coders.registry.register_coder(_row, coders.FastPrimitivesCoder)
