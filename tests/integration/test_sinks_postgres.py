"""WriteToPostgresVersioned against the stack's real PostgreSQL, on the local runners.

Faults are injected with a TCP proxy in front of the real server (``FaultProxy``), so "the
database goes away mid-run" does not stop the PostgreSQL other tests share.
"""

import datetime as dt
import random
import socket
import uuid

import apache_beam as beam
import psycopg
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.display import DisplayData
from psycopg import sql

from retail_backbone.io.sinks.base import (
    SINK_UNAVAILABLE,
    BatchGuard,
    BreakerState,
    SinkConfigError,
    SinkCounters,
    SinkPolicy,
    VersionedWriteFn,
)
from retail_backbone.io.sinks.postgres import (
    STOCK_ALERTS,
    STOCK_LEVELS,
    TableSpec,
    WriteToPostgresVersioned,
    _PostgresWriter,
    ensure_tables,
)
from retail_backbone.io.sinks.rows import StockAlertRow, StockLevelRow
from retail_backbone.io.sinks.testing import FaultProxy, run_pipeline
from retail_backbone.pipelines.runners import runner_args
from retail_backbone.stack.components.postgres import dsn as pg_dsn

BASE_MS = 1_764_000_000_000
DIRECT = PipelineOptions(["--runner=DirectRunner"])
FAST = SinkPolicy(
    batch_size=50,
    max_attempts=4,
    backoff_initial_s=0.05,
    backoff_max_s=0.2,
    backoff_jitter_s=0.05,
    breaker_threshold=3,
    breaker_reset_s=60,
    connect_timeout_s=2,
    call_timeout_s=10,
)


@pytest.fixture(scope="module")
def pg(stack):
    cfg = stack.require("postgres")
    return cfg, pg_dsn(cfg)


@pytest.fixture
def tables(pg):
    """Per-test copies of the inventory tables (unique names), dropped afterwards."""
    _, dsn = pg
    made: list[TableSpec] = []

    def make(spec: TableSpec) -> TableSpec:
        made.append(spec.renamed(f"it_{spec.name}_{uuid.uuid4().hex[:8]}"))
        return made[-1]

    yield make
    with psycopg.connect(dsn, autocommit=True) as conn:
        for spec in made:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(spec.name)))


def level(i: int, version: int, on_hand: int | None = None, movements: int = 1) -> StockLevelRow:
    on_hand = (i * 7 + version) % 100 if on_hand is None else on_hand
    return StockLevelRow(
        sku=f"SKU-{i:04d}",
        location=f"STORE-{i % 7}",
        on_hand=on_hand,
        reserved=i % 3,
        available=on_hand - i % 3,
        version=version,
        updated_at=dt.datetime.fromtimestamp(version / 1000, dt.UTC),
        movements_applied=movements,
    )


def write(dsn, spec, data, *, policy=FAST, label="WriteLevels", options=DIRECT, **kwargs):
    def build(p):
        rows = p | f"{label}Rows" >> beam.Create(data, reshuffle=False)
        written = rows | label >> WriteToPostgresVersioned(
            dsn, spec, pipeline="it", policy=policy, **kwargs
        )
        return {"dead": written}

    return run_pipeline(build, options)


def counts(run, label="WriteLevels"):
    return {
        n: run.counter(f"{label}.{n}", "it")
        for n in ("written", "skipped_stale", "failed", "dead_lettered")
    }


def dump(dsn, spec):
    with psycopg.connect(dsn) as conn:
        query = sql.SQL("SELECT * FROM {} ORDER BY {}").format(
            sql.Identifier(spec.name), sql.SQL(", ").join(map(sql.Identifier, spec.key))
        )
        return conn.execute(query).fetchall()


def newest_per_key(rows):
    best = {}
    for r in rows:
        rank = (r.version, r.movements_applied)
        kept = best.get((r.sku, r.location))
        if kept is None or rank > (kept.version, kept.movements_applied):
            best[(r.sku, r.location)] = r
    return [tuple(best[k]) for k in sorted(best)]


def test_write_rewrite_is_idempotent_and_older_versions_are_skipped_and_counted(pg, tables):
    _, dsn = pg
    spec = tables(STOCK_LEVELS)
    first = [level(i, BASE_MS + i) for i in range(200)]

    run = write(dsn, spec, first)
    assert run.outputs["dead"] == []
    assert counts(run) == {"written": 200, "skipped_stale": 0, "failed": 0, "dead_lettered": 0}
    state = dump(dsn, spec)
    assert state == newest_per_key(first)

    # A replay: nothing written, identical state, every row counted as stale.
    run = write(dsn, spec, first)
    assert counts(run) == {"written": 0, "skipped_stale": 200, "failed": 0, "dead_lettered": 0}
    assert dump(dsn, spec) == state

    # Out of order: older versions (with other values) for the even skus, newer for the odd.
    mixed = [level(i, BASE_MS + i + (1000 if i % 2 else -1000), on_hand=99) for i in range(200)]
    run = write(dsn, spec, mixed)
    assert counts(run) == {"written": 100, "skipped_stale": 100, "failed": 0, "dead_lettered": 0}
    assert dump(dsn, spec) == newest_per_key(first + mixed)
    assert {r[2] for r in dump(dsn, spec)[1::2]} == {99}  # odd skus moved forward


def test_same_version_rows_are_ordered_by_the_tiebreak(pg, tables):
    """Streaming refines a row without a newer event (late data): more movements win."""
    _, dsn = pg
    spec = tables(STOCK_LEVELS)
    write(dsn, spec, [level(i, BASE_MS, on_hand=10, movements=5) for i in range(10)])
    refined = [level(i, BASE_MS, on_hand=20, movements=6 if i % 2 else 4) for i in range(10)]
    run = write(dsn, spec, refined)
    assert counts(run) == {"written": 5, "skipped_stale": 5, "failed": 0, "dead_lettered": 0}
    assert [r[2] for r in dump(dsn, spec)] == [10, 20] * 5


def test_insert_if_absent_keeps_the_first_alert(pg, tables):
    _, dsn = pg
    spec = tables(STOCK_ALERTS)
    alerts = [
        StockAlertRow(f"alert-{i}", f"SKU-{i}", "STORE-1", "below_reorder_point", i, 12.5, BASE_MS)
        for i in range(30)
    ]
    run = write(dsn, spec, alerts, label="WriteAlerts")
    assert counts(run, "WriteAlerts")["written"] == 30
    before = dump(dsn, spec)

    # The same alert ids again, even with newer versions and other content: nothing changes.
    again = [a._replace(kind="out_of_stock", version=BASE_MS + 5) for a in alerts[:10]]
    run = write(dsn, spec, again + alerts[10:], label="WriteAlerts")
    assert counts(run, "WriteAlerts") == {
        "written": 0,
        "skipped_stale": 30,
        "failed": 0,
        "dead_lettered": 0,
    }
    assert dump(dsn, spec) == before


def test_bad_rows_become_dead_letters_and_the_rest_is_written_on_prism(stack, pg, tables):
    cfg, dsn = pg
    stack.require("prism")
    spec = tables(STOCK_LEVELS)
    data = [level(i, BASE_MS + i) for i in range(120)]
    data[17] = data[17]._replace(on_hand=None)  # NOT NULL
    data[64] = data[64]._replace(available=2**40)  # integer out of range
    run = write(dsn, spec, data, options=PipelineOptions(runner_args("prism", cfg)))

    dead = sorted(run.outputs["dead"], key=lambda d: d.event_id)
    assert [(d.error_class, d.event_id) for d in dead] == [
        ("NotNullViolation", f"{spec.name}/SKU-0017#STORE-3@{BASE_MS + 17}"),
        ("NumericValueOutOfRange", f"{spec.name}/SKU-0064#STORE-1@{BASE_MS + 64}"),
    ]
    assert {(d.stage, d.pipeline, d.origin.kind, d.origin.sink) for d in dead} == {
        ("WriteLevels", "it", "SINK", f"postgres:{spec.name}")
    }
    assert [spec.decode(d.payload) for d in dead] == [data[17], data[64]]
    assert all(d.traceback for d in dead)
    assert counts(run) == {"written": 118, "skipped_stale": 0, "failed": 2, "dead_lettered": 2}
    assert len(dump(dsn, spec)) == 118


def test_ensure_tables_creates_migrates_and_refuses_incompatible_tables(pg, tables):
    _, dsn = pg
    spec = tables(STOCK_LEVELS)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (sku text, location text, on_hand integer, version bigint, "
                "PRIMARY KEY (sku, location))"
            ).format(sql.Identifier(spec.name))
        )
    assert ensure_tables(dsn, [spec]) == [
        f"added column {spec.name}.{c} (nullable)"
        for c in (
            "reserved integer",
            "available integer",
            "updated_at timestamptz",
            "movements_applied bigint",
        )
    ]
    assert ensure_tables(dsn, [spec]) == []  # idempotent

    wrong_type = tables(STOCK_LEVELS)
    no_key = tables(STOCK_LEVELS)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {} (sku text, location text, on_hand text)").format(
                sql.Identifier(wrong_type.name)
            )
        )
        conn.execute(
            sql.SQL("CREATE TABLE {} (sku text, location text)").format(sql.Identifier(no_key.name))
        )
    with pytest.raises(SinkConfigError, match=r"on_hand is text but the spec says integer"):
        ensure_tables(dsn, [wrong_type])
    with pytest.raises(SinkConfigError, match=r"no primary key or unique index on exactly"):
        ensure_tables(dsn, [no_key])

    fresh = tables(STOCK_LEVELS)
    assert ensure_tables(dsn, [fresh]) == [f"created table {fresh.name}"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_secrets_stay_out_of_display_data_errors_and_dead_letters(pg, tables, monkeypatch):
    _, dsn = pg
    spec = tables(STOCK_LEVELS)
    secret_dsn = f"host=127.0.0.1 port={closed_port()} user=backbone password=hunter2 dbname=x"
    transform = WriteToPostgresVersioned(secret_dsn, spec, pipeline="it", create_tables=False)
    fn = VersionedWriteFn(_PostgresWriter(secret_dsn, spec, FAST), FAST, "it", "WriteLevels")
    for shown in (DisplayData.create_from(transform), DisplayData.create_from(fn)):
        assert "hunter2" not in repr(shown.items) and "backbone@127.0.0.1" in repr(shown.items)

    # Given as env:NAME, the connection string is read where it is used, never in the graph.
    monkeypatch.setenv("IT_INVENTORY_PG_DSN", dsn)
    run = write("env:IT_INVENTORY_PG_DSN", spec, [level(i, BASE_MS) for i in range(5)])
    assert counts(run)["written"] == 5

    with pytest.raises(SinkConfigError) as err:
        ensure_tables(secret_dsn, [spec], connect_timeout_s=2)
    assert "hunter2" not in str(err.value)

    run = write(secret_dsn, spec, [level(i, BASE_MS) for i in range(5)], create_tables=False)
    assert {d.error_class for d in run.outputs["dead"]} == {SINK_UNAVAILABLE}
    assert all("hunter2" not in d.to_json() for d in run.outputs["dead"])


def test_database_lost_mid_run_opens_the_breaker_and_a_replay_of_the_dead_letters_converges(
    pg, tables
):
    cfg, dsn = pg
    spec, control = tables(STOCK_LEVELS), tables(STOCK_LEVELS)
    rng = random.Random(5)
    # 100 keys x 5 versions, shuffled: the final state depends on last-writer-wins only.
    data = [level(i, BASE_MS + 1000 * v + i) for v in range(5) for i in range(100)]
    rng.shuffle(data)
    # Cut when the 4th of 10 batches is sent: at a row that is its key's newest (a row that
    # loses to a newer one in its batch is never sent).
    newest = {(r.sku, r.version) for r in map(StockLevelRow._make, newest_per_key(data))}
    marker = next(str(r.version) for r in data[150:200] if (r.sku, r.version) in newest).encode()

    fault_free = write(dsn, control, data)
    assert fault_free.outputs["dead"] == []
    expected = dump(dsn, control)
    assert expected == newest_per_key(data)

    with FaultProxy(cfg.host, cfg.port("postgres"), cut_on=marker) as proxy:
        proxy_dsn = pg_dsn(cfg).replace(f"port={cfg.port('postgres')}", f"port={proxy.port}")
        ensure_tables(dsn, [spec])
        run = write(proxy_dsn, spec, data, create_tables=False)
        assert proxy.cuts == 1
        dead = run.outputs["dead"]
        c = counts(run)
        assert c["written"] > 0 and dead
        assert c["written"] + c["skipped_stale"] + c["dead_lettered"] == len(data)
        assert c["dead_lettered"] == len(dead)
        assert {d.error_class for d in dead} == {SINK_UNAVAILABLE}
        assert run.counter("WriteLevels.retries", "it") >= 3 * (FAST.max_attempts - 1)
        assert run.counter("WriteLevels.breaker_opened", "it") == 1
        gave_up = [d for d in dead if "gave up after 4 attempt(s): OperationalError" in d.message]
        short_circuited = [d for d in dead if "circuit open after 3 consecutive" in d.message]
        assert len(gave_up) == c["failed"] and gave_up[0].traceback
        assert len(short_circuited) == c["dead_lettered"] - c["failed"] > 0
        assert dump(dsn, spec) != expected

        # The database is back: writing the dead letters' rows again converges.
        proxy.restore()
        replay = [spec.decode(d.payload) for d in dead]
        run = write(proxy_dsn, spec, replay, create_tables=False)
        assert run.outputs["dead"] == []
        assert dump(dsn, spec) == expected


def test_a_probe_closes_the_breaker_once_the_database_is_back(pg, tables):
    """The breaker's half-open probe against the real server (clock injected, no Beam)."""
    cfg, dsn = pg
    spec = tables(STOCK_LEVELS)
    ensure_tables(dsn, [spec])
    now = [0.0]
    with FaultProxy(cfg.host, cfg.port("postgres")) as proxy:
        proxy_dsn = pg_dsn(cfg).replace(f"port={cfg.port('postgres')}", f"port={proxy.port}")
        writer = _PostgresWriter(proxy_dsn, spec, FAST)
        writer.open()
        guard = BatchGuard(
            writer, FAST, SinkCounters("it", "probe"), clock=lambda: now[0], sleep=lambda _s: None
        )
        batches = [[level(i, BASE_MS + b) for i in range(10 * b, 10 * b + 10)] for b in range(8)]
        assert guard.write(batches[0]) == []

        proxy.cut()
        failed = []
        for batch in batches[1:5]:
            failed += [batch[r.position] for r in guard.write(batch)]
        assert len(failed) == 40 and guard.breaker.state is BreakerState.OPEN

        proxy.restore()
        rejected = guard.write(batches[5])  # before the reset timeout: still short-circuited
        assert [r.error for r in rejected] == [None] * 10
        failed += batches[5]
        now[0] += FAST.breaker_reset_s
        assert guard.write(batches[6]) == []  # the probe
        assert guard.breaker.state is BreakerState.CLOSED
        assert guard.write(batches[7]) == []
        assert guard.write(failed) == []
        writer.close()
    assert dump(dsn, spec) == newest_per_key([r for b in batches for r in b])
