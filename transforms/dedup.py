"""Deduplicate events by ``event_id``, the same way in streaming and batch.

Example::

    unique = events | "Deduplicate" >> DeduplicateEvents(mode="streaming", ttl_seconds=24 * 3600)

Both modes emit exactly one event per ``event_id`` and count the rest as duplicates
(``dedup/duplicates``), so the same input gives the same output set in either mode.

- batch: a distinct per key through ``CombinePerKey`` (combiner lifting: duplicates collapse
  before the shuffle); the kept copy is the earliest ingested (ties: lowest origin), so reruns keep
  the same copy.
- streaming: keep the first copy to arrive. The ids seen are kept in state for ``ttl_seconds`` of
  event time, then pruned by an event-time timer; a duplicate arriving after that is not caught.
  Apply it in the global window, before any windowing.

Why state is sharded: a stateful DoFn keyed by ``event_id`` touches state once per element, which
is the slowest design on the portable runners (see DESIGN.md: ~700 events/s at 100k keys). Keying
by ``hash(event_id) % shards`` instead keeps one small dict per shard; the SDK reads and writes a
key's state once per bundle, so state cost is per shard per bundle. Memory: every id seen within
the TTL, spread over the shards.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.utils.timestamp import Timestamp

from retail_backbone.io.events import Event

__all__ = ["DeduplicateEvents"]

_NAMESPACE = "dedup"


def _shard(event_id: str, shards: int) -> int:
    return zlib.crc32(event_id.encode()) % shards


def _keep_first(a: Event, b: Event) -> Event:
    return min(a, b, key=lambda e: (e.ingest_time_ms, str(e.origin)))


class _KeepOneCombineFn(beam.CombineFn):
    """Distinct per key: keeps one event and counts what it dropped."""

    def create_accumulator(self) -> tuple[Event | None, int]:
        return (None, 0)

    def add_input(self, acc: tuple[Event | None, int], event: Event) -> tuple[Event | None, int]:
        kept, seen = acc
        return (event if kept is None else _keep_first(kept, event), seen + 1)

    def merge_accumulators(self, accs) -> tuple[Event | None, int]:
        kept, seen = None, 0
        for other, count in accs:
            seen += count
            if other is not None:
                kept = other if kept is None else _keep_first(kept, other)
        return (kept, seen)

    def extract_output(self, acc: tuple[Event | None, int]) -> tuple[Event | None, int]:
        return acc


class _EmitKeptFn(beam.DoFn):
    def __init__(self) -> None:
        self._unique = Metrics.counter(_NAMESPACE, "unique")
        self._duplicates = Metrics.counter(_NAMESPACE, "duplicates")

    def process(self, element: tuple[str, tuple[Event, int]]) -> Iterator[Any]:
        _, (event, seen) = element
        self._unique.inc()
        if seen > 1:
            self._duplicates.inc(seen - 1)
        yield beam.window.TimestampedValue(event, event.event_time_ms / 1000.0)


class _StreamingDedupFn(beam.DoFn):
    """Per shard: ``{event_id: expiry_ms}`` in one state cell, pruned by an event-time timer."""

    SEEN = ReadModifyWriteStateSpec("seen", PickleCoder())
    PRUNE = TimerSpec("prune", TimeDomain.WATERMARK)

    def __init__(self, ttl_ms: int) -> None:
        self._ttl_ms = ttl_ms
        self._unique = Metrics.counter(_NAMESPACE, "unique")
        self._duplicates = Metrics.counter(_NAMESPACE, "duplicates")

    def process(
        self,
        element: tuple[int, Event],
        seen_state=beam.DoFn.StateParam(SEEN),
        prune=beam.DoFn.TimerParam(PRUNE),
    ) -> Iterator[Event]:
        _, event = element
        seen: dict[str, int] = seen_state.read() or {}
        if event.event_id in seen:
            self._duplicates.inc()
            return
        expiry = event.event_time_ms + self._ttl_ms
        first = not seen
        seen[event.event_id] = expiry
        seen_state.write(seen)
        if first:
            prune.set(Timestamp(micros=expiry * 1000))
        self._unique.inc()
        yield event

    @on_timer(PRUNE)
    def _prune(
        self,
        fired=beam.DoFn.TimestampParam,
        seen_state=beam.DoFn.StateParam(SEEN),
        prune=beam.DoFn.TimerParam(PRUNE),
    ) -> Iterator[Event]:
        now_ms = fired.micros // 1000
        seen = {k: v for k, v in (seen_state.read() or {}).items() if v > now_ms}
        if seen:
            seen_state.write(seen)
            prune.set(Timestamp(micros=min(seen.values()) * 1000))
        else:
            seen_state.clear()
        yield from ()


class DeduplicateEvents(beam.PTransform):
    """Drop repeated ``event_id``s; see the module docstring for the two modes.

    Args:
        mode: ``streaming`` or ``batch``.
        ttl_seconds: streaming only: how long (event time) an id is remembered. Default 24 h.
        shards: streaming only: state shards (parallelism of the dedup step). Default 32.
    """

    def __init__(
        self,
        mode: str,
        ttl_seconds: int = 24 * 3600,
        shards: int = 32,
        label: str | None = None,
    ) -> None:
        super().__init__(label)
        if mode not in ("streaming", "batch"):
            raise ValueError(f"mode must be 'streaming' or 'batch', not {mode!r}")
        if ttl_seconds <= 0 or shards <= 0:
            raise ValueError("ttl_seconds and shards must be positive")
        self._mode = mode
        self._ttl_ms = ttl_seconds * 1000
        self._shards = shards

    def expand(self, events: beam.PCollection) -> beam.PCollection:
        if self._mode == "batch":
            return (
                events
                | "KeyByEventId" >> beam.Map(lambda e: (e.event_id, e))
                | "KeepOnePerId" >> beam.CombinePerKey(_KeepOneCombineFn())
                | "EmitKept" >> beam.ParDo(_EmitKeptFn()).with_output_types(Event)
            )
        shards = self._shards
        return (
            events
            | "KeyByShard" >> beam.Map(lambda e: (_shard(e.event_id, shards), e))
            | "DropSeen" >> beam.ParDo(_StreamingDedupFn(self._ttl_ms)).with_output_types(Event)
        )
