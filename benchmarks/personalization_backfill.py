"""Personalization backfill: events -> profiles, graph and recommendations, next to DuckDB.

Usage::

    .venv/bin/python benchmarks/personalization_backfill.py                   # 200k events
    .venv/bin/python benchmarks/personalization_backfill.py --events 1000000  # the issue's size
    .venv/bin/python benchmarks/personalization_backfill.py --json

What is measured, over the same Parquet files (the generator's Parquet sink, cached under
``--cache``), each engine in its own child process (so each peak RSS is its own):

- ``beam``: the job's business part in batch on the DirectRunner: ``ReadEventFiles`` ->
  ``DeduplicateEvents`` -> ``ExtractCatalog`` -> ``BuildCustomerProfiles`` ->
  ``BuildCoPurchaseGraph`` -> ``Recommend`` (sinks left out: they are measured by their own
  tests), the profiles written to one JSON-lines file.
- ``duckdb``: the same profile aggregates in SQL over the same files, single-threaded: orders,
  order value, units, returns and refunds, last order, sessions (30 min gap, by a window
  function) and their mean duration, per customer.

The two are compared customer by customer on orders, order value, returned units and session
count (a benchmark that computes the wrong thing is not a benchmark). DuckDB does much less:
no decayed affinities, no graph, no recommendations, no dedup. The figure to watch is the
Beam events/s against the issue's target of 20k events/s.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

TYPES = (
    "product_viewed",
    "cart_updated",
    "order_placed",
    "return_processed",
    "customer_upserted",
    "product_upserted",
)

DUCKDB_PROFILES = """
WITH orders AS (
    SELECT customer_id, count(*) AS orders, sum(total) AS monetary,
           max(epoch_ms(envelope.event_time)) AS last_order_ms
    FROM read_parquet('{root}/order_placed/*/*.parquet') GROUP BY customer_id
), returns AS (
    SELECT customer_id, sum(quantity) AS returned_units, sum(refund_amount) AS refunds
    FROM read_parquet('{root}/return_processed/*/*.parquet') GROUP BY customer_id
), activity AS (
    SELECT customer_id, epoch_ms(envelope.event_time) AS t
    FROM read_parquet('{root}/product_viewed/*/*.parquet') WHERE customer_id IS NOT NULL
    UNION ALL
    SELECT customer_id, epoch_ms(envelope.event_time)
    FROM read_parquet('{root}/cart_updated/*/*.parquet') WHERE customer_id IS NOT NULL
    UNION ALL
    SELECT customer_id, epoch_ms(envelope.event_time)
    FROM read_parquet('{root}/order_placed/*/*.parquet')
), marked AS (
    SELECT customer_id, t,
           CASE WHEN t - lag(t) OVER (PARTITION BY customer_id ORDER BY t) < {gap_ms}
                THEN 0 ELSE 1 END AS starts
    FROM activity
), numbered AS (
    SELECT customer_id, t,
           sum(starts) OVER (PARTITION BY customer_id ORDER BY t ROWS UNBOUNDED PRECEDING) AS s
    FROM marked
), sessions AS (
    SELECT customer_id, count(*) AS sessions, avg(d) / 1000.0 AS mean_session_seconds
    FROM (SELECT customer_id, s, max(t) - min(t) AS d FROM numbered GROUP BY customer_id, s)
    GROUP BY customer_id
)
SELECT s.customer_id, coalesce(o.orders, 0), coalesce(o.monetary, 0),
       coalesce(r.returned_units, 0), s.sessions, s.mean_session_seconds
FROM sessions s LEFT JOIN orders o USING (customer_id) LEFT JOIN returns r USING (customer_id)
"""


def _prepare(n_events: int, cache: Path, seed: int) -> tuple[Path, int]:
    from retail_backbone.generator import GeneratorConfig, generate_events, write_files

    root = cache / f"personalization-{n_events}-seed{seed}"
    marker = root / "_COUNT"
    if marker.exists():
        return root, int(marker.read_text())
    days = 7
    cfg = GeneratorConfig(
        seed=seed,
        days=days,
        n_products=2_000,
        n_customers=max(2_000, n_events // 50),
        events_per_day=int(n_events / days / 0.99),
    )
    t0 = time.perf_counter()
    kept = (e for e in generate_events(cfg) if e["envelope"]["event_type"] in TYPES)
    summary = write_files(kept, root, "parquet")
    count = summary.events
    marker.write_text(str(count))
    print(f"generated {count:,} events in {time.perf_counter() - t0:.0f} s -> {root}")
    return root, count


def _direct_args(workers: int) -> list[str]:
    """The direct runner in this process, or with ``workers`` SDK worker processes."""
    if workers <= 1:
        return ["--runner=DirectRunner"]
    return [
        "--runner=DirectRunner",
        f"--direct_num_workers={workers}",
        "--direct_running_mode=multi_processing",
    ]


def _beam(root: Path, out: Path, workers: int) -> dict:
    import apache_beam as beam

    from retail_backbone.pipelines import personalization as job

    opts = job.PersonalizationOptions(
        [*_direct_args(workers), "--mode=batch", f"--input={root}", "--pii_hash_key=benchmark-key"]
    )
    t0 = time.perf_counter()
    p = beam.Pipeline(options=opts)
    events, _ = job._read_events(p, opts)
    t = job.build_transforms(events, opts)
    _ = (
        t["profiles"]
        | beam.Map(
            lambda pr: json.dumps(
                [pr.customer_id, pr.frequency, pr.monetary, pr.sessions, pr.mean_session_seconds]
            )
        )
        | beam.io.WriteToText(str(out / "profiles"), shard_name_template="")
    )
    for name in ("edges", "related", "recommendations"):
        _ = (
            t[name]
            | f"Count{name}" >> beam.combiners.Count.Globally()
            | f"Write{name}" >> beam.io.WriteToText(str(out / name), shard_name_template="")
        )
    p.run().wait_until_finish()
    return {"seconds": time.perf_counter() - t0}


def _duckdb(root: Path, out: Path, workers: int) -> dict:
    import duckdb

    t0 = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET threads TO 1")
    rows = con.execute(DUCKDB_PROFILES.format(root=root, gap_ms=30 * 60_000)).fetchall()
    seconds = time.perf_counter() - t0
    with open(out / "duckdb_profiles", "w") as fh:
        for cid, orders, monetary, returned, sessions, mean_s in rows:
            fh.write(json.dumps([cid, orders, float(monetary), int(returned), sessions, mean_s]))
            fh.write("\n")
    return {"seconds": seconds}


def _child(stage: str, root: Path, out: Path, workers: int = 1) -> dict:
    cmd = [sys.executable, __file__, "--stage", stage, "--root", str(root), "--out", str(out)]
    cmd += ["--workers", str(workers)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache/retail-backbone/bench")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="Beam direct-runner SDK worker processes (>1: multi_processing mode)",
    )
    parser.add_argument("--stage", choices=("beam", "duckdb"), help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        result = (_beam if args.stage == "beam" else _duckdb)(args.root, args.out, args.workers)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        # With --workers > 1 the SDK workers are child processes: the largest one's peak.
        result["worker_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(json.dumps(result))
        return

    root, n = _prepare(args.events, args.cache, args.seed)
    out = args.cache / f"personalization-out-{args.events}"
    out.mkdir(parents=True, exist_ok=True)
    duck = _child("duckdb", root, out)
    beam_run = _child("beam", root, out, args.workers)

    beam_rows = {}
    for line in (out / "profiles").read_text().splitlines():
        cid, orders, monetary, sessions, _ = json.loads(line)
        beam_rows[cid] = (orders, round(monetary, 2), sessions)
    duck_rows = {}
    for line in (out / "duckdb_profiles").read_text().splitlines():
        cid, orders, monetary, _returned, sessions, _ = json.loads(line)
        duck_rows[cid] = (orders, round(monetary, 2), sessions)
    compared = [c for c in duck_rows if c in beam_rows]
    mismatched = [c for c in compared if beam_rows[c] != duck_rows[c]]
    report = {
        "events": n,
        "beam": {**beam_run, "events_per_s": n / beam_run["seconds"]},
        "duckdb": {**duck, "events_per_s": n / duck["seconds"]},
        "customers_compared": len(compared),
        "mismatched": len(mismatched),
        "mismatch_examples": [(c, beam_rows[c], duck_rows[c]) for c in mismatched[:3]],
        "counts": {
            name: int((out / name).read_text().strip() or 0)
            for name in ("edges", "related", "recommendations")
        },
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"personalization backfill: {n:,} events (Parquet, 7 days), 2 cores, "
        f"Beam with {args.workers} worker process(es)"
    )
    print(f"  {'engine':<8}{'seconds':>9}{'events/s':>11}{'peak RSS MB':>13}{'worker MB':>11}")
    for name in ("duckdb", "beam"):
        r = report[name]
        worker = f"{r['worker_peak_rss_mb']:,.0f}" if args.workers > 1 and name == "beam" else "-"
        print(
            f"  {name:<8}{r['seconds']:>9.1f}{r['events_per_s']:>11,.0f}"
            f"{r['peak_rss_mb']:>13,.0f}{worker:>11}"
        )
    print(
        f"  profiles compared: {len(compared):,} customers, {len(mismatched)} differ "
        f"(orders, value, sessions); Beam also built {report['counts']['edges']:,} edges, "
        f"{report['counts']['related']:,} related lists, "
        f"{report['counts']['recommendations']:,} recommendation rows"
    )
    if mismatched:
        print(f"  e.g. {report['mismatch_examples']}")


if __name__ == "__main__":
    main()
