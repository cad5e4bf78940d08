"""Typed events and their decoding from Confluent Avro or JSON, with dead letters for bad input.

Example::

    decoded = records | "DecodeEvents" >> DecodeEvents("inventory", fmt="avro",
                                                       registry_url="http://127.0.0.1:8085")
    decoded.events        # PCollection[Event], timestamped with the payload's event_time
    decoded.dead_letters  # PCollection[DeadLetter], one per record that could not be decoded

Input records need ``.value`` (bytes) and ``.origin`` (an ``Origin``): ``KafkaRecord`` from the
Kafka sources and ``RawRecord`` from line-oriented files both qualify.

Both paths give identical ``Event`` values for the same event: the JSON path converts plain JSON
(money as decimal strings, timestamps as epoch milliseconds) into the Python values fastavro gives
for the Avro path (``Decimal``, timezone-aware ``datetime``), guided by the subject's schema.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Mapping
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from retail_backbone.io.dead_letters import DEAD_LETTERS, Origin, dead_letter

__all__ = [
    "DecodeEvents",
    "DecodeResult",
    "Event",
    "EventRejected",
    "RawRecord",
    "event_from_record",
    "record_from_json",
]

MIN_EVENT_TIME_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_FUTURE_MS = 24 * 3600 * 1000
DEFAULT_MAX_BYTES = 1 << 20
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class RawRecord(NamedTuple):
    """An undecoded payload and where it came from."""

    value: bytes
    origin: Origin
    key: bytes | None = None


class Event(NamedTuple):
    """One decoded event: the standard envelope, typed, plus the domain payload.

    ``payload`` holds the subject's own fields (everything but the envelope) as fastavro returns
    them; domain transforms turn it into their own typed records.
    """

    event_id: str
    event_type: str
    event_time_ms: int
    ingest_time_ms: int
    source: str
    partition_key: str
    schema_subject: str
    schema_version: int
    trace_id: str | None
    attributes: dict[str, str]
    payload: dict[str, Any]
    origin: Origin


class EventRejected(ValueError):
    """A payload that decoded but breaks a rule; ``reason`` becomes the dead letter's class."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _millis(value: Any) -> int:
    if isinstance(value, dt.datetime):
        return (
            int((value - _EPOCH).total_seconds() * 1000)
            if value.tzinfo
            else int(value.replace(tzinfo=dt.UTC).timestamp() * 1000)
        )
    return int(value)


def event_from_record(
    record: Mapping[str, Any], origin: Origin, now_ms: int | None = None
) -> Event:
    """Build an ``Event`` from a decoded record (the envelope nested under ``envelope``).

    Raises:
        EventRejected: no envelope, or an event time before 2000 or more than a day ahead.
    """
    envelope = record.get("envelope")
    if not isinstance(envelope, Mapping):
        raise EventRejected("MissingField", "the record has no envelope")
    event_time_ms = _millis(envelope["event_time"])
    now_ms = now_ms if now_ms is not None else int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    if event_time_ms < MIN_EVENT_TIME_MS:
        raise EventRejected("event_time_out_of_range", f"event_time {event_time_ms} is before 2000")
    if event_time_ms > now_ms + MAX_FUTURE_MS:
        raise EventRejected(
            "event_time_out_of_range",
            f"event_time {event_time_ms} is more than a day after now ({now_ms})",
        )
    return Event(
        event_id=str(envelope["event_id"]),
        event_type=envelope["event_type"],
        event_time_ms=event_time_ms,
        ingest_time_ms=_millis(envelope["ingest_time"]),
        source=envelope["source"],
        partition_key=envelope["partition_key"],
        schema_subject=envelope["schema_subject"],
        schema_version=envelope["schema_version"],
        trace_id=envelope.get("trace_id"),
        attributes=dict(envelope.get("attributes") or {}),
        payload={k: v for k, v in record.items() if k != "envelope"},
        origin=origin,
    )


# -- plain JSON -> the values fastavro gives ---------------------------------------------------
#
# Written by hand because no library reads *plain* JSON against an Avro schema: fastavro's
# json_reader expects Avro's JSON encoding (unions wrapped as {"type": value}, bytes as
# code points), which is not what producers of JSON events send.


class _Mismatch(EventRejected):
    def __init__(self, path: str, message: str, reason: str = "SchemaMismatch") -> None:
        super().__init__(reason, f"{path or '/'}: {message}")


def _named_types(schema: Any, names: dict[str, Any]) -> None:
    if isinstance(schema, list):
        for branch in schema:
            _named_types(branch, names)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed"):
            ns = schema.get("namespace")
            name = schema["name"]
            names[name if "." in name or not ns else f"{ns}.{name}"] = schema
            names.setdefault(name, schema)
            for f in schema.get("fields", []):
                _named_types(f["type"], names)
        elif kind == "array":
            _named_types(schema["items"], names)
        elif kind == "map":
            _named_types(schema["values"], names)
        elif isinstance(kind, dict | list):
            _named_types(kind, names)


def _coerce(schema: Any, value: Any, path: str, names: dict[str, Any]) -> Any:
    if isinstance(schema, str) and schema in names:
        schema = names[schema]
    if isinstance(schema, list):
        if value is None and "null" in schema:
            return None
        for branch in schema:
            if branch == "null":
                continue
            try:
                return _coerce(branch, value, path, names)
            except _Mismatch:
                continue
        raise _Mismatch(path, f"{json.dumps(value)[:80]} matches no branch of {schema}")
    kind = schema if isinstance(schema, str) else schema["type"]
    if isinstance(kind, dict | list):
        return _coerce(kind, value, path, names)
    logical = schema.get("logicalType") if isinstance(schema, dict) else None
    if kind == "null":
        if value is not None:
            raise _Mismatch(path, "expected null")
        return None
    if kind == "boolean":
        if not isinstance(value, bool):
            raise _Mismatch(path, f"expected a boolean, got {type(value).__name__}")
        return value
    if kind in ("int", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Mismatch(path, f"expected an integer, got {json.dumps(value)[:40]}")
        if logical in ("timestamp-millis", "timestamp-micros"):
            scale = 1000 if logical == "timestamp-millis" else 1_000_000
            return _EPOCH + dt.timedelta(microseconds=value * (1_000_000 // scale))
        if logical == "date":
            return dt.date(1970, 1, 1) + dt.timedelta(days=value)
        return value
    if kind in ("float", "double"):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _Mismatch(path, f"expected a number, got {json.dumps(value)[:40]}")
        return float(value)
    if kind == "string":
        if not isinstance(value, str):
            raise _Mismatch(path, f"expected a string, got {type(value).__name__}")
        return value
    if kind in ("bytes", "fixed"):
        if logical == "decimal":
            try:
                number = Decimal(str(value)) if isinstance(value, str | int) else None
            except InvalidOperation:
                number = None
            if number is None or not number.is_finite():
                raise _Mismatch(path, f"expected a decimal string, got {json.dumps(value)[:40]}")
            return number.quantize(Decimal(1).scaleb(-int(schema.get("scale", 0))))
        if not isinstance(value, str):
            raise _Mismatch(path, "expected bytes as a latin-1 string")
        return value.encode("latin-1")
    if kind == "enum":
        if value in schema["symbols"]:
            return value
        if "default" in schema:
            return schema["default"]
        raise _Mismatch(path, f"{json.dumps(value)[:40]} is not one of {schema['symbols']}")
    if kind == "array":
        if not isinstance(value, list):
            raise _Mismatch(path, "expected an array")
        return [_coerce(schema["items"], v, f"{path}[{i}]", names) for i, v in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            raise _Mismatch(path, "expected an object (map)")
        return {k: _coerce(schema["values"], v, f"{path}{{{k}}}", names) for k, v in value.items()}
    if kind in ("record", "error"):
        if not isinstance(value, dict):
            raise _Mismatch(path, "expected an object (record)")
        out = {}
        for f in schema["fields"]:
            fpath = f"{path}/{f['name']}"
            if f["name"] in value:
                out[f["name"]] = _coerce(f["type"], value[f["name"]], fpath, names)
            elif "default" in f:
                out[f["name"]] = _coerce(f["type"], f["default"], fpath, names)
            else:
                raise _Mismatch(fpath, "required field is missing", reason="MissingField")
        return out
    raise _Mismatch(path, f"unsupported schema type {kind!r}")


@lru_cache(maxsize=64)
def _schema_names(schema_json: str) -> tuple[Any, dict[str, Any]]:
    schema = json.loads(schema_json)
    names: dict[str, Any] = {}
    _named_types(schema, names)
    return schema, names


def record_from_json(schema_json: str, doc: Any) -> dict[str, Any]:
    """Convert a plain-JSON event into the record fastavro would give for ``schema_json``.

    Raises:
        EventRejected: ``MissingField`` or ``SchemaMismatch`` with the field path.
    """
    schema, names = _schema_names(schema_json)
    return _coerce(schema, doc, "", names)


# -- the transform ------------------------------------------------------------------------------


class DecodeResult(NamedTuple):
    """Named outputs (a NamedTuple, so Beam records both as outputs of the composite)."""

    events: beam.PCollection
    dead_letters: beam.PCollection


class _DecodeFn(beam.DoFn):
    """Bytes -> Event (timestamped by event time), or a dead letter naming the reason."""

    def __init__(
        self,
        pipeline: str,
        stage: str,
        fmt: str,
        registry_url: str | None,
        max_bytes: int,
    ) -> None:
        self._pipeline = pipeline
        self._stage = stage
        self._fmt = fmt
        self._registry_url = registry_url
        self._max_bytes = max_bytes
        self._decoded = Metrics.counter(pipeline, f"{stage}.decoded")
        self._readers: dict[str | None, Any] = {}
        self._client = None

    def setup(self) -> None:
        if self._fmt == "avro":
            from retail_backbone.schemas.serde import RegistryClient, SchemaCache

            self._client = RegistryClient(self._registry_url)
            self._cache = SchemaCache(self._client)

    def teardown(self) -> None:
        if self._client is not None:
            self._client.close()

    def _deserializer(self, topic: str | None):
        from retail_backbone.schemas.serde import AvroDeserializer

        reader = self._readers.get(topic)
        if reader is None:
            reader = AvroDeserializer(
                reader_schema=_reader_schema_for_topic(topic),
                max_bytes=self._max_bytes,
                cache=self._cache,
            )
            self._readers[topic] = reader
        return reader

    def _decode(self, rec: Any) -> dict[str, Any]:
        from retail_backbone.schemas.serde import DecodeError

        data = rec.value
        if self._fmt == "avro":
            try:
                record, _ = self._deserializer(rec.origin.topic).deserialize(data)
            except DecodeError as exc:
                raise EventRejected(type(exc).__name__, str(exc)) from exc
            return record
        if len(data) > self._max_bytes:
            raise EventRejected(
                "PayloadTooLarge", f"payload of {len(data)} bytes exceeds {self._max_bytes}"
            )
        try:
            doc = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise EventRejected("InvalidJson", f"not JSON: {exc}") from exc
        envelope = doc.get("envelope") if isinstance(doc, dict) else None
        event_type = envelope.get("event_type") if isinstance(envelope, dict) else None
        if not isinstance(event_type, str):
            raise EventRejected("MissingField", "/envelope/event_type: required field is missing")
        schema = _schema_for_event_type(event_type)
        if schema is None:
            raise EventRejected("UnknownEventType", f"no contract for event type {event_type!r}")
        return record_from_json(schema, doc)

    def process(self, rec: Any) -> Iterator[Any]:
        try:
            event = event_from_record(self._decode(rec), rec.origin)
        except (KeyError, TypeError, ValueError) as exc:
            # EventRejected names its reason; anything else is an envelope field of the wrong shape.
            reason = exc.reason if isinstance(exc, EventRejected) else "SchemaMismatch"
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTERS,
                dead_letter(
                    rec.value,
                    rec.origin,
                    self._pipeline,
                    self._stage,
                    exc,
                    error_class=reason,
                    # A replayed payload that fails again counts one more attempt.
                    attempt=getattr(rec, "attempt", 1),
                    first_seen_ms=getattr(rec, "first_seen_ms", None),
                ),
            )
            return
        self._decoded.inc()
        yield beam.window.TimestampedValue(event, event.event_time_ms / 1000.0)


@lru_cache(maxsize=64)
def _schema_for_event_type(event_type: str) -> str | None:
    from retail_backbone.schemas.catalog import load_catalog

    for subject in load_catalog():
        if subject.folder == event_type and subject.is_event:
            return subject.texts[-1]
    return None


def _reader_schema_for_topic(topic: str | None) -> str | None:
    """The latest contract for a ``retail.<event_type>`` topic; None reads with the writer's."""
    from retail_backbone.schemas.catalog import TOPIC_PREFIX

    if topic and topic.startswith(TOPIC_PREFIX):
        return _schema_for_event_type(topic[len(TOPIC_PREFIX) :])
    return None


class DecodeEvents(beam.PTransform):
    """Decode Kafka or file records into ``Event``s; failures become ``DeadLetter``s.

    Args:
        pipeline: pipeline name, recorded on dead letters and counters.
        fmt: ``avro`` (Confluent wire format through the registry) or ``json``.
        registry_url: schema registry base URL (``avro`` only).
        max_bytes: larger payloads are dead-lettered (default 1 MiB).
    """

    def __init__(
        self,
        pipeline: str,
        fmt: str = "avro",
        registry_url: str | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        label: str | None = None,
    ) -> None:
        super().__init__(label)
        if fmt not in ("avro", "json"):
            raise ValueError(f"fmt must be 'avro' or 'json', not {fmt!r}")
        if fmt == "avro" and not registry_url:
            raise ValueError("Avro decoding needs registry_url")
        self._pipeline = pipeline
        self._fmt = fmt
        self._registry_url = registry_url
        self._max_bytes = max_bytes

    def expand(self, records: beam.PCollection) -> DecodeResult:
        stage = self.label or "DecodeEvents"
        out = records | "Decode" >> beam.ParDo(
            _DecodeFn(self._pipeline, stage, self._fmt, self._registry_url, self._max_bytes)
        ).with_outputs(DEAD_LETTERS, main="events")
        return DecodeResult(events=out.events, dead_letters=out[DEAD_LETTERS])
