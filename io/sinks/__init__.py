"""Idempotent, versioned sinks: one contract (``base``), one module per store.

Example::

    from retail_backbone.io.sinks.postgres import STOCK_LEVELS, WriteToPostgresVersioned

    failed = levels | "WriteStockLevels" >> WriteToPostgresVersioned(
        "env:INVENTORY_PG_DSN", STOCK_LEVELS, pipeline="inventory")
"""
