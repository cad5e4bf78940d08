"""The inventory job's batch backfill against the real PostgreSQL and Bigtable emulator."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from retail_backbone.generator import GeneratorConfig, generate_events, write_files
from retail_backbone.pipelines import inventory
from retail_backbone.pipelines.params import InvalidParams
from retail_backbone.stack.components.bigtable import INSTANCE, PROJECT
from retail_backbone.stack.components.postgres import dsn as pg_dsn
from retail_backbone.testing import inventory_bigtable_levels, inventory_postgres_state


@pytest.fixture(scope="module")
def backfill(tmp_path_factory):
    """Two small generated days as Parquet files, and the generator's own final stock."""
    cfg = GeneratorConfig(
        seed=11, days=2, n_products=50, n_locations=3, n_customers=600, events_per_day=3000
    )
    stream = generate_events(cfg)
    root = tmp_path_factory.mktemp("backfill")
    summary = write_files(stream, root, "parquet")
    world, truth = stream.world, stream.ledger
    expected = {
        (p.sku, loc.location_id): (
            truth.on_hand[i * truth.n_loc + j],
            truth.reserved[i * truth.n_loc + j],
        )
        for i, p in enumerate(world.products)
        for j, loc in enumerate(world.locations)
    }
    return root, summary, expected


@pytest.fixture
def stores(stack, monkeypatch):
    cfg = stack.require("postgres", "bigtable")
    monkeypatch.setenv("BIGTABLE_EMULATOR_HOST", f"{cfg.host}:{cfg.port('bigtable')}")
    suffix = f"_t{uuid.uuid4().hex[:8]}"
    dsn = pg_dsn(cfg)
    yield dsn, suffix
    from google.cloud import bigtable

    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in ("stock_levels", "stock_alerts", "demand_forecast"):
            conn.execute(f"DROP TABLE IF EXISTS {table}{suffix}")
    client = bigtable.Client(project=PROJECT, admin=True)
    table = client.instance(INSTANCE).table(f"stock_levels{suffix}")
    if table.exists():
        table.delete()


def test_batch_backfill_matches_the_generator_and_is_idempotent(backfill, stores):
    root, files, expected = backfill
    dsn, suffix = stores
    argv = [
        "--runner=DirectRunner",
        "--mode=batch",
        f"--input={root}",
        f"--postgres_dsn={dsn}",
        f"--table_suffix={suffix}",
    ]
    first = inventory.run(argv)

    # Counters account for the input: every event read, nothing dead-lettered, rows written.
    assert first["events_in"] == sum(
        n for rel, n in files.files.items() if rel.split("/")[0] in inventory_types()
    )
    assert first["dead_letters"] == 0, first["dead_letters_by_class"]
    ledger = first["ledger"]
    assert ledger["movements"] > 0 and ledger["keys"] > 0
    for label in (
        "WriteStockLevels",
        "WriteStockAlerts",
        "WriteDemandForecast",
        "ServeStockLevels",
    ):
        assert first["sinks"][label]["written"] > 0, label
        assert first["sinks"][label]["dead_lettered"] == 0, label

    # Postgres stock levels equal the generator's own ledger after the last event.
    state = inventory_postgres_state(dsn, suffix)
    levels = {(r[0], r[1]): (r[2], r[3]) for r in state["stock_levels"]}
    assert first["sinks"]["WriteStockLevels"]["written"] == len(levels)
    wrong = {k: (v, expected[k]) for k, v in levels.items() if expected[k] != v}
    assert not wrong, list(wrong.items())[:5]
    assert {k for k, v in expected.items() if v != (0, 0)} <= set(levels)

    # Bigtable serves the same rows as Postgres.
    served = inventory_bigtable_levels(suffix)
    assert served == {(r[0], r[1]): (r[2], r[3], r[4], r[5]) for r in state["stock_levels"]}

    # A second run of the same backfill changes nothing anywhere.
    second = inventory.run(argv)
    assert second["dead_letters"] == 0
    assert second["sinks"]["WriteStockLevels"]["written"] == 0
    assert second["sinks"]["WriteStockLevels"]["skipped_stale"] == len(levels)
    assert inventory_postgres_state(dsn, suffix) == state
    assert inventory_bigtable_levels(suffix) == served


def inventory_types() -> set[str]:
    from retail_backbone.transforms.inventory.ledger import LEDGER_EVENT_TYPES

    return set(LEDGER_EVENT_TYPES)


def test_invalid_params_fail_before_launch_with_every_problem():
    with pytest.raises(InvalidParams) as err:
        inventory.run(["--mode=batch", "--sinks=postgres,mysql", "--forecast_alpha=2"])
    message = str(err.value)
    assert "--sinks" in message
    with pytest.raises(InvalidParams) as err:
        inventory.run(["--mode=batch", "--sinks=postgres"])
    message = str(err.value)
    assert "--input is required" in message and "--postgres_dsn is required" in message
