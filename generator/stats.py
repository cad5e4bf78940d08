"""Run statistics: event counts per type and per day, plus business counters.

Example::

    stream = generate_events(cfg)
    for event in stream: ...
    print(json.dumps(stream.summary().to_dict(), indent=2))

Counts are complete once the stream is exhausted; read mid-stream they describe the events
produced so far.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

__all__ = ["Counters", "Summary"]


@dataclass
class Counters:
    """Business-level tallies kept by the simulation (not derivable from one event type)."""

    sessions: int = 0
    anonymous_sessions: int = 0
    online_orders: int = 0
    store_orders: int = 0
    order_lines: int = 0
    payment_declines: int = 0
    cancellations: int = 0
    shipments: int = 0
    returns: int = 0
    stockouts: int = 0  # a wanted item was not available anywhere it could come from
    signups: int = 0


@dataclass
class Summary:
    """What a run produced.

    Attributes:
        start: first simulated day.
        days: simulated days.
        by_type: events per event type.
        by_day: ISO date -> events per event type that day.
        counters: business tallies (sessions, orders, stockouts ...).
        fraud: incidents per pattern.
    """

    start: date
    days: int
    by_type: dict[str, int]
    by_day: dict[str, dict[str, int]]
    counters: Counters
    fraud: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_days(
        cls,
        start: date,
        days: int,
        counts_by_day: list[dict[str, int]],
        counters: Counters,
        fraud: dict[str, int],
    ) -> Summary:
        by_day, by_type = {}, {}
        for i in range(days):
            counts = counts_by_day[i] if i < len(counts_by_day) else {}
            by_day[(start + timedelta(days=i)).isoformat()] = dict(sorted(counts.items()))
            for t, n in counts.items():
                by_type[t] = by_type.get(t, 0) + n
        return cls(start, days, dict(sorted(by_type.items())), by_day, counters, fraud)

    @property
    def total(self) -> int:
        return sum(self.by_type.values())

    def day_totals(self) -> dict[str, int]:
        return {d: sum(c.values()) for d, c in self.by_day.items()}

    def to_dict(self) -> dict:
        """JSON-ready form (for ``backbone generate --json``)."""
        return {
            "start": self.start.isoformat(),
            "days": self.days,
            "total": self.total,
            "by_type": self.by_type,
            "by_day": self.by_day,
            "day_totals": self.day_totals(),
            "counters": vars(self.counters).copy(),
            "fraud_incidents": self.fraud,
        }
