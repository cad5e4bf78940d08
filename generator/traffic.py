"""The event simulation: wires world, state and processes, and streams events in time order.

Example::

    cfg = GeneratorConfig(seed=7, start=date(2025, 11, 24), days=7,
                          peak_day=date(2025, 11, 28), peak_multiplier=10)
    stream = generate_events(cfg)
    for event in stream:                # dicts matching each subject's latest Avro schema
        ...
    stream.summary().to_dict()          # counts per type and per day, business counters
    stream.fraud                        # ground truth of the injected incidents

What runs:

- arrivals, every simulated minute: online sessions (Poisson, following the diurnal curve, the
  weekday pattern and the peak day) and store till transactions (store hours only);
- nightly per location: replenishment review (receipts arrive 1-3 days later), evening cycle
  counts, a little recorded shrink;
- office hours: price changes, promotions, catalog edits; all day: sign-ups, profile edits;
- fraud incidents at random times;
- at the very start (``config.snapshot``): the whole catalog, customer base and opening stock.

Memory is bounded by the suspended processes (open sessions, orders awaiting shipment, scheduled
returns and receipts), not by the number of events: a stream can be consumed lazily.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from retail_backbone.generator.clock import BUSINESS, ONLINE, STORE
from retail_backbone.generator.config import DAY_MS, GeneratorConfig
from retail_backbone.generator.fraud import FraudIncident, FraudInjector
from retail_backbone.generator.inventory import InventoryOps, StockLedger
from retail_backbone.generator.masterdata import Catalog, Population
from retail_backbone.generator.pricing import Pricing
from retail_backbone.generator.shopping import Shop
from retail_backbone.generator.sim import Process, Simulation, poisson
from retail_backbone.generator.stats import Counters, Summary
from retail_backbone.generator.world import World, build_world

__all__ = ["EVENTS_PER_SESSION", "EventStream", "generate_events"]

#: Events of all types per online session on an ordinary day (measured); sizes the session rate.
EVENTS_PER_SESSION = 7.15
#: Store till transactions per online session.
STORE_VISITS_PER_SESSION = 0.012
HOUR_MS = 3_600_000
MINUTE_MS = 60_000


class EventStream(Iterator[dict]):
    """The iterator ``generate_events`` returns: events plus the run's world, stats and truth.

    Attributes:
        config: the run's parameters.
        world: the starting world (catalog, locations, customers with latent preferences).
    """

    def __init__(self, config: GeneratorConfig, world: World | None = None) -> None:
        self.config = config
        self.world = world if world is not None else build_world(config)
        if self.world.config.world_key() != config.world_key():
            raise ValueError("world was built from a config with another seed, start or sizes")
        sim = self.sim = Simulation(config.start_ms, config.end_ms, config.seed)
        self.counters = Counters()
        self.ledger = StockLedger(self.world)
        self.ops = InventoryOps(sim, self.world, self.ledger)
        self.pricing = Pricing(sim, self.world)
        self.catalog = Catalog(sim, self.world, self.pricing)
        self.people = Population(sim, self.world)
        self.shop = Shop(
            sim,
            self.world,
            config,
            self.ledger,
            self.ops,
            self.pricing,
            self.catalog,
            self.people,
            self.counters,
        )
        self._fraud = FraudInjector(sim, self.world, config, self.shop, self.people)
        sim.spawn(self._arrivals())
        sim.spawn(self._days())
        self._events = sim.run()

    def __next__(self) -> dict:
        return next(self._events)

    def __iter__(self) -> EventStream:
        return self

    @property
    def fraud(self) -> list[FraudIncident]:
        """Injected incidents that produced events (complete once the stream is exhausted)."""
        return [i for i in self._fraud.incidents if i.event_ids]

    def summary(self) -> Summary:
        """Counts per event type and per day so far, plus business counters."""
        fraud: dict[str, int] = {}
        for incident in self.fraud:
            fraud[incident.pattern] = fraud.get(incident.pattern, 0) + 1
        self.counters.signups = len(self.people.customers) - len(self.world.customers)
        return Summary.from_days(
            self.config.start,
            self.config.days,
            self.sim.counts_by_day,
            dataclasses.replace(self.counters),
            fraud,
        )

    # -- processes -------------------------------------------------------------------------

    def _arrivals(self) -> Process:
        """Each simulated minute: Poisson session and store-visit arrivals for that minute."""
        cfg, sim, rng, shop = self.config, self.sim, self.sim.rng, self.shop
        sessions_per_day = cfg.events_per_day / EVENTS_PER_SESSION
        visits_per_day = sessions_per_day * STORE_VISITS_PER_SESSION
        online, store = ONLINE.shares, STORE.shares
        minute = 0
        while True:
            day, m = divmod(minute, 1440)
            factor = cfg.day_factor(day)
            now = sim.now
            for _ in range(poisson(rng, sessions_per_day * factor * online[m])):
                sim.spawn(shop.online_session(), at=now + rng.randrange(MINUTE_MS))
            for _ in range(poisson(rng, visits_per_day * factor * store[m])):
                sim.spawn(shop.store_visit(), at=now + rng.randrange(MINUTE_MS))
            minute += 1
            yield MINUTE_MS

    def _days(self) -> Process:
        """At each midnight: schedule the day's back-office work and fraud."""
        cfg, sim, rng, world = self.config, self.sim, self.sim.rng, self.world
        n_products, n_customers = len(world.products), len(world.customers)
        carried_per_location = [0] * world.n_locations
        for i, carried in enumerate(world.carried):
            if carried:
                carried_per_location[i % world.n_locations] += 1
        day = 0
        while True:
            start = sim.now
            if day == 0 and cfg.snapshot:
                sim.spawn(self.catalog.snapshot(10_000))
                sim.spawn(self.people.snapshot(30_000), at=start + 10_000)
                sim.spawn(self.ops.initial_counts(20_000), at=start + 40_000)
            if day == cfg.peak_index():
                self.pricing.peak_promotion(start)
            peak = cfg.peak_index()
            # Stock builds up over the three days before the peak (receipts land in time).
            build_up = (
                min(1.5, cfg.peak_multiplier) if peak is not None and 1 <= peak - day <= 3 else 1.0
            )
            for loc in world.locations:
                index = loc.index
                sim.spawn(
                    self.ops.replenishment_review(index, build_up),
                    at=start + HOUR_MS + index * 20_000 + rng.randrange(10_000),
                )
                evening = (21 if loc.is_store else 14) * HOUR_MS
                items = max(1, round(carried_per_location[index] * 0.02))
                sim.spawn(
                    self.ops.cycle_count(index, items),
                    at=start + evening + rng.randrange(2 * HOUR_MS),
                )
                for _ in range(poisson(rng, 0.6 if loc.is_store else 0.4)):
                    at = STORE.sample_ms(rng, start) if loc.is_store else _anytime(rng, start)
                    sim.spawn(self.ops.shrink(index), at=at)
            for _ in range(poisson(rng, n_products * 0.01)):
                sim.call_at(BUSINESS.sample_ms(rng, start), self.pricing.change_price)
            for _ in range(poisson(rng, 1.5)):
                sim.call_at(BUSINESS.sample_ms(rng, start), self.pricing.random_promotion)
            for _ in range(poisson(rng, n_products * 0.003)):
                sim.call_at(BUSINESS.sample_ms(rng, start), self.catalog.random_update)
            factor = cfg.day_factor(day)
            for _ in range(poisson(rng, n_customers * 0.002 * factor)):
                sim.call_at(ONLINE.sample_ms(rng, start), self._signup)
            for _ in range(poisson(rng, n_customers * 0.001)):
                sim.call_at(ONLINE.sample_ms(rng, start), self.people.random_update)
            self._fraud.schedule_day(start)
            day += 1
            yield DAY_MS

    def _signup(self) -> None:
        """A visitor registers and goes on browsing as the new customer."""
        customer, _ = self.people.signup()
        self.sim.spawn(self.shop.online_session(customer), at=self.sim.now + 1)


def _anytime(rng, day_start_ms: int) -> int:
    return day_start_ms + rng.randrange(DAY_MS)


def generate_events(config: GeneratorConfig, world: World | None = None) -> EventStream:
    """Stream the run's events in event-time order (lazily; nothing is generated up front).

    Args:
        config: the run's parameters.
        world: a world already built from ``config`` (``build_world(config)``), to share it
            with ``seed_legacy_erp``; built here when omitted.

    Returns:
        An iterator of event dicts that also exposes ``world``, ``summary()`` and ``fraud``.
    """
    return EventStream(config, world)
