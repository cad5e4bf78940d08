"""Typed rows of the personalization transforms: profiles, graph edges, recommendations.

Example::

    from retail_backbone.transforms.personalization.types import CoPurchaseEdge

    edge = CoPurchaseEdge("BOUGHT_WITH", "SKU-1", "SKU-2", window="2025-11-24", count=3,
                          total=5, weight=4.1, as_of_ms=1_764_028_800_000,
                          days=["2025-11-23", "2025-11-24"], counts=[2, 3],
                          version=1_764_000_000_000)

Every row carries ``version``: the newest event time (epoch ms) it reflects. Sinks keep the
newest version per key, so replays are harmless. Values are deterministic functions of the set
of input events (never of their arrival order, never of ``now()``), so a backfill run twice
writes identical bytes.

Privacy: ``CustomerProfile`` is the only row with PII (``customer_id``, ``email``, ``phone``,
``address``); it goes to the profile store only. Every other output is keyed by
``customer_key``, a keyed hash (HMAC-SHA256) of the customer id (see ``profiles.customer_key``).

Coders: rows are ``typing.NamedTuple`` classes pinned to ``FastPrimitivesCoder`` (field by field,
no schema inference), like the inventory rows.
"""

from __future__ import annotations

from typing import NamedTuple

from apache_beam import coders

__all__ = [
    "BOUGHT_WITH",
    "EDGE_KINDS",
    "VIEWED_WITH",
    "CoPurchaseEdge",
    "CustomerProfile",
    "CustomerRecommendations",
    "PairDay",
    "ProductInfo",
    "ProfileAggregate",
    "RelatedProducts",
    "SessionSpan",
]

BOUGHT_WITH = "BOUGHT_WITH"
VIEWED_WITH = "VIEWED_WITH"
EDGE_KINDS = (BOUGHT_WITH, VIEWED_WITH)


class ProductInfo(NamedTuple):
    """Catalog facts of one product (latest ``product_upserted`` by event time).

    Attributes:
        sku: product id.
        category: leaf category path, levels joined by ``/`` (e.g. ``Electronics/Headphones``).
        top_category: first level of the path.
        brand: brand name.
        active: sellable.
        version: event time (ms) of the ``product_upserted`` it comes from.
    """

    sku: str
    category: str
    top_category: str
    brand: str
    active: bool
    version: int


class SessionSpan(NamedTuple):
    """One session of a customer from a session window: ``[start_ms, end_ms)``.

    ``end_ms`` is the window end (last event + gap); the session lasted
    ``end_ms - start_ms - gap``. Spans of the same session seen in several panes overlap and are
    merged downstream (interval union), so re-emitted or merged sessions are never counted twice.
    """

    customer_id: str
    start_ms: int
    end_ms: int
    events: int


class ProfileAggregate(NamedTuple):
    """Per-customer aggregate before catalog enrichment (output of ``ProfileCombineFn``).

    Attributes:
        customer_id: the customer (PII-grade identifier).
        first_seen_ms / last_seen_ms: first and last event time.
        orders, order_cents, units, returned_units, refund_cents: purchase history.
        first_order_ms / last_order_ms: ``None`` without orders.
        sku_scores: ``[(sku, decayed score)]`` best first (top 200), decayed to ``as_of_ms``.
        last_viewed: last N distinct viewed skus, newest first (by event time).
        bought: distinct bought skus, newest first (at most 200).
        sessions: merged sessions; ``session_ms``: their total duration (without the gap).
        channel, store: most frequent channel / store (ties: smallest name), or ``None``.
        contact: ``(email, phone, address, segment_label, home_store)`` of the latest
            ``customer_upserted``, or ``None``.
        events: contributions folded in (session spans included).
        as_of_ms: the reference time the decay and recency are relative to.
        version: newest event time folded in.
        events_applied: events folded in (session spans not counted).
        session_coverage_ms: total length of the merged session intervals (window ends
            included), which only grows as spans of the same sessions arrive.
        session_spans: batch (sessions computed inline): ``[start, end, events]`` per session.
    """

    customer_id: str
    first_seen_ms: int
    last_seen_ms: int
    orders: int
    order_cents: int
    units: int
    returned_units: int
    refund_cents: int
    first_order_ms: int | None
    last_order_ms: int | None
    sku_scores: list
    last_viewed: list
    bought: list
    sessions: int
    session_ms: int
    channel: str | None
    store: str | None
    contact: tuple | None
    events: int
    as_of_ms: int
    version: int
    events_applied: int = 0
    session_coverage_ms: int = 0
    session_spans: list = []


class CustomerProfile(NamedTuple):
    """The served profile of one customer (Bigtable ``profiles``, keyed by ``customer_key``).

    Money is in the order currency's major unit, rounded to cents. Scores are rounded to 6
    decimals so that equal inputs always give equal bytes.

    Attributes:
        customer_key: HMAC-SHA256 of the customer id (hex, 32 chars): the row key.
        customer_id, email, phone, address: PII, only in the profile store.
        recency_days: days from the last order to ``as_of_ms`` (``None`` without orders).
        frequency: orders placed.
        monetary: gross order value.
        r_score, f_score, m_score: 1-5 (0 without orders), fixed thresholds (see ``profiles``).
        segment: RFM segment (``champion``, ``loyal``, ``new``, ``promising``, ``at_risk``,
            ``hibernating``, ``prospect``).
        ltv: historical lifetime value: order value minus refunds.
        aov: average order value.
        return_rate: returned units / ordered units.
        category_affinity / brand_affinity: ``[[name, share]]``, shares of decayed interest
            summing to 1 over all categories/brands, best 10 first.
        last_viewed: the last N distinct viewed skus, newest first.
        bought: distinct bought skus, newest first (at most 200; recommendations exclude them).
        sessions: session count; mean_session_seconds: their mean duration.
        preferred_channel / preferred_store: most frequent (``None`` if never seen).
        as_of_ms: reference time of recency and decay.
        version: newest event time reflected.
        events_applied: distinct events of the customer folded in.
        revision: the sinks' tie-breaker between two rows of one ``version`` (late data within
            the allowed lateness refines a profile without raising its newest event time):
            ``events_applied * 10**13 + session coverage in ms`` (``profile_revision``). Both
            parts only grow as a streaming run re-fires, and end equal to the batch values.
    """

    customer_key: str
    customer_id: str
    email: str | None
    phone: str | None
    address: str | None
    recency_days: float | None
    frequency: int
    monetary: float
    r_score: int
    f_score: int
    m_score: int
    segment: str
    ltv: float
    aov: float
    return_rate: float
    category_affinity: list
    brand_affinity: list
    last_viewed: list
    bought: list
    sessions: int
    mean_session_seconds: float
    preferred_channel: str | None
    preferred_store: str | None
    as_of_ms: int
    version: int
    events_applied: int = 0
    revision: int = 0


class PairDay(NamedTuple):
    """Evidence count of one product pair in one daily window.

    Attributes:
        kind: ``BOUGHT_WITH`` (same order) or ``VIEWED_WITH`` (same session).
        a, b: the pair in canonical order (``a < b``).
        day: the UTC day (ISO date).
        count: distinct orders / sessions containing both.
        last_ms: newest event time of that evidence.
    """

    kind: str
    a: str
    b: str
    day: str
    count: int
    last_ms: int


class CoPurchaseEdge(NamedTuple):
    """One undirected edge of the product graph (``(a)-[kind]->(b)`` with ``a < b``).

    Attributes:
        kind: ``BOUGHT_WITH`` or ``VIEWED_WITH``.
        a, b: canonical pair.
        window: the latest daily window with evidence; ``count``: its count.
        total: count over every day kept.
        weight: ``sum(count_d * 0.5 ** ((as_of_ms - end_of_day_d) / half_life))``.
        as_of_ms: end of the latest day (the weight's reference time; to compare edges at time
            T multiply by ``0.5 ** ((T - as_of_ms) / half_life)``).
        days / counts: the daily counts, oldest first (at most 60 days).
        version: newest event time of the evidence.
    """

    kind: str
    a: str
    b: str
    window: str
    count: int
    total: int
    weight: float
    as_of_ms: int
    days: list
    counts: list
    version: int


class RelatedProducts(NamedTuple):
    """Top-k related products of one product (Bigtable ``related_products``, keyed by sku).

    ``items`` is ``[[sku, score]]``, best first; scores are edge weights decayed to ``as_of_ms``
    (bought-with counts more than viewed-with, see ``recommend``). ``evidence`` is the sum of
    ``total`` over every edge of the product (not only the top k): it grows whenever an edge
    gains evidence, so it is the sinks' tie-breaker between two rows of one ``version``.
    """

    sku: str
    items: list
    as_of_ms: int
    version: int
    evidence: int = 0


class CustomerRecommendations(NamedTuple):
    """Top-k products for one customer (Bigtable ``recommendations``, keyed by ``customer_key``).

    ``items`` is ``[[sku, score, reason]]`` best first; reason is ``affinity`` (category/brand
    interest) or ``related`` (neighbour of a recently viewed or bought product).
    ``revision`` (the sinks' tie-breaker between two rows of one ``version``) is
    ``2 * profile revision + final``: a list computed once the profile's day has closed (every batch
    list; a streaming refresh) outranks the first list of the same profile (``Recommend``).
    """

    customer_key: str
    items: list
    as_of_ms: int
    version: int
    revision: int = 0


for _row in (
    ProductInfo,
    SessionSpan,
    ProfileAggregate,
    CustomerProfile,
    PairDay,
    CoPurchaseEdge,
    RelatedProducts,
    CustomerRecommendations,
):
    coders.registry.register_coder(_row, coders.FastPrimitivesCoder)
