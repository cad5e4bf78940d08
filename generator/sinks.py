"""Where generated events go: date-partitioned files for backfills, or Kafka with the registry.

Example::

    stream = generate_events(cfg)
    write_files(stream, "out/backfill", "parquet")
    # or
    produce_to_kafka(generate_events(cfg), "127.0.0.1:9092", "http://127.0.0.1:8085", rate=2_000)
    # and the legacy ERP's starting state (implemented in ``legacy_erp``, re-exported here)
    seed_legacy_erp(stream.world, "host=127.0.0.1 port=5432 user=backbone dbname=backbone")

File layout: ``<out>/<event_type>/dt=YYYY-MM-DD/part-00000.<ext>``, partitioned by the UTC date of
``envelope.event_time``; one part file per event type and day. Formats:

- ``avro``: Avro object container files with the subject's latest schema (fastavro; codec
  ``null`` by default, ``deflate``/``snappy``/... on request). The sync marker is derived from the
  path, so equal inputs give byte-identical files.
- ``parquet``: one column per top-level schema field, nested exactly like the Avro record: the
  envelope is a struct column ``envelope`` (``envelope.event_time`` ...), order lines are
  ``list<struct>``, maps are ``map<string,string>``. Mirroring the Avro shape means a backfill reads
  Avro and Parquet rows into the same dicts; engines that prefer flat columns select
  ``envelope.event_time`` etc. Types: decimal(12,2) -> ``decimal128(12, 2)``, timestamp-millis ->
  ``timestamp[ms, tz=UTC]``, uuid and enums -> string; Avro non-null fields are non-nullable.
- ``jsonl``: one JSON object per line, keys in schema order, money as strings (``"12.34"``),
  timestamps as epoch milliseconds, UUIDs as strings, UTF-8.

The files are complete when ``write_files`` returns; events must arrive in event-time order
(a day's files are closed when the next day starts), which ``generate_events`` guarantees.

Kafka: topic ``retail.<event_type>``, key = ``envelope.partition_key``, value = Confluent wire
format (magic byte 0, 4-byte schema id, Avro binary) from confluent-kafka's ``AvroSerializer``
against the registry; idempotent producer (``enable.idempotence``, ``acks=all``). The Kafka
timestamp of each record is its ``event_time``, and topics this sink creates keep records forever
(``retention.ms=-1``) so that past days survive the broker's time-based retention.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO

import fastavro
import fastavro.write
import pyarrow as pa
import pyarrow.parquet as pq

from retail_backbone.generator.config import DAY_MS
from retail_backbone.generator.contracts import Contract, contracts
from retail_backbone.generator.legacy_erp import ErpSummary, seed_legacy_erp
from retail_backbone.generator.world import World

__all__ = [
    "FORMATS",
    "ErpSummary",
    "FileSummary",
    "KafkaSinkError",
    "KafkaSummary",
    "arrow_schema",
    "produce_to_kafka",
    "seed_legacy_erp",
    "write_files",
    "write_preferences",
]

FORMATS = ("avro", "parquet", "jsonl")
_EXT = {"avro": "avro", "parquet": "parquet", "jsonl": "jsonl"}


@dataclass
class FileSummary:
    """What ``write_files`` wrote.

    Attributes:
        out_dir: the root directory.
        fmt: the format.
        files: path relative to ``out_dir`` -> events in it.
        events: total events written.
        bytes: total size of the files.
    """

    out_dir: Path
    fmt: str
    files: dict[str, int] = field(default_factory=dict)
    events: int = 0
    bytes: int = 0

    def to_dict(self) -> dict:
        return {
            "out_dir": str(self.out_dir),
            "format": self.fmt,
            "events": self.events,
            "bytes": self.bytes,
            "files": self.files,
        }


# -- file parts ------------------------------------------------------------------------------


def _json_default(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)  # scale-2 Decimals print as "12.34"
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


class _JsonlPart:
    _encode = json.JSONEncoder(
        default=_json_default, separators=(",", ":"), ensure_ascii=False
    ).encode

    def __init__(self, path: Path, contract: Contract) -> None:
        self._fh = path.open("w", encoding="utf-8", newline="\n")
        self._lines: list[str] = []

    def write(self, event: dict) -> None:
        lines = self._lines
        lines.append(self._encode(event))
        if len(lines) >= 2_000:
            self._flush()

    def _flush(self) -> None:
        if self._lines:
            self._fh.write("\n".join(self._lines) + "\n")
            self._lines.clear()

    def close(self) -> None:
        self._flush()
        self._fh.close()


class _AvroPart:
    def __init__(self, path: Path, contract: Contract, codec: str) -> None:
        self._fh = path.open("wb")
        # fastavro draws a random sync marker by default; derive it so output is reproducible.
        marker = hashlib.md5(f"{contract.subject}/{path.parent.name}".encode()).digest()
        # The raw schema, not the parsed one: fastavro writes the schema it is given into the
        # header, and the parsed form's key order varies with PYTHONHASHSEED.
        self._writer = fastavro.write.Writer(
            self._fh, contract.schema, codec=codec, sync_marker=marker
        )
        self.write = self._writer.write

    def close(self) -> None:
        self._writer.flush()
        self._fh.close()


class _ParquetPart:
    # Rows go to Arrow in small batches: holding thousands of nested dicts per open file until a
    # row group is full makes Python's cyclic GC rescan them over and over (measured: 512 rows
    # ~95k events/s, 50k rows ~65k events/s end to end).
    _BATCH = 512

    def __init__(self, path: Path, contract: Contract, row_group: int, compression: str) -> None:
        self._schema = arrow_schema(contract.schema)
        self._writer = pq.ParquetWriter(path, self._schema, compression=compression)
        self._rows: list[dict] = []
        self._batches: list[pa.RecordBatch] = []
        self._buffered = 0
        self._row_group = row_group

    def write(self, event: dict) -> None:
        rows = self._rows
        rows.append(event)
        if len(rows) >= self._BATCH:
            self._convert()
            if self._buffered >= self._row_group:
                self._flush()

    def _convert(self) -> None:
        if self._rows:
            self._batches.append(pa.RecordBatch.from_pylist(self._rows, schema=self._schema))
            self._buffered += len(self._rows)
            self._rows.clear()

    def _flush(self) -> None:
        if self._batches:
            table = pa.Table.from_batches(self._batches, schema=self._schema)
            self._writer.write_table(table, row_group_size=self._row_group)
            self._batches.clear()
            self._buffered = 0

    def close(self) -> None:
        self._convert()
        self._flush()
        self._writer.close()


def _arrow_type(avro: object) -> tuple[pa.DataType, bool]:
    """Avro type -> (Arrow type, nullable)."""
    if isinstance(avro, list):
        branches = [b for b in avro if b != "null"]
        if len(branches) != 1:
            raise ValueError(f"unsupported union {avro!r}")
        return _arrow_type(branches[0])[0], "null" in avro
    if isinstance(avro, str):
        simple = {
            "string": pa.string(),
            "int": pa.int32(),
            "long": pa.int64(),
            "boolean": pa.bool_(),
            "double": pa.float64(),
            "float": pa.float32(),
            "bytes": pa.binary(),
        }
        return simple[avro], False
    assert isinstance(avro, dict)
    kind, logical = avro["type"], avro.get("logicalType")
    if logical == "decimal":
        return pa.decimal128(avro["precision"], avro.get("scale", 0)), False
    if logical == "timestamp-millis":
        return pa.timestamp("ms", tz="UTC"), False
    if kind == "record":
        return pa.struct(_arrow_fields(avro)), False
    if kind == "enum":
        return pa.string(), False
    if kind == "array":
        item, nullable = _arrow_type(avro["items"])
        return pa.list_(pa.field("element", item, nullable=nullable)), False
    if kind == "map":
        value, nullable = _arrow_type(avro["values"])
        return pa.map_(pa.string(), pa.field("value", value, nullable=nullable)), False
    return _arrow_type(kind)


def _arrow_fields(record: dict) -> list[pa.Field]:
    fields = []
    for f in record["fields"]:
        typ, nullable = _arrow_type(f["type"])
        fields.append(pa.field(f["name"], typ, nullable=nullable))
    return fields


def arrow_schema(avro_schema: dict) -> pa.Schema:
    """The Arrow schema the Parquet sink uses for an Avro record schema (nested, see module doc)."""
    return pa.schema(_arrow_fields(avro_schema))


def write_files(
    events: Iterable[dict],
    out_dir: str | Path,
    fmt: str = "jsonl",
    *,
    codec: str = "null",
    parquet_compression: str = "zstd",
    row_group_size: int = 50_000,
) -> FileSummary:
    """Write events to ``<out_dir>/<event_type>/dt=YYYY-MM-DD/part-00000.<ext>``.

    Args:
        events: event dicts in event-time order (e.g. ``generate_events(cfg)``).
        out_dir: root directory (created; existing part files are overwritten).
        fmt: ``avro``, ``parquet`` or ``jsonl``.
        codec: Avro block codec (``null``, ``deflate``, ``snappy`` ...).
        parquet_compression: Parquet codec (``zstd``, ``snappy``, ``none`` ...).
        row_group_size: Parquet rows buffered per row group.

    Returns:
        The files written with their event counts.

    Raises:
        ValueError: unknown format, or an event older than a day already closed.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    root = Path(out_dir)
    summary = FileSummary(root, fmt)
    by_type = contracts()
    open_parts: dict[str, object] = {}
    counts: dict[str, int] = {}
    current_day = None
    closed_before = None  # every day before this one is closed
    dates: dict[int, str] = {}
    ext = _EXT[fmt]

    def close_all() -> None:
        for rel, part in open_parts.items():
            part.close()
            summary.files[rel] = counts[rel]
        open_parts.clear()

    try:
        for event in events:
            env = event["envelope"]
            event_type = env["event_type"]
            day = env["event_time"] // DAY_MS
            if day != current_day:
                if closed_before is not None and day < closed_before:
                    raise ValueError(
                        f"event {env['event_id']} is from a day whose files are already closed; "
                        "write_files needs events in event-time order"
                    )
                if current_day is not None and day > current_day:
                    close_all()
                    closed_before = day
                current_day = day
            rel = f"{event_type}/dt={dates.get(day) or _date(dates, day)}/part-00000.{ext}"
            part = open_parts.get(rel)
            if part is None:
                path = root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                contract = by_type[event_type]
                if fmt == "avro":
                    part = _AvroPart(path, contract, codec)
                elif fmt == "parquet":
                    part = _ParquetPart(path, contract, row_group_size, parquet_compression)
                else:
                    part = _JsonlPart(path, contract)
                open_parts[rel] = part
                counts[rel] = 0
            part.write(event)
            counts[rel] += 1
            summary.events += 1
    finally:
        close_all()
    summary.files = dict(sorted(summary.files.items()))
    summary.bytes = sum((root / rel).stat().st_size for rel in summary.files)
    return summary


def _date(cache: dict[int, str], day: int) -> str:
    cache[day] = datetime.fromtimestamp(day * DAY_MS / 1000, tz=UTC).date().isoformat()
    return cache[day]


def write_preferences(world: World, path: str | Path) -> int:
    """Write every starting customer's latent preferences as JSONL (recommender ground truth)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for row in world.iter_preferences():
            fh.write(json.dumps(row, sort_keys=True) + "\n")
            n += 1
    return n


# -- Kafka -----------------------------------------------------------------------------------


class KafkaSinkError(Exception):
    """Producing failed: deliveries were rejected or the registry refused a schema."""


@dataclass
class KafkaSummary:
    """What ``produce_to_kafka`` produced.

    Attributes:
        events: messages acknowledged by the broker.
        by_topic: messages sent per topic (all acknowledged when no error is raised).
        schema_ids: registry subject -> schema id used.
        seconds: wall time.
    """

    events: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)
    schema_ids: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.rate, 1),
            "by_topic": dict(sorted(self.by_topic.items())),
            "schema_ids": dict(sorted(self.schema_ids.items())),
        }


def _registry_modules():
    with warnings.catch_warnings():
        # authlib (pulled in by the registry client) warns about httpx on import, and installs
        # an "always" filter for that when first imported: import it first, then silence it.
        with contextlib.suppress(ImportError):
            import authlib.deprecate  # noqa: F401
        warnings.simplefilter("ignore")
        from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
        from confluent_kafka.schema_registry.avro import AvroSerializer
        from confluent_kafka.schema_registry.error import SchemaRegistryError
    return Schema, SchemaRegistryClient, AvroSerializer, SchemaRegistryError


def _ensure_registered(client, subject: str, contract: Contract, progress: IO[str] | None) -> int:
    """Register the subject's versions in order when it is missing; return the latest's id."""
    Schema, _, _, SchemaRegistryError = _registry_modules()
    latest = Schema(contract.text, "AVRO")
    try:
        try:
            registered = client.lookup_schema(subject, latest)
        except SchemaRegistryError as exc:
            if exc.http_status_code != 404:
                raise
            # Registering v1..vN in order keeps the registry's version numbers equal to the
            # files' (the envelope's schema_version says N).
            for text in contract.all_texts:
                client.register_schema(subject, Schema(text, "AVRO"))
            registered = client.lookup_schema(subject, latest)
    except SchemaRegistryError as exc:
        raise KafkaSinkError(f"the registry refused {subject}: {exc}") from exc
    except Exception as exc:  # connection refused, timeouts: no registry there
        raise KafkaSinkError(f"cannot use the schema registry for {subject}: {exc}") from exc
    if registered.version != contract.version and progress is not None:
        progress.write(
            f"warning: {subject} is version {registered.version} in the registry but "
            f"events say schema_version {contract.version}\n"
        )
    return registered.schema_id


def _ensure_topics(bootstrap: str, topics: list[str], partitions: int) -> None:
    from retail_backbone.io.kafka import KafkaUnavailable, ensure_topics

    try:
        # Records carry their event time as the Kafka timestamp (so a source can derive
        # watermarks from it); without infinite retention, a backfill of past days would be
        # deleted by the broker as soon as it lands.
        ensure_topics(bootstrap, topics, partitions, config={"retention.ms": "-1"})
    except KafkaUnavailable as exc:
        raise KafkaSinkError(str(exc)) from exc


def produce_to_kafka(
    events: Iterable[dict],
    bootstrap: str,
    registry_url: str,
    rate: float = 0.0,
    *,
    partitions: int = 3,
    topic_prefix: str = "retail.",
    create_topics: bool = True,
    progress: IO[str] | bool = True,
    producer_config: dict | None = None,
    flush_timeout: float = 60.0,
) -> KafkaSummary:
    """Produce events to ``retail.<event_type>`` in Confluent Avro wire format.

    Args:
        events: event dicts (e.g. ``generate_events(cfg)``).
        bootstrap: Kafka bootstrap servers.
        registry_url: Confluent-compatible schema registry; subjects missing there are
            registered (all versions, in order) before the first message.
        rate: target events per second (wall clock); 0 = as fast as possible.
        partitions: partitions of topics this call creates.
        topic_prefix: topics are ``<prefix><event_type>`` and subjects ``<topic>-value``
            (Confluent's TopicNameStrategy); change it only to isolate test runs.
        create_topics: create missing topics first (instead of relying on broker auto-create).
        progress: where the progress line (once a second on a terminal, every 10 s otherwise)
            and warnings go: True for stderr, a text stream, or False for silence.
        producer_config: extra librdkafka settings (override the defaults).
        flush_timeout: seconds to wait for outstanding deliveries at the end.

    Returns:
        Counts per topic, schema ids and timing.

    Raises:
        KafkaSinkError: the broker or registry is unreachable, or deliveries failed.
    """
    out: IO[str] | None = sys.stderr if progress is True else (progress or None)
    _, SchemaRegistryClient, AvroSerializer, _ = _registry_modules()
    from confluent_kafka import KafkaException, Producer
    from confluent_kafka.serialization import MessageField, SerializationContext

    by_type = contracts()
    topics = {t: f"{topic_prefix}{t}" for t in by_type}
    if create_topics:
        _ensure_topics(bootstrap, sorted(topics.values()), partitions)
    client = SchemaRegistryClient({"url": registry_url})
    conf = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 500_000,
        "client.id": "backbone-generator",
    }
    conf.update(producer_config or {})
    try:
        producer = Producer(conf)
    except KafkaException as exc:
        raise KafkaSinkError(f"cannot create the producer: {exc}") from exc

    summary = KafkaSummary()
    errors: list[str] = []
    delivered = [0]

    def on_delivery(err, msg) -> None:
        if err is not None:
            errors.append(f"{msg.topic()}: {err}")
        else:
            delivered[0] += 1

    serializers: dict[str, tuple] = {}
    tty = bool(out is not None and getattr(out, "isatty", lambda: False)())
    started = last_report = time.monotonic()
    sent = 0
    try:
        for event in events:
            event_type = event["envelope"]["event_type"]
            entry = serializers.get(event_type)
            if entry is None:
                contract, topic = by_type[event_type], topics[event_type]
                subject = f"{topic}-value"
                summary.schema_ids[subject] = _ensure_registered(client, subject, contract, out)
                serializer = AvroSerializer(
                    client,
                    contract.text,
                    conf={"auto.register.schemas": False, "use.latest.version": False},
                )
                ctx = SerializationContext(topic, MessageField.VALUE)
                entry = serializers[event_type] = (topic, serializer, ctx)
            topic, serializer, ctx = entry
            value = serializer(event, ctx)
            key = event["envelope"]["partition_key"].encode()
            while True:
                try:
                    producer.produce(
                        topic,
                        value,
                        key,
                        on_delivery=on_delivery,
                        timestamp=event["envelope"]["event_time"],
                    )
                    break
                except BufferError:
                    producer.poll(0.05)  # local queue full: let deliveries drain
            summary.by_topic[topic] = summary.by_topic.get(topic, 0) + 1
            sent += 1
            if sent % 1_000 == 0:
                producer.poll(0)
            if rate > 0:
                ahead = started + sent / rate - time.monotonic()
                if ahead > 0.002:
                    producer.poll(0)
                    time.sleep(ahead)
            if out is not None and sent % 256 == 0:
                now = time.monotonic()
                if now - last_report >= (1.0 if tty else 10.0):
                    last_report = now
                    _report(out, tty, sent, delivered[0], now - started, len(errors))
            if errors and len(errors) > 100:
                break
    finally:
        # Deliver what was handed to the producer even when the input fails midway.
        remaining = producer.flush(flush_timeout)
    summary.seconds = time.monotonic() - started
    summary.events = delivered[0]
    if out is not None:
        _report(out, tty, sent, delivered[0], summary.seconds, len(errors), final=True)
    if errors:
        raise KafkaSinkError(f"{len(errors)} deliveries failed; first: {errors[0]}")
    if remaining:
        raise KafkaSinkError(f"{remaining} messages still undelivered after {flush_timeout}s")
    return summary


def _report(
    out: IO[str], tty: bool, sent: int, acked: int, seconds: float, errors: int, final: bool = False
) -> None:
    rate = sent / seconds if seconds > 0 else 0.0
    line = f"kafka: {sent:,} sent, {acked:,} acked, {rate:,.0f} ev/s, {errors} errors"
    if tty:
        out.write("\r" + line + ("\n" if final else ""))
    else:
        out.write(line + "\n")
    out.flush()
