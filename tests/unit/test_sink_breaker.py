"""The sink contract's state machine (retries, breaker, bisection, last-writer-wins) with a fake
store whose failures are scripted. The real stores are exercised in tests/integration."""

import datetime as dt
import json
import random
from typing import NamedTuple

import apache_beam as beam
import pytest
from apache_beam.transforms import window

from retail_backbone.io.dead_letters import DeadLetter
from retail_backbone.io.sinks.base import (
    SINK_UNAVAILABLE,
    BatchGuard,
    BatchResult,
    BatchWriter,
    BreakerState,
    CircuitBreaker,
    ErrorKind,
    SinkConfigError,
    SinkCounters,
    SinkPolicy,
    VersionedWriteFn,
    decode_row,
    encode_row,
)
from retail_backbone.io.sinks.testing import run_pipeline


class Row(NamedTuple):
    sku: str
    qty: int
    version: int


class Unavailable(Exception):
    pass


class BadRow(Exception):
    pass


class NoTable(Exception):
    pass


class FakeStore(BatchWriter):
    """An in-memory last-writer-wins store; failures are scripted, every call is recorded."""

    def __init__(
        self,
        *,
        fail_next: int = 0,
        down: bool = False,
        bad: frozenset[str] = frozenset(),
        missing_table: bool = False,
        flaky_rows: frozenset[str] = frozenset(),
        insert_if_absent: bool = False,
        flaky_forever: bool = False,
        refuse_from_call: int | None = None,
    ) -> None:
        self.flaky_forever = flaky_forever
        self.refuse_from_call = refuse_from_call
        self.fail_next = fail_next
        self.down = down
        self.bad = bad
        self.missing_table = missing_table
        self.flaky_rows = set(flaky_rows)  # fail transiently (per-row status), once or forever
        self.insert_if_absent = insert_if_absent
        self.data: dict[str, Row] = {}
        self.calls: list[list[str]] = []
        self.resets = 0

    @property
    def target(self) -> str:
        return "fake_table"

    def key(self, row):
        return (row.sku,)

    def version(self, row):
        return row.version

    def write(self, rows):
        self.calls.append([r.sku for r in rows])
        if self.down or self.fail_next > 0:
            self.fail_next -= 1
            raise Unavailable("connection refused")
        if self.missing_table or (self.refuse_from_call or 1e9) <= len(self.calls):
            raise NoTable("relation fake_table does not exist")
        if any(r.sku in self.bad for r in rows):
            raise BadRow("value out of range")
        result = BatchResult()
        for i, row in enumerate(rows):
            if row.sku in self.flaky_rows:
                if not self.flaky_forever:
                    self.flaky_rows.discard(row.sku)
                result.retry.append(i)
                result.retry_error = Unavailable("row busy")
                continue
            stored = self.data.get(row.sku)
            if stored is None or (not self.insert_if_absent and row.version > stored.version):
                self.data[row.sku] = row
                result.written += 1
            else:
                result.stale += 1
        return result

    def classify(self, error):
        if isinstance(error, Unavailable):
            return ErrorKind.TRANSIENT
        if isinstance(error, BadRow):
            return ErrorKind.ROW
        return ErrorKind.BATCH

    def reset(self):
        self.resets += 1


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


POLICY = SinkPolicy(
    batch_size=10,
    max_attempts=4,
    backoff_initial_s=1.0,
    backoff_max_s=3.0,
    backoff_jitter_s=0.5,
    breaker_threshold=3,
    breaker_reset_s=30.0,
)


def guard_for(store: FakeStore, policy: SinkPolicy = POLICY):
    t = FakeTime()
    counters = SinkCounters("test", "WriteFake")
    return BatchGuard(store, policy, counters, clock=t.clock, sleep=t.sleep), t


def rows(*skus: str, version: int = 1) -> list[Row]:
    return [Row(s, 10, version) for s in skus]


def test_transient_errors_are_retried_with_exponential_backoff_and_jitter():
    store = FakeStore(fail_next=3)
    guard, t = guard_for(store)
    assert guard.write(rows("a", "b")) == []
    assert len(store.calls) == 4
    assert store.resets == 3  # a fresh connection before each retry
    # initial * 2**n + uniform(0, jitter), capped at backoff_max_s
    assert 1.0 <= t.sleeps[0] <= 1.5
    assert 2.0 <= t.sleeps[1] <= 2.5
    assert t.sleeps[2] == 3.0
    assert guard.counters.totals == {
        "written": 2,
        "skipped_stale": 0,
        "failed": 0,
        "dead_lettered": 0,
        "retries": 3,
        "breaker_opened": 0,
    }
    assert guard.breaker.state is BreakerState.CLOSED and guard.breaker.failures == 0


def test_exhausted_retries_dead_letter_the_batch_and_open_the_breaker_after_n_batches():
    store = FakeStore(down=True)
    guard, t = guard_for(store)
    for n in range(1, 4):
        rejected = guard.write(rows("a", "b", version=n))
        assert [r.error_class for r in rejected] == [SINK_UNAVAILABLE] * 2
        assert "gave up after 4 attempt(s): Unavailable: connection refused" in rejected[0].message
        assert isinstance(rejected[0].error, Unavailable)
        assert len(store.calls) == 4 * n
    assert guard.breaker.state is BreakerState.OPEN
    assert guard.counters.totals["breaker_opened"] == 1

    # Open: records go straight to dead letters, no call, no waiting.
    calls, sleeps = len(store.calls), len(t.sleeps)
    rejected = guard.write(rows("c", "d", "e"))
    assert [r.error_class for r in rejected] == [SINK_UNAVAILABLE] * 3
    assert "circuit open after 3 consecutive failed batches" in rejected[0].message
    assert "Unavailable: connection refused" in rejected[0].message
    assert rejected[0].error is None  # not attempted
    assert (len(store.calls), len(t.sleeps)) == (calls, sleeps)
    assert guard.counters.totals["failed"] == 6
    assert guard.counters.totals["dead_lettered"] == 9
    assert store.data == {}


def open_breaker(store: FakeStore, guard: BatchGuard) -> None:
    store.down = True
    for _ in range(POLICY.breaker_threshold):
        guard.write(rows("x"))
    assert guard.breaker.state is BreakerState.OPEN


def test_half_open_probe_is_one_attempt_and_a_failed_probe_reopens_for_another_timeout():
    store = FakeStore()
    guard, t = guard_for(store)
    open_breaker(store, guard)
    t.now += POLICY.breaker_reset_s - 1
    calls = len(store.calls)
    guard.write(rows("a"))
    assert len(store.calls) == calls  # still open

    t.now += 1
    resets, sleeps = store.resets, len(t.sleeps)
    rejected = guard.write(rows("a"))
    assert len(store.calls) == calls + 1  # one probe, no retries
    assert len(t.sleeps) == sleeps
    assert store.resets > resets  # the probe starts from a fresh client
    assert rejected[0].error_class == SINK_UNAVAILABLE and "probe failed" in rejected[0].message
    assert guard.breaker.state is BreakerState.OPEN
    assert guard.counters.totals["breaker_opened"] == 2

    # The reset timeout starts again from the failed probe.
    t.now += POLICY.breaker_reset_s - 1
    guard.write(rows("a"))
    assert len(store.calls) == calls + 1


def test_a_successful_probe_closes_the_breaker_and_full_retries_resume():
    store = FakeStore()
    guard, t = guard_for(store)
    open_breaker(store, guard)
    store.down = False
    t.now += POLICY.breaker_reset_s
    assert guard.write(rows("a", "b", version=7)) == []
    assert guard.breaker.state is BreakerState.CLOSED and guard.breaker.failures == 0
    assert store.data["a"].version == 7

    # Closed again: a new outage gets the full retry budget before counting as one failure.
    store.fail_next = 2
    assert guard.write(rows("c")) == []
    assert guard.breaker.failures == 0


def test_a_success_between_failures_resets_the_consecutive_count():
    store = FakeStore()
    guard, _ = guard_for(store)
    for _ in range(5):
        store.fail_next = POLICY.max_attempts  # this batch fails after all its retries
        guard.write(rows("a"))
        guard.write(rows("b"))  # this one succeeds
    assert guard.breaker.state is BreakerState.CLOSED
    assert guard.counters.totals["breaker_opened"] == 0


def test_a_bad_row_is_isolated_by_bisection_and_the_rest_is_written():
    store = FakeStore(bad=frozenset({"f"}))
    guard, t = guard_for(store)
    batch = rows(*"abcdefgh")
    rejected = guard.write(batch)
    assert [(batch[r.position].sku, r.error_class) for r in rejected] == [("f", "BadRow")]
    assert rejected[0].message == "value out of range"
    assert sorted(store.data) == list("abcdegh")
    assert len(store.calls) <= 1 + 2 * 3  # log2(8) levels, two halves each
    assert t.sleeps == []  # permanent errors are not retried
    assert guard.breaker.state is BreakerState.CLOSED and guard.breaker.failures == 0
    assert guard.counters.totals["failed"] == 1
    assert guard.counters.totals["written"] == 7


def test_a_batch_level_error_dead_letters_the_batch_without_bisecting():
    store = FakeStore(missing_table=True)
    guard, _ = guard_for(store)
    rejected = guard.write(rows(*"abcd"))
    assert {r.error_class for r in rejected} == {"NoTable"}
    assert len(rejected) == 4
    assert len(store.calls) == 1
    assert guard.breaker.failures == 0  # the store answered: it is not unavailable


def test_per_row_transient_failures_retry_only_those_rows():
    store = FakeStore(flaky_rows=frozenset({"b", "d"}))
    guard, t = guard_for(store)
    assert guard.write(rows(*"abcd")) == []
    assert store.calls == [list("abcd"), ["b", "d"]]
    assert len(t.sleeps) == 1
    assert guard.counters.totals["written"] == 4


def test_a_refusal_after_a_partial_success_rejects_only_the_rows_not_yet_written():
    store = FakeStore(flaky_rows=frozenset({"b", "d"}), refuse_from_call=2)
    guard, _ = guard_for(store)
    batch = rows(*"abcd")
    rejected = guard.write(batch)
    assert [(batch[r.position].sku, r.error_class) for r in rejected] == [
        ("b", "NoTable"),
        ("d", "NoTable"),
    ]
    assert sorted(store.data) == ["a", "c"]
    assert guard.counters.totals["written"] == 2
    assert guard.counters.totals["dead_lettered"] == 2


def test_rows_still_failing_per_row_after_the_retries_name_the_stores_error():
    store = FakeStore(flaky_rows=frozenset({"b"}), flaky_forever=True)
    guard, _ = guard_for(store)
    batch = rows(*"abc")
    rejected = guard.write(batch)
    assert [batch[r.position].sku for r in rejected] == ["b"]
    assert rejected[0].error_class == SINK_UNAVAILABLE
    assert rejected[0].message.endswith("gave up after 4 attempt(s): Unavailable: row busy")
    assert isinstance(rejected[0].error, Unavailable)
    assert store.calls == [list("abc"), ["b"], ["b"], ["b"]]
    assert sorted(store.data) == ["a", "c"]


def test_only_the_newest_version_per_key_is_sent_whatever_the_arrival_order():
    batch = [Row("a", 1, 1), Row("a", 3, 3), Row("b", 5, 2), Row("a", 2, 2), Row("b", 4, 2)]
    sent = set()
    for seed in range(5):
        shuffled = random.Random(seed).sample(batch, len(batch))
        store = FakeStore()
        guard, _ = guard_for(store)
        assert guard.write(shuffled) == []
        sent.add(tuple(sorted(store.data.values())))
        assert guard.counters.totals["skipped_stale"] == 3
        assert guard.counters.totals["written"] == 2
    # Equal versions (b@2) are decided by content, not by order: one outcome for every order.
    assert sent == {(Row("a", 3, 3), Row("b", 5, 2))}


class EvidenceStore(FakeStore):
    """Rows of one version rank by ``qty`` (the evidence they carry), like related products."""

    def tiebreak(self, row):
        return row.qty


def test_equal_versions_in_one_batch_are_decided_by_the_writers_tiebreak_not_by_content():
    # Two panes of one key with one version: the later one carries more evidence. By content
    # alone ("qty":98 sorts after "qty":193) the poorer row would be sent.
    poorer, richer = Row("a", 98, 7), Row("a", 193, 7)
    for batch in ([poorer, richer], [richer, poorer]):
        store = EvidenceStore()
        guard, _ = guard_for(store)
        assert guard.write(batch) == []
        assert store.data == {"a": richer}
        assert guard.counters.totals["skipped_stale"] == 1


def test_a_row_whose_tiebreak_is_not_an_int_is_dead_lettered_not_compared():
    store = EvidenceStore()
    guard, _ = guard_for(store)
    rejected = guard.write([Row("a", 5, 7), Row("a", None, 7), Row("b", 1, 7)])
    assert [(r.position, r.error_class) for r in rejected] == [(1, "TypeError")]
    assert store.data == {"a": Row("a", 5, 7), "b": Row("b", 1, 7)}


def test_insert_if_absent_keeps_the_first_version_and_counts_the_rest_as_skipped():
    store = FakeStore(insert_if_absent=True)
    guard, _ = guard_for(store)
    guard.write([Row("a", 1, 5), Row("a", 2, 3)])
    assert store.data["a"] == Row("a", 2, 3)  # the earliest version of the batch
    guard.write([Row("a", 9, 1)])
    assert store.data["a"] == Row("a", 2, 3)
    assert guard.counters.totals["skipped_stale"] == 2


def test_rows_without_a_usable_version_are_dead_lettered():
    guard, _ = guard_for(FakeStore())
    rejected = guard.write([Row("a", 1, "7"), Row("b", 1, True), Row("c", 1, -1), Row("d", 1, 4)])
    assert [(r.position, r.error_class) for r in rejected] == [
        (0, "TypeError"),
        (1, "TypeError"),
        (2, "ValueError"),
    ]
    assert guard.counters.totals["written"] == 1


def test_breaker_state_machine():
    now = [0.0]
    breaker = CircuitBreaker(threshold=2, reset_s=10, clock=lambda: now[0])
    assert breaker.allow() and not breaker.record_failure()
    assert breaker.record_failure()  # second consecutive failure opens
    assert not breaker.allow() and breaker.retry_in() == 10
    now[0] = 10
    assert breaker.allow() and breaker.state is BreakerState.HALF_OPEN
    assert breaker.record_failure()  # a failed probe opens at once
    now[0] = 20
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.times_opened == 2


def test_policy_is_validated():
    with pytest.raises(SinkConfigError):
        SinkPolicy(batch_size=0)
    with pytest.raises(SinkConfigError):
        SinkPolicy(backoff_jitter_s=-1)


class Level(NamedTuple):
    sku: str
    updated_at: dt.datetime
    day: dt.date
    note: str | None
    version: int


def test_rows_round_trip_through_the_dead_letter_payload():
    row = Level("a", dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC), dt.date(2026, 1, 2), None, 9)
    payload = encode_row(row)
    assert json.loads(payload)["updated_at"] == "2026-01-02T03:04:05+00:00"
    assert decode_row(Level, payload) == row


# -- the DoFn on the local runner, with the fake store ------------------------------------------


def test_write_fn_emits_dead_letters_with_the_rows_timestamps_and_windows():
    policy = SinkPolicy(batch_size=2, max_attempts=1, breaker_threshold=1, breaker_reset_s=60)
    fn = VersionedWriteFn(FakeStore(down=True), policy, "test", "WriteFake")
    data = [Row(f"sku-{i}", i, 100 + i) for i in range(5)]

    def build(p):
        dead = (
            p
            | beam.Create(data)
            | beam.Map(lambda r: window.TimestampedValue(r, r.version))
            | beam.WindowInto(window.FixedWindows(2))
            | "WriteFake" >> beam.ParDo(fn)
        )
        stamped = dead | beam.Map(
            lambda d, ts=beam.DoFn.TimestampParam, w=beam.DoFn.WindowParam: (
                d.event_id,
                float(ts),
                float(w.start),
            )
        )
        return {"dead": dead, "stamped": stamped}

    run = run_pipeline(build)
    dead: list[DeadLetter] = run.outputs["dead"]
    assert len(dead) == 5
    assert {d.error_class for d in dead} == {SINK_UNAVAILABLE}
    assert {d.stage for d in dead} == {"WriteFake"}
    assert {(d.origin.kind, d.origin.sink) for d in dead} == {("SINK", "store:fake_table")}
    assert sorted(decode_row(Row, d.payload) for d in dead) == data
    assert sorted(run.outputs["stamped"]) == [
        (f"fake_table/sku-{i}@{100 + i}", 100.0 + i, float((100 + i) // 2 * 2)) for i in range(5)
    ]
    assert run.counter("WriteFake.dead_lettered", "test") == 5
    assert run.counter("WriteFake.written", "test") == 0
