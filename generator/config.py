"""Parameters of one generator run.

Example::

    cfg = GeneratorConfig(seed=7, start=date(2025, 11, 24), days=7,
                          peak_day=date(2025, 11, 28), peak_multiplier=10.0)
    small = dataclasses.replace(cfg, n_products=200, n_customers=1_000, events_per_day=20_000)

Same config (and the same Python/numpy versions) -> byte-identical output.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

__all__ = ["DAY_MS", "GeneratorConfig"]

DAY_MS = 86_400_000


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything that shapes a run.

    Attributes:
        seed: master seed; every random stream derives from it.
        start: first simulated day (UTC midnight).
        days: number of simulated days.
        n_products: catalog size.
        n_locations: stores plus fulfillment centers.
        n_customers: registered customers at the start (sign-ups add more during the run).
        events_per_day: approximate event volume of an ordinary weekday (sessions are sized from
            it; the weekly pattern and the peak day scale it).
        peak_day: a day whose traffic is multiplied by ``peak_multiplier`` (Black Friday), with a
            sitewide promotion; ``None`` for no peak.
        peak_multiplier: traffic factor of the peak day.
        weekly_pattern: traffic factor per weekday, Monday first.
        fc_share: share of locations that are fulfillment centers (at least one).
        anonymous_share: share of online sessions by visitors who are not logged in (never order).
        return_rate: share of fulfilled order lines that come back.
        return_window_days: returns happen within this many days after delivery.
        cancel_rate: share of paid online orders the customer cancels before shipment (orders
            whose payment finally fails are cancelled on top of this).
        card_testing_per_day: expected card-testing bursts per day.
        velocity_per_day: expected order-velocity incidents per day.
        impossible_travel_per_day: expected impossible-travel incidents per day.
        snapshot: emit the initial catalog, customer base and stock counts in the first minute.
    """

    seed: int = 7
    start: date = date(2025, 11, 24)
    days: int = 7
    n_products: int = 2_000
    n_locations: int = 50
    n_customers: int = 20_000
    events_per_day: int = 100_000
    peak_day: date | None = None
    peak_multiplier: float = 10.0
    weekly_pattern: tuple[float, ...] = (1.0, 0.97, 0.98, 1.0, 1.06, 1.12, 1.08)
    fc_share: float = 0.16
    anonymous_share: float = 0.3
    return_rate: float = 0.08
    return_window_days: int = 30
    cancel_rate: float = 0.012
    card_testing_per_day: float = 0.5
    velocity_per_day: float = 0.5
    impossible_travel_per_day: float = 0.5
    snapshot: bool = True

    def __post_init__(self) -> None:
        checks = {
            "days must be >= 1": self.days >= 1,
            "n_products must be >= 10": self.n_products >= 10,
            "n_locations must be >= 2": self.n_locations >= 2,
            "n_customers must be >= 10": self.n_customers >= 10,
            "events_per_day must be >= 100": self.events_per_day >= 100,
            "peak_multiplier must be > 0": self.peak_multiplier > 0,
            "weekly_pattern needs 7 positive factors": len(self.weekly_pattern) == 7
            and all(f > 0 for f in self.weekly_pattern),
            "fc_share must be in (0, 1)": 0 < self.fc_share < 1,
            "anonymous_share must be in [0, 1)": 0 <= self.anonymous_share < 1,
            "return_rate must be in [0, 1]": 0 <= self.return_rate <= 1,
            "return_window_days must be >= 1": self.return_window_days >= 1,
            "cancel_rate must be in [0, 1]": 0 <= self.cancel_rate <= 1,
            "fraud rates must be >= 0": min(
                self.card_testing_per_day, self.velocity_per_day, self.impossible_travel_per_day
            )
            >= 0,
        }
        failed = [msg for msg, ok in checks.items() if not ok]
        if failed:
            raise ValueError("; ".join(failed))

    @property
    def start_ms(self) -> int:
        """Epoch milliseconds of ``start`` at 00:00 UTC."""
        return (
            int(datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC).timestamp())
            * 1000
        )

    @property
    def end_ms(self) -> int:
        """Exclusive end of the simulated range."""
        return self.start_ms + self.days * DAY_MS

    def world_key(self) -> tuple:
        """The fields ``build_world`` depends on (a world can be reused across equal keys)."""
        return (
            self.seed,
            self.start,
            self.n_products,
            self.n_locations,
            self.n_customers,
            self.events_per_day,
            self.fc_share,
        )

    def day_factor(self, day_index: int) -> float:
        """Traffic factor of simulated day ``day_index`` (weekly pattern times peak)."""
        day = date.fromordinal(self.start.toordinal() + day_index)
        factor = self.weekly_pattern[day.weekday()]
        if self.peak_day is not None and day == self.peak_day:
            factor *= self.peak_multiplier
        return factor

    def peak_index(self) -> int | None:
        """Day index of the peak day when it falls inside the range."""
        if self.peak_day is None:
            return None
        index = self.peak_day.toordinal() - self.start.toordinal()
        return index if 0 <= index < self.days else None
