"""The ``backbone`` command line.

Examples::

    backbone stack up                      # obtain (first time) and start every component
    backbone stack up --only kafka,postgres
    backbone stack status --json
    backbone demo                          # the README's main job
    backbone version

Exit codes: 0 success, 1 a failed check or a component that would not start, 2 usage or invalid
input.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from retail_backbone import __version__


def _echo_err(message: str) -> None:
    click.echo(message, err=True)


def _split(only: str | None) -> list[str] | None:
    return [part.strip() for part in only.split(",") if part.strip()] if only else None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="backbone")
def main() -> None:
    """retail-backbone: a retailer's real-time and batch data backbone on Apache Beam.

    Start the real local services with `backbone stack up`, then run a job with `backbone demo`.
    """
    # google-api-core and google-auth warn on import about future Python and grpcio support; the
    # versions are pinned by Beam, so the warning is noise for users of this tool.
    warnings.filterwarnings(
        "ignore", message="You are using a Python version", category=FutureWarning
    )
    warnings.filterwarnings("ignore", message="grpcio < 1.83.0", category=FutureWarning)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print versions as JSON.")
def version(as_json: bool) -> None:
    """Print the versions of this package and of the pinned engines."""
    import apache_beam

    from retail_backbone.stack import config

    info = {
        "retail_backbone": __version__,
        "apache_beam_python": apache_beam.__version__,
        "beam_java_job_server": config.BEAM_VERSION,
        "flink": config.FLINK_VERSION,
        "kafka": config.KAFKA_VERSION,
        "python": sys.version.split()[0],
    }
    if as_json:
        click.echo(json.dumps(info))
    else:
        for key, value in info.items():
            click.echo(f"{key:22} {value}")


# -- stack ---------------------------------------------------------------------------------------


@main.group()
def stack() -> None:
    r"""Obtain, start, check and stop the real local services.

    \b
    Components: kafka, postgres, bigtable, mongo, timeseries, graph, flink, jobserver, prism.
    Downloads are cached in ~/.cache/retail-backbone (BACKBONE_CACHE_DIR); data, logs and pid files
    live in /var/tmp/retail-backbone-$USER (BACKBONE_RUN_DIR). Ports and JVM heaps are set with
    BACKBONE_<NAME>_PORT / BACKBONE_<NAME>_HEAP or a backbone-stack.toml file (see README).
    """


_ONLY = click.option(
    "--only",
    metavar="A,B",
    help="Comma-separated components (default: all). Dependencies are included for `up`.",
)
_JSON = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _make_stack(as_json: bool):
    from retail_backbone.stack import Stack, StackConfig

    progress = (lambda _line: None) if as_json else (lambda line: _echo_err(f"  {line}"))
    return Stack(StackConfig.load(), progress=progress)


def _selected(st, only: str | None) -> list[str] | None:
    """The component names of ``--only`` (None: all), rejected as a usage error when unknown."""
    names = _split(only)
    try:
        st.select(names)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    return names


def _print_statuses(statuses, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([s.as_dict() for s in statuses], indent=2))
        return
    for s in statuses:
        pid = ",".join(map(str, s.pids)) or "-"
        line = f"{s.name:11} {s.state:9} port {s.port:<6} pid {pid:13} {s.log}"
        click.echo(line + (f"\n{'':11} {s.detail}" if s.detail else ""))


@stack.command("up")
@_ONLY
@_JSON
def stack_up(only: str | None, as_json: bool) -> None:
    """Start components; return once every one answers a real request.

    Idempotent: healthy components are left alone, half-started ones are restarted.
    """
    from retail_backbone.stack.components.base import StackError

    st = _make_stack(as_json)
    names = _selected(st, only)
    try:
        statuses = st.up(names)
    except StackError as exc:
        if as_json:
            click.echo(json.dumps({"ok": False, "component": exc.component, "error": str(exc)}))
        else:
            _echo_err(f"stack up failed: {exc}")
        sys.exit(1)
    _print_statuses(statuses, as_json)


@stack.command("down")
@_ONLY
@_JSON
def stack_down(only: str | None, as_json: bool) -> None:
    """Stop components (all by default). Data directories are kept."""
    st = _make_stack(as_json)
    stopped = st.down(_selected(st, only))
    if as_json:
        click.echo(json.dumps({"stopped": stopped}))
    else:
        click.echo(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@stack.command("status")
@_ONLY
@_JSON
def stack_status(only: str | None, as_json: bool) -> None:
    """Show state, port, pid and log of each component; exit 1 if a selected one is unhealthy."""
    st = _make_stack(as_json)
    statuses = st.status(_selected(st, only))
    _print_statuses(statuses, as_json)
    if only and any(s.state != "healthy" for s in statuses):
        sys.exit(1)


# -- schemas -------------------------------------------------------------------------------------


@main.group()
def schemas() -> None:
    """Avro contracts: compatibility checks, the CI gate, registration.

    \b
    Contracts live in schemas/<subject>/v1.avsc, v2.avsc, ...; levels in
    schemas/compatibility.toml (default BACKWARD).
    """


_LEVELS = [
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
    "NONE",
]


@schemas.command("compat")
@click.option(
    "--level",
    required=True,
    type=click.Choice(_LEVELS, case_sensitive=False),
    help="Compatibility level, with Confluent Schema Registry semantics.",
)
@click.argument("new", type=click.Path(dir_okay=False))
@click.argument("previous", nargs=-1, type=click.Path(dir_okay=False))
@_JSON
def schemas_compat(level: str, new: str, previous: tuple[str, ...], as_json: bool) -> None:
    """Check NEW.avsc against PREVIOUS versions (oldest first).

    Exit 0 compatible, 1 incompatible (reasons printed), 2 invalid schema file or usage.
    Non-transitive levels compare with the last PREVIOUS only; transitive ones with all.
    """
    from pathlib import Path

    from retail_backbone.schemas.compatibility import (
        InvalidSchema,
        check_compatibility,
        parse_schema,
    )

    parsed = []
    for path in (new, *previous):
        try:
            text = Path(path).read_text()
        except OSError as exc:
            _fail_usage(f"cannot read {path}: {exc.strerror}", as_json)
        except UnicodeDecodeError:
            _fail_usage(f"{path}: not a text file, so not an Avro schema", as_json)
        try:
            parsed.append(parse_schema(text))
        except InvalidSchema as exc:
            _fail_usage(f"{path}: invalid Avro schema: {exc}", as_json)
    result = check_compatibility(parsed[0], parsed[1:], level)
    if as_json:
        click.echo(json.dumps(result.as_dict()))
    elif result.compatible:
        click.echo(f"compatible ({level.upper()}, {len(previous)} previous version(s))")
    else:
        click.echo(f"INCOMPATIBLE ({level.upper()}):")
        for message in result.messages:
            click.echo(f"  - {message}")
    sys.exit(0 if result.compatible else 1)


def _fail_usage(message: str, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"compatible": False, "messages": [message], "error": "invalid"}))
    else:
        _echo_err(f"error: {message}")
    sys.exit(2)


_SCHEMAS_DIR = click.option(
    "--dir",
    "root",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="Schemas folder (default: the package's schemas/).",
)


@schemas.command("check")
@_SCHEMAS_DIR
@_JSON
def schemas_check(root: str | None, as_json: bool) -> None:
    """CI gate: validate every subject's version chain at its configured level.

    Exit 0 when every chain is valid and compatible, 1 otherwise.
    """
    from pathlib import Path

    from retail_backbone.schemas.catalog import SCHEMAS_DIR, check_catalog

    try:
        results = check_catalog(Path(root) if root else SCHEMAS_DIR)
    except ValueError as exc:
        _echo_err(f"error: {exc}")
        sys.exit(2)
    failed = [r for r in results if not r.compatible]
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "subject": r.subject,
                        "level": str(r.level),
                        "versions": r.versions,
                        "compatible": r.compatible,
                        "messages": r.messages,
                    }
                    for r in results
                ],
                indent=2,
            )
        )
    else:
        for r in results:
            state = "ok" if r.compatible else "FAIL"
            click.echo(f"{state:4} {r.subject:40} {r.level:20} v1..v{r.versions}")
            for message in r.messages:
                click.echo(f"       - {message}")
        click.echo(f"{len(results) - len(failed)}/{len(results)} subjects compatible")
    sys.exit(1 if failed else 0)


@schemas.command("register")
@click.option("--registry", required=True, metavar="URL", help="Schema registry base URL.")
@_SCHEMAS_DIR
@_JSON
def schemas_register(registry: str, root: str | None, as_json: bool) -> None:
    """Register every subject's versions in order, setting each subject's level first.

    Works with this project's registry, Confluent Schema Registry and Apicurio (ccompat API).
    Exit 1 if the registry rejects a schema (for example as incompatible).
    """
    from pathlib import Path

    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    from retail_backbone.schemas.catalog import SCHEMAS_DIR, load_catalog

    client = SchemaRegistryClient({"url": registry})
    report = []
    try:
        for subject in load_catalog(Path(root) if root else SCHEMAS_DIR):
            client.set_compatibility(subject.name, str(subject.level))
            ids = [
                client.register_schema(subject.name, Schema(text, "AVRO")) for text in subject.texts
            ]
            report.append({"subject": subject.name, "level": str(subject.level), "ids": ids})
            if not as_json:
                click.echo(f"{subject.name:40} {subject.level:20} ids {ids}")
    except SchemaRegistryError as exc:
        _echo_err(
            f"registry rejected {subject.name}: HTTP {exc.http_status_code} "
            f"({exc.error_code}): {exc.error_message}"
        )
        sys.exit(1)
    except Exception as exc:  # connection problems surface from requests/httpx internals
        _echo_err(f"cannot reach the registry at {registry}: {exc}")
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(report, indent=2))


# -- generate ------------------------------------------------------------------------------------


@main.command()
@click.option("--seed", default=7, show_default=True, help="Random seed: same seed, same bytes.")
@click.option(
    "--start",
    default="2025-11-24",
    show_default=True,
    help="First simulated day (YYYY-MM-DD, UTC).",
)
@click.option("--days", default=7, show_default=True, help="Number of simulated days.")
@click.option(
    "--events-per-day", default=100_000, show_default=True, help="Approximate events per day."
)
@click.option("--products", default=2_000, show_default=True, help="Catalog size.")
@click.option("--locations", default=50, show_default=True, help="Stores + fulfillment centers.")
@click.option("--customers", default=20_000, show_default=True, help="Customer count.")
@click.option(
    "--peak-day", default=None, help="Day with peak traffic (YYYY-MM-DD), e.g. Black Friday."
)
@click.option(
    "--peak-multiplier", default=10.0, show_default=True, help="Traffic multiplier on the peak day."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Write date-partitioned files here: <out>/<event_type>/dt=YYYY-MM-DD/part-00000.<ext>.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["avro", "parquet", "jsonl"]),
    default="avro",
    show_default=True,
    help="File format with --out.",
)
@click.option("--kafka", "bootstrap", default=None, metavar="HOST:PORT", help="Produce to Kafka.")
@click.option(
    "--registry",
    default="http://127.0.0.1:8085",
    show_default=True,
    help="Schema registry for --kafka (Confluent wire format).",
)
@click.option(
    "--rate",
    default=0.0,
    show_default=True,
    help="Target events/s to Kafka (0: as fast as possible).",
)
@click.option(
    "--legacy-erp",
    "erp_dsn",
    default=None,
    metavar="DSN",
    help="Also seed a 'legacy_erp' Postgres database (products, inventory, customers).",
)
@click.option(
    "--fraud-truth",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the injected fraud incidents (ground truth) to this JSONL file.",
)
@click.option(
    "--preferences",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write customers' latent preferences (for scoring recommenders) as JSONL.",
)
@_JSON
def generate(
    seed: int,
    start: str,
    days: int,
    events_per_day: int,
    products: int,
    locations: int,
    customers: int,
    peak_day: str | None,
    peak_multiplier: float,
    out: str | None,
    fmt: str,
    bootstrap: str | None,
    registry: str,
    rate: float,
    erp_dsn: str | None,
    fraud_truth: str | None,
    preferences: str | None,
    as_json: bool,
) -> None:
    """Generate deterministic retail traffic to files and/or Kafka.

    \b
    Examples:
      backbone generate --days 1 --out data/backfill --format parquet
      backbone generate --days 1 --kafka 127.0.0.1:9092 --rate 5000
    """
    import datetime as dt

    from retail_backbone import generator as gen

    if not (out or bootstrap or erp_dsn):
        raise click.UsageError("choose at least one output: --out, --kafka or --legacy-erp")
    if out and bootstrap:
        raise click.UsageError("--out and --kafka generate the stream twice; run them separately")
    try:
        config = gen.GeneratorConfig(
            seed=seed,
            start=dt.date.fromisoformat(start),
            days=days,
            events_per_day=events_per_day,
            n_products=products,
            n_locations=locations,
            n_customers=customers,
            peak_day=dt.date.fromisoformat(peak_day) if peak_day else None,
            peak_multiplier=peak_multiplier,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    report: dict = {"config": {"seed": seed, "start": start, "days": days}}
    world = gen.build_world(config)
    if erp_dsn:
        report["legacy_erp"] = gen.seed_legacy_erp(world, erp_dsn).to_dict()
    if out or bootstrap:
        stream = gen.generate_events(config, world=world)
        if out:
            report["files"] = gen.write_files(stream, out, fmt).to_dict()
        else:
            try:
                report["kafka"] = gen.produce_to_kafka(
                    stream, bootstrap, registry, rate, progress=not as_json
                ).to_dict()
            except gen.KafkaSinkError as exc:
                _echo_err(f"generate failed: {exc}")
                sys.exit(1)
        report["summary"] = stream.summary().to_dict()
        if fraud_truth:
            report["fraud_incidents"] = gen.write_fraud_truth(stream.fraud, fraud_truth)
    if preferences:
        report["preferences"] = gen.write_preferences(world, preferences)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    summary = report.get("summary")
    if summary:
        click.echo(f"generated {summary['total']} events over {days} day(s) (seed {seed})")
        for event_type, count in sorted(summary["by_type"].items(), key=lambda kv: -kv[1]):
            click.echo(f"  {event_type:20} {count:>10}")
    if out:
        click.echo(f"files: {out} ({fmt})")
    if bootstrap:
        click.echo(f"kafka: {bootstrap} topics retail.<event_type>")
    if erp_dsn:
        click.echo(f"legacy ERP seeded: {report['legacy_erp']}")


# -- dead letters --------------------------------------------------------------------------------


@main.group()
def dlq() -> None:
    """Dead letters: inspect and replay what pipelines could not process."""


@dlq.command(
    "replay",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.option("--pipeline", required=True, help="Pipeline whose dead letters to replay.")
@click.option(
    "--source",
    type=click.Choice(["kafka", "files"]),
    default="kafka",
    show_default=True,
    help="Read dead letters from the dlq.<pipeline> topic or from files.",
)
@click.option("--files-dir", default=None, help="Dead-letter folder (with --source files).")
@click.option("--since", default=None, help="Only records at or after this ISO time (UTC).")
@click.option("--until", default=None, help="Only records before this ISO time (UTC).")
@click.option("--stage", multiple=True, help="Only this stage (repeatable).")
@click.option("--error-class", multiple=True, help="Only this error class (repeatable).")
@click.option(
    "--max-attempts",
    default=5,
    show_default=True,
    help="Park records that have failed this many times.",
)
@click.option("--plan-only", is_flag=True, help="Count what would be replayed; write nothing.")
@click.option(
    "--runner",
    type=click.Choice(["prism", "direct", "flink"]),
    default="prism",
    show_default=True,
    help="Where the replay job runs.",
)
@_JSON
@click.argument("store_args", nargs=-1, type=click.UNPROCESSED)
def dlq_replay(
    pipeline: str,
    source: str,
    files_dir: str | None,
    since: str | None,
    until: str | None,
    stage: tuple[str, ...],
    error_class: tuple[str, ...],
    max_attempts: int,
    plan_only: bool,
    runner: str,
    as_json: bool,
    store_args: tuple[str, ...],
) -> None:
    """Re-inject dead letters' original payloads where they entered, once each.

    Sink dead letters (rows a sink step could not write) are written again into that step's
    table. Extra arguments go to the replay job: give the failed run's store options, e.g.
    --table_suffix=_blue or --postgres_dsn=env:PG_DSN (the local stack's are the defaults).
    Personalization profile letters carry their PII sealed: pass the run's
    --pii_hash_key=env:VAR to open them (without it they are parked as undecodable).

    \b
    Example:
      backbone dlq replay --pipeline inventory --error-class sink_unavailable --since 2026-11-27
    """
    import os

    from retail_backbone.pipelines import dlq_replay as replay
    from retail_backbone.pipelines.launch import local_plan
    from retail_backbone.pipelines.registry import PIPELINES
    from retail_backbone.pipelines.runners import RUNNER_COMPONENTS, runner_args
    from retail_backbone.stack import Stack, StackConfig
    from retail_backbone.stack.components import ALL_COMPONENTS
    from retail_backbone.stack.components.base import StackError

    cfg = StackConfig.load()
    stores: list[str] = []
    extra = list(store_args)
    if pipeline in PIPELINES:
        # The sinks' stores, with the stack's connections unless given (for sink dead letters).
        spec = PIPELINES[pipeline]
        known = {c.name for c in ALL_COMPONENTS}
        stores = [s for s in spec.sinks() if s in known]
        plan = local_plan(spec, extra, cfg)
        for name, value in plan.env.items():
            os.environ.setdefault(name, value)
        extra = plan.argv
    try:
        Stack(cfg).up(["kafka", "registry", *stores, *RUNNER_COMPONENTS[runner]])
    except StackError as exc:
        _echo_err(f"dlq replay failed: {exc}")
        sys.exit(1)
    argv = [
        *runner_args(runner, cfg),
        *extra,
        f"--pipeline={pipeline}",
        f"--source={source}",
        f"--bootstrap_servers={cfg.host}:{cfg.port('kafka')}",
        f"--registry_url=http://{cfg.host}:{cfg.port('registry')}",
        f"--max_attempts={max_attempts}",
        *([f"--files_dir={files_dir}"] if files_dir else []),
        *([f"--since={since}"] if since else []),
        *([f"--until={until}"] if until else []),
        *(f"--stage={s}" for s in stage),
        *(f"--error_class={e}" for e in error_class),
        *(["--plan_only"] if plan_only else []),
    ]
    from retail_backbone.io.kafka import KafkaUnavailable

    try:
        counters = replay.run(argv).counters
    except KafkaUnavailable as exc:
        _echo_err(f"dlq replay: {exc} (no dead letters yet for pipeline {pipeline!r}?)")
        sys.exit(1)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(counters, indent=2, sort_keys=True))
        return
    verb = "would replay" if plan_only else "replayed"
    click.echo(
        f"{pipeline}: read {counters.get('read', 0)}, {verb} {counters.get('replayed', 0)}, "
        f"parked {counters.get('parked', 0)}, already replayed "
        f"{counters.get('already_replayed', 0)}, filtered out {counters.get('filtered_out', 0)}, "
        f"not replayable {counters.get('unreplayable', 0)}"
    )


# -- jobs ------------------------------------------------------------------------------------------


@main.command()
@click.option("--days", default=3, show_default=True, help="Days to generate (the last is live).")
@click.option(
    "--events-per-day", default=20_000, show_default=True, help="Approximate events per day."
)
@click.option("--seed", default=7, show_default=True, help="Random seed of the generator.")
@click.option(
    "--stream-personalization",
    is_flag=True,
    help="Also stream personalization on Flink (several more minutes on 2 cores).",
)
@_JSON
def demo(
    days: int, events_per_day: int, seed: int, stream_personalization: bool, as_json: bool
) -> None:
    """Run the main job end to end on local defaults: inventory and personalization.

    Brings up Kafka, the registry, PostgreSQL, the Bigtable emulator, the graph store, Flink and
    the job server; generates DAYS of traffic; backfills all but the last day from Avro files
    (batch, direct runner) and streams every day through Kafka on Flink with the same inventory
    transforms; backfills personalization from the same files (and streams it too with
    --stream-personalization); then prints per-store stock, alerts, forecasts, example profiles
    and recommendations read back from the stores, and the accounting line of each run
    (in = unique + duplicates + dead letters). Exits 1 if anything does not add up.

    \b
    Example:
      backbone demo                       # about 3-4 minutes on 2 cores
      backbone demo --days 2 --events-per-day 5000 --json
    """
    from retail_backbone.pipelines import demo as main_job
    from retail_backbone.stack.components.base import StackError

    if days < 2:
        raise click.BadParameter("must be at least 2 (history and a live day)", param_hint="--days")
    if events_per_day <= 0:
        raise click.BadParameter("must be positive", param_hint="--events-per-day")
    try:
        summary = main_job.run_demo(
            days=days,
            events_per_day=events_per_day,
            seed=seed,
            stream_personalization=stream_personalization,
            progress=_echo_err,
        )
    except StackError as exc:
        _echo_err(f"demo failed: {exc}")
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2, default=str))
    else:
        click.echo(summary.render())
    if not summary.balanced:
        sys.exit(1)


@main.command()
@click.option("--events", default=5000, show_default=True, help="Events to generate and produce.")
@click.option("--seed", default=7, show_default=True, help="Random seed of the generator.")
@click.option(
    "--runner",
    type=click.Choice(["prism", "flink", "direct"]),
    default="prism",
    show_default=True,
    help="prism: Beam's portable local runner; flink: the local Flink cluster; direct: in-process.",
)
@_JSON
def smoke(events: int, seed: int, runner: str, as_json: bool) -> None:
    """Check the stack end to end: Kafka -> count per event type -> PostgreSQL (under a minute).

    Produces generated JSON events plus a few corrupt ones, runs the smoke pipeline and checks
    that every event is counted in PostgreSQL or dead-lettered.
    """
    from retail_backbone.pipelines import smoke as smoke_job
    from retail_backbone.stack.components.base import StackError

    if events <= 0:
        raise click.BadParameter("must be positive", param_hint="--events")
    try:
        summary = smoke_job.run_demo(events=events, seed=seed, runner=runner, progress=_echo_err)
    except StackError as exc:
        _echo_err(f"smoke failed: {exc}")
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2))
    else:
        click.echo(summary.render())
    if not summary.balanced:
        sys.exit(1)


@main.group("run")
def run_job() -> None:
    """Run a pipeline on the local stack (extra arguments go to the pipeline and Beam)."""


_RUNNER = click.option(
    "--runner",
    type=click.Choice(["auto", "direct", "flink", "prism"]),
    default="auto",
    show_default=True,
    help="auto: direct for batch, flink for streaming; direct: in-process; flink: the local "
    "Flink cluster; prism: Beam's portable local runner (no custom triggers in Beam 2.62, so "
    "not for streaming jobs).",
)


def _given(args: list[str], name: str) -> bool:
    return any(a == f"--{name}" or a.startswith(f"--{name}=") for a in args)


def _run_stack_job(
    name: str,
    options_class: str,
    runner: str,
    as_json: bool,
    pipeline_args: tuple[str, ...],
    *,
    defaults: Callable[[Any, list[str]], list[str]],
    store_components: Callable[[Any], list[str]],
) -> dict | None:
    """What every ``backbone run <job>`` does around the job itself.

    Fills connection options from the stack unless given (``defaults``), validates the options
    (exit 2), brings up the stores the options need (``store_components``), Kafka and the
    registry in streaming mode, and the runner (exit 1 if one will not start), runs the job and
    prints its summary (JSON with --json). Returns the summary for job-specific lines.
    """
    import importlib
    import os

    from retail_backbone.io.sinks.base import SinkConfigError
    from retail_backbone.pipelines.job_options import JobOptions
    from retail_backbone.pipelines.params import InvalidParams
    from retail_backbone.pipelines.runners import RUNNER_COMPONENTS, runner_args
    from retail_backbone.stack import Stack, StackConfig
    from retail_backbone.stack.components.base import StackError

    job = importlib.import_module(f"retail_backbone.pipelines.{name}")
    cfg = StackConfig.load()
    args = list(pipeline_args)
    if runner == "auto":
        # Streaming needs processing-time triggers and allowed lateness: Flink runs them here.
        runner = "flink" if JobOptions(args).mode == "streaming" else "direct"
    common = []
    if not _given(args, "bootstrap_servers"):
        common.append(f"--bootstrap_servers={cfg.host}:{cfg.port('kafka')}")
    if not _given(args, "registry_url"):
        common.append(f"--registry_url=http://{cfg.host}:{cfg.port('registry')}")
    argv = [*runner_args(runner, cfg), *defaults(cfg, args), *common, *args]
    opts = getattr(job, options_class)(argv)
    try:
        job.check_options(opts)
    except InvalidParams as exc:
        _echo_err(str(exc))
        sys.exit(2)
    components = store_components(opts)
    if opts.mode == "streaming" or opts.dead_letters_to_kafka or "kafka" in components:
        components += ["kafka", "registry"]
    components = list(dict.fromkeys(components))
    components += RUNNER_COMPONENTS[runner]
    progress = (lambda _line: None) if as_json else (lambda line: _echo_err(f"  {line}"))
    try:
        Stack(cfg, progress=progress).up(components)
    except StackError as exc:
        _echo_err(f"run {name} failed: {exc}")
        sys.exit(1)
    if "bigtable" in components and not os.environ.get("BIGTABLE_EMULATOR_HOST"):
        os.environ["BIGTABLE_EMULATOR_HOST"] = f"{cfg.host}:{cfg.port('bigtable')}"
    try:
        summary = job.run(argv)
    except InvalidParams as exc:
        _echo_err(str(exc))
        sys.exit(2)
    except SinkConfigError as exc:
        _echo_err(f"run {name} failed: {exc}")
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
        return None
    click.echo(
        f"{name} ({summary['mode']}, run {summary['run_id']}): {summary['state']}; "
        f"events in {summary['events_in']}, duplicates {summary['duplicates']}, "
        f"dead letters {summary['dead_letters']}"
    )
    for error_class, n in summary["dead_letters_by_class"].items():
        click.echo(f"  dead letters {error_class}: {n}")
    for label, counts in summary["sinks"].items():
        click.echo(
            f"  {label}: written {counts['written']}, stale {counts['skipped_stale']}, "
            f"dead-lettered {counts['dead_lettered']}"
        )
    return summary


def _sinks_of(opts: Any, known: tuple[str, ...]) -> list[str]:
    chosen = [s.strip() for s in (opts.sinks or ",".join(known)).split(",")]
    return [s for s in known if s in chosen]


@run_job.command(
    "inventory",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@_RUNNER
@_JSON
@click.argument("pipeline_args", nargs=-1, type=click.UNPROCESSED)
def run_inventory(runner: str, as_json: bool, pipeline_args: tuple[str, ...]) -> None:
    """Run the inventory job: stock levels, alerts and forecasts into Postgres and Bigtable.

    Alerts also go to the Kafka topic inventory.alerts (by default in streaming mode). Brings up
    what the job needs (postgres, bigtable, kafka per --sinks, kafka and the registry in
    streaming mode, the runner), fills --postgres_dsn, --bootstrap_servers and
    --registry_url from the stack unless given, runs the job and prints its counters. Every other
    argument goes to the pipeline (python -m retail_backbone.pipelines.inventory --help lists
    them).

    \b
    Example:
      backbone run inventory --mode batch --input data/backfill
      backbone run inventory --mode streaming --stop_at_end      # on Flink
    """
    import os

    from retail_backbone.pipelines import inventory
    from retail_backbone.stack.components.postgres import dsn as pg_dsn

    def defaults(cfg: Any, args: list[str]) -> list[str]:
        if _given(args, "postgres_dsn"):
            return []
        # Passed by reference so the connection string stays out of options and display data;
        # the runners here run the SDK harness in this process (LOOPBACK), which sees the env.
        os.environ["BACKBONE_INVENTORY_PG_DSN"] = pg_dsn(cfg)
        return ["--postgres_dsn=env:BACKBONE_INVENTORY_PG_DSN"]

    _run_stack_job(
        "inventory",
        "InventoryOptions",
        runner,
        as_json,
        pipeline_args,
        defaults=defaults,
        # The kafka sink (alerts) needs the broker and the registry: _run_stack_job adds both.
        store_components=lambda opts: list(inventory.enabled_sinks(opts)),
    )


@run_job.command(
    "personalization",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@_RUNNER
@_JSON
@click.argument("pipeline_args", nargs=-1, type=click.UNPROCESSED)
def run_personalization(runner: str, as_json: bool, pipeline_args: tuple[str, ...]) -> None:
    """Run the personalization job: profiles, product graph and recommendations.

    Brings up what the job needs (bigtable and/or graph per --sinks, kafka and the registry in
    streaming mode, the runner), fills --neo4j_uri, --bootstrap_servers and --registry_url from
    the stack unless given, and --pii_hash_key from $BACKBONE_PII_HASH_KEY (a fixed development
    key is set when the variable is missing: fine for local data, never for real customers).
    Every other argument goes to the pipeline (python -m
    retail_backbone.pipelines.personalization --help lists them).

    \b
    Example:
      backbone run personalization --mode batch --input data/backfill --runner direct
      backbone run personalization --mode streaming --stop_when_idle_seconds 30
    """
    import os

    def defaults(cfg: Any, args: list[str]) -> list[str]:
        out = []
        if not _given(args, "pii_hash_key"):
            if "BACKBONE_PII_HASH_KEY" not in os.environ:
                _echo_err("  BACKBONE_PII_HASH_KEY is not set: using the local development key")
                os.environ["BACKBONE_PII_HASH_KEY"] = "retail-backbone-local-development-key"
            out.append("--pii_hash_key=env:BACKBONE_PII_HASH_KEY")
        if not _given(args, "neo4j_uri"):
            out.append(f"--neo4j_uri=bolt://{cfg.host}:{cfg.port('neo4j')}")
        return out

    summary = _run_stack_job(
        "personalization",
        "PersonalizationOptions",
        runner,
        as_json,
        pipeline_args,
        defaults=defaults,
        store_components=lambda opts: _sinks_of(opts, ("bigtable", "graph")),
    )
    if summary is not None:
        acc = summary["accounting"]["profiles_stage"]
        click.echo(
            f"  profiles {summary['profiles']['profiles_emitted']}, recommendations "
            f"{summary['recommend']['customers']}; accounting (profiles stage): in {acc['in']} "
            f"= out {acc['out']} + dead letters {acc['dead_letters']}"
        )


# -- templates, launch, backfill (issue #7) -------------------------------------------------------


def _pipeline_spec(name: str):
    from retail_backbone.pipelines.registry import PIPELINES

    if name not in PIPELINES:
        raise click.BadParameter(
            f"unknown pipeline {name!r}; registered: {', '.join(sorted(PIPELINES))}",
            param_hint="PIPELINE",
        )
    return PIPELINES[name]


@main.group()
def templates() -> None:
    """Flex Template files and Flink profiles, generated from each pipeline's options.

    \b
    templates/<pipeline>/metadata.json   Dataflow Flex Template metadata
    templates/<pipeline>/spec.json       the Flex Template spec (image placeholder)
    templates/<pipeline>/Dockerfile      the launcher image
    README.md                            parameter tables between the params markers
    templates/flink/<profile>.toml       Flink runner profiles (hand-written data)
    """


@templates.command("build")
@click.argument("pipeline", required=False)
@_JSON
def templates_build(pipeline: str | None, as_json: bool) -> None:
    """Regenerate the template files of PIPELINE (default: every registered pipeline).

    Writes only files whose content changed and lists them. The README tables always cover
    every pipeline.
    """
    from retail_backbone.templates.build import build_files, repo_root

    names = [_pipeline_spec(pipeline).name] if pipeline else None
    try:
        changed = build_files(repo_root(), names)
    except (FileNotFoundError, ValueError) as exc:
        _echo_err(f"templates build failed: {exc}")
        sys.exit(1)
    if as_json:
        click.echo(json.dumps({"changed": changed}))
    elif changed:
        for rel in changed:
            click.echo(f"wrote {rel}")
    else:
        click.echo("templates up to date")


@templates.command("validate")
@_JSON
def templates_validate(as_json: bool) -> None:
    """Check the committed template files; exit 1 listing every problem.

    Metadata schema (Dataflow Flex Template fields and paramType values), every option of the
    options class is a parameter (and nothing else), no secret parameter has a default, every
    generated file equals what `templates build` would write, and every Flink profile is valid.
    """
    from retail_backbone.templates.build import repo_root
    from retail_backbone.templates.validate import validate_templates

    problems = validate_templates(repo_root())
    if as_json:
        click.echo(json.dumps({"ok": not problems, "problems": [p.as_dict() for p in problems]}))
    elif problems:
        click.echo(f"{len(problems)} problem(s):")
        for p in problems:
            click.echo(f"  {p.file}: {p.message}")
    else:
        click.echo("templates valid and in sync with the options")
    sys.exit(1 if problems else 0)


def _apply_env(env: dict[str, str]) -> None:
    import os

    for key, value in env.items():
        os.environ.setdefault(key, value)


def _launch_dataflow(spec, args: list[str], project, region, bucket, as_json: bool) -> None:
    import shlex
    import subprocess

    from retail_backbone.templates.dataflow import flex_template_commands, gcloud_ready

    secret = {p.name for p in spec.params() if p.secret}
    params: dict[str, str] = {}
    redacted = []
    for arg in args:
        if not arg.startswith("--"):
            raise click.BadParameter(f"expected --name=value, got {arg!r}", param_hint="PARAMS")
        name, _, value = arg[2:].partition("=")
        value = value or "true"
        if name in secret and not value.startswith(("env:", "projects/")):
            # A literal secret would land in shell history and job metadata: print a placeholder.
            redacted.append(name)
            value = "REDACTED"
        params[name] = value
    from retail_backbone.pipelines.params import InvalidParams

    try:
        # The launcher would refuse these too, but only after an image build and a VM start.
        spec.load().check_options(spec.options_class()(args))
    except InvalidParams as exc:
        _echo_err(str(exc))
        sys.exit(2)
    where = {"project": project, "region": region, "bucket": bucket}
    placeholders = [name for name, value in where.items() if not value]
    commands = flex_template_commands(
        spec,
        project=project or "PROJECT_ID",
        region=region or "REGION",
        bucket=bucket or "BUCKET",
        params=params,
    )
    ready, why = gcloud_ready()
    notes = []
    if placeholders:
        notes.append(f"placeholders for --{', --'.join(placeholders)}: fill them in")
    if redacted:
        notes.append(
            f"secret {', '.join(redacted)} replaced by REDACTED: pass a reference "
            "(env:VAR or a Secret Manager name) instead of the value"
        )
    execute = ready and not placeholders and not redacted
    if not execute:
        notes.append(f"not run: {why}" if not ready else "not run: fill in the placeholders")
    if as_json:
        click.echo(
            json.dumps(
                {
                    "target": "dataflow",
                    "pipeline": spec.name,
                    "commands": [shlex.join(c) for c in commands],
                    "executed": execute,
                    "notes": notes,
                },
                indent=2,
            )
        )
    else:
        click.echo(f"# Dataflow Flex Template for {spec.name}, from the repository root:")
        for cmd in commands:
            click.echo(shlex.join(cmd))
        for note in notes:
            click.echo(f"# note: {note}")
    if not execute:
        return
    for cmd in commands:
        _echo_err(f"$ {shlex.join(cmd)}")
        if subprocess.run(cmd, check=False).returncode != 0:
            _echo_err(f"launch failed at: {shlex.join(cmd)}")
            sys.exit(1)


@main.command(
    "launch",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.argument("pipeline")
@click.option(
    "--target",
    type=click.Choice(["local", "flink", "dataflow"]),
    default="local",
    show_default=True,
    help="local: this machine (--runner); flink: the stack's Flink cluster (--profile); "
    "dataflow: print (and, with gcloud credentials, run) the Flex Template commands.",
)
@click.option(
    "--profile",
    default="local",
    show_default=True,
    help="Flink runner profile, templates/flink/<profile>.toml (local: LOOPBACK; cluster: "
    "EXTERNAL worker pool). --target flink only.",
)
@click.option(
    "--runner",
    type=click.Choice(["direct", "prism"]),
    default="direct",
    show_default=True,
    help="Runner of --target local.",
)
@click.option("--project", help="GCP project (--target dataflow).")
@click.option("--region", help="Dataflow region (--target dataflow).")
@click.option("--bucket", help="GCS bucket for the template spec, staging and temp files.")
@click.option(
    "--from-savepoint",
    "savepoint",
    metavar="PATH",
    help="Start from this Flink savepoint or retained checkpoint (the location printed by "
    "`backbone flink savepoint`). --target flink only.",
)
@_JSON
@click.argument("params", nargs=-1, type=click.UNPROCESSED)
def launch(
    pipeline: str,
    target: str,
    profile: str,
    runner: str,
    project: str | None,
    region: str | None,
    bucket: str | None,
    savepoint: str | None,
    as_json: bool,
    params: tuple[str, ...],
) -> None:
    """Launch PIPELINE with its parameters (--name=value, see the README tables).

    \b
    local    runs on this machine (direct or prism) against the stack, waiting for the end;
             connection parameters not given come from the stack.
    flink    submits to the stack's Flink cluster through the Beam job server with a runner
             profile (parallelism, checkpointing, state backend, bundles, environment).
             A streaming job runs until interrupted.
    dataflow prints the exact docker/gcloud commands that build the launcher image and the
             Flex Template and run it with these parameters; runs them when gcloud, docker
             and credentials are present and every value is filled in.

    \b
    Examples:
      backbone launch inventory --target local --mode=batch --input=data/backfill
      backbone launch inventory --target flink --profile local --mode=batch --input=data
      backbone launch inventory --target flink --mode=streaming \\
          --from-savepoint file:///var/tmp/.../savepoints/savepoint-1a2b3c-0123456789ab
      backbone launch inventory --target dataflow --project p --region europe-west1 \
          --bucket b --mode=batch --input=gs://b/events --postgres_dsn=env:PG_DSN
    """
    from retail_backbone.io.sinks.base import SinkConfigError
    from retail_backbone.pipelines.launch import local_plan, worker_pool_reachable
    from retail_backbone.pipelines.params import InvalidParams
    from retail_backbone.pipelines.runners import RUNNER_COMPONENTS, runner_args
    from retail_backbone.stack import Stack, StackConfig
    from retail_backbone.stack.components.base import StackError
    from retail_backbone.templates.profiles import ProfileError, load_profile, profile_args

    spec = _pipeline_spec(pipeline)
    if savepoint and target != "flink":
        _echo_err("error: --from-savepoint needs --target flink")
        sys.exit(2)
    if target == "dataflow":
        _launch_dataflow(spec, list(params), project, region, bucket, as_json)
        return
    cfg = StackConfig.load()
    module = spec.load()
    plan = local_plan(spec, params, cfg)
    if target == "local":
        runner_argv = runner_args(runner, cfg)
        components = RUNNER_COMPONENTS[runner]
        where = runner
    else:
        try:
            flink = load_profile(profile)
        except ProfileError as exc:
            _echo_err(str(exc))
            sys.exit(2)
        runner_argv = profile_args(flink, cfg)
        if savepoint:
            # FlinkPipelineOptions.savepointPath: Flink maps the state to operators by uid.
            runner_argv.append(f"--savepoint_path={savepoint}")
        components = RUNNER_COMPONENTS["flink"]
        where = f"flink ({profile}: {flink.description})"
    try:
        module.check_options(plan.options(runner_argv))
    except InvalidParams as exc:
        _echo_err(str(exc))
        sys.exit(2)
    # Before starting anything: the cluster profile's job would hang waiting for workers.
    if target == "flink" and flink.environment_type == "EXTERNAL":
        address = dict(a[2:].split("=", 1) for a in runner_argv)["environment_config"]
        if not worker_pool_reachable(address):
            _echo_err(
                f"launch {spec.name} failed: no Beam SDK worker pool at {address} (profile "
                f"{profile} uses the EXTERNAL environment); start one next to the TaskManager, "
                "e.g. python -m apache_beam.runners.worker.worker_pool_main "
                f"--service_port={address.rpartition(':')[2]}, with the env: secrets in its "
                "environment"
            )
            sys.exit(1)
    progress = (lambda _line: None) if as_json else (lambda line: _echo_err(f"  {line}"))
    try:
        Stack(cfg, progress=progress).up(plan.components(components))
    except StackError as exc:
        _echo_err(f"launch {spec.name} failed: {exc}")
        sys.exit(1)
    _apply_env(plan.env)
    if not as_json:
        _echo_err(f"launching {spec.name} on {where}")
    try:
        summary = module.run([*runner_argv, *plan.argv])
    except InvalidParams as exc:
        _echo_err(str(exc))
        sys.exit(2)
    except SinkConfigError as exc:
        _echo_err(f"launch {spec.name} failed: {exc}")
        sys.exit(1)
    result = {"target": target, "pipeline": spec.name, "summary": summary}
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True, default=str))
    else:
        click.echo(
            f"{spec.name} on {where}: {summary.get('state')}; events in "
            f"{summary.get('events_in')}, dead letters {summary.get('dead_letters')}"
        )


# -- Flink operations ----------------------------------------------------------------------------


@main.group()
def flink() -> None:
    """Operate streaming jobs on the stack's Flink cluster: list, stop with a savepoint, cancel.

    \b
    A job stopped with a savepoint continues where it stopped when launched again with
      backbone launch PIPELINE --target flink --from-savepoint LOCATION [params]
    """


def _flink_rest():
    from retail_backbone.pipelines.flink_ops import FlinkRest
    from retail_backbone.stack import StackConfig

    return FlinkRest.from_config(StackConfig.load())


@flink.command("jobs")
@click.option("--all", "show_all", is_flag=True, help="Also finished, failed and canceled jobs.")
@_JSON
def flink_jobs(show_all: bool, as_json: bool) -> None:
    """List the cluster's jobs (running ones unless --all), newest first."""
    from retail_backbone.pipelines.flink_ops import TERMINAL_STATES, FlinkOpsError

    try:
        jobs = [j for j in _flink_rest().jobs() if show_all or j.state not in TERMINAL_STATES]
    except FlinkOpsError as exc:
        _echo_err(f"flink jobs failed: {exc} (is the stack up? backbone stack up --only flink)")
        sys.exit(1)
    if as_json:
        click.echo(json.dumps([j.as_dict() for j in jobs], indent=2))
        return
    for j in jobs:
        click.echo(f"{j.job_id}  {j.state:<12} {j.name}")
    if not jobs:
        _echo_err("no jobs" if show_all else "no running jobs (--all lists ended ones)")


@flink.command("savepoint")
@click.argument("job_id")
@click.option(
    "--dir",
    "target_dir",
    help="Savepoint directory URI (file:///...); default: the cluster's state.savepoints.dir.",
)
@click.option(
    "--drain",
    is_flag=True,
    help="Send the maximum watermark first: every window and timer fires, the sinks get final "
    "results. For ending a job for good; a job restarted from a drained savepoint does not "
    "continue as if it had never stopped.",
)
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait.")
@_JSON
def flink_savepoint(
    job_id: str, target_dir: str | None, drain: bool, timeout: float, as_json: bool
) -> None:
    """Stop JOB_ID with a savepoint and print the savepoint's location."""
    from retail_backbone.pipelines.flink_ops import FlinkOpsError

    rest = _flink_rest()
    try:
        location = rest.stop_with_savepoint(job_id, target_dir, drain=drain, timeout=timeout)
        state = rest.wait_state(job_id, ("FINISHED", "CANCELED", "FAILED"), timeout=timeout)
    except FlinkOpsError as exc:
        _echo_err(f"flink savepoint failed: {exc}")
        sys.exit(1)
    if as_json:
        click.echo(
            json.dumps({"job_id": job_id, "savepoint": location, "drain": drain, "state": state})
        )
    else:
        click.echo(location)


@flink.command("cancel")
@click.argument("job_id")
@_JSON
def flink_cancel(job_id: str, as_json: bool) -> None:
    """Cancel JOB_ID without a savepoint: its state is gone (see `backbone flink savepoint`)."""
    from retail_backbone.pipelines.flink_ops import FlinkOpsError

    rest = _flink_rest()
    try:
        rest.cancel(job_id)
        state = rest.state(job_id)
    except FlinkOpsError as exc:
        _echo_err(f"flink cancel failed: {exc}")
        sys.exit(1)
    if as_json:
        click.echo(json.dumps({"job_id": job_id, "state": state}))
    else:
        click.echo(f"{job_id} {state}")


@main.command(
    "backfill",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.argument("pipeline")
@click.option("--from", "start", required=True, help="First date, YYYY-MM-DD.")
@click.option("--to", "end", required=True, help="Last date, YYYY-MM-DD (included).")
@click.option("--parallel", default=1, show_default=True, help="Dates run at once.")
@click.option(
    "--state",
    "state_file",
    type=click.Path(dir_okay=False),
    help="State file of finished dates (default: .backfill/<pipeline>-<fingerprint>.json).",
)
@click.option("--force", is_flag=True, help="Run dates the state file lists as done too.")
@click.option(
    "--runner",
    type=click.Choice(["direct", "prism"]),
    default="direct",
    show_default=True,
    help="Runner of each date's batch job.",
)
@_JSON
@click.argument("params", nargs=-1, type=click.UNPROCESSED)
def backfill(
    pipeline: str,
    start: str,
    end: str,
    parallel: int,
    state_file: str | None,
    force: bool,
    runner: str,
    as_json: bool,
    params: tuple[str, ...],
) -> None:
    """Backfill PIPELINE: one batch run per date from --from to --to, resumable.

    Each date's run reads the date partitions of --input (its own partition, or for pipelines
    whose results are running state, such as inventory, every partition from --from up to it).
    Finished dates are recorded in the state file; a rerun skips them (unless --force), so a
    backfill that died continues with the first unfinished date. Sinks are idempotent: running
    a date again leaves the same state. Progress goes to stderr, a summary to stdout (--json
    for programs). Exit code 0 when every date succeeded, 1 when one failed, 2 on bad input.

    \b
    Example (cron-friendly):
      backbone backfill inventory --from 2025-11-01 --to 2025-11-30 --parallel 2 \
          --input=data/backfill --json
    """
    import datetime as dt

    from retail_backbone.io.sinks.base import SinkConfigError
    from retail_backbone.pipelines.backfill import StateMismatch, run_backfill
    from retail_backbone.pipelines.launch import local_plan
    from retail_backbone.pipelines.params import InvalidParams
    from retail_backbone.pipelines.runners import RUNNER_COMPONENTS, runner_args
    from retail_backbone.stack import Stack, StackConfig
    from retail_backbone.stack.components.base import StackError

    spec = _pipeline_spec(pipeline)
    try:
        first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    except ValueError as exc:
        raise click.BadParameter(f"dates are YYYY-MM-DD: {exc}") from None
    if last < first:
        raise click.BadParameter("--to is before --from")
    if parallel < 1:
        raise click.BadParameter("must be at least 1", param_hint="--parallel")
    cfg = StackConfig.load()
    plan = local_plan(spec, params, cfg)
    runner_argv = runner_args(runner, cfg)
    try:
        Stack(cfg, progress=lambda line: _echo_err(f"  {line}")).up(
            plan.components(RUNNER_COMPONENTS[runner])
        )
    except StackError as exc:
        _echo_err(f"backfill {spec.name} failed: {exc}")
        sys.exit(1)
    _apply_env(plan.env)
    try:
        summary = run_backfill(
            spec,
            first,
            last,
            plan.argv,
            runner_argv=runner_argv,
            state_path=Path(state_file) if state_file else None,
            parallel=parallel,
            force=force,
            progress=_echo_err,
        )
    except (InvalidParams, StateMismatch, ValueError) as exc:
        _echo_err(str(exc))
        sys.exit(2)
    except SinkConfigError as exc:
        _echo_err(f"backfill {spec.name} failed: {exc}")
        sys.exit(1)
    data = summary.as_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(
            f"{spec.name} backfill {data['from']}..{data['to']}: {data['done']} done, "
            f"{data['skipped']} skipped, {data['failed']} failed; {data['events']:,} events read "
            f"in {data['seconds']:.1f}s (state: {data['state_file']})"
        )
        for r in data["results"]:
            if r["status"] == "failed":
                click.echo(f"  {r['date']} failed: {r['error']}")
    sys.exit(0 if summary.ok else 1)


if __name__ == "__main__":  # pragma: no cover
    main()
