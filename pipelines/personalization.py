"""The personalization job: customer profiles, the product graph and recommendations.

One pipeline, two modes (``--mode``): only the source and the windowing differ.

Example::

    backbone run personalization --mode batch --input data/backfill --runner direct
    # or, without the stack set-up:
    PII_HASH_KEY=... python -m retail_backbone.pipelines.personalization --mode batch \\
        --input data/backfill --pii_hash_key env:PII_HASH_KEY --sinks bigtable,graph

Pipeline shape::

    batch:     ReadEventFiles(--input)                    \\
    streaming: ReadFromKafkaEvents(--topics) -> DecodeEvents(avro)
      -> DeduplicateEvents -> ExtractCatalog --------------------------> WriteProductNodes (graph)
                           -> BuildCustomerProfiles (+ catalog) -> ServeProfiles (Bigtable)
                           -> BuildCoPurchaseGraph -> WriteProductGraph (graph)
                           -> Recommend (profiles, edges, catalog, [out of stock])
                                -> ServeRecommendations, ServeRelatedProducts (Bigtable)
      every dead letter (read/decode, invalid or late events, sink failures) -> MergeDeadLetters
      -> WriteDeadLetters (files and/or dlq.personalization) when a destination is configured

Bigtable tables (``--table_suffix`` appended), all with cell timestamps = version and a
tie-breaker for rows that streaming refines without a newer event (late data within the allowed
lateness): of two rows with one version the higher tie-breaker wins:

- ``profiles`` (family ``p``), row key ``customer_key`` = HMAC-SHA256(``--pii_hash_key``,
  customer id), 32 hex digits. Customer ids are sequential (``CUST-0000001``...), so keyed by
  the id new customers would all land on the last tablet; the hash spreads every write
  uniformly, and a point lookup hashes the id the same way. The only table with PII.
  Tie-breaker ``revision`` (events applied, then session coverage; ``profile_revision``).
- ``recommendations`` (family ``r``), row key ``customer_key``: ``items`` = [[sku, score,
  reason]]; tie-breaker the profile's ``revision``.
- ``related_products`` (family ``r``), row key ``sku``: ``items`` = [[sku, score]];
  tie-breaker ``evidence`` (the summed ``total`` of the product's edges).

The graph (``--neo4j_uri``): see ``io/sinks/graph.py``; constraints and indexes are created at
launch. Sinks are idempotent (newest version wins, never increments): a rerun of a backfill
writes nothing new.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections import Counter
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from retail_backbone.io.sinks.bigtable import BigtableTableSpec
from retail_backbone.io.sinks.graph import GraphSpec
from retail_backbone.pipelines.connections import ConnectionOptions
from retail_backbone.pipelines.job_options import (
    JobOptions,
    job_problems,
    params_of,
    read_job_events,
    sink_policy,
)
from retail_backbone.pipelines.params import InvalidParams, Param, add_params, validate_params
from retail_backbone.pipelines.run_counters import RunCounters
from retail_backbone.transforms.personalization.types import (
    CustomerProfile,
    CustomerRecommendations,
    RelatedProducts,
)

__all__ = [
    "PIPELINE",
    "PROFILES_BIGTABLE",
    "RECOMMENDATIONS_BIGTABLE",
    "RELATED_PRODUCTS_BIGTABLE",
    "TOPICS",
    "PersonalizationOptions",
    "PersonalizationOutputs",
    "build_pipeline",
    "check_options",
    "run",
    "sink_targets",
    "start",
]

PIPELINE = "personalization"
EVENT_TYPES = (
    "product_viewed",
    "cart_updated",
    "order_placed",
    "return_processed",
    "customer_upserted",
    "product_upserted",
)
TOPICS = tuple(f"retail.{t}" for t in EVENT_TYPES)
SINKS = ("bigtable", "graph")

#: Served profiles (the only table with PII), keyed by the HMAC of the customer id. Its dead
#: letters carry the PII fields sealed with a key derived from --pii_hash_key (``table_specs``).
PROFILES_BIGTABLE = BigtableTableSpec(
    name="profiles",
    family="p",
    key=("customer_key",),
    tiebreak="revision",
    row_type=CustomerProfile,
    sealed=("customer_id", "email", "phone", "address"),
)
#: Top-k products per customer, keyed by the same HMAC.
RECOMMENDATIONS_BIGTABLE = BigtableTableSpec(
    name="recommendations",
    family="r",
    key=("customer_key",),
    tiebreak="revision",
    row_type=CustomerRecommendations,
)
#: Top-k related products per product, keyed by sku.
RELATED_PRODUCTS_BIGTABLE = BigtableTableSpec(
    name="related_products",
    family="r",
    key=("sku",),
    tiebreak="evidence",
    row_type=RelatedProducts,
)


class PersonalizationOptions(JobOptions, ConnectionOptions, PipelineOptions):
    """Options of the personalization job: its own ``PARAMS`` plus the shared ones."""

    PARAMS = (
        Param(
            "pii_hash_key",
            "Key of the HMAC that replaces customer ids outside the profile store: env:VAR "
            "(read on the workers) or a literal (tests only). Required.",
            secret=True,
        ),
        Param(
            "session_gap_minutes",
            "Inactivity that ends a customer's session, in minutes (> 0).",
            type=float,
            default=30.0,
        ),
        Param(
            "affinity_half_life_days",
            "Half-life of category/brand interest in the profiles, in days (> 0).",
            type=float,
            default=14.0,
        ),
        Param(
            "edge_half_life_days",
            "Half-life of co-purchase/co-view edge weights, in days (> 0).",
            type=float,
            default=14.0,
        ),
        Param(
            "last_viewed_n",
            "Distinct last-viewed products kept per profile (>= 1).",
            type=int,
            default=10,
        ),
        Param(
            "recommend_top_k",
            "Recommendations per customer and related products per product (>= 1).",
            type=int,
            default=10,
        ),
        Param(
            "profile_as_of",
            "Reference day (YYYY-MM-DD, UTC midnight) for recency and decay. Default: the "
            "end of --end_date in batch, else each customer's latest event.",
            regex=r"\d{4}-\d{2}-\d{2}",
        ),
        Param(
            "stock_table",
            "Bigtable table with the inventory job's stock levels (e.g. stock_levels); skus "
            "with nothing available anywhere are not recommended. Read at launch. Default: "
            "stock unknown, nothing excluded.",
            regex=r"[A-Za-z0-9_.-]+",
        ),
        Param(
            "neo4j_uri",
            "Graph store Bolt URI.",
            default="bolt://127.0.0.1:7687",
        ),
        Param("neo4j_user", "Graph store user. Default: no authentication."),
        Param(
            "neo4j_password",
            "Graph store password: env:VAR (read on the workers) or a literal.",
            secret=True,
        ),
    )

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        add_params(parser, cls.PARAMS)


class PersonalizationOutputs(NamedTuple):
    """What ``build_pipeline`` returns (sink rows, and every dead letter merged)."""

    profiles: beam.PCollection
    edges: beam.PCollection
    related: beam.PCollection
    recommendations: beam.PCollection
    products: beam.PCollection
    dead_letters: beam.PCollection


# -- options -----------------------------------------------------------------------------------


def _sinks(opts: PersonalizationOptions) -> tuple[str, ...]:
    if not opts.sinks:
        return SINKS
    return tuple(dict.fromkeys(s.strip() for s in opts.sinks.split(",") if s.strip()))


def _topics(opts: PersonalizationOptions) -> list[str]:
    if not opts.topics:
        return list(TOPICS)
    return [t.strip() for t in opts.topics.split(",") if t.strip()]


def _day_ms(day: str) -> int:
    d = dt.date.fromisoformat(day)
    return int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp() * 1000)


def as_of_ms(opts: PersonalizationOptions) -> int | None:
    """The profiles' reference time: --profile_as_of, else --end_date in batch, else None."""
    if opts.profile_as_of:
        return _day_ms(opts.profile_as_of)
    if opts.mode == "batch" and opts.end_date:
        return _day_ms(opts.end_date)
    return None


def check_options(opts: PersonalizationOptions) -> None:
    """Every launch-time check of the options; raises ``InvalidParams`` listing all problems."""
    validate_params(opts, params_of(PersonalizationOptions))
    problems = job_problems(opts, _sinks(opts), SINKS, _topics(opts))
    if not opts.pii_hash_key:
        problems.append(
            "--pii_hash_key is required: the HMAC key for customer ids (env:VAR), so that "
            "no output outside the profile store carries a customer id"
        )
    for name in ("session_gap_minutes", "affinity_half_life_days", "edge_half_life_days"):
        if getattr(opts, name) <= 0:
            problems.append(f"--{name} must be positive")
    if opts.last_viewed_n < 1 or opts.recommend_top_k < 1:
        problems.append("--last_viewed_n and --recommend_top_k must be >= 1")
    if problems:
        raise InvalidParams("invalid pipeline parameters:\n  " + "\n  ".join(problems))


def table_specs(opts: PersonalizationOptions) -> dict[str, BigtableTableSpec]:
    """The Bigtable tables, with ``--table_suffix``."""
    suffix = opts.table_suffix or ""
    profiles = dataclasses.replace(PROFILES_BIGTABLE, seal_key=opts.pii_hash_key)
    return {
        spec.name: spec.renamed(spec.name + suffix)
        for spec in (profiles, RECOMMENDATIONS_BIGTABLE, RELATED_PRODUCTS_BIGTABLE)
    }


def graph_spec(opts: PersonalizationOptions) -> GraphSpec:
    """Node labels, with ``--table_suffix`` (``Product_blue``)."""
    return GraphSpec(suffix=opts.table_suffix or "")


def sink_targets(opts: PipelineOptions) -> dict[str, Any]:
    """Every sink step of the job, by step label: where it writes (``SinkTarget``).

    The one place that says which step writes which table or graph: ``build_pipeline`` applies
    these (those whose ``store`` is in ``--sinks``) and ``backbone dlq replay`` writes a sink
    dead letter back through the target of its ``stage``. Honours ``--table_suffix``.
    """
    from retail_backbone.io.sinks.bigtable import BigtableTarget
    from retail_backbone.io.sinks.graph import GraphTarget

    opts = opts.view_as(PersonalizationOptions)
    specs = table_specs(opts)
    project, instance = opts.bigtable_project, opts.bigtable_instance
    graph = graph_spec(opts)
    auth = {"user": opts.neo4j_user, "password": opts.neo4j_password}
    return {
        "ServeProfiles": BigtableTarget(project, instance, specs["profiles"]),
        "ServeRecommendations": BigtableTarget(project, instance, specs["recommendations"]),
        "ServeRelatedProducts": BigtableTarget(project, instance, specs["related_products"]),
        "WriteProductNodes": GraphTarget(opts.neo4j_uri, graph, "products", **auth),
        "WriteProductGraph": GraphTarget(opts.neo4j_uri, graph, "edges", **auth),
    }


def out_of_stock_skus(opts: PersonalizationOptions) -> list[str]:
    """Skus with nothing available at any location in ``--stock_table`` (read at launch)."""
    from google.cloud import bigtable
    from google.cloud.bigtable.row_filters import CellsColumnLimitFilter

    from retail_backbone.io.sinks.bigtable import STOCK_LEVELS_BIGTABLE, decode_cells

    spec = STOCK_LEVELS_BIGTABLE.renamed(opts.stock_table)
    client = bigtable.Client(project=opts.bigtable_project, admin=False)
    table = client.instance(opts.bigtable_instance).table(spec.name)
    available: Counter = Counter()
    for data in table.read_rows(filter_=CellsColumnLimitFilter(1)):
        row = decode_cells(spec, data)
        available[row.sku] += max(0, row.available)
    return sorted(sku for sku, units in available.items() if units <= 0)


# -- the pipeline ------------------------------------------------------------------------------


def _read_events(p: beam.Pipeline, opts: PersonalizationOptions) -> tuple[Any, Any]:
    return read_job_events(p, opts, PIPELINE, EVENT_TYPES, _topics(opts))


def build_transforms(
    events: beam.PCollection,
    opts: PersonalizationOptions,
    out_of_stock: list[str] | None = None,
) -> dict[str, Any]:
    """The business part: deduplicated events -> catalog, profiles, graph, recommendations.

    Shared by ``build_pipeline`` and the offline evaluation (``benchmarks/``).
    """
    from retail_backbone.transforms.dedup import DeduplicateEvents
    from retail_backbone.transforms.inventory.windowing import WindowingOptions
    from retail_backbone.transforms.personalization import (
        BuildCoPurchaseGraph,
        BuildCustomerProfiles,
        ExtractCatalog,
        ProfileSettings,
        Recommend,
        RecommendSettings,
    )

    windowing = WindowingOptions(
        mode=opts.mode,
        early_firing_seconds=opts.early_firing_seconds,
        allowed_lateness_seconds=opts.allowed_lateness_seconds,
    )
    unique = events | "DeduplicateEvents" >> DeduplicateEvents(opts.mode)
    catalog = unique | "ExtractCatalog" >> ExtractCatalog(windowing)
    profiles = unique | "BuildCustomerProfiles" >> BuildCustomerProfiles(
        windowing,
        catalog=catalog,
        hash_key=opts.pii_hash_key,
        settings=ProfileSettings(
            half_life_days=opts.affinity_half_life_days,
            last_n=opts.last_viewed_n,
            session_gap_minutes=opts.session_gap_minutes,
            as_of_ms=as_of_ms(opts),
        ),
        pipeline=PIPELINE,
    )
    graph = unique | "BuildCoPurchaseGraph" >> BuildCoPurchaseGraph(
        windowing, half_life_days=opts.edge_half_life_days, pipeline=PIPELINE
    )
    inputs = {
        "profiles": profiles.profiles,
        "edges": graph.edges,
        "events": unique,
        "catalog": catalog,
    }
    if out_of_stock:
        inputs["out_of_stock"] = events.pipeline | "OutOfStock" >> beam.Create(
            sorted(out_of_stock)
        ).with_output_types(str)
    recs = inputs | "Recommend" >> Recommend(
        windowing,
        RecommendSettings(top_k=opts.recommend_top_k, half_life_days=opts.edge_half_life_days),
    )
    return {
        "windowing": windowing,
        "catalog": catalog,
        "products": catalog | "ProductRows" >> beam.Values(),
        "profiles": profiles.profiles,
        "edges": graph.edges,
        "related": recs.related,
        "recommendations": recs.customers,
        "dead_letters": [profiles.dead_letters, graph.dead_letters],
    }


def build_pipeline(
    p: beam.Pipeline, opts: PersonalizationOptions, out_of_stock: list[str] | None = None
) -> PersonalizationOutputs:
    """Wire the personalization job onto ``p``; mode, sources and sinks come from ``opts``.

    Tables and graph constraints are not created here (``run`` does it at launch); call
    ``check_options`` first.
    """
    from retail_backbone.io.dead_letter_sinks import WriteDeadLetters
    from retail_backbone.transforms.inventory.windowing import unwindow

    events, read_dead = _read_events(p, opts)
    t = build_transforms(events, opts, out_of_stock)
    sinks = _sinks(opts)
    policy = sink_policy(opts)
    rows_of = {
        "ServeProfiles": t["profiles"],
        "ServeRecommendations": t["recommendations"],
        "ServeRelatedProducts": t["related"],
        "WriteProductNodes": t["products"],
        "WriteProductGraph": t["edges"],
    }
    sink_dead = [
        rows_of[label] | label >> target.transform(PIPELINE, policy)
        for label, target in sink_targets(opts).items()
        if target.store in sinks
    ]
    if t["windowing"].streaming:
        sink_dead = [
            d | f"UnwindowSinkDeadLetters{i}" >> unwindow() for i, d in enumerate(sink_dead)
        ]
    dead_letters = (read_dead, *t["dead_letters"], *sink_dead) | "MergeDeadLetters" >> (
        beam.Flatten()
    )
    if opts.dead_letters_dir or opts.dead_letters_to_kafka:
        dead_letters | "WriteDeadLetters" >> WriteDeadLetters(
            PIPELINE,
            bootstrap=opts.bootstrap_servers if opts.dead_letters_to_kafka else None,
            registry_url=opts.registry_url if opts.dead_letters_to_kafka else None,
            files_dir=opts.dead_letters_dir,
        )
    return PersonalizationOutputs(
        profiles=t["profiles"],
        edges=t["edges"],
        related=t["related"],
        recommendations=t["recommendations"],
        products=t["products"],
        dead_letters=dead_letters,
    )


# -- launch ------------------------------------------------------------------------------------


def ensure_sinks(opts: PersonalizationOptions) -> list[str]:
    """Create the enabled sinks' tables, constraints and indexes if missing (at launch)."""
    from retail_backbone.io.sinks.bigtable import ensure_bigtable_tables
    from retail_backbone.io.sinks.graph import ensure_graph_schema

    changes = []
    if "bigtable" in _sinks(opts):
        changes += ensure_bigtable_tables(
            opts.bigtable_project, opts.bigtable_instance, table_specs(opts).values()
        )
    if "graph" in _sinks(opts):
        changes += ensure_graph_schema(
            opts.neo4j_uri, graph_spec(opts), opts.neo4j_user, opts.neo4j_password
        )
    return changes


_SINK_LABELS = (
    "ServeProfiles",
    "ServeRecommendations",
    "ServeRelatedProducts",
    "WriteProductNodes",
    "WriteProductGraph",
)


def summarize(result: Any, opts: PersonalizationOptions) -> dict[str, Any]:
    """Counters of a finished run, with the accounting per stage (in = out + dead letters)."""
    counters = RunCounters.of(result)
    get = counters.get
    events_in = counters.events_in(PIPELINE, opts.mode)
    by_stage = counters.dead_letters_by_stage()
    by_class = counters.dead_letters_by_class()
    sinks = counters.sinks(PIPELINE, _SINK_LABELS)
    prof = {
        k: get("personalization_profiles", k)
        for k in ("contributions", "anonymous", "ignored", "invalid", "profiles_emitted")
    }
    graph = {k: get("personalization_graph", k) for k in ("orders", "views", "ignored", "invalid")}
    duplicates = get("dedup", "duplicates")
    read_dead = sum(
        n for stage, n in by_stage.items() if stage.startswith(("ReadEventFiles", "DecodeEvents"))
    )
    outside = get(PIPELINE, "ReadEventFiles.outside_time_range")
    unique = events_in - outside - read_dead - duplicates
    late_profiles = get("late_data", "BuildCustomerProfiles")
    accounting = {
        "unique_events": unique,
        "profiles_stage": {
            "in": unique,
            "out": prof["contributions"] + prof["anonymous"] + prof["ignored"],
            "dead_letters": prof["invalid"] + late_profiles,
        },
    }
    stage = accounting["profiles_stage"]
    accounting["balanced"] = stage["in"] == stage["out"] + stage["dead_letters"]
    return {
        "run_id": opts.run_id,
        "mode": opts.mode,
        "state": str(result.state),
        "events_in": events_in,
        "events_outside_time_range": outside,
        "duplicates": duplicates,
        "profiles": prof,
        "graph": graph,
        "recommend": {
            k: get("personalization_recommend", k)
            for k in ("customers", "customers_without_candidates")
        },
        "accounting": accounting,
        "dead_letters": sum(by_stage.values()),
        "dead_letters_by_class": dict(sorted(by_class.items())),
        "dead_letters_by_stage": dict(sorted(by_stage.items())),
        "sinks": sinks,
    }


def start(argv: list[str] | None = None) -> tuple[Any, PersonalizationOptions]:
    """Validate the options, create tables and constraints, submit the job without waiting.

    Returns the runner's ``PipelineResult`` and the options (with ``run_id`` set).

    Raises:
        InvalidParams: bad or missing options (before anything starts).
        SinkConfigError: a store is unreachable or a table does not fit.
    """
    opts = PersonalizationOptions(argv)
    check_options(opts)
    if opts.run_id is None:
        opts.run_id = uuid.uuid4().hex[:12]
    if opts.mode == "streaming":
        opts.view_as(StandardOptions).streaming = True
    ensure_sinks(opts)
    out_of_stock = out_of_stock_skus(opts) if opts.stock_table else None
    p = beam.Pipeline(options=opts)
    build_pipeline(p, opts, out_of_stock)
    return p.run(), opts


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Validate the options, create tables and constraints, run the job, return its summary.

    Raises:
        InvalidParams: bad or missing options (before anything starts).
        SinkConfigError: a store is unreachable or a table does not fit.
    """
    result, opts = start(argv)
    result.wait_until_finish()
    return summarize(result, opts)


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
