"""Replay dead letters: re-inject their original payloads where they entered, once.

Example::

    backbone dlq replay --pipeline inventory --since 2026-11-27T00:00 --error-class sink_unavailable
    python -m retail_backbone.pipelines.dlq_replay --pipeline=inventory --source=files \\
        --files_dir=/data/dlq/inventory --plan_only

What it does, as a batch pipeline:

1. Reads the dead letters of ``--pipeline`` from the topic ``dlq.<pipeline>`` (everything there
   when the job starts) or from the dead-letter files.
2. Keeps those matching the filters: time range (event time when known, else when it failed),
   stages and error classes.
3. Drops copies (the same key and attempt, e.g. a retried bundle wrote it twice) and records
   already replayed by an earlier run (a ledger topic ``dlq.<pipeline>.replayed``), so running a
   replay twice re-injects nothing the second time.
4. Parks records that have failed ``--max_attempts`` times (topic ``dlq.<pipeline>.parked``).
5. Re-injects the rest: Kafka-origin payloads go back to their topic *unchanged* (no envelope
   around them, so replaying a replayed record never nests), with the attempt count and first
   failure time in Kafka headers; a new failure of the same payload then becomes a dead letter
   with ``attempt + 1``. File-origin JSON lines are written next to their source file as
   ``replay-<run>.jsonl`` for the next backfill of that day. Sink dead letters (origin ``SINK``:
   rows a sink step could not write, e.g. ``sink_unavailable`` while the store was down) are
   written again, decoded into the table's row type, through the same versioned writer of the
   step named by their ``stage`` (see "Sink dead letters" below).

An event that already succeeded is not applied twice: sinks are idempotent (last writer wins by
version) and ``DeduplicateEvents`` drops an event id seen within its TTL.

Sink dead letters: each registered pipeline module declares ``sink_targets(opts) -> {step label:
SinkTarget}`` (``pipelines/registry.py``); the replay builds it from its own options, so give the
same ``--postgres_dsn``, ``--bigtable_project``/``--bigtable_instance``, ``--table_suffix``
(and, for personalization, ``--neo4j_*``) as the run that failed. A letter whose recorded sink
(``<store>:<table>``) is not its step's target under these options is parked
(``sink_target_mismatch``), never written elsewhere. Writes go through the sink contract
(``--sink_*`` batching, retries, breaker; counters ``dlq_replay:<step>.written`` etc.): a newer
row already stored wins, so replaying is always safe. A row that fails again becomes a new dead
letter of the same stage with ``attempt + 1`` (to ``dlq.<pipeline>`` with ``--source=kafka``, to
``--files_dir`` with ``--source=files``) and is parked once it reaches ``--max_attempts``. Older
sink letters (origin ``INTERNAL`` with a sink step's stage) are replayed the same way.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from retail_backbone.io.dead_letter_sinks import WriteDeadLetters, dead_letter_key
from retail_backbone.io.dead_letters import DeadLetter, Origin, dead_letter, dlq_topic
from retail_backbone.io.kafka import ATTEMPT_HEADER, FIRST_SEEN_HEADER
from retail_backbone.io.kafka_sink import KafkaMessage, WriteToKafkaEvents
from retail_backbone.io.sinks.base import (
    BatchGuard,
    SinkCounters,
    SinkPolicy,
    SinkTarget,
)
from retail_backbone.pipelines.connections import ConnectionOptions
from retail_backbone.pipelines.job_options import sink_policy

__all__ = [
    "ReplayOptions",
    "ReplaySummary",
    "build_pipeline",
    "ledger_key",
    "route",
    "run",
    "sink_targets_of",
]

NAMESPACE = "dlq_replay"


def replayed_topic(pipeline: str) -> str:
    return f"{dlq_topic(pipeline)}.replayed"


def parked_topic(pipeline: str) -> str:
    return f"{dlq_topic(pipeline)}.parked"


class ReplayOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument(
            "--pipeline", default=None, help="Pipeline whose dead letters to replay (required)."
        )
        parser.add_argument(
            "--source",
            choices=["kafka", "files"],
            default="kafka",
            help="Where the dead letters are: the dlq.<pipeline> topic or files. Default: kafka.",
        )
        parser.add_argument(
            "--files_dir",
            default=None,
            help="Dead-letter folder (dt=YYYY-MM-DD/ partitions), --source=files.",
        )
        parser.add_argument(
            "--since", default=None, help="Only records at or after this ISO time (UTC)."
        )
        parser.add_argument(
            "--until", default=None, help="Only records before this ISO time (UTC)."
        )
        parser.add_argument(
            "--stage", action="append", default=[], help="Only these stages (repeatable)."
        )
        parser.add_argument(
            "--error_class",
            action="append",
            default=[],
            help="Only these error classes (repeatable).",
        )
        parser.add_argument(
            "--max_attempts",
            type=int,
            default=5,
            help="Park records that failed this many times. Default: 5.",
        )
        parser.add_argument(
            "--plan_only",
            action="store_true",
            help="Count what would be replayed or parked; write nothing.",
        )


def _iso_ms(value: str | None) -> int | None:
    if value is None:
        return None
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1000)


class ReplayFilter(NamedTuple):
    since_ms: int | None = None
    until_ms: int | None = None
    stages: frozenset[str] = frozenset()
    error_classes: frozenset[str] = frozenset()

    def matches(self, letter: DeadLetter) -> bool:
        when = letter.event_time_ms if letter.event_time_ms is not None else letter.last_seen_ms
        if self.since_ms is not None and when < self.since_ms:
            return False
        if self.until_ms is not None and when >= self.until_ms:
            return False
        if self.stages and letter.stage not in self.stages:
            return False
        return not self.error_classes or letter.error_class in self.error_classes


#: Origins whose letters may be rows of a sink step (``INTERNAL``: written before ``SINK``).
_SINK_ORIGINS = ("SINK", "INTERNAL")


def ledger_key(letter: DeadLetter) -> str:
    """Identity of one failure: the same payload failing again later is a new attempt.

    Sink letters are prefixed with their stage: two sinks of one pipeline may write tables of
    the same name (Postgres and Bigtable ``stock_levels``), so the record id alone is ambiguous.
    """
    key = f"{dead_letter_key(letter)}#{letter.attempt}"
    return f"{letter.stage}/{key}" if letter.origin.kind in _SINK_ORIGINS else key


def route(letter: DeadLetter, targets: Mapping[str, SinkTarget]) -> str:
    """Where a letter is replayed: ``kafka``, ``file``, ``sink``; else why not.

    ``sink_target_mismatch``: a sink letter whose recorded ``<store>:<table>`` differs from its
    stage's target under the replay's options (another ``--table_suffix``, say).
    ``unreplayable``: nowhere to send it (no topic, file, or sink step of that stage).
    """
    origin = letter.origin
    if origin.kind == "KAFKA" and origin.topic:
        return "kafka"
    if origin.kind == "FILE" and origin.file and letter.payload:
        return "file"
    if origin.kind in _SINK_ORIGINS and letter.payload and letter.stage in targets:
        if origin.kind == "SINK" and origin.sink != targets[letter.stage].address:
            return "sink_target_mismatch"
        return "sink"
    return "unreplayable"


def sink_targets_of(pipeline: str, opts: PipelineOptions) -> dict[str, SinkTarget]:
    """The registered pipeline's ``sink_targets(opts)``; empty for unregistered pipelines."""
    from retail_backbone.pipelines.registry import PIPELINES

    spec = PIPELINES.get(pipeline)
    if spec is None:
        return {}
    declare = getattr(spec.load(), "sink_targets", None)
    return dict(declare(opts)) if declare is not None else {}


class _ClassifyFn(beam.DoFn):
    """Filter, then route each dead letter to replay, park, skip or unreplayable."""

    def __init__(
        self,
        flt: ReplayFilter,
        max_attempts: int,
        already: frozenset[str],
        targets: Mapping[str, SinkTarget] | None = None,
    ) -> None:
        self._flt = flt
        self._max = max_attempts
        self._already = already
        self._targets = dict(targets or {})
        self._counters = {
            name: Metrics.counter(NAMESPACE, name)
            for name in (
                "read",
                "filtered_out",
                "already_replayed",
                "parked",
                "unreplayable",
                "sink_target_mismatch",
                "replayed",
                "replayed_to_sink",
            )
        }

    def process(self, letter: DeadLetter) -> Iterator[Any]:
        self._counters["read"].inc()
        if not self._flt.matches(letter):
            self._counters["filtered_out"].inc()
            return
        if ledger_key(letter) in self._already:
            self._counters["already_replayed"].inc()
            return
        if letter.attempt >= self._max:
            self._counters["parked"].inc()
            yield beam.pvalue.TaggedOutput("park", letter)
            return
        where = route(letter, self._targets)
        if where in ("kafka", "file"):
            self._counters["replayed"].inc()
            yield letter
        elif where == "sink":
            self._counters["replayed"].inc()
            self._counters["replayed_to_sink"].inc()
            yield beam.pvalue.TaggedOutput("sink", letter)
        else:
            self._counters["unreplayable"].inc()
            if where == "sink_target_mismatch":
                self._counters["sink_target_mismatch"].inc()
            yield beam.pvalue.TaggedOutput("park", letter)


class _ReplaySinkFn(beam.DoFn):
    """Write one stage's sink letters again through its target's versioned writer.

    Input: ``(stage, letters)``. Output: the ledger key of every letter handled (written,
    stale, or failed again); tagged ``failed``: a new dead letter (``attempt + 1``) per row
    not written; tagged ``park``: letters whose payload is not a row of the target.
    """

    def __init__(self, targets: Mapping[str, SinkTarget], policy: SinkPolicy) -> None:
        self._targets = dict(targets)
        self._policy = policy
        self._undecodable = Metrics.counter(NAMESPACE, "undecodable")

    def setup(self) -> None:
        self._guards: dict[str, BatchGuard] = {}

    def _guard(self, stage: str) -> BatchGuard:
        # Opened on first use: a replay touches only the stores its letters came from.
        if stage not in self._guards:
            writer = self._targets[stage].writer(self._policy)
            writer.open()
            self._guards[stage] = BatchGuard(writer, self._policy, SinkCounters(NAMESPACE, stage))
        return self._guards[stage]

    def process(self, item: tuple[str, Iterable[DeadLetter]]) -> Iterator[Any]:
        stage, letters = item
        batch: list[DeadLetter] = []
        for letter in letters:
            batch.append(letter)
            if len(batch) >= self._policy.batch_size:
                yield from self._write(stage, batch)
                batch = []
        if batch:
            yield from self._write(stage, batch)

    def _write(self, stage: str, letters: list[DeadLetter]) -> Iterator[Any]:
        target = self._targets[stage]
        rows, kept = [], []
        for letter in letters:
            try:
                rows.append(target.decode(letter.payload))
            except Exception:  # not a row of this table: nothing a retry could fix
                self._undecodable.inc()
                yield beam.pvalue.TaggedOutput("park", letter)
                continue
            kept.append(letter)
        rejected = {r.position: r for r in self._guard(stage).write(rows)}
        for position, letter in enumerate(kept):
            yield ledger_key(letter)
            if position in rejected:
                r = rejected[position]
                again = dead_letter(
                    letter.payload,
                    Origin.for_sink(target.address),
                    letter.pipeline,
                    stage,
                    r.error if r.error is not None else r.message,
                    error_class=r.error_class,
                    event_id=letter.event_id,
                    event_time_ms=letter.event_time_ms,
                    attempt=letter.attempt + 1,
                    first_seen_ms=letter.first_seen_ms,
                )
                yield beam.pvalue.TaggedOutput("failed", again._replace(message=r.message))

    def teardown(self) -> None:
        for guard in getattr(self, "_guards", {}).values():
            guard.writer.close()


class _ReinjectKafkaFn(beam.DoFn):
    """Produce the original payload to its topic with attempt/first-seen headers."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._producer = None

    def setup(self) -> None:
        from confluent_kafka import Producer

        self._producer = Producer(
            {
                "bootstrap.servers": self._bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "log_level": 3,
            }
        )

    def process(self, letter: DeadLetter) -> Iterator[str]:
        errors: list[str] = []
        self._producer.produce(
            letter.origin.topic,
            letter.payload,
            key=letter.event_id.encode() if letter.event_id else None,
            headers={
                ATTEMPT_HEADER: str(letter.attempt + 1).encode(),
                FIRST_SEEN_HEADER: str(letter.first_seen_ms).encode(),
            },
            on_delivery=lambda err, _m: errors.append(str(err)) if err else None,
        )
        self._producer.flush(30)
        if errors:
            raise RuntimeError(f"re-injecting into {letter.origin.topic} failed: {errors[0]}")
        yield ledger_key(letter)

    def teardown(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)


class _ReinjectFileFn(beam.DoFn):
    """Write JSON-line payloads next to their source file as ``replay-<run>.jsonl``."""

    def __init__(self, run_id: str) -> None:
        self._run_id = run_id

    def process(self, batch: tuple[str, list[DeadLetter]]) -> Iterator[str]:
        folder, letters = batch
        path = f"{folder}/replay-{self._run_id}.jsonl"
        with FileSystems.create(path) as fh:
            for letter in sorted(letters, key=ledger_key):
                fh.write(letter.payload.rstrip(b"\n") + b"\n")
        for letter in letters:
            yield ledger_key(letter)


class _ReadDeadLetterTopicFn(beam.DoFn):
    """Avro-decode ``retail.common.DeadLetter`` records read from the DLQ topic."""

    def __init__(self, registry_url: str) -> None:
        self._registry_url = registry_url
        self._client = None

    def setup(self) -> None:
        from retail_backbone.schemas.serde import AvroDeserializer, RegistryClient

        self._client = RegistryClient(self._registry_url)
        self._deserializer = AvroDeserializer(self._client)

    def process(self, record: Any) -> Iterator[DeadLetter]:
        decoded, _ = self._deserializer.deserialize(record.value)
        yield DeadLetter.from_avro(decoded)

    def teardown(self) -> None:
        if self._client is not None:
            self._client.close()


def _read_ledger(bootstrap: str, pipeline: str) -> frozenset[str]:
    """Keys replayed by earlier runs (the ledger topic is small: one short key per replay)."""
    from retail_backbone.io.kafka import KafkaUnavailable, snapshot_offset_ranges

    try:
        ranges = snapshot_offset_ranges(bootstrap, replayed_topic(pipeline), timeout=5)
    except KafkaUnavailable:
        return frozenset()
    from confluent_kafka import Consumer, TopicPartition

    keys: set[str] = set()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "_dlq_ledger", "log_level": 0})
    try:
        for rng in ranges:
            if rng.stop <= rng.start:
                continue
            consumer.assign([TopicPartition(rng.topic, rng.partition, rng.start)])
            offset = rng.start
            while offset < rng.stop:
                for msg in consumer.consume(500, timeout=5):
                    if msg.error() is None:
                        keys.add(msg.key().decode())
                        offset = msg.offset() + 1
    finally:
        consumer.close()
    return frozenset(keys)


class ReplaySummary(NamedTuple):
    counters: dict[str, int]


def build_pipeline(p: beam.Pipeline, opts: ReplayOptions, already: frozenset[str]) -> None:
    """Wire the replay onto ``p``; ``already`` holds ledger keys of earlier replays."""
    conn = opts.view_as(ConnectionOptions)
    if opts.source == "kafka":
        from retail_backbone.io.kafka import ReadKafkaOffsetRanges, snapshot_offset_ranges

        ranges = snapshot_offset_ranges(conn.bootstrap_servers, dlq_topic(opts.pipeline))
        letters = (
            p
            | "ReadDeadLetterTopic" >> ReadKafkaOffsetRanges(conn.bootstrap_servers, ranges)
            | "DecodeDeadLetters" >> beam.ParDo(_ReadDeadLetterTopicFn(conn.registry_url))
        )
    else:
        if not opts.files_dir:
            raise ValueError("--source=files needs --files_dir")
        letters = (
            p
            | "ReadDeadLetterFiles" >> beam.io.ReadFromText(f"{opts.files_dir.rstrip('/')}/dt=*/*")
            | "ParseDeadLetters" >> beam.Map(DeadLetter.from_json)
        )
    flt = ReplayFilter(
        _iso_ms(opts.since),
        _iso_ms(opts.until),
        frozenset(opts.stage),
        frozenset(opts.error_class),
    )
    unique = (
        letters
        | "KeyByLedgerKey" >> beam.Map(lambda d: (ledger_key(d), d))
        | "OnePerKey" >> beam.CombinePerKey(lambda ds: min(ds, key=lambda d: d.last_seen_ms))
        | "DropKeys" >> beam.Values()
    )
    targets = sink_targets_of(opts.pipeline, opts)
    routed = unique | "Classify" >> beam.ParDo(
        _ClassifyFn(flt, opts.max_attempts, already, targets)
    ).with_outputs("park", "sink", main="replay")
    if opts.plan_only:
        return
    kafka_letters = routed.replay | "KafkaOrigin" >> beam.Filter(lambda d: d.origin.kind == "KAFKA")
    file_letters = routed.replay | "FileOrigin" >> beam.Filter(lambda d: d.origin.kind == "FILE")
    done_kafka = kafka_letters | "ReinjectKafka" >> beam.ParDo(
        _ReinjectKafkaFn(conn.bootstrap_servers)
    )
    done_files = (
        file_letters
        | "ByFolder" >> beam.Map(lambda d: (d.origin.file.rsplit("/", 1)[0], d))
        | "GroupByFolder" >> beam.GroupByKey()
        | "ReinjectFiles" >> beam.ParDo(_ReinjectFileFn(conn.run_id))
    )
    sink_results = (
        routed.sink
        | "ByStage" >> beam.Map(lambda d: (d.stage, d))
        | "GroupByStage" >> beam.GroupByKey()
        | "RewriteSinkRows"
        >> beam.ParDo(_ReplaySinkFn(targets, sink_policy(opts))).with_outputs(
            "failed", "park", main="done"
        )
    )
    # Rows that failed again are new dead letters (attempt + 1) where the letters were read.
    from_kafka = opts.source == "kafka"
    sink_results.failed | "WriteFailedAgain" >> WriteDeadLetters(
        opts.pipeline,
        bootstrap=conn.bootstrap_servers if from_kafka else None,
        registry_url=conn.registry_url if from_kafka else None,
        files_dir=None if from_kafka else opts.files_dir,
    )
    (
        (done_kafka, done_files, sink_results.done)
        | "Replayed" >> beam.Flatten()
        | "LedgerMessages"
        >> beam.Map(lambda key: KafkaMessage(replayed_topic(opts.pipeline), key.encode(), b""))
        | "WriteLedger" >> WriteToKafkaEvents(conn.bootstrap_servers, NAMESPACE)
    )
    (
        (routed.park, sink_results.park)
        | "AllParked" >> beam.Flatten()
        | "ParkMessages"
        >> beam.Map(
            lambda d: KafkaMessage(
                parked_topic(opts.pipeline),
                ledger_key(d).encode(),
                d.to_json().encode(),
                d.event_id,
            )
        )
        | "WritePark" >> WriteToKafkaEvents(conn.bootstrap_servers, NAMESPACE)
    )


def run(argv: list[str] | None = None) -> ReplaySummary:
    """Run a replay and return its counters (see ``NAMESPACE`` counters in the docstring)."""
    opts = ReplayOptions(argv)
    conn = opts.view_as(ConnectionOptions)
    # Validated here, not by argparse: Beam parses every options class for every pipeline.
    if not opts.pipeline:
        raise ValueError("--pipeline is required: the pipeline whose dead letters to replay")
    if conn.run_id is None:
        conn.run_id = uuid.uuid4().hex[:12]
    already = _read_ledger(conn.bootstrap_servers, opts.pipeline)
    p = beam.Pipeline(options=opts)
    build_pipeline(p, opts, already)
    result = p.run()
    result.wait_until_finish()
    found = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(NAMESPACE))
    counters = {c.key.metric.name: c.committed for c in found["counters"]}
    return ReplaySummary(counters)


if __name__ == "__main__":
    print(json.dumps(run().counters))
