"""Injected fraud patterns and their ground truth (kept out of the events themselves).

Example::

    stream = generate_events(GeneratorConfig(card_testing_per_day=2))
    for event in stream: ...
    for incident in stream.fraud:               # complete once the stream is exhausted
        incident.pattern, incident.event_ids     # 'card_testing', ['4c0e...', ...]
    write_fraud_truth(stream.fraud, "out/fraud_truth.jsonl")

Patterns (each incident's events look like ordinary traffic; only the truth file says otherwise):

- ``card_testing``: one stolen card token, 12-45 tiny orders (cheapest products) within 2-10
  minutes from one account (a fresh sign-up half the time), ~80% declined (INVALID_CVV,
  CARD_EXPIRED, ...), no retries; declined orders are cancelled, half of the authorized ones are
  cancelled as ``payment_review`` (a reason honest orders get too).
- ``velocity``: a taken-over account places 5-12 orders of premium electronics in 10-40 minutes,
  all shipping to one new address (a different ``shipping_address_hash``).
- ``impossible_travel``: a customer buys at home (the home store's till or online from the home
  country), then 3-25 minutes later online orders are paid from a country more than 5,000 km away.

Honest noise on purpose: ~2% of honest payments come from a travel country, customers sometimes
order twice in an hour, and honest declines happen at 2-6% per attempt.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from retail_backbone.generator.config import DAY_MS, GeneratorConfig
from retail_backbone.generator.fakes import COUNTRIES, distance_km, fake_person
from retail_backbone.generator.masterdata import Population
from retail_backbone.generator.shopping import Recorder, Shop
from retail_backbone.generator.sim import Process, Simulation, poisson
from retail_backbone.generator.world import World

__all__ = ["PATTERNS", "FraudIncident", "FraudInjector", "write_fraud_truth"]

PATTERNS = ("card_testing", "velocity", "impossible_travel")
MINUTE_MS = 60_000
_FAR_FROM_US = tuple(
    c.code
    for c in COUNTRIES.values()
    if distance_km(c.lat, c.lon, COUNTRIES["US"].lat, COUNTRIES["US"].lon) > 5_000
)
_TESTER_COUNTRIES = ("US", "NG", "RU", "VN", "ID", "BR", "PH")


@dataclass
class FraudIncident:
    """Ground truth of one injected incident.

    Attributes:
        incident_id: stable id of the incident.
        pattern: one of ``PATTERNS``.
        customer_id: the account used.
        card_token: the card used, when the pattern is about a card.
        start_ms: event time of the incident's first event.
        end_ms: event time of its last event so far.
        event_ids: ids of the incident's events (orders, payments, cancellations, sign-up).
        order_ids: orders placed in the incident.
        details: pattern-specific facts (countries, distance, counts).
    """

    incident_id: str
    pattern: str
    customer_id: str
    card_token: str | None
    start_ms: int
    end_ms: int
    event_ids: list[str] = field(default_factory=list)
    order_ids: list[str] = field(default_factory=list)
    details: dict[str, str | int | float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class _IncidentRecorder(Recorder):
    """A Recorder that writes straight into a FraudIncident."""

    def __init__(self, incident: FraudIncident) -> None:
        super().__init__()
        self.incident = incident
        self.event_ids = incident.event_ids
        self.order_ids = incident.order_ids

    def add(self, event: dict) -> None:
        super().add(event)
        incident, t = self.incident, event["envelope"]["event_time"]
        if len(incident.event_ids) == 1:
            incident.start_ms = t
        incident.end_ms = max(incident.end_ms, t)


class FraudInjector:
    """Schedules incidents day by day and runs them through the ordinary shop processes."""

    def __init__(
        self,
        sim: Simulation,
        world: World,
        config: GeneratorConfig,
        shop: Shop,
        people: Population,
    ) -> None:
        self.sim = sim
        self.world = world
        self.config = config
        self.shop = shop
        self.people = people
        self.rng = sim.rng
        self.incidents: list[FraudIncident] = []

    def schedule_day(self, day_start_ms: int) -> None:
        """Spawn the day's incidents at uniformly random times (fraud keeps no office hours)."""
        cfg, rng, sim = self.config, self.rng, self.sim
        for pattern, rate in (
            ("card_testing", cfg.card_testing_per_day),
            ("velocity", cfg.velocity_per_day),
            ("impossible_travel", cfg.impossible_travel_per_day),
        ):
            for _ in range(poisson(rng, rate)):
                at = day_start_ms + rng.randrange(DAY_MS)
                sim.spawn(getattr(self, pattern)(), at=at)

    def _incident(self, pattern: str, customer_id: str, card: str | None) -> FraudIncident:
        incident = FraudIncident(
            incident_id=f"FRAUD-{self.sim.ids.hex(10).upper()}",
            pattern=pattern,
            customer_id=customer_id,
            card_token=card,
            start_ms=self.sim.now,
            end_ms=self.sim.now,
        )
        self.incidents.append(incident)
        return incident

    def _domestic_customer(self):
        for _ in range(50):
            c = self.people.pick(self.rng)
            if c.country == "US":
                return c
        return self.people.pick(self.rng)

    def card_testing(self) -> Process:
        sim, rng, world = self.sim, self.rng, self.world
        card = sim.ids.token("tok", 24)
        card_country = rng.choice(_TESTER_COUNTRIES)
        ip_country = rng.choice(_TESTER_COUNTRIES)
        fresh = rng.random() < 0.5
        if fresh:
            customer, signup_event = self.people.signup("WEB")
        else:
            customer, signup_event = self.people.pick(rng), None
        incident = self._incident("card_testing", customer.customer_id, card)
        recorder = _IncidentRecorder(incident)
        if signup_event is not None:
            recorder.add(signup_event)
            yield rng.randrange(MINUTE_MS, 10 * MINUTE_MS)
        attempts = rng.randint(12, 45)
        span = rng.randint(2, 10) * MINUTE_MS
        incident.details = {
            "attempts": attempts,
            "card_country": card_country,
            "ip_country": ip_country,
            "new_account": int(fresh),
        }
        session_id = sim.ids.token("ses", 16)
        for _ in range(attempts):
            product = world.cheap_products[rng.randrange(len(world.cheap_products))]
            sim.spawn(
                self.shop.checkout(
                    customer,
                    {product: 1},
                    "WEB",
                    session_id,
                    card=card,
                    card_country=card_country,
                    ip_country=ip_country,
                    decline_p=0.8,
                    retry=False,
                    coupon_p=0.0,
                    cancel_p=0.5,
                    cancel_reason="payment_review",
                    returns=False,
                    recorder=recorder,
                )
            )
            yield max(1_000, int(rng.expovariate(attempts / span)))

    def velocity(self) -> Process:
        sim, rng, world = self.sim, self.rng, self.world
        customer = self._domestic_customer()
        incident = self._incident("velocity", customer.customer_id, customer.cards[0])
        recorder = _IncidentRecorder(incident)
        drop = fake_person(rng, "US", world.locations[rng.choice(world.stores)].city, 0)
        orders = rng.randint(5, 12)
        span = rng.randint(10, 40) * MINUTE_MS
        incident.details = {"orders": orders, "window_minutes": span // MINUTE_MS}
        drop_hash = world.address_hash(drop)
        for _ in range(orders):
            cart = {}
            for _ in range(rng.randint(1, 3)):
                product = world.premium_products[rng.randrange(len(world.premium_products))]
                cart[product] = rng.randint(1, 2)
            channel = "WEB" if rng.random() < 0.7 else "MOBILE"
            sim.spawn(
                self.shop.checkout(
                    customer,
                    cart,
                    channel,
                    sim.ids.token("ses", 16),
                    decline_p=0.05,
                    address_hash=drop_hash,
                    coupon_p=0.0,
                    cancel_p=0.0,
                    returns=False,
                    recorder=recorder,
                )
            )
            yield rng.randrange(span // orders // 2, span // orders * 3 // 2)

    def impossible_travel(self) -> Process:
        sim, rng, world = self.sim, self.rng, self.world
        customer = self._domestic_customer()
        far = rng.choice(_FAR_FROM_US)
        incident = self._incident("impossible_travel", customer.customer_id, customer.cards[0])
        recorder = _IncidentRecorder(incident)
        in_store = rng.random() < 0.4
        if in_store:
            sim.spawn(self.shop.store_visit(customer, customer.home_store, recorder))
            yield 1_000  # the till transaction has been placed by now, if the shelf had anything
            in_store = bool(incident.event_ids)
        if in_store:
            home = world.locations[customer.home_store].city
            origin = (home.lat, home.lon)
        else:
            sim.spawn(self._online(customer, recorder, customer.country))
            origin = (COUNTRIES["US"].lat, COUNTRIES["US"].lon)
        gap = rng.randrange(3 * MINUTE_MS, 25 * MINUTE_MS)
        incident.details = {
            "home_country": customer.country,
            "far_country": far,
            "first_channel": "STORE" if in_store else "ONLINE",
            "minutes_apart": round(gap / MINUTE_MS, 1),
            "distance_km": round(distance_km(*origin, COUNTRIES[far].lat, COUNTRIES[far].lon)),
        }
        yield gap
        for _ in range(1 if rng.random() < 0.7 else 2):
            sim.spawn(self._online(customer, recorder, far))
            yield rng.randrange(MINUTE_MS, 5 * MINUTE_MS)

    def _online(self, customer, recorder: Recorder, ip_country: str) -> Process:
        rng, shop = self.rng, self.shop
        cart = {shop._pick_product(customer): 1 for _ in range(rng.randint(1, 2))}
        yield from shop.checkout(
            customer,
            cart,
            "WEB",
            self.sim.ids.token("ses", 16),
            ip_country=ip_country,
            decline_p=0.03,
            cancel_p=0.0,
            returns=False,
            recorder=recorder,
        )


def write_fraud_truth(incidents: Iterable[FraudIncident], path: str | Path) -> int:
    """Write incidents as JSONL (one object per incident, in start order); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = sorted(incidents, key=lambda i: (i.start_ms, i.incident_id))
    with path.open("w", encoding="utf-8") as fh:
        for incident in rows:
            fh.write(json.dumps(incident.to_dict(), sort_keys=True) + "\n")
    return len(rows)
