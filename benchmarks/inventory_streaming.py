"""Inventory streaming: sustained events/s and event-to-store latency, Kafka -> Flink -> Postgres.

Runs the inventory job in streaming mode on the local Flink cluster (Java KafkaIO engine, early
firings every second), produces live ``inventory_adjusted`` events (event time = the moment of
production) at ``--rate`` for ``--seconds``, and polls ``stock_levels`` in Postgres: an event is
visible once its (sku, location) row's version reaches the event's time. Reports the produce
rate, the latency percentiles (produce -> row visible) and how long the backlog took to drain
after the producer stopped, next to the same-run baseline: a plain confluent-kafka consumer's
produce -> receive latency for the same records. Not a test.

Usage::

    .venv/bin/python benchmarks/inventory_streaming.py --rate 500 --seconds 30

Needs the stack (kafka, registry, postgres, bigtable, flink, jobserver); it starts them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import threading
import time
import uuid
from collections import defaultdict

import apache_beam as beam
import psycopg
import requests
from apache_beam.options.pipeline_options import StandardOptions
from latency import add_flink_tuning, baseline_consumer, flink_tuning_args, percentiles

from retail_backbone import generator as gen
from retail_backbone.pipelines import inventory
from retail_backbone.pipelines.runners import runner_args
from retail_backbone.stack import Stack, StackConfig
from retail_backbone.stack.components.postgres import dsn as pg_dsn

EVENT_TYPE = "inventory_adjusted"


def _templates(n: int) -> list[dict]:
    cfg = gen.GeneratorConfig(
        seed=3, days=3, events_per_day=40_000, n_products=200, n_locations=8, n_customers=2000
    )
    found = []
    for event in gen.generate_events(cfg):
        if event["envelope"]["event_type"] == EVENT_TYPE:
            found.append(event)
            if len(found) == n:
                break
    return found


def _live(templates: list[dict], rate: float, seconds: float, sent: list) -> object:
    """Events stamped with the wall clock as they are produced, ``rate`` per second."""
    total = int(rate * seconds)
    for i in range(total):
        event = dict(templates[i % len(templates)])
        now = int(time.time() * 1000)
        event["envelope"] = {
            **event["envelope"],
            "event_id": str(uuid.uuid4()),
            "event_time": now,
            "ingest_time": now,
        }
        sent.append((event["sku"], event["location"], now))
        yield event


def _flink_job_running(cfg: StackConfig, since_ms: int, timeout: float = 120) -> str:
    base = f"http://{cfg.host}:{cfg.port('flink_rest')}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = requests.get(f"{base}/jobs/overview", timeout=5).json()["jobs"]
        running = [j for j in jobs if j["state"] == "RUNNING" and j["start-time"] >= since_ms]
        if running:
            return running[0]["jid"]
        time.sleep(1)
    raise SystemExit("the inventory job did not reach RUNNING on Flink")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500, help="events/s to produce")
    parser.add_argument("--seconds", type=float, default=30, help="how long to produce")
    parser.add_argument("--drain_timeout", type=float, default=120)
    add_flink_tuning(parser)
    args = parser.parse_args()

    cfg = StackConfig.load()
    Stack(cfg).up(["kafka", "registry", "postgres", "bigtable", "flink", "jobserver"])
    os.environ.setdefault("BIGTABLE_EMULATOR_HOST", f"{cfg.host}:{cfg.port('bigtable')}")
    bootstrap = f"{cfg.host}:{cfg.port('kafka')}"
    registry = f"http://{cfg.host}:{cfg.port('registry')}"
    dsn = pg_dsn(cfg)
    run = uuid.uuid4().hex[:6]
    prefix = f"bench.stream.{run}.retail."
    topic = f"{prefix}{EVENT_TYPE}"
    suffix = f"_bench{run}"
    templates = _templates(2000)
    # Create the topic (and register the subject) with one old event before the job starts.
    gen.produce_to_kafka(
        iter(templates[:1]), bootstrap, registry, topic_prefix=prefix, progress=False
    )

    argv = [
        *runner_args("flink", cfg),
        "--mode=streaming",
        f"--topics={topic}",
        "--early_firing_seconds=1",
        *flink_tuning_args(args),
        "--sinks=postgres,bigtable",
        f"--postgres_dsn={dsn}",
        f"--table_suffix={suffix}",
        f"--bootstrap_servers={bootstrap}",
        f"--registry_url={registry}",
    ]
    opts = inventory.InventoryOptions(argv)
    inventory.check_options(opts)
    opts.view_as(StandardOptions).streaming = True
    inventory.ensure_sink_tables(opts)
    p = beam.Pipeline(options=opts)
    inventory.build_pipeline(p, opts)
    submitted_ms = int(time.time() * 1000) - 1000
    result = p.run()
    job_id = _flink_job_running(cfg, submitted_ms)
    time.sleep(5)  # let the first bundles and the Java harness warm up

    stop = threading.Event()
    baseline: list[float] = []
    consumer = threading.Thread(
        target=baseline_consumer, args=(bootstrap, topic, 0, stop, baseline)
    )
    consumer.start()
    sent: list[tuple[str, str, int]] = []
    t0 = time.monotonic()
    producer = threading.Thread(
        target=gen.produce_to_kafka,
        args=(_live(templates, args.rate, args.seconds, sent), bootstrap, registry),
        kwargs={"rate": args.rate, "topic_prefix": prefix, "progress": False},
    )
    producer.start()

    pending: dict[tuple[str, str], list[int]] = defaultdict(list)
    latencies: list[float] = []
    seen_upto = 0
    produce_end = None
    drain_s = None
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            upto = len(sent)
            for sku, location, t in sent[seen_upto:upto]:
                pending[(sku, location)].append(t)
            seen_upto = upto
            rows = conn.execute(
                f"SELECT sku, location, version FROM stock_levels{suffix}"
            ).fetchall()
            now = time.time() * 1000
            for sku, location, version in rows:
                times = pending.get((sku, location))
                if times:
                    visible = [t for t in times if t <= version]
                    if visible:
                        latencies += [now - t for t in visible]
                        pending[(sku, location)] = [t for t in times if t > version]
            waiting = sum(len(v) for v in pending.values())
            if produce_end is None and not producer.is_alive():
                produce_end = time.monotonic()
            if produce_end is not None and waiting == 0 and seen_upto == len(sent):
                drain_s = time.monotonic() - produce_end
                break
            if produce_end is not None and time.monotonic() - produce_end > args.drain_timeout:
                break
            time.sleep(0.1)
    stop.set()
    consumer.join()
    requests.patch(
        f"http://{cfg.host}:{cfg.port('flink_rest')}/jobs/{job_id}?mode=cancel", timeout=10
    )
    with contextlib.suppress(Exception):  # already cancelled through Flink's REST API
        result.cancel()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in ("stock_levels", "stock_alerts", "demand_forecast"):
            conn.execute(f"DROP TABLE IF EXISTS {table}{suffix}")

    produced_s = (produce_end or time.monotonic()) - t0
    p50, p95, p99 = percentiles(latencies)
    b50, b95, b99 = percentiles(baseline)
    print(f"\ninventory streaming on Flink: {len(sent):,} live {EVENT_TYPE} events")
    print(f"produce rate: {len(sent) / produced_s:,.0f} events/s (target {args.rate:,.0f})")
    print(f"visible in Postgres: {len(latencies):,} of {len(sent):,}")
    print(f"{'latency, produce -> visible (ms)':40} {'p50':>8} {'p95':>8} {'p99':>8}")
    print(f"{'Beam on Flink -> stock_levels':40} {p50:>8,.0f} {p95:>8,.0f} {p99:>8,.0f}")
    print(f"{'baseline: plain consumer receives':40} {b50:>8,.0f} {b95:>8,.0f} {b99:>8,.0f}")
    if drain_s is None:
        print(f"backlog NOT drained {args.drain_timeout:.0f} s after the producer stopped")
    else:
        print(f"backlog drained {drain_s:.1f} s after the producer stopped")


if __name__ == "__main__":
    main()
