"""Deduplicate events by ``event_id``, the same way in streaming and batch.

Example::

    unique = events | "Deduplicate" >> DeduplicateEvents(mode="streaming", ttl_seconds=24 * 3600)

Both modes emit exactly one event per ``event_id`` and count the rest as duplicates
(``dedup/duplicates``), so the same input gives the same output set in either mode.

- batch: a distinct per key through ``CombinePerKey`` (combiner lifting: duplicates collapse
  before the shuffle); the kept copy is the earliest ingested (ties: lowest origin), so reruns keep
  the same copy.
- streaming: keep the first copy to arrive. The ids seen are kept in state for ``ttl_seconds`` of
  event time (rounded up to a bucket), then dropped by an event-time timer; a duplicate arriving
  after that is not caught. Apply it in the global window, before any windowing.

Why state is keyed by (shard, event-time bucket): a stateful DoFn keyed by ``event_id`` touches
state once per element, the slowest design on the portable runners (DESIGN.md: ~700 events/s at
100k keys). Copies of one event carry the same event time, so keying by ``hash(event_id) %
shards`` and ``event_time // bucket`` still puts every copy under one key, and a bucket's state
expires as a whole. Every key a bundle touches costs a fixed ~1 ms in the Python SDK (its state
cache weighs each write with ``objsize``, which scans all loaded modules; the ids are a
``SeenIds``, weighed in O(1), see ``transforms/state_values.py``), so keys must be few:
4 shards x 1 h buckets replays three days of history at ~20k events/s on the direct runner,
where 8 x 5 min ran at ~3k. Within a key, ids live in an open set plus sealed chunks so a bundle
writes only its new ids (see ``_StreamingDedupFn``). Memory: the ids of ``ttl / bucket + 1``
buckets.
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
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.utils.timestamp import Timestamp

from retail_backbone.io.events import Event
from retail_backbone.transforms.state_values import SeenIds

__all__ = ["DeduplicateEvents"]

_NAMESPACE = "dedup"


def _shard(event_id: str, shards: int) -> int:
    return zlib.crc32(event_id.encode()) % shards


def _state_key(event: Event, shards: int, bucket_ms: int) -> str:
    # A str key: every runner has a standard coder for it (Prism rejects pickled tuple keys).
    return f"{_shard(event.event_id, shards)}#{event.event_time_ms // bucket_ms}"


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
    """Per (shard, bucket): the ids seen, as a small open set plus sealed chunks.

    Writing the whole id set back every bundle costs time proportional to everything seen
    (0.3 s per million ids to pickle). Instead new ids go to an open set (``RECENT``, rewritten
    per bundle but at most ``chunk_ids`` long) which is sealed into the append-only ``SEALED``
    bag when full, so a bundle writes O(new ids). All state of a bucket is dropped by one
    event-time timer.
    """

    RECENT = ReadModifyWriteStateSpec("recent", PickleCoder())
    SEALED = BagStateSpec("sealed", PickleCoder())
    PRUNE = TimerSpec("prune", TimeDomain.WATERMARK)

    def __init__(self, ttl_ms: int, bucket_ms: int, chunk_ids: int) -> None:
        self._ttl_ms = ttl_ms
        self._bucket_ms = bucket_ms
        self._chunk_ids = chunk_ids
        self._unique = Metrics.counter(_NAMESPACE, "unique")
        self._duplicates = Metrics.counter(_NAMESPACE, "duplicates")

    def process(
        self,
        element: tuple[str, Event],
        recent_state=beam.DoFn.StateParam(RECENT),
        sealed_state=beam.DoFn.StateParam(SEALED),
        prune=beam.DoFn.TimerParam(PRUNE),
    ) -> Iterator[Event]:
        _, event = element
        recent: SeenIds | None = recent_state.read()
        if recent is None:
            recent = SeenIds()
            # Forget this bucket once the watermark is a TTL past its end.
            bucket = event.event_time_ms // self._bucket_ms
            expiry_ms = (bucket + 1) * self._bucket_ms + self._ttl_ms
            prune.set(Timestamp(micros=expiry_ms * 1000))
        event_id = event.event_id
        if event_id in recent or any(event_id in chunk for chunk in sealed_state.read()):
            self._duplicates.inc()
            return
        recent.add(event_id)
        if len(recent) >= self._chunk_ids:
            sealed_state.add(recent)
            recent = SeenIds()
        recent_state.write(recent)
        self._unique.inc()
        yield event

    @on_timer(PRUNE)
    def _prune(
        self,
        recent_state=beam.DoFn.StateParam(RECENT),
        sealed_state=beam.DoFn.StateParam(SEALED),
    ) -> Iterator[Event]:
        recent_state.clear()
        sealed_state.clear()
        yield from ()


class DeduplicateEvents(beam.PTransform):
    """Drop repeated ``event_id``s; see the module docstring for the two modes.

    Args:
        mode: ``streaming`` or ``batch``.
        ttl_seconds: streaming only: how long (event time) an id is remembered. Default 24 h.
        shards: streaming only: hash shards of the ids (parallelism of the step). Default 4.
        bucket_seconds: streaming only: event-time bucket of one state cell. Default 3600.
        chunk_ids: streaming only: ids per sealed state chunk. Default 20,000.
    """

    def __init__(
        self,
        mode: str,
        ttl_seconds: int = 24 * 3600,
        shards: int = 4,
        bucket_seconds: int = 3600,
        chunk_ids: int = 20_000,
        label: str | None = None,
    ) -> None:
        super().__init__(label)
        if mode not in ("streaming", "batch"):
            raise ValueError(f"mode must be 'streaming' or 'batch', not {mode!r}")
        if min(ttl_seconds, shards, bucket_seconds, chunk_ids) <= 0:
            raise ValueError("ttl_seconds, shards, bucket_seconds and chunk_ids must be positive")
        self._chunk_ids = chunk_ids
        self._mode = mode
        self._ttl_ms = ttl_seconds * 1000
        self._shards = shards
        self._bucket_ms = bucket_seconds * 1000

    def expand(self, events: beam.PCollection) -> beam.PCollection:
        if self._mode == "batch":
            return (
                events
                | "KeyByEventId" >> beam.Map(lambda e: (e.event_id, e))
                | "KeepOnePerId" >> beam.CombinePerKey(_KeepOneCombineFn())
                | "EmitKept" >> beam.ParDo(_EmitKeptFn()).with_output_types(Event)
            )
        shards, bucket_ms = self._shards, self._bucket_ms
        return (
            events
            | "KeyByShardAndBucket"
            >> beam.Map(lambda e: (_state_key(e, shards, bucket_ms), e)).with_output_types(
                beam.typehints.KV[str, Event]
            )
            | "DropSeen"
            >> beam.ParDo(
                _StreamingDedupFn(self._ttl_ms, bucket_ms, self._chunk_ids)
            ).with_output_types(Event)
        )
