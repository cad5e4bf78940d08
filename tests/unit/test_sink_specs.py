"""Table specs of the sinks: validation, generated SQL, row keys, secrets (no services)."""

import dataclasses

import pytest

from retail_backbone.io.sinks.base import SinkConfigError, resolve_secret
from retail_backbone.io.sinks.bigtable import STOCK_LEVELS_BIGTABLE, BigtableTableSpec
from retail_backbone.io.sinks.postgres import (
    DEMAND_FORECAST,
    INVENTORY_TABLES,
    STOCK_ALERTS,
    STOCK_LEVELS,
    Column,
    TableSpec,
    redacted_dsn,
)
from retail_backbone.io.sinks.rows import StockLevelRow


def text(composed) -> str:
    return composed.as_string(None)


def test_the_inventory_tables():
    assert [t.name for t in INVENTORY_TABLES] == ["stock_levels", "stock_alerts", "demand_forecast"]
    assert STOCK_LEVELS.key == ("sku", "location")
    assert STOCK_ALERTS.key == ("alert_id",) and STOCK_ALERTS.insert_if_absent
    assert DEMAND_FORECAST.key == ("sku", "location", "day")
    assert {c.sql_type for c in DEMAND_FORECAST.columns if c.name not in DEMAND_FORECAST.key} == {
        "double precision",
        "bigint",
        "integer",
    }
    assert (STOCK_LEVELS.tiebreak, DEMAND_FORECAST.tiebreak) == ("movements_applied", "revision")
    for spec in INVENTORY_TABLES:
        assert spec.row_type._fields == spec.column_names


def test_generated_sql():
    assert text(STOCK_LEVELS.create_sql()).endswith(
        '"updated_at" timestamptz NOT NULL, "movements_applied" bigint NOT NULL, '
        'PRIMARY KEY ("sku", "location"))'
    )
    merge = text(STOCK_LEVELS.merge_sql())
    assert 'FROM "_staging_stock_levels" ORDER BY "sku", "location"' in merge
    assert 'ON CONFLICT ("sku", "location") DO UPDATE SET "on_hand" = excluded."on_hand"' in merge
    assert merge.endswith(
        'WHERE (excluded."version", excluded."movements_applied") > '
        '(t."version", coalesce(t."movements_applied", -1))'
    )
    no_tiebreak = dataclasses.replace(STOCK_LEVELS, tiebreak=None)
    assert text(no_tiebreak.merge_sql()).endswith('WHERE excluded."version" > t."version"')
    assert '"sku" = excluded' not in merge  # keys are never updated
    assert text(STOCK_ALERTS.merge_sql()).endswith('ON CONFLICT ("alert_id") DO NOTHING')
    staging = text(STOCK_LEVELS.staging_sql())
    assert staging.startswith('CREATE TEMP TABLE IF NOT EXISTS "_staging_stock_levels"')
    assert "NOT NULL" not in staging and staging.endswith("ON COMMIT DELETE ROWS")
    assert text(STOCK_LEVELS.copy_sql()) == (
        'COPY "_staging_stock_levels" ("sku", "location", "on_hand", "reserved", "available", '
        '"version", "updated_at", "movements_applied") FROM STDIN'
    )


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"key": ("nope",)}, "not declared"),
        ({"version": "v"}, "not declared"),
        ({"key": ()}, "not declared"),
        ({"name": "Bad-Name"}, "identifiers"),
        ({"row_type": StockLevelRow}, "has fields"),
    ],
)
def test_specs_are_validated(kwargs, error):
    columns = (Column("k", "text"), Column("version", "bigint"))
    spec = {"name": "t", "columns": columns, "key": ("k",)}
    with pytest.raises(SinkConfigError, match=error):
        TableSpec(**{**spec, **kwargs})


def test_dsns_are_shown_without_passwords():
    dsn = "host=db port=5433 user=app password=hunter2 dbname=inv"
    assert redacted_dsn(dsn) == "app@db:5433/inv"
    assert redacted_dsn("postgresql://app:hunter2@db:5433/inv") == "app@db:5433/inv"
    assert redacted_dsn("env:INVENTORY_PG_DSN") == "env:INVENTORY_PG_DSN"


def test_secrets_can_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("IT_SECRET_DSN", "host=db password=hunter2")
    assert resolve_secret("env:IT_SECRET_DSN") == "host=db password=hunter2"
    assert resolve_secret("host=db") == "host=db"
    monkeypatch.delenv("IT_SECRET_DSN")
    with pytest.raises(SinkConfigError, match="IT_SECRET_DSN"):
        resolve_secret("env:IT_SECRET_DSN")


def test_bigtable_row_keys():
    assert STOCK_LEVELS_BIGTABLE.row_key({"sku": "SKU-1", "location": "STORE-7"}) == (
        b"SKU-1#STORE-7"
    )
    with pytest.raises(ValueError, match="separator"):
        STOCK_LEVELS_BIGTABLE.row_key({"sku": "SKU#1", "location": "STORE-7"})
    salted = BigtableTableSpec("events", "e", key=("store", "ts"), salt_buckets=16)
    key = salted.row_key({"store": "S1", "ts": 1764000000000})
    assert key == salted.row_key({"store": "S1", "ts": 1764000000000})  # stable across processes
    assert key.split(b"#", 1)[1] == b"S1#1764000000000" and len(key.split(b"#")[0]) == 2
    assert salted.key_fields(key) == {"store": "S1", "ts": "1764000000000"}
    buckets = {salted.row_key({"store": "S1", "ts": t}).split(b"#")[0] for t in range(200)}
    assert len(buckets) == 16  # consecutive timestamps spread over every prefix
