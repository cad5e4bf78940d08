"""A small discrete-event engine that emits events in event-time order.

Example::

    sim = Simulation(start_ms, end_ms, seed=7)

    def ticker():
        for _ in range(3):
            sim.emit("promotion_ended", "ERP", "PROMO-1",
                     {"envelope": None, "promotion_id": "PROMO-1", "early": False})
            yield 60_000                      # wait one minute of simulated time

    sim.spawn(ticker())
    events = list(sim.run())

Processes are generators that ``yield`` a delay in milliseconds. The engine resumes them in
(time, spawn order) order, so every event a process emits carries the current simulated time and
the stream is ordered by ``event_time`` by construction, while each process reads shared state
(stock, prices) exactly as of its own time. Only the heap of suspended processes is held in
memory, never the event stream.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Generator, Iterator
from math import log as _log
from typing import Any

from retail_backbone.generator.config import DAY_MS
from retail_backbone.generator.contracts import contracts
from retail_backbone.generator.ids import UUID_V4_CLEAR, UUID_V4_SET, IdFactory, stream_rng

__all__ = ["Process", "Simulation", "poisson"]

Process = Generator[int, None, Any]

# Mean delay between the source emitting and the backbone accepting, per source (ms): clients
# post immediately, stores and warehouses batch uploads, the ERP exports every few minutes.
_INGEST_MEAN_MS = {
    "WEB": 250.0,
    "MOBILE": 700.0,
    "POS": 4_000.0,
    "WAREHOUSE": 2_500.0,
    "ERP": 45_000.0,
    "PARTNER": 1_200.0,
    "UNKNOWN": 1_000.0,
}
_LATE_MOBILE = 0.004  # phones that were offline deliver up to 30 minutes late


class Simulation:
    """Clock, process heap and event emission (envelope building) of one run."""

    def __init__(self, start_ms: int, end_ms: int, seed: int) -> None:
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.now = start_ms
        self.rng = stream_rng(seed, "traffic")
        self.ids = IdFactory(stream_rng(seed, "entity-ids"))  # orders, sessions, payments ...
        self._event_bits = stream_rng(seed, "event-ids").getrandbits
        self._delay_random = stream_rng(seed, "ingest-delay").random
        self._trace_bits = stream_rng(seed, "trace-ids").getrandbits
        self._heap: list[tuple[int, int, Process]] = []
        self._seq = 0
        self._out: list[dict] = []
        # event type -> (registry subject, schema version) of the latest contract
        self._meta = {t: (c.subject, c.version) for t, c in contracts().items()}
        self.counts_by_day: list[dict[str, int]] = []
        self._today: dict[str, int] = {}
        self._day_end = start_ms  # forces the first day's counter to open

    # -- processes -------------------------------------------------------------------------

    def call_at(self, when: int, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn(*args)`` once at ``when`` (a one-step process)."""
        self.spawn(_once(fn, args), at=when)

    def spawn(self, proc: Process, at: int | None = None) -> None:
        """Start ``proc`` at ``at`` (default: now). Its first step runs at that time."""
        when = self.now if at is None else at
        if when < self.now:
            raise ValueError(f"cannot schedule in the past ({when} < {self.now})")
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, proc))

    def run(self) -> Iterator[dict]:
        """Run until ``end_ms`` (exclusive), yielding events in event-time order."""
        heap, out, end = self._heap, self._out, self.end_ms
        pop, push = heapq.heappop, heapq.heappush
        while heap:
            when, _, proc = heap[0]
            if when >= end:
                break
            pop(heap)
            if when >= self._day_end:
                self._roll_day(when)
            self.now = when
            try:
                delay = next(proc)
            except StopIteration:
                delay = None
            if delay is not None:
                if delay < 0:
                    raise ValueError(f"process {proc!r} yielded a negative delay {delay}")
                self._seq += 1
                push(heap, (when + delay, self._seq, proc))
            if out:
                yield from out
                out.clear()

    def _roll_day(self, when: int) -> None:
        while when >= self._day_end:
            self._today = {}
            self.counts_by_day.append(self._today)
            self._day_end = self.start_ms + len(self.counts_by_day) * DAY_MS

    # -- events ----------------------------------------------------------------------------

    def emit(
        self,
        event_type: str,
        source: str,
        key: str,
        event: dict,
        trace_id: str | None = None,
        attributes: dict[str, str] | None = None,
    ) -> dict:
        """Stamp ``event`` with a full envelope at the current time and queue it for output.

        ``event`` must already hold the payload fields in schema order, with an ``"envelope"``
        placeholder first so that the dict's key order matches the schema.

        Returns:
            The event (its envelope carries the new ``event_id``).
        """
        now = self.now
        subject, version = self._meta[event_type]
        rnd = self._delay_random
        # Exponential delay by inversion (what expovariate does, without the call overhead).
        delay = int(-_log(1.0 - rnd()) * _INGEST_MEAN_MS[source])
        if source == "MOBILE" and rnd() < _LATE_MOBILE:
            delay += 60_000 + int(rnd() * 1_740_000)
        h = f"{(self._event_bits(128) & UUID_V4_CLEAR) | UUID_V4_SET:032x}"
        event["envelope"] = {
            "event_id": f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}",
            "event_type": event_type,
            "event_time": now,
            "ingest_time": now + delay,
            "source": source,
            "trace_id": trace_id,
            "partition_key": key,
            "schema_subject": subject,
            "schema_version": version,
            "attributes": {} if attributes is None else dict(attributes),
        }
        self._out.append(event)
        today = self._today
        today[event_type] = today.get(event_type, 0) + 1
        return event

    def trace_id(self) -> str:
        """A W3C-style 32-hex trace id."""
        return f"{self._trace_bits(128):032x}"

    @property
    def day_index(self) -> int:
        return (self.now - self.start_ms) // DAY_MS

    @property
    def pending(self) -> int:
        """Suspended processes (memory is proportional to this, not to events emitted)."""
        return len(self._heap)


def _once(fn: Callable[..., object], args: tuple) -> Process:
    fn(*args)
    yield from ()


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw from ``random.Random`` (exact below 30, normal approximation above)."""
    if lam <= 0:
        return 0
    if lam < 30:
        # Knuth: multiply uniforms until the product falls below e^-lam.
        limit, k, prod = pow(2.718281828459045, -lam), 0, rng.random()
        while prod > limit:
            k += 1
            prod *= rng.random()
        return k
    return max(0, round(rng.gauss(lam, lam**0.5)))
