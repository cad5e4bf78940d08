"""WriteToBigtableVersioned against the stack's real Bigtable emulator, on the local runner.

Faults are injected with a TCP proxy in front of the real emulator (``FaultProxy``).
"""

import dataclasses
import datetime as dt
import random
import uuid

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from google.cloud import bigtable
from google.cloud.bigtable import column_family
from google.cloud.bigtable.row_filters import CellsColumnLimitFilter

from retail_backbone.io.sinks.base import SINK_UNAVAILABLE, SinkPolicy, decode_row
from retail_backbone.io.sinks.bigtable import (
    STOCK_LEVELS_BIGTABLE,
    BigtableTableSpec,
    WriteToBigtableVersioned,
    decode_cells,
    ensure_bigtable_tables,
    read_latest,
)
from retail_backbone.io.sinks.rows import StockAlertRow, StockLevelRow
from retail_backbone.io.sinks.testing import FaultProxy, run_pipeline
from retail_backbone.stack.components.bigtable import INSTANCE, PROJECT

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
    call_timeout_s=5,
)
ALERTS = BigtableTableSpec(
    "stock_alerts", family="a", key=("alert_id",), insert_if_absent=True, row_type=StockAlertRow
)


@pytest.fixture
def emulator(stack, monkeypatch):
    cfg = stack.require("bigtable")
    address = f"{cfg.host}:{cfg.port('bigtable')}"
    monkeypatch.setenv("BIGTABLE_EMULATOR_HOST", address)
    return cfg, address


@pytest.fixture
def tables(emulator):
    """Per-test table names; the tables are deleted afterwards."""
    made: list[BigtableTableSpec] = []

    def make(spec: BigtableTableSpec) -> BigtableTableSpec:
        made.append(spec.renamed(f"it_{spec.name}_{uuid.uuid4().hex[:8]}"))
        return made[-1]

    yield make
    instance = bigtable.Client(project=PROJECT, admin=True).instance(INSTANCE)
    for spec in made:
        table = instance.table(spec.name)
        if table.exists():
            table.delete()


def data_table(spec):
    return bigtable.Client(project=PROJECT).instance(INSTANCE).table(spec.name)


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


def write(spec, data, *, label="ServeLevels", **kwargs):
    kwargs.setdefault("policy", FAST)

    def build(p):
        rows = p | f"{label}Rows" >> beam.Create(data, reshuffle=False)
        dead = rows | label >> WriteToBigtableVersioned(
            PROJECT, INSTANCE, spec, pipeline="it", **kwargs
        )
        return {"dead": dead}

    return run_pipeline(build, DIRECT)


def counts(run, label="ServeLevels"):
    return {
        n: run.counter(f"{label}.{n}", "it")
        for n in ("written", "skipped_stale", "failed", "dead_lettered")
    }


def dump(spec):
    """Every row's newest cells, decoded."""
    rows = data_table(spec).read_rows(filter_=CellsColumnLimitFilter(1))
    return sorted(decode_cells(spec, r) for r in rows)


def newest_per_key(rows):
    best = {}
    for r in rows:
        rank = (r.version, r.movements_applied)
        kept = best.get((r.sku, r.location))
        if kept is None or rank > (kept.version, kept.movements_applied):
            best[(r.sku, r.location)] = r
    return sorted(best.values())


def test_write_rewrite_is_idempotent_and_older_versions_are_skipped_and_counted(tables):
    spec = tables(STOCK_LEVELS_BIGTABLE)
    first = [level(i, BASE_MS + i) for i in range(200)]
    run = write(spec, first)
    assert run.outputs["dead"] == []
    assert counts(run) == {"written": 200, "skipped_stale": 0, "failed": 0, "dead_lettered": 0}
    assert dump(spec) == newest_per_key(first)

    raw = data_table(spec).read_row(b"SKU-0042#STORE-0")
    cells = raw.cells["s"]
    assert sorted(cells) == [
        b"available",
        b"movements_applied",
        b"on_hand",
        b"reserved",
        b"updated_at",
        b"version",
    ]
    assert {c[0].timestamp_micros for c in cells.values()} == {(BASE_MS + 42) * 1000}
    assert cells[b"on_hand"][0].value == b"36"  # JSON
    assert cells[b"updated_at"][0].value == b'"2025-11-24T16:00:00.042000+00:00"'

    # A replay: skipped and counted, the very same single cell per column.
    run = write(spec, first)
    assert counts(run) == {"written": 0, "skipped_stale": 200, "failed": 0, "dead_lettered": 0}
    assert data_table(spec).read_row(b"SKU-0042#STORE-0").cells == raw.cells

    # Out of order: older versions for the even skus, newer for the odd.
    mixed = [level(i, BASE_MS + i + (1000 if i % 2 else -1000), on_hand=99) for i in range(200)]
    run = write(spec, mixed)
    assert counts(run) == {"written": 100, "skipped_stale": 100, "failed": 0, "dead_lettered": 0}
    assert dump(spec) == newest_per_key(first + mixed)


def test_a_blind_older_write_cannot_shadow_the_newer_cells(tables):
    """Without the stale check the older row is written, yet reads still see the newer one."""
    spec = tables(dataclasses.replace(STOCK_LEVELS_BIGTABLE, tiebreak=None))
    newer = [level(i, BASE_MS + 5000 + i, on_hand=50) for i in range(20)]
    older = [level(i, BASE_MS + i, on_hand=1) for i in range(20)]
    write(spec, newer)
    run = write(spec, older, count_stale=False)
    assert counts(run)["written"] == 20  # blind: the store accepted the older cells ...
    assert dump(spec) == newer  # ... behind the newer ones
    table = data_table(spec)
    assert read_latest(table, spec, {"sku": "SKU-0003", "location": "STORE-3"}) == newer[3]
    assert read_latest(table, spec, {"sku": "SKU-9999", "location": "STORE-3"}) is None


def test_same_version_rows_are_ordered_by_the_tiebreak(tables):
    """Streaming refines a row without a newer event (late data): more movements win."""
    spec = tables(STOCK_LEVELS_BIGTABLE)
    write(spec, [level(i, BASE_MS, on_hand=10, movements=5) for i in range(10)])
    refined = [level(i, BASE_MS, on_hand=20, movements=6 if i % 2 else 4) for i in range(10)]
    run = write(spec, refined)
    assert counts(run) == {"written": 5, "skipped_stale": 5, "failed": 0, "dead_lettered": 0}
    assert [r.on_hand for r in dump(spec)] == [10, 20] * 5


def test_insert_if_absent_keeps_the_first_alert(tables):
    spec = tables(ALERTS)
    alerts = [
        StockAlertRow(f"alert-{i}", f"SKU-{i}", "STORE-1", "below_reorder_point", i, 12.5, BASE_MS)
        for i in range(30)
    ]
    run = write(spec, alerts, label="ServeAlerts")
    assert counts(run, "ServeAlerts")["written"] == 30
    before = dump(spec)
    assert before == sorted(alerts)

    again = [a._replace(kind="out_of_stock", version=BASE_MS + 5) for a in alerts[:10]]
    run = write(spec, again + alerts[10:], label="ServeAlerts")
    assert counts(run, "ServeAlerts") == {
        "written": 0,
        "skipped_stale": 30,
        "failed": 0,
        "dead_lettered": 0,
    }
    assert dump(spec) == before


def test_bad_rows_become_dead_letters_and_the_rest_is_written(tables):
    spec = tables(STOCK_LEVELS_BIGTABLE)
    data = [level(i, BASE_MS + i) for i in range(40)]
    data[3] = data[3]._replace(location="STORE#3")  # would make the row key ambiguous
    data[9] = data[9]._replace(version="1764000000009")  # not an int
    data[12] = data[12]._replace(updated_at=object())  # not encodable
    run = write(spec, data)
    dead = sorted(run.outputs["dead"], key=lambda d: d.payload)
    assert sorted(d.error_class for d in dead) == ["TypeError", "TypeError", "ValueError"]
    assert {d.stage for d in dead} == {"ServeLevels"}
    assert counts(run) == {"written": 37, "skipped_stale": 0, "failed": 3, "dead_lettered": 3}
    assert len(dump(spec)) == 37


def test_ensure_creates_tables_and_families_with_the_gc_rule(tables):
    spec = tables(STOCK_LEVELS_BIGTABLE)
    assert ensure_bigtable_tables(PROJECT, INSTANCE, [spec]) == [
        f"created table {spec.name} with family s"
    ]
    assert ensure_bigtable_tables(PROJECT, INSTANCE, [spec]) == []
    history = BigtableTableSpec(spec.name, family="h", key=("sku",), max_versions=3)
    assert ensure_bigtable_tables(PROJECT, INSTANCE, [history]) == [
        f"created column family {spec.name}:h"
    ]
    families = bigtable.Client(project=PROJECT, admin=True).instance(INSTANCE)
    families = families.table(spec.name).list_column_families()
    assert families["s"].gc_rule == column_family.MaxVersionsGCRule(1)
    assert families["h"].gc_rule == column_family.MaxVersionsGCRule(3)


def test_emulator_lost_mid_run_opens_the_breaker_and_a_replay_of_the_dead_letters_converges(
    emulator, tables, monkeypatch
):
    cfg, address = emulator
    spec, control = tables(STOCK_LEVELS_BIGTABLE), tables(STOCK_LEVELS_BIGTABLE)
    data = [level(i, BASE_MS + 1000 * v + i) for v in range(5) for i in range(100)]
    random.Random(5).shuffle(data)
    expected = newest_per_key(data)

    assert write(control, data).outputs["dead"] == []
    assert dump(control) == expected
    ensure_bigtable_tables(PROJECT, INSTANCE, [spec])

    # Cut when the 4th of 10 batches sends a row that is its key's newest: its version cell.
    newest = {(r.sku, r.version) for r in expected}
    marker = next(str(r.version) for r in data[150:200] if (r.sku, r.version) in newest)
    with FaultProxy(cfg.host, cfg.port("bigtable"), cut_on=marker.encode()) as proxy:
        monkeypatch.setenv("BIGTABLE_EMULATOR_HOST", proxy.address)
        run = write(spec, data, create_tables=False)
        assert proxy.cuts == 1
        dead = run.outputs["dead"]
        c = counts(run)
        assert c["written"] > 0 and dead
        assert c["written"] + c["skipped_stale"] + c["dead_lettered"] == len(data)
        assert c["dead_lettered"] == len(dead)
        assert {d.error_class for d in dead} == {SINK_UNAVAILABLE}
        assert run.counter("ServeLevels.breaker_opened", "it") == 1
        gave_up = [d for d in dead if "gave up after 4 attempt(s): ServiceUnavailable" in d.message]
        short_circuited = [d for d in dead if "circuit open after 3 consecutive" in d.message]
        assert len(gave_up) == c["failed"]
        assert len(short_circuited) == c["dead_lettered"] - c["failed"] > 0

        proxy.restore()
        replay = [decode_row(StockLevelRow, d.payload) for d in dead]
        run = write(spec, replay, create_tables=False)
        assert run.outputs["dead"] == []
    monkeypatch.setenv("BIGTABLE_EMULATOR_HOST", address)
    assert dump(spec) == expected
