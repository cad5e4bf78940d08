"""``ReadFromKafkaEvents``: one Kafka source, two engines (Python SDF or Beam's Java KafkaIO).

Example::

    from retail_backbone.io.kafka_source import ReadFromKafkaEvents, StartPosition, StopPosition

    records = p | "ReadEvents" >> ReadFromKafkaEvents(
        "127.0.0.1:9092",
        "retail.events",
        group_id="inventory",                      # offsets are committed to this group
        start=StartPosition.committed(),           # or earliest(), latest(), at_timestamp(ms),
                                                   #    at_offsets({partition: offset})
        stop=StopPosition.when_idle(5),            # None reads forever; also at_offsets(),
                                                   #    at_timestamp(ms)
        max_out_of_orderness=10.0,
    )
    decoded = records | DecodeEvents("inventory", fmt="avro", registry_url=...)

    # Choose the engine on the command line (default: java on Flink, python elsewhere):
    options = PipelineOptions([*runner_args("flink", cfg), *kafka_io_args("java")])

Every element is a ``KafkaRecord`` (``.origin`` gives ``Origin.kafka(topic, partition, offset)``)
timestamped with its Kafka record timestamp, which producers set to the envelope's event time.

**Python engine** (default on Prism and the direct runner): a splittable DoFn whose elements are
topic partitions and whose restriction is the partition's offset range ``[start, stop)``
(``stop`` is ``sys.maxsize`` for an open-ended read). One confluent-kafka consumer per DoFn
instance (built in ``setup()``, closed in ``teardown()``) is assigned to the restriction's
partition at every ``process`` call. A call reads for at most ``checkpoint_every`` seconds and then
checkpoints (``defer_remainder``), so that partitions share workers, and outputs, watermark and
offset commits reach the runner regularly. The restriction is never split anywhere but at a
checkpoint: a partition is read by one reader at a time, in offset order, which keeps committed
offsets meaningful.

* Start and stop positions are resolved to offsets when the pipeline is built
  (``plan_partition_reads``), which also validates the broker and topics: an unreachable broker
  or a missing topic raises ``KafkaUnavailable`` naming them before the job starts.
* Watermark (``ManualWatermarkEstimator``): the highest record timestamp seen on the partition
  minus ``max_out_of_orderness``. **Idle rule**: when a poll returns nothing and the reader has
  no backlog (its position is the partition's end offset, asked from the broker), the watermark
  moves to ``now - max_out_of_orderness``: a record produced later carries an event time close
  to now, so an idle partition does not hold back windows of the busy ones (Java KafkaIO's
  ``CustomTimestampPolicyWithLimitedDelay`` rule). A record produced later with an older event
  time is late. The watermark never moves backwards. Each reader reports the minimum over all
  partitions of its read in the worker process, each as of its last durable bundle
  (``align_watermarks``, see ``_WatermarkBoard``: Prism 2.62 otherwise lets one partition's
  watermark overtake the others').
* Offsets are committed to ``group_id`` (the next offset to read, Kafka's convention) from a
  bundle finalizer, i.e. only after the runner has durably committed the bundle's output. Prism
  and the direct runner (FnApiRunner) call finalizers; a failed commit is logged, not raised.
* Stop ``when_idle(n)``: a partition ends once its polls returned nothing, with no backlog, for
  ``n`` seconds in a row (measured within one ``process`` call, which keeps polling while idle);
  when every partition is done, the pipeline finishes. A topic deleted while it is read fails the
  job with ``KafkaTopicDeleted`` (checked on every idle poll and every discovery round).
* New partitions (reads without a stop position): every ``discover_partitions_every`` seconds a
  splittable DoFn lists the topics' partitions (``PeriodicImpulse`` does not run on Prism 2.62);
  partitions unknown at launch are emitted once (a stateful DoFn keyed by partition deduplicates)
  and read from their earliest offset, or the group's committed offset when starting from
  committed offsets.
* Runners: Prism runs everything above. The direct runner (FnApiRunner, batch) runs bounded
  reads, with commits; an open-ended read never ends there. Flink: not at all (see below).

**Java engine** (default on Flink, the only engine there: unbounded Python SDFs are broken on
portable Flink before Beam 2.76, apache/beam#19637 and #22809): Beam's Java KafkaIO through
``apache_beam.io.kafka.ReadFromKafka(with_metadata=True)``, expanded by the expansion service on
the stack's ``jobserver_expansion`` port (started with ``use_deprecated_read`` and an EMBEDDED
default environment: KafkaIO's unbounded source runs natively in Flink, its remaining Java steps
in a Java SDK harness inside the TaskManager; there is no Docker here). The job server jar is not
downloaded per expansion: the expanded environment's artifacts are dropped, as the jar is already
on the Flink job's classpath. Start positions: committed, earliest, latest (without
``group_id``) and timestamp; stop: none (unbounded, needs ``--streaming``) or
``StopPosition.after_records(n)`` (KafkaIO's ``max_num_records``). With a ``group_id`` KafkaIO
commits offsets when Flink finalizes a checkpoint, so pass ``--checkpointing_interval=<ms>``.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, Literal, NamedTuple

import apache_beam as beam
from apache_beam.coders import BooleanCoder
from apache_beam.io.iobase import RestrictionProgress
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import (
    PipelineOptions,
    PortableOptions,
    StandardOptions,
)
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from retail_backbone.io.kafka import KafkaRecord, KafkaUnavailable, replay_marks

__all__ = [
    "DEFAULT_EXPANSION_SERVICE",
    "KafkaIOOptions",
    "KafkaTopicDeleted",
    "PartitionRead",
    "ReadFromKafkaEvents",
    "StartPosition",
    "StopPosition",
    "kafka_io_args",
    "kafka_io_engine",
    "plan_partition_reads",
]

_LOG = logging.getLogger(__name__)

#: The Flink job server's expansion service (stack component ``jobserver``).
DEFAULT_EXPANSION_SERVICE = "127.0.0.1:8097"
#: Restriction stop of an open-ended partition read.
UNBOUNDED = sys.maxsize

Engine = Literal["python", "java"]
_ENGINES = ("python", "java")
# The Java SDK's name of the environment that runs a Java SDK harness inside the runner's JVM.
_EMBEDDED_ENV = "EMBEDDED"


class KafkaTopicDeleted(KafkaUnavailable):
    """A topic disappeared while the pipeline was reading it."""


# -- start and stop positions ---------------------------------------------------------------------

OffsetKey = int | tuple[str, int]


def _millis(when: int | float | dt.datetime) -> int:
    if isinstance(when, dt.datetime):
        if when.tzinfo is None:
            raise ValueError(f"{when!r} has no time zone; pass an aware datetime")
        return int(when.timestamp() * 1000)
    return int(when)


def _frozen_offsets(offsets: Mapping[OffsetKey, int]) -> tuple[tuple[OffsetKey, int], ...]:
    if not offsets:
        raise ValueError("offsets must name at least one partition")
    return tuple(sorted(((k, int(v)) for k, v in offsets.items()), key=lambda kv: repr(kv[0])))


@dataclass(frozen=True)
class StartPosition:
    """Where each partition's read begins; build it with the class methods.

    Attributes:
        kind: ``committed``, ``earliest``, ``latest``, ``timestamp`` or ``offsets``.
        timestamp_ms: For ``timestamp``: the first record with a timestamp at or after it.
        offsets: For ``offsets``: ``(partition or (topic, partition), offset)`` pairs.
        fallback: For ``committed``: where partitions without a committed offset begin.
    """

    kind: Literal["committed", "earliest", "latest", "timestamp", "offsets"]
    timestamp_ms: int | None = None
    offsets: tuple[tuple[OffsetKey, int], ...] = ()
    fallback: Literal["earliest", "latest"] = "earliest"

    @classmethod
    def committed(cls, fallback: Literal["earliest", "latest"] = "earliest") -> StartPosition:
        """The consumer group's committed offsets (``group_id`` is required)."""
        if fallback not in ("earliest", "latest"):
            raise ValueError(f"fallback must be 'earliest' or 'latest', not {fallback!r}")
        return cls("committed", fallback=fallback)

    @classmethod
    def earliest(cls) -> StartPosition:
        """The oldest retained record of every partition."""
        return cls("earliest")

    @classmethod
    def latest(cls) -> StartPosition:
        """The end of every partition when the pipeline is built: only records produced later."""
        return cls("latest")

    @classmethod
    def at_timestamp(cls, when: int | float | dt.datetime) -> StartPosition:
        """The first record whose timestamp is at or after ``when`` (epoch ms or aware datetime)."""
        return cls("timestamp", timestamp_ms=_millis(when))

    @classmethod
    def at_offsets(cls, offsets: Mapping[OffsetKey, int]) -> StartPosition:
        """Explicit offsets for every partition, keyed by partition (one topic) or (topic, p)."""
        return cls("offsets", offsets=_frozen_offsets(offsets))


@dataclass(frozen=True)
class StopPosition:
    """Where each partition's read ends (exclusive); build it with the class methods.

    Attributes:
        kind: ``offsets``, ``timestamp``, ``end`` (the end offsets at launch), ``idle`` or
            ``records`` (Java engine only).
        timestamp_ms: For ``timestamp``: stop before the first record at or after it.
        offsets: For ``offsets``: ``(partition or (topic, partition), offset)`` pairs.
        idle_seconds: For ``idle``: stop a partition after this long without new records.
        max_records: For ``records``: stop after this many records over all partitions.
    """

    kind: Literal["offsets", "timestamp", "end", "idle", "records"]
    timestamp_ms: int | None = None
    offsets: tuple[tuple[OffsetKey, int], ...] = ()
    idle_seconds: float | None = None
    max_records: int | None = None

    @classmethod
    def at_offsets(cls, offsets: Mapping[OffsetKey, int]) -> StopPosition:
        """Explicit end offsets (exclusive) for every partition."""
        return cls("offsets", offsets=_frozen_offsets(offsets))

    @classmethod
    def at_timestamp(cls, when: int | float | dt.datetime) -> StopPosition:
        """Before the first record at or after ``when``; resolved to offsets at launch.

        Records produced after launch are not read even if their timestamp is earlier: the cut is
        by offset, which is exact when timestamps grow with offsets within a partition.
        """
        return cls("timestamp", timestamp_ms=_millis(when))

    @classmethod
    def at_end(cls) -> StopPosition:
        """Up to the end offsets at launch: a catch-up read that never waits for new records."""
        return cls("end")

    @classmethod
    def when_idle(cls, seconds: float) -> StopPosition:
        """End a partition once it returned no new records for ``seconds`` in a row."""
        if seconds <= 0:
            raise ValueError("idle seconds must be positive")
        return cls("idle", idle_seconds=float(seconds))

    @classmethod
    def after_records(cls, count: int) -> StopPosition:
        """Java engine only: stop after ``count`` records in total (KafkaIO max_num_records)."""
        if count <= 0:
            raise ValueError("count must be positive")
        return cls("records", max_records=int(count))


# -- launch-time planning -------------------------------------------------------------------------


class PartitionRead(NamedTuple):
    """One partition's offsets to read: ``[start, stop)``, ``stop`` None for open-ended."""

    topic: str
    partition: int
    start: int
    stop: int | None


def _consumer_config(
    bootstrap: str, group_id: str | None, extra: Mapping[str, Any] | None
) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        # librdkafka wants a group even for assign(); nothing is committed without group_id.
        "group.id": group_id or "_backbone_kafka_source",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        # Only reached when a start offset fell out of retention before it was read.
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        # One fetch is in flight per broker, and the broker holds it up to this long when the
        # partitions it asks for have nothing new. Readers reassign the consumer to another
        # partition at every process call; librdkafka's 500 ms default would make the first
        # poll after a switch come back empty.
        "fetch.wait.max.ms": 100,
        "log_level": 0,
        **(extra or {}),
    }


def _resolve_offsets(
    what: str, pairs: tuple[tuple[OffsetKey, int], ...], partitions: list[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    topics = sorted({t for t, _ in partitions})
    resolved: dict[tuple[str, int], int] = {}
    for key, offset in pairs:
        if isinstance(key, int):
            if len(topics) != 1:
                raise ValueError(f"{what} offsets keyed by partition need exactly one topic")
            key = (topics[0], key)
        resolved[(key[0], int(key[1]))] = offset
    unknown = sorted(set(resolved) - set(partitions))
    if unknown:
        raise ValueError(f"{what} offsets name partitions that do not exist: {unknown}")
    missing = sorted(set(partitions) - set(resolved))
    if missing:
        raise ValueError(f"{what} offsets must name every partition; missing {missing}")
    return resolved


def _list_partitions(
    consumer: Any, bootstrap: str, topics: Sequence[str], timeout: float
) -> list[tuple[str, int]]:
    from confluent_kafka import KafkaException

    try:
        # All topics, not list_topics(topic): asking for one topic may auto-create it.
        metadata = consumer.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaUnavailable(
            f"Kafka at {bootstrap} is unreachable (no metadata within {timeout:g}s): {exc}"
        ) from exc
    partitions = []
    for topic in topics:
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            raise KafkaUnavailable(f"topic {topic!r} does not exist on Kafka at {bootstrap}")
        partitions += [(topic, p) for p in sorted(info.partitions)]
    return partitions


def plan_partition_reads(
    bootstrap: str,
    topics: str | Sequence[str],
    start: StartPosition,
    stop: StopPosition | None = None,
    group_id: str | None = None,
    consumer_config: Mapping[str, Any] | None = None,
    timeout: float = 10.0,
) -> list[PartitionRead]:
    """Validate the broker and topics and resolve ``start``/``stop`` to offsets, now.

    Start offsets are clamped to the retained range ``[low, high]`` of each partition, except
    explicit ones, which must lie inside it.

    Raises:
        KafkaUnavailable: the broker does not answer within ``timeout`` or a topic is missing.
        ValueError: inconsistent positions (explicit offsets missing a partition or out of range,
            ``committed`` without ``group_id``, a Java-only stop).
    """
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    topics = [topics] if isinstance(topics, str) else list(topics)
    if not topics:
        raise ValueError("no topics given")
    if start.kind == "committed" and not group_id:
        raise ValueError("StartPosition.committed() needs a group_id")
    if stop is not None and stop.kind == "records":
        raise ValueError(
            "StopPosition.after_records() is a Java-engine stop; the python engine stops at "
            "offsets, a timestamp or when idle"
        )
    consumer = Consumer(_consumer_config(bootstrap, group_id, consumer_config))
    try:
        partitions = _list_partitions(consumer, bootstrap, topics, timeout)
        try:
            bounds = {
                tp: consumer.get_watermark_offsets(TopicPartition(*tp), timeout=timeout)
                for tp in partitions
            }
            starts = _start_offsets(consumer, start, partitions, bounds, timeout)
            stops = _stop_offsets(consumer, stop, partitions, bounds, timeout)
        except KafkaException as exc:
            raise KafkaUnavailable(
                f"Kafka at {bootstrap} did not answer offset queries for {topics}: {exc}"
            ) from exc
    finally:
        consumer.close()
    plan = []
    for tp in partitions:
        begin, end = starts[tp], stops.get(tp)
        if end is not None and end < begin:
            if stop is not None and stop.kind == "offsets":
                raise ValueError(f"stop offset {end} of {tp} is before its start offset {begin}")
            end = begin  # a stop timestamp before the start: nothing to read
        plan.append(PartitionRead(tp[0], tp[1], begin, end))
    return plan


def _start_offsets(
    consumer: Any,
    start: StartPosition,
    partitions: list[tuple[str, int]],
    bounds: dict[tuple[str, int], tuple[int, int]],
    timeout: float,
) -> dict[tuple[str, int], int]:
    from confluent_kafka import TopicPartition

    if start.kind == "earliest":
        return {tp: bounds[tp][0] for tp in partitions}
    if start.kind == "latest":
        return {tp: bounds[tp][1] for tp in partitions}
    if start.kind == "offsets":
        explicit = _resolve_offsets("start", start.offsets, partitions)
        for tp, offset in explicit.items():
            low, high = bounds[tp]
            if not low <= offset <= high:
                raise ValueError(f"start offset {offset} of {tp} is outside [{low}, {high}]")
        return explicit
    if start.kind == "timestamp":
        found = consumer.offsets_for_times(
            [TopicPartition(t, p, start.timestamp_ms) for t, p in partitions], timeout=timeout
        )
    else:  # committed
        found = consumer.committed([TopicPartition(t, p) for t, p in partitions], timeout=timeout)
    result = {}
    for tp in found:
        low, high = bounds[(tp.topic, tp.partition)]
        if tp.offset < 0:  # no committed offset / no record at or after the timestamp
            offset = low if start.kind == "committed" and start.fallback == "earliest" else high
        else:
            offset = min(max(tp.offset, low), high)
        result[(tp.topic, tp.partition)] = offset
    return result


def _stop_offsets(
    consumer: Any,
    stop: StopPosition | None,
    partitions: list[tuple[str, int]],
    bounds: dict[tuple[str, int], tuple[int, int]],
    timeout: float,
) -> dict[tuple[str, int], int]:
    from confluent_kafka import TopicPartition

    if stop is None or stop.kind == "idle":
        return {}
    if stop.kind == "offsets":
        return _resolve_offsets("stop", stop.offsets, partitions)
    if stop.kind == "end":
        return {key: high for key, (_, high) in bounds.items()}
    found = consumer.offsets_for_times(
        [TopicPartition(t, p, stop.timestamp_ms) for t, p in partitions], timeout=timeout
    )
    return {
        (tp.topic, tp.partition): tp.offset
        if tp.offset >= 0
        else bounds[(tp.topic, tp.partition)][1]
        for tp in found
    }


# -- engine choice --------------------------------------------------------------------------------


class KafkaIOOptions(PipelineOptions):
    """``--kafka_io=python|java``: the engine of every ``ReadFromKafkaEvents`` in the pipeline."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        parser.add_argument(
            "--kafka_io",
            choices=_ENGINES,
            default=None,
            help="Kafka read engine: python (splittable DoFn, default on Prism and the direct "
            "runner) or java (Beam's Java KafkaIO, default and only choice on Flink).",
        )
        parser.add_argument(
            "--kafka_expansion_service",
            default=None,
            help="host:port of the Java expansion service that expands KafkaIO (java engine): "
            f"the Flink job server's expansion port. Default {DEFAULT_EXPANSION_SERVICE}.",
        )


def kafka_io_args(engine: Engine) -> list[str]:
    """The command-line options that select ``engine``, e.g. ``["--kafka_io=java"]``."""
    if engine not in _ENGINES:
        raise ValueError(f"unknown Kafka engine {engine!r}; choose python or java")
    return [f"--kafka_io={engine}"]


def kafka_io_engine(options: PipelineOptions) -> Engine | None:
    """The engine chosen with ``--kafka_io``, or None when the option is absent."""
    return options.view_as(KafkaIOOptions).kafka_io


@lru_cache(maxsize=16)
def _job_service_is_flink(endpoint: str) -> bool:
    """Ask a portable job service for its options: the Flink job server names ``flink_master``."""
    import grpc
    from apache_beam.portability.api import beam_job_api_pb2, beam_job_api_pb2_grpc

    with grpc.insecure_channel(endpoint) as channel:
        try:
            response = beam_job_api_pb2_grpc.JobServiceStub(channel).DescribePipelineOptions(
                beam_job_api_pb2.DescribePipelineOptionsRequest(), timeout=10
            )
        except grpc.RpcError as exc:
            _LOG.warning("could not ask the job service at %s for its runner: %s", endpoint, exc)
            return False
    return any(option.name == "flink_master" for option in response.options)


def runner_is_flink(options: PipelineOptions) -> bool:
    """Whether ``options`` run the pipeline on Flink (FlinkRunner, or a Flink job server)."""
    runner = options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) or runner is None else type(runner).__name__
    name = (name or "").lower()
    if "flink" in name:
        return True
    endpoint = options.view_as(PortableOptions).job_endpoint
    if name.startswith("portable") and endpoint and endpoint != "embed":
        return _job_service_is_flink(endpoint)
    return False


def _choose_engine(requested: Engine | None, options: PipelineOptions) -> Engine:
    engine = requested or kafka_io_engine(options)
    on_flink = runner_is_flink(options)
    if engine is None:
        return "java" if on_flink else "python"
    if engine not in _ENGINES:
        raise ValueError(f"unknown Kafka engine {engine!r}; choose python or java")
    if engine == "python" and on_flink:
        raise ValueError(
            "--kafka_io=python cannot run on the flink runner: unbounded Python splittable DoFns "
            "are broken on portable Flink before Beam 2.76 (apache/beam#19637, #22809); use "
            "--kafka_io=java (the default on Flink)"
        )
    if engine == "java" and not on_flink:
        raise ValueError(
            "--kafka_io=java needs the flink runner: the expanded Java KafkaIO runs in an "
            "EMBEDDED Java environment that only the Flink job server provides; use "
            "--kafka_io=python on Prism and the direct runner"
        )
    return engine


# -- python engine: the splittable DoFn ---------------------------------------------------------

# Latest end offset each partition's reader saw, per worker process: the end-offset estimate
# behind the size of open-ended restrictions, without another broker round trip.
_END_OFFSETS: dict[tuple[str, int], int] = {}


class _PartitionTracker(OffsetRestrictionTracker):
    """An offset-range tracker that splits only at checkpoints (``fraction_of_remainder == 0``).

    A runner-initiated split in the middle of a partition (Prism asks for 0.5 when a bundle looks
    slow) would give two readers of one partition and committed offsets from the residual before
    the primary is done; refusing it keeps one reader per partition, in offset order.
    """

    def try_split(self, fraction_of_remainder: float) -> Any:
        if fraction_of_remainder > 0:
            return None
        return super().try_split(0)

    def is_bounded(self) -> bool:
        return self._range.stop < UNBOUNDED

    def current_progress(self) -> RestrictionProgress:
        if self.is_bounded():
            progress = super().current_progress()
            if progress.completed_work + progress.remaining_work <= 0:
                # An empty range reports 0 of 0, which Beam's split arithmetic turns into NaN
                # (seen on Prism with dynamic splits): report it as finished instead.
                return RestrictionProgress(completed=1.0, remaining=0.0)
            return progress
        # Open-ended: what is left is unknown here, but never nothing while the read runs.
        last = self._current_position if self._current_position is not None else -1
        return RestrictionProgress(
            completed=float(max(last + 1 - self._range.start, 0)), remaining=1.0
        )


class _PartitionRestrictions(beam.transforms.core.RestrictionProvider):
    def initial_restriction(self, element: PartitionRead) -> OffsetRange:
        return OffsetRange(element.start, UNBOUNDED if element.stop is None else element.stop)

    def create_tracker(self, restriction: OffsetRange) -> _PartitionTracker:
        return _PartitionTracker(restriction)

    def split(self, element: PartitionRead, restriction: OffsetRange) -> Iterator[OffsetRange]:
        yield restriction  # one reader per partition

    def restriction_size(self, element: PartitionRead, restriction: OffsetRange) -> float:
        if restriction.stop < UNBOUNDED:
            return float(max(restriction.stop - restriction.start, 0))
        end = _END_OFFSETS.get((element.topic, element.partition))
        return float(max(end - restriction.start, 0)) if end is not None else 1.0


_NOT_STARTED = -(2**62)  # a planned partition this process has not read yet: holds the watermark
_DONE = 2**62  # a partition whose bounded read finished: holds nothing


class _WatermarkBoard:
    """The durable watermarks of one read's partitions in this worker process.

    Why: Prism 2.62 sets a splittable DoFn stage's output watermark to the watermark reported
    with the residuals of the bundle that finished last (``stage.estimatedOutput`` in its
    elementmanager.go), not to the minimum over all restrictions. With partitions in separate
    bundles, one partition's watermark would then overtake the others' and make their records
    late. Every reader therefore reports the minimum of its own watermark and the other
    partitions' entries here: never ahead of any partition, whichever bundle reports last.

    A partition's entry moves only in its bundle finalizer, i.e. once the runner has committed
    the bundle's output. Published from inside a running bundle, it would let a concurrent
    bundle of another partition carry the watermark past records still in flight (seen on
    Prism: a window fired with one partition's records, the other's came as a late pane).

    It needs every partition read in one worker process, which is how Prism (LOOPBACK) and
    the direct runner run the Python SDK harness; with several SDK processes a partition read
    elsewhere would hold the watermark forever, so turn it off there (``align_watermarks=False``).
    """

    _lock = threading.Lock()
    _reads: ClassVar[dict[str, dict[tuple[str, int], int]]] = {}

    @classmethod
    def publish(
        cls, read_id: str, planned: frozenset[tuple[str, int]], key: tuple[str, int], ms: int
    ) -> None:
        """Record ``key``'s watermark (ms), now that the output behind it is durable."""
        with cls._lock:
            board = cls._board(read_id, planned)
            board[key] = max(board.get(key, _NOT_STARTED), ms)

    @classmethod
    def bound(
        cls, read_id: str, planned: frozenset[tuple[str, int]], key: tuple[str, int], ms: int
    ) -> int:
        """``ms`` capped by every other partition's durable watermark."""
        with cls._lock:
            board = cls._board(read_id, planned)
            return min([ms, *(v for k, v in board.items() if k != key)])

    @classmethod
    def _board(
        cls, read_id: str, planned: frozenset[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        """The read's entries (call with the lock held); planned partitions start unreported."""
        return cls._reads.setdefault(read_id, dict.fromkeys(planned, _NOT_STARTED))


_REJECT_CODES: frozenset[str] = frozenset(
    {"UNKNOWN_TOPIC_OR_PART", "_UNKNOWN_TOPIC", "_UNKNOWN_PARTITION", "TOPIC_AUTHORIZATION_FAILED"}
)


class _ReadPartitionFn(beam.DoFn):
    """Reads one partition per element within its offset restriction (bounded reads)."""

    def __init__(
        self,
        bootstrap: str,
        group_id: str | None,
        consumer_config: Mapping[str, Any] | None,
        commit_offsets: bool,
        max_out_of_orderness: float,
        idle_stop_seconds: float | None,
        checkpoint_every: float,
        read_id: str | None = None,
        planned: frozenset[tuple[str, int]] = frozenset(),
        poll_timeout: float = 0.25,
        batch_size: int = 1000,
        idle_resume_delay: float = 0.5,
    ) -> None:
        self._bootstrap = bootstrap
        self._group_id = group_id
        self._config = dict(consumer_config or {})
        self._commit = commit_offsets and group_id is not None
        self._bound_ms = int(max_out_of_orderness * 1000)
        self._idle_stop = idle_stop_seconds
        self._checkpoint_every = checkpoint_every
        self._poll_timeout = poll_timeout
        self._batch_size = batch_size
        self._idle_resume_delay = idle_resume_delay
        self._read_id = read_id  # None: each partition's own watermark (no alignment)
        self._planned = planned
        self._consumer: Any = None
        self._committed: dict[tuple[str, int], int] = {}
        self._lock: Any = None
        self._records_read = Metrics.counter("kafka", "records_read")
        self._commits = Metrics.counter("kafka", "offset_commits")
        self._commit_failures = Metrics.counter("kafka", "offset_commit_failures")

    def setup(self) -> None:
        from confluent_kafka import Consumer

        self._lock = threading.Lock()
        self._consumer = Consumer(_consumer_config(self._bootstrap, self._group_id, self._config))

    def teardown(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def process(
        self,
        element: PartitionRead,
        # Positional DoFn params go first: Beam passes the tracker and watermark by keyword.
        finalizer: Any = beam.DoFn.BundleFinalizerParam,
        tracker: Any = beam.DoFn.RestrictionParam(_PartitionRestrictions()),
        watermark: Any = beam.DoFn.WatermarkEstimatorParam(
            ManualWatermarkEstimator.default_provider()
        ),
    ) -> Iterator[TimestampedValue]:
        # The loop lives in _read: Beam warns about process methods that mix yield and return.
        yield from self._read(element, finalizer, tracker, watermark)

    def _read(
        self, element: PartitionRead, finalizer: Any, tracker: Any, watermark: Any
    ) -> Iterator[TimestampedValue]:
        """Read the restriction's offsets until the stop, a checkpoint or the idle stop."""
        from confluent_kafka import TopicPartition

        restriction = tracker.current_restriction()
        topic, partition = element.topic, element.partition
        key = (topic, partition)
        # The finalizer commits the offset this call reached. It is registered up front, even
        # for calls that read nothing: Prism sends FinalizeBundle for every bundle of a stage
        # that asks for finalization, and the SDK rejects it for a bundle without callbacks.
        reached = [restriction.start]
        # This call's own watermark (ms) for the board, published once the bundle is durable.
        progress = [_NOT_STARTED]
        finalizer.register(lambda: self._on_durable(key, restriction, reached[0], progress[0]))
        if restriction.start >= restriction.stop:
            progress[0] = _DONE
            return
        consumer = self._consumer
        consumer.assign([TopicPartition(topic, partition, restriction.start)])
        next_offset = restriction.start
        read = 0
        done = False
        deadline = time.monotonic() + self._checkpoint_every
        idle_since: float | None = None
        try:
            while True:
                messages = consumer.consume(self._batch_size, timeout=self._poll_timeout)
                if messages:
                    idle_since = None
                    newest_ms = -1
                    for msg in messages:
                        error = msg.error()
                        if error is not None:
                            self._on_error(error, topic, partition)
                            continue
                        offset = msg.offset()
                        if msg.partition() != partition or msg.topic() != topic:
                            continue  # left over from this consumer's previous assignment
                        if offset < next_offset:
                            continue
                        if not tracker.try_claim(offset):
                            done = True  # at or past the stop offset
                            return
                        next_offset = offset + 1
                        _, ts_ms = msg.timestamp()
                        if ts_ms < 0:  # TIMESTAMP_NOT_AVAILABLE: stamp with processing time
                            ts_ms, event_ms = -1, int(time.time() * 1000)
                        else:
                            event_ms = ts_ms
                        newest_ms = max(newest_ms, event_ms)
                        read += 1
                        yield TimestampedValue(
                            KafkaRecord(
                                msg.key(),
                                msg.value() or b"",  # a tombstone's null value
                                topic,
                                partition,
                                offset,
                                ts_ms,
                                *replay_marks(msg.headers()),
                            ),
                            Timestamp(micros=event_ms * 1000),
                        )
                        if next_offset >= restriction.stop:
                            done = True  # claimed the last offset of a bounded range
                            return
                    if newest_ms >= 0:
                        progress[0] = self._advance(watermark, key, newest_ms - self._bound_ms)
                    if time.monotonic() >= deadline:
                        # librdkafka's end offset from the last fetch response: no round trip.
                        end = consumer.get_watermark_offsets(
                            TopicPartition(topic, partition), cached=True
                        )[1]
                        if end >= 0:
                            _END_OFFSETS[key] = end
                        tracker.defer_remainder()
                        return
                    continue
                # An empty poll. Idle only if the reader has no backlog: right after assign() the
                # first fetch can still be on its way while the partition has records.
                now = time.monotonic()
                end = self._end_offset(consumer, topic, partition)
                if end is None:
                    tracker.defer_remainder(Duration(seconds=self._idle_resume_delay))
                    return
                _END_OFFSETS[key] = end
                position = consumer.position([TopicPartition(topic, partition)])[0].offset
                position = max(position, next_offset)
                if restriction.stop < UNBOUNDED and position >= restriction.stop:
                    # Only control records (transaction markers) were left before the stop.
                    tracker.try_claim(restriction.stop)  # False, but marks the range claimed
                    done = True
                    return
                if position < end:
                    idle_since = None
                    if now >= deadline:
                        tracker.defer_remainder()
                        return
                    continue
                idle_since = idle_since if idle_since is not None else now
                # The idle rule: nothing to read, so the next record's event time is about now.
                progress[0] = self._advance(
                    watermark, key, int(time.time() * 1000) - self._bound_ms
                )
                if self._idle_stop is not None:
                    if now - idle_since >= self._idle_stop:
                        tracker.try_claim(restriction.stop)  # ends the open-ended range
                        done = True
                        return
                    continue  # keep polling: the idle clock runs within this call
                tracker.defer_remainder(Duration(seconds=self._idle_resume_delay))
                return
        finally:
            self._records_read.inc(read)
            reached[0] = next_offset
            if done:
                progress[0] = _DONE

    def _advance(self, watermark: Any, key: tuple[str, int], candidate_ms: int) -> int:
        """Move the partition's watermark towards ``candidate_ms``; return the candidate."""
        reported = candidate_ms
        if self._read_id is not None:
            reported = _WatermarkBoard.bound(self._read_id, self._planned, key, candidate_ms)
            if reported <= _NOT_STARTED:
                return candidate_ms  # some partition of this read has not reported yet
        as_timestamp = Timestamp(micros=reported * 1000)
        current = watermark.current_watermark()
        if current is None or as_timestamp > current:
            watermark.set_watermark(as_timestamp)
        return candidate_ms

    def _on_durable(
        self, key: tuple[str, int], restriction: OffsetRange, offset: int, watermark_ms: int
    ) -> None:
        """Bundle finalizer: commit the offset and publish the partition's watermark.

        It runs once the runner has committed the output of the call that read up to ``offset``.
        """
        if self._read_id is not None and watermark_ms > _NOT_STARTED:
            _WatermarkBoard.publish(self._read_id, self._planned, key, watermark_ms)
        self._commit_offset(key[0], key[1], restriction, offset)

    def _end_offset(self, consumer: Any, topic: str, partition: int) -> int | None:
        """The partition's end offset, or None while the broker cannot tell (e.g. no leader)."""
        from confluent_kafka import KafkaException, TopicPartition

        tp = TopicPartition(topic, partition)
        try:
            return consumer.get_watermark_offsets(tp, timeout=10)[1]
        except KafkaException:
            # A partition added after this consumer last refreshed its metadata is "unknown"
            # to it until the next refresh (5 minutes by default): refresh now and retry.
            self._check_topic(consumer, topic)
        try:
            return consumer.get_watermark_offsets(tp, timeout=10)[1]
        except KafkaException as exc:
            # The topic exists (checked above): a new partition without a leader yet, or a
            # broker restart. Try again at the next poll instead of failing the job.
            _LOG.warning("no end offset for %s[%d] yet: %s", topic, partition, exc)
            return None

    def _check_topic(self, consumer: Any, topic: str) -> None:
        """Refresh the consumer's metadata of ``topic``; raise if it is gone."""
        # Consumers never auto-create topics (allow.auto.create.topics defaults to false).
        metadata = consumer.list_topics(topic, timeout=10)
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            raise KafkaTopicDeleted(
                f"topic {topic!r} was deleted from Kafka at {self._bootstrap} while it was read"
            )

    def _on_error(self, error: Any, topic: str, partition: int) -> None:
        if error.fatal() or error.name() in _REJECT_CODES:
            self._check_topic(self._consumer, topic)
            raise KafkaUnavailable(
                f"reading {topic}[{partition}] from Kafka at {self._bootstrap} failed: {error}"
            )
        _LOG.warning("Kafka reported %s while reading %s[%d]; retrying", error, topic, partition)

    def _commit_offset(
        self, topic: str, partition: int, restriction: OffsetRange, offset: int
    ) -> None:
        """Runs once the runner has durably committed the bundle that read up to ``offset``."""
        from confluent_kafka import KafkaException, TopicPartition

        if not self._commit or offset <= restriction.start:
            return
        with self._lock:
            if self._committed.get((topic, partition), -1) >= offset:
                return  # a later bundle of this partition already committed further
            try:
                self._consumer.commit(
                    offsets=[TopicPartition(topic, partition, offset)], asynchronous=False
                )
            except (KafkaException, RuntimeError) as exc:
                # Never raise from a finalizer: the records are already processed, and the next
                # successful commit of this partition covers this one.
                self._commit_failures.inc()
                _LOG.warning(
                    "committing %s[%d]@%d for group %s failed: %s",
                    topic,
                    partition,
                    offset,
                    self._group_id,
                    exc,
                )
                return
            self._committed[(topic, partition)] = offset
            self._commits.inc()


class _ReadPartitionUnboundedFn(_ReadPartitionFn):
    """The same reader, declared unbounded: partitions without a stop position never finish."""

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        element: PartitionRead,
        # Positional DoFn params go first: Beam passes the tracker and watermark by keyword.
        finalizer: Any = beam.DoFn.BundleFinalizerParam,
        tracker: Any = beam.DoFn.RestrictionParam(_PartitionRestrictions()),
        watermark: Any = beam.DoFn.WatermarkEstimatorParam(
            ManualWatermarkEstimator.default_provider()
        ),
    ) -> Iterator[TimestampedValue]:
        yield from self._read(element, finalizer, tracker, watermark)


class _DiscoveryRounds(beam.transforms.core.RestrictionProvider):
    """Discovery rounds 0, 1, 2, ... as an open-ended offset range."""

    def initial_restriction(self, element: str) -> OffsetRange:
        return OffsetRange(0, UNBOUNDED)

    def create_tracker(self, restriction: OffsetRange) -> _PartitionTracker:
        return _PartitionTracker(restriction)

    def restriction_size(self, element: str, restriction: OffsetRange) -> float:
        return 1.0

    def truncate(self, element: str, restriction: OffsetRange) -> None:
        return None  # on drain, stop looking


class _DiscoverPartitionsFn(beam.DoFn):
    """Every ``every`` seconds, lists the topics' partitions and emits those unknown at launch.

    A splittable DoFn rather than ``PeriodicImpulse``: Prism 2.62 cannot run PeriodicImpulse
    (its element is a tuple, and Prism has no ``beam:coder:tuple:v1``). The watermark follows the
    wall clock, so the discovery branch never holds back the reads' watermark.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: list[str],
        known: frozenset[tuple[str, int]],
        group_id: str | None,
        from_committed: bool,
        consumer_config: Mapping[str, Any] | None,
        every: float,
    ) -> None:
        self._bootstrap = bootstrap
        self._topics = topics
        self._known = known
        self._group_id = group_id
        self._from_committed = from_committed
        self._config = dict(consumer_config or {})
        self._every = every
        self._consumer: Any = None

    def setup(self) -> None:
        from confluent_kafka import Consumer

        self._consumer = Consumer(_consumer_config(self._bootstrap, self._group_id, self._config))

    def teardown(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        seed: str,
        tracker: Any = beam.DoFn.RestrictionParam(_DiscoveryRounds()),
        watermark: Any = beam.DoFn.WatermarkEstimatorParam(
            ManualWatermarkEstimator.default_provider()
        ),
    ) -> Iterator[TimestampedValue]:
        yield from self._round(tracker, watermark)

    def _round(self, tracker: Any, watermark: Any) -> Iterator[TimestampedValue]:
        if not tracker.try_claim(tracker.current_restriction().start):
            return
        now = Timestamp.now()
        for keyed in self._new_partitions():
            yield TimestampedValue(keyed, now)
        current = watermark.current_watermark()
        if current is None or now > current:
            watermark.set_watermark(now)
        tracker.defer_remainder(Duration(seconds=self._every))

    def _new_partitions(self) -> list[tuple[str, PartitionRead]]:
        from confluent_kafka import KafkaException, TopicPartition

        try:
            metadata = self._consumer.list_topics(timeout=10)
        except KafkaException as exc:
            _LOG.warning("partition discovery: Kafka at %s: %s", self._bootstrap, exc)
            return []
        new = []
        for topic in self._topics:
            info = metadata.topics.get(topic)
            if info is None or info.error is not None:
                raise KafkaTopicDeleted(
                    f"topic {topic!r} was deleted from Kafka at {self._bootstrap} while it was read"
                )
            new += [(topic, p) for p in sorted(info.partitions) if (topic, p) not in self._known]
        committed = {}
        if new and self._from_committed:
            try:
                found = self._consumer.committed([TopicPartition(*tp) for tp in new], timeout=10)
            except KafkaException as exc:
                _LOG.info("partition discovery: committed offsets of %s: %s", new, exc)
                return []  # next round
            committed = {(tp.topic, tp.partition): tp.offset for tp in found}
        result = []
        for topic, partition in new:
            try:
                low, _ = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=10
                )
            except KafkaException as exc:
                # Right after it was added, a partition may have no leader yet: next round.
                _LOG.info("partition discovery: %s[%d] not ready: %s", topic, partition, exc)
                continue
            start = max(committed.get((topic, partition), -1), low)
            result.append((f"{topic}/{partition}", PartitionRead(topic, partition, start, None)))
        return result


class _FirstSightingFn(beam.DoFn):
    """Passes each partition through once: discovery repeats it on every tick."""

    SEEN = ReadModifyWriteStateSpec("seen", BooleanCoder())

    def __init__(self) -> None:
        self._found = Metrics.counter("kafka", "partitions_discovered")

    def process(
        self, keyed: tuple[str, PartitionRead], seen: Any = beam.DoFn.StateParam(SEEN)
    ) -> Iterator[PartitionRead]:
        if not seen.read():
            seen.write(True)
            self._found.inc()
            yield keyed[1]


# -- java engine ----------------------------------------------------------------------------------


class _EmbeddedJavaExpansionService:
    """An expansion service handle that makes expanded Java transforms run without Docker.

    ``ExternalTransform`` accepts any object with ``Expand``. This one forwards the request to
    the expansion service at ``address`` with ``defaultEnvironmentType=EMBEDDED`` added to the
    request's pipeline options (the job server's expansion service has no default of its own, so
    the request's wins), and drops the artifacts of the EMBEDDED environment from the response:
    they are the job server's own jar, which the Flink job already has on its classpath, and
    ``ExternalTransform`` would otherwise download it (~180 MB) into a new temporary folder per
    expansion and stage it again with the job.
    """

    def __init__(self, address: str) -> None:
        self.address = address

    def Expand(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        import grpc
        from apache_beam.portability.api import beam_expansion_api_pb2_grpc

        request.pipeline_options.update({"beam:option:default_environment_type:v1": _EMBEDDED_ENV})
        options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
        with grpc.insecure_channel(self.address, options=options) as channel:
            try:
                response = beam_expansion_api_pb2_grpc.ExpansionServiceStub(channel).Expand(
                    request, timeout=120
                )
            except grpc.RpcError as exc:
                raise KafkaUnavailable(
                    f"the Java expansion service at {self.address} (the Flink job server) did "
                    f"not answer: {exc}"
                ) from exc
        for env in response.components.environments.values():
            if env.urn == _EMBEDDED_ENV:
                del env.dependencies[:]
        return response

    def artifact_service(self) -> Any:
        # Only reached if an environment still has artifacts; serve them like the default stub.
        import grpc
        from apache_beam.portability.api import beam_artifact_api_pb2_grpc

        return beam_artifact_api_pb2_grpc.ArtifactRetrievalServiceStub(
            grpc.insecure_channel(self.address)
        )


_JAVA_RECORDS_READ = Metrics.counter("kafka", "records_read")


def _row_to_record(row: Any) -> TimestampedValue:
    # The same counter the python engine keeps, so job summaries read one name.
    _JAVA_RECORDS_READ.inc()
    record = KafkaRecord(
        row.key,
        row.value or b"",
        row.topic,
        row.partition,
        row.offset,
        row.timestamp,
        *replay_marks(getattr(row, "headers", None)),
    )
    return TimestampedValue(record, Timestamp(micros=max(row.timestamp, 0) * 1000))


# -- the transform --------------------------------------------------------------------------------


class ReadFromKafkaEvents(beam.PTransform):
    """Read Kafka topics as ``KafkaRecord`` elements timestamped with their record timestamps.

    Args:
        bootstrap: Bootstrap servers, ``host:port[,host:port]``.
        topics: One topic or several.
        group_id: Consumer group whose committed offsets ``StartPosition.committed()`` starts from
            and to which offsets are committed after the runner committed each bundle.
        start: Where to begin; default ``committed()`` with a ``group_id``, else ``earliest()``.
        stop: Where to end; None reads forever (an unbounded PCollection).
        max_out_of_orderness: Seconds a record's timestamp may lag the newest one seen on its
            partition before it counts as late (the watermark's distance).
        commit_offsets: Commit to ``group_id`` (no effect without one).
        discover_partitions_every: Seconds between looks for new partitions (python engine,
            reads without ``stop``); None turns discovery off.
        engine: ``python`` or ``java``; default ``--kafka_io``, else java on Flink, python
            elsewhere.
        consumer_config: Extra consumer settings (librdkafka names for python, Java client names
            for java).
        expansion_service: The Java expansion service (java engine); default
            ``--kafka_expansion_service``, else ``DEFAULT_EXPANSION_SERVICE``.
        checkpoint_every: Seconds a python reader keeps one partition before it checkpoints.
        align_watermarks: Python engine: every partition reports the minimum watermark over all
            partitions of the read in its worker process (see ``_WatermarkBoard``: Prism needs
            it). Turn off on runners that spread one read over several SDK processes.
        launch_timeout: Seconds to wait for the broker when the pipeline is built.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: str | Sequence[str],
        *,
        group_id: str | None = None,
        start: StartPosition | None = None,
        stop: StopPosition | None = None,
        max_out_of_orderness: float = 10.0,
        commit_offsets: bool = True,
        discover_partitions_every: float | None = 30.0,
        engine: Engine | None = None,
        consumer_config: Mapping[str, Any] | None = None,
        expansion_service: str | None = None,
        checkpoint_every: float = 1.0,
        align_watermarks: bool = True,
        launch_timeout: float = 10.0,
    ) -> None:
        super().__init__()
        self._bootstrap = bootstrap
        self._topics = [topics] if isinstance(topics, str) else list(topics)
        self._group_id = group_id
        self._start = start or (StartPosition.committed() if group_id else StartPosition.earliest())
        self._stop = stop
        self._bound = max_out_of_orderness
        self._commit = commit_offsets
        self._discover_every = discover_partitions_every
        self._engine = engine
        self._config = dict(consumer_config or {})
        self._expansion_service = expansion_service
        self._checkpoint_every = checkpoint_every
        self._align = align_watermarks
        self._launch_timeout = launch_timeout

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection[KafkaRecord]:
        engine = _choose_engine(self._engine, pbegin.pipeline.options)
        if engine == "java":
            return self._expand_java(pbegin)
        return self._expand_python(pbegin)

    def _expand_python(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection[KafkaRecord]:
        plan = plan_partition_reads(
            self._bootstrap,
            self._topics,
            self._start,
            self._stop,
            self._group_id,
            self._config,
            self._launch_timeout,
        )
        fn_args = (
            self._bootstrap,
            self._group_id,
            self._config,
            self._commit,
            self._bound,
            self._stop.idle_seconds if self._stop is not None else None,
            self._checkpoint_every,
            uuid.uuid4().hex if self._align else None,
            frozenset((r.topic, r.partition) for r in plan),
        )
        reads = (
            pbegin
            | "PlannedPartitions" >> beam.Create(plan).with_output_types(PartitionRead)
            | "SpreadPartitions" >> beam.Reshuffle()
        )
        if self._stop is None and self._discover_every:
            discovered = (
                pbegin
                | "DiscoverySeed" >> beam.Create([",".join(self._topics)])
                | "DiscoverPartitions"
                >> beam.ParDo(
                    _DiscoverPartitionsFn(
                        self._bootstrap,
                        self._topics,
                        frozenset((r.topic, r.partition) for r in plan),
                        self._group_id,
                        self._start.kind == "committed",
                        self._config,
                        self._discover_every,
                    )
                ).with_output_types(beam.typehints.KV[str, PartitionRead])
                | "FirstSighting" >> beam.ParDo(_FirstSightingFn()).with_output_types(PartitionRead)
            )
            reads = (reads, discovered) | "AllPartitions" >> beam.Flatten()
        fn = (
            _ReadPartitionUnboundedFn(*fn_args)
            if self._stop is None
            else _ReadPartitionFn(*fn_args)
        )
        return reads | "ReadPartitions" >> beam.ParDo(fn).with_output_types(KafkaRecord)

    def _expand_java(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection[KafkaRecord]:
        from apache_beam.io.kafka import ReadFromKafka

        start, stop = self._start, self._stop
        if stop is not None and stop.kind == "end" and start.kind == "earliest":
            # From the earliest offsets, "what the topics hold now" is a record count, the one
            # bound KafkaIO has.
            plan = plan_partition_reads(
                self._bootstrap, self._topics, start, stop, None, self._config, self._launch_timeout
            )
            total = sum(r.stop - r.start for r in plan)
            if total == 0:
                raise ValueError(f"StopPosition.at_end(): {self._topics} hold no records")
            stop = StopPosition.after_records(total)
        if stop is not None and stop.kind != "records":
            raise ValueError(
                f"the java engine (KafkaIO) cannot stop at {stop.kind}; use "
                "StopPosition.after_records(n) or no stop, or the python engine"
            )
        if start.kind == "offsets":
            raise ValueError("the java engine (KafkaIO) cannot start at explicit offsets")
        if start.kind == "latest" and self._group_id:
            raise ValueError(
                "the java engine cannot start at latest with a group_id: KafkaIO would resume "
                "from the group's committed offsets instead"
            )
        # Validate now, in this process: KafkaIO itself would fail only inside the Flink job.
        empty = _empty_partitions_now(self._bootstrap, self._topics, self._launch_timeout)
        if empty:
            shown = ", ".join(f"{t}/{p}" for t, p in empty[:8]) + (" ..." if len(empty) > 8 else "")
            # KafkaIO's create-time policy moves an idle partition's watermark to the clock
            # only after it has read a record there (CustomTimestampPolicyWithLimitedDelay).
            _LOG.warning(
                "java engine (KafkaIO): %d empty partition(s) (%s) hold the read's watermark at "
                "its minimum until each receives a record: event-time windows and timers "
                "downstream do not fire before that",
                len(empty),
                shown,
            )
        config = {"bootstrap.servers": self._bootstrap, **self._config}
        if start.kind == "committed":
            config["group.id"] = self._group_id
            config["auto.offset.reset"] = start.fallback
        else:
            if self._group_id:
                config["group.id"] = self._group_id
            config["auto.offset.reset"] = "latest" if start.kind == "latest" else "earliest"
        start_read_time = None
        if start.kind == "timestamp":
            start_read_time = start.timestamp_ms
        elif start.kind == "earliest" and self._group_id:
            start_read_time = 0  # earliest even when the group has committed offsets
        rows = pbegin | "KafkaIO" >> ReadFromKafka(
            consumer_config={k: str(v) for k, v in config.items()},
            topics=self._topics,
            start_read_time=start_read_time,
            max_num_records=stop.max_records if stop is not None else None,
            commit_offset_in_finalize=bool(self._commit and self._group_id),
            timestamp_policy=ReadFromKafka.create_time_policy,
            with_metadata=True,
            expansion_service=_EmbeddedJavaExpansionService(
                self._expansion_service
                or pbegin.pipeline.options.view_as(KafkaIOOptions).kafka_expansion_service
                or DEFAULT_EXPANSION_SERVICE
            ),
        )
        return rows | "ToKafkaRecord" >> beam.Map(_row_to_record).with_output_types(KafkaRecord)


def _empty_partitions_now(
    bootstrap: str, topics: list[str], timeout: float
) -> list[tuple[str, int]]:
    """Validate the broker and ``topics`` now; the partitions that hold no record."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    # Java client settings (e.g. sasl.jaas.config) mean nothing to librdkafka: validate with
    # the bootstrap address alone.
    consumer = Consumer(_consumer_config(bootstrap, None, None))
    try:
        empty = []
        for topic, partition in _list_partitions(consumer, bootstrap, topics, timeout):
            try:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=timeout
                )
            except KafkaException as exc:
                where = f"{topic}/{partition} on Kafka at {bootstrap}"
                raise KafkaUnavailable(f"{where}: {exc}") from exc
            if low == high:
                empty.append((topic, partition))
        return empty
    finally:
        consumer.close()
