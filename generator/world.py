"""The static world a run starts from: catalog, locations, customers and their latent tastes.

Example::

    world = build_world(GeneratorConfig(n_products=500, n_customers=2_000))
    world.products[0].sku, world.products[0].categories     # 'SKU-000001', ('Beauty', 'Makeup')
    world.preferences(world.customers[0])                   # latent tastes (recommender truth)
    world.initial_on_hand[world.slot(0, 3)]                 # units of product 0 at location 3

Customers carry LATENT preferences that the traffic samples from and that never appear in events:
3-6 preferred subcategories with Dirichlet weights, up to 3 favourite brands with a loyalty
strength, and their segment's price-band affinity. A recommender trained on the generated views
and orders can be scored against ``world.iter_preferences()``.

Stock is sized from the expected demand of the configured ``events_per_day``: fulfillment centers
(FC) carry the whole catalog, stores a popularity-biased subset. ``initial_on_hand`` is the state at
the start (the legacy ERP is seeded from it; the traffic's stock ledger starts from it).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import random
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import accumulate

from retail_backbone.generator.config import DAY_MS, GeneratorConfig
from retail_backbone.generator.fakes import (
    COUNTRIES,
    FC_HUBS,
    US_CITIES,
    City,
    Person,
    distance_km,
    fake_person,
)
from retail_backbone.generator.ids import IdFactory, np_rng, stream_rng

__all__ = [
    "PRICE_BANDS",
    "SEGMENTS",
    "Brand",
    "Customer",
    "Location",
    "Product",
    "Segment",
    "Subcategory",
    "World",
    "build_world",
    "make_customer",
]

PRICE_BANDS = ("BUDGET", "MID", "PREMIUM", "LUXURY")
_TIER_PRICE = (0.7, 1.0, 1.45, 2.3)  # brand tier -> price multiplier

# Units bought per event of an ordinary day, measured on generated traffic; only used to size the
# initial stock and reorder points, so a rough value is enough.
ONLINE_UNITS_PER_EVENT = 0.008
STORE_UNITS_PER_EVENT = 0.0028


@dataclass(frozen=True)
class Segment:
    """A marketing segment and the behaviour it implies.

    Attributes:
        band_affinity: relative liking of BUDGET, MID, PREMIUM, LUXURY products.
        add_to_cart: multiplier of the per-view add-to-cart probability.
        checkout: probability that a non-empty cart is checked out.
        mobile: share of online sessions on the mobile app.
        decline: probability that a payment attempt is declined.
        tilt: top category -> interest multiplier.
    """

    name: str
    share: float
    activity: float
    band_affinity: tuple[float, float, float, float]
    add_to_cart: float
    checkout: float
    mobile: float
    decline: float
    tilt: tuple[tuple[str, float], ...] = ()


# fmt: off
SEGMENTS: tuple[Segment, ...] = (
    Segment("bargain_hunter", 0.22, 1.1, (0.55, 0.33, 0.10, 0.02), 0.9, 0.36, 0.55, 0.05,
            (("Grocery", 1.6), ("Apparel", 1.2), ("Health", 1.3))),
    Segment("mainstream", 0.38, 1.0, (0.25, 0.50, 0.20, 0.05), 1.0, 0.40, 0.50, 0.035),
    Segment("premium", 0.12, 0.9, (0.06, 0.30, 0.42, 0.22), 1.1, 0.46, 0.45, 0.02,
            (("Electronics", 1.6), ("Beauty", 1.3), ("Footwear", 1.2))),
    Segment("family", 0.16, 1.2, (0.35, 0.45, 0.15, 0.05), 1.2, 0.42, 0.40, 0.035,
            (("Toys & Games", 2.0), ("Grocery", 1.5), ("Pet Supplies", 1.4))),
    Segment("occasional", 0.12, 0.35, (0.30, 0.45, 0.20, 0.05), 0.8, 0.32, 0.60, 0.04,
            (("Books & Media", 1.3), ("Electronics", 1.2))),
)

# (top, sub, median list price in USD, nouns for titles, attribute family)
TAXONOMY: tuple[tuple[str, str, float, tuple[str, ...], str], ...] = (
    ("Electronics", "Headphones", 79, ("Headphones", "Earbuds", "Headset"), "tech"),
    ("Electronics", "Smartphones", 480, ("Smartphone", "Phone"), "tech"),
    ("Electronics", "Laptops", 850, ("Laptop", "Notebook", "Ultrabook"), "tech"),
    ("Electronics", "Smart Home", 60, ("Smart Plug", "Smart Speaker", "Video Doorbell"), "tech"),
    ("Electronics", "Cameras", 420, ("Mirrorless Camera", "Action Camera", "Lens"), "tech"),
    ("Electronics", "Accessories", 22, ("USB-C Cable", "Charger", "Power Bank", "Case"), "tech"),
    ("Home & Kitchen", "Cookware", 49, ("Skillet", "Saucepan", "Dutch Oven", "Knife Set"), "home"),
    ("Home & Kitchen", "Small Appliances", 85, ("Blender", "Coffee Maker", "Air Fryer"), "home"),
    ("Home & Kitchen", "Bedding", 59, ("Duvet Cover", "Sheet Set", "Pillow", "Throw"), "home"),
    ("Home & Kitchen", "Furniture", 260, ("Desk", "Bookshelf", "Armchair", "Side Table"), "home"),
    ("Home & Kitchen", "Decor", 29, ("Vase", "Candle", "Wall Art", "Mirror"), "home"),
    ("Apparel", "Men's Tops", 29, ("T-Shirt", "Polo", "Oxford Shirt", "Hoodie"), "apparel"),
    ("Apparel", "Women's Tops", 32, ("Blouse", "Tank Top", "Sweater", "Cardigan"), "apparel"),
    ("Apparel", "Jeans", 55, ("Slim Jeans", "Straight Jeans", "Relaxed Jeans"), "apparel"),
    ("Apparel", "Outerwear", 120, ("Rain Jacket", "Puffer Jacket", "Wool Coat"), "apparel"),
    ("Apparel", "Activewear", 39, ("Leggings", "Running Shorts", "Training Tee"), "apparel"),
    ("Apparel", "Kids' Clothing", 19, ("Kids Tee", "Kids Pajamas", "Kids Jacket"), "apparel"),
    ("Footwear", "Running Shoes", 110, ("Running Shoe", "Trail Runner"), "shoes"),
    ("Footwear", "Sneakers", 75, ("Sneaker", "Court Shoe", "Slip-On"), "shoes"),
    ("Footwear", "Boots", 130, ("Chelsea Boot", "Hiking Boot", "Winter Boot"), "shoes"),
    ("Footwear", "Sandals", 35, ("Sandal", "Slide"), "shoes"),
    ("Beauty", "Skincare", 24, ("Moisturizer", "Serum", "Cleanser", "Sunscreen"), "beauty"),
    ("Beauty", "Makeup", 18, ("Lipstick", "Mascara", "Foundation", "Eyeliner"), "beauty"),
    ("Beauty", "Fragrance", 65, ("Eau de Parfum", "Eau de Toilette", "Body Mist"), "beauty"),
    ("Beauty", "Hair Care", 14, ("Shampoo", "Conditioner", "Hair Oil"), "beauty"),
    ("Grocery", "Snacks", 4.5, ("Trail Mix", "Protein Bar", "Crackers"), "food"),
    ("Grocery", "Coffee & Tea", 12, ("Whole Bean Coffee", "Ground Coffee", "Green Tea"), "food"),
    ("Grocery", "Pantry", 6, ("Olive Oil", "Pasta", "Rice", "Pasta Sauce"), "food"),
    ("Grocery", "Beverages", 5, ("Sparkling Water", "Juice", "Cold Brew"), "food"),
    ("Sports & Outdoors", "Camping", 89, ("Tent", "Sleeping Bag", "Camp Stove"), "outdoor"),
    ("Sports & Outdoors", "Cycling", 150, ("Bike Helmet", "Bike Light", "Bike Lock"), "outdoor"),
    ("Sports & Outdoors", "Fitness", 45, ("Yoga Mat", "Dumbbell Set", "Kettlebell"), "outdoor"),
    ("Sports & Outdoors", "Team Sports", 29, ("Soccer Ball", "Basketball", "Glove"), "outdoor"),
    ("Toys & Games", "Board Games", 29, ("Board Game", "Card Game", "Puzzle"), "toys"),
    ("Toys & Games", "Building Sets", 49, ("Building Set", "Construction Kit"), "toys"),
    ("Toys & Games", "Dolls & Figures", 19, ("Action Figure", "Doll", "Plush Toy"), "toys"),
    ("Toys & Games", "Outdoor Play", 59, ("Scooter", "Water Blaster", "Play Tent"), "toys"),
    ("Books & Media", "Fiction", 16, ("Novel", "Thriller", "Fantasy Novel"), "media"),
    ("Books & Media", "Non-fiction", 19, ("Cookbook", "Biography", "Travel Guide"), "media"),
    ("Books & Media", "Kids' Books", 9, ("Picture Book", "Activity Book"), "media"),
    ("Books & Media", "Video Games", 59, ("Video Game", "Controller", "Gaming Headset"), "media"),
    ("Health", "Vitamins", 16, ("Multivitamin", "Vitamin D", "Omega-3"), "health"),
    ("Health", "Personal Care", 9, ("Toothpaste", "Electric Toothbrush", "Razor"), "health"),
    ("Pet Supplies", "Dog", 25, ("Dog Food", "Dog Leash", "Dog Bed", "Chew Toy"), "pet"),
    ("Pet Supplies", "Cat", 20, ("Cat Food", "Cat Litter", "Scratching Post"), "pet"),
)

_COLORS = ("Black", "White", "Navy", "Grey", "Red", "Green", "Beige", "Blue", "Olive", "Pink")
ATTRIBUTES: dict[str, dict[str, tuple[str, ...]]] = {
    "tech": {"color": ("Black", "White", "Silver", "Graphite", "Blue"),
             "connectivity": ("Bluetooth", "Wi-Fi", "USB-C", "Wired"), "warranty": ("1y", "2y")},
    "home": {"color": _COLORS, "material": ("Stainless Steel", "Cotton", "Linen", "Oak",
                                            "Ceramic", "Glass")},
    "apparel": {"color": _COLORS, "size_range": ("XS-XL", "S-XXL", "2T-14"),
                "material": ("Cotton", "Merino Wool", "Polyester", "Denim", "Nylon")},
    "shoes": {"color": _COLORS, "size_range": ("5-11", "6-13", "7-14"),
              "material": ("Leather", "Mesh", "Suede", "Canvas")},
    "beauty": {"size": ("15 ml", "30 ml", "50 ml", "100 ml"),
               "skin_type": ("all", "dry", "oily", "sensitive")},
    "food": {"size": ("250 g", "500 g", "1 kg", "12 pack"), "organic": ("true", "false")},
    "outdoor": {"color": _COLORS, "material": ("Nylon", "Aluminium", "Steel", "Rubber")},
    "toys": {"age": ("3+", "6+", "8+", "12+"), "players": ("1", "2-4", "2-6")},
    "media": {"format": ("Hardcover", "Paperback", "Digital Code", "Disc"),
              "language": ("en", "es", "fr")},
    "health": {"count": ("30 ct", "60 ct", "90 ct", "120 ct")},
    "pet": {"size": ("S", "M", "L"), "life_stage": ("puppy/kitten", "adult", "senior")},
}
_ADJECTIVES: dict[str, tuple[str, ...]] = {
    "tech": ("Wireless", "Pro", "Ultra", "Compact", "Smart", "Max"),
    "home": ("Classic", "Essential", "Modern", "Premium", "Everyday"),
    "apparel": ("Classic", "Relaxed", "Organic", "Performance", "Heritage"),
    "shoes": ("Cloud", "Trail", "Classic", "Flex", "Urban"),
    "beauty": ("Hydrating", "Daily", "Radiance", "Pure", "Gentle"),
    "food": ("Organic", "Roasted", "Classic", "Family Size", "Lightly Salted"),
    "outdoor": ("Trail", "Alpine", "Pro", "Lightweight", "All-Weather"),
    "toys": ("Deluxe", "Junior", "Classic", "Adventure", "Mega"),
    "media": ("Collector's", "Illustrated", "Complete", "Deluxe", "New"),
    "health": ("Daily", "Extra Strength", "Gentle", "Advanced"),
    "pet": ("Grain-Free", "Comfort", "Durable", "Natural"),
}
_SYLLABLES_A = ("Nor", "Vel", "Kar", "Ast", "Lum", "Bry", "Cor", "Del", "Fen", "Gal", "Hal", "Ist",
                "Jov", "Kel", "Lor", "Mar", "Nev", "Orl", "Pel", "Quin", "Ros", "Sol", "Tav", "Ulv",
                "Var", "Wen", "Yor", "Zel", "Brin", "Cael", "Dar", "Evr", "Fal", "Gor", "Tor")
_SYLLABLES_B = ("a", "ex", "ion", "ora", "vik", "ano", "ell", "ure", "ix", "ada", "on", "eth",
                "ary", "ino", "ova", "and", "is", "ek", "une", "alis")
# fmt: on


@dataclass(frozen=True)
class Subcategory:
    index: int
    top: str
    name: str
    median_price: float
    nouns: tuple[str, ...]
    family: str


@dataclass(frozen=True)
class Brand:
    index: int
    name: str
    tier: int  # 0 budget .. 3 luxury
    popularity: float
    tops: tuple[str, ...]


@dataclass(frozen=True)
class Product:
    """A catalog item as of the start (the simulation keeps current prices separately)."""

    index: int
    sku: str
    title: str
    brand: int
    subcat: int
    categories: tuple[str, str]
    price_band: str
    band: int
    list_price_cents: int
    popularity: float
    attributes: dict[str, str]

    @property
    def list_price(self) -> Decimal:
        return Decimal(self.list_price_cents).scaleb(-2)


@dataclass(frozen=True)
class Location:
    index: int
    location_id: str
    kind: str  # "STORE" or "FC"
    name: str
    city: City
    size: float  # stores: relative foot traffic and assortment breadth

    @property
    def is_store(self) -> bool:
        return self.kind == "STORE"


@dataclass(slots=True)
class Customer:
    """A customer: master data (PII in ``person``) plus latent behaviour that events never carry."""

    index: int
    customer_id: str
    segment: int
    person: Person
    address_hash: str
    home_store: int
    fc_order: tuple[int, ...]  # fulfillment centers, nearest first
    activity: float
    mobile_share: float
    subcats: tuple[int, ...]  # preferred subcategories, strongest first
    subcat_weights: tuple[float, ...]  # Dirichlet weights of ``subcats`` (sum 1)
    subcat_cum: tuple[float, ...]
    brands: tuple[int, ...]  # favourite brands
    loyalty: float  # probability of reaching for a favourite brand when one is on offer
    cards: tuple[str, ...]  # payment-provider tokens
    card_country: str
    signup_ms: int
    marketing_opt_in: bool

    @property
    def country(self) -> str:
        return self.person.country


@dataclass
class World:
    """Entities and sampling tables; immutable once built (the run copies what it changes)."""

    config: GeneratorConfig
    subcats: list[Subcategory]
    brands: list[Brand]
    products: list[Product]
    locations: list[Location]
    customers: list[Customer]
    stores: list[int]
    fcs: list[int]
    carried: list[bool]  # flat [product * n_locations + location]
    initial_on_hand: list[int]
    reorder_point: list[int]
    order_up_to: list[int]
    address_key: bytes
    # Sampling tables: (subcat, segment) -> (product indices, cumulative weights).
    pick_tables: dict[tuple[int, int], tuple[list[int], list[float]]] = field(repr=False)
    brand_products: dict[tuple[int, int], list[int]] = field(repr=False)
    subcat_brands: list[list[int]] = field(repr=False)
    subcat_appeal: list[list[float]] = field(repr=False)  # per segment, cumulative over subcats
    global_products: tuple[list[int], list[float]] = field(repr=False)
    cheap_products: list[int] = field(repr=False)
    premium_products: list[int] = field(repr=False)

    @property
    def n_locations(self) -> int:
        return len(self.locations)

    def slot(self, product: int, location: int) -> int:
        """Index of (product, location) in the flat stock arrays."""
        return product * len(self.locations) + location

    def address_hash(self, person: Person) -> str:
        """Keyed hash of a postal address, as carried by ``order_placed`` (no PII)."""
        text = f"{person.street}|{person.city}|{person.postal_code}|{person.country}".lower()
        return hmac.new(self.address_key, text.encode(), hashlib.sha256).hexdigest()[:32]

    def preferences(self, customer: Customer) -> dict:
        """The latent tastes of ``customer`` (ground truth for recommender evaluation)."""
        seg = SEGMENTS[customer.segment]
        return {
            "customer_id": customer.customer_id,
            "segment": seg.name,
            "categories": [
                {"path": list(self._path(s)), "weight": round(w, 6)}
                for s, w in zip(customer.subcats, customer.subcat_weights, strict=True)
            ],
            "brands": [self.brands[b].name for b in customer.brands],
            "brand_loyalty": round(customer.loyalty, 6),
            "price_band_affinity": dict(zip(PRICE_BANDS, seg.band_affinity, strict=True)),
        }

    def iter_preferences(self) -> Iterator[dict]:
        """``preferences`` of every customer of the starting world."""
        return (self.preferences(c) for c in self.customers)

    def _path(self, subcat: int) -> tuple[str, str]:
        sc = self.subcats[subcat]
        return sc.top, sc.name

    def pick_product(self, rng: random.Random, subcat: int, segment: int) -> int:
        """A product of ``subcat`` by popularity and the segment's price-band taste."""
        items, cum = self.pick_tables[subcat, segment]
        return items[bisect_right(cum, rng.random() * cum[-1])]


def _cumulative(weights: list[float]) -> list[float]:
    return list(accumulate(weights))


def _brand_names(rng: random.Random, n: int) -> list[str]:
    names: list[str] = []
    seen = set()
    while len(names) < n:
        name = rng.choice(_SYLLABLES_A) + rng.choice(_SYLLABLES_B)
        if rng.random() < 0.25:
            name += rng.choice((" & Co", " Labs", " Home", " Outfitters", " Goods", " Studio"))
        if name in seen:
            if len(seen) > 600:  # syllables exhausted: number the rest
                name = f"{name} {len(names)}"
            else:
                continue
        seen.add(name)
        names.append(name)
    return names


def round_price(dollars: float) -> int:
    """Retail price points: x.99 above $10, x.49/x.99 below; never below $0.99."""
    if dollars >= 10:
        return max(999, round(dollars) * 100 - 1)
    return max(99, round(dollars * 2) * 50 - 1)


def _build_catalog(cfg: GeneratorConfig) -> tuple[list[Subcategory], list[Brand], list[Product]]:
    rng = stream_rng(cfg.seed, "catalog")
    nrng = np_rng(cfg.seed, "catalog")
    subcats = [Subcategory(i, *row) for i, row in enumerate(TAXONOMY)]
    tops = sorted({s.top for s in subcats})
    n_brands = min(400, max(12, cfg.n_products // 15))
    names = _brand_names(rng, n_brands)
    brands = []
    for i, name in enumerate(names):
        # Round-robin first so every top category has brands, then 0-2 random extra categories.
        covered = {tops[i % len(tops)]}
        covered |= set(rng.sample(tops, rng.choice((0, 0, 1, 2))))
        tier = rng.choices(range(4), (0.3, 0.4, 0.2, 0.1))[0]
        brands.append(Brand(i, name, tier, rng.lognormvariate(0, 0.8), tuple(sorted(covered))))
    by_top = {t: [b for b in brands if t in b.tops] for t in tops}

    sizes = nrng.gamma(2.0, 1.0, len(subcats))
    assign = list(range(len(subcats)))[: cfg.n_products]
    assign += nrng.choice(
        len(subcats), cfg.n_products - len(assign), p=sizes / sizes.sum()
    ).tolist()
    noise = nrng.lognormal(0.0, 0.3, cfg.n_products)
    popularity = nrng.lognormal(0.0, 1.1, cfg.n_products)

    raw = []
    for p, s in enumerate(assign):
        sc = subcats[s]
        candidates = by_top[sc.top]
        brand = rng.choices(candidates, [b.popularity for b in candidates])[0]
        cents = round_price(sc.median_price * _TIER_PRICE[brand.tier] * float(noise[p]))
        family = sc.family
        attrs = {k: rng.choice(v) for k, v in ATTRIBUTES[family].items()}
        model = f"{rng.choice('AKMSVXZ')}{rng.randrange(1, 99) * 10}" if family == "tech" else ""
        title = " ".join(
            x
            for x in (brand.name, rng.choice(_ADJECTIVES[family]), rng.choice(sc.nouns), model)
            if x
        )
        raw.append((p, s, brand.index, cents, title, attrs))

    # Price band = position of the price within its subcategory (what a merchandiser would label).
    band_of: dict[int, int] = {}
    for s in range(len(subcats)):
        members = sorted((r for r in raw if r[1] == s), key=lambda r: (r[3], r[0]))
        for rank, r in enumerate(members):
            q = (rank + 0.5) / len(members)
            band_of[r[0]] = 0 if q < 0.4 else 1 if q < 0.8 else 2 if q < 0.95 else 3
    products = [
        Product(
            index=p,
            sku=f"SKU-{p + 1:06d}",
            title=title,
            brand=b,
            subcat=s,
            categories=(subcats[s].top, subcats[s].name),
            price_band=PRICE_BANDS[band_of[p]],
            band=band_of[p],
            list_price_cents=cents,
            popularity=float(popularity[p]),
            attributes=attrs,
        )
        for p, s, b, cents, title, attrs in raw
    ]
    return subcats, brands, products


def _build_locations(cfg: GeneratorConfig) -> list[Location]:
    rng = stream_rng(cfg.seed, "locations")
    n_fc = min(cfg.n_locations - 1, max(1, round(cfg.n_locations * cfg.fc_share)))
    by_name = {c.name: c for c in US_CITIES}
    locations = []
    for i in range(n_fc):
        hub = FC_HUBS[i % len(FC_HUBS)]
        suffix = f" {i // len(FC_HUBS) + 1}" if i >= len(FC_HUBS) else ""
        locations.append(
            Location(
                i, f"FC-{i + 1:02d}", "FC", f"{hub} Fulfillment Center{suffix}", by_name[hub], 1.0
            )
        )
    per_city: dict[str, int] = {}
    weights = [c.weight for c in US_CITIES]
    for k in range(cfg.n_locations - n_fc):
        city = rng.choices(US_CITIES, weights)[0]
        per_city[city.name] = per_city.get(city.name, 0) + 1
        name = f"{city.name} #{per_city[city.name]}"
        size = min(3.0, max(0.3, rng.lognormvariate(0, 0.4)))
        locations.append(Location(n_fc + k, f"STORE-{k + 1:03d}", "STORE", name, city, size))
    return locations


def _subcat_appeal(subcats: list[Subcategory]) -> list[list[float]]:
    """Per segment: how much each subcategory attracts customers of that segment."""
    base = [1.0 + 0.5 * math.cos(i * 1.7) for i in range(len(subcats))]  # mild, fixed variety
    out = []
    for seg in SEGMENTS:
        tilt = dict(seg.tilt)
        out.append([b * tilt.get(s.top, 1.0) for b, s in zip(base, subcats, strict=True)])
    return out


def make_customer(
    world: World, index: int, rng: random.Random, signup_ms: int, ids: IdFactory | None = None
) -> Customer:
    """A new customer with fake PII and latent preferences (used at build time and for sign-ups)."""
    segment = rng.choices(range(len(SEGMENTS)), [s.share for s in SEGMENTS])[0]
    seg = SEGMENTS[segment]
    stores = world.stores
    if rng.random() < 0.95:
        home = rng.choices(stores, [world.locations[s].size for s in stores])[0]
        city = world.locations[home].city
        person = fake_person(rng, "US", city, index + 1)
        lat, lon = city.lat, city.lon
    else:
        country = rng.choices(
            [c.code for c in COUNTRIES.values() if c.weight > 0],
            [c.weight for c in COUNTRIES.values() if c.weight > 0],
        )[0]
        # International shoppers buy online; their "home store" is the biggest store.
        home = max(stores, key=lambda s: (world.locations[s].size, -s))
        person = fake_person(rng, country, None, index + 1)
        lat, lon = COUNTRIES[country].lat, COUNTRIES[country].lon
    fc_order = tuple(
        sorted(
            world.fcs,
            key=lambda f: (
                distance_km(lat, lon, world.locations[f].city.lat, world.locations[f].city.lon),
                f,
            ),
        )
    )

    # Latent category taste: 3-6 subcategories drawn by the segment's appeal, Dirichlet weights.
    appeal = world.subcat_appeal[segment]
    k = rng.randint(3, 6)
    chosen: list[int] = []
    while len(chosen) < k:
        s = bisect_right(appeal, rng.random() * appeal[-1])
        if s not in chosen:
            chosen.append(s)
    gammas = [rng.gammavariate(0.9, 1.0) + 1e-9 for _ in chosen]
    total = sum(gammas)
    pairs = sorted(zip(chosen, (g / total for g in gammas), strict=True), key=lambda x: -x[1])
    subcats = tuple(s for s, _ in pairs)
    weights = tuple(w for _, w in pairs)

    brands: list[int] = []
    for s in subcats[:3]:
        cands = world.subcat_brands[s]
        if cands:
            bw = [
                world.brands[b].popularity * seg.band_affinity[world.brands[b].tier] for b in cands
            ]
            b = rng.choices(cands, bw)[0]
            if b not in brands:
                brands.append(b)
    ids = ids or IdFactory(rng)
    cards = tuple(ids.token("tok", 24) for _ in range(1 if rng.random() < 0.7 else 2))
    card_country = person.country if rng.random() < 0.97 else rng.choice(("US", "CA", "GB", "MX"))
    return Customer(
        index=index,
        customer_id=f"CUST-{index + 1:07d}",
        segment=segment,
        person=person,
        address_hash=world.address_hash(person),
        home_store=home,
        fc_order=fc_order,
        activity=rng.gammavariate(0.8, 1.0) * seg.activity + 0.02,
        mobile_share=min(0.95, max(0.05, rng.gauss(seg.mobile, 0.2))),
        subcats=subcats,
        subcat_weights=weights,
        subcat_cum=tuple(accumulate(weights)),
        brands=tuple(brands),
        loyalty=rng.betavariate(2, 3),
        cards=cards,
        card_country=card_country,
        signup_ms=signup_ms,
        marketing_opt_in=rng.random() < 0.55,
    )


def _demand_shares(world: World) -> list[float]:
    """Expected share of unit demand per product (preferences x popularity x band taste)."""
    n_sub = len(world.subcats)
    mass = [0.0] * n_sub
    for c in world.customers:
        for s, w in zip(c.subcats, c.subcat_weights, strict=True):
            mass[s] += w * c.activity
    total = sum(mass) or 1.0
    seg_shares = [s.share for s in SEGMENTS]
    band_taste = [
        sum(sh * seg.band_affinity[b] for sh, seg in zip(seg_shares, SEGMENTS, strict=True))
        for b in range(4)
    ]
    within = [p.popularity * band_taste[p.band] for p in world.products]
    per_sub = [0.0] * n_sub
    for p in world.products:
        per_sub[p.subcat] += within[p.index]
    return [
        mass[p.subcat] / total * within[p.index] / per_sub[p.subcat] if per_sub[p.subcat] else 0.0
        for p in world.products
    ]


def _stock(world: World, rng: random.Random) -> None:
    cfg = world.config
    n_loc = world.n_locations
    n = len(world.products) * n_loc
    carried = [False] * n
    on_hand, rop, out = [0] * n, [0] * n, [0] * n
    order = sorted(world.products, key=lambda p: (p.popularity, p.index))
    rank = {p.index: i / max(1, len(order) - 1) for i, p in enumerate(order)}
    shares = _demand_shares(world)

    fc_customers = dict.fromkeys(world.fcs, 0.0)
    for c in world.customers:
        fc_customers[c.fc_order[0]] += c.activity
    fc_total = sum(fc_customers.values()) or 1.0
    store_total = sum(world.locations[s].size for s in world.stores)
    online_units = cfg.events_per_day * ONLINE_UNITS_PER_EVENT
    store_units = cfg.events_per_day * STORE_UNITS_PER_EVENT

    for loc in world.locations:
        if loc.is_store:
            carry = [
                rng.random() < min(1.0, (0.15 + 0.55 * rank[p.index]) * loc.size)
                for p in world.products
            ]
            carry_mass = sum(sh for sh, c in zip(shares, carry, strict=True) if c) or 1.0
            units = store_units * loc.size / store_total
        else:
            carry = [True] * len(world.products)
            carry_mass = 1.0
            # Customers of this FC, plus a share of ship-from-store overflow from others.
            units = online_units * fc_customers[loc.index] / fc_total
        for p, c in enumerate(carry):
            if not c:
                continue
            i = p * n_loc + loc.index
            daily = units * shares[p] / carry_mass
            carried[i] = True
            if loc.is_store:
                rop[i] = math.ceil(daily * 5) + 1
                out[i] = math.ceil(daily * 12) + 3
            else:
                rop[i] = math.ceil(daily * 6) + 2
                out[i] = math.ceil(daily * 14) + 6
            on_hand[i] = rng.randint(rop[i] + 1, out[i])
    world.carried, world.initial_on_hand = carried, on_hand
    world.reorder_point, world.order_up_to = rop, out


def build_world(config: GeneratorConfig) -> World:
    """Build the deterministic world of ``config`` (same config -> same world)."""
    subcats, brands, products = _build_catalog(config)
    locations = _build_locations(config)
    n_seg = len(SEGMENTS)

    subcat_brands: list[list[int]] = [[] for _ in subcats]
    brand_products: dict[tuple[int, int], list[int]] = {}
    for p in products:
        brand_products.setdefault((p.subcat, p.brand), []).append(p.index)
        if p.brand not in subcat_brands[p.subcat]:
            subcat_brands[p.subcat].append(p.brand)
    pick_tables = {}
    by_sub: dict[int, list[Product]] = {}
    for p in products:
        by_sub.setdefault(p.subcat, []).append(p)
    for s, members in by_sub.items():
        for g in range(n_seg):
            aff = SEGMENTS[g].band_affinity
            pick_tables[s, g] = (
                [p.index for p in members],
                _cumulative([p.popularity * aff[p.band] for p in members]),
            )
    appeal = [
        _cumulative([w if s in by_sub else 0.0 for s, w in enumerate(row)])
        for row in _subcat_appeal(subcats)
    ]
    by_price = sorted(products, key=lambda p: (p.list_price_cents, p.index))
    cut = max(5, len(products) // 20)
    premium = [p.index for p in products if p.band >= 2 and p.categories[0] == "Electronics"]
    world = World(
        config=config,
        subcats=subcats,
        brands=brands,
        products=products,
        locations=locations,
        customers=[],
        stores=[loc.index for loc in locations if loc.is_store],
        fcs=[loc.index for loc in locations if not loc.is_store],
        carried=[],
        initial_on_hand=[],
        reorder_point=[],
        order_up_to=[],
        address_key=hashlib.sha256(f"address-key/{config.seed}".encode()).digest(),
        pick_tables=pick_tables,
        brand_products=brand_products,
        subcat_brands=subcat_brands,
        subcat_appeal=appeal,
        global_products=(
            [p.index for p in products],
            _cumulative([p.popularity for p in products]),
        ),
        cheap_products=[p.index for p in by_price[:cut]],
        premium_products=premium or [p.index for p in by_price[-cut:]],
    )
    rng = stream_rng(config.seed, "customers")
    ids = IdFactory(stream_rng(config.seed, "customer-ids"))
    six_years = 6 * 365 * DAY_MS
    start = config.start_ms
    world.customers = [
        make_customer(world, i, rng, start - rng.randrange(DAY_MS, six_years), ids)
        for i in range(config.n_customers)
    ]
    _stock(world, stream_rng(config.seed, "stock"))
    return world
