"""The dead-letter record: what could not be processed, where it came from and why.

Every fallible step sends failures here instead of raising or dropping them, so a run can account
for its input (in = out + dead letters). One record type for every stage of every pipeline; its
Avro contract is ``schemas/dead_letter/`` (latest version; subject ``retail.common.DeadLetter``).
Rows a sink could not write have origin ``SINK`` (``Origin.for_sink("postgres:stock_levels")``):
their payload is the row as JSON, and ``backbone dlq replay`` writes it into that sink again.

Example::

    try:
        ...
    except ValueError as exc:
        yield beam.pvalue.TaggedOutput(
            DEAD_LETTERS, dead_letter(raw, origin, "inventory", "ParseAdjustment", exc)
        )

Sinks: ``WriteDeadLetters`` (``retail_backbone.io.dead_letter_sinks``) writes them to the Kafka
topic ``dlq.<pipeline>`` and to date-partitioned files.
"""

from __future__ import annotations

import json
import time
import traceback as tb
from typing import Any, NamedTuple

from apache_beam.metrics import Metrics

__all__ = [
    "DEAD_LETTERS",
    "TRACEBACK_LIMIT",
    "DeadLetter",
    "Origin",
    "count_dead_letter",
    "dead_letter",
    "dlq_topic",
]

#: The tag of every dead-letter side output.
DEAD_LETTERS = "dead_letters"
TRACEBACK_LIMIT = 4000


def dlq_topic(pipeline: str) -> str:
    return f"dlq.{pipeline}"


class Origin(NamedTuple):
    """Where a payload entered the backbone."""

    kind: str  # KAFKA | FILE | CDC | INTERNAL | SINK
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    file: str | None = None
    line: int | None = None
    lsn: str | None = None
    #: ``SINK``: ``<store>:<table>`` the row was being written to (``SinkTarget.address``).
    sink: str | None = None

    @classmethod
    def kafka(cls, topic: str, partition: int, offset: int) -> Origin:
        return cls("KAFKA", topic=topic, partition=partition, offset=offset)

    @classmethod
    def file_line(cls, path: str, line: int) -> Origin:
        return cls("FILE", file=path, line=line)

    @classmethod
    def for_sink(cls, address: str) -> Origin:
        """A row that the sink ``address`` (``<store>:<table>``) could not write."""
        return cls("SINK", sink=address)

    def __str__(self) -> str:
        if self.kind == "KAFKA":
            return f"{self.topic}/{self.partition}/{self.offset}"
        if self.kind == "FILE":
            return f"{self.file}:{self.line}"
        if self.kind == "CDC":
            return f"lsn {self.lsn}"
        if self.kind == "SINK":
            return f"sink {self.sink}"
        return "internal"


class DeadLetter(NamedTuple):
    """One failed record. Field meanings are documented in the Avro contract."""

    payload: bytes
    origin: Origin
    pipeline: str
    stage: str
    error_class: str
    message: str
    traceback: str = ""
    attempt: int = 1
    first_seen_ms: int = 0
    last_seen_ms: int = 0
    event_id: str | None = None
    event_time_ms: int | None = None

    def to_avro(self) -> dict[str, Any]:
        """The record in the shape of ``retail.common.DeadLetter``."""
        o = self.origin
        return {
            "payload": self.payload,
            "source_kind": o.kind,
            "topic": o.topic,
            "partition": o.partition,
            "offset": o.offset,
            "file": o.file,
            "line": o.line,
            "lsn": o.lsn,
            "sink": o.sink,
            "pipeline": self.pipeline,
            "stage": self.stage,
            "error_class": self.error_class,
            "message": self.message,
            "traceback": self.traceback,
            "attempt": self.attempt,
            "first_seen": self.first_seen_ms,
            "last_seen": self.last_seen_ms,
            "event_id": self.event_id,
            "event_time": self.event_time_ms,
        }

    @classmethod
    def from_avro(cls, record: dict[str, Any]) -> DeadLetter:
        def millis(value: Any) -> int | None:
            # fastavro returns timestamp-millis as aware datetimes.
            if value is None or isinstance(value, int):
                return value
            return int(value.timestamp() * 1000)

        return cls(
            payload=record["payload"],
            origin=Origin(
                record["source_kind"],
                record.get("topic"),
                record.get("partition"),
                record.get("offset"),
                record.get("file"),
                record.get("line"),
                record.get("lsn"),
                record.get("sink"),
            ),
            pipeline=record["pipeline"],
            stage=record["stage"],
            error_class=record["error_class"],
            message=record["message"],
            traceback=record.get("traceback", ""),
            attempt=record.get("attempt", 1),
            first_seen_ms=millis(record["first_seen"]),
            last_seen_ms=millis(record["last_seen"]),
            event_id=record.get("event_id"),
            event_time_ms=millis(record.get("event_time")),
        )

    def to_json(self) -> str:
        """One JSON line for the file sink (payload as latin-1 text so bytes round-trip)."""
        doc = self.to_avro()
        doc["payload"] = self.payload.decode("latin-1")
        return json.dumps(doc, sort_keys=True)

    @classmethod
    def from_json(cls, line: str | bytes) -> DeadLetter:
        doc = json.loads(line)
        doc["payload"] = doc["payload"].encode("latin-1")
        return cls.from_avro(doc)


def dead_letter(
    payload: bytes,
    origin: Origin,
    pipeline: str,
    stage: str,
    error: BaseException | str,
    *,
    error_class: str | None = None,
    event_id: str | None = None,
    event_time_ms: int | None = None,
    attempt: int = 1,
    first_seen_ms: int | None = None,
) -> DeadLetter:
    """Build a dead letter from an exception (with a bounded traceback) or a reason string.

    ``error_class`` defaults to the exception's class name; give it for reason codes such as
    ``late`` or ``sink_unavailable``.
    """
    now = int(time.time() * 1000)
    if isinstance(error, BaseException):
        message = str(error)
        trace = "".join(tb.format_exception(error))[-TRACEBACK_LIMIT:]
        error_class = error_class or type(error).__name__
    else:
        message, trace = error, ""
        error_class = error_class or "error"
    letter = DeadLetter(
        payload=payload,
        origin=origin,
        pipeline=pipeline,
        stage=stage,
        error_class=error_class,
        message=message,
        traceback=trace,
        attempt=attempt,
        first_seen_ms=first_seen_ms or now,
        last_seen_ms=now,
        event_id=event_id,
        event_time_ms=event_time_ms,
    )
    count_dead_letter(letter)
    return letter


def count_dead_letter(letter: DeadLetter) -> None:
    """Count a dead letter per stage and per stage+error class (namespace ``dead_letters``)."""
    Metrics.counter("dead_letters", letter.stage).inc()
    Metrics.counter("dead_letters", f"{letter.stage}.{letter.error_class}").inc()
