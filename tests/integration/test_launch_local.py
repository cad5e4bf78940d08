"""``backbone launch inventory --target local`` against the real Postgres, stack defaults filled."""

from __future__ import annotations

import json
import uuid

import psycopg
from click.testing import CliRunner

from retail_backbone.cli import main
from retail_backbone.generator import GeneratorConfig, generate_events, write_files
from retail_backbone.stack.components.postgres import dsn as pg_dsn


def test_local_launch_runs_the_job_with_the_stacks_connection_defaults(stack, tmp_path):
    cfg = stack.require("postgres")
    gen = GeneratorConfig(
        seed=9, days=1, n_products=20, n_locations=2, n_customers=100, events_per_day=800
    )
    write_files(generate_events(gen), tmp_path, "avro")
    suffix = f"_launch{uuid.uuid4().hex[:8]}"
    try:
        # No --postgres_dsn: launch passes the stack's as an env: reference.
        result = CliRunner().invoke(
            main,
            [
                "launch",
                "inventory",
                "--target",
                "local",
                "--json",
                "--mode=batch",
                f"--input={tmp_path}",
                "--sinks=postgres",
                f"--table_suffix={suffix}",
            ],
        )
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)
        summary = out["summary"]
        assert out["target"] == "local" and summary["state"] == "DONE"
        assert summary["events_in"] > 0 and summary["dead_letters"] == 0
        with psycopg.connect(pg_dsn(cfg)) as conn:
            (rows,) = conn.execute(f"SELECT count(*) FROM stock_levels{suffix}").fetchone()
        assert rows == summary["sinks"]["WriteStockLevels"]["written"] > 0
    finally:
        with psycopg.connect(pg_dsn(cfg), autocommit=True) as conn:
            for table in ("stock_levels", "stock_alerts", "demand_forecast"):
                conn.execute(f"DROP TABLE IF EXISTS {table}{suffix}")
