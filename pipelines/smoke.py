"""The smoke pipeline: generated events through Kafka, counted per type by Beam, into PostgreSQL.

It proves the stack end to end: a real broker, a real runner, a real database. Later issues replace
it with the inventory and personalization jobs.

Example::

    backbone demo                      # or: python -m retail_backbone.pipelines.smoke --help

Pipeline shape::

    ReadEvents (Kafka offset ranges) -> DecodeEvents (JSON; bad input -> dead letters)
      -> CountPerType (CombinePerKey) -> WriteCounts (Postgres upsert)
      dead letters -> WriteDeadLetters (Postgres)
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from retail_backbone.io.dead_letters import DEAD_LETTERS, DeadLetter, Origin, dead_letter
from retail_backbone.io.kafka import (
    KafkaRecord,
    OffsetRange,
    ReadKafkaOffsetRanges,
    snapshot_offset_ranges,
)
from retail_backbone.io.postgres import UpsertRows
from retail_backbone.pipelines.connections import ConnectionOptions

PIPELINE = "smoke"
TOPIC = "smoke.events"
EVENT_TYPES = {  # rough shares of a retail event stream
    "product_viewed": 60,
    "cart_updated": 20,
    "order_placed": 8,
    "payment_authorized": 7,
    "order_shipped": 4,
    "return_processed": 1,
}
DDL = """
CREATE TABLE IF NOT EXISTS smoke_event_counts (
    run_id text NOT NULL, event_type text NOT NULL, count bigint NOT NULL,
    PRIMARY KEY (run_id, event_type));
CREATE TABLE IF NOT EXISTS smoke_dead_letters (
    run_id text NOT NULL, source text NOT NULL, stage text NOT NULL, error_class text NOT NULL,
    message text NOT NULL, payload bytea NOT NULL, PRIMARY KEY (run_id, source));
"""


class SmokeEvent(NamedTuple):
    event_id: str
    event_type: str
    event_time_ms: int


class EventTypeCount(NamedTuple):
    run_id: str
    event_type: str
    count: int


class DeadLetterRow(NamedTuple):
    run_id: str
    source: str
    stage: str
    error_class: str
    message: str
    payload: bytes


class SmokeOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--topic", default=TOPIC, help=f"Topic to read. Default: {TOPIC}.")
        parser.add_argument(
            "--offset_ranges",
            default=None,
            help="JSON list of [topic, partition, start, stop]; default: the whole topic now.",
        )


def generate_events(n: int, seed: int, bad: int) -> tuple[list[bytes], Counter]:
    """``n`` JSON events with seeded types, plus ``bad`` undecodable payloads at random places."""
    rng = random.Random(seed)
    types, weights = zip(*EVENT_TYPES.items(), strict=True)
    base_ms = 1_764_000_000_000
    payloads, counts = [], Counter()
    for i in range(n):
        event_type = rng.choices(types, weights)[0]
        counts[event_type] += 1
        event = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "event_type": event_type,
            "event_time": base_ms + i * 250,
        }
        payloads.append(json.dumps(event).encode())
    for j in range(bad):
        payloads.insert(rng.randrange(len(payloads) + 1), b'{"event_type": truncated' + bytes([j]))
    return payloads, counts


class _DecodeJsonFn(beam.DoFn):
    """JSON bytes -> SmokeEvent; anything else -> a dead letter with the reason."""

    DEAD = DEAD_LETTERS

    def __init__(self) -> None:
        self._ok = Metrics.counter(PIPELINE, "decoded")
        self._dead = Metrics.counter(PIPELINE, "dead_letters")

    def process(self, rec: KafkaRecord) -> Iterator:
        try:
            doc = json.loads(rec.value)
            event = SmokeEvent(str(doc["event_id"]), str(doc["event_type"]), int(doc["event_time"]))
        except (ValueError, KeyError, TypeError) as exc:
            self._dead.inc()
            origin = Origin.kafka(rec.topic, rec.partition, rec.offset)
            yield beam.pvalue.TaggedOutput(
                self.DEAD, dead_letter(rec.value, origin, PIPELINE, "DecodeEvents", exc)
            )
            return
        self._ok.inc()
        yield beam.window.TimestampedValue(event, event.event_time_ms / 1000)


class SmokeOutputs(NamedTuple):
    counts: beam.PCollection
    dead_letters: beam.PCollection


def build_pipeline(p: beam.Pipeline, opts: SmokeOptions, ranges: list[OffsetRange]) -> SmokeOutputs:
    """Wire the smoke job onto ``p``; sources and sinks come from ``opts``."""
    conn = opts.view_as(ConnectionOptions)
    run_id = conn.run_id
    records = p | "ReadEvents" >> ReadKafkaOffsetRanges(conn.bootstrap_servers, ranges)
    decoded = records | "DecodeEvents" >> beam.ParDo(_DecodeJsonFn()).with_outputs(
        _DecodeJsonFn.DEAD, main="events"
    )
    counts = (
        decoded.events
        | "KeyByType" >> beam.Map(lambda e: (e.event_type, 1))
        | "CountPerType" >> beam.CombinePerKey(sum)
        | "ToRows" >> beam.MapTuple(lambda t, n: EventTypeCount(run_id, t, n))
    )
    counts | "WriteCounts" >> UpsertRows(
        conn.postgres_dsn, "smoke_event_counts", ("run_id", "event_type")
    )
    dead = decoded[_DecodeJsonFn.DEAD] | "DeadLetterRows" >> beam.Map(
        lambda d: DeadLetterRow(run_id, str(d.origin), d.stage, d.error_class, d.message, d.payload)
    ).with_input_types(DeadLetter)
    dead | "WriteDeadLetters" >> UpsertRows(
        conn.postgres_dsn, "smoke_dead_letters", ("run_id", "source")
    )
    return SmokeOutputs(counts=counts, dead_letters=dead)


@dataclass
class SmokeSummary:
    run_id: str
    runner: str
    produced: int
    produced_bad: int
    produced_by_type: dict[str, int]
    read: int
    decoded: int
    dead_letters: int
    stored_by_type: dict[str, int]
    stored_dead_letters: int
    seconds: float
    problems: list[str] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {**asdict(self), "balanced": self.balanced}

    def render(self) -> str:
        lines = [
            f"smoke pipeline on {self.runner}: run {self.run_id} in {self.seconds:.1f}s",
            f"  {'event type':20} {'produced':>9} {'in postgres':>12}",
        ]
        for event_type in sorted(self.produced_by_type):
            lines.append(
                f"  {event_type:20} {self.produced_by_type[event_type]:>9} "
                f"{self.stored_by_type.get(event_type, 0):>12}"
            )
        lines.append(
            f"  accounting: in {self.read} = out {self.decoded} + dead letters {self.dead_letters}"
            f" (produced {self.produced}, of which {self.produced_bad} deliberately corrupt;"
            f" {self.stored_dead_letters} dead letters stored)"
        )
        lines.append("  OK: every event accounted for" if self.balanced else "  MISMATCH:")
        lines += [f"    - {p}" for p in self.problems]
        return "\n".join(lines)


def produce(bootstrap: str, topic: str, payloads: list[bytes]) -> None:
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "log_level": 3,  # errors only; the broker may still be loading its coordinator
        }
    )
    errors: list = []
    for i, payload in enumerate(payloads):
        producer.produce(
            topic,
            payload,
            key=str(i).encode(),
            on_delivery=lambda err, _msg: errors.append(err) if err else None,
        )
        producer.poll(0)
    producer.flush(30)
    if errors:
        raise RuntimeError(f"{len(errors)} events were not delivered: {errors[0]}")


def run_demo(
    events: int, seed: int, runner: str, progress: Callable[[str], None], bad: int = 5
) -> SmokeSummary:
    """Bring up what is needed, produce, run the pipeline and check the result in PostgreSQL."""
    import psycopg

    from retail_backbone.pipelines.runners import RUNNER_COMPONENTS, runner_args
    from retail_backbone.stack import Stack, StackConfig
    from retail_backbone.stack.components.postgres import dsn as pg_dsn

    cfg = StackConfig.load()
    progress("bringing up kafka, postgres and the runner ...")
    Stack(cfg, progress=lambda line: progress(f"  {line}")).up(
        ["kafka", "postgres", *RUNNER_COMPONENTS[runner]]
    )
    bootstrap, dsn = f"{cfg.host}:{cfg.port('kafka')}", pg_dsn(cfg)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(DDL)
    run_id = uuid.uuid4().hex[:12]
    payloads, produced_by_type = generate_events(events, seed, bad)
    produce(bootstrap, TOPIC, payloads[:1])  # make sure the topic exists before the snapshot
    before = {(r.topic, r.partition): r.stop for r in snapshot_offset_ranges(bootstrap, TOPIC)}
    progress(f"producing {len(payloads)} events to {TOPIC} ...")
    produce(bootstrap, TOPIC, payloads[1:])
    after = snapshot_offset_ranges(bootstrap, TOPIC)
    # This run's records: everything after the first (topic-creating) one.
    ranges = [
        OffsetRange(r.topic, r.partition, before[(r.topic, r.partition)], r.stop) for r in after
    ]
    first = payloads[0]
    progress(f"running the smoke pipeline on {runner} ...")
    started = time.monotonic()
    opts = SmokeOptions(
        [
            *runner_args(runner, cfg),
            f"--bootstrap_servers={bootstrap}",
            f"--postgres_dsn={dsn}",
            f"--run_id={run_id}",
        ]
    )
    p = beam.Pipeline(options=opts)
    build_pipeline(p, opts, ranges)
    result = p.run()
    result.wait_until_finish()
    seconds = time.monotonic() - started

    def counter(name: str, namespace: str = PIPELINE) -> int:
        found = result.metrics().query(MetricsFilter().with_namespace(namespace).with_name(name))
        return sum(c.committed or 0 for c in found["counters"])

    # The first payload went out before the snapshot; count it on the producer side only.
    produced_by_type = Counter(produced_by_type)
    if first.startswith(b'{"event_id"'):
        produced_by_type[json.loads(first)["event_type"]] -= 1
        produced_bad = bad
    else:
        produced_bad = bad - 1
    with psycopg.connect(dsn) as conn:
        stored = dict(
            conn.execute(
                "select event_type, count from smoke_event_counts where run_id = %s", (run_id,)
            ).fetchall()
        )
        stored_dead = conn.execute(
            "select count(*) from smoke_dead_letters where run_id = %s", (run_id,)
        ).fetchone()[0]
    summary = SmokeSummary(
        run_id=run_id,
        runner=runner,
        produced=len(payloads) - 1,
        produced_bad=produced_bad,
        produced_by_type={k: v for k, v in produced_by_type.items() if v},
        read=counter("records_read", "kafka"),
        decoded=counter("decoded"),
        dead_letters=counter("dead_letters"),
        stored_by_type=stored,
        stored_dead_letters=stored_dead,
        seconds=seconds,
    )
    _check(summary)
    return summary


def _check(s: SmokeSummary) -> None:
    if s.read != s.produced:
        s.problems.append(f"read {s.read} records but produced {s.produced}")
    if s.read != s.decoded + s.dead_letters:
        s.problems.append(f"in {s.read} != out {s.decoded} + dead letters {s.dead_letters}")
    if s.dead_letters != s.produced_bad or s.stored_dead_letters != s.produced_bad:
        s.problems.append(
            f"{s.produced_bad} corrupt events produced, {s.dead_letters} dead-lettered, "
            f"{s.stored_dead_letters} stored"
        )
    if s.stored_by_type != s.produced_by_type:
        s.problems.append(f"postgres has {s.stored_by_type}, expected {s.produced_by_type}")


def run(argv: list[str] | None = None) -> beam.runners.runner.PipelineResult:
    """Run the smoke pipeline over an existing topic with explicit options (no stack setup)."""
    opts = SmokeOptions(argv)
    conn = opts.view_as(ConnectionOptions)
    if conn.run_id is None:
        conn.run_id = uuid.uuid4().hex[:12]
    if opts.offset_ranges:
        ranges = [OffsetRange(*r) for r in json.loads(opts.offset_ranges)]
    else:
        ranges = snapshot_offset_ranges(conn.bootstrap_servers, opts.topic)
    p = beam.Pipeline(options=opts)
    build_pipeline(p, opts, ranges)
    result = p.run()
    result.wait_until_finish()
    return result


if __name__ == "__main__":
    run()
