"""The contract every sink of the backbone keeps, and the machinery that keeps it.

A sink writes typed rows (``NamedTuple``s; field names are column names) that carry a
deterministic key and an integer ``version`` (event time in ms, a source LSN or offset). The
contract, the same for every store:

* **Batching.** Rows are buffered per bundle and written in batches of ``SinkPolicy.batch_size``
  and at the end of every bundle (``finish_bundle``), so a bundle is done only when its rows are
  stored or dead-lettered.
* **Last writer wins by version, never increments.** A row is applied only if its version is
  newer than the stored one, so a replay or an out-of-order retry never moves state backwards
  and never double-counts. Rows that lose are counted as ``skipped_stale``. Within one batch only
  the newest row per key is sent (the others are ``skipped_stale`` too); equal versions are
  broken by the writer's ``tiebreak`` (e.g. the evidence a row carries), then by the row's JSON,
  so the choice does not depend on arrival order and agrees with the store's own guard.
* **Transient errors are retried** with exponential backoff and jitter (tenacity), per batch.
* **A circuit breaker** (``CircuitBreaker``) counts batches that still failed after their
  retries. After ``breaker_threshold`` of them in a row it opens: rows go straight to dead letters
  with ``error_class="sink_unavailable"``, without waiting, until ``breaker_reset_s`` has passed;
  then one batch is sent as a probe (one attempt, no retries). A successful probe closes the
  breaker; a failed one re-opens it for another ``breaker_reset_s``.
* **Permanent errors** (constraint or data errors) dead-letter the rows that caused them with
  the error's class as ``error_class``. When a store rejects a whole batch for one bad row (SQL
  does), the batch is bisected until the bad rows are isolated and the good ones are written.
* **Counters** per sink step, namespace = pipeline, names ``<step>.written``,
  ``<step>.skipped_stale``, ``<step>.failed`` (attempted and failed), ``<step>.dead_lettered``
  (failed + not attempted because the breaker was open), ``<step>.retries`` and
  ``<step>.breaker_opened``. For every batch: rows in = written + skipped_stale + dead_lettered.
* **Dead letters out.** Each ``WriteTo...`` transform returns a PCollection of ``DeadLetter``
  (payload = the row as JSON bytes, see ``encode_row``; origin ``SINK`` with
  ``sink="<store>:<table>"``; stage = the step label; ``event_id`` = ``<table>/<key>@<version>``)
  for the pipeline to merge into its dead-letter sink. ``decode_row`` turns a payload back into
  the row for a replay.
* **Replays.** A ``SinkTarget`` (``PostgresTarget``, ``BigtableTarget``, ``GraphTarget``) names
  one store table with everything needed to write it again: ``decode`` a payload, make a
  ``writer``, or the ``transform`` a pipeline applies. Each pipeline module declares
  ``sink_targets(opts) -> {step label: SinkTarget}``; ``backbone dlq replay`` writes sink dead
  letters back through the same versioned writer (safe: newest version wins).

A store plugs in by implementing ``BatchWriter`` (open a client, write one batch, classify an
exception, reset after a transient failure) and wrapping it in ``VersionedWriteFn``.

Example::

    from retail_backbone.io.sinks.base import SinkPolicy
    from retail_backbone.io.sinks.postgres import STOCK_LEVELS, WriteToPostgresVersioned

    failed = levels | "WriteStockLevels" >> WriteToPostgresVersioned(
        "env:INVENTORY_PG_DSN", STOCK_LEVELS, pipeline="inventory",
        policy=SinkPolicy(batch_size=1000, breaker_threshold=3, breaker_reset_s=30))
    (decoded.dead_letters, failed) | "MergeDeadLetters" >> beam.Flatten()

Why a small state machine and not pybreaker: pybreaker wraps a call and raises
``CircuitBreakerError`` when open, counts every call (we count batches after their retries and
send a single-attempt probe), and times its reset with the wall clock (``datetime.now``), which
cannot be injected, so its half-open transition can only be tested by sleeping. Its shared
(Redis) state storage does not fit Beam either: a breaker lives in one DoFn instance, from
``setup()`` to ``teardown()``, on one worker thread, and each instance finds out about an outage
(and its end) by itself (so with W worker threads an outage costs up to W x threshold batches
of retries before every breaker is open). A 40-line breaker with an injectable monotonic clock
says exactly that.
"""

from __future__ import annotations

import abc
import base64
import dataclasses
import datetime as dt
import decimal
import enum
import json
import logging
import os
import time
import traceback
import types
import typing
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
import tenacity
from apache_beam.metrics import Metrics
from apache_beam.transforms.display import DisplayDataItem
from apache_beam.utils.windowed_value import WindowedValue

from retail_backbone.io.dead_letters import TRACEBACK_LIMIT, Origin, dead_letter

__all__ = [
    "COUNTER_NAMES",
    "SINK_UNAVAILABLE",
    "BatchGuard",
    "BatchResult",
    "BatchWriter",
    "BreakerState",
    "CircuitBreaker",
    "ErrorKind",
    "Rejected",
    "SinkConfigError",
    "SinkCounters",
    "SinkPolicy",
    "SinkTarget",
    "VersionedWriteFn",
    "checked_version",
    "decode_row",
    "encode_row",
    "field_of",
    "json_value",
    "resolve_secret",
    "row_fields",
]

_LOG = logging.getLogger(__name__)

#: ``error_class`` of rows not written because the store was unreachable (retries exhausted or
#: breaker open). They are safe to write again once the store is back.
SINK_UNAVAILABLE = "sink_unavailable"
COUNTER_NAMES = ("written", "skipped_stale", "failed", "dead_lettered", "retries", "breaker_opened")
#: Largest version a sink accepts: Bigtable cell timestamps are version * 1000 in an int64.
MAX_VERSION = (2**63 - 1) // 1000


class SinkConfigError(ValueError):
    """A sink is misconfigured (found at launch): wrong table shape, missing secret, ..."""


@dataclasses.dataclass(frozen=True)
class SinkPolicy:
    """Batching, retry and breaker settings shared by every sink.

    Attributes:
        batch_size: rows per write; a bundle's remainder is written in ``finish_bundle``.
        max_attempts: attempts per batch on transient errors (1 = no retry).
        backoff_initial_s: first backoff; doubles per retry, plus jitter, up to backoff_max_s.
        backoff_max_s: longest single backoff.
        backoff_jitter_s: uniform random extra wait in [0, jitter], so workers that failed
            together do not retry together.
        breaker_threshold: consecutive failed batches (after retries) that open the breaker.
        breaker_reset_s: how long the breaker stays open before one probe batch is tried.
        connect_timeout_s: connection timeout, so an unreachable store fails fast.
        call_timeout_s: longest single write call (statement timeout, RPC deadline).
    """

    batch_size: int = 500
    max_attempts: int = 4
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    backoff_jitter_s: float = 0.5
    breaker_threshold: int = 3
    breaker_reset_s: float = 30.0
    connect_timeout_s: float = 10.0
    call_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_attempts < 1 or self.breaker_threshold < 1:
            raise SinkConfigError("batch_size, max_attempts and breaker_threshold must be >= 1")
        if min(self.backoff_initial_s, self.backoff_max_s, self.backoff_jitter_s) < 0:
            raise SinkConfigError("backoff settings must be >= 0")
        if self.breaker_reset_s < 0 or min(self.connect_timeout_s, self.call_timeout_s) <= 0:
            raise SinkConfigError("breaker_reset_s must be >= 0 and timeouts > 0")


def resolve_secret(ref: str) -> str:
    """A connection string given literally or as ``env:VARIABLE`` (read where it is used).

    ``env:`` keeps the secret out of the pipeline graph, templates and display data: workers
    read it from their own environment in ``setup()``.
    """
    if not ref.startswith("env:"):
        return ref
    name = ref[4:]
    try:
        return os.environ[name]
    except KeyError:
        raise SinkConfigError(
            f"environment variable {name} (a sink's connection string) is not set"
        ) from None


# -- rows -------------------------------------------------------------------------------------


def row_fields(row: Any) -> dict[str, Any]:
    """The fields of a NamedTuple (or mapping) row, by name."""
    if hasattr(row, "_asdict"):
        return row._asdict()
    if isinstance(row, Mapping):
        return dict(row)
    raise TypeError(f"sink rows are NamedTuples or mappings, got {type(row).__name__}")


def field_of(row: Any, name: str) -> Any:
    """One field of a NamedTuple (or mapping) row; ``AttributeError``/``KeyError`` if absent."""
    return row[name] if isinstance(row, Mapping) else getattr(row, name)


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode_row(row: Any) -> bytes:
    """The row as canonical JSON bytes (sorted keys): the dead-letter payload.

    Dates and times are ISO 8601 text, ``Decimal`` is text, ``bytes`` are base64;
    ``decode_row`` reverses this using the row type's annotations.
    """
    return json.dumps(
        row_fields(row), sort_keys=True, separators=(",", ":"), default=_json_default
    ).encode()


def json_value(value: Any) -> bytes:
    """One value as JSON bytes, encoded like ``encode_row`` encodes fields."""
    return json.dumps(value, separators=(",", ":"), default=_json_default).encode()


_FROM_JSON: dict[type, Callable[[Any], Any]] = {
    dt.datetime: dt.datetime.fromisoformat,
    dt.date: dt.date.fromisoformat,
    dt.time: dt.time.fromisoformat,
    decimal.Decimal: decimal.Decimal,
    bytes: base64.b64decode,
}


def _converter(hint: Any) -> Callable[[Any], Any] | None:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _converter(options[0]) if len(options) == 1 else None
    return _FROM_JSON.get(hint)


def decode_row(row_type: type[NamedTuple], payload: bytes | str) -> Any:
    """Rebuild a row of ``row_type`` from ``encode_row`` output (e.g. a dead letter's payload).

    Example::

        rows = letters | beam.Map(lambda d: decode_row(StockLevel, d.payload))
    """
    doc = json.loads(payload)
    hints = typing.get_type_hints(row_type)
    for name, value in doc.items():
        convert = _converter(hints.get(name))
        if convert is not None and value is not None:
            doc[name] = convert(value)
    return row_type(**doc)


# -- the store's side of the contract ----------------------------------------------------------


class ErrorKind(enum.Enum):
    """How a sink treats an exception from ``BatchWriter.write``."""

    #: the store is (perhaps briefly) unreachable or busy: retry, then count against the breaker.
    TRANSIENT = "transient"
    #: one or more rows are bad (constraint, data): bisect the batch to find them.
    ROW = "row"
    #: the whole batch cannot be written (missing table, no permission): dead-letter it as is.
    BATCH = "batch"


@dataclasses.dataclass
class BatchResult:
    """What a ``BatchWriter.write`` call did. Positions index the rows it was given.

    Attributes:
        written: rows applied.
        stale: rows not applied because the stored version was the same or newer.
        rejected: rows the store refused for good, with the reason.
        retry: rows that failed transiently (for stores with per-row status); retried alone.
        retry_error: the error behind ``retry``.
    """

    written: int = 0
    stale: int = 0
    rejected: list[tuple[int, BaseException]] = dataclasses.field(default_factory=list)
    retry: list[int] = dataclasses.field(default_factory=list)
    retry_error: BaseException | None = None


class BatchWriter(abc.ABC):
    """The store-specific part of a sink. Picklable until ``open()``; one per DoFn instance.

    ``write`` must be idempotent and version-guarded: writing the same rows twice, or an older
    version after a newer one, leaves the store as it was.
    """

    #: ``True``: first writer wins (``ON CONFLICT DO NOTHING``); ``False``: newest version wins.
    insert_if_absent: bool = False
    #: The kind of store (``postgres``, ``bigtable``, ``graph``), for dead letters' origin.
    store: str = "store"

    @property
    @abc.abstractmethod
    def target(self) -> str:
        """The written table, for messages and display data; never contains secrets."""

    @abc.abstractmethod
    def key(self, row: Any) -> tuple:
        """The row's deterministic key (raises for a row that has none)."""

    @abc.abstractmethod
    def version(self, row: Any) -> int:
        """The row's version (an integer; raises for a row that has none)."""

    def tiebreak(self, row: Any) -> int:
        """What decides between two rows of one version (higher wins); 0 when nothing does."""
        return 0

    def open(self) -> None:  # noqa: B027 - optional hook
        """Build clients (called in ``setup()``); connecting may be left to ``write``."""

    @abc.abstractmethod
    def write(self, rows: Sequence[Any]) -> BatchResult:
        """Write one batch (unique keys); raise when the store refused the whole batch."""

    @abc.abstractmethod
    def classify(self, error: BaseException) -> ErrorKind:
        """Whether ``error`` (raised by ``write``) is transient, a bad row, or a bad batch."""

    def reset(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Drop connections after a transient failure, so the next attempt starts fresh."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients (called in ``teardown()``)."""

    def display_data(self) -> dict[str, Any]:
        return {"target": self.target}

    def dead_letter_payload(self, row: Any) -> bytes:
        """The rejected row as a dead letter carries it (``encode_row``; stores may seal fields)."""
        return _content(row)

    def record_id(self, row: Any) -> str:
        """``<table>/<key parts joined by #>@<version>``: the dead letter's event id."""
        return f"{self.target}/{'#'.join(map(str, self.key(row)))}@{self.version(row)}"


class SinkTarget(abc.ABC):
    """One table of one store, with what a replay needs to write its rows again.

    Picklable (connection strings may be ``env:VAR`` references, resolved on the workers).
    ``address`` (``<store>:<table>``) is what sink dead letters carry in ``Origin.sink``.
    """

    #: ``postgres``, ``bigtable`` or ``graph``: also the pipelines' ``--sinks`` names.
    store: str = "store"

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The written table (``BatchWriter.target``), never a secret."""

    @property
    def address(self) -> str:
        return f"{self.store}:{self.name}"

    @abc.abstractmethod
    def decode(self, payload: bytes) -> Any:
        """A dead letter's payload (``encode_row`` output) back as the row to write."""

    @abc.abstractmethod
    def writer(self, policy: SinkPolicy) -> BatchWriter:
        """A new (unopened) writer for this table."""

    @abc.abstractmethod
    def transform(self, pipeline: str, policy: SinkPolicy | None = None) -> beam.PTransform:
        """The ``WriteTo...Versioned`` transform a pipeline applies (tables made at launch)."""

    @abc.abstractmethod
    def ensure(self) -> list[str]:
        """Create the table (or schema) if missing; returns what was done."""


def checked_version(value: Any) -> int:
    """``value`` if it is a usable version, else ``TypeError``/``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"version must be an int, got {type(value).__name__}")
    if not 0 <= value <= MAX_VERSION:
        raise ValueError(f"version {value} is outside [0, {MAX_VERSION}]")
    return value


def _checked_tiebreak(writer: BatchWriter, row: Any) -> int:
    """The row's tie-breaker if it is an int (ranks compare it), else ``TypeError``."""
    value = writer.tiebreak(row)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"tie-breaker must be an int, got {type(value).__name__}")
    return value


# -- the breaker -------------------------------------------------------------------------------


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Closed -> (``threshold`` failed batches in a row) -> open -> (``reset_s``) -> half-open.

    Half-open lets one probe batch through: success closes, failure re-opens for ``reset_s``.
    One instance per DoFn instance (one thread), so there is no locking.

    Args:
        threshold: consecutive failures that open the breaker.
        reset_s: seconds open before a probe.
        clock: monotonic seconds; injectable for tests.
    """

    def __init__(
        self, threshold: int, reset_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.reset_s = reset_s
        self._clock = clock
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened_at: float | None = None
        self.times_opened = 0

    def allow(self) -> bool:
        """Whether to attempt a batch now (moves open -> half-open once reset_s has passed)."""
        if self.state is BreakerState.OPEN and self.retry_in() <= 0:
            self.state = BreakerState.HALF_OPEN
        return self.state is not BreakerState.OPEN

    def retry_in(self) -> float:
        """Seconds until the next probe (0 unless open)."""
        if self.state is not BreakerState.OPEN or self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.reset_s - self._clock())

    def record_success(self) -> None:
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened_at = None

    def record_failure(self) -> bool:
        """Count a failed batch; returns True when this failure opened the breaker."""
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN or self.failures >= self.threshold:
            self.state = BreakerState.OPEN
            self.opened_at = self._clock()
            self.times_opened += 1
            return True
        return False


# -- counting ----------------------------------------------------------------------------------


class SinkCounters:
    """The sink's counters as Beam metrics (``<namespace>:<stage>.<name>``) and local totals.

    The totals are for tests and logs of the running instance; Beam aggregates the metrics.
    """

    def __init__(self, namespace: str, stage: str) -> None:
        self.totals = dict.fromkeys(COUNTER_NAMES, 0)
        self._metrics = {n: Metrics.counter(namespace, f"{stage}.{n}") for n in COUNTER_NAMES}

    def inc(self, name: str, n: int = 1) -> None:
        if n:
            self.totals[name] += n
            self._metrics[name].inc(n)


# -- one batch through retries, bisection and the breaker --------------------------------------


class Rejected(NamedTuple):
    """A row that was not written. ``position`` indexes the rows given to ``BatchGuard.write``."""

    position: int
    error_class: str
    message: str
    error: BaseException | None = None


class _PendingRows(Exception):
    """Some rows of a batch failed transiently (per-row status); retry just those."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(_describe(error))
        self.error = error


class _Refused(Exception):
    """The store refused the still-pending rows of a chunk for good."""

    def __init__(self, positions: list[int], cause: BaseException) -> None:
        super().__init__(str(cause))
        self.positions = positions
        self.cause = cause


class _Unavailable(Exception):
    def __init__(self, positions: list[int], cause: BaseException, attempts: int) -> None:
        super().__init__(str(cause))
        self.positions = positions
        self.cause = cause
        self.attempts = attempts


def _content(row: Any) -> bytes:
    try:
        return encode_row(row)
    except TypeError:
        return repr(row).encode()


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


class BatchGuard:
    """Writes batches through a ``BatchWriter`` keeping the contract (no Beam in here).

    Example::

        guard = BatchGuard(writer, SinkPolicy(), SinkCounters("inventory", "WriteStock"))
        for rejected in guard.write(rows):
            ...  # rows[rejected.position] -> dead letter with rejected.error_class

    Args:
        writer: the store's batch writer (already opened).
        policy: batching, retry and breaker settings.
        counters: where to count.
        clock: monotonic seconds for the breaker; injectable for tests.
        sleep: how to wait between attempts; injectable for tests.
    """

    def __init__(
        self,
        writer: BatchWriter,
        policy: SinkPolicy,
        counters: SinkCounters,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.writer = writer
        self.policy = policy
        self.counters = counters
        self.breaker = CircuitBreaker(policy.breaker_threshold, policy.breaker_reset_s, clock)
        self._sleep = sleep
        self._last_error = ""

    def write(self, rows: Sequence[Any]) -> list[Rejected]:
        """Write ``rows``; returns those that were not written (stale rows are not rejected)."""
        rejected: list[Rejected] = []
        winners = self._newest_per_key(rows, rejected)
        if winners:
            if not self.breaker.allow():
                message = (
                    f"{self.writer.target} unavailable: circuit open after "
                    f"{self.breaker.failures} consecutive failed batches (last: "
                    f"{self._last_error}); not attempted, next probe in "
                    f"{self.breaker.retry_in():.1f}s"
                )
                rejected += [Rejected(p, SINK_UNAVAILABLE, message) for p in winners]
            else:
                self._attempt(rows, winners, rejected)
        failed = sum(1 for r in rejected if r.error is not None)
        self.counters.inc("failed", failed)
        self.counters.inc("dead_lettered", len(rejected))
        return sorted(rejected, key=lambda r: r.position)

    def _newest_per_key(self, rows: Sequence[Any], rejected: list[Rejected]) -> list[int]:
        """One position per key: highest rank (lowest for insert-if-absent); others stale."""
        best: dict[tuple, tuple[tuple[int, int], int]] = {}
        stale = 0
        for pos, row in enumerate(rows):
            try:
                key = self.writer.key(row)
                rank = (
                    checked_version(self.writer.version(row)),
                    _checked_tiebreak(self.writer, row),
                )
            except (TypeError, ValueError, KeyError, AttributeError) as exc:
                rejected.append(Rejected(pos, type(exc).__name__, str(exc), exc))
                continue
            if key not in best:
                best[key] = (rank, pos)
                continue
            stale += 1
            kept_rank, kept = best[key]
            if self._beats(rank, row, kept_rank, rows[kept]):
                best[key] = (rank, pos)
        self.counters.inc("skipped_stale", stale)
        return sorted(pos for _, pos in best.values())

    def _beats(
        self, rank: tuple[int, int], row: Any, kept_rank: tuple[int, int], kept: Any
    ) -> bool:
        """``(version, tiebreak)`` decides; equal ranks go by content, never by arrival order."""
        if rank == kept_rank:
            mine, theirs = _content(row), _content(kept)
            return mine < theirs if self.writer.insert_if_absent else mine > theirs
        return rank < kept_rank if self.writer.insert_if_absent else rank > kept_rank

    def _attempt(self, rows: Sequence[Any], positions: list[int], rejected: list) -> None:
        probe = self.breaker.state is BreakerState.HALF_OPEN
        if probe:
            self.writer.reset()  # a client that backed off during the outage may still wait
        attempts = 1 if probe else self.policy.max_attempts
        try:
            self._write_bisecting(rows, positions, attempts, rejected)
        except _Unavailable as exc:
            self._last_error = _describe(exc.cause)
            if self.breaker.record_failure():
                self.counters.inc("breaker_opened")
                _LOG.warning(
                    "%s: circuit opened after %d consecutive failed batches (%s); rows go to "
                    "dead letters as %s for %.0fs, then one probe batch",
                    self.writer.target,
                    self.breaker.failures,
                    self._last_error,
                    SINK_UNAVAILABLE,
                    self.policy.breaker_reset_s,
                )
            what = "probe failed" if probe else f"gave up after {exc.attempts} attempt(s)"
            message = f"{self.writer.target} unavailable: {what}: {self._last_error}"
            rejected += [Rejected(p, SINK_UNAVAILABLE, message, exc.cause) for p in exc.positions]
        else:
            if probe:
                _LOG.info("%s: probe batch written; circuit closed", self.writer.target)
            self.breaker.record_success()

    def _write_bisecting(
        self, rows: Sequence[Any], positions: list[int], attempts: int, rejected: list
    ) -> None:
        chunks = deque([positions])
        while chunks:
            chunk = chunks.popleft()
            try:
                self._write_retrying(rows, chunk, attempts, rejected)
            except _Unavailable as exc:
                exc.positions += [p for rest in chunks for p in rest]
                raise
            except _Refused as refused:
                pending, exc = refused.positions, refused.cause
                if self.writer.classify(exc) is ErrorKind.ROW and len(pending) > 1:
                    # One bad row fails the whole statement: halve until it is alone.
                    middle = len(pending) // 2
                    chunks.extendleft([pending[middle:], pending[:middle]])
                else:
                    rejected += [Rejected(p, type(exc).__name__, str(exc), exc) for p in pending]

    def _transient(self, error: BaseException) -> bool:
        return isinstance(error, _PendingRows) or self.writer.classify(error) is ErrorKind.TRANSIENT

    def _write_retrying(
        self, rows: Sequence[Any], chunk: list[int], attempts: int, rejected: list
    ) -> None:
        pending = list(chunk)

        def attempt() -> None:
            nonlocal pending
            try:
                result = self.writer.write([rows[p] for p in pending])
            except Exception as exc:
                if self._transient(exc):
                    self.writer.reset()  # the connection may be broken; reconnect next time
                raise
            self.counters.inc("written", result.written)
            self.counters.inc("skipped_stale", result.stale)
            rejected.extend(
                Rejected(pending[i], type(e).__name__, str(e), e) for i, e in result.rejected
            )
            if result.retry:
                pending = [pending[i] for i in result.retry]
                raise _PendingRows(result.retry_error or RuntimeError("no status for the row"))
            pending = []

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(attempts),
            wait=tenacity.wait_exponential_jitter(
                initial=self.policy.backoff_initial_s,
                max=self.policy.backoff_max_s,
                jitter=self.policy.backoff_jitter_s,
            ),
            retry=tenacity.retry_if_exception(self._transient),
            before_sleep=lambda _state: self.counters.inc("retries"),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            retrying(attempt)
        except Exception as exc:
            # Only the rows still pending: an earlier attempt may have written the others.
            if self._transient(exc):
                cause = exc.error if isinstance(exc, _PendingRows) else exc
                raise _Unavailable(pending, cause, attempts) from exc
            raise _Refused(pending, exc) from exc


# -- the DoFn ----------------------------------------------------------------------------------


class VersionedWriteFn(beam.DoFn):
    """Buffers rows, writes them through a ``BatchGuard``, emits the rejected as dead letters.

    Dead letters leave in ``finish_bundle`` with each row's own timestamp and window, so a
    windowed pipeline merges them like any other output.

    Args:
        writer: the store's ``BatchWriter`` (pickled; opened in ``setup()``).
        policy: batching, retry and breaker settings.
        pipeline: pipeline name for dead letters and the counters' namespace.
        stage: the step label, for dead letters and counter names.
    """

    def __init__(self, writer: BatchWriter, policy: SinkPolicy, pipeline: str, stage: str):
        self._writer = writer
        self._policy = policy
        self._pipeline = pipeline
        self._stage = stage
        self._guard: BatchGuard | None = None

    def setup(self) -> None:
        self._writer.open()
        self._guard = BatchGuard(
            self._writer, self._policy, SinkCounters(self._pipeline, self._stage)
        )

    def start_bundle(self) -> None:
        self._rows: list[Any] = []
        self._where: list[tuple[Any, Any]] = []
        self._letters: list[WindowedValue] = []

    def process(
        self, row: Any, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam
    ) -> Iterator[WindowedValue]:
        self._rows.append(row)
        self._where.append((timestamp, window))
        if len(self._rows) >= self._policy.batch_size:
            self._flush()
        yield from ()  # dead letters leave in finish_bundle, in their own windows

    def finish_bundle(self) -> Iterator[WindowedValue]:
        self._flush()
        yield from self._letters
        self._letters = []

    def _flush(self) -> None:
        if not self._rows:
            return
        for rejected in self._guard.write(self._rows):
            row = self._rows[rejected.position]
            timestamp, window = self._where[rejected.position]
            letter = self._dead_letter(row, rejected)
            self._letters.append(WindowedValue(letter, timestamp, [window]))
        self._rows, self._where = [], []

    def _dead_letter(self, row: Any, rejected: Rejected):
        try:
            payload = self._writer.dead_letter_payload(row)
        except Exception:  # the letter must still leave; never with the row in the clear
            payload = b"unsealable row of " + self._writer.target.encode()
        try:
            record_id = self._writer.record_id(row)
        except Exception:  # a row without key or version has no id; the letter says why
            record_id = None
        letter = dead_letter(
            payload,
            Origin.for_sink(f"{self._writer.store}:{self._writer.target}"),
            self._pipeline,
            self._stage,
            rejected.message,
            error_class=rejected.error_class,
            event_id=record_id,
        )
        if rejected.error is not None:
            letter = letter._replace(traceback=_traceback(rejected.error))
        return letter

    def teardown(self) -> None:
        self._writer.close()

    def display_data(self) -> dict[str, Any]:
        data = {k: DisplayDataItem(v, label=k) for k, v in self._writer.display_data().items()}
        data["batchSize"] = DisplayDataItem(self._policy.batch_size, label="Batch size")
        data["breakerThreshold"] = DisplayDataItem(
            self._policy.breaker_threshold, label="Failed batches that open the breaker"
        )
        return data


def _traceback(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))[-TRACEBACK_LIMIT:]
