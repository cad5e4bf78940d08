"""Stock per (product, location), and the warehouse/store processes that move it.

Example::

    ledger = StockLedger(world)
    loc = ledger.allocate(product, 2, customer.fc_order)   # first location with 2 available
    ledger.reserve(product, loc, 2)                        # order placed
    ledger.ship(product, loc, 2)                           # shipped: on-hand goes down
    ops = InventoryOps(sim, world, ledger)
    sim.spawn(ops.replenishment_review(loc))               # nightly reorder below reorder point

Invariants (what a downstream inventory pipeline can rely on): ``on_hand >= reserved >= 0``;
every change of ``on_hand`` is an ``inventory_adjusted`` event (SALE at shipment or at the till,
RECEIPT, RETURN, SHRINK) except at ``stock_counted``, whose absolute quantity replaces the running
total (a count may reveal unrecorded loss). So on-hand at any time = last count + later deltas.
"""

from __future__ import annotations

from collections.abc import Sequence

from retail_backbone.generator.config import DAY_MS
from retail_backbone.generator.sim import Process, Simulation
from retail_backbone.generator.world import World

__all__ = ["InventoryOps", "StockLedger", "location_source"]

HOUR_MS = 3_600_000


def location_source(world: World, location: int) -> str:
    """Envelope source of events raised at a location: stores run POS, FCs the WMS."""
    return "POS" if world.locations[location].is_store else "WAREHOUSE"


class StockLedger:
    """On-hand, reserved and on-order units in flat lists indexed ``product * L + location``."""

    def __init__(self, world: World) -> None:
        self.n_loc = world.n_locations
        self.on_hand = list(world.initial_on_hand)
        self.reserved = [0] * len(self.on_hand)
        self.on_order = [0] * len(self.on_hand)
        # Products whose available stock went down since the last nightly review, per location.
        self.touched: list[set[int]] = [set() for _ in range(self.n_loc)]

    def available(self, product: int, location: int) -> int:
        i = product * self.n_loc + location
        return self.on_hand[i] - self.reserved[i]

    def allocate(self, product: int, quantity: int, locations: Sequence[int]) -> int | None:
        """The first of ``locations`` with ``quantity`` available, or None (a stockout)."""
        base = product * self.n_loc
        on_hand, reserved = self.on_hand, self.reserved
        for loc in locations:
            if on_hand[base + loc] - reserved[base + loc] >= quantity:
                return loc
        return None

    def reserve(self, product: int, location: int, quantity: int) -> None:
        self.reserved[product * self.n_loc + location] += quantity
        self.touched[location].add(product)

    def release(self, product: int, location: int, quantity: int) -> None:
        self.reserved[product * self.n_loc + location] -= quantity

    def ship(self, product: int, location: int, quantity: int) -> None:
        """Reserved units leave the building."""
        i = product * self.n_loc + location
        self.on_hand[i] -= quantity
        self.reserved[i] -= quantity

    def receive(self, product: int, location: int, quantity: int) -> None:
        self.on_hand[product * self.n_loc + location] += quantity

    def lose(self, product: int, location: int, quantity: int) -> None:
        self.on_hand[product * self.n_loc + location] -= quantity
        self.touched[location].add(product)


class InventoryOps:
    """Replenishment, cycle counts, shrink, and the ``inventory_adjusted`` event itself."""

    def __init__(self, sim: Simulation, world: World, ledger: StockLedger) -> None:
        self.sim = sim
        self.world = world
        self.ledger = ledger
        self.rng = sim.rng
        self.receipts = 0

    def adjust(
        self,
        product: int,
        location: int,
        delta: int,
        reason: str,
        reference: str | None,
        trace_id: str | None = None,
    ) -> dict:
        """Emit ``inventory_adjusted`` (the ledger must already reflect the change)."""
        sku = self.world.products[product].sku
        loc_id = self.world.locations[location].location_id
        event = {
            "envelope": None,
            "adjustment_id": self.sim.ids.token("adj", 16),
            "sku": sku,
            "location": loc_id,
            "delta": delta,
            "reason": reason,
            "reference_id": reference,
        }
        source = location_source(self.world, location)
        return self.sim.emit("inventory_adjusted", source, f"{sku}#{loc_id}", event, trace_id)

    def count_event(self, product: int, location: int, quantity: int, counted_by: str) -> dict:
        sku = self.world.products[product].sku
        loc_id = self.world.locations[location].location_id
        event = {
            "envelope": None,
            "count_id": self.sim.ids.token("cnt", 16),
            "sku": sku,
            "location": loc_id,
            "quantity": quantity,
            "counted_by": counted_by,
        }
        source = location_source(self.world, location)
        return self.sim.emit("stock_counted", source, f"{sku}#{loc_id}", event)

    # -- processes -------------------------------------------------------------------------

    def initial_counts(self, window_ms: int) -> Process:
        """The opening balance: one ``stock_counted`` per carried (product, location)."""
        world, ledger = self.world, self.ledger
        slots = [i for i, c in enumerate(world.carried) if c]
        start = self.sim.now
        for k, i in enumerate(slots):
            due = start + k * window_ms // len(slots)
            if due > self.sim.now:
                yield due - self.sim.now
            product, location = divmod(i, ledger.n_loc)
            self.count_event(product, location, ledger.on_hand[i], "initial-load")

    def replenishment_review(self, location: int, build_up: float = 1.0) -> Process:
        """Nightly: order up to target every product at or below its reorder point.

        ``build_up`` > 1 scales both levels and reviews every carried product, not only those
        that sold: planners stock up in the days before a peak.
        """
        world, ledger, rng, sim = self.world, self.ledger, self.rng, self.sim
        n_loc = ledger.n_loc
        if build_up > 1.0:
            candidates = [
                p for p in range(len(world.products)) if world.carried[p * n_loc + location]
            ]
        else:
            candidates = sorted(ledger.touched[location])
        lines = []
        for product in candidates:
            i = product * n_loc + location
            if not world.carried[i]:
                continue  # returned goods of a product this store does not stock
            position = ledger.on_hand[i] - ledger.reserved[i] + ledger.on_order[i]
            if position <= world.reorder_point[i] * build_up:
                quantity = round(world.order_up_to[i] * build_up) - position
                if quantity > 0:
                    ledger.on_order[i] += quantity
                    lines.append((product, quantity))
        ledger.touched[location].clear()
        if not lines:
            return
        po = f"PO-{sim.ids.hex(10).upper()}"
        is_store = world.locations[location].is_store
        # Suppliers deliver FCs in 1-2 days, stores (via the network) in 1-3, in the morning.
        lead_days = rng.randint(1, 3) if is_store else rng.randint(1, 2)
        day_start = sim.start_ms + sim.day_index * DAY_MS
        arrival = day_start + lead_days * DAY_MS + rng.randrange(6 * HOUR_MS, 12 * HOUR_MS)
        sim.spawn(self.receipt(location, po, lines), at=arrival)
        yield 0

    def receipt(self, location: int, po: str, lines: list[tuple[int, int]]) -> Process:
        ledger, rng = self.ledger, self.rng
        trace = self.sim.trace_id()
        for product, quantity in lines:
            ledger.on_order[product * ledger.n_loc + location] -= quantity
            ledger.receive(product, location, quantity)
            self.adjust(product, location, quantity, "RECEIPT", po, trace)
            self.receipts += 1
            yield rng.randrange(200, 3_000)

    def _random_carried(self, location: int, tries: int = 30) -> int | None:
        world, rng = self.world, self.rng
        n_loc, n_prod = world.n_locations, len(world.products)
        for _ in range(tries):
            product = rng.randrange(n_prod)
            if world.carried[product * n_loc + location]:
                return product
        return None

    def cycle_count(self, location: int, items: int) -> Process:
        """Count ``items`` random carried products; some counts reveal unrecorded loss."""
        ledger, rng = self.ledger, self.rng
        counter = f"EMP-{location:03d}{rng.randrange(1, 40):02d}"
        for _ in range(items):
            product = self._random_carried(location)
            if product is None:
                continue
            i = product * ledger.n_loc + location
            free = ledger.on_hand[i] - ledger.reserved[i]
            if free > 0 and rng.random() < 0.08:
                # Unrecorded theft or breakage: the count is the truth from now on.
                ledger.lose(product, location, min(free, rng.randint(1, 3)))
            self.count_event(product, location, ledger.on_hand[i], counter)
            yield rng.randrange(5_000, 60_000)

    def shrink(self, location: int) -> Process:
        """Recorded damage or theft of 1-2 units of a product in stock."""
        ledger, rng = self.ledger, self.rng
        product = self._random_carried(location)
        if product is not None:
            free = ledger.available(product, location)
            if free > 0:
                quantity = min(free, 1 if rng.random() < 0.8 else 2)
                ledger.lose(product, location, quantity)
                self.adjust(product, location, -quantity, "SHRINK", None)
        yield 0
