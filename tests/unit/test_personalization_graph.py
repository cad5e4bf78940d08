"""Product graph and recommendations: canonical pairs, idempotent folds, exact top-k, exclusions."""

import heapq
import random

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from retail_backbone.testing import customer_profile, make_event
from retail_backbone.transforms.inventory.windowing import WindowingOptions
from retail_backbone.transforms.personalization.copurchase import (
    BuildCoPurchaseGraph,
    EdgeCombineFn,
    canonical_pairs,
    edge_weight,
)
from retail_backbone.transforms.personalization.recommend import (
    NeighboursCombineFn,
    RecommendSettings,
    TopPerKeyCombineFn,
    recommend_for,
)
from retail_backbone.transforms.personalization.types import (
    BOUGHT_WITH,
    VIEWED_WITH,
    PairDay,
    ProductInfo,
)

T0 = 1_764_000_000_000  # 2025-11-24T16:00Z
DAY = 86_400_000
_skus = st.lists(st.sampled_from([f"S{i}" for i in range(12)]), max_size=15)


@settings(max_examples=200, deadline=None)
@given(_skus, st.randoms(use_true_random=False))
def test_pairs_are_canonical_whatever_the_order(skus, rng):
    pairs = canonical_pairs(skus)
    shuffled = list(skus)
    rng.shuffle(shuffled)
    assert canonical_pairs(shuffled) == pairs
    assert all(a < b for a, b in pairs)
    n = len(set(skus))
    assert len(pairs) == len(set(pairs)) == n * (n - 1) // 2
    assert canonical_pairs([*skus, *reversed(skus)]) == pairs


def test_pairs_are_capped_per_order():
    assert len(canonical_pairs([f"S{i:03d}" for i in range(100)], max_items=10)) == 45


def _pd(day, count, last=0):
    return PairDay(BOUGHT_WITH, "A", "B", day, count, last or T0)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["2025-11-20", "2025-11-22", "2025-11-24"]), st.integers(1, 9)),
        min_size=1,
        max_size=12,
    ),
    st.randoms(use_true_random=False),
)
def test_edges_fold_idempotently_in_any_order(pair_days, rng):
    fn = EdgeCombineFn(half_life_days=2)
    rows = [_pd(d, n, T0 + n) for d, n in pair_days]

    def fold(items):
        accs = []
        for chunk in (items[: len(items) // 2], items[len(items) // 2 :]):
            acc = fn.create_accumulator()
            for r in chunk:
                acc = fn.add_input(acc, r)
            accs.append(acc)
        return fn.extract_output(fn.merge_accumulators(accs))

    shuffled = list(rows)
    rng.shuffle(shuffled)
    edge = fold(rows)
    # Re-sent panes (duplicates) change nothing; order changes nothing.
    assert fold(shuffled) == edge == fold(rows + rows)
    best = {}
    for d, n in pair_days:
        best[d] = max(best.get(d, 0), n)
    assert edge.days == sorted(best) and edge.counts == [best[d] for d in sorted(best)]
    assert edge.total == sum(best.values()) and edge.window == max(best)


def test_edge_weight_decays_per_day_to_the_latest_day():
    weight, as_of = edge_weight({"2025-11-23": 4, "2025-11-24": 1}, half_life_days=1)
    assert weight == 3.0  # 4 halved once + 1
    assert as_of == edge_weight({"2025-11-24": 7}, 5)[1]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("abcdefghij"), st.integers(0, 50)), max_size=40),
    st.integers(1, 5),
)
def test_top_per_key_is_exact_under_any_partitioning(items, n):
    fn = TopPerKeyCombineFn(n)
    rng = random.Random(len(items))
    accs = [fn.create_accumulator() for _ in range(3)]
    for item in items:
        i = rng.randrange(3)
        accs[i] = fn.compact(fn.add_input(accs[i], item))
    got = fn.extract_output(fn.merge_accumulators(accs))
    best = {}
    for name, score in items:
        best[name] = max(best.get(name, -1), score)
    expected = heapq.nsmallest(n, best.items(), key=lambda kv: (-kv[1], kv[0]))
    assert got == [[k, v] for k, v in expected]


def test_neighbours_rank_by_weight_decayed_to_a_common_time_newest_edge_version_wins():
    fn = NeighboursCombineFn(RecommendSettings(top_k=2, half_life_days=1, bought_weight=3))
    acc = fn.create_accumulator()
    for item in (
        ("X", VIEWED_WITH, 8.0, T0 - 2 * DAY, 1, 8),  # two days older: 8 -> 2
        ("Y", VIEWED_WITH, 2.0, T0, 1, 2),
        ("Y", VIEWED_WITH, 3.0, T0, 1, 3),  # same version, more evidence (late data): wins
        ("Z", BOUGHT_WITH, 1.0, T0, 1, 1),  # x3 -> 3
        ("Z", BOUGHT_WITH, 0.5, T0, 0, 5),  # an older version of the same edge: ignored
    ):
        acc = fn.add_input(acc, item)
    items, as_of, version, evidence = fn.extract_output(acc)
    assert items == [["Y", 3.0], ["Z", 3.0]] and as_of == T0 and version == 1
    assert evidence == 8 + 3 + 1  # totals of the kept edges, not only the top k


def _profile(**kw):
    return customer_profile(**{"as_of_ms": T0, "version": T0, **kw})


def test_recommendations_exclude_bought_out_of_stock_and_inactive_products():
    catalog = {
        s: ProductInfo(s, "Home/Kitchen", "Home", "Acme", s != "P4", 1)
        for s in ("P1", "P2", "P3", "P4", "P5")
    }
    popular = {"Home/Kitchen": [["P1", 10.0], ["P2", 8.0], ["P3", 5.0], ["P4", 4.0], ["P5", 1.0]]}
    related = {"V1": [["P5", 2.0], ["P2", 1.0]]}
    profile = _profile(
        category_affinity=[["Home/Kitchen", 1.0]],
        brand_affinity=[["Acme", 1.0]],
        last_viewed=["V1"],
        bought=["P1"],
    )
    items = recommend_for(profile, related, popular, catalog, {"P3"}, RecommendSettings(top_k=10))
    skus = [s for s, _, _ in items]
    assert "P1" not in skus and "P3" not in skus and "P4" not in skus  # bought, stock, inactive
    assert skus[0] == "P2"  # popular in the favourite category and related to a viewed item
    assert dict((s, r) for s, _, r in items)["P5"] == "related"
    assert [x[1] for x in items] == sorted((x[1] for x in items), reverse=True)


def test_graph_counts_distinct_orders_and_sessions_per_day():
    def order(i, skus, t=T0):
        lines = [{"sku": s, "quantity": 1} for s in skus]
        return make_event(
            "order_placed",
            event_id=f"o{i}",
            event_time_ms=t,
            payload={"order_id": f"o{i}", "lines": lines},
        )

    def view(i, session, sku, t=T0):
        return make_event(
            "product_viewed",
            event_id=f"v{i}",
            event_time_ms=t,
            payload={"sku": sku, "session_id": session, "customer_id": None},
        )

    events = [
        order(1, ["B", "A"]),
        order(2, ["A", "B", "C"]),
        order(3, ["A", "B"], T0 + DAY),
        view(1, "s1", "A"),
        view(2, "s1", "B"),
        view(3, "s1", "A"),
        view(4, "s2", "B"),
        view(5, "s2", "A"),
        make_event("order_placed", event_id="bad", event_time_ms=T0, payload={}),
    ]
    with TestPipeline() as p:
        graph = (
            p
            | beam.Create(events)
            | BuildCoPurchaseGraph(WindowingOptions("batch"), half_life_days=1)
        )

        def check(edges):
            got = {(e.kind, e.a, e.b): (e.days, e.counts, e.weight) for e in edges}
            assert got == {
                (BOUGHT_WITH, "A", "B"): (["2025-11-24", "2025-11-25"], [2, 1], 2.0),
                (BOUGHT_WITH, "A", "C"): (["2025-11-24"], [1], 1.0),
                (BOUGHT_WITH, "B", "C"): (["2025-11-24"], [1], 1.0),
                (VIEWED_WITH, "A", "B"): (["2025-11-24"], [2], 2.0),
            }

        assert_that(graph.edges, check)
        assert_that(
            graph.dead_letters | beam.Map(lambda d: (d.event_id, d.error_class)),
            equal_to([("bad", "invalid_event")]),
            label="Dead",
        )
