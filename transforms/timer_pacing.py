"""When a looping event-time timer wakes next: small steps when caught up, doubling when behind.

Why: a stateful ``DoFn`` that re-arms its watermark timer from the callback fires at most once
per bundle on portable Flink (the re-armed timer is delivered with the next bundle, about one
``max_bundle_time`` later). A loop stepping one fixed tick (a minute) through three days of
backlog therefore needs 4,320 bundles, and while its bundles follow each other without a gap
Beam 2.62's ``DoFnOperator`` never emits the stage's output watermark: every stage after it sees
no watermark at all, so windows never close and final alerts never come.

The timer cannot read the watermark, only that it is at least the firing time. Wall time tells
the two cases apart: a timer that fires within ``QUICK_SECONDS`` of being armed found the
watermark already past it (a backlog, or a watermark that jumped), so the next step doubles; a
timer that waited longer was caught up, so the step goes back to the base tick. Catching up
over a gap G takes about log2(G / tick) firings instead of G / tick; caught up, the loop steps
one tick as before. The step never goes past ``furthest`` (the latest time the caller has work
for), and never stops short of ``due`` (its next piece of work).

The price: while doubling, a timer learns the watermark in coarser steps, so a caller that
uses the firing time as "the watermark" lags the real one by up to the last step (it is never
ahead of it). Results stay exact; only how early the caller acts changes.
"""

from __future__ import annotations

import time
from typing import NamedTuple

__all__ = ["QUICK_SECONDS", "Pace", "next_wake"]

QUICK_SECONDS = 5.0


class Pace(NamedTuple):
    """The last step (ms of event time) and when (wall time, s) the timer was armed with it."""

    step_ms: int
    armed_at: float


def next_wake(
    fired_ms: int,
    due_ms: int,
    furthest_ms: int,
    base_ms: int,
    pace: Pace | None,
    now: float | None = None,
) -> tuple[int, Pace]:
    """The next firing time after a timer fired at ``fired_ms``, and the pace to store.

    Args:
        fired_ms: this firing's time (the watermark is at least this).
        due_ms: the earliest time the caller needs a wake-up (its next piece of work).
        furthest_ms: the latest time the caller has any work for.
        base_ms: the step when caught up (the caller's tick).
        pace: what the previous call returned, or None for a loop's first firing.
        now: wall time in seconds (for tests); default ``time.time()``.
    """
    now = time.time() if now is None else now
    behind = pace is not None and now - pace.armed_at < QUICK_SECONDS
    step = max(2 * pace.step_ms, base_ms) if behind and pace is not None else base_ms
    at = max(due_ms, min(fired_ms + step, furthest_ms), fired_ms + 1)
    return at, Pace(at - fired_ms, now)
