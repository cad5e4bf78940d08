"""Master data in motion: the catalog and the customer base, and their upsert events.

Example::

    catalog = Catalog(sim, world, pricing)
    people = Population(sim, world)
    sim.spawn(catalog.snapshot(window_ms=20_000))     # product_upserted for every product
    sim.spawn(people.snapshot(window_ms=40_000))      # customer_upserted for every customer
    sim.call_at(t, catalog.random_update)             # a title/attribute edit or a delisting
    people.signup(source="WEB")                       # a new customer joins now

``customer_upserted`` is the only event type that carries PII (email, phone, address). Changes
are copy-on-write: the starting ``World`` stays as it was (the legacy ERP is seeded from it).
"""

from __future__ import annotations

import dataclasses
import random
from bisect import bisect_right
from collections.abc import Callable

from retail_backbone.generator.fakes import fake_person
from retail_backbone.generator.pricing import Pricing
from retail_backbone.generator.sim import Process, Simulation
from retail_backbone.generator.world import (
    ATTRIBUTES,
    SEGMENTS,
    Customer,
    World,
    make_customer,
)

__all__ = ["Catalog", "Population"]

_EDITIONS = ("2025 Edition", "V2", "Refresh", "Limited Edition", "Eco")


class Catalog:
    """Sellable flags, titles and attributes as they change; emits ``product_upserted``."""

    def __init__(self, sim: Simulation, world: World, pricing: Pricing) -> None:
        self.sim = sim
        self.world = world
        self.pricing = pricing
        self.active = [True] * len(world.products)
        pricing.active = self.active
        self.titles = [p.title for p in world.products]
        self.attributes = [dict(p.attributes) for p in world.products]
        self.rng = sim.rng

    def emit(self, product: int) -> dict:
        p = self.world.products[product]
        event = {
            "envelope": None,
            "sku": p.sku,
            "title": self.titles[product],
            "brand": self.world.brands[p.brand].name,
            "categories": list(p.categories),
            "price_band": p.price_band,
            "list_price": self.pricing.price(product),
            "attributes": dict(self.attributes[product]),
            "active": self.active[product],
        }
        return self.sim.emit("product_upserted", "ERP", p.sku, event)

    def snapshot(self, window_ms: int) -> Process:
        """Every product once, spread evenly over ``window_ms`` (the initial catalog load)."""
        n, start = len(self.world.products), self.sim.now
        for product in range(n):
            due = start + product * window_ms // n
            if due > self.sim.now:
                yield due - self.sim.now
            self.emit(product)

    def random_update(self) -> None:
        """A merchandiser edits a product (title or an attribute) or, rarely, delists it."""
        rng = self.rng
        product = rng.randrange(len(self.world.products))
        if not self.active[product]:
            return
        r = rng.random()
        if r < 0.12 and sum(self.active) > len(self.active) // 2:
            self.active[product] = False
        elif r < 0.4:
            base = self.world.products[product].title
            self.titles[product] = f"{base} ({rng.choice(_EDITIONS)})"
        else:
            family = self.world.subcats[self.world.products[product].subcat].family
            key = rng.choice(sorted(ATTRIBUTES[family]))
            self.attributes[product][key] = rng.choice(ATTRIBUTES[family][key])
        self.emit(product)


class Population:
    """The customer base as it grows and changes, with activity-weighted sampling."""

    def __init__(self, sim: Simulation, world: World) -> None:
        self.sim = sim
        self.world = world
        self.rng = sim.rng
        self.customers: list[Customer] = list(world.customers)
        self._cum: list[float] = []
        self._store: dict[int, tuple[list[int], list[float]]] = {s: ([], []) for s in world.stores}
        for c in self.customers:
            self._index(c)
        self.on_signup: Callable[[Customer], None] | None = None

    def _index(self, c: Customer) -> None:
        self._cum.append((self._cum[-1] if self._cum else 0.0) + c.activity)
        if c.country == "US":
            members, cum = self._store[c.home_store]
            members.append(c.index)
            cum.append((cum[-1] if cum else 0.0) + c.activity)

    def pick(self, rng: random.Random) -> Customer:
        """A customer, more active ones more often."""
        cum = self._cum
        return self.customers[bisect_right(cum, rng.random() * cum[-1])]

    def pick_at_store(self, rng: random.Random, store: int) -> Customer | None:
        members, cum = self._store[store]
        if not members:
            return None
        return self.customers[members[bisect_right(cum, rng.random() * cum[-1])]]

    def emit(self, c: Customer, source: str) -> dict:
        person = c.person
        event = {
            "envelope": None,
            "customer_id": c.customer_id,
            "email": person.email,
            "phone": person.phone,
            "address": {
                "street": person.street,
                "city": person.city,
                "postal_code": person.postal_code,
                "country": person.country,
            },
            "home_store": self.world.locations[c.home_store].location_id,
            "segment": SEGMENTS[c.segment].name,
            "signup_time": c.signup_ms,
            "marketing_opt_in": c.marketing_opt_in,
        }
        return self.sim.emit("customer_upserted", source, c.customer_id, event)

    def snapshot(self, window_ms: int) -> Process:
        """Every starting customer once, spread over ``window_ms`` (the initial CRM load)."""
        n, start = len(self.world.customers), self.sim.now
        for k, c in enumerate(self.world.customers):
            due = start + k * window_ms // n
            if due > self.sim.now:
                yield due - self.sim.now
            self.emit(c, "ERP")

    def signup(self, source: str | None = None) -> tuple[Customer, dict]:
        """A new customer registers now; returns it and its ``customer_upserted`` event."""
        rng = self.rng
        c = make_customer(self.world, len(self.customers), rng, self.sim.now, self.sim.ids)
        self.customers.append(c)
        self._index(c)
        source = source or ("MOBILE" if rng.random() < c.mobile_share else "WEB")
        event = self.emit(c, source)
        if self.on_signup is not None:
            self.on_signup(c)
        return c, event

    def random_update(self) -> None:
        """A customer edits their profile: moves, changes phone or email, toggles consent."""
        rng = self.rng
        c = self.pick(rng)
        r = rng.random()
        person = c.person
        city = self.world.locations[c.home_store].city if person.country == "US" else None
        if r < 0.4:
            moved = fake_person(rng, person.country, city, c.index + 1)
            person = dataclasses.replace(
                person, street=moved.street, city=moved.city, postal_code=moved.postal_code
            )
        elif r < 0.65:
            fresh = fake_person(rng, person.country, city, c.index + 1)
            person = dataclasses.replace(person, phone=fresh.phone)
        elif r < 0.8:
            fresh = fake_person(rng, person.country, city, c.index + 1)
            person = dataclasses.replace(person, email=fresh.email)
        updated = dataclasses.replace(
            c,
            person=person,
            address_hash=self.world.address_hash(person),
            marketing_opt_in=(not c.marketing_opt_in) if r >= 0.8 else c.marketing_opt_in,
        )
        self.customers[c.index] = updated
        self.emit(updated, "MOBILE" if rng.random() < c.mobile_share else "WEB")
