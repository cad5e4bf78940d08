"""``backbone backfill inventory`` on generated days against the real Postgres.

One batch run per date on the direct runner; the state file lists the dates; a rerun runs
nothing; a forced rerun leaves every table identical; the result equals one run over the whole
range. (Failures and a dying backfill are injected in tests/unit/test_backfill.py.)
"""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest
from click.testing import CliRunner

from retail_backbone.cli import main
from retail_backbone.generator import GeneratorConfig, generate_events, write_files
from retail_backbone.pipelines import inventory
from retail_backbone.stack.components.postgres import dsn as pg_dsn

TABLES = ("stock_levels", "stock_alerts", "demand_forecast")
DAYS = ("2025-11-24", "2025-11-25", "2025-11-26")


@pytest.fixture(scope="module")
def event_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("backfill")
    cfg = GeneratorConfig(
        seed=5, days=3, n_products=30, n_locations=3, n_customers=300, events_per_day=1500
    )
    assert str(cfg.start) == DAYS[0]
    write_files(generate_events(cfg), root, "avro")
    return root


@pytest.fixture
def postgres(stack):
    cfg = stack.require("postgres")
    dsn = pg_dsn(cfg)
    suffixes = []
    yield dsn, suffixes
    with psycopg.connect(dsn, autocommit=True) as conn:
        for suffix in suffixes:
            for table in TABLES:
                conn.execute(f"DROP TABLE IF EXISTS {table}{suffix}")


def _state(dsn, suffix):
    with psycopg.connect(dsn) as conn:
        return {
            t: conn.execute(f"SELECT * FROM {t}{suffix} ORDER BY 1, 2, 3").fetchall()
            for t in TABLES
        }


def _backfill(tmp_path, event_files, suffix, *extra):
    result = CliRunner().invoke(
        main,
        [
            "backfill",
            "inventory",
            "--from",
            DAYS[0],
            "--to",
            DAYS[-1],
            "--state",
            str(tmp_path / "state.json"),
            "--json",
            *extra,
            f"--input={event_files}",
            "--sinks=postgres",
            f"--table_suffix={suffix}",
        ],
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_backfill_runs_each_date_once_resumes_and_is_idempotent(tmp_path, event_files, postgres):
    dsn, suffixes = postgres
    suffix, whole = f"_bf{uuid.uuid4().hex[:8]}", f"_bw{uuid.uuid4().hex[:8]}"
    suffixes += [suffix, whole]

    first = _backfill(tmp_path, event_files, suffix, "--parallel", "2")
    assert (first["done"], first["skipped"], first["failed"]) == (3, 0, 0)
    assert first["events"] > 0
    state_file = json.loads((tmp_path / "state.json").read_text())
    assert list(state_file["dates"]) == list(DAYS)
    assert all(d["status"] == "done" and d["events"] > 0 for d in state_file["dates"].values())
    after_first = _state(dsn, suffix)
    assert all(after_first[t] for t in TABLES)

    # The backfill's final state is the state of one run over the whole range.
    inventory.run(
        [
            "--runner=DirectRunner",
            "--mode=batch",
            f"--input={event_files}",
            f"--postgres_dsn={dsn}",
            "--sinks=postgres",
            f"--table_suffix={whole}",
        ]
    )
    assert _state(dsn, whole) == after_first

    # A rerun skips every finished date.
    again = _backfill(tmp_path, event_files, suffix)
    assert (again["done"], again["skipped"], again["events"]) == (0, 3, 0)

    # Forced: every date runs again and the tables are exactly as before.
    forced = _backfill(tmp_path, event_files, suffix, "--force")
    assert (forced["done"], forced["failed"]) == (3, 0)
    assert _state(dsn, suffix) == after_first
