"""Generator throughput: generation alone and generation + each file format, next to baselines.

Usage::

    .venv/bin/python benchmarks/generator_throughput.py            # 300k events, default world
    .venv/bin/python benchmarks/generator_throughput.py --events 1000000 --snapshot

Stages (all single-threaded; Arrow's thread pools are pinned to one thread):

- ``generate``: iterate ``generate_events`` (envelopes, ids, the whole simulation), no output.
- ``generate + <fmt>``: ``write_files(generate_events(...), tmp, fmt)``.
- baselines, same run, over events generated beforehand and held in memory
  (``--baseline-events``, default 100k): ``json.dumps`` per event to a file, one raw
  ``fastavro.writer`` per event type, ``pyarrow`` ``from_pylist`` + ``write_table`` per type.
  They are the serialization floor; "gen + fmt" minus "generate" is the sink's real cost.

The world is built once before timing (its build time is printed separately). By default the
opening snapshot (catalog, customers, opening stock counts) is off so the figures describe the
steady-state traffic mix.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections import defaultdict
from datetime import date
from decimal import Decimal
from itertools import islice
from pathlib import Path

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq

from retail_backbone.generator import GeneratorConfig, build_world, contracts, generate_events
from retail_backbone.generator.sinks import arrow_schema, write_files


def _json_default(value):
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(type(value).__name__)


def _timed(fn) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = fn()
    return n, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--baseline-events", type=int, default=100_000)
    parser.add_argument("--events-per-day", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--snapshot", action="store_true", help="include the opening snapshot")
    parser.add_argument("--formats", default="jsonl,avro,parquet")
    args = parser.parse_args()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)

    days = max(1, -(-args.events // args.events_per_day) + 1)
    cfg = GeneratorConfig(
        seed=args.seed,
        start=date(2025, 11, 24),
        days=days,
        events_per_day=args.events_per_day,
        snapshot=args.snapshot,
    )
    t0 = time.perf_counter()
    world = build_world(cfg)
    world_s = time.perf_counter() - t0
    print(
        f"world: {len(world.products):,} products, {len(world.locations)} locations, "
        f"{len(world.customers):,} customers, built in {world_s:.2f}s"
    )

    def stream(limit: int):
        return islice(generate_events(cfg, world), limit)

    rows: list[tuple[str, int, float, str]] = []
    n, s = _timed(lambda: sum(1 for _ in stream(args.events)))
    rows.append(("generate", n, s, "simulation + envelopes, no output"))
    gen_rate = n / s

    tmp = Path(tempfile.mkdtemp(prefix="gen-bench-"))
    try:
        for fmt in args.formats.split(","):
            out = tmp / fmt
            n, s = _timed(
                lambda fmt=fmt, out=out: write_files(stream(args.events), out, fmt).events
            )
            size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
            rows.append((f"generate + {fmt}", n, s, f"{size / n:.0f} B/event on disk"))
            shutil.rmtree(out)

        # Baselines: serialization alone over pre-built events.
        prebuilt = list(stream(args.baseline_events))
        by_type: dict[str, list[dict]] = defaultdict(list)
        for event in prebuilt:
            by_type[event["envelope"]["event_type"]].append(event)
        schemas = contracts()

        def json_baseline() -> int:
            enc = json.JSONEncoder(default=_json_default, separators=(",", ":"), ensure_ascii=False)
            with (tmp / "baseline.jsonl").open("w", encoding="utf-8") as fh:
                for event in prebuilt:
                    fh.write(enc.encode(event) + "\n")
            return len(prebuilt)

        def avro_baseline() -> int:
            for event_type, records in by_type.items():
                with (tmp / f"baseline-{event_type}.avro").open("wb") as fh:
                    fastavro.writer(fh, schemas[event_type].parsed, records)
            return len(prebuilt)

        def parquet_baseline() -> int:
            for event_type, records in by_type.items():
                schema = arrow_schema(schemas[event_type].schema)
                table = pa.Table.from_pylist(records, schema=schema)
                pq.write_table(table, tmp / f"baseline-{event_type}.parquet", compression="zstd")
            return len(prebuilt)

        for name, fn, note in (
            ("baseline json.dumps", json_baseline, "pre-built dicts -> one file"),
            ("baseline fastavro.writer", avro_baseline, "pre-built records, one file per type"),
            ("baseline pyarrow parquet", parquet_baseline, "pre-built rows, one file per type"),
        ):
            n, s = _timed(fn)
            rows.append((name, n, s, note))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"\nconfig: seed={cfg.seed} events_per_day={cfg.events_per_day:,} snapshot={cfg.snapshot}"
        f" (first {args.events:,} events; baselines over {args.baseline_events:,})\n"
    )
    print(f"{'stage':<28} {'events':>10} {'seconds':>9} {'events/s':>11} {'us/event':>9}  note")
    for name, n, s, note in rows:
        print(f"{name:<28} {n:>10,} {s:>9.2f} {n / s:>11,.0f} {1e6 * s / n:>9.1f}  {note}")
    print("\nsink cost per event (generate + fmt minus generate) vs the baseline's:")
    gen_us = 1e6 / gen_rate
    base = {r[0].split()[-1]: 1e6 * r[2] / r[1] for r in rows if r[0].startswith("baseline")}
    names = {"jsonl": "json.dumps", "avro": "fastavro.writer", "parquet": "parquet"}
    for name, n, s, _ in rows:
        if name.startswith("generate + "):
            fmt = name.split()[-1]
            print(
                f"  {fmt:<8} sink {1e6 * s / n - gen_us:6.1f} us/event,"
                f" baseline {base.get(names[fmt], float('nan')):6.1f} us/event"
            )


if __name__ == "__main__":
    main()
