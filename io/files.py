"""Date-partitioned event files for backfills: Avro, Parquet or JSON lines, local or ``gs://``.

Layout (what ``backbone generate --out`` writes)::

    <root>/<event_type>/dt=YYYY-MM-DD/part-NNNNN.{avro,parquet,jsonl}

Example::

    read = p | "ReadEventFiles" >> ReadEventFiles(
        "data/backfill", pipeline="inventory", event_types=["inventory_adjusted", "order_placed"],
        start="2026-11-01", end="2026-11-08")
    read.events        # the same typed, event-timed Events as the Kafka path
    read.dead_letters  # unreadable lines or files, with file:line coordinates

Partitions outside ``[start, end)`` are pruned by their ``dt=`` path before the job starts (files
are listed at launch: a missing root fails fast), and events inside kept partitions are filtered
by their exact event time. Avro and Parquet files are self-describing; JSON lines go through the
same decoder as JSON Kafka payloads, against the subject's contract.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from retail_backbone.io.dead_letters import DEAD_LETTERS, Origin, dead_letter
from retail_backbone.io.events import (
    DEFAULT_MAX_BYTES,
    DecodeResult,
    EventRejected,
    RawRecord,
    _DecodeFn,
    event_from_record,
)

__all__ = ["FORMATS", "ReadEventFiles", "list_event_files"]

FORMATS = ("avro", "parquet", "jsonl")
_PARTITION = re.compile(r"/([a-z_]+)/dt=(\d{4}-\d{2}-\d{2})/[^/]+\.(avro|parquet|jsonl)$")


def _day(value: str | dt.date | None) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(value)


def list_event_files(
    root: str,
    event_types: Sequence[str] | None = None,
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    fmt: str | None = None,
) -> list[str]:
    """Files under ``root`` whose partition day is in ``[start, end)``, sorted.

    Raises:
        FileNotFoundError: nothing at ``root`` matches the layout.
    """
    start_day, end_day = _day(start), _day(end)
    base = root.rstrip("/")
    patterns = [f"{base}/{t}/dt=*/*" for t in (event_types or ["*"])]
    files = []
    for result in FileSystems.match(patterns):
        for meta in result.metadata_list:
            match = _PARTITION.search(meta.path)
            if not match:
                continue
            if fmt and match.group(3) != fmt:
                continue
            day = dt.date.fromisoformat(match.group(2))
            if (start_day and day < start_day) or (end_day and day >= end_day):
                continue
            files.append(meta.path)
    if not files and not FileSystems.match([f"{base}/*"])[0].metadata_list:
        raise FileNotFoundError(f"no event files under {root!r}")
    return sorted(files)


def _millis_of(day: dt.date | None) -> int | None:
    if day is None:
        return None
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)


class _ReadFileFn(beam.DoFn):
    """One file -> records (Avro, Parquet) or raw lines (JSONL); unreadable files dead-lettered."""

    RAW = "raw_lines"

    def __init__(self, pipeline: str, stage: str, start_ms: int | None, end_ms: int | None):
        self._pipeline = pipeline
        self._stage = stage
        self._start_ms = start_ms
        self._end_ms = end_ms
        self._read = Metrics.counter(pipeline, f"{stage}.records_read")
        self._pruned = Metrics.counter(pipeline, f"{stage}.outside_time_range")

    def _in_range(self, event_time_ms: int) -> bool:
        if self._start_ms is not None and event_time_ms < self._start_ms:
            return False
        return self._end_ms is None or event_time_ms < self._end_ms

    def process(self, path: str) -> Iterator[Any]:
        if path.endswith(".jsonl"):
            with FileSystems.open(path) as fh:
                for number, line in enumerate(fh, start=1):
                    line = line.rstrip(b"\n")
                    if line:
                        self._read.inc()
                        yield beam.pvalue.TaggedOutput(
                            self.RAW, RawRecord(line, Origin.file_line(path, number))
                        )
            return
        try:
            records = list(self._records(path))
        except Exception as exc:  # any reader failure means the whole file is unreadable
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTERS,
                dead_letter(
                    b"",
                    Origin.file_line(path, 0),
                    self._pipeline,
                    self._stage,
                    exc,
                    error_class="UnreadableFile",
                ),
            )
            return
        for number, record in enumerate(records, start=1):
            self._read.inc()
            origin = Origin.file_line(path, number)
            try:
                event = event_from_record(record, origin)
            except (EventRejected, KeyError, TypeError, ValueError) as exc:
                yield beam.pvalue.TaggedOutput(
                    DEAD_LETTERS,
                    dead_letter(
                        repr(record).encode()[:DEFAULT_MAX_BYTES],
                        origin,
                        self._pipeline,
                        self._stage,
                        exc,
                        error_class=getattr(exc, "reason", "SchemaMismatch"),
                    ),
                )
                continue
            if not self._in_range(event.event_time_ms):
                self._pruned.inc()
                continue
            yield beam.window.TimestampedValue(event, event.event_time_ms / 1000.0)

    @staticmethod
    def _records(path: str) -> Iterator[dict[str, Any]]:
        with FileSystems.open(path) as fh:
            if path.endswith(".avro"):
                import fastavro

                yield from fastavro.reader(fh)
            else:
                import pyarrow.parquet as pq

                table = pq.read_table(fh)
                # Only fields with a map inside need converting; the rest are as fastavro has them.
                maps = [f for f in table.schema if _has_map(f.type)]
                for row in table.to_pylist():
                    for f in maps:
                        row[f.name] = _maps_as_dicts(row[f.name], f.type)
                    yield row


def _has_map(arrow_type: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_map(arrow_type):
        return True
    if pa.types.is_struct(arrow_type):
        return any(_has_map(f.type) for f in arrow_type)
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return _has_map(arrow_type.value_type)
    return False


def _maps_as_dicts(value: Any, arrow_type: Any) -> Any:
    """Turn map values (lists of pairs in pyarrow 16) into dicts, as fastavro gives them."""
    import pyarrow as pa

    if value is None:
        return None
    if not _has_map(arrow_type):
        return value
    if pa.types.is_map(arrow_type):
        return {k: _maps_as_dicts(v, arrow_type.item_type) for k, v in value}
    if pa.types.is_struct(arrow_type):
        return {f.name: _maps_as_dicts(value[f.name], f.type) for f in arrow_type}
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return [_maps_as_dicts(v, arrow_type.value_type) for v in value]
    return value


class _RangeFilterFn(beam.DoFn):
    def __init__(self, pipeline: str, stage: str, start_ms: int | None, end_ms: int | None):
        self._start_ms, self._end_ms = start_ms, end_ms
        self._pruned = Metrics.counter(pipeline, f"{stage}.outside_time_range")

    def process(self, event: Any) -> Iterator[Any]:
        t = event.event_time_ms
        if (self._start_ms is not None and t < self._start_ms) or (
            self._end_ms is not None and t >= self._end_ms
        ):
            self._pruned.inc()
            return
        yield event


class ReadEventFiles(beam.PTransform):
    """Read date-partitioned event files into ``Event``s (see the module docstring).

    Args:
        root: folder holding ``<event_type>/dt=YYYY-MM-DD/`` partitions (local or ``gs://``).
        pipeline: pipeline name for dead letters and counters.
        event_types: only these event types (default: all found).
        start, end: keep events with ``start <= event_time < end`` (ISO dates, UTC).
        fmt: only files of this format (default: all of avro, parquet, jsonl).
    """

    def __init__(
        self,
        root: str,
        pipeline: str,
        event_types: Sequence[str] | None = None,
        start: str | dt.date | None = None,
        end: str | dt.date | None = None,
        fmt: str | None = None,
        label: str | None = None,
    ) -> None:
        super().__init__(label)
        if fmt is not None and fmt not in FORMATS:
            raise ValueError(f"fmt must be one of {FORMATS}, not {fmt!r}")
        self._pipeline = pipeline
        self._start_ms = _millis_of(_day(start))
        self._end_ms = _millis_of(_day(end))
        # Listed at launch: an empty or missing root fails before the job starts.
        self._files = list_event_files(root, event_types, start, end, fmt)

    @property
    def files(self) -> list[str]:
        return list(self._files)

    def expand(self, pbegin: beam.pvalue.PBegin) -> DecodeResult:
        stage = self.label or "ReadEventFiles"
        read = (
            pbegin
            | "ListFiles" >> beam.Create(self._files)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadFiles"
            >> beam.ParDo(
                _ReadFileFn(self._pipeline, stage, self._start_ms, self._end_ms)
            ).with_outputs(DEAD_LETTERS, _ReadFileFn.RAW, main="events")
        )
        decoded = read[_ReadFileFn.RAW] | "DecodeJsonLines" >> beam.ParDo(
            _DecodeFn(self._pipeline, stage, "json", None, DEFAULT_MAX_BYTES)
        ).with_outputs(DEAD_LETTERS, main="events")
        json_events = decoded.events | "JsonTimeRange" >> beam.ParDo(
            _RangeFilterFn(self._pipeline, stage, self._start_ms, self._end_ms)
        )
        events = (read.events, json_events) | "MergeEvents" >> beam.Flatten()
        dead = (read[DEAD_LETTERS], decoded[DEAD_LETTERS]) | "MergeDeadLetters" >> beam.Flatten()
        return DecodeResult(events=events, dead_letters=dead)
