"""Profiles: the CombineFn is order-independent, decay is consistent, RFM and keys behave."""

import itertools
import math
import random

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from hypothesis import given, settings
from hypothesis import strategies as st

from retail_backbone.testing import make_event
from retail_backbone.transforms.inventory.windowing import WindowingOptions
from retail_backbone.transforms.personalization.profiles import (
    DAY_MS,
    BuildCustomerProfiles,
    ExtractCatalog,
    ProfileCombineFn,
    ProfileSettings,
    customer_key,
    decayed,
    enrich,
    merge_intervals,
    rfm_scores,
    segment_of,
)
from retail_backbone.transforms.personalization.types import ProductInfo

T0 = 1_764_000_000_000
SKUS = [f"SKU-{i:03d}" for i in range(8)]

_times = st.integers(min_value=T0, max_value=T0 + 40 * DAY_MS)
_sku = st.sampled_from(SKUS)
_contribution = st.one_of(
    st.tuples(st.just("view"), _times, _sku, st.sampled_from(["WEB", "MOBILE"])),
    st.tuples(st.just("cart"), _times, _sku, st.integers(-2, 3), st.just("WEB")),
    st.tuples(
        st.just("order"),
        _times,
        st.uuids().map(str),
        st.integers(1, 100_000),
        st.lists(st.tuples(_sku, st.integers(1, 4)), min_size=1, max_size=3).map(tuple),
        st.sampled_from(["WEB", "STORE"]),
        st.sampled_from([None, "STORE-1", "STORE-2"]),
    ),
    st.tuples(st.just("return"), _times, _sku, st.integers(1, 2), st.integers(1, 5_000)),
    st.tuples(
        st.just("customer"),
        _times,
        st.uuids().map(str),
        st.tuples(st.emails(), st.none(), st.none(), st.just("family"), st.just("STORE-9")),
    ),
    st.builds(
        lambda start, minutes: ("session", start, start + minutes * 60_000),
        _times,
        st.integers(30, 300),
    ),
)


def _fold(fn, contributions, rng):
    """Fold in a random order, over random partitions merged in a random tree."""
    items = list(contributions)
    rng.shuffle(items)
    cuts = sorted(rng.sample(range(len(items) + 1), k=min(3, len(items) + 1)))
    parts = [items[a:b] for a, b in zip([0, *cuts], [*cuts, len(items)], strict=True)]
    accs = []
    for part in parts:
        acc = fn.create_accumulator()
        for c in part:
            acc = fn.add_input(acc, c)
        accs.append(acc)
    while len(accs) > 1:
        rng.shuffle(accs)
        accs = [fn.merge_accumulators(accs[:2]), *accs[2:]]
    return fn.extract_output(fn.compact(accs[0]))


@settings(max_examples=150, deadline=None)
@given(st.lists(_contribution, min_size=1, max_size=40), st.integers(0, 2**32))
def test_profile_merge_is_order_independent_and_exact(contributions, seed):
    fn = ProfileCombineFn(ProfileSettings(half_life_days=3, last_n=3, as_of_ms=T0 + 41 * DAY_MS))
    first = _fold(fn, contributions, random.Random(seed))
    second = _fold(fn, contributions, random.Random(seed + 1))
    # Exactly equal, floats included (fsum over integer bucket weights), not merely close.
    assert first == second
    orders = [c for c in contributions if c[0] == "order"]
    assert first.orders == len(orders)
    assert first.order_cents == sum(c[3] for c in orders)
    assert first.events == len(contributions)
    assert len(first.last_viewed) <= 3


@settings(max_examples=100, deadline=None)
@given(
    st.floats(0.1, 1000),
    st.floats(0, 100 * DAY_MS),
    st.floats(0, 100 * DAY_MS),
    st.floats(0.5, 60),
)
def test_decay_is_consistent(weight, a, b, half_life_days):
    h = half_life_days * DAY_MS
    # Decaying in two steps equals decaying once; a half-life halves.
    assert math.isclose(decayed(decayed(weight, a, h), b, h), decayed(weight, a + b, h))
    assert math.isclose(decayed(weight, h, h), weight / 2)
    assert decayed(weight, -5, h) == weight  # the future is not amplified


def test_moving_the_reference_time_scales_every_score_alike():
    contributions = [
        ("view", T0, "SKU-001", "WEB"),
        ("view", T0 + 2 * DAY_MS, "SKU-002", "WEB"),
        ("order", T0 + 3 * DAY_MS, "o1", 1000, (("SKU-003", 1),), "WEB", None),
    ]
    out = {}
    for shift in (0, 7):
        fn = ProfileCombineFn(
            ProfileSettings(half_life_days=7, as_of_ms=T0 + (10 + shift) * DAY_MS)
        )
        out[shift] = dict(_fold(fn, contributions, random.Random(1)).sku_scores)
    for sku, score in out[0].items():
        assert math.isclose(out[7][sku], score / 2)  # one half-life later: half
    # An order (weight 10) three days old beats a view (weight 1) one day newer.
    assert max(out[0], key=out[0].get) == "SKU-003"


def test_last_viewed_is_by_event_time_not_arrival():
    fn = ProfileCombineFn(ProfileSettings(last_n=2))
    acc = fn.create_accumulator()
    for t, sku in ((T0 + 3, "C"), (T0 + 1, "A"), (T0 + 2, "B"), (T0 + 0, "C")):
        acc = fn.add_input(acc, ("view", t, sku, "WEB"))
    assert fn.extract_output(acc).last_viewed == ["C", "B"]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 100), st.integers(1, 30)), max_size=15))
def test_merge_intervals_is_the_union(spans):
    intervals = [(s, s + n) for s, n in spans]
    merged = merge_intervals(intervals)
    covered = {x for s, e in intervals for x in range(s, e)}
    assert {x for s, e in merged for x in range(s, e)} == covered
    assert merge_intervals(reversed(intervals)) == merged
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(merged))


@pytest.mark.parametrize(
    ("recency", "frequency", "monetary", "scores", "segment"),
    [
        (None, 0, 0.0, (0, 0, 0), "prospect"),
        (3.0, 12, 2500.0, (5, 5, 5), "champion"),
        (2.0, 1, 40.0, (5, 1, 1), "new"),
        (60.0, 3, 600.0, (3, 3, 3), "loyal"),
        (200.0, 4, 150.0, (1, 3, 2), "at_risk"),
        (120.0, 1, 10.0, (2, 1, 1), "hibernating"),
        (20.0, 2, 100.0, (4, 2, 2), "promising"),
    ],
)
def test_rfm_scores_and_segments(recency, frequency, monetary, scores, segment):
    assert rfm_scores(recency, frequency, monetary) == scores
    assert segment_of(scores[0], scores[1]) == segment


def test_customer_key_is_a_keyed_hash():
    k = customer_key("CUST-0000001", b"key-1")
    assert k == customer_key("CUST-0000001", b"key-1")
    assert k != customer_key("CUST-0000001", b"key-2")
    assert k != customer_key("CUST-0000002", b"key-1")
    assert len(k) == 32 and int(k, 16) >= 0 and "CUST" not in k


def test_enrich_turns_sku_scores_into_shares_and_keeps_pii_in_the_profile_only():
    fn = ProfileCombineFn(ProfileSettings(as_of_ms=T0 + DAY_MS))
    acc = fn.create_accumulator()
    for c in (
        ("view", T0, "S1", "WEB"),
        ("view", T0, "S2", "WEB"),
        ("order", T0, "o1", 2500, (("S1", 1),), "STORE", "STORE-3"),
        ("return", T0 + 1, "S1", 1, 2500),
        ("customer", T0, "e1", ("a@example.com", "+1", "1 Main St", "family", "STORE-9")),
    ):
        acc = fn.add_input(acc, c)
    catalog = {
        "S1": ProductInfo("S1", "Home/Kitchen", "Home", "Acme", True, 1),
        "S2": ProductInfo("S2", "Toys/Puzzles", "Toys", "Zed", True, 1),
    }
    profile = enrich(fn.extract_output(acc)._replace(customer_id="CUST-1"), catalog, b"k")
    assert profile.customer_key == customer_key("CUST-1", b"k")
    assert [c for c, _ in profile.category_affinity] == ["Home/Kitchen", "Toys/Puzzles"]
    assert math.isclose(sum(s for _, s in profile.category_affinity), 1.0, abs_tol=1e-5)
    assert profile.brand_affinity[0][0] == "Acme"
    assert (profile.frequency, profile.monetary, profile.aov) == (1, 25.0, 25.0)
    assert (profile.ltv, profile.return_rate) == (0.0, 1.0)
    assert profile.recency_days == 1.0 and profile.segment == "new"
    assert profile.preferred_channel == "WEB" and profile.preferred_store == "STORE-3"
    assert profile.email == "a@example.com"


def _events():
    e = []
    e.append(
        make_event(
            "product_upserted",
            event_time_ms=T0 - 1000,
            payload={"sku": "S1", "brand": "Acme", "categories": ["Home", "Kitchen"]},
        )
    )
    for i, t in enumerate((T0, T0 + 60_000, T0 + 3 * 3_600_000)):
        e.append(
            make_event(
                "product_viewed",
                event_id=f"v{i}",
                event_time_ms=t,
                payload={"customer_id": "C1", "sku": "S1", "session_id": "s", "channel": "WEB"},
            )
        )
    e.append(
        make_event(
            "product_viewed",
            event_time_ms=T0,
            payload={"customer_id": None, "sku": "S1", "session_id": "anon", "channel": "WEB"},
        )
    )
    e.append(make_event("order_placed", event_id="bad", event_time_ms=T0, payload={"lines": []}))
    e.append(make_event("price_changed", event_time_ms=T0, payload={"sku": "S1"}))
    return e


def test_batch_profiles_sessions_and_dead_letters_in_a_pipeline():
    opts = WindowingOptions("batch")
    with TestPipeline() as p:
        events = p | beam.Create(_events())
        catalog = events | "Catalog" >> ExtractCatalog(opts)
        result = events | BuildCustomerProfiles(opts, catalog=catalog, hash_key="k")

        def check_profiles(profiles):
            assert len(profiles) == 1
            (profile,) = profiles
            assert profile.customer_id == "C1"
            assert profile.sessions == 2  # 3 h apart: two sessions (30 min gap)
            assert profile.mean_session_seconds == 30.0  # (60 s + 0 s) / 2
            assert profile.category_affinity == [["Home/Kitchen", 1.0]]
            assert profile.last_viewed == ["S1"]

        def check_dead(letters):
            assert [(d.event_id, d.error_class) for d in letters] == [("bad", "invalid_event")]

        assert_that(result.profiles, check_profiles, label="Profiles")
        assert_that(result.dead_letters, check_dead, label="Dead")
