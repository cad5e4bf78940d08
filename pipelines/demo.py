"""The main job (``backbone demo``): inventory from history backfill to live stream, on the stack.

What it does, on local defaults:

1. brings up Kafka, the schema registry, PostgreSQL, the Bigtable emulator, Flink and the Beam
   job server;
2. generates ``days`` of retail traffic; every day but the last is history, written as
   date-partitioned Avro files; all days go to Kafka (this run's own topics), plus a few corrupt
   records on a live topic to show the dead letters;
3. backfills the history from the files (batch, direct runner) into ``stock_levels_demo``,
   ``stock_alerts_demo``, ``demand_forecast_demo`` (Postgres) and ``stock_levels_demo``
   (Bigtable);
4. runs the same transforms streaming on Flink over the topics (from the earliest offsets to
   the end at launch: the ledger rebuilds its state from the retained history, and the history
   rows it rewrites are skipped as stale by the idempotent sinks), which brings the tables up to
   the end of the live day;
5. prints per-store stock, alerts and forecasts read back from the stores, and for each run the
   accounting line: in = unique + duplicates + dead letters;
6. personalization beside it: the history backfilled from the same files (batch, direct runner,
   out-of-stock skus from ``stock_levels_demo`` excluded) and, with ``stream_personalization``
   (``--stream-personalization``, several more minutes on 2 cores), the same topics streamed on
   Flink, into ``profiles_demo``, ``recommendations_demo``,
   ``related_products_demo`` (Bigtable) and the graph store (labels ``Product_demo``,
   ``Category_demo``); prints a few profiles (customers only as the keyed hash), their top 5
   recommendations, related products of a few products and the graph's neighbours of one, and
   the accounting of each run (profile stage: in = out + dead letters).

The demo's tables are emptied at the start, so every run shows its own result.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["DemoSummary", "run_demo"]

TABLE_SUFFIX = "_demo"
CORRUPT_RECORDS = 3
_COMPONENTS = ["kafka", "registry", "postgres", "bigtable", "graph", "flink", "jobserver"]
#: The demo's PII hash key (environment variable read by the pipeline's workers).
PII_HASH_KEY_ENV = "BACKBONE_PII_HASH_KEY"
_DEMO_PII_KEY = "demo-only-pii-hash-key"


@dataclasses.dataclass
class DemoSummary:
    """What the demo ran and found; ``render()`` for people, ``as_dict()`` for scripts."""

    run_id: str
    events: int
    history_days: list[str]
    live_day: str
    backfill: dict[str, Any]
    streaming: dict[str, Any]
    stores: list[dict[str, Any]]
    alerts: dict[str, int]
    latest_alerts: list[dict[str, Any]]
    reorder: list[dict[str, Any]]
    bigtable_rows: int
    postgres_rows: int
    personalization: dict[str, Any] = dataclasses.field(default_factory=dict)
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def balanced(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "balanced": self.balanced}

    def render(self) -> str:
        lines = [
            f"run {self.run_id}: {self.events:,} generated events; history "
            f"{self.history_days[0]}..{self.history_days[-1]} backfilled from files, live day "
            f"{self.live_day} streamed through Kafka on Flink",
            "",
            "stock per store (Postgres stock_levels_demo)",
            f"  {'location':14} {'skus':>5} {'on hand':>9} {'reserved':>9} {'available':>10} "
            f"{'out of stock':>13}",
        ]
        for s in self.stores:
            lines.append(
                f"  {s['location']:14} {s['skus']:>5} {s['on_hand']:>9,} {s['reserved']:>9,} "
                f"{s['available']:>10,} {s['out_of_stock']:>13}"
            )
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.alerts.items())) or "none"
        lines += ["", f"alerts (stock_alerts_demo): {kinds}"]
        for a in self.latest_alerts:
            lines.append(
                f"  {a['at']}  {a['kind']:10} {a['sku']} @ {a['location']}  available "
                f"{a['available']}, reorder point {a['reorder_point']:.1f}"
            )
        lines += ["", "highest reorder points on the last forecast day (demand_forecast_demo)"]
        for f in self.reorder:
            lines.append(
                f"  {f['sku']} @ {f['location']}  forecast {f['forecast']:.1f}/day, safety "
                f"stock {f['safety_stock']:.1f}, reorder at {f['reorder_point']:.1f}"
            )
        lines += [
            "",
            f"Bigtable stock_levels_demo rows: {self.bigtable_rows:,} "
            f"(Postgres: {self.postgres_rows:,})",
            "",
        ]
        for name, run in (("backfill ", self.backfill), ("streaming", self.streaming)):
            acc = run["accounting"]
            outside = acc["outside_time_range"]
            later = run["dead_letters"] - acc["dead_letters_at_read"]
            lines.append(
                f"{name}: in {acc['in']:,} = unique {acc['unique']:,} + duplicates "
                f"{acc['duplicates']:,} + dead letters {acc['dead_letters_at_read']:,}"
                + (f" + outside the range {outside:,}" if outside else "")
                + f"  ({'balanced' if acc['balanced'] else 'NOT balanced'}; "
                f"{run['seconds']:.1f} s; dead letters after the read: {later})"
            )
        if self.personalization:
            lines += ["", *_render_personalization(self.personalization)]
        lines.append("result: " + ("OK" if self.balanced else "; ".join(self.problems)))
        return "\n".join(lines)


def run_demo(
    *,
    days: int = 3,
    events_per_day: int = 20_000,
    seed: int = 7,
    stream_personalization: bool = False,
    progress: Callable[[str], None] = print,
) -> DemoSummary:
    """Run the main job end to end; raises ``StackError`` when a service cannot start."""
    from confluent_kafka import Producer

    from retail_backbone import generator as gen
    from retail_backbone.pipelines import inventory
    from retail_backbone.pipelines.runners import runner_args
    from retail_backbone.stack import Stack, StackConfig
    from retail_backbone.stack.components.postgres import dsn as pg_dsn

    if days < 2:
        raise ValueError("days must be at least 2 (history and a live day)")
    cfg = StackConfig.load()
    progress("bringing up " + ", ".join(_COMPONENTS) + " ...")
    Stack(cfg, progress=lambda line: progress(f"  {line}")).up(_COMPONENTS)
    bootstrap = f"{cfg.host}:{cfg.port('kafka')}"
    registry = f"http://{cfg.host}:{cfg.port('registry')}"
    dsn = pg_dsn(cfg)
    os.environ.setdefault("BIGTABLE_EMULATOR_HOST", f"{cfg.host}:{cfg.port('bigtable')}")
    run_id = uuid.uuid4().hex[:8]

    gen_cfg = gen.GeneratorConfig(
        seed=seed,
        days=days,
        events_per_day=events_per_day,
        n_products=300,
        n_locations=8,
        n_customers=4_000,
    )
    progress(f"generating {days} days of traffic (seed {seed}) ...")
    events = list(gen.generate_events(gen_cfg))
    live_start = dt.datetime.combine(gen_cfg.start + dt.timedelta(days=days - 1), dt.time(), dt.UTC)
    live_ms = int(live_start.timestamp() * 1000)
    history = [e for e in events if e["envelope"]["event_time"] < live_ms]
    work = Path(cfg.run_dir) / f"demo-{run_id}"
    files = work / "history"
    gen.write_files(iter(history), files, "avro")
    progress(f"  {len(history):,} history events as Avro files under {files}")

    prefix = f"demo.{run_id}."
    topics = [prefix + t for t in inventory.TOPICS]
    progress(f"producing all {len(events):,} events to Kafka ({prefix}retail.*) ...")
    gen.produce_to_kafka(
        iter(events), bootstrap, registry, topic_prefix=f"{prefix}retail.", progress=False
    )
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(CORRUPT_RECORDS):
        producer.produce(topics[0], value=b"\x00\x00\x00\x00\x07not avro " + bytes([i]))
    producer.flush(10)

    _empty_demo_tables(dsn)
    common = [
        f"--postgres_dsn={dsn}",
        f"--table_suffix={TABLE_SUFFIX}",
        f"--bootstrap_servers={bootstrap}",
        f"--registry_url={registry}",
    ]
    progress("backfilling the history from files (batch, direct runner) ...")
    started = time.monotonic()
    backfill = inventory.run(
        [*runner_args("direct", cfg), "--mode=batch", f"--input={files}", *common]
    )
    backfill["seconds"] = time.monotonic() - started
    progress(f"  done in {backfill['seconds']:.1f} s")
    progress("streaming the topics on Flink (Java KafkaIO, early firings every 2 s) ...")
    started = time.monotonic()
    streaming = inventory.run(
        [
            *runner_args("flink", cfg),
            "--mode=streaming",
            "--topics=" + ",".join(topics),
            "--stop_at_end",
            "--early_firing_seconds=2",
            *common,
        ]
    )
    streaming["seconds"] = time.monotonic() - started
    progress(f"  done in {streaming['seconds']:.1f} s")

    summary = _read_back(dsn, run_id, events, history, live_start, backfill, streaming)
    summary.personalization = _personalization(
        cfg, files, prefix, common[1:], progress, stream_personalization
    )
    inventory_types = {t.removeprefix("retail.") for t in inventory.TOPICS}

    def inventory_events(batch: list[dict]) -> int:
        return sum(1 for e in batch if e["envelope"]["event_type"] in inventory_types)

    _check(summary, inventory_events(history), inventory_events(events))
    return summary


def _check(s: DemoSummary, history_events: int, all_events: int) -> None:
    """Nothing lost: each run read what was written for it, and every account balances."""
    if s.backfill["accounting"]["in"] != history_events:
        s.problems.append(
            f"backfill read {s.backfill['accounting']['in']} events, the files hold "
            f"{history_events}"
        )
    if s.streaming["accounting"]["in"] != all_events + CORRUPT_RECORDS:
        s.problems.append(
            f"streaming read {s.streaming['accounting']['in']} records, Kafka holds "
            f"{all_events} events + {CORRUPT_RECORDS} corrupt records"
        )
    for name, run in (("backfill", s.backfill), ("streaming", s.streaming)):
        if not run["accounting"]["balanced"]:
            s.problems.append(f"{name}: in != unique + duplicates + dead letters")
    if s.streaming["accounting"]["dead_letters_at_read"] != CORRUPT_RECORDS:
        s.problems.append(
            f"{CORRUPT_RECORDS} corrupt records produced, "
            f"{s.streaming['accounting']['dead_letters_at_read']} dead-lettered"
        )
    if s.bigtable_rows != s.postgres_rows:
        s.problems.append(f"Bigtable has {s.bigtable_rows} rows, Postgres {s.postgres_rows}")
    for name in ("backfill", "streaming"):
        run = s.personalization.get(name)
        if run is not None and not run["accounting"]["balanced"]:
            s.problems.append(f"personalization {name}: profile stage in != out + dead letters")


def _empty_demo_tables(dsn: str) -> None:
    import psycopg
    from google.cloud import bigtable

    from retail_backbone.stack.components.bigtable import INSTANCE, PROJECT

    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in ("stock_levels", "stock_alerts", "demand_forecast"):
            conn.execute(f"DROP TABLE IF EXISTS {table}{TABLE_SUFFIX}")
    instance = bigtable.Client(project=PROJECT, admin=True).instance(INSTANCE)
    table = instance.table(f"stock_levels{TABLE_SUFFIX}")
    if table.exists():
        table.delete()


def _read_back(
    dsn: str,
    run_id: str,
    events: list[dict],
    history: list[dict],
    live_start: dt.datetime,
    backfill: dict[str, Any],
    streaming: dict[str, Any],
) -> DemoSummary:
    import psycopg

    from retail_backbone.testing import inventory_bigtable_levels

    sfx = TABLE_SUFFIX
    with psycopg.connect(dsn) as conn:
        stores = [
            dict(
                zip(
                    ("location", "skus", "on_hand", "reserved", "available", "out_of_stock"),
                    r,
                    strict=True,
                )
            )
            for r in conn.execute(
                f"SELECT location, count(*), sum(on_hand), sum(reserved), sum(available), "
                f"count(*) FILTER (WHERE available <= 0) FROM stock_levels{sfx} "
                f"GROUP BY location ORDER BY location"
            ).fetchall()
        ]
        alerts = dict(
            conn.execute(f"SELECT kind, count(*) FROM stock_alerts{sfx} GROUP BY kind").fetchall()
        )
        latest = [
            {
                "at": dt.datetime.fromtimestamp(r[0] / 1000, dt.UTC).strftime("%m-%d %H:%M"),
                "kind": r[1],
                "sku": r[2],
                "location": r[3],
                "available": r[4],
                "reorder_point": r[5],
            }
            for r in conn.execute(
                f"SELECT version, kind, sku, location, available, reorder_point "
                f"FROM stock_alerts{sfx} ORDER BY version DESC, alert_id LIMIT 5"
            ).fetchall()
        ]
        reorder = [
            dict(
                zip(
                    ("sku", "location", "forecast", "safety_stock", "reorder_point"), r, strict=True
                )
            )
            for r in conn.execute(
                f"SELECT sku, location, forecast, safety_stock, reorder_point "
                f"FROM demand_forecast{sfx} WHERE day = (SELECT max(day) FROM "
                f"demand_forecast{sfx}) ORDER BY reorder_point DESC, sku LIMIT 5"
            ).fetchall()
        ]
        postgres_rows = conn.execute(f"SELECT count(*) FROM stock_levels{sfx}").fetchone()[0]
    history_days = sorted(
        {
            dt.datetime.fromtimestamp(e["envelope"]["event_time"] / 1000, dt.UTC).date().isoformat()
            for e in history
        }
    )
    return DemoSummary(
        run_id=run_id,
        events=len(events),
        history_days=history_days,
        live_day=live_start.date().isoformat(),
        backfill=backfill,
        streaming=streaming,
        stores=stores,
        alerts=alerts,
        latest_alerts=latest,
        reorder=reorder,
        bigtable_rows=len(inventory_bigtable_levels(sfx)),
        postgres_rows=postgres_rows,
    )


# -- personalization ---------------------------------------------------------------------------


def _personalization(
    cfg: Any,
    files: Path,
    prefix: str,
    common: list[str],
    progress: Callable[[str], None],
    stream: bool,
) -> dict[str, Any]:
    """Backfill the history, stream the topics on Flink if ``stream``, read examples back."""
    from retail_backbone.pipelines import personalization
    from retail_backbone.pipelines.runners import runner_args
    from retail_backbone.testing import drop_personalization_state

    uri = f"bolt://{cfg.host}:{cfg.port('neo4j')}"
    os.environ.setdefault(PII_HASH_KEY_ENV, _DEMO_PII_KEY)
    drop_personalization_state(uri, TABLE_SUFFIX)
    args = [
        *common,
        f"--neo4j_uri={uri}",
        f"--pii_hash_key=env:{PII_HASH_KEY_ENV}",
        f"--stock_table=stock_levels{TABLE_SUFFIX}",
    ]
    out: dict[str, Any] = {}
    progress("personalization: backfilling the history from files (batch, direct runner) ...")
    started = time.monotonic()
    out["backfill"] = personalization.run(
        [*runner_args("direct", cfg), "--mode=batch", f"--input={files}", *args]
    )
    out["backfill"]["seconds"] = time.monotonic() - started
    progress(f"  done in {out['backfill']['seconds']:.1f} s")
    if not stream:
        out.update(_personalization_examples(uri))
        return out
    progress("personalization: streaming the topics on Flink (early firings every 2 s) ...")
    started = time.monotonic()
    out["streaming"] = personalization.run(
        [
            *runner_args("flink", cfg),
            "--mode=streaming",
            "--topics=" + ",".join(prefix + t for t in personalization.TOPICS),
            "--stop_at_end",
            "--early_firing_seconds=2",
            *args,
        ]
    )
    out["streaming"]["seconds"] = time.monotonic() - started
    progress(f"  done in {out['streaming']['seconds']:.1f} s")
    out.update(_personalization_examples(uri))
    return out


def _personalization_examples(uri: str, n: int = 3) -> dict[str, Any]:
    """A few profiles (keyed hash only), their recommendations, related products, graph facts."""
    from google.cloud import bigtable

    from retail_backbone.io.sinks.bigtable import decode_cells
    from retail_backbone.io.sinks.graph import GraphSpec, graph_driver
    from retail_backbone.pipelines import personalization as job
    from retail_backbone.stack.components.bigtable import INSTANCE, PROJECT

    instance = bigtable.Client(project=PROJECT, admin=True).instance(INSTANCE)

    def rows(spec: Any) -> list[Any]:
        table = instance.table(spec.name + TABLE_SUFFIX)
        return [decode_cells(spec, data) for data in table.read_rows()]

    profiles = rows(job.PROFILES_BIGTABLE)
    recs = {r.customer_key: r.items for r in rows(job.RECOMMENDATIONS_BIGTABLE)}
    related = rows(job.RELATED_PRODUCTS_BIGTABLE)
    # The most valuable customers of a few segments (never the id: only the keyed hash).
    chosen, seen = [], set()
    for p in sorted(profiles, key=lambda p: (-p.monetary, p.customer_key)):
        if p.segment not in seen and p.frequency:
            seen.add(p.segment)
            chosen.append(p)
        if len(chosen) == n:
            break
    examples = [
        {
            "customer_key": p.customer_key,
            "segment": p.segment,
            "rfm": f"{p.r_score}{p.f_score}{p.m_score}",
            "orders": p.frequency,
            "monetary": p.monetary,
            "sessions": p.sessions,
            "top_categories": p.category_affinity[:3],
            "top_brands": p.brand_affinity[:2],
            "recommendations": [item[:3] for item in recs.get(p.customer_key, [])[:5]],
        }
        for p in chosen
    ]
    best_related = sorted(related, key=lambda r: (-r.evidence, r.sku))[:n]
    spec = GraphSpec(suffix=TABLE_SUFFIX)
    with graph_driver(uri) as driver:
        counts, _, _ = driver.execute_query(
            f"MATCH (a:{spec.product})-[e]->(b:{spec.product}) "
            "RETURN type(e) AS kind, count(*) AS n ORDER BY kind"
        )
        top = best_related[0].sku if best_related else ""
        neighbours, _, _ = driver.execute_query(
            f"MATCH (p:{spec.product} {{sku: $sku}})-[e:BOUGHT_WITH]-(q:{spec.product}) "
            "RETURN q.sku AS sku, q.category AS category, e.total AS total "
            "ORDER BY e.weight DESC, sku LIMIT 5",
            sku=top,
        )
    return {
        "profiles": len(profiles),
        "examples": examples,
        "related": [{"sku": r.sku, "items": r.items[:5]} for r in best_related],
        "graph_edges": {r["kind"]: r["n"] for r in counts},
        "graph_neighbours": {"sku": top, "bought_with": [r.data() for r in neighbours]},
    }


def _render_personalization(p: dict[str, Any]) -> list[str]:
    lines = [
        f"personalization: {p['profiles']:,} profiles (Bigtable profiles{TABLE_SUFFIX}; "
        "customers shown only as the keyed hash)"
    ]
    for e in p["examples"]:
        cats = ", ".join(f"{c} {s:.0%}" for c, s in e["top_categories"])
        lines.append(
            f"  {e['customer_key'][:12]}  {e['segment']:11} RFM {e['rfm']}  {e['orders']} orders "
            f"{e['monetary']:,.2f}  {e['sessions']} sessions  likes {cats}"
        )
        recs = ", ".join(f"{sku} ({reason})" for sku, _, reason in e["recommendations"])
        lines.append(f"    top 5: {recs or 'none'}")
    lines.append(f"related products (Bigtable related_products{TABLE_SUFFIX})")
    for r in p["related"]:
        lines.append(f"  {r['sku']}: " + ", ".join(f"{s} {w:.2f}" for s, w in r["items"]))
    edges = ", ".join(f"{k} {n:,}" for k, n in p["graph_edges"].items())
    n = p["graph_neighbours"]
    lines.append(f"graph (Product{TABLE_SUFFIX}): {edges}; bought with {n['sku']}:")
    lines.append(
        "  " + ", ".join(f"{q['sku']} ({q['category']}, {q['total']}x)" for q in n["bought_with"])
    )
    for name in ("backfill", "streaming"):
        run = p.get(name)
        if run is None:
            continue
        acc = run["accounting"]
        stage = acc["profiles_stage"]
        balanced = "balanced" if acc["balanced"] else "NOT balanced"
        written = ", ".join(f"{k} {v['written']:,}" for k, v in run["sinks"].items())
        lines.append(
            f"personalization {name:9}: in {run['events_in']:,}, unique {acc['unique_events']:,}, "
            f"duplicates {run['duplicates']:,}; profile stage in {stage['in']:,} = out "
            f"{stage['out']:,} + dead letters {stage['dead_letters']:,} ({balanced}; "
            f"{run['seconds']:.1f} s; dead letters {run['dead_letters']}; written {written})"
        )
    return lines
