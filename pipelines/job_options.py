"""Options every streaming/batch job shares: mode, sources, bounds, lateness, dead letters, sinks.

Declared once here (Beam parses every options class for every pipeline, so two pipelines cannot
both declare ``--mode``); a pipeline's own options class inherits them::

    class InventoryOptions(JobOptions, ConnectionOptions, PipelineOptions):
        PARAMS = (Param("forecast_alpha", ...),)

``PipelineOptions`` is listed last and directly so that Beam (which walks only its direct
subclasses when it serialises options) still sees the pipeline's own parameters.
``params_of(InventoryOptions)`` gives every parameter the pipeline accepts, in declaration order,
for templates and documentation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from apache_beam.options.pipeline_options import PipelineOptions

from retail_backbone.pipelines.params import Param, add_params

if TYPE_CHECKING:
    from retail_backbone.io.sinks.base import SinkPolicy

__all__ = [
    "JobOptions",
    "job_problems",
    "params_of",
    "sink_policy",
]

_DATE = r"\d{4}-\d{2}-\d{2}"


class JobOptions(PipelineOptions):
    PARAMS = (
        Param(
            "mode",
            "Execution mode: streaming (Kafka topics) or batch (date-partitioned files).",
            choices=("streaming", "batch"),
            default="batch",
        ),
        Param(
            "input",
            "Batch: root folder of event files, <input>/<event_type>/dt=YYYY-MM-DD/part-*.avro|"
            "parquet|jsonl (local or gs://). Required in batch mode.",
        ),
        Param(
            "start_date",
            "Batch: first day to read, YYYY-MM-DD (UTC, inclusive). Default: every day found.",
            regex=_DATE,
        ),
        Param(
            "end_date",
            "Batch: day to stop before, YYYY-MM-DD (UTC, exclusive). Default: every day found.",
            regex=_DATE,
        ),
        Param(
            "topics",
            "Streaming: comma-separated Kafka topics to read. Default: the pipeline's own topics.",
        ),
        Param(
            "group_id",
            "Streaming: Kafka consumer group; the read starts at its committed offsets and "
            "commits. Default: none (read from the earliest offsets, commit nothing).",
        ),
        Param(
            "stop_when_idle_seconds",
            "Streaming: end each partition after this many seconds without new records (a "
            "bounded catch-up run). Default: read forever.",
            type=float,
        ),
        Param(
            "stop_at_end",
            "Streaming: read what the topics hold at launch, then stop (a bounded catch-up or "
            "replay run that never waits for new records).",
            type=bool,
            default=False,
        ),
        Param(
            "sinks",
            "Comma-separated sinks to write. Default: every sink of the pipeline.",
            regex=r"[a-z]+(,[a-z]+)*",
        ),
        Param(
            "table_suffix",
            "Appended to every output's name (tables, and topics the job writes such as "
            "inventory.alerts), e.g. _blue for blue/green loads or per-test outputs "
            "(lower-case letters, digits, underscores). Default: none.",
            regex=r"[a-z0-9_]+",
        ),
        Param(
            "sink_batch_size",
            "Rows per write of every sink (a bundle's remainder is written at its end).",
            type=int,
            default=500,
        ),
        Param(
            "sink_max_attempts",
            "Attempts per batch on transient store errors, with exponential backoff (1 = no "
            "retry); then the rows go to the dead letters as sink_unavailable.",
            type=int,
            default=4,
        ),
        Param(
            "sink_breaker_threshold",
            "Consecutive failed batches (after their retries) that open a sink's circuit "
            "breaker: rows then go straight to the dead letters as sink_unavailable.",
            type=int,
            default=3,
        ),
        Param(
            "sink_breaker_reset_seconds",
            "How long an open breaker waits before one probe batch is tried, in seconds.",
            type=float,
            default=30.0,
        ),
        Param(
            "allowed_lateness_seconds",
            "Streaming: how far behind the watermark an event may arrive and still count, in "
            "seconds; older events go to the dead letters (class late).",
            type=int,
            default=3600,
        ),
        Param(
            "early_firing_seconds",
            "Streaming: emit updated results this often (processing time, whole seconds).",
            type=int,
            default=30,
        ),
        Param(
            "dead_letters_dir",
            "Write dead letters as JSON lines under <dir>/dt=YYYY-MM-DD/ (local or gs://). "
            "Default: not written to files.",
        ),
        Param(
            "dead_letters_to_kafka",
            "Also produce dead letters to the pipeline's dlq.<pipeline> topic (Avro, via "
            "--registry_url).",
            type=bool,
            default=False,
        ),
    )

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        add_params(parser, cls.PARAMS)


def params_of(options_class: type[PipelineOptions]) -> tuple[Param, ...]:
    """Every ``Param`` an options class accepts: its own first, then inherited ones."""
    seen: dict[str, Param] = {}
    for cls in options_class.mro():
        for param in cls.__dict__.get("PARAMS", ()):
            seen.setdefault(param.name, param)
    return tuple(seen.values())


def sink_policy(opts: PipelineOptions) -> SinkPolicy:
    """The sinks' batching, retry and breaker settings from the ``--sink_*`` options.

    Raises:
        SinkConfigError: a value out of range (e.g. ``--sink_batch_size=0``).
    """
    from retail_backbone.io.sinks.base import SinkPolicy

    job = opts.view_as(JobOptions)
    return SinkPolicy(
        batch_size=job.sink_batch_size,
        max_attempts=job.sink_max_attempts,
        breaker_threshold=job.sink_breaker_threshold,
        breaker_reset_s=job.sink_breaker_reset_seconds,
    )


def read_job_events(
    p: Any, opts: Any, pipeline: str, event_types: Sequence[str], topics: Sequence[str]
) -> tuple[Any, Any]:
    """The job's typed events and read dead letters, per ``--mode``.

    Batch: ``ReadEventFiles`` over ``--input`` (``event_types``, ``--start_date``/``--end_date``).
    Streaming: ``ReadFromKafkaEvents`` over ``topics`` (``--group_id``, ``--stop_at_end`` or
    ``--stop_when_idle_seconds``), then ``DecodeEvents`` (Avro through ``--registry_url``).
    Step labels (``ReadEventFiles``, ``ReadFromKafka``, ``DecodeEvents``) are stable: savepoints
    and Dataflow updates rely on them.
    """
    if opts.mode == "batch":
        from retail_backbone.io.files import ReadEventFiles

        read = p | "ReadEventFiles" >> ReadEventFiles(
            opts.input,
            pipeline=pipeline,
            event_types=event_types,
            start=opts.start_date,
            end=opts.end_date,
        )
        return read.events, read.dead_letters
    from retail_backbone.io.events import DecodeEvents
    from retail_backbone.io.kafka_source import ReadFromKafkaEvents, StopPosition

    stop = None
    if opts.stop_at_end:
        stop = StopPosition.at_end()
    elif opts.stop_when_idle_seconds:
        stop = StopPosition.when_idle(opts.stop_when_idle_seconds)
    records = p | "ReadFromKafka" >> ReadFromKafkaEvents(
        opts.bootstrap_servers, list(topics), group_id=opts.group_id, stop=stop
    )
    decoded = records | "DecodeEvents" >> DecodeEvents(
        pipeline, fmt="avro", registry_url=opts.registry_url
    )
    return decoded.events, decoded.dead_letters


def job_problems(
    opts: Any, sinks: Sequence[str], known_sinks: Sequence[str], topics: Sequence[str]
) -> list[str]:
    """The launch-time problems of the shared job options (one line each, for ``InvalidParams``).

    Args:
        opts: the pipeline's options (a ``JobOptions`` subclass).
        sinks: the sinks this run would write.
        known_sinks: the sinks the pipeline has.
        topics: the topics a streaming run would read.
    """
    problems = []
    unknown = [s for s in sinks if s not in known_sinks]
    if unknown:
        problems.append(f"--sinks: unknown {unknown}; this pipeline writes {list(known_sinks)}")
    if opts.mode == "batch" and not opts.input:
        problems.append("--input is required in batch mode: the root folder of the event files")
    if opts.mode == "streaming" and not topics:
        problems.append("--topics is empty: give at least one Kafka topic")
    if opts.allowed_lateness_seconds < 0 or opts.early_firing_seconds <= 0:
        problems.append(
            "--allowed_lateness_seconds must be >= 0 and --early_firing_seconds positive"
        )
    if opts.stop_when_idle_seconds is not None and opts.stop_when_idle_seconds <= 0:
        problems.append("--stop_when_idle_seconds must be positive")
    if opts.stop_at_end and opts.stop_when_idle_seconds:
        problems.append("give --stop_at_end or --stop_when_idle_seconds, not both")
    if opts.start_date and opts.end_date and opts.start_date >= opts.end_date:
        problems.append("--start_date must be before --end_date")
    try:
        sink_policy(opts)
    except ValueError as exc:
        problems.append(f"--sink_*: {exc}")
    return problems
