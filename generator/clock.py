"""When things happen: the diurnal traffic curve, store hours, and time-of-day sampling.

Example::

    ONLINE.share(m)                     # share of a day's online sessions in minute m (0..1439)
    t = ONLINE.sample_ms(rng, day_start) # a random time that day, following the curve

All times are UTC and the curve is the retailer's single business time zone: lowest around
03:00-05:00, a midday peak (12:00-13:00) and a higher evening peak (19:00-21:00).
"""

from __future__ import annotations

import random
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate

__all__ = ["BUSINESS", "ONLINE", "STORE", "DayCurve"]

MINUTE_MS = 60_000

# Relative online traffic per hour of day (value at the middle of the hour).
# fmt: off
_ONLINE_HOURLY = (
    0.30, 0.18, 0.11, 0.08, 0.08, 0.12, 0.25, 0.45, 0.70, 0.85, 0.95, 1.05,
    1.18, 1.12, 1.00, 0.95, 0.95, 1.00, 1.12, 1.30, 1.40, 1.28, 0.95, 0.58,
)
# In-store transactions: stores open 08:00-21:00.
_STORE_HOURLY = (
    0, 0, 0, 0, 0, 0, 0, 0, 0.45, 0.75, 0.95, 1.10,
    1.25, 1.20, 1.00, 0.95, 1.00, 1.15, 1.25, 1.05, 0.70, 0, 0, 0,
)
# Office work (price changes, promotions, catalog edits): 07:00-19:00.
_BUSINESS_HOURLY = (
    0.02, 0.02, 0.02, 0.02, 0.02, 0.02, 0.05, 0.6, 1, 1, 1, 1,
    0.8, 1, 1, 1, 1, 0.8, 0.5, 0.1, 0.05, 0.02, 0.02, 0.02,
)
# fmt: on


@dataclass(frozen=True)
class DayCurve:
    """A per-minute intensity profile over one day, normalized to shares that sum to 1."""

    shares: tuple[float, ...]
    cumulative: tuple[float, ...]

    @classmethod
    def from_hourly(cls, hourly: tuple[float, ...], smooth: bool = True) -> DayCurve:
        minutes = []
        for m in range(1440):
            if smooth:
                # Linear interpolation between hour midpoints so there are no steps on the hour.
                x = m / 60.0 - 0.5
                h0 = int(x // 1) % 24
                frac = x - (x // 1)
                minutes.append(hourly[h0] * (1 - frac) + hourly[(h0 + 1) % 24] * frac)
            else:
                minutes.append(float(hourly[m // 60]))
        total = sum(minutes)
        shares = tuple(v / total for v in minutes)
        return cls(shares, tuple(accumulate(shares)))

    def share(self, minute: int) -> float:
        return self.shares[minute]

    def sample_ms(self, rng: random.Random, day_start_ms: int) -> int:
        """A random epoch-ms time in the day starting at ``day_start_ms``, following the curve."""
        minute = min(1439, bisect_right(self.cumulative, rng.random() * self.cumulative[-1]))
        return day_start_ms + minute * MINUTE_MS + rng.randrange(MINUTE_MS)


ONLINE = DayCurve.from_hourly(_ONLINE_HOURLY)
STORE = DayCurve.from_hourly(_STORE_HOURLY, smooth=False)
BUSINESS = DayCurve.from_hourly(_BUSINESS_HOURLY, smooth=False)
