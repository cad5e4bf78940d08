"""Customers shopping: browsing sessions, checkout, payment, shipment, cancellation, returns.

Example::

    shop = Shop(sim, world, config, ledger, ops, pricing, catalog, people, counters)
    sim.spawn(shop.online_session())          # views -> cart -> maybe an order and its lifecycle
    sim.spawn(shop.store_visit())             # a till transaction at a store

The funnel: a session views ~7 products (mostly from the customer's latent favourite
subcategories, often their favourite brands), adds a product to the cart with a probability that
grows with how well it fits the customer (brand, price band, promotion), and a non-empty cart is
checked out with the segment's checkout probability. About 3% of sessions order.

An online order reserves stock at the nearest fulfillment center that has it (else another FC,
else the home store ships it), is paid 1-4 s later (declines are retried once with another card
about half the time; a failed payment cancels the order), ships per location hours later
(``order_shipped`` plus one ``inventory_adjusted`` SALE per line), and ~8% of lines come back
within the return window (``return_processed``; restockable units re-enter stock with RETURN).
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Generator
from itertools import accumulate
from statistics import NormalDist

from retail_backbone.generator.config import DAY_MS, GeneratorConfig
from retail_backbone.generator.inventory import InventoryOps, StockLedger, location_source
from retail_backbone.generator.masterdata import Catalog, Population
from retail_backbone.generator.pricing import Pricing, money
from retail_backbone.generator.sim import Process, Simulation
from retail_backbone.generator.stats import Counters
from retail_backbone.generator.world import SEGMENTS, Customer, World

__all__ = ["Recorder", "Shop"]

HOUR_MS = 3_600_000
MINUTE_MS = 60_000

#: Per-view add-to-cart base probability (before fit multipliers); calibrated for ~3% orders.
BASE_ADD = 0.0085

_FIRST_REFERRERS = ("search", "home", "email_campaign", "ads", "direct", "social")
_FIRST_REFERRER_CUM = tuple(accumulate((0.35, 0.2, 0.08, 0.15, 0.14, 0.08)))
_NEXT_REFERRERS = ("category", "recommendation", "search", "cart")
_NEXT_REFERRER_CUM = tuple(accumulate((0.45, 0.27, 0.2, 0.08)))
_DECLINES = ("INSUFFICIENT_FUNDS", "CARD_EXPIRED", "SUSPECTED_FRAUD", "INVALID_CVV", "OTHER")
_DECLINE_WEIGHTS = (0.45, 0.15, 0.08, 0.12, 0.2)
_RETURN_REASONS = (
    "WRONG_SIZE",
    "CHANGED_MIND",
    "NOT_AS_DESCRIBED",
    "DAMAGED",
    "DEFECTIVE",
    "LATE_DELIVERY",
)
_RETURN_WEIGHTS = (0.28, 0.3, 0.15, 0.1, 0.1, 0.07)
# "payment_review" also hits honest orders (false positives), so it is no fraud label.
_CANCEL_REASONS = (
    "customer_request",
    "changed_mind",
    "found_better_price",
    "delivery_too_slow",
    "payment_review",
)
_CANCEL_CUM = tuple(accumulate((0.4, 0.25, 0.15, 0.1, 0.1)))
_CARRIERS = ("UPS", "FEDEX", "USPS", "ONTRAC")
_APP_VERSIONS = ("5.11.2", "5.12.0", "5.12.1", "5.13.0")
_COUPONS = ("WELCOME10", "SAVE10", "FALL10", "VIP10")
_TRAVEL = ("CA", "MX", "GB", "FR", "DE", "ES", "IT", "JP")


class Recorder:
    """Collects the events of one story (a fraud incident) as they are emitted."""

    def __init__(self) -> None:
        self.event_ids: list[str] = []
        self.order_ids: list[str] = []
        self.first_ms: int | None = None
        self.last_ms: int | None = None

    def add(self, event: dict) -> None:
        env = event["envelope"]
        self.event_ids.append(env["event_id"])
        t = env["event_time"]
        self.first_ms = t if self.first_ms is None else self.first_ms
        self.last_ms = t
        if env["event_type"] == "order_placed":
            self.order_ids.append(event["order_id"])


class Shop:
    """The customer-facing processes; state lives in the ledger, pricing, catalog, population."""

    def __init__(
        self,
        sim: Simulation,
        world: World,
        config: GeneratorConfig,
        ledger: StockLedger,
        ops: InventoryOps,
        pricing: Pricing,
        catalog: Catalog,
        people: Population,
        counters: Counters,
    ) -> None:
        self.sim = sim
        self.world = world
        self.config = config
        self.ledger = ledger
        self.ops = ops
        self.pricing = pricing
        self.catalog = catalog
        self.people = people
        self.counters = counters
        self.rng = sim.rng
        self._store_cum = list(accumulate(world.locations[s].size for s in world.stores))
        self.skus = [p.sku for p in world.products]

    # -- browsing --------------------------------------------------------------------------

    def _pick_subcat(self, customer: Customer) -> int:
        r = self.rng.random()
        if r < 0.9:
            cum = customer.subcat_cum
            return customer.subcats[min(len(cum) - 1, bisect_right(cum, r / 0.9 * cum[-1]))]
        appeal = self.world.subcat_appeal[customer.segment]  # exploration outside the tastes
        return bisect_right(appeal, self.rng.random() * appeal[-1])

    def _pick_product(self, customer: Customer | None, subcat: int | None = None) -> int:
        random, world = self.rng.random, self.world
        if customer is None:
            items, cum = world.global_products
            return items[bisect_right(cum, random() * cum[-1])]
        if subcat is None:
            subcat = self._pick_subcat(customer)
        brands = customer.brands
        if brands and random() < customer.loyalty * 0.6:
            items = world.brand_products.get((subcat, brands[int(random() * len(brands))]))
            if items:
                return items[int(random() * len(items))]
        items, cum = world.pick_tables[subcat, customer.segment]
        return items[bisect_right(cum, random() * cum[-1])]

    def _add_probability(self, customer: Customer | None, product: int) -> float:
        if customer is None:
            return BASE_ADD * 0.5
        p = self.world.products[product]
        seg = SEGMENTS[customer.segment]
        fit = seg.band_affinity[p.band] * 3.0
        if p.brand in customer.brands:
            fit *= 2.0
        if p.subcat in customer.subcats[:2]:
            fit *= 1.5
        if self.pricing.promoted and self.pricing.discount_pct(product):
            fit *= 1.7
        return BASE_ADD * seg.add_to_cart * fit

    def online_session(self, customer: Customer | None = None) -> Process:
        """One browsing session; logged-in customers may check out."""
        sim, rng, pricing, counters = self.sim, self.rng, self.pricing, self.counters
        if customer is None and rng.random() >= self.config.anonymous_share:
            customer = self.people.pick(rng)
        counters.sessions += 1
        if customer is None:
            counters.anonymous_sessions += 1
        mobile = rng.random() < (customer.mobile_share if customer else 0.5)
        channel = "MOBILE" if mobile else "WEB"
        attrs = {"app_version": _APP_VERSIONS[rng.randrange(4)]} if mobile else None
        session_id = sim.ids.token("ses", 16)
        customer_id = customer.customer_id if customer else None
        key = customer_id or session_id
        active, skus = self.catalog.active, self.skus
        random, emit, trace_id = rng.random, sim.emit, sim.trace_id
        pick, add_probability = self._pick_product, self._add_probability
        primary = self._pick_subcat(customer) if customer else None
        referrer = _draw(rng, _FIRST_REFERRERS, _FIRST_REFERRER_CUM)
        cart: dict[int, int] = {}
        cart_id = None
        views = min(40, 1 + int(rng.expovariate(1 / 6.0)))
        viewed = 0
        while viewed < views:
            viewed += 1
            if referrer == "email_campaign" and pricing.promoted:
                product = pricing.promoted[int(random() * len(pricing.promoted))]
            elif customer is not None and random() < 0.6:
                product = pick(customer, primary)
            else:
                product = pick(customer)
            if not active[product]:
                continue
            dwell = _DWELL_MS[int(random() * _DWELL_N)]
            event = {
                "envelope": None,
                "customer_id": customer_id,
                "session_id": session_id,
                "sku": skus[product],
                "channel": channel,
                "referrer": referrer,
                "dwell_ms": dwell,
            }
            emit("product_viewed", channel, key, event, trace_id(), attrs)
            referrer = _draw(rng, _NEXT_REFERRERS, _NEXT_REFERRER_CUM)
            yield dwell + 500 + int(random() * 7_500)
            # Once something is in the cart the visitor is in buying mode: more adds follow.
            boost = 3.0 if cart else 1.0
            if random() < boost * add_probability(customer, product):
                quantity = 1 if random() < 0.85 else rng.randint(2, 3)
                if not self._sellable(customer, product, quantity):
                    counters.stockouts += 1  # "out of stock" on the product page
                    continue
                cart_id = cart_id or sim.ids.token("cart", 16)
                if not cart:
                    views += 2  # browsing on for accessories and alternatives
                cart[product] = cart.get(product, 0) + quantity
                self._cart_event(
                    customer_id,
                    session_id,
                    cart_id,
                    product,
                    quantity,
                    cart[product],
                    channel,
                    key,
                    attrs,
                )
                yield rng.randrange(1_500, 6_000)
            elif cart and random() < 0.03:
                removed = sorted(cart)[rng.randrange(len(cart))]
                self._cart_event(
                    customer_id,
                    session_id,
                    cart_id,
                    removed,
                    -cart.pop(removed),
                    0,
                    channel,
                    key,
                    attrs,
                )
                yield rng.randrange(1_000, 4_000)
        if cart and customer is not None and rng.random() < SEGMENTS[customer.segment].checkout:
            yield rng.randrange(20_000, 180_000)
            yield from self.checkout(customer, cart, channel, session_id)

    def _cart_event(
        self,
        customer_id: str | None,
        session_id: str,
        cart_id: str,
        product: int,
        delta: int,
        quantity: int,
        channel: str,
        key: str,
        attrs: dict | None,
    ) -> None:
        pct = self.pricing.discount_pct(product)
        cents = self.pricing.cents[product]
        unit = self.pricing.price(product) if not pct else money(round(cents * (1 - pct / 100)))
        event = {
            "envelope": None,
            "customer_id": customer_id,
            "session_id": session_id,
            "cart_id": cart_id,
            "sku": self.world.products[product].sku,
            "quantity_delta": delta,
            "quantity": quantity,
            "unit_price": unit,
            "channel": channel,
        }
        self.sim.emit("cart_updated", channel, key, event, self.sim.trace_id(), attrs)

    def _sources(self, customer: Customer | None) -> tuple[int, ...]:
        """Where an online order may ship from: nearest FCs, then (domestic) the home store."""
        if customer is None:
            return tuple(self.world.fcs)
        if customer.country == "US":
            return (*customer.fc_order, customer.home_store)
        return customer.fc_order

    def _sellable(self, customer: Customer | None, product: int, quantity: int) -> bool:
        return self.ledger.allocate(product, quantity, self._sources(customer)) is not None

    # -- orders ----------------------------------------------------------------------------

    def _order_lines(
        self, lines: list[tuple[int, int, int]], location_price: int | None, coupon_p: float
    ) -> tuple[list[dict], list[tuple[int, int]], int, str | None]:
        """Priced lines: (Avro lines, per-line (unit, discount) cents, total cents, coupon)."""
        rng, pricing, world = self.rng, self.pricing, self.world
        coupon = _COUPONS[rng.randrange(len(_COUPONS))] if rng.random() < coupon_p else None
        out, cents, total = [], [], 0
        for n, (product, quantity, location) in enumerate(lines, start=1):
            unit = pricing.cents[product]
            gross = unit * quantity
            discount = round(gross * pricing.discount_pct(product, location_price) / 100)
            if coupon:
                discount += round((gross - discount) * 0.10)
            total += gross - discount
            cents.append((unit, discount))
            out.append(
                {
                    "line_no": n,
                    "sku": world.products[product].sku,
                    "quantity": quantity,
                    "unit_price": pricing.price(product),
                    "discount": money(discount),
                    "fulfillment_location": world.locations[location].location_id,
                }
            )
        return out, cents, total, coupon

    def checkout(
        self,
        customer: Customer,
        cart: dict[int, int],
        channel: str,
        session_id: str | None,
        *,
        card: str | None = None,
        card_country: str | None = None,
        ip_country: str | None = None,
        decline_p: float | None = None,
        retry: bool = True,
        address_hash: str | None = None,
        coupon_p: float = 0.06,
        cancel_p: float | None = None,
        cancel_reason: str | None = None,
        returns: bool = True,
        recorder: Recorder | None = None,
    ) -> Process:
        """An online order and its whole lifecycle (keyword arguments let fraud steer it)."""
        sim, rng, ledger, counters = self.sim, self.rng, self.ledger, self.counters
        sources = self._sources(customer)
        lines = []
        for product, quantity in cart.items():
            if not self.catalog.active[product]:
                continue
            location = ledger.allocate(product, quantity, sources)
            if location is None:
                counters.stockouts += 1
                continue
            ledger.reserve(product, location, quantity)
            lines.append((product, quantity, location))
        if not lines:
            return
        order_id = sim.ids.token("ord", 16)
        trace = sim.trace_id()
        avro_lines, cents, total, coupon = self._order_lines(lines, None, coupon_p)
        event = {
            "envelope": None,
            "order_id": order_id,
            "customer_id": customer.customer_id,
            "session_id": session_id,
            "channel": channel,
            "store_id": None,
            "lines": avro_lines,
            "total": money(total),
            "shipping_address_hash": address_hash or customer.address_hash,
            "currency": "USD",
            "coupon_code": coupon,
        }
        placed = sim.emit("order_placed", channel, order_id, event, trace)
        if recorder is not None:
            recorder.add(placed)
        counters.online_orders += 1
        counters.order_lines += len(lines)

        yield rng.randrange(800, 4_000)
        paid = yield from self._pay(
            customer,
            order_id,
            total,
            channel,
            trace,
            card,
            card_country,
            ip_country,
            decline_p,
            retry,
            recorder,
        )
        if not paid:
            yield rng.randrange(10 * MINUTE_MS, 45 * MINUTE_MS)
            self._cancel(customer, order_id, lines, "payment_declined", "ERP", recorder)
            return

        # Fulfilment: one shipment per location, hours later; a few customers cancel first.
        by_location: dict[int, list[int]] = {}
        for n, (_, _, location) in enumerate(lines):
            by_location.setdefault(location, []).append(n)
        plan = []
        for location, members in by_location.items():
            median = 6 if self.world.locations[location].is_store else 10
            handling = int(rng.lognormvariate(math.log(median * HOUR_MS), 0.5))
            plan.append((sim.now + min(60 * HOUR_MS, max(HOUR_MS, handling)), location, members))
        plan.sort()
        lead = plan[0][0] - sim.now
        p_cancel = self.config.cancel_rate if cancel_p is None else cancel_p
        if lead > 5 * MINUTE_MS and rng.random() < p_cancel:
            yield rng.randrange(2 * MINUTE_MS, lead - MINUTE_MS)
            reason = cancel_reason or _draw(rng, _CANCEL_REASONS, _CANCEL_CUM)
            self._cancel(customer, order_id, lines, reason, channel, recorder)
            return
        international = customer.country != "US"
        for when, location, members in plan:
            yield when - sim.now
            self._ship(customer, order_id, lines, cents, location, members, international, returns)

    def _pay(
        self,
        customer: Customer,
        order_id: str,
        total: int,
        channel: str,
        trace: str,
        card: str | None,
        card_country: str | None,
        ip_country: str | None,
        decline_p: float | None,
        retry: bool,
        recorder: Recorder | None,
    ) -> Generator[int, None, bool]:
        """Authorize ``total``; returns whether the order ends up paid."""
        sim, rng = self.sim, self.rng
        forced_card = card is not None
        card = card or customer.cards[0]
        card_country = card_country or customer.card_country
        if channel == "STORE":
            ip_country = None
        elif ip_country is None:
            # A few honest customers shop while travelling: the IP country differs, once.
            travelling = rng.random() < 0.02
            ip_country = _TRAVEL[rng.randrange(len(_TRAVEL))] if travelling else customer.country
        p_decline = SEGMENTS[customer.segment].decline if decline_p is None else decline_p
        amount = money(total)
        for attempt in range(2):
            event = {
                "envelope": None,
                "payment_id": sim.ids.token("pay", 16),
                "order_id": order_id,
                "customer_id": customer.customer_id,
                "card_token": card,
                "card_country": card_country,
                "ip_country": ip_country,
                "amount": amount,
            }
            if rng.random() < p_decline:
                event["reason"] = _draw(rng, _DECLINES, _DECLINE_CUM)
                emitted = sim.emit("payment_declined", "PARTNER", order_id, event, trace)
                self.counters.payment_declines += 1
                if recorder is not None:
                    recorder.add(emitted)
                if attempt == 0 and retry and rng.random() < 0.65:
                    yield rng.randrange(20_000, 150_000)
                    if not forced_card and len(customer.cards) > 1:
                        card = customer.cards[1]
                    p_decline = 0.15
                    continue
                return False
            emitted = sim.emit("payment_authorized", "PARTNER", order_id, event, trace)
            if recorder is not None:
                recorder.add(emitted)
            return True
        return False

    def _cancel(
        self,
        customer: Customer,
        order_id: str,
        lines: list[tuple[int, int, int]],
        reason: str,
        source: str,
        recorder: Recorder | None,
    ) -> None:
        world = self.world
        for product, quantity, location in lines:
            self.ledger.release(product, location, quantity)
        event = {
            "envelope": None,
            "order_id": order_id,
            "customer_id": customer.customer_id,
            "reason": reason,
            "lines": [
                {
                    "line_no": n,
                    "sku": world.products[product].sku,
                    "quantity": quantity,
                    "location": world.locations[location].location_id,
                }
                for n, (product, quantity, location) in enumerate(lines, start=1)
            ],
        }
        source = "POS" if source == "STORE" else source
        emitted = self.sim.emit("order_cancelled", source, order_id, event, self.sim.trace_id())
        self.counters.cancellations += 1
        if recorder is not None:
            recorder.add(emitted)

    def _ship(
        self,
        customer: Customer,
        order_id: str,
        lines: list[tuple[int, int, int]],
        cents: list[tuple[int, int]],
        location: int,
        members: list[int],
        international: bool,
        returns: bool,
    ) -> None:
        sim, rng, world, ledger = self.sim, self.rng, self.world, self.ledger
        trace = sim.trace_id()
        loc_id = world.locations[location].location_id
        carrier = "DHL" if international else _CARRIERS[rng.randrange(len(_CARRIERS))]
        shipment_id = sim.ids.token("shp", 16)
        event = {
            "envelope": None,
            "shipment_id": shipment_id,
            "order_id": order_id,
            "location": loc_id,
            "lines": [
                {"line_no": n + 1, "sku": world.products[lines[n][0]].sku, "quantity": lines[n][1]}
                for n in members
            ],
            "carrier": carrier if rng.random() < 0.97 else None,
        }
        sim.emit("order_shipped", location_source(world, location), order_id, event, trace)
        self.counters.shipments += 1
        for n in members:
            product, quantity, _ = lines[n]
            ledger.ship(product, location, quantity)
            self.ops.adjust(product, location, -quantity, "SALE", order_id, trace)
            if returns and rng.random() < self.config.return_rate:
                transit = rng.randrange(DAY_MS, (5 if international else 3) * DAY_MS)
                self._schedule_return(
                    customer,
                    order_id,
                    product,
                    quantity,
                    cents[n],
                    location,
                    sim.now + transit,
                    online=True,
                )

    # -- returns ---------------------------------------------------------------------------

    def _schedule_return(
        self,
        customer: Customer,
        order_id: str,
        product: int,
        quantity: int,
        cents: tuple[int, int],
        shipped_from: int,
        delivered_ms: int,
        online: bool,
    ) -> None:
        rng, world = self.rng, self.world
        window = self.config.return_window_days * DAY_MS
        # Most returns come early in the window: exponential, truncated at the window's end.
        delay = min(window - 1, int(rng.expovariate(1.0 / (0.3 * window))))
        if not online:
            location = shipped_from
        elif customer.country == "US" and rng.random() < 0.55:
            location = customer.home_store
        else:
            location = shipped_from
        when = delivered_ms + delay
        if world.locations[location].is_store:
            when = _during_store_hours(when, rng.randrange(HOUR_MS))
        self.sim.spawn(
            self._return(customer, order_id, product, quantity, cents, location), at=when
        )

    def _return(
        self,
        customer: Customer,
        order_id: str,
        product: int,
        quantity: int,
        cents: tuple[int, int],
        location: int,
    ) -> Process:
        sim, rng, world = self.sim, self.rng, self.world
        returned = quantity if quantity == 1 or rng.random() < 0.7 else rng.randint(1, quantity)
        unit, discount = cents
        refund = round((unit * quantity - discount) * returned / quantity)
        reason = _draw(rng, _RETURN_REASONS, _RETURN_CUM)
        restockable = reason not in ("DAMAGED", "DEFECTIVE") and rng.random() < 0.9
        return_id = sim.ids.token("ret", 16)
        trace = sim.trace_id()
        event = {
            "envelope": None,
            "return_id": return_id,
            "order_id": order_id,
            "customer_id": customer.customer_id,
            "sku": world.products[product].sku,
            "quantity": returned,
            "location": world.locations[location].location_id,
            "restockable": restockable,
            "refund_amount": money(refund),
            "reason": reason,
        }
        sim.emit("return_processed", location_source(world, location), order_id, event, trace)
        self.counters.returns += 1
        if restockable:
            self.ledger.receive(product, location, returned)
            self.ops.adjust(product, location, returned, "RETURN", return_id, trace)
        yield 0

    # -- stores ----------------------------------------------------------------------------

    def store_visit(
        self,
        customer: Customer | None = None,
        store: int | None = None,
        recorder: Recorder | None = None,
    ) -> Process:
        """A till transaction: the basket comes from what the store has on the shelf."""
        sim, rng, world, ledger, counters = (
            self.sim,
            self.rng,
            self.world,
            self.ledger,
            self.counters,
        )
        if store is None:
            store = world.stores[bisect_right(self._store_cum, rng.random() * self._store_cum[-1])]
        if customer is None:
            customer = self.people.pick_at_store(rng, store) or self.people.pick(rng)
        wanted = min(8, 1 + int(rng.expovariate(1 / 1.3)))
        basket: dict[int, int] = {}
        n_loc, active, carried = ledger.n_loc, self.catalog.active, world.carried
        for _ in range(wanted * 3):
            product = self._pick_product(customer)
            i = product * n_loc + store
            if not carried[i] or not active[product]:
                continue
            quantity = basket.get(product, 0) + 1
            if ledger.on_hand[i] - ledger.reserved[i] < quantity:
                counters.stockouts += 1  # empty shelf
                continue
            basket[product] = quantity
            if len(basket) >= wanted:
                break
        if not basket:
            return
        lines = [(p, q, store) for p, q in basket.items()]
        for product, quantity, _ in lines:
            ledger.reserve(product, store, quantity)
        order_id = sim.ids.token("ord", 16)
        trace = sim.trace_id()
        avro_lines, cents, total, coupon = self._order_lines(lines, store, 0.03)
        event = {
            "envelope": None,
            "order_id": order_id,
            "customer_id": customer.customer_id,
            "session_id": None,
            "channel": "STORE",
            "store_id": world.locations[store].location_id,
            "lines": avro_lines,
            "total": money(total),
            "shipping_address_hash": customer.address_hash,
            "currency": "USD",
            "coupon_code": coupon,
        }
        placed = sim.emit("order_placed", "POS", order_id, event, trace)
        if recorder is not None:
            recorder.add(placed)
        counters.store_orders += 1
        counters.order_lines += len(lines)
        yield rng.randrange(15_000, 90_000)  # paying at the till
        paid = yield from self._pay(
            customer, order_id, total, "STORE", trace, None, None, None, None, True, recorder
        )
        if not paid:
            self._cancel(customer, order_id, lines, "payment_declined", "STORE", recorder)
            return
        for n, (product, quantity, _) in enumerate(lines):
            ledger.ship(product, store, quantity)
            self.ops.adjust(product, store, -quantity, "SALE", order_id, trace)
            if rng.random() < self.config.return_rate:
                self._schedule_return(
                    customer,
                    order_id,
                    product,
                    quantity,
                    cents[n],
                    store,
                    sim.now + HOUR_MS,
                    online=False,
                )


_DECLINE_CUM = tuple(accumulate(_DECLINE_WEIGHTS))
_RETURN_CUM = tuple(accumulate(_RETURN_WEIGHTS))


def _lognormal_table(mu: float, sigma: float, n: int) -> tuple[int, ...]:
    """``n`` equiprobable quantiles of a lognormal: sampling one is a table lookup."""
    dist = NormalDist(mu, sigma)
    return tuple(int(math.exp(dist.inv_cdf((i + 0.5) / n))) for i in range(n))


#: Time a product stays in view (median ~12 s, long tail to minutes).
_DWELL_N = 2048
_DWELL_MS = _lognormal_table(9.4, 0.9, _DWELL_N)


def _draw(rng: random.Random, items: tuple[str, ...], cum: tuple[float, ...]) -> str:
    """Weighted choice from precomputed cumulative weights (faster than ``rng.choices``)."""
    return items[bisect_right(cum, rng.random() * cum[-1])]


def _during_store_hours(when: int, jitter: int, open_h: int = 9, close_h: int = 20) -> int:
    """Move ``when`` into the store's opening hours (returns are processed at the counter)."""
    day = when - when % DAY_MS
    hour = (when - day) // HOUR_MS
    if hour < open_h:
        return day + open_h * HOUR_MS + jitter
    if hour >= close_h:
        return day + DAY_MS + open_h * HOUR_MS + jitter
    return when
