"""Row types of the backbone's serving tables, shared by every store that holds them.

Example::

    from retail_backbone.io.sinks.rows import StockLevelRow

    row = StockLevelRow("SKU-1", "STORE-7", on_hand=12, reserved=2, available=10,
                        version=1_764_000_000_000, updated_at=event_time, movements_applied=7)

Every row carries its ``version`` (event time in ms or a source LSN): the sinks keep the newest
version per key. Rows that streaming can refine without a newer event (late data within the
allowed lateness) also carry a tie-breaker (``movements_applied``, ``revision``): of two rows with
one version, the higher tie-breaker wins. Fields come from the data only (``updated_at`` is the
event time, never ``now()``), so a replay writes identical bytes.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

__all__ = ["DemandForecastRow", "StockAlertRow", "StockLevelRow"]


class StockLevelRow(NamedTuple):
    """Current stock of one sku at one location."""

    sku: str
    location: str
    on_hand: int
    reserved: int
    available: int
    version: int
    updated_at: dt.datetime
    movements_applied: int


class StockAlertRow(NamedTuple):
    """An alert (e.g. below reorder point); append-only, ``alert_id`` is deterministic."""

    alert_id: str
    sku: str
    location: str
    kind: str
    available: int
    reorder_point: float
    version: int


class DemandForecastRow(NamedTuple):
    """Forecast demand of one sku at one location for one day."""

    sku: str
    location: str
    day: dt.date
    forecast: float
    trend: float
    safety_stock: float
    reorder_point: float
    version: int
    revision: int = 0
