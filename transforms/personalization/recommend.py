"""Recommendations: related products per product and top-k products per customer.

Example::

    from retail_backbone.transforms.personalization import Recommend

    recs = {"profiles": profiles, "edges": graph.edges, "events": events,
            "catalog": catalog} | "Recommend" >> Recommend(WindowingOptions(mode="batch"), top_k=10)
    recs.related    # RelatedProducts per sku
    recs.customers  # CustomerRecommendations per customer_key
    recs.popular    # (category, [[sku, score]]): the most popular products per category

Optional input ``out_of_stock``: a non-empty PCollection of skus that are out of stock everywhere
(e.g. from the inventory job's stock levels); they are never recommended.

Streaming: related lists, popularity and the catalog reach the per-customer step as side inputs in
the global window. Flink processes a profile only once every side input has data, so an
open-ended run writes its first recommendations after the first catalog event, the first
product pair and the first pane of popularity (and an empty ``out_of_stock`` PCollection would
hold them back for good, hence a constant when there is no stock information).

Related products of a product p: its neighbours in the product graph, scored
``sum over kinds of kind_weight * weight * 0.5 ** ((T - as_of) / half_life)`` where ``T`` is the
newest ``as_of`` among p's edges: every edge is decayed to the same time before ranking. Bought
together weighs ``bought_weight`` (default 3) times viewed together. Top ``top_k``; ties by sku.

Per customer (one pass over the profile, with the related lists, the per-category popularity and
the catalog as side inputs)::

    score(s) = affinity_weight * sum_c share_c * popularity_in_c(s) / max popularity in c
                 * (1 + brand share of s's brand)
             + related_weight * sum_{seed} seed_weight * related_score(seed, s) / best(seed)

Seeds are the last viewed products (weight ``1 / (1 + position)``, newest first) and the five
most recently bought (weight 1). Already bought, inactive and out-of-stock products are
excluded. Each item carries the reason that contributed most (``affinity`` or ``related``).

Popularity of a product: view 1 + cart addition 3 + ordered line 10 per event, over the input.

All of it is a deterministic function of its inputs (ties broken by sku), so reruns give the same
rows. In streaming the outputs fire with the mode's triggers in the global window: related lists
are refreshed whenever the graph fires; a customer's list is computed when the customer's profile
fires, against the side inputs of that moment, and once more when the window of the profile's
day has closed (the watermark past the day's end plus the allowed lateness), against the related
lists and popularity of that moment, late panes of the day included. That second list is
*final*: batch lists are all final, and a row's ``revision`` is ``2 * profile revision + final``,
so a final list outranks the first one of the same profile in the sinks, and a newer profile
outranks both. Graph changes of later days do not refresh the list of a customer who is not
active again.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from retail_backbone.transforms.inventory.windowing import WindowingOptions, window_into
from retail_backbone.transforms.personalization.types import (
    BOUGHT_WITH,
    CoPurchaseEdge,
    CustomerProfile,
    CustomerRecommendations,
    ProductInfo,
    RelatedProducts,
)

__all__ = [
    "NeighboursCombineFn",
    "Recommend",
    "RecommendResult",
    "RecommendSettings",
    "TopPerKeyCombineFn",
    "recommend_for",
    "recommendation_revision",
]

DAY_MS = 86_400_000
_NAMESPACE = "personalization_recommend"


class RecommendSettings(NamedTuple):
    """Tunables of ``Recommend`` (see the module docstring)."""

    top_k: int = 10
    half_life_days: float = 14.0
    bought_weight: float = 3.0
    affinity_weight: float = 1.0
    related_weight: float = 1.0
    popular_per_category: int = 50


def _best_first(item: tuple[str, float]) -> tuple[float, str]:
    return (-item[1], item[0])


class NeighboursCombineFn(beam.CombineFn):
    """Edges of one product -> ``RelatedProducts`` (the newest version of each edge counts).

    Input: ``(neighbour, kind, weight, as_of_ms, version, total)``. The accumulator keeps one
    entry per (neighbour, kind), the one with the highest ``(version, as_of, total, weight)``, so
    re-fired edges in streaming replace their older selves (an edge refined by late evidence
    keeps its version and gains ``total``) and the merge is order-independent. The output's
    ``evidence`` is the sum of ``total`` over every kept edge: it grows with any refinement.
    """

    def __init__(self, settings: RecommendSettings) -> None:
        self._s = settings

    def create_accumulator(self) -> dict:
        return {}

    def add_input(self, acc: dict, item: tuple) -> dict:
        neighbour, kind, weight, as_of, version, total = item
        value = (version, as_of, total, weight)
        if acc.get((neighbour, kind), (-1,)) < value:
            acc[(neighbour, kind)] = value
        return acc

    def merge_accumulators(self, accs: Iterable[dict]) -> dict:
        out: dict = {}
        for acc in accs:
            for key, value in acc.items():
                if out.get(key, (-1,)) < value:
                    out[key] = value
        return out

    def extract_output(self, acc: dict) -> tuple[list, int, int, int]:
        if not acc:
            return [], 0, 0, 0
        reference = max(as_of for _, as_of, _, _ in acc.values())
        half = self._s.half_life_days * DAY_MS
        terms: dict[str, list[float]] = {}
        for (neighbour, kind), (_, as_of, _, weight) in acc.items():
            factor = self._s.bought_weight if kind == BOUGHT_WITH else 1.0
            terms.setdefault(neighbour, []).append(
                factor * weight * 0.5 ** ((reference - as_of) / half)
            )
        scores = [(n, round(math.fsum(v), 6)) for n, v in terms.items()]
        top = heapq.nsmallest(self._s.top_k, scores, key=_best_first)
        version = max(v for v, _, _, _ in acc.values())
        evidence = sum(total for _, _, total, _ in acc.values())
        return [[n, s] for n, s in top], reference, version, evidence


class TopPerKeyCombineFn(beam.CombineFn):
    """``(item, score)`` -> the ``n`` best ``[[item, score]]``; an item's score is its maximum.

    Scores that only grow (running counts re-fired in streaming) keep their newest value, and
    pruning to the top ``n`` while merging is exact: an item cut from one accumulator has ``n``
    better items there, so it cannot make the merged top ``n`` with that score.
    """

    def __init__(self, n: int) -> None:
        self._n = n

    def create_accumulator(self) -> dict[str, float]:
        return {}

    def add_input(self, acc: dict[str, float], item: tuple[str, float]) -> dict[str, float]:
        name, score = item
        if acc.get(name, -math.inf) < score:
            acc[name] = score
        return acc

    def _prune(self, acc: dict[str, float]) -> dict[str, float]:
        if len(acc) <= self._n:
            return acc
        return dict(heapq.nsmallest(self._n, acc.items(), key=_best_first))

    def merge_accumulators(self, accs: Iterable[dict[str, float]]) -> dict[str, float]:
        out: dict[str, float] = {}
        for acc in accs:
            for name, score in acc.items():
                self.add_input(out, (name, score))
        return self._prune(out)

    def compact(self, acc: dict[str, float]) -> dict[str, float]:
        return self._prune(acc)

    def extract_output(self, acc: dict[str, float]) -> list[list]:
        return [[n, s] for n, s in sorted(acc.items(), key=_best_first)[: self._n]]


def _popularity(event: Any) -> Iterator[tuple[str, int]]:
    kind, p = event.event_type, event.payload
    if kind == "product_viewed" and p.get("sku"):
        yield p["sku"], 1
    elif kind == "cart_updated" and p.get("sku") and (p.get("quantity_delta") or 0) > 0:
        yield p["sku"], 3
    elif kind == "order_placed":
        for line in p.get("lines") or ():
            if line.get("sku"):
                yield line["sku"], 10


def recommend_for(
    profile: CustomerProfile,
    related: dict[str, list],
    popular: dict[str, list],
    catalog: dict[str, ProductInfo],
    out_of_stock: set[str],
    settings: RecommendSettings,
) -> list[list]:
    """The top-k ``[[sku, score, reason]]`` for one profile (see the module docstring).

    Example::

        recommend_for(profile, {"SKU-1": [["SKU-2", 3.0]]}, {}, {}, set(), RecommendSettings())
    """
    excluded = set(profile.bought) | out_of_stock
    brands = dict(profile.brand_affinity)
    parts: dict[str, list[float]] = {}  # sku -> [affinity, related]

    def add(sku: str, value: float, slot: int) -> None:
        if sku in excluded:
            return
        info = catalog.get(sku)
        if info is not None and not info.active:
            return
        parts.setdefault(sku, [0.0, 0.0])[slot] += value

    for category, share in profile.category_affinity:
        items = popular.get(category) or []
        if not items:
            continue
        best = items[0][1] or 1.0
        for sku, pop in items:
            info = catalog.get(sku)
            boost = 1.0 + brands.get(info.brand, 0.0) if info else 1.0
            add(sku, settings.affinity_weight * share * (pop / best) * boost, 0)
    seeds = [(sku, 1.0 / (1 + i)) for i, sku in enumerate(profile.last_viewed)]
    seeds += [(sku, 1.0) for sku in profile.bought[:5]]
    for seed, seed_weight in seeds:
        items = related.get(seed) or []
        if not items:
            continue
        best = items[0][1] or 1.0
        for sku, score in items:
            if sku != seed:
                add(sku, settings.related_weight * seed_weight * score / best, 1)
    scored = [
        (sku, round(a + r, 6), "affinity" if a >= r else "related") for sku, (a, r) in parts.items()
    ]
    top = heapq.nsmallest(settings.top_k, scored, key=lambda x: (-x[1], x[0]))
    return [list(item) for item in top]


def recommendation_revision(profile_revision: int, final: bool) -> int:
    """The sinks' tie-breaker of a list: a final list ranks above the first of its profile."""
    return 2 * profile_revision + int(final)


class _RefreshAtWindowCloseFn(beam.DoFn):
    """Streaming: each profile on to the lists now, and once more when its day has closed.

    Input ``(customer_key, profile)``; output ``(profile, final)``. Only the newest profile of a
    customer (by ``(version, revision)``) waits for its refresh, and its state is cleared once
    the refresh is emitted, so state is held only for customers active in the open windows. A
    profile arriving after its day has closed arms a timer that fires at once.

    The refresh fires with the watermark, while the day's last related-list and popularity
    panes may still be in their early-firing groupings (up to one firing interval of wall
    time): it sees every pane before those. A wall-time confirmation (a processing-time timer)
    would close that gap, but a bounded streaming job on Flink (Beam 2.62) holding such timers
    did not finish here within 15 minutes of reading its last record, so it is not used.
    """

    LATEST = ReadModifyWriteStateSpec("latest", PickleCoder())
    CLOSE = TimerSpec("close", TimeDomain.WATERMARK)

    def __init__(self, lateness_ms: int) -> None:
        self._lateness_ms = lateness_ms
        self._refreshed = Metrics.counter(_NAMESPACE, "refreshed_at_window_close")

    def process(
        self,
        element: tuple[str, CustomerProfile],
        latest=beam.DoFn.StateParam(LATEST),
        close=beam.DoFn.TimerParam(CLOSE),
    ) -> Iterator[tuple[CustomerProfile, bool]]:
        _, profile = element
        stored = latest.read()
        if stored is None or (profile.version, profile.revision) > (
            stored.version,
            stored.revision,
        ):
            latest.write(profile)
            closes = (profile.version // DAY_MS + 1) * DAY_MS + self._lateness_ms
            close.set(Timestamp(micros=closes * 1000))
        yield profile, False

    @on_timer(CLOSE)
    def on_close(self, latest=beam.DoFn.StateParam(LATEST)) -> Iterator[tuple]:
        profile = latest.read()
        latest.clear()
        if profile is not None:
            self._refreshed.inc()
            yield profile, True


class _RecommendFn(beam.DoFn):
    def __init__(self, settings: RecommendSettings) -> None:
        self._settings = settings
        self._emitted = Metrics.counter(_NAMESPACE, "customers")
        self._empty = Metrics.counter(_NAMESPACE, "customers_without_candidates")

    def process(
        self,
        element: tuple[CustomerProfile, bool],
        related: dict,
        popular: dict,
        catalog: dict,
        out_of_stock: list,
    ) -> Iterator[CustomerRecommendations]:
        profile, final = element
        items = recommend_for(profile, related, popular, catalog, set(out_of_stock), self._settings)
        if not items:
            self._empty.inc()
        self._emitted.inc()
        yield CustomerRecommendations(
            customer_key=profile.customer_key,
            items=items,
            as_of_ms=profile.as_of_ms,
            version=profile.version,
            revision=recommendation_revision(profile.revision, final),
        )


def _both_ends(edge: CoPurchaseEdge) -> Iterator[tuple[str, tuple]]:
    yield edge.a, (edge.b, edge.kind, edge.weight, edge.as_of_ms, edge.version, edge.total)
    yield edge.b, (edge.a, edge.kind, edge.weight, edge.as_of_ms, edge.version, edge.total)


def _related_row(element: tuple[str, tuple[list, int, int, int]]) -> RelatedProducts:
    sku, (items, as_of, version, evidence) = element
    return RelatedProducts(sku=sku, items=items, as_of_ms=as_of, version=version, evidence=evidence)


class RecommendResult(NamedTuple):
    """Outputs of ``Recommend``."""

    related: beam.PCollection
    customers: beam.PCollection
    popular: beam.PCollection


class Recommend(beam.PTransform):
    """``{"profiles", "edges", "events", "catalog"[, "out_of_stock"]}`` -> recommendations.

    Args:
        windowing: mode and triggers (global window; streaming fires early panes).
        settings: top-k, half-life, weights.

    Returns:
        ``RecommendResult(related, customers, popular)``.
    """

    def __init__(
        self,
        windowing: WindowingOptions,
        settings: RecommendSettings = RecommendSettings(),
        label: str | None = None,
    ) -> None:
        super().__init__(label)
        self._windowing = windowing
        self._settings = settings

    def expand(self, inputs: dict[str, beam.PCollection]) -> RecommendResult:
        s, opts = self._settings, self._windowing
        related = (
            inputs["edges"]
            # Keys carry str hints everywhere: Prism only groups by standard-coder keys.
            | "BothEnds" >> beam.FlatMap(_both_ends).with_output_types(tuple[str, tuple])
            | "EdgesGlobal" >> window_into(opts)
            | "TopNeighbours" >> beam.CombinePerKey(NeighboursCombineFn(s))
            | "ToRelatedRows" >> beam.Map(_related_row).with_output_types(RelatedProducts)
        )
        catalog = inputs["catalog"]
        popular = (
            inputs["events"]
            | "PopularityPoints" >> beam.FlatMap(_popularity).with_output_types(tuple[str, int])
            | "PopularityGlobal" >> window_into(opts)
            | "PopularityPerSku" >> beam.CombinePerKey(sum)
            | "ByCategory"
            >> beam.FlatMap(
                lambda kv, cat: (
                    [(cat[kv[0]].category, (kv[0], float(kv[1])))] if kv[0] in cat else []
                ),
                cat=beam.pvalue.AsDict(catalog),
            ).with_output_types(tuple[str, tuple[str, float]])
            | "TopPerCategory" >> beam.CombinePerKey(TopPerKeyCombineFn(s.popular_per_category))
        )
        # Without stock information the set is a constant, not an empty side input: a runner
        # that waits for side input data before processing (Flink, in the global window) would
        # hold every profile of an open-ended run back until the end of time.
        out_of_stock = inputs.get("out_of_stock")
        stock_view = beam.pvalue.AsList(out_of_stock) if out_of_stock is not None else []
        if opts.streaming:
            profiles = (
                inputs["profiles"]
                | "ByCustomer"
                >> beam.Map(lambda p: (p.customer_key, p)).with_output_types(
                    tuple[str, CustomerProfile]
                )
                | "RefreshAtWindowClose" >> beam.ParDo(_RefreshAtWindowCloseFn(opts.lateness_ms))
            )
        else:
            profiles = inputs["profiles"] | "FinalLists" >> beam.Map(lambda p: (p, True))
        customers = profiles | "RecommendPerCustomer" >> beam.ParDo(
            _RecommendFn(s),
            related=beam.pvalue.AsDict(
                related | "RelatedItems" >> beam.Map(lambda r: (r.sku, r.items))
            ),
            popular=beam.pvalue.AsDict(popular),
            catalog=beam.pvalue.AsDict(catalog),
            out_of_stock=stock_view,
        ).with_output_types(CustomerRecommendations)
        return RecommendResult(related=related, customers=customers, popular=popular)
