"""The inventory job: stock levels, stock alerts and demand forecasts, streaming or backfill.

One pipeline, two modes (``--mode``): only the source and the windowing differ (the transforms
take the mode and ask ``transforms.inventory.windowing`` for their triggers).

Example::

    backbone run inventory --mode batch --input data/backfill --runner direct
    # or, without the stack set-up:
    python -m retail_backbone.pipelines.inventory --mode batch --input data/backfill \\
        --postgres_dsn "env:INVENTORY_PG_DSN" --sinks postgres

Pipeline shape::

    batch:     ReadEventFiles(--input)                    \\
    streaming: ReadFromKafkaEvents(--topics) -> DecodeEvents(avro)
      -> DeduplicateEvents -> UpdateStockLedger -> ToStockLevelRows -> WriteStockLevels (Postgres)
                                                                   -> ServeStockLevels (Bigtable)
                           -> ForecastDemand -> ToDemandForecastRows -> WriteDemandForecast
                           -> DetectStockouts (+ forecasts' reorder points) -> ToStockAlertRows
                              -> WriteStockAlerts
      every dead letter (read/decode, invalid or late events, sink failures) -> MergeDeadLetters
      -> WriteDeadLetters (files and/or dlq.inventory) when a destination is configured

Tables are created at launch by ``run`` (``ensure_tables`` / ``ensure_bigtable_tables``), never
per element. Sinks are idempotent (newest version wins), so a rerun of a backfill leaves the
tables unchanged.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam import coders
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from retail_backbone.io.sinks.rows import DemandForecastRow, StockAlertRow, StockLevelRow
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
from retail_backbone.transforms.inventory.types import DemandForecast, StockAlert, StockLevel

__all__ = [
    "PIPELINE",
    "TOPICS",
    "InventoryOptions",
    "InventoryOutputs",
    "build_pipeline",
    "enabled_sinks",
    "run",
    "sink_targets",
    "start",
    "to_demand_forecast_row",
    "to_stock_alert_row",
    "to_stock_level_row",
]

PIPELINE = "inventory"
TOPICS = (
    "retail.inventory_adjusted",
    "retail.stock_counted",
    "retail.order_placed",
    "retail.order_shipped",
    "retail.order_cancelled",
    "retail.return_processed",
)
SINKS = ("postgres", "bigtable", "kafka")
#: Sinks written when --sinks is not given: a backfill does not re-announce history's alerts.
DEFAULT_SINKS = {"batch": ("postgres", "bigtable"), "streaming": SINKS}
ALERTS_TOPIC = "inventory.alerts"
_DAY_MS = 86_400_000

# Pinned like the transforms' rows: FastPrimitivesCoder encodes these named tuples field by field
# (schema inference would try a RowCoder, which has no mapping for the datetime/date fields).
for _row in (StockLevelRow, StockAlertRow, DemandForecastRow):
    coders.registry.register_coder(_row, coders.FastPrimitivesCoder)


class InventoryOptions(JobOptions, ConnectionOptions, PipelineOptions):
    """Options of the inventory job: its own ``PARAMS`` plus the shared job and connection ones.

    ``params_of(InventoryOptions)`` lists all of them (templates are generated from that).
    """

    PARAMS = (
        Param(
            "forecast_alpha",
            "Holt level smoothing factor, in (0, 1].",
            type=float,
            default=0.3,
        ),
        Param(
            "forecast_beta",
            "Holt trend smoothing factor, in [0, 1].",
            type=float,
            default=0.1,
        ),
        Param(
            "forecast_z",
            "Safety-stock service-level factor (1.65 is about 95%), >= 0.",
            type=float,
            default=1.65,
        ),
        Param(
            "lead_time_days",
            "Replenishment lead time in days, > 0 (reorder point = forecast x lead time + "
            "safety stock).",
            type=float,
            default=2.0,
        ),
    )

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        add_params(parser, cls.PARAMS)


class InventoryOutputs(NamedTuple):
    """What ``build_pipeline`` returns (sink rows, and every dead letter merged)."""

    levels: beam.PCollection
    alerts: beam.PCollection
    forecasts: beam.PCollection
    dead_letters: beam.PCollection


# -- conversions to the serving rows -----------------------------------------------------------


def to_stock_level_row(level: StockLevel) -> StockLevelRow:
    """``updated_at`` is the version's event time, never ``now()``: replays write equal rows."""
    return StockLevelRow(
        sku=level.sku,
        location=level.location,
        on_hand=level.on_hand,
        reserved=level.reserved,
        available=level.available,
        version=level.version,
        updated_at=dt.datetime.fromtimestamp(level.version / 1000, tz=dt.UTC),
        movements_applied=level.movements_applied,
    )


def to_stock_alert_row(alert: StockAlert) -> StockAlertRow:
    return StockAlertRow(
        alert_id=alert.alert_id,
        sku=alert.sku,
        location=alert.location,
        kind=alert.state,
        available=alert.available,
        reorder_point=alert.reorder_point,
        version=alert.version,
    )


def to_alert_record(row: StockAlertRow) -> dict[str, Any]:
    """A stock alert as a ``inventory.alerts`` record (schemas/inventory_alert)."""
    return {
        "alert_id": row.alert_id,
        "sku": row.sku,
        "location": row.location,
        "kind": row.kind,
        "available": row.available,
        "reorder_point": float(row.reorder_point),
        "event_time": row.version,
    }


def to_demand_forecast_row(forecast: DemandForecast) -> DemandForecastRow:
    return DemandForecastRow(
        sku=forecast.sku,
        location=forecast.location,
        day=dt.date.fromisoformat(forecast.day),
        forecast=forecast.forecast,
        trend=forecast.trend,
        safety_stock=forecast.safety_stock,
        reorder_point=forecast.reorder_point,
        version=forecast.version,
        revision=forecast.revision,
    )


# -- options checks beyond single values -------------------------------------------------------


def enabled_sinks(opts: InventoryOptions) -> tuple[str, ...]:
    """The sinks this run writes: ``--sinks``, or the mode's defaults."""
    if not opts.sinks:
        return DEFAULT_SINKS[opts.mode]
    return tuple(dict.fromkeys(s.strip() for s in opts.sinks.split(",") if s.strip()))


def _topics(opts: InventoryOptions) -> list[str]:
    if not opts.topics:
        return list(TOPICS)
    return [t.strip() for t in opts.topics.split(",") if t.strip()]


def check_options(opts: InventoryOptions) -> None:
    """Every launch-time check of the options; raises ``InvalidParams`` listing all problems."""
    validate_params(opts, params_of(InventoryOptions))
    problems = job_problems(opts, enabled_sinks(opts), SINKS, _topics(opts))
    if "postgres" in enabled_sinks(opts) and not opts.postgres_dsn:
        problems.append(
            "--postgres_dsn is required with the postgres sink (a libpq string or "
            "env:VAR), or leave postgres out of --sinks"
        )
    if not 0 < opts.forecast_alpha <= 1 or not 0 <= opts.forecast_beta <= 1:
        problems.append("--forecast_alpha must be in (0, 1] and --forecast_beta in [0, 1]")
    if opts.forecast_z < 0 or opts.lead_time_days <= 0:
        problems.append("--forecast_z must be >= 0 and --lead_time_days > 0")
    if problems:
        raise InvalidParams("invalid pipeline parameters:\n  " + "\n  ".join(problems))


def table_specs(opts: InventoryOptions) -> tuple[tuple, Any]:
    """The Postgres inventory tables and the Bigtable stock table, with ``--table_suffix``."""
    from retail_backbone.io.sinks.bigtable import STOCK_LEVELS_BIGTABLE
    from retail_backbone.io.sinks.postgres import INVENTORY_TABLES

    suffix = opts.table_suffix or ""
    pg = tuple(spec.renamed(spec.name + suffix) for spec in INVENTORY_TABLES)
    bt = STOCK_LEVELS_BIGTABLE.renamed(STOCK_LEVELS_BIGTABLE.name + suffix)
    return pg, bt


def sink_targets(opts: PipelineOptions) -> dict[str, Any]:
    """Every sink step of the job, by step label: where it writes (``SinkTarget``).

    The one place that says which step writes which table: ``build_pipeline`` applies these
    (those whose ``store`` is in ``--sinks``) and ``backbone dlq replay`` writes a sink dead
    letter back through the target of its ``stage``. Honours ``--table_suffix``.
    """
    from retail_backbone.io.sinks.bigtable import BigtableTarget
    from retail_backbone.io.sinks.postgres import PostgresTarget

    opts = opts.view_as(InventoryOptions)
    (pg_levels, pg_alerts, pg_forecast), bt_levels = table_specs(opts)
    return {
        "WriteStockLevels": PostgresTarget(opts.postgres_dsn, pg_levels),
        "WriteStockAlerts": PostgresTarget(opts.postgres_dsn, pg_alerts),
        "WriteDemandForecast": PostgresTarget(opts.postgres_dsn, pg_forecast),
        "ServeStockLevels": BigtableTarget(
            opts.bigtable_project, opts.bigtable_instance, bt_levels
        ),
    }


# -- the pipeline ------------------------------------------------------------------------------


def _read_events(p: beam.Pipeline, opts: InventoryOptions) -> tuple[beam.PCollection, Any]:
    from retail_backbone.transforms.inventory.ledger import LEDGER_EVENT_TYPES

    return read_job_events(p, opts, PIPELINE, LEDGER_EVENT_TYPES, _topics(opts))


def build_pipeline(p: beam.Pipeline, opts: InventoryOptions) -> InventoryOutputs:
    """Wire the inventory job onto ``p``; the mode, sources and sinks come from ``opts``.

    Tables are not created here (``run`` does it at launch); call ``check_options`` first.

    Returns:
        ``InventoryOutputs``: the sink rows (``StockLevelRow``, ``StockAlertRow``,
        ``DemandForecastRow``) and every dead letter, merged.
    """
    from retail_backbone.io.dead_letter_sinks import WriteDeadLetters
    from retail_backbone.transforms.dedup import DeduplicateEvents
    from retail_backbone.transforms.inventory import (
        DetectStockouts,
        ForecastDemand,
        UpdateStockLedger,
        WindowingOptions,
    )
    from retail_backbone.transforms.inventory.windowing import unwindow

    mode = opts.mode
    windowing = WindowingOptions(
        mode=mode,
        early_firing_seconds=opts.early_firing_seconds,
        allowed_lateness_seconds=opts.allowed_lateness_seconds,
    )
    events, read_dead = _read_events(p, opts)
    unique = events | "DeduplicateEvents" >> DeduplicateEvents(mode)

    ledger = unique | "UpdateStockLedger" >> UpdateStockLedger(
        mode, windowing=windowing, pipeline=PIPELINE
    )
    # Days kept open per key in streaming must cover the allowed lateness.
    keep_days = max(3, math.ceil(windowing.window_lateness_seconds * 1000 / _DAY_MS) + 1)
    demand = unique | "ForecastDemand" >> ForecastDemand(
        mode,
        windowing=windowing,
        pipeline=PIPELINE,
        alpha=opts.forecast_alpha,
        beta=opts.forecast_beta,
        z=opts.forecast_z,
        lead_time_days=opts.lead_time_days,
        keep_days=keep_days,
    )
    stockouts = {"events": unique, "forecasts": demand.forecasts} | "DetectStockouts" >> (
        DetectStockouts(mode, windowing=windowing, pipeline=PIPELINE)
    )

    levels = ledger.levels | "ToStockLevelRows" >> beam.Map(to_stock_level_row).with_output_types(
        StockLevelRow
    )
    alerts = stockouts.alerts | "ToStockAlertRows" >> beam.Map(
        to_stock_alert_row
    ).with_output_types(StockAlertRow)
    forecasts = demand.forecasts | "ToDemandForecastRows" >> beam.Map(
        to_demand_forecast_row
    ).with_output_types(DemandForecastRow)

    dead = [read_dead, ledger.dead_letters, demand.dead_letters, stockouts.dead_letters]
    sinks = enabled_sinks(opts)
    policy = sink_policy(opts)
    rows_of = {
        "WriteStockLevels": levels,
        "WriteStockAlerts": alerts,
        "WriteDemandForecast": forecasts,
        "ServeStockLevels": levels,
    }
    sink_dead = [
        rows_of[label] | label >> target.transform(PIPELINE, policy)
        for label, target in sink_targets(opts).items()
        if target.store in sinks
    ]
    if "kafka" in sinks:
        sink_dead.append(_publish_alerts(alerts, opts))
    if windowing.streaming:
        # Sink outputs keep their input's triggers; dead letters leave in the plain global window.
        sink_dead = [
            d | f"UnwindowSinkDeadLetters{i}" >> unwindow() for i, d in enumerate(sink_dead)
        ]
    dead_letters = (*dead, *sink_dead) | "MergeDeadLetters" >> beam.Flatten()

    if opts.dead_letters_dir or opts.dead_letters_to_kafka:
        dead_letters | "WriteDeadLetters" >> WriteDeadLetters(
            PIPELINE,
            bootstrap=opts.bootstrap_servers if opts.dead_letters_to_kafka else None,
            registry_url=opts.registry_url if opts.dead_letters_to_kafka else None,
            files_dir=opts.dead_letters_dir,
        )
    return InventoryOutputs(
        levels=levels, alerts=alerts, forecasts=forecasts, dead_letters=dead_letters
    )


def alerts_topic(opts: InventoryOptions) -> str:
    """``inventory.alerts``, with ``--table_suffix`` (per-test or blue/green outputs)."""
    return ALERTS_TOPIC + (opts.table_suffix or "")


def _publish_alerts(alerts: beam.PCollection, opts: InventoryOptions) -> beam.PCollection:
    """Alerts to ``inventory.alerts`` (Avro, keyed ``sku#location``); failures as dead letters.

    The alert id is deterministic, so consumers drop the copies a replay publishes again.
    """
    from retail_backbone.io.kafka_sink import EncodeAvroMessages, WriteToKafkaEvents
    from retail_backbone.schemas.catalog import SCHEMAS_DIR, subject_for_topic

    schema = (SCHEMAS_DIR / "inventory_alert" / "v1.avsc").read_text()
    return (
        alerts
        | "ToAlertRecords" >> beam.Map(to_alert_record)
        | "EncodeAlerts"
        >> EncodeAvroMessages(
            opts.registry_url,
            alerts_topic(opts),
            subject_for_topic(alerts_topic(opts)),
            schema,
            key_fn=lambda r: f"{r['sku']}#{r['location']}",
            event_id_fn=lambda r: r["alert_id"],
        )
        | "PublishAlerts" >> WriteToKafkaEvents(opts.bootstrap_servers, pipeline=PIPELINE)
    )


# -- launch ------------------------------------------------------------------------------------


def ensure_sink_tables(opts: InventoryOptions) -> list[str]:
    """Create the enabled sinks' tables if missing (at launch); returns what was done."""
    changes = []
    for target in sink_targets(opts).values():
        if target.store in enabled_sinks(opts):
            changes += target.ensure()
    if "kafka" in enabled_sinks(opts):
        from retail_backbone.io.kafka import ensure_topics

        changes += [
            f"created topic {t}"
            for t in ensure_topics(opts.bootstrap_servers, [alerts_topic(opts)])
        ]
    return changes


def summarize(result: Any, opts: InventoryOptions) -> dict[str, Any]:
    """Counters of a finished run: events in, dead letters by class, rows written per sink."""
    counters = RunCounters.of(result)
    get = counters.get
    events_in = counters.events_in(PIPELINE, opts.mode)
    by_stage = counters.dead_letters_by_stage()
    by_class = counters.dead_letters_by_class()
    sinks = counters.sinks(
        PIPELINE,
        (
            "WriteStockLevels",
            "WriteStockAlerts",
            "WriteDemandForecast",
            "ServeStockLevels",
            "PublishAlerts",
        ),
    )
    # Accounting: every event read is kept once, dropped as a duplicate, or dead-lettered at the
    # read (undecodable, invalid); late data and sink failures are dead letters of later stages.
    read_stages = ("ReadEventFiles", "DecodeEvents", "ReadFromKafka")
    rejected_at_read = sum(v for stage, v in by_stage.items() if stage in read_stages)
    unique = get("dedup", "unique")
    outside = get(PIPELINE, "ReadEventFiles.outside_time_range")
    duplicates = get("dedup", "duplicates")
    return {
        "run_id": opts.run_id,
        "accounting": {
            "in": events_in,
            "unique": unique,
            "duplicates": duplicates,
            "dead_letters_at_read": rejected_at_read,
            "outside_time_range": outside,
            "balanced": events_in == unique + duplicates + rejected_at_read + outside,
        },
        "mode": opts.mode,
        "state": str(result.state),
        "events_in": events_in,
        "events_outside_time_range": outside,
        "duplicates": duplicates,
        "ledger": {
            k: get("inventory_ledger", k)
            for k in ("movements", "events_ignored", "events_mirrored", "events_invalid", "keys")
        },
        "dead_letters": sum(by_stage.values()),
        "dead_letters_by_class": dict(sorted(by_class.items())),
        "dead_letters_by_stage": dict(sorted(by_stage.items())),
        "sinks": sinks,
    }


def start(argv: list[str] | None = None) -> tuple[Any, InventoryOptions]:
    """Validate the options, create the tables and submit the job without waiting for it.

    Returns the runner's ``PipelineResult`` and the options (with ``run_id`` set). A streaming
    job without a stop position runs until it is cancelled or stopped (``flink_ops``).

    Raises:
        InvalidParams: bad or missing options (before anything starts).
        SinkConfigError: a sink's store is unreachable or its table does not fit.
    """
    opts = InventoryOptions(argv)
    check_options(opts)
    if opts.run_id is None:
        opts.run_id = uuid.uuid4().hex[:12]
    if opts.mode == "streaming":
        # Runners choose their streaming engine (processing-time triggers) from this flag.
        opts.view_as(StandardOptions).streaming = True
    ensure_sink_tables(opts)
    p = beam.Pipeline(options=opts)
    build_pipeline(p, opts)
    return p.run(), opts


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Validate the options, create the tables, run the job and return its summary.

    Raises:
        InvalidParams: bad or missing options (before anything starts).
        SinkConfigError: a sink's store is unreachable or its table does not fit.
    """
    result, opts = start(argv)
    result.wait_until_finish()
    return summarize(result, opts)


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
