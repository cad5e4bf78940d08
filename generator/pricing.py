"""Current prices and promotions, and the ERP processes that change them.

Example::

    pricing = Pricing(sim, world)
    pricing.cents[p], pricing.price(p)        # current list price (int cents, Decimal)
    pricing.discount_pct(p, store)            # best active promotion for p (global or local)
    sim.call_at(t, pricing.change_price)      # one random price change at t
    sim.call_at(t, pricing.random_promotion)  # promotion_started now, promotion_ended later

List prices change only through ``price_changed``; promotions never change the list price, they
discount order lines (``discount``) while active. The peak day gets a sitewide promotion on the
most popular products.
"""

from __future__ import annotations

from decimal import Decimal

from retail_backbone.generator.config import DAY_MS
from retail_backbone.generator.sim import Simulation
from retail_backbone.generator.world import World, round_price

__all__ = ["Pricing", "money"]

_REASONS = ("competitor", "markdown", "cost", "correction")
_REASON_WEIGHTS = (0.4, 0.25, 0.25, 0.1)
_PROMO_PCTS = (10.0, 15.0, 20.0, 25.0, 30.0, 40.0)
_PROMO_PCT_WEIGHTS = (0.25, 0.2, 0.25, 0.15, 0.1, 0.05)


def money(cents: int) -> Decimal:
    """Integer cents -> Decimal with exactly two places (what decimal(12,2) expects)."""
    return Decimal(cents).scaleb(-2)


class Pricing:
    """Price and promotion state plus ``price_changed`` / ``promotion_*`` emission."""

    def __init__(self, sim: Simulation, world: World) -> None:
        self.sim = sim
        self.world = world
        self.rng = sim.rng
        self.cents = [p.list_price_cents for p in world.products]
        self._dec = [p.list_price for p in world.products]
        # product -> active global promotion percentages; (product, location) -> local ones.
        self._global: dict[int, list[float]] = {}
        self._local: dict[tuple[int, int], list[float]] = {}
        self.promoted: list[int] = []  # products with an active global promotion (sorted)
        self.active: list[bool] | None = None  # set by the catalog: inactive items never change

    def price(self, product: int) -> Decimal:
        return self._dec[product]

    def discount_pct(self, product: int, location: int | None = None) -> float:
        pct = max(self._global.get(product, (0.0,)))
        if location is not None and self._local:
            pct = max(pct, *self._local.get((product, location), (0.0,)))
        return pct

    # -- price changes ---------------------------------------------------------------------

    def change_price(self) -> None:
        """One product's list price changes now, for a weighted-random reason."""
        rng, world = self.rng, self.world
        product = rng.randrange(len(world.products))
        if self.active is not None and not self.active[product]:
            return
        old = self.cents[product]
        reason = rng.choices(_REASONS, _REASON_WEIGHTS)[0]
        if reason == "competitor":
            factor = 1 + rng.choice((-1, 1)) * rng.uniform(0.03, 0.10)
        elif reason == "markdown":
            factor = 1 - rng.uniform(0.10, 0.30)
        elif reason == "cost":
            factor = 1 + rng.uniform(0.02, 0.08)
        else:
            factor = 1 + rng.choice((-1, 1)) * rng.uniform(0.01, 0.05)
        new = round_price(old / 100 * factor)
        if new == old:
            new = old + 100 if factor > 1 else max(99, old - 100)
        if new == old:
            return
        self.cents[product] = new
        self._dec[product] = money(new)
        sku = world.products[product].sku
        event = {
            "envelope": None,
            "sku": sku,
            "location": None,
            "old_price": money(old),
            "new_price": self._dec[product],
            "reason": reason,
        }
        self.sim.emit("price_changed", "ERP", sku, event)

    # -- promotions ------------------------------------------------------------------------

    def random_promotion(self) -> None:
        """A promotion on 5-25 products of one subcategory or brand, for 1-7 days."""
        rng, world = self.rng, self.world
        anchor = world.products[rng.randrange(len(world.products))]
        if rng.random() < 0.6:
            pool = [p.index for p in world.products if p.subcat == anchor.subcat]
        else:
            pool = [p.index for p in world.products if p.brand == anchor.brand]
        if self.active is not None:
            pool = [p for p in pool if self.active[p]]
        if not pool:
            return
        products = sorted(rng.sample(pool, min(len(pool), rng.randint(5, 25))))
        pct = rng.choices(_PROMO_PCTS, _PROMO_PCT_WEIGHTS)[0]
        location = rng.choice(world.stores) if rng.random() < 0.15 else None
        duration = rng.randint(1, 7) * DAY_MS
        early = rng.random() < 0.1
        end_after = int(duration * rng.uniform(0.3, 0.9)) if early else duration
        self.start_promotion(products, pct, location, duration, end_after)

    def start_promotion(
        self,
        products: list[int],
        pct: float,
        location: int | None,
        planned_ms: int,
        ends_after_ms: int,
        promotion_id: str | None = None,
    ) -> str:
        """Emit ``promotion_started`` now and schedule ``promotion_ended`` after ``ends_after_ms``.

        Returns:
            The promotion id.
        """
        sim, world = self.sim, self.world
        promotion_id = promotion_id or f"PROMO-{sim.ids.hex(8).upper()}"
        loc_id = world.locations[location].location_id if location is not None else None
        event = {
            "envelope": None,
            "promotion_id": promotion_id,
            "skus": [world.products[p].sku for p in products],
            "discount_pct": pct,
            "location": loc_id,
            "ends_at": sim.now + planned_ms,
        }
        sim.emit("promotion_started", "ERP", promotion_id, event)
        self._apply(products, pct, location, +1)
        early = ends_after_ms < planned_ms
        sim.call_at(
            sim.now + ends_after_ms, self._end, promotion_id, products, pct, location, early
        )
        return promotion_id

    def _end(
        self, promotion_id: str, products: list[int], pct: float, location: int | None, early: bool
    ) -> None:
        self._apply(products, pct, location, -1)
        event = {"envelope": None, "promotion_id": promotion_id, "early": early}
        self.sim.emit("promotion_ended", "ERP", promotion_id, event)

    def _apply(self, products: list[int], pct: float, location: int | None, sign: int) -> None:
        for p in products:
            if location is None:
                table, key = self._global, p
            else:
                table, key = self._local, (p, location)
            if sign > 0:
                table.setdefault(key, []).append(pct)
            else:
                active = table[key]
                active.remove(pct)
                if not active:
                    del table[key]
        if location is None:
            self.promoted = sorted(self._global)

    def peak_promotion(self, day_start_ms: int) -> str:
        """The peak day's sitewide event on the most popular 15% of products, all day."""
        world = self.world
        ranked = sorted(world.products, key=lambda p: (-p.popularity, p.index))
        products = sorted(p.index for p in ranked[: max(5, len(ranked) * 15 // 100)])
        whole_day = DAY_MS - 1
        if day_start_ms != self.sim.now:
            raise ValueError("the peak promotion starts at the peak day's midnight")
        return self.start_promotion(products, 25.0, None, whole_day, whole_day, "PROMO-PEAK-DAY")
