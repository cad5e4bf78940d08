"""Inventory backfill: generated events -> the stock ledger in batch, next to DuckDB over Parquet.

Usage::

    .venv/bin/python benchmarks/inventory_backfill.py                 # 1M events, DirectRunner
    .venv/bin/python benchmarks/inventory_backfill.py --runners direct,prism
    .venv/bin/python benchmarks/inventory_backfill.py --events 200000 --json

What is measured, over the same Parquet files (the generator's own Parquet sink, one file per
event type and day, zstd), in one run:

- ``beam read``: ``ReadEventFiles`` -> count: reading and decoding into ``Event``s alone.
- ``beam ledger``: ``ReadEventFiles`` -> ``UpdateStockLedger(mode="batch")`` -> one CSV line per
  key: the whole backfill. ``ledger only`` is the difference of the two, per event.
- ``duckdb``: the same final stock per key in SQL over the same files (movements unnested, the
  latest count plus later deltas, reservations as a clamped running sum: ``r_n = S_n -
  min(0, min_k S_k)`` is the closed form of ``r = max(0, r + d)``), single-threaded like Beam's
  local runners here, same 2-core machine.

The two results are compared key by key (a benchmark that computes the wrong thing is not a
benchmark). Events: only the six ledger event types, generated until ``--events`` of them exist
(a week of traffic at 5M events/day on the default world, so about 3% of the generated stream);
the files are cached under ``--cache`` (keyed by the parameters) because generating them takes
minutes. Peak memory is the maximum resident set size of this process (the SDK harness runs
in-process) and, for Prism, of its child processes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

LEDGER_TYPES = (
    "inventory_adjusted",
    "stock_counted",
    "order_placed",
    "order_cancelled",
    "order_shipped",
    "return_processed",
)
PRISM = Path.home() / ".cache/retail-backbone/bin/prism-2.62.0/prism"

DUCKDB_LEDGER = """
WITH movements AS (
    SELECT sku, location, epoch_ms(envelope.event_time) AS t, 1 AS rank, delta AS x,
           CASE WHEN reason = 'SALE' AND delta < 0 THEN -delta ELSE 0 END AS y
    FROM read_parquet('{root}/inventory_adjusted/*/*.parquet')
    UNION ALL
    SELECT sku, location, epoch_ms(envelope.event_time), 2, quantity, 0
    FROM read_parquet('{root}/stock_counted/*/*.parquet')
    UNION ALL
    SELECT l.sku, l.fulfillment_location, t, 0, l.quantity, 0
    FROM (SELECT epoch_ms(envelope.event_time) AS t, unnest(lines) AS l
          FROM read_parquet('{root}/order_placed/*/*.parquet'))
    UNION ALL
    SELECT l.sku, l.location, t, 1, 0, l.quantity
    FROM (SELECT epoch_ms(envelope.event_time) AS t, unnest(lines) AS l
          FROM read_parquet('{root}/order_cancelled/*/*.parquet'))
),
counts AS (
    SELECT sku, location, arg_max(x, (t, x)) AS counted, max(t) AS t_count
    FROM movements WHERE rank = 2 GROUP BY ALL
),
reservations AS (
    SELECT sku, location,
           sum(CASE WHEN rank = 0 THEN x ELSE -y END)
               OVER (PARTITION BY sku, location ORDER BY t, rank, x, y
                     ROWS UNBOUNDED PRECEDING) AS s
    FROM movements WHERE rank = 0 OR (rank = 1 AND y > 0)
),
reserved AS (
    SELECT sku, location, last(s ORDER BY rn) - least(0, min(s)) AS reserved
    FROM (SELECT *, row_number() OVER (PARTITION BY sku, location) AS rn FROM reservations)
    GROUP BY ALL
),
totals AS (
    SELECT m.sku, m.location, max(m.t) AS version, count(*) AS applied,
           coalesce(any_value(c.counted), 0)
             + coalesce(sum(m.x) FILTER (WHERE m.rank = 1
                 AND (c.t_count IS NULL OR m.t > c.t_count)), 0) AS on_hand
    FROM movements m LEFT JOIN counts c USING (sku, location)
    GROUP BY ALL
)
SELECT t.sku, t.location, t.on_hand, coalesce(r.reserved, 0) AS reserved, t.version, t.applied
FROM totals t LEFT JOIN reserved r USING (sku, location)
"""


def _prepare(n_events: int, cache: Path, seed: int) -> Path:
    """Generate (once) ``n_events`` ledger events to Parquet; return the root folder."""
    from datetime import date

    from retail_backbone.generator import GeneratorConfig, generate_events, write_files

    root = cache / f"inventory-{n_events}-seed{seed}"
    if (root / "_DONE").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    cfg = GeneratorConfig(seed=seed, start=date(2025, 11, 10), days=16, events_per_day=5_000_000)
    wanted = set(LEDGER_TYPES)
    stream = generate_events(cfg)
    relevant = (e for e in stream if e["envelope"]["event_type"] in wanted)
    t0 = time.perf_counter()
    summary = write_files(islice(relevant, n_events), root, "parquet")
    written = sum(summary.files.values())
    print(f"generated {written:,} ledger events in {time.perf_counter() - t0:.0f} s -> {root}")
    (root / "_DONE").write_text(str(written))
    return root


def _beam_options(runner: str):
    from apache_beam.options.pipeline_options import PipelineOptions

    if runner == "direct":
        return PipelineOptions(["--runner=DirectRunner", "--direct_num_workers=1"])
    return PipelineOptions(
        [
            "--runner=PrismRunner",
            f"--prism_location={PRISM}",
            "--environment_type=LOOPBACK",
        ]
    )


def _read_tables(path: str):
    """One Parquet file -> ``(event_type, pyarrow.Table)`` per row group."""
    import pyarrow.parquet as pq

    event_type = Path(path).parent.parent.name
    parquet = pq.ParquetFile(path)
    for i in range(parquet.num_row_groups):
        yield event_type, parquet.read_row_group(i)


def _run_beam(root: Path, runner: str, with_ledger: bool, out: Path, arrow: bool = False) -> float:
    import apache_beam as beam

    from retail_backbone.io.files import ReadEventFiles, list_event_files
    from retail_backbone.transforms.inventory import UpdateStockLedger

    p = beam.Pipeline(options=_beam_options(runner))
    if arrow:
        events = (
            p
            | "ListFiles" >> beam.Create(list_event_files(str(root), fmt="parquet"))
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadTables" >> beam.FlatMap(_read_tables)
        )
    else:
        events = (p | "Read" >> ReadEventFiles(str(root), pipeline="bench", fmt="parquet")).events
    if with_ledger:
        ledger = UpdateStockLedger("batch", input_format="arrow" if arrow else "events")
        levels = (events | "UpdateStockLedger" >> ledger).levels
        lines = levels | "Csv" >> beam.Map(
            lambda r: (
                f"{r.sku},{r.location},{r.on_hand},{r.reserved},{r.version},"
                f"{r.movements_applied},{r.clamped_units}"
            )
        )
    else:
        lines = events | "Count" >> beam.combiners.Count.Globally() | beam.Map(str)
    _ = lines | "Write" >> beam.io.WriteToText(str(out), shard_name_template="")
    t0 = time.perf_counter()
    p.run().wait_until_finish()
    return time.perf_counter() - t0


def _run_duckdb(root: Path) -> tuple[float, dict]:
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads = 1")
    t0 = time.perf_counter()
    rows = con.execute(DUCKDB_LEDGER.format(root=root)).fetchall()
    elapsed = time.perf_counter() - t0
    return elapsed, {(r[0], r[1]): tuple(r[2:]) for r in rows}


def _read_beam_levels(path: Path) -> dict:
    out = {}
    for line in path.read_text().splitlines():
        sku, location, on_hand, reserved, version, applied, _clamped = line.split(",")
        out[(sku, location)] = (int(on_hand), int(reserved), int(version), int(applied))
    return out


def _child_maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _one_runner(root: Path, runner: str, n: int) -> dict:
    """Run both Beam pipelines for one runner in a fresh process (clean peak-memory figure)."""
    cmd = [sys.executable, __file__, "--_child", runner, "--_root", str(root), "--events", str(n)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "Error" in line or "status" in line]
        return {"runner": runner, "error": (errors or [f"exit code {done.returncode}"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(runner: str, root: Path, n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        read_s = _run_beam(root, runner, False, Path(tmp) / "count")
        ledger_s = _run_beam(root, runner, True, Path(tmp) / "levels.csv")
        arrow_s = _run_beam(root, runner, True, Path(tmp) / "arrow.csv", arrow=True)
        levels = _read_beam_levels(Path(tmp) / "levels.csv")
        same_as_events = _read_beam_levels(Path(tmp) / "arrow.csv") == levels
        clamped = sum(
            int(line.rsplit(",", 1)[1])
            for line in (Path(tmp) / "levels.csv").read_text().splitlines()
        )
        result = {
            "runner": runner,
            "read_s": read_s,
            "ledger_s": ledger_s,
            "arrow_s": arrow_s,
            "arrow_same_as_events": same_as_events,
            "keys": len(levels),
            "clamped_units": clamped,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "children_peak_rss_mb": _child_maxrss_mb(),
            "levels_file": None,
        }
        keep = Path(tempfile.gettempdir()) / f"inventory-bench-{runner}-levels.csv"
        shutil.copy(Path(tmp) / "levels.csv", keep)
        result["levels_file"] = str(keep)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runners", default="direct", help="comma list of direct, prism")
    parser.add_argument(
        "--cache", type=Path, default=Path.home() / ".cache/retail-backbone/bench-data"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    parser.add_argument("--_root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        _child(args._child, Path(args._root), args.events)
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    root = _prepare(args.events, args.cache, args.seed)
    n = int((root / "_DONE").read_text())
    duck_s, duck = _run_duckdb(root)
    figures = {"events": n, "duckdb_s": duck_s, "duckdb_events_per_s": n / duck_s, "runs": []}
    for runner in [r.strip() for r in args.runners.split(",") if r.strip()]:
        run = _one_runner(root, runner, n)
        if "error" in run:
            figures["runs"].append(run)
            continue
        beam = _read_beam_levels(Path(run["levels_file"]))
        mismatched = sum(1 for k, v in duck.items() if beam.get(k) != v) + len(beam.keys() - duck)
        ledger_only_s = run["ledger_s"] - run["read_s"]
        run.update(
            events_per_s=n / run["ledger_s"],
            read_events_per_s=n / run["read_s"],
            # Below 5% of the run the difference is noise, not the ledger's cost.
            ledger_only_events_per_s=n / ledger_only_s
            if ledger_only_s > 0.05 * run["ledger_s"]
            else None,
            duckdb_ratio=(n / run["ledger_s"]) / (n / duck_s),
            arrow_events_per_s=n / run["arrow_s"],
            arrow_duckdb_ratio=(n / run["arrow_s"]) / (n / duck_s),
            mismatched_keys=mismatched,
        )
        figures["runs"].append(run)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"{n:,} ledger events, {len(duck):,} keys")
    print(f"duckdb (1 thread)          {duck_s:7.2f} s  {n / duck_s:>12,.0f} events/s")
    for run in figures["runs"]:
        name = run["runner"]
        if "error" in run:
            print(f"beam {name:<8} failed: {run['error'].strip()[:200]}")
            continue
        print(
            f"beam {name:<8} read only    {run['read_s']:7.2f} s  "
            f"{run['read_events_per_s']:>12,.0f} events/s"
        )
        alone = run["ledger_only_events_per_s"]
        alone = f"~{alone:,.0f} events/s" if alone else "within noise"
        print(
            f"beam {name:<8} read+ledger  {run['ledger_s']:7.2f} s  "
            f"{run['events_per_s']:>12,.0f} events/s   "
            f"(ledger alone {alone}; DuckDB/Beam = {1 / run['duckdb_ratio']:.1f}x)"
        )
        print(
            f"beam {name:<8} arrow+ledger {run['arrow_s']:7.2f} s  "
            f"{run['arrow_events_per_s']:>12,.0f} events/s   "
            f"(DuckDB/Beam = {1 / run['arrow_duckdb_ratio']:.1f}x; same rows as the Event path: "
            f"{run['arrow_same_as_events']})"
        )
        print(
            f"     peak RSS {run['peak_rss_mb']:.0f} MB (children {run['children_peak_rss_mb']:.0f}"
            f" MB); keys {run['keys']:,}; clamped units {run['clamped_units']}; "
            f"keys differing from DuckDB: {run['mismatched_keys']}"
        )


if __name__ == "__main__":
    main()
