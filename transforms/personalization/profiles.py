"""Customer profiles: RFM and segment, value, returns, decayed affinities, sessions, preferences.

Example::

    from retail_backbone.transforms.personalization import BuildCustomerProfiles, ExtractCatalog
    from retail_backbone.transforms.inventory.windowing import WindowingOptions

    opts = WindowingOptions(mode="batch")
    catalog = events | "ExtractCatalog" >> ExtractCatalog(opts)
    result = events | "BuildCustomerProfiles" >> BuildCustomerProfiles(
        opts, catalog=catalog, hash_key="env:PII_HASH_KEY", as_of_ms=1_764_547_200_000)
    result.profiles      # CustomerProfile, keyed by customer_key (HMAC of the id)
    result.dead_letters  # invalid events (and, streaming, late ones)

How (one transform, two modes; only ``WindowingOptions`` differs):

1. ``_ContributionsFn`` turns each event into ``(customer_id, contribution)``: a view, a cart
   addition, an order, a return or a ``customer_upserted``. Events without a customer (anonymous
   views and carts) are counted (``personalization_profiles/anonymous``), other event types are
   counted as ``ignored``; malformed ones become dead letters (class ``invalid_event``).
2. Sessions. Streaming: the customer's activity events in ``Sessions(gap)`` windows (the mode's
   triggers), combined to ``SessionSpan(start, end)`` per window and fed back into the profile. A
   late event that bridges two sessions makes Beam merge their windows; the merged span overlaps
   both old ones and the profile takes the union of intervals, so it counts one session, never
   three. Batch: the same union computed inside ``ProfileCombineFn`` from the activity events
   themselves (each event is the interval ``[t, t + gap)``, exactly Beam's session window of one
   event, and Beam merges intersecting windows as the union does), so the backfill needs no
   merging-window grouping, whose per-key trigger driver on the local runners cost more than
   the rest of the job. ``sessions`` (``SessionSpan``) comes from the folded profile in batch.
3. ``ProfileCombineFn`` folds the contributions of a customer in the global window. Every part of
   its accumulator merges commutatively and associatively, so the result depends only on the set
   of events, not on their order or on how the runner splits bundles:

   - counters and sums (orders, cents, units, returns) are integers;
   - affinities are integer weights per (sku, hour of event time): view 1, cart addition 3,
     ordered line 10 x quantity (at most 5). The decayed score of a sku is
     ``fsum(weight * 0.5 ** ((as_of - hour_midpoint) / half_life))``; ``math.fsum`` is exactly
     rounded, so the float result is the same in any order. Buckets more than 16 half-lives
     older than the newest bucket are dropped while merging (the same rule applied at the end
     would drop them anyway, so dropping early changes nothing);
   - last viewed / bought: newest event time per distinct sku, pruned to the top N (a sku that
     falls out of one accumulator's top N cannot be in the merged top N from that accumulator);
   - channel and store counts are counters; the contact details are the latest
     ``customer_upserted`` by (event time, event id);
   - sessions are a union of intervals.
4. ``_EnrichProfileFn`` maps sku scores to category and brand shares with the catalog (a side
   input: late catalog entries fix the next firing, because the accumulator keeps skus), computes
   RFM and hashes the customer id with the PII hash key (HMAC-SHA256; read from ``env:VAR`` in
   ``setup()``, never in the graph).

Reference time (``as_of``): recency and decay are relative to ``max(as_of_ms, newest event of
the customer)``. Pass ``as_of_ms`` (e.g. the end of a backfill) for comparable profiles; without
it a profile is relative to the customer's own last activity. Both are independent of arrival
order, so streaming and batch agree.

RFM scores use fixed thresholds (a quintile split would need the whole population and change
every profile whenever one customer changes):

====  ==========================  ============  ====================
score recency (days since order)  frequency     monetary (gross)
====  ==========================  ============  ====================
5     <= 7                        >= 10 orders  >= 2,000
4     <= 30                       >= 5          >= 1,000
3     <= 90                       >= 3          >= 500
2     <= 180                      2             >= 100
1     older                       1             > 0
====  ==========================  ============  ====================

Segments: no order ``prospect``; R>=4 and F>=4 ``champion``; R>=3 and F>=3 ``loyal``; R>=4 and
F=1 ``new``; R<=2 and F>=3 ``at_risk``; R<=2 ``hibernating``; otherwise ``promising``.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms import window

from retail_backbone.io.dead_letters import DeadLetter
from retail_backbone.io.events import Event
from retail_backbone.transforms.inventory.windowing import (
    WindowForMode,
    WindowingOptions,
    event_dead_letter,
    unwindow,
    window_into,
)
from retail_backbone.transforms.personalization.types import (
    CustomerProfile,
    ProductInfo,
    ProfileAggregate,
    SessionSpan,
)

__all__ = [
    "DAY_MS",
    "PROFILE_EVENT_TYPES",
    "BuildCustomerProfiles",
    "ExtractCatalog",
    "ProfileCombineFn",
    "ProfileResult",
    "ProfileSettings",
    "customer_key",
    "decayed",
    "merge_intervals",
    "profile_revision",
    "rfm_scores",
    "segment_of",
]

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
PROFILE_EVENT_TYPES = (
    "product_viewed",
    "cart_updated",
    "order_placed",
    "return_processed",
    "customer_upserted",
    "product_upserted",
)
_NAMESPACE = "personalization_profiles"
_INVALID = "invalid_event"
#: Buckets older than this many half-lives behind the newest are dropped (weight < 2**-16).
_HORIZON_HALF_LIVES = 16
_TOP_SKUS = 200
_MAX_BOUGHT = 200
_TOP_AFFINITIES = 10
_VIEW, _CART, _ORDER_LINE = 1, 3, 10
_ACTIVITY = ("view", "cart", "order")


# -- small pure helpers -------------------------------------------------------------------------


def customer_key(customer_id: str, key: bytes) -> str:
    """Keyed hash of a customer id: HMAC-SHA256, first 32 hex characters.

    Analytics outputs and row keys carry this instead of the id. Without the key the id cannot be
    recovered or even tested (unlike a plain hash of a guessable id); its digits are uniform, so
    as a Bigtable row key it spreads writes over every tablet.

    Example::

        customer_key("CUST-0000001", b"secret")  # '5f0c...'(32 hex chars)
    """
    return hmac.new(key, customer_id.encode(), hashlib.sha256).hexdigest()[:32]


def decayed(weight: float, age_ms: float, half_life_ms: float) -> float:
    """``weight`` halved every ``half_life_ms`` of age (age < 0 counts as 0).

    Example::

        decayed(8, 2 * 86_400_000, 86_400_000)  # 2.0
    """
    return weight * 0.5 ** (max(0.0, age_ms) / half_life_ms)


def merge_intervals(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Union of half-open intervals ``[start, end)``: overlapping ones merge, touching ones not.

    Beam's session windows merge only windows that intersect; this does the same.

    Example::

        merge_intervals([(0, 10), (5, 20), (20, 30)])  # [(0, 20), (20, 30)]
    """
    merged: list[tuple[int, int]] = []
    for start, end in sorted(intervals):
        if merged and start < merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _merge_counted(intervals: Iterable[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """``merge_intervals`` for ``(start, end, events)``: merged intervals add their events."""
    merged: list[tuple[int, int, int]] = []
    for start, end, n in sorted(intervals):
        if merged and start < merged[-1][1]:
            s0, e0, n0 = merged[-1]
            merged[-1] = (s0, max(e0, end), n0 + n)
        else:
            merged.append((start, end, n))
    return merged


def _score(value: float, thresholds: tuple[float, ...]) -> int:
    # thresholds for scores 5, 4, 3, 2 (value >= t); anything positive scores at least 1
    for score, t in zip((5, 4, 3, 2), thresholds, strict=True):
        if value >= t:
            return score
    return 1


def rfm_scores(recency_days: float | None, frequency: int, monetary: float) -> tuple[int, int, int]:
    """``(R, F, M)`` in 1..5 with the module's fixed thresholds; ``(0, 0, 0)`` without orders.

    Example::

        rfm_scores(3.0, 6, 1200.0)  # (5, 4, 4)
    """
    if frequency <= 0 or recency_days is None:
        return 0, 0, 0
    r = _score(-recency_days, (-7, -30, -90, -180))
    f = _score(frequency, (10, 5, 3, 2))
    m = _score(monetary, (2000, 1000, 500, 100)) if monetary > 0 else 1
    return r, f, m


def segment_of(r: int, f: int) -> str:
    """The RFM segment (see the module docstring).

    Example::

        segment_of(5, 4)  # 'champion'
    """
    if f == 0:
        return "prospect"
    if r >= 4 and f >= 4:
        return "champion"
    if r >= 3 and f >= 3:
        return "loyal"
    if r >= 4 and f == 1:
        return "new"
    if r <= 2 and f >= 3:
        return "at_risk"
    if r <= 2:
        return "hibernating"
    return "promising"


#: ``revision = events_applied * _REVISION_BASE + session coverage (ms)``; coverage < ~317 years.
_REVISION_BASE = 10**13


def profile_revision(events_applied: int, session_coverage_ms: int) -> int:
    """The profile rows' tie-breaker: events applied first, then session coverage.

    Within one ``version`` a streaming run refines a profile two ways without a newer event: a
    late event (``events_applied`` grows) or a session span that arrives after the events it
    covers (the union of session intervals grows). Ordered lexicographically, the pair only
    grows from one firing to the next, so the sinks keep the latest firing; both parts end equal
    to the batch values (spans of early panes lie inside the final sessions).

    Example::

        profile_revision(12, 5_400_000)  # 120000005400000
    """
    return events_applied * _REVISION_BASE + min(max(0, session_coverage_ms), _REVISION_BASE - 1)


class ProfileSettings(NamedTuple):
    """Tunables of ``BuildCustomerProfiles``.

    Attributes:
        half_life_days: affinity decay half-life, > 0.
        last_n: distinct last-viewed skus kept.
        session_gap_minutes: inactivity that ends a session.
        as_of_ms: reference time for recency and decay (see module docstring), or ``None``.
    """

    half_life_days: float = 14.0
    last_n: int = 10
    session_gap_minutes: float = 30.0
    as_of_ms: int | None = None

    @property
    def half_life_ms(self) -> float:
        return self.half_life_days * DAY_MS

    @property
    def gap_ms(self) -> int:
        return int(self.session_gap_minutes * 60_000)


# -- events -> contributions --------------------------------------------------------------------


def _cents(value: Any) -> int:
    if value is None:
        raise ValueError("missing amount")
    return int((Decimal(str(value)) * 100).to_integral_value())


def _address(value: Any) -> str | None:
    if not value:
        return None
    return ", ".join(
        str(value.get(k)) for k in ("street", "postal_code", "city", "country") if value.get(k)
    )


class _ContributionsFn(beam.DoFn):
    """Event -> ``(customer_id, contribution)``; see the module docstring for the kinds."""

    INVALID = "invalid"

    def __init__(self, pipeline: str, stage: str) -> None:
        self._pipeline = pipeline
        self._stage = stage
        self._contributions = Metrics.counter(_NAMESPACE, "contributions")
        self._anonymous = Metrics.counter(_NAMESPACE, "anonymous")
        self._ignored = Metrics.counter(_NAMESPACE, "ignored")
        self._invalid = Metrics.counter(_NAMESPACE, "invalid")

    def process(self, event: Event) -> Iterator[Any]:
        try:
            out = self._contribution(event)
        except (KeyError, TypeError, ValueError, InvalidOperation, AttributeError) as exc:
            self._invalid.inc()
            yield beam.pvalue.TaggedOutput(
                self.INVALID,
                event_dead_letter(
                    event, self._pipeline, self._stage, _INVALID, f"{type(exc).__name__}: {exc}"
                ),
            )
            return
        if out is None:
            return
        self._contributions.inc()
        yield out

    def _contribution(self, event: Event) -> tuple[str, tuple] | None:
        p, t = event.payload, event.event_time_ms
        kind = event.event_type
        if kind in ("product_viewed", "cart_updated"):
            customer = p.get("customer_id")
            sku = p["sku"]
            if not sku:
                raise ValueError("empty sku")
            if not customer:
                self._anonymous.inc()
                return None
            channel = str(p.get("channel") or "UNKNOWN")
            if kind == "product_viewed":
                return customer, ("view", t, sku, channel)
            delta = int(p["quantity_delta"])
            return customer, ("cart", t, sku, delta, channel)
        if kind == "order_placed":
            customer = p["customer_id"]
            if not customer:
                raise ValueError("order without customer_id")
            lines = tuple((line["sku"], int(line["quantity"])) for line in p["lines"])
            if not lines:
                raise ValueError("order without lines")
            channel = str(p.get("channel") or "UNKNOWN")
            return customer, (
                "order",
                t,
                p["order_id"],
                _cents(p["total"]),
                lines,
                channel,
                p.get("store_id"),
            )
        if kind == "return_processed":
            customer = p["customer_id"]
            if not customer:
                raise ValueError("return without customer_id")
            return customer, ("return", t, p["sku"], int(p["quantity"]), _cents(p["refund_amount"]))
        if kind == "customer_upserted":
            customer = p["customer_id"]
            if not customer:
                raise ValueError("customer_upserted without customer_id")
            contact = (
                p.get("email"),
                p.get("phone"),
                _address(p.get("address")),
                p.get("segment"),
                p.get("home_store"),
            )
            return customer, ("customer", t, event.event_id, contact)
        self._ignored.inc()
        return None


# -- the accumulator ----------------------------------------------------------------------------


class _ProfileAcc:
    """Mergeable per-customer state; every field merges commutatively and associatively."""

    def __init__(self) -> None:
        self.first_ms: int | None = None
        self.last_ms: int | None = None
        self.orders = 0
        self.order_cents = 0
        self.units = 0
        self.returned_units = 0
        self.refund_cents = 0
        self.first_order_ms: int | None = None
        self.last_order_ms: int | None = None
        self.buckets: Counter = Counter()  # (sku, hour) -> integer weight
        self.viewed: dict[str, int] = {}  # sku -> newest view time (top last_n)
        self.bought: dict[str, int] = {}  # sku -> newest order time (top _MAX_BOUGHT)
        self.channels: Counter = Counter()
        self.stores: Counter = Counter()
        # merged (start, end, activity events counted inline); spans from windows count 0
        self.sessions: list[tuple[int, int, int]] = []
        self.pending: list[int] = []  # batch: activity times not merged into sessions yet
        self.contact: tuple | None = None  # (time, event_id, fields)
        self.events = 0
        self.applied = 0  # events (not session spans)

    def seen(self, t: int) -> None:
        self.first_ms = t if self.first_ms is None else min(self.first_ms, t)
        self.last_ms = t if self.last_ms is None else max(self.last_ms, t)


def _min(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def _top_recent(times: dict[str, int], n: int) -> dict[str, int]:
    if len(times) <= n:
        return times
    # Newest first; ties by sku so the cut does not depend on insertion order.
    keep = sorted(times.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return dict(keep)


def _newer(times: dict[str, int], sku: str, t: int) -> None:
    if times.get(sku, -1) < t:
        times[sku] = t


class ProfileCombineFn(beam.CombineFn):
    """Folds ``contribution`` tuples of one customer into a ``ProfileAggregate``.

    Order-independent by construction (see the module docstring); ``merge_accumulators`` is
    commutative and associative, so combiner lifting and any bundle split give the same output.

    Example::

        fn = ProfileCombineFn(ProfileSettings(half_life_days=7))
        acc = fn.add_input(fn.create_accumulator(), ("view", 1_764_000_000_000, "SKU-1", "WEB"))
        agg = fn.extract_output(acc)._replace(customer_id="CUST-1")

    Args:
        settings: half-life, last N, session gap, reference time.
        inline_sessions: sessions from the activity events themselves (batch) instead of
            ``("session", start, end)`` contributions from session windows (streaming).
    """

    _PENDING = 512

    def __init__(
        self, settings: ProfileSettings = ProfileSettings(), inline_sessions: bool = False
    ) -> None:
        self._s = settings
        self._inline = inline_sessions

    def create_accumulator(self) -> _ProfileAcc:
        return _ProfileAcc()

    def _settle(self, acc: _ProfileAcc) -> None:
        if acc.pending:
            gap = self._s.gap_ms
            acc.sessions = _merge_counted([*acc.sessions, *((t, t + gap, 1) for t in acc.pending)])
            acc.pending = []

    def add_input(self, acc: _ProfileAcc, c: tuple) -> _ProfileAcc:
        kind = c[0]
        acc.events += 1
        if kind == "session":
            _, start, end = c
            acc.sessions = _merge_counted([*acc.sessions, (start, end, 0)])
            return acc
        acc.applied += 1
        t = c[1]
        if self._inline and kind in _ACTIVITY:
            acc.pending.append(t)
            if len(acc.pending) >= self._PENDING:
                self._settle(acc)
        acc.seen(t)
        hour = t // HOUR_MS
        if kind == "view":
            _, _, sku, channel = c
            acc.buckets[(sku, hour)] += _VIEW
            _newer(acc.viewed, sku, t)
            acc.viewed = _top_recent(acc.viewed, self._s.last_n)
            acc.channels[channel] += 1
        elif kind == "cart":
            _, _, sku, delta, channel = c
            if delta > 0:
                acc.buckets[(sku, hour)] += _CART
            acc.channels[channel] += 1
        elif kind == "order":
            _, _, _order_id, cents, lines, channel, store = c
            acc.orders += 1
            acc.order_cents += cents
            acc.first_order_ms = _min(acc.first_order_ms, t)
            acc.last_order_ms = _max(acc.last_order_ms, t)
            for sku, qty in lines:
                acc.units += qty
                acc.buckets[(sku, hour)] += _ORDER_LINE * max(1, min(qty, 5))
                _newer(acc.bought, sku, t)
            acc.bought = _top_recent(acc.bought, _MAX_BOUGHT)
            acc.channels[channel] += 1
            if store:
                acc.stores[store] += 1
        elif kind == "return":
            _, _, _sku, qty, cents = c
            acc.returned_units += qty
            acc.refund_cents += cents
        elif kind == "customer":
            _, _, event_id, fields = c
            candidate = (t, event_id, fields)
            if acc.contact is None or candidate[:2] > acc.contact[:2]:
                acc.contact = candidate
        return acc

    def _prune(self, acc: _ProfileAcc) -> None:
        if not acc.buckets:
            return
        newest = max(hour for _, hour in acc.buckets)
        horizon = newest - math.ceil(_HORIZON_HALF_LIVES * self._s.half_life_ms / HOUR_MS)
        if min(hour for _, hour in acc.buckets) < horizon:
            acc.buckets = Counter({k: w for k, w in acc.buckets.items() if k[1] >= horizon})

    def merge_accumulators(self, accs: Iterable[_ProfileAcc]) -> _ProfileAcc:
        out = _ProfileAcc()
        intervals: list[tuple[int, int, int]] = []
        gap = self._s.gap_ms
        for a in accs:
            out.first_ms = _min(out.first_ms, a.first_ms)
            out.last_ms = _max(out.last_ms, a.last_ms)
            out.orders += a.orders
            out.order_cents += a.order_cents
            out.units += a.units
            out.returned_units += a.returned_units
            out.refund_cents += a.refund_cents
            out.first_order_ms = _min(out.first_order_ms, a.first_order_ms)
            out.last_order_ms = _max(out.last_order_ms, a.last_order_ms)
            out.buckets.update(a.buckets)
            for sku, t in a.viewed.items():
                _newer(out.viewed, sku, t)
            for sku, t in a.bought.items():
                _newer(out.bought, sku, t)
            out.channels.update(a.channels)
            out.stores.update(a.stores)
            intervals += a.sessions
            intervals += [(t, t + gap, 1) for t in a.pending]
            if a.contact is not None and (out.contact is None or a.contact[:2] > out.contact[:2]):
                out.contact = a.contact
            out.events += a.events
            out.applied += a.applied
        out.viewed = _top_recent(out.viewed, self._s.last_n)
        out.bought = _top_recent(out.bought, _MAX_BOUGHT)
        out.sessions = _merge_counted(intervals)
        self._prune(out)
        return out

    def compact(self, acc: _ProfileAcc) -> _ProfileAcc:
        self._settle(acc)
        self._prune(acc)
        return acc

    def extract_output(self, acc: _ProfileAcc) -> ProfileAggregate:
        self._settle(acc)
        self._prune(acc)
        last = acc.last_ms if acc.last_ms is not None else 0
        as_of = max(self._s.as_of_ms or 0, last)
        half = self._s.half_life_ms
        terms: dict[str, list[float]] = {}
        for (sku, hour), w in acc.buckets.items():
            midpoint = hour * HOUR_MS + HOUR_MS // 2
            terms.setdefault(sku, []).append(decayed(w, as_of - midpoint, half))
        scores = sorted(((sku, math.fsum(v)) for sku, v in terms.items()), key=_best_first)
        gap = self._s.gap_ms
        session_ms = sum(max(0, end - start - gap) for start, end, _ in acc.sessions)
        return ProfileAggregate(
            customer_id="",
            first_seen_ms=acc.first_ms if acc.first_ms is not None else 0,
            last_seen_ms=last,
            orders=acc.orders,
            order_cents=acc.order_cents,
            units=acc.units,
            returned_units=acc.returned_units,
            refund_cents=acc.refund_cents,
            first_order_ms=acc.first_order_ms,
            last_order_ms=acc.last_order_ms,
            sku_scores=[[sku, s] for sku, s in scores[:_TOP_SKUS]],
            last_viewed=[s for s, _ in sorted(acc.viewed.items(), key=lambda kv: (-kv[1], kv[0]))],
            bought=[s for s, _ in sorted(acc.bought.items(), key=lambda kv: (-kv[1], kv[0]))],
            sessions=len(acc.sessions),
            session_ms=session_ms,
            channel=_most_common(acc.channels),
            store=_most_common(acc.stores),
            contact=acc.contact[2] if acc.contact else None,
            events=acc.events,
            as_of_ms=as_of,
            version=last,
            events_applied=acc.applied,
            session_coverage_ms=sum(end - start for start, end, _ in acc.sessions),
            session_spans=[list(s) for s in acc.sessions] if self._inline else [],
        )


def _best_first(item: tuple[str, float]) -> tuple[float, str]:
    return (-item[1], item[0])


def _most_common(counts: Counter) -> str | None:
    if not counts:
        return None
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]


# -- enrichment ---------------------------------------------------------------------------------


def _shares(scores: dict[str, list[float]], top: int) -> list[list]:
    totals = {name: math.fsum(v) for name, v in scores.items()}
    grand = math.fsum(totals.values())
    if grand <= 0:
        return []
    ranked = sorted(totals.items(), key=_best_first)[:top]
    return [[name, round(value / grand, 6)] for name, value in ranked]


def enrich(agg: ProfileAggregate, catalog: dict[str, ProductInfo], key: bytes) -> CustomerProfile:
    """A ``ProfileAggregate`` with the catalog and the hash key -> the served ``CustomerProfile``.

    Skus missing from the catalog count towards the category and brand ``unknown``.
    """
    categories: dict[str, list[float]] = {}
    brands: dict[str, list[float]] = {}
    for sku, score in agg.sku_scores:
        info = catalog.get(sku)
        categories.setdefault(info.category if info else "unknown", []).append(score)
        brands.setdefault(info.brand if info else "unknown", []).append(score)
    recency = (
        None if agg.last_order_ms is None else round((agg.as_of_ms - agg.last_order_ms) / DAY_MS, 3)
    )
    monetary = agg.order_cents / 100
    r, f, m = rfm_scores(recency, agg.orders, monetary)
    email, phone, address, _segment_label, home_store = agg.contact or (None,) * 5
    return CustomerProfile(
        customer_key=customer_key(agg.customer_id, key),
        customer_id=agg.customer_id,
        email=email,
        phone=phone,
        address=address,
        recency_days=recency,
        frequency=agg.orders,
        monetary=round(monetary, 2),
        r_score=r,
        f_score=f,
        m_score=m,
        segment=segment_of(r, f),
        ltv=round((agg.order_cents - agg.refund_cents) / 100, 2),
        aov=round(monetary / agg.orders, 2) if agg.orders else 0.0,
        return_rate=round(agg.returned_units / agg.units, 6) if agg.units else 0.0,
        category_affinity=_shares(categories, _TOP_AFFINITIES),
        brand_affinity=_shares(brands, _TOP_AFFINITIES),
        last_viewed=list(agg.last_viewed),
        bought=list(agg.bought),
        sessions=agg.sessions,
        mean_session_seconds=round(agg.session_ms / agg.sessions / 1000, 3)
        if agg.sessions
        else 0.0,
        preferred_channel=agg.channel,
        preferred_store=agg.store or home_store,
        as_of_ms=agg.as_of_ms,
        version=agg.version,
        events_applied=agg.events_applied,
        revision=profile_revision(agg.events_applied, agg.session_coverage_ms),
    )


class _EnrichProfileFn(beam.DoFn):
    """``(customer_id, ProfileAggregate)`` + catalog side input -> ``CustomerProfile``."""

    def __init__(self, hash_key: str) -> None:
        self._hash_key_ref = hash_key
        self._profiles = Metrics.counter(_NAMESPACE, "profiles_emitted")

    def setup(self) -> None:
        from retail_backbone.io.sinks.base import resolve_secret

        self._key = resolve_secret(self._hash_key_ref).encode()

    def process(self, element: tuple[str, ProfileAggregate], catalog: dict) -> Iterator[Any]:
        customer, agg = element
        if agg.events == 0:  # an empty pane (Flink fires some at the end of a streaming run)
            return
        self._profiles.inc()
        yield enrich(agg._replace(customer_id=customer), catalog, self._key)


# -- the catalog --------------------------------------------------------------------------------


def product_info(event: Event) -> ProductInfo:
    """``product_upserted`` -> ``ProductInfo`` (category path joined by ``/``)."""
    p = event.payload
    path = [str(c) for c in (p.get("categories") or []) if c]
    return ProductInfo(
        sku=p["sku"],
        category="/".join(path) or "unknown",
        top_category=path[0] if path else "unknown",
        brand=str(p.get("brand") or "unknown"),
        active=bool(p.get("active", True)),
        version=event.event_time_ms,
    )


def _latest(infos: Iterable[ProductInfo]) -> ProductInfo:
    # Newest version wins; equal versions are decided by content, never by arrival order.
    return max(infos, key=lambda i: (i.version, i))


class ExtractCatalog(beam.PTransform):
    """``product_upserted`` events -> ``(sku, ProductInfo)``, the latest per sku.

    In streaming the output fires with the mode's triggers (global window), so it can be a side
    input that improves as the catalog arrives.
    """

    def __init__(self, windowing: WindowingOptions, label: str | None = None) -> None:
        super().__init__(label)
        self._windowing = windowing

    def expand(self, events: beam.PCollection) -> beam.PCollection:
        return (
            events
            | "ProductUpserts" >> beam.Filter(lambda e: e.event_type == "product_upserted")
            # Keys carry str hints everywhere: Prism only groups by standard-coder keys.
            | "ToProductInfo"
            >> beam.Map(lambda e: (e.payload["sku"], product_info(e))).with_output_types(
                tuple[str, ProductInfo]
            )
            | "Window" >> window_into(self._windowing)
            | "LatestPerSku" >> beam.CombinePerKey(_latest)
        )


# -- the composite ------------------------------------------------------------------------------


class ProfileResult(NamedTuple):
    """Outputs of ``BuildCustomerProfiles``."""

    profiles: beam.PCollection
    sessions: beam.PCollection
    dead_letters: beam.PCollection


class _SessionSpanCombineFn(beam.CombineFn):
    """Counts the events of one session window (the window gives start and end)."""

    def create_accumulator(self) -> int:
        return 0

    def add_input(self, acc: int, _t: Any) -> int:
        return acc + 1

    def merge_accumulators(self, accs: Iterable[int]) -> int:
        return sum(accs)

    def extract_output(self, acc: int) -> int:
        return acc


def _span(element: tuple[str, int], w=beam.DoFn.WindowParam) -> SessionSpan:
    customer, events = element
    return SessionSpan(customer, w.start.micros // 1000, w.end.micros // 1000, events)


def _spans_of(element: tuple[str, ProfileAggregate]) -> Iterator[SessionSpan]:
    customer, agg = element
    for start, end, events in agg.session_spans:
        yield SessionSpan(customer, start, end, events)


class BuildCustomerProfiles(beam.PTransform):
    """Deduplicated ``Event``s -> ``CustomerProfile`` per customer (see module docstring).

    Args:
        windowing: mode, firing interval and allowed lateness.
        catalog: ``(sku, ProductInfo)`` (``ExtractCatalog``); used as a side input.
        hash_key: PII hash key, literal or ``env:VAR`` (resolved on the workers).
        settings: half-life, last N, session gap, ``as_of_ms``.
        pipeline: pipeline name for dead letters.

    Returns:
        ``ProfileResult(profiles, sessions, dead_letters)``.
    """

    def __init__(
        self,
        windowing: WindowingOptions,
        *,
        catalog: beam.PCollection,
        hash_key: str,
        settings: ProfileSettings = ProfileSettings(),
        pipeline: str = "personalization",
        label: str | None = None,
    ) -> None:
        super().__init__(label)
        self._windowing = windowing
        self._catalog = catalog
        self._hash_key = hash_key
        self._settings = settings
        self._pipeline = pipeline

    def expand(self, events: beam.PCollection) -> ProfileResult:
        stage = self.label
        windowed = events | "WindowEvents" >> WindowForMode(
            self._windowing, pipeline=self._pipeline, stage=stage
        )
        out = windowed.elements | "ToContributions" >> beam.ParDo(
            _ContributionsFn(self._pipeline, stage)
        ).with_output_types(tuple[str, Any]).with_outputs(
            _ContributionsFn.INVALID, main="contributions"
        )
        contributions = out.contributions
        if not self._windowing.streaming:
            aggregates = contributions | "FoldProfiles" >> beam.CombinePerKey(
                ProfileCombineFn(self._settings, inline_sessions=True)
            )
            sessions = aggregates | "SessionSpans" >> beam.FlatMap(_spans_of).with_output_types(
                SessionSpan
            )
            return self._finish(aggregates, sessions, windowed, out)
        gap_s = self._settings.gap_ms / 1000
        sessions = (
            contributions
            | "ActivityOnly" >> beam.Filter(lambda kv: kv[1][0] in _ACTIVITY)
            | "ActivityTimes"
            >> beam.Map(lambda kv: (kv[0], kv[1][1])).with_output_types(tuple[str, int])
            | "SessionWindows" >> window_into(self._windowing, window.Sessions(gap_s))
            | "CountSessionEvents" >> beam.CombinePerKey(_SessionSpanCombineFn())
            | "ToSessionSpans" >> beam.Map(_span).with_output_types(SessionSpan)
        )
        session_contributions = (
            sessions
            | "SpanContributions"
            >> beam.Map(
                lambda s: (s.customer_id, ("session", s.start_ms, s.end_ms))
            ).with_output_types(tuple[str, Any])
            | "SpansToGlobal" >> window_into(self._windowing)
        )
        aggregates = (
            (
                contributions,
                session_contributions,
            )
            | "AllContributions" >> beam.Flatten().with_output_types(tuple[str, Any])
            | "FoldProfiles" >> beam.CombinePerKey(ProfileCombineFn(self._settings))
        )
        return self._finish(aggregates, sessions, windowed, out)

    def _finish(self, aggregates, sessions, windowed, out) -> ProfileResult:
        profiles = aggregates | "EnrichProfiles" >> beam.ParDo(
            _EnrichProfileFn(self._hash_key), catalog=beam.pvalue.AsDict(self._catalog)
        ).with_output_types(CustomerProfile)
        # Dead letters leave in the plain global window (these carry the events' trigger), like
        # the late ones from DropLateData.
        invalid = out[_ContributionsFn.INVALID] | "UnwindowInvalid" >> unwindow()
        dead = (windowed.dead_letters, invalid) | "MergeDeadLetters" >> (
            beam.Flatten().with_output_types(DeadLetter)
        )
        return ProfileResult(profiles=profiles, sessions=sessions, dead_letters=dead)
