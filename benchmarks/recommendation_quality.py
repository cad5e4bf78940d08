"""Offline evaluation of the recommender: train on days 1..n-1, predict what customers buy on day n.

Usage::

    .venv/bin/python benchmarks/recommendation_quality.py                  # 7 days, 60k events/day
    .venv/bin/python benchmarks/recommendation_quality.py --days 5 --events-per-day 20000 --json

What runs: generated traffic (the generator's customers have latent category and brand
preferences that drive what they view and buy; the events never carry them). The personalization
transforms (``ExtractCatalog``, ``BuildCustomerProfiles``, ``BuildCoPurchaseGraph``,
``Recommend``; batch mode, DirectRunner) see only days 1..n-1, with ``as_of`` = the start of day
n. Ground truth: for every customer with a training profile, the skus they order on day n
(and, as a second, denser target, the skus they view on day n).

Compared in the same run, with the same exclusion of products the customer already bought:

- ``personalized``: our ``Recommend`` top 10;
- ``most popular``: the 10 most ordered products of days 1..n-1 (most viewed as tie-break);
- ``random``: 10 products drawn uniformly from the catalog (seeded).

Metrics at k = 10: hit rate (share of customers with at least one relevant sku in the list) and
NDCG (binary relevance; ideal DCG over min(#relevant, 10) positions).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import random
import sys
import time
from collections import Counter, defaultdict

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from retail_backbone.generator import GeneratorConfig, generate_events
from retail_backbone.io.dead_letters import Origin
from retail_backbone.io.events import event_from_record
from retail_backbone.testing import collect
from retail_backbone.transforms.inventory.windowing import WindowingOptions
from retail_backbone.transforms.personalization import (
    BuildCoPurchaseGraph,
    BuildCustomerProfiles,
    ExtractCatalog,
    ProfileSettings,
    Recommend,
    RecommendSettings,
)

DAY_MS = 86_400_000
K = 10
TYPES = {
    "product_viewed",
    "cart_updated",
    "order_placed",
    "return_processed",
    "customer_upserted",
    "product_upserted",
}
HASH_KEY = "offline-evaluation"


def _metrics(ranked: list[str], relevant: set[str]) -> tuple[float, float]:
    hits = [1.0 if sku in relevant else 0.0 for sku in ranked[:K]]
    dcg = sum(h / math.log2(i + 2) for i, h in enumerate(hits))
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), K)))
    return (1.0 if any(hits) else 0.0), (dcg / ideal if ideal else 0.0)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=7, help="days generated; the last is day n")
    parser.add_argument("--events-per-day", type=int, default=60_000)
    parser.add_argument("--customers", type=int, default=3_000)
    parser.add_argument("--products", type=int, default=600)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    cfg = GeneratorConfig(
        seed=args.seed,
        days=args.days,
        n_products=args.products,
        n_customers=args.customers,
        n_locations=20,
        events_per_day=args.events_per_day,
    )
    test_start = cfg.start_ms + (args.days - 1) * DAY_MS
    train, bought_on_test, viewed_on_test = [], defaultdict(set), defaultdict(set)
    far_future = 2**50
    for record in generate_events(cfg):
        env = record["envelope"]
        if env["event_type"] not in TYPES:
            continue
        event = event_from_record(record, Origin("INTERNAL"), now_ms=far_future)
        if event.event_time_ms < test_start:
            train.append(event)
        elif event.event_type == "order_placed":
            bought_on_test[record["customer_id"]].update(ln["sku"] for ln in record["lines"])
        elif event.event_type == "product_viewed" and record.get("customer_id"):
            viewed_on_test[record["customer_id"]].add(record["sku"])

    opts = WindowingOptions("batch")

    def build(p):
        events = p | "Train" >> beam.Create(train)
        catalog = events | "ExtractCatalog" >> ExtractCatalog(opts)
        profiles = events | "BuildCustomerProfiles" >> BuildCustomerProfiles(
            opts,
            catalog=catalog,
            hash_key=HASH_KEY,
            settings=ProfileSettings(as_of_ms=test_start),
        )
        graph = events | "BuildCoPurchaseGraph" >> BuildCoPurchaseGraph(opts)
        recs = {
            "profiles": profiles.profiles,
            "edges": graph.edges,
            "events": events,
            "catalog": catalog,
        } | "Recommend" >> Recommend(opts, RecommendSettings(top_k=K))
        return {
            "profiles": profiles.profiles
            | beam.Map(lambda pr: (pr.customer_key, pr.customer_id, pr.bought)),
            "recs": recs.customers | beam.Map(lambda r: (r.customer_key, [i[0] for i in r.items])),
            "catalog": catalog | beam.Keys(),
        }

    started = time.perf_counter()
    out = collect(build, PipelineOptions(["--runner=DirectRunner"]))
    beam_s = time.perf_counter() - started

    id_of = {key: (cid, set(bought)) for key, cid, bought in out["profiles"]}
    recs = {id_of[key][0]: items for key, items in out["recs"]}
    bought_before = {cid: bought for cid, bought in id_of.values()}
    catalog = sorted(out["catalog"])
    orders, views = Counter(), Counter()
    for e in train:
        if e.event_type == "order_placed":
            orders.update(line["sku"] for line in e.payload["lines"])
        elif e.event_type == "product_viewed":
            views[e.payload["sku"]] += 1
    popular = sorted(catalog, key=lambda s: (-orders[s], -views[s], s))
    rng = random.Random(args.seed)

    def popular_for(cid: str) -> list[str]:
        seen = bought_before.get(cid, set())
        return [s for s in popular if s not in seen][:K]

    def random_for(cid: str) -> list[str]:
        seen = bought_before.get(cid, set())
        pool = [s for s in catalog if s not in seen]
        return rng.sample(pool, min(K, len(pool)))

    methods = {
        "personalized": lambda cid: recs.get(cid, []),
        "most popular": popular_for,
        "random": random_for,
    }
    report: dict = {
        "config": {
            **{k: str(v) for k, v in dataclasses.asdict(cfg).items() if k != "weekly_pattern"},
            "train_events": len(train),
        },
        "beam_seconds": round(beam_s, 1),
        "targets": {},
    }
    for target, truth in (("orders on day n", bought_on_test), ("views on day n", viewed_on_test)):
        customers = sorted(c for c in truth if c in bought_before)
        rows = {}
        for name, method in methods.items():
            hr = nd = 0.0
            for cid in customers:
                h, n = _metrics(method(cid), truth[cid])
                hr, nd = hr + h, nd + n
            rows[name] = {
                "hit_rate@10": round(hr / len(customers), 4),
                "ndcg@10": round(nd / len(customers), 4),
            }
        report["targets"][target] = {"customers": len(customers), "methods": rows}

    if args.json:
        print(json.dumps(report, indent=2))
        return report
    day_n = dt.date.fromisoformat(str(cfg.start)) + dt.timedelta(days=args.days - 1)
    print(
        f"recommendation quality: train {cfg.start} .. {day_n - dt.timedelta(days=1)} "
        f"({len(train):,} events, Beam {beam_s:.0f}s), predict {day_n}; "
        f"{args.customers:,} customers, {args.products:,} products"
    )
    for target, data in report["targets"].items():
        print(f"\n{target} ({data['customers']:,} customers with a training profile)")
        print(f"  {'method':<14}{'hit rate@10':>12}{'NDCG@10':>10}")
        for name, m in data["methods"].items():
            print(f"  {name:<14}{m['hit_rate@10']:>12.3f}{m['ndcg@10']:>10.3f}")
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
