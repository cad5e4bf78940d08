"""Personalization streaming: sustained events/s and event-to-profile latency on Flink.

Runs the personalization job in streaming mode on the local Flink cluster (Java KafkaIO engine,
early firings every second, every sink: Bigtable profiles/recommendations/related products and
the graph), produces live ``product_viewed`` events (event time = the moment of production) for
``--customers`` customers at ``--rate`` for ``--seconds``, and polls the Bigtable ``profiles``
table: an event is visible once its customer's profile row reaches a ``version`` (newest event
time folded in) >= the event's time. The row key is the keyed hash of the customer id
(``customer_key``, HMAC-SHA256 with the run's PII hash key), so the poller hashes each customer
it produced for and reads only those rows that still wait for an event, in batches of
``--poll_batch`` keys, newest ``version`` cell only.

Reports the produce rate, how many events became visible, the latency percentiles (produce ->
profile visible), the visible throughput, and how long the backlog took to drain after the
producer stopped, next to the same-run baseline: a plain confluent-kafka consumer's produce ->
receive latency for the same records. Not a test.

Before the job starts, the catalog (``product_upserted`` for every sku) and one
``product_viewed`` are produced stamped with the current time: the topics exist at launch and
the catalog side input of the profiles has fired before the live events arrive.

The Python SDK worker is a LOOPBACK worker; by default in its own process
(``--worker process``, Beam's ``use_loopback_process_worker`` experiment), so that the producer
and the poller of this script do not share the worker's interpreter lock; ``--worker thread`` runs
it inside this process as the tests do.

Usage::

    .venv/bin/python benchmarks/personalization_streaming.py --rate 200 --seconds 30

Needs the stack (kafka, registry, bigtable, graph, flink, jobserver); it starts them. At the end
the Flink job is cancelled through Flink's REST API and the run's Bigtable tables, graph nodes
and constraints are dropped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator

import apache_beam as beam
import requests
from apache_beam.options.pipeline_options import StandardOptions
from confluent_kafka.admin import AdminClient
from latency import add_flink_tuning, baseline_consumer, flink_tuning_args, percentiles

from retail_backbone import generator as gen
from retail_backbone.pipelines import personalization
from retail_backbone.pipelines.runners import runner_args
from retail_backbone.stack import Stack, StackConfig
from retail_backbone.testing import drop_personalization_state
from retail_backbone.transforms.personalization.profiles import customer_key

EVENT_TYPE = "product_viewed"
CATALOG_TYPE = "product_upserted"
HASH_KEY_ENV = "BENCH_PII_HASH_KEY"


def _templates(n_customers: int) -> tuple[list[dict], list[dict]]:
    """``product_viewed`` events of the first ``n_customers`` customers seen, and the catalog."""
    cfg = gen.GeneratorConfig(
        seed=3, days=1, events_per_day=60_000, n_products=200, n_locations=4, n_customers=5000
    )
    views: list[dict] = []
    catalog: list[dict] = []
    customers: set[str] = set()
    for event in gen.generate_events(cfg):
        kind = event["envelope"]["event_type"]
        if kind == CATALOG_TYPE:
            catalog.append(event)
        elif kind == EVENT_TYPE and event.get("customer_id"):
            cid = event["customer_id"]
            if cid in customers or len(customers) < n_customers:
                customers.add(cid)
                views.append(event)
    return views, catalog


def _stamped(event: dict, now_ms: int) -> dict:
    out = dict(event)
    out["envelope"] = {
        **event["envelope"],
        "event_id": str(uuid.uuid4()),
        "event_time": now_ms,
        "ingest_time": now_ms,
    }
    return out


def _live(templates: list[dict], rate: float, seconds: float, sent: list) -> Iterator[dict]:
    """Events stamped with the wall clock as they are produced, ``rate`` per second."""
    for i in range(int(rate * seconds)):
        now = int(time.time() * 1000)
        event = _stamped(templates[i % len(templates)], now)
        sent.append((event["customer_id"], now))
        yield event


def _flink_job_running(cfg: StackConfig, job_name: str, since_ms: int, timeout: float = 180) -> str:
    """The id of this run's Flink job once RUNNING (by name; else the one started since launch)."""
    base = f"http://{cfg.host}:{cfg.port('flink_rest')}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = requests.get(f"{base}/jobs/overview", timeout=5).json()["jobs"]
        running = [j for j in jobs if j["state"] == "RUNNING"]
        named = [j for j in running if j["name"] == job_name]
        if named:
            return named[0]["jid"]
        recent = [j for j in running if j["start-time"] >= since_ms]
        if len(recent) == 1 and not any(j["name"] == job_name for j in jobs):
            # The job server did not take the name: fall back to the start time.
            return recent[0]["jid"]
        time.sleep(1)
    raise SystemExit("the personalization job did not reach RUNNING on Flink")


def _delete_topics(bootstrap: str, registry: str, prefix: str) -> None:
    """Delete the run's topics and subjects (the generator makes one per event type)."""
    subjects = requests.get(f"{registry}/subjects", timeout=10).json()
    for subject in (s for s in subjects if s.startswith(prefix)):
        requests.delete(f"{registry}/subjects/{subject}", timeout=10)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    if not topics:
        return
    for topic, future in admin.delete_topics(topics, operation_timeout=30).items():
        try:
            future.result(30)
        except Exception as exc:  # a leftover topic is reported, not fatal
            print(f"topic {topic} not deleted: {exc}", file=sys.stderr)


class _ProfilePoller:
    """Reads the ``version`` of the profiles of given customers, batch by batch."""

    def __init__(self, project: str, instance: str, table: str, key: bytes, batch: int) -> None:
        from google.cloud import bigtable
        from google.cloud.bigtable.row_filters import (
            CellsColumnLimitFilter,
            ColumnQualifierRegexFilter,
            RowFilterChain,
        )

        self._client = bigtable.Client(project=project, admin=False)
        self._table = self._client.instance(instance).table(table)
        self._filter = RowFilterChain(
            [ColumnQualifierRegexFilter(b"^version$"), CellsColumnLimitFilter(1)]
        )
        self._key = key
        self._batch = batch
        self._row_keys: dict[str, bytes] = {}
        self.reads = 0

    def row_key(self, customer_id: str) -> bytes:
        found = self._row_keys.get(customer_id)
        if found is None:
            found = customer_key(customer_id, self._key).encode()
            self._row_keys[customer_id] = found
        return found

    def versions(self, customers: list[str]) -> dict[str, int]:
        from google.cloud.bigtable.row_set import RowSet

        by_key = {self.row_key(c): c for c in customers}
        keys = sorted(by_key)
        out: dict[str, int] = {}
        for i in range(0, len(keys), self._batch):
            rows = RowSet()
            for key in keys[i : i + self._batch]:
                rows.add_row_key(key)
            self.reads += 1
            for data in self._table.read_rows(row_set=rows, filter_=self._filter):
                cells = data.cells.get("p", {}).get(b"version")
                if cells:
                    out[by_key[data.row_key]] = int(json.loads(cells[0].value))
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200, help="events/s to produce")
    parser.add_argument("--seconds", type=float, default=30, help="how long to produce")
    parser.add_argument("--customers", type=int, default=1000, help="distinct customers")
    parser.add_argument("--drain_timeout", type=float, default=120)
    parser.add_argument("--poll_batch", type=int, default=500, help="row keys per Bigtable read")
    parser.add_argument(
        "--poll_seconds",
        type=float,
        default=0.1,
        help="pause between two polls (each reads every waiting customer's row: the emulator "
        "shares the job's 2 cores, so polling often slows the job it measures)",
    )
    parser.add_argument(
        "--worker",
        choices=("process", "thread"),
        default="process",
        help="LOOPBACK SDK worker in its own process or inside this one",
    )
    add_flink_tuning(parser)
    parser.add_argument(
        "--sinks",
        default="bigtable,graph",
        help="the job's --sinks (bigtable alone leaves the graph writes out)",
    )
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()

    cfg = StackConfig.load()
    Stack(cfg).up(["kafka", "registry", "bigtable", "graph", "flink", "jobserver"])
    os.environ.setdefault("BIGTABLE_EMULATOR_HOST", f"{cfg.host}:{cfg.port('bigtable')}")
    hash_key = uuid.uuid4().hex
    os.environ[HASH_KEY_ENV] = hash_key  # read by the (LOOPBACK) workers through env:VAR
    bootstrap = f"{cfg.host}:{cfg.port('kafka')}"
    registry = f"http://{cfg.host}:{cfg.port('registry')}"
    uri = f"bolt://{cfg.host}:{cfg.port('neo4j')}"
    run = uuid.uuid4().hex[:6]
    prefix = f"bench.perso.{run}.retail."
    topic = f"{prefix}{EVENT_TYPE}"
    suffix = f"_bench{run}"
    job_name = f"persobench-{run}"
    templates, catalog = _templates(args.customers)
    customers = sorted({e["customer_id"] for e in templates})
    # The topics, the subjects and the catalog before the job starts, stamped with the wall clock
    # (so that nothing of it is late once live events move the watermark).
    seed_ms = int(time.time() * 1000)
    gen.produce_to_kafka(
        iter([_stamped(e, seed_ms) for e in (*catalog, templates[0])]),
        bootstrap,
        registry,
        topic_prefix=prefix,
        progress=False,
    )

    argv = [
        *runner_args("flink", cfg),
        f"--job_name={job_name}",
        "--mode=streaming",
        f"--topics={topic},{prefix}{CATALOG_TYPE}",
        "--early_firing_seconds=1",
        *flink_tuning_args(args),
        f"--table_suffix={suffix}",
        f"--sinks={args.sinks}",
        f"--bootstrap_servers={bootstrap}",
        f"--registry_url={registry}",
        f"--neo4j_uri={uri}",
        f"--pii_hash_key=env:{HASH_KEY_ENV}",
    ]
    if args.worker == "process":
        argv.append("--experiments=use_loopback_process_worker")
        # The worker pool starts ``python`` from PATH: this interpreter's (the venv's).
        os.environ["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"
    opts = personalization.PersonalizationOptions(argv)
    personalization.check_options(opts)
    opts.view_as(StandardOptions).streaming = True
    poller = None
    result = None
    job_id = None
    try:
        personalization.ensure_sinks(opts)
        p = beam.Pipeline(options=opts)
        personalization.build_pipeline(p, opts)
        submitted_ms = int(time.time() * 1000) - 1000
        result = p.run()
        job_id = _flink_job_running(cfg, job_name, submitted_ms)
        poller = _ProfilePoller(
            opts.bigtable_project,
            opts.bigtable_instance,
            personalization.table_specs(opts)["profiles"].name,
            hash_key.encode(),
            args.poll_batch,
        )
        # Warm-up: the seed customer's profile is visible once the catalog side input has fired
        # and the first bundles went through the Java and Python harnesses.
        warm_deadline = time.monotonic() + 180
        while (
            poller.versions([templates[0]["customer_id"]]).get(templates[0]["customer_id"], 0)
            < seed_ms
        ):
            if time.monotonic() > warm_deadline:
                raise SystemExit("the seed profile never reached Bigtable: the job is stuck")
            time.sleep(0.5)
        warm_s = time.time() - seed_ms / 1000

        stop = threading.Event()
        baseline: list[float] = []
        live_ms = int(time.time() * 1000)
        consumer = threading.Thread(
            target=baseline_consumer, args=(bootstrap, topic, live_ms, stop, baseline)
        )
        consumer.start()
        sent: list[tuple[str, int]] = []
        t0 = time.monotonic()
        producer = threading.Thread(
            target=gen.produce_to_kafka,
            args=(_live(templates, args.rate, args.seconds, sent), bootstrap, registry),
            kwargs={"rate": args.rate, "topic_prefix": prefix, "progress": False},
        )
        producer.start()

        pending: dict[str, list[int]] = defaultdict(list)
        latencies: list[float] = []
        seen_upto = 0
        produce_end = None
        drain_s = None
        last_visible_ms = 0.0
        while True:
            upto = len(sent)
            for cid, t in sent[seen_upto:upto]:
                pending[cid].append(t)
            seen_upto = upto
            waiting_customers = [c for c, times in pending.items() if times]
            versions = poller.versions(waiting_customers) if waiting_customers else {}
            now = time.time() * 1000
            for cid, version in versions.items():
                times = pending[cid]
                visible = [t for t in times if t <= version]
                if visible:
                    latencies += [now - t for t in visible]
                    pending[cid] = [t for t in times if t > version]
                    last_visible_ms = now
            waiting = sum(len(v) for v in pending.values())
            if produce_end is None and not producer.is_alive():
                produce_end = time.monotonic()
            if produce_end is not None and waiting == 0 and seen_upto == len(sent):
                drain_s = time.monotonic() - produce_end
                break
            if produce_end is not None and time.monotonic() - produce_end > args.drain_timeout:
                break
            time.sleep(args.poll_seconds)
        stop.set()
        consumer.join()
    finally:
        if poller is not None:
            poller.close()
        if job_id is not None:
            requests.patch(
                f"http://{cfg.host}:{cfg.port('flink_rest')}/jobs/{job_id}?mode=cancel",
                timeout=10,
            )
        if result is not None:
            with contextlib.suppress(Exception):  # already cancelled through Flink's REST API
                result.cancel()
        drop_personalization_state(uri, suffix)
        _delete_topics(bootstrap, registry, prefix)

    produced_s = (produce_end or time.monotonic()) - t0
    first_ms = sent[0][1] if sent else 0
    visible_span_s = (last_visible_ms - first_ms) / 1000 if latencies else float("nan")
    p50, p95, p99 = percentiles(latencies)
    b50, b95, b99 = percentiles(baseline)
    figures = {
        "rate_target": args.rate,
        "seconds": args.seconds,
        "customers": len(customers),
        "worker": args.worker,
        "sinks": args.sinks,
        "max_bundle_time_ms": args.max_bundle_time_ms,
        "events": len(sent),
        "produce_rate": len(sent) / produced_s,
        "visible": len(latencies),
        "visible_per_s": len(latencies) / visible_span_s if latencies else 0.0,
        "latency_ms": {"p50": p50, "p95": p95, "p99": p99},
        "baseline_ms": {"p50": b50, "p95": b95, "p99": b99, "received": len(baseline)},
        "drain_s": drain_s,
        "warm_up_s": warm_s,
        "bigtable_reads": poller.reads if poller else 0,
    }
    print(
        f"\npersonalization streaming on Flink: {len(sent):,} live {EVENT_TYPE} events, "
        f"{len(customers):,} customers, SDK worker: {args.worker}, sinks: {args.sinks}"
    )
    print(f"produce rate: {figures['produce_rate']:,.0f} events/s (target {args.rate:,.0f})")
    print(
        f"visible in Bigtable profiles: {len(latencies):,} of {len(sent):,} "
        f"({figures['visible_per_s']:,.0f} events/s from first produce to last visible)"
    )
    print(f"{'latency, produce -> visible (ms)':40} {'p50':>8} {'p95':>8} {'p99':>8}")
    print(f"{'Beam on Flink -> profiles (Bigtable)':40} {p50:>8,.0f} {p95:>8,.0f} {p99:>8,.0f}")
    print(f"{'baseline: plain consumer receives':40} {b50:>8,.0f} {b95:>8,.0f} {b99:>8,.0f}")
    if drain_s is None:
        print(f"backlog NOT drained {args.drain_timeout:.0f} s after the producer stopped")
    else:
        print(f"backlog drained {drain_s:.1f} s after the producer stopped")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
