"""Helpers for tests of pipelines built on retail-backbone (shipped with the library).

Example::

    from retail_backbone.testing import make_event

    e = make_event("order_placed", event_time_ms=1_764_000_000_000, payload={"order_id": "o-1"})
"""

from __future__ import annotations

import uuid
from typing import Any

from retail_backbone.io.dead_letters import Origin
from retail_backbone.io.events import Event

__all__ = ["make_event"]


def make_event(
    event_type: str = "product_viewed",
    *,
    event_id: str | None = None,
    event_time_ms: int = 1_764_000_000_000,
    ingest_time_ms: int | None = None,
    partition_key: str = "k",
    payload: dict[str, Any] | None = None,
    origin: Origin | None = None,
) -> Event:
    """An ``Event`` with sensible defaults; every argument can be overridden."""
    return Event(
        event_id=event_id or str(uuid.uuid4()),
        event_type=event_type,
        event_time_ms=event_time_ms,
        ingest_time_ms=ingest_time_ms if ingest_time_ms is not None else event_time_ms + 50,
        source="WEB",
        partition_key=partition_key,
        schema_subject=f"retail.{event_type}-value",
        schema_version=1,
        trace_id=None,
        attributes={},
        payload=payload or {},
        origin=origin or Origin("INTERNAL"),
    )
