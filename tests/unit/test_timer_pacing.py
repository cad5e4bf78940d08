"""Looping watermark timers: one tick when caught up, doubling steps when the watermark is ahead."""

from retail_backbone.transforms.timer_pacing import QUICK_SECONDS, next_wake

TICK = 60_000


def test_a_first_firing_steps_one_tick():
    at, pace = next_wake(1_000_000, 1_000_001, 10**12, TICK, None, now=100.0)
    assert at == 1_000_000 + TICK
    assert pace.step_ms == TICK


def test_quick_firings_double_the_step_until_the_furthest_work():
    fired, pace, now, steps = 0, None, 100.0, []
    while fired < 3 * 86_400_000:
        at, pace = next_wake(fired, fired + 1, 3 * 86_400_000, TICK, pace, now=now)
        steps.append(at - fired)
        fired, now = at, now + 1.0  # each firing one second after its arming: behind
    assert steps[:4] == [TICK, 2 * TICK, 4 * TICK, 8 * TICK]
    assert fired == 3 * 86_400_000  # never past the furthest work
    assert len(steps) <= 13  # log2(4320) wakes instead of 4,320


def test_a_slow_firing_means_caught_up_so_the_step_returns_to_one_tick():
    _, pace = next_wake(0, 1, 10**12, TICK, None, now=0.0)
    _, pace = next_wake(TICK, TICK + 1, 10**12, TICK, pace, now=1.0)
    assert pace.step_ms == 2 * TICK
    at, pace = next_wake(3 * TICK, 3 * TICK + 1, 10**12, TICK, pace, now=1.0 + QUICK_SECONDS + 1)
    assert at == 4 * TICK


def test_due_work_is_never_skipped_over_and_the_timer_always_moves_forward():
    at, _ = next_wake(5_000, 2_000_000, 3_000_000, TICK, None, now=0.0)
    assert at == 2_000_000  # the next piece of work, even beyond one step
    at, _ = next_wake(5_000, 5_000, 5_000, TICK, None, now=0.0)
    assert at == 5_001
