"""Mode-agnostic inventory transforms: stock ledger, stock alerts, demand forecast (issue #5).

Example::

    from retail_backbone.transforms.inventory import (
        DetectStockouts, ForecastDemand, UpdateStockLedger, WindowingOptions)

    opts = WindowingOptions(mode="streaming", early_firing_seconds=10)
    ledger = events | "UpdateStockLedger" >> UpdateStockLedger("streaming", windowing=opts)
    demand = events | "ForecastDemand" >> ForecastDemand("streaming", windowing=opts)
    alerts = {"events": events, "forecasts": demand.forecasts} | "DetectStockouts" >> (
        DetectStockouts("streaming", windowing=opts))

Modules: ``ledger`` (``UpdateStockLedger``), ``stockouts`` (``DetectStockouts``), ``forecast``
(``ForecastDemand``), ``windowing`` (the per-mode windowing/trigger wrapper and late-data dead
letters), ``types`` (``StockLevel``, ``StockAlert``, ``DemandForecast``).
"""

from retail_backbone.transforms.inventory.forecast import ForecastDemand, ForecastResult
from retail_backbone.transforms.inventory.ledger import LedgerResult, UpdateStockLedger
from retail_backbone.transforms.inventory.stockouts import DetectStockouts, StockoutResult
from retail_backbone.transforms.inventory.types import DemandForecast, StockAlert, StockLevel
from retail_backbone.transforms.inventory.windowing import (
    DropLateData,
    WindowForMode,
    WindowingOptions,
)

__all__ = [
    "DemandForecast",
    "DetectStockouts",
    "DropLateData",
    "ForecastDemand",
    "ForecastResult",
    "LedgerResult",
    "StockAlert",
    "StockLevel",
    "StockoutResult",
    "UpdateStockLedger",
    "WindowForMode",
    "WindowingOptions",
]
