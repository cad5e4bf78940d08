"""Where dead letters go: the Kafka topic ``dlq.<pipeline>`` and date-partitioned files.

Example::

    all_dead = (decoded.dead_letters, ledger.dead_letters) | "MergeDeadLetters" >> beam.Flatten()
    all_dead | "WriteDeadLetters" >> WriteDeadLetters(
        "inventory", bootstrap="127.0.0.1:9092", registry_url="http://127.0.0.1:8085",
        files_dir="gs://bucket/dlq/inventory")

Kafka: Confluent Avro with the ``retail.common.DeadLetter`` contract (record-name subject), keyed
by the event id when known, else by the source coordinates, through ``WriteToKafkaEvents``.
A dead letter that cannot even be delivered to the DLQ topic fails the bundle (so the runner
retries it) rather than disappearing.

Files: JSON lines under ``<files_dir>/dt=YYYY-MM-DD/`` (the day the record failed), one file per
bundle through Beam's ``FileSystems`` (local paths or ``gs://``). No shuffle and no windowing, so
late and future-dated records are written like any other; a retried bundle may write a second
file with the same records, which ``backbone dlq replay`` deduplicates.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from retail_backbone.io.dead_letters import DeadLetter, dlq_topic
from retail_backbone.io.kafka_sink import KafkaMessage, WriteToKafkaEvents

__all__ = [
    "DEAD_LETTER_SUBJECT",
    "WriteDeadLetters",
    "dead_letter_key",
    "latest_dead_letter_schema",
]

DEAD_LETTER_SUBJECT = "retail.common.DeadLetter"


def latest_dead_letter_schema(schemas_dir: Path) -> str:
    """The newest ``schemas/dead_letter/vN.avsc`` (the writer schema of the DLQ topics)."""
    versions = sorted(
        (p for p in (schemas_dir / "dead_letter").glob("v*.avsc") if p.stem[1:].isdigit()),
        key=lambda p: int(p.stem[1:]),
    )
    return versions[-1].read_text()


def dead_letter_key(letter: DeadLetter) -> str:
    """The Kafka key and replay deduplication key of a dead letter."""
    return letter.event_id or str(letter.origin)


class _WriteFilesFn(beam.DoFn):
    def __init__(self, files_dir: str) -> None:
        self._dir = files_dir.rstrip("/")
        self._written = Metrics.counter("dead_letters", "files_written")

    def start_bundle(self) -> None:
        self._by_day: dict[str, list[str]] = defaultdict(list)

    def process(self, letter: DeadLetter) -> Iterator[None]:
        day = dt.datetime.fromtimestamp(letter.last_seen_ms / 1000, dt.UTC).strftime("%Y-%m-%d")
        self._by_day[day].append(letter.to_json())
        yield from ()

    def finish_bundle(self) -> None:
        for day, lines in self._by_day.items():
            path = f"{self._dir}/dt={day}/part-{uuid.uuid4().hex}.jsonl"
            parent = path.rsplit("/", 1)[0]
            if not FileSystems.exists(parent):
                FileSystems.mkdirs(parent)
            with FileSystems.create(path) as fh:
                fh.write(("\n".join(lines) + "\n").encode())
            self._written.inc(len(lines))
        self._by_day.clear()


class _EncodeDeadLetterFn(beam.DoFn):
    def __init__(self, registry_url: str, topic: str) -> None:
        self._registry_url = registry_url
        self._topic = topic
        self._client = None

    def setup(self) -> None:
        from retail_backbone.schemas.catalog import SCHEMAS_DIR
        from retail_backbone.schemas.serde import AvroSerializer, RegistryClient

        self._client = RegistryClient(self._registry_url)
        schema = latest_dead_letter_schema(SCHEMAS_DIR)
        self._serializer = AvroSerializer(self._client, DEAD_LETTER_SUBJECT, schema)

    def process(self, letter: DeadLetter) -> Iterator[KafkaMessage]:
        yield KafkaMessage(
            self._topic,
            dead_letter_key(letter).encode(),
            self._serializer.serialize(letter.to_avro()),
            letter.event_id,
        )

    def teardown(self) -> None:
        if self._client is not None:
            self._client.close()


class _FailOnUndeliverableFn(beam.DoFn):
    def process(self, letter: DeadLetter) -> Iterator[None]:
        raise RuntimeError(f"a dead letter could not be written to its DLQ topic: {letter.message}")
        yield  # pragma: no cover - makes this a generator for Beam


class WriteDeadLetters(beam.PTransform):
    """Write dead letters to ``dlq.<pipeline>`` (when ``bootstrap`` is given) and/or files."""

    def __init__(
        self,
        pipeline: str,
        bootstrap: str | None = None,
        registry_url: str | None = None,
        files_dir: str | None = None,
        label: str | None = None,
    ) -> None:
        super().__init__(label)
        if bootstrap and not registry_url:
            raise ValueError("the Kafka dead-letter sink needs registry_url")
        if not bootstrap and not files_dir:
            raise ValueError("give bootstrap (Kafka) and/or files_dir for dead letters")
        self._pipeline = pipeline
        self._bootstrap = bootstrap
        self._registry_url = registry_url
        self._files_dir = files_dir

    def expand(self, letters: beam.PCollection) -> beam.pvalue.PDone:
        if self._files_dir:
            letters | "WriteFiles" >> beam.ParDo(_WriteFilesFn(self._files_dir))
        if self._bootstrap:
            undeliverable = (
                letters
                | "Encode"
                >> beam.ParDo(_EncodeDeadLetterFn(self._registry_url, dlq_topic(self._pipeline)))
                | "Produce" >> WriteToKafkaEvents(self._bootstrap, self._pipeline)
            )
            undeliverable | "FailOnUndeliverable" >> beam.ParDo(_FailOnUndeliverableFn())
        return beam.pvalue.PDone(letters.pipeline)
