"""The per-mode windowing and trigger wrapper, and late-data detection with dead letters.

Example::

    opts = WindowingOptions(mode="streaming", early_firing_seconds=10,
                            allowed_lateness_seconds=3600)
    daily = events | "WindowDaily" >> WindowForMode(
        opts, FixedWindows(86_400), pipeline="inventory", stage="ForecastDemand")
    daily.elements      # windowed (and, in streaming, triggered) on-time elements
    daily.dead_letters  # streaming only: events later than the allowed lateness, class ``late``

Business transforms never choose triggers themselves; they ask this module for them:

- batch: the given windows (event time from the payload), the default trigger. Nothing is late in
  a bounded run, so nothing is dropped.
- streaming: the same windows, ``AfterWatermark(early=AfterProcessingTime(N),
  late=AfterCount(1))`` with ``ACCUMULATING`` panes by default (each pane is the whole window so
  far, so a sink can overwrite), allowed lateness L (default 1 h). In the global window the
  on-time pane only comes at drain, so early panes are the results.

How late data is detected (``DropLateData``). Beam Python gives a ``DoFn`` no way to read the
watermark, and a runner silently drops what arrives after a window's lateness (Java runners count
it as ``droppedDueToLateness``, nothing reaches a dead-letter queue). So, before windowing, a
stateful ``DoFn`` in the global window learns the watermark through an event-time timer: elements
are spread over a few shard keys; per shard the state holds the last watermark it saw; a looping
watermark timer re-arms itself ``watermark_tick_seconds`` ahead and records its firing time, which
the watermark has passed by definition (a timer that finds the watermark already far ahead doubles
its step instead, see ``transforms/timer_pacing.py``). An element whose event time is older than
that known watermark minus L is counted (``late_data/<stage>``) and sent to the dead letters with
class ``late``; everything else passes unchanged. Timers in the global window never expire, so no
runner drops anything before this step sees it. The loop stops once the known watermark is L past
the newest event the shard has seen (nothing older can be judged differently by going on) and
restarts with the next element, so a drained pipeline ends. This uses only event-time timers and
value state: it runs the same on the DirectRunner, Prism, Flink and Dataflow.

Precision: caught up, the known watermark lags the real one by up to one tick, so detection is
conservative (an element at most one tick over the limit may pass); the windows' own allowed
lateness is L plus two ticks, so what this step passes is not dropped by the grouping after it.
Two gaps remain, both where the known watermark lags by more than a tick: (1) while the watermark
races through a backlog the timer steps coarser (up to its last step); (2) after a shard has seen
nothing for longer than L while the watermark moved on, its first new element is judged against
the old watermark. An element more than L + two ticks late can then pass the check and be dropped
by the window after it (Flink counts it as ``droppedDueToLateness``; it is not dead-lettered).
Backlogs replay the log in order, so (1) needs disorder in the log itself close to L.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger as triggers
from apache_beam.transforms import window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Duration, Timestamp

from retail_backbone.io.dead_letters import DeadLetter, dead_letter
from retail_backbone.io.events import Event
from retail_backbone.transforms.timer_pacing import next_wake

__all__ = [
    "MODES",
    "DropLateData",
    "LateDataResult",
    "WindowForMode",
    "WindowedResult",
    "WindowingOptions",
    "event_dead_letter",
    "event_json_bytes",
    "unwindow",
    "window_into",
]

MODES = ("batch", "streaming")
LATE = "late"


@dataclass(frozen=True)
class WindowingOptions:
    """How a transform is windowed and triggered in its run mode.

    Attributes:
        mode: ``batch`` or ``streaming``.
        early_firing_seconds: streaming: emit a pane this often (processing time) while a
            window is open (late data fires a pane per late element). Default 30.
        allowed_lateness_seconds: streaming: how far behind the watermark an event may arrive
            and still count; older ones go to the dead letters (class ``late``). Default 1 h.
        late_check_shards: streaming: parallelism (shard keys) of the late-data check.
        watermark_tick_seconds: streaming: resolution of the late-data check's watermark
            (one timer per shard per tick of event time); also the step at which the stateful
            ledger folds final movements and emits settled alerts.
        confirm_panes: streaming: stateful steps after an early-firing grouping count a time
            as reached only ``confirm_seconds`` of wall time after the watermark passed it
            (see ``ledger._ShardLedgerFn._horizon``). Turn off only where panes are delivered
            synchronously with the watermark (the DirectRunner's ``TestStream``).
    """

    mode: str
    early_firing_seconds: float = 30.0
    allowed_lateness_seconds: int = 3600
    late_check_shards: int = 16
    watermark_tick_seconds: int = 60
    confirm_panes: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be 'batch' or 'streaming', not {self.mode!r}")
        if self.early_firing_seconds <= 0:
            raise ValueError("early_firing_seconds must be positive")
        if self.allowed_lateness_seconds < 0:
            raise ValueError("allowed_lateness_seconds must be >= 0")
        if self.late_check_shards <= 0 or self.watermark_tick_seconds <= 0:
            raise ValueError("late_check_shards and watermark_tick_seconds must be positive")

    @property
    def streaming(self) -> bool:
        return self.mode == "streaming"

    @property
    def lateness_ms(self) -> int:
        return self.allowed_lateness_seconds * 1000

    @property
    def confirm_seconds(self) -> float:
        """Wall time for an early-firing grouping to hand on what the watermark has covered.

        Two firing intervals and two seconds of scheduling slack; 0 when not confirming.
        """
        if not (self.streaming and self.confirm_panes):
            return 0.0
        return 2 * self.early_firing_seconds + 2.0

    @property
    def window_lateness_seconds(self) -> int:
        """The windows' allowed lateness: L plus two ticks of the late check's resolution."""
        return self.allowed_lateness_seconds + 2 * self.watermark_tick_seconds

    @property
    def fold_delay_seconds(self) -> int:
        """How far behind the watermark stateful steps treat their input as final.

        The allowed lateness, the late check's two ticks, and two early-firing intervals: a
        grouping with end-of-window output times does not hold the watermark for the elements
        it buffers, so the watermark after it may run ahead of an element by the time the
        element waits there (one firing interval, in real time).
        """
        return self.window_lateness_seconds + 2 * math.ceil(self.early_firing_seconds)


# -- dead letters for events ------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        # The JSON contract carries timestamps as epoch milliseconds.
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return int(aware.timestamp() * 1000)
    if isinstance(value, dt.date):
        return (value - dt.date(1970, 1, 1)).days
    if isinstance(value, bytes):
        return value.decode("latin-1")
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def event_json_bytes(event: Event) -> bytes:
    """The event as a plain-JSON payload (the JSON contract: decimals as strings, times as ms).

    Dead letters need the original bytes; a decoded ``Event`` no longer has them, so this is the
    faithful re-encoding that ``DecodeEvents(fmt="json")`` reads back into the same ``Event``.
    """
    doc = {
        "envelope": {
            "event_id": event.event_id,
            "event_type": event.event_type,
            "event_time": event.event_time_ms,
            "ingest_time": event.ingest_time_ms,
            "source": event.source,
            "trace_id": event.trace_id,
            "partition_key": event.partition_key,
            "schema_subject": event.schema_subject,
            "schema_version": event.schema_version,
            "attributes": event.attributes,
        },
        **event.payload,
    }
    return json.dumps(doc, default=_json_default, sort_keys=True).encode()


def event_dead_letter(
    event: Event, pipeline: str, stage: str, error_class: str, message: str
) -> DeadLetter:
    """A dead letter for a decoded event (payload re-encoded by ``event_json_bytes``)."""
    return dead_letter(
        event_json_bytes(event),
        event.origin,
        pipeline,
        stage,
        message,
        error_class=error_class,
        event_id=event.event_id,
        event_time_ms=event.event_time_ms,
    )


def _event_time_ms(event: Event) -> int:
    return event.event_time_ms


def _event_id(event: Event) -> str:
    return event.event_id


# -- late data --------------------------------------------------------------------------------


class LateDataResult(NamedTuple):
    """Outputs of ``DropLateData``."""

    on_time: beam.PCollection
    dead_letters: beam.PCollection


class _DropLateFn(beam.DoFn):
    """Per shard: pass each element, or tag it late, by the watermark learned from a timer."""

    LATE = "late"
    # (known watermark ms | None, newest event time seen ms, armed timer ms | None,
    #  Pace | None, wall time the hold at the end of the data began | None)
    CLOCK = ReadModifyWriteStateSpec("clock", PickleCoder())
    TICK = TimerSpec("tick", TimeDomain.WATERMARK)

    def __init__(
        self,
        lateness_ms: int,
        tick_ms: int,
        time_of: Callable[[Any], int],
        hold_seconds: float = 0.0,
    ) -> None:
        self._lateness_ms = lateness_ms
        self._tick_ms = tick_ms
        self._time_of = time_of
        self._hold_seconds = hold_seconds

    def process(
        self,
        element: tuple[int, Any],
        clock=beam.DoFn.StateParam(CLOCK),
        tick=beam.DoFn.TimerParam(TICK),
    ) -> Iterator[Any]:
        _, value = element
        t = self._time_of(value)
        known, newest, armed, pace, hold_since = clock.read() or (None,) * 5
        if known is not None and t < known - self._lateness_ms:
            yield beam.pvalue.TaggedOutput(self.LATE, (value, known))
        else:
            yield value
        newest = t if newest is None else max(newest, t)
        if armed is None:
            # First element (the watermark passes its own time eventually) or a restart.
            armed = t if known is None else known + self._tick_ms
            tick.set(Timestamp(micros=armed * 1000))
        clock.write((known, newest, armed, pace, hold_since))

    @on_timer(TICK)
    def _tick(
        self,
        fired=beam.DoFn.TimestampParam,
        clock=beam.DoFn.StateParam(CLOCK),
        tick=beam.DoFn.TimerParam(TICK),
    ) -> Iterator[Any]:
        _, newest, _, pace, hold_since = clock.read() or (None,) * 5
        known = fired.micros // 1000
        armed = None
        if newest is not None and known <= newest + self._lateness_ms:
            # Up to the newest event's tick first (never past it: an event from the future
            # must not make the check coarse), then on until L past it.
            newest_tick = newest - newest % self._tick_ms
            furthest = (
                newest_tick if known < newest_tick else newest + self._lateness_ms + self._tick_ms
            )
            armed, pace = next_wake(known, known + 1, furthest, self._tick_ms, pace)
            hold_since = None
        elif newest is not None and self._hold_seconds > 0:
            # Past the data: before letting the watermark go (to the end of time, when a
            # bounded read ends), hold this step's output here for ``hold_seconds`` of wall
            # time, re-arming one millisecond on. On portable Flink a watermark jump to the
            # end has overtaken elements still on their way through later steps (windows then
            # dropped them as too late); while held, they land within the allowed lateness.
            now = time.time()
            hold_since = now if hold_since is None else hold_since
            if now - hold_since < self._hold_seconds:
                armed = known + 1
        if armed is not None:
            tick.set(Timestamp(micros=armed * 1000))
        clock.write((known, newest, armed, pace, hold_since))
        yield from ()


class _LateDeadLetterFn(beam.DoFn):
    """Late elements -> dead letters (class ``late``), counted as ``late_data/<stage>``.

    A step of its own, not part of the stateful check: counters incremented inside a stateful
    ``DoFn`` whose bundle also fires timers are lost on the Python DirectRunner.
    """

    def __init__(
        self,
        lateness_ms: int,
        pipeline: str,
        stage: str,
        dead_letter_of: Callable[[Any, str, str, str, str], DeadLetter],
    ) -> None:
        self._lateness_ms = lateness_ms
        self._pipeline = pipeline
        self._stage = stage
        self._dead_letter_of = dead_letter_of
        self._late = Metrics.counter("late_data", stage)

    def process(self, element: tuple[Any, int]) -> Iterator[DeadLetter]:
        value, known = element
        self._late.inc()
        message = (
            f"event time is more than the allowed lateness ({self._lateness_ms} ms) behind "
            f"the watermark ({known})"
        )
        yield self._dead_letter_of(value, self._pipeline, self._stage, LATE, message)


class DropLateData(beam.PTransform):
    """Streaming: dead-letter elements older than the watermark minus the allowed lateness.

    See the module docstring for how the watermark is learned. Input elements keep their
    timestamps and windows; apply this before windowing.

    Args:
        options: lateness, shards and tick.
        pipeline: pipeline name recorded on dead letters.
        stage: stage name for dead letters and the ``late_data/<stage>`` counter.
        time_of: event time (ms) of an element; default ``Event.event_time_ms``.
        shard_key: a stable string per element, spread over the shards; default the event id.
        dead_letter_of: ``(element, pipeline, stage, error_class, message) -> DeadLetter``;
            default ``event_dead_letter``.
    """

    def __init__(
        self,
        options: WindowingOptions,
        pipeline: str,
        stage: str,
        time_of: Callable[[Any], int] = _event_time_ms,
        shard_key: Callable[[Any], str] = _event_id,
        dead_letter_of: Callable[[Any, str, str, str, str], DeadLetter] = event_dead_letter,
        label: str | None = None,
    ) -> None:
        super().__init__(label)
        self._options = options
        self._pipeline = pipeline
        self._stage = stage
        self._time_of = time_of
        self._shard_key = shard_key
        self._dead_letter_of = dead_letter_of

    def expand(self, pcoll: beam.PCollection) -> LateDataResult:
        shards, shard_key = self._options.late_check_shards, self._shard_key
        out = (
            pcoll
            | "KeyByShard"
            >> beam.Map(
                lambda e: (zlib.crc32(shard_key(e).encode()) % shards, e)
            ).with_output_types(tuple[int, Any])
            | "CheckLateness"
            >> beam.ParDo(
                _DropLateFn(
                    self._options.lateness_ms,
                    self._options.watermark_tick_seconds * 1000,
                    self._time_of,
                    hold_seconds=self._options.confirm_seconds,
                )
            ).with_outputs(_DropLateFn.LATE, main="on_time")
        )
        dead = out[_DropLateFn.LATE] | "DeadLetterLate" >> beam.ParDo(
            _LateDeadLetterFn(
                self._options.lateness_ms, self._pipeline, self._stage, self._dead_letter_of
            )
        )
        return LateDataResult(on_time=out.on_time, dead_letters=dead)


# -- windows and triggers ---------------------------------------------------------------------


def window_into(
    options: WindowingOptions,
    windowfn: window.WindowFn | None = None,
    accumulation: str = "accumulating",
) -> beam.WindowInto:
    """The ``WindowInto`` for ``options.mode``: same windows in both modes, triggers in streaming.

    Args:
        options: the mode and its firing settings.
        windowfn: event-time windows; ``None`` for the global window.
        accumulation: streaming: ``accumulating`` (each pane holds the whole window so far) or
            ``discarding`` (each pane holds what arrived since the last one; for a stateful
            running total after the grouping, which must not see an element twice).

    Panes are stamped at the end of the window (the default): a grouping that stamps them at
    its earliest element holds the watermark for its buffered elements, which the Python
    DirectRunner never releases in the global window (timers after it would never fire).
    """
    windowfn = windowfn or window.GlobalWindows()
    if not options.streaming:
        return beam.WindowInto(windowfn)
    every = options.early_firing_seconds
    mode = {
        "accumulating": triggers.AccumulationMode.ACCUMULATING,
        "discarding": triggers.AccumulationMode.DISCARDING,
    }[accumulation]
    return beam.WindowInto(
        windowfn,
        # Late firings per late element: late data is rare, and a processing-time late trigger
        # never fires on the Python DirectRunner once the window has passed (the job stalls).
        trigger=triggers.AfterWatermark(
            early=triggers.AfterProcessingTime(every), late=triggers.AfterCount(1)
        ),
        accumulation_mode=mode,
        allowed_lateness=Duration(seconds=options.window_lateness_seconds),
    )


def unwindow() -> beam.WindowInto:
    """Back to the plain global window and default trigger (dead letters from any window)."""
    return beam.WindowInto(window.GlobalWindows())


class WindowedResult(NamedTuple):
    """Outputs of ``WindowForMode``."""

    elements: beam.PCollection
    dead_letters: beam.PCollection


class _StampEventTimeFn(beam.DoFn):
    """Event time always comes from the payload, whatever timestamp the element arrived with."""

    def __init__(self, time_of: Callable[[Any], int]) -> None:
        self._time_of = time_of

    def process(self, element: Any) -> Iterator[Any]:
        yield window.TimestampedValue(element, Timestamp(micros=self._time_of(element) * 1000))


class WindowForMode(beam.PTransform):
    """Late-data check (streaming), event-time stamps, then the mode's windows and triggers.

    Args:
        options: mode, firing interval and allowed lateness.
        windowfn: event-time windows; ``None`` for the global window.
        pipeline: pipeline name recorded on dead letters.
        stage: stage name for dead letters and counters.
        accumulation: see ``window_into``.
        time_of: event time (ms) of an element; default ``Event.event_time_ms``.
        shard_key: see ``DropLateData``.
        dead_letter_of: see ``DropLateData``.

    Returns:
        ``WindowedResult(elements, dead_letters)``; ``dead_letters`` is empty in batch.
    """

    def __init__(
        self,
        options: WindowingOptions,
        windowfn: window.WindowFn | None = None,
        *,
        pipeline: str,
        stage: str,
        accumulation: str = "accumulating",
        time_of: Callable[[Any], int] = _event_time_ms,
        shard_key: Callable[[Any], str] = _event_id,
        dead_letter_of: Callable[[Any, str, str, str, str], DeadLetter] = event_dead_letter,
        label: str | None = None,
    ) -> None:
        super().__init__(label)
        self._options = options
        self._windowfn = windowfn
        self._pipeline = pipeline
        self._stage = stage
        self._accumulation = accumulation
        self._time_of = time_of
        self._shard_key = shard_key
        self._dead_letter_of = dead_letter_of

    def expand(self, pcoll: beam.PCollection) -> WindowedResult:
        if self._options.streaming:
            checked = pcoll | "DropLateData" >> DropLateData(
                self._options,
                self._pipeline,
                self._stage,
                self._time_of,
                self._shard_key,
                self._dead_letter_of,
            )
            pcoll, dead = checked.on_time, checked.dead_letters
        else:
            dead = pcoll.pipeline | "NoLateData" >> beam.Create([]).with_output_types(DeadLetter)
        windowed = (
            pcoll
            | "StampEventTime" >> beam.ParDo(_StampEventTimeFn(self._time_of))
            | "Window" >> window_into(self._options, self._windowfn, self._accumulation)
        )
        return WindowedResult(elements=windowed, dead_letters=dead)
