"""Issue #5 item 14: Postgres stops mid-run; the inventory job dead-letters, a replay converges.

The outage is a ``FaultProxy`` in front of the real PostgreSQL that cuts every connection (and
refuses new ones) when a chosen row is sent, so other tests' database keeps running. The job
runs in batch on generated files (direct runner); its dead letters go to files; then
``backbone dlq replay`` (its ``run``) writes the sink dead letters' rows back into Postgres.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest

from retail_backbone.generator import GeneratorConfig, generate_events, write_files
from retail_backbone.io.dead_letters import DeadLetter
from retail_backbone.io.sinks.base import SINK_UNAVAILABLE
from retail_backbone.io.sinks.testing import FaultProxy
from retail_backbone.pipelines import dlq_replay, inventory
from retail_backbone.stack.components.postgres import dsn as pg_dsn
from retail_backbone.testing import inventory_postgres_state

PG_STAGES = {"WriteStockLevels", "WriteStockAlerts", "WriteDemandForecast"}
TABLES = ("stock_levels", "stock_alerts", "demand_forecast")
# Small batches and a quick breaker, so a small run has enough batches to open it; the reset
# is longer than the run, so no probe batch gets through while the proxy is cut.
SINK_POLICY = [
    "--sink_batch_size=10",
    "--sink_max_attempts=2",
    "--sink_breaker_threshold=2",
    "--sink_breaker_reset_seconds=600",
]


@pytest.fixture(scope="module")
def events(tmp_path_factory) -> Path:
    cfg = GeneratorConfig(
        seed=14, days=2, n_products=40, n_locations=3, n_customers=300, events_per_day=3000
    )
    root = tmp_path_factory.mktemp("outage_events")
    write_files(generate_events(cfg), root, "parquet")
    return root


@pytest.fixture
def pg(stack):
    cfg = stack.require("kafka", "registry", "postgres")
    suffixes = [f"_ref{uuid.uuid4().hex[:8]}", f"_cut{uuid.uuid4().hex[:8]}"]
    dsn = pg_dsn(cfg)
    yield cfg, dsn, suffixes
    with psycopg.connect(dsn, autocommit=True) as conn:
        for suffix in suffixes:
            for table in TABLES:
                conn.execute(f"DROP TABLE IF EXISTS {table}{suffix}")


def _argv(events: Path, dsn: str, suffix: str, *extra: str) -> list[str]:
    return [
        "--runner=DirectRunner",
        "--mode=batch",
        f"--input={events}",
        f"--postgres_dsn={dsn}",
        f"--table_suffix={suffix}",
        "--sinks=postgres",
        *SINK_POLICY,
        *extra,
    ]


def _letters(folder: Path) -> list[DeadLetter]:
    return [
        DeadLetter.from_json(line)
        for path in sorted(folder.glob("dt=*/*"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]


def test_postgres_lost_mid_run_then_a_dead_letter_replay_converges(events, pg, tmp_path):
    cfg, dsn, (ref_suffix, cut_suffix) = pg

    # Fault-free reference run.
    reference = inventory.run(_argv(events, dsn, ref_suffix))
    assert reference["dead_letters"] == 0, reference["dead_letters_by_class"]
    expected = inventory_postgres_state(dsn, ref_suffix)
    assert all(expected[t] for t in TABLES)

    # Cut when a stock level from late in the reference run's write order (heap order of a fresh
    # table) is sent, so the batches before it land. Its COPY text (reserved, available,
    # version) is found in no other table's rows.
    with psycopg.connect(dsn) as conn:
        sent = conn.execute(
            f"SELECT reserved, available, version FROM stock_levels{ref_suffix} ORDER BY ctid"
        ).fetchall()
    marker = "\t".join(map(str, sent[len(sent) * 3 // 4])).encode()
    dead_dir = tmp_path / "dlq"
    with FaultProxy(cfg.host, cfg.port("postgres"), cut_on=marker) as proxy:
        proxy_dsn = dsn.replace(f"port={cfg.port('postgres')}", f"port={proxy.port}")
        assert proxy_dsn != dsn
        cut = inventory.run(_argv(events, proxy_dsn, cut_suffix, f"--dead_letters_dir={dead_dir}"))

        # The run finished; the sinks retried, gave up, opened their breakers, dead-lettered.
        assert proxy.cuts == 1
        assert cut["state"] == "DONE"
        sinks = cut["sinks"]
        assert set(sinks) == PG_STAGES
        assert sum(s["written"] for s in sinks.values()) > 0, cut  # rows landed before the cut
        assert sum(s["retries"] for s in sinks.values()) > 0, cut
        assert sum(s["breaker_opened"] for s in sinks.values()) >= 1
        for label, s in sinks.items():
            assert s["written"] + s["skipped_stale"] + s["dead_lettered"] > 0, label
        letters = _letters(dead_dir)
        assert letters and {d.error_class for d in letters} == {SINK_UNAVAILABLE}
        assert (
            len(letters) == cut["dead_letters"] == sum(s["dead_lettered"] for s in sinks.values())
        )
        assert {d.stage for d in letters} <= PG_STAGES
        assert {d.origin.kind for d in letters} == {"SINK"}
        assert {d.origin.sink for d in letters} <= {f"postgres:{t}{cut_suffix}" for t in TABLES}
        assert any("circuit open" in d.message for d in letters)
        assert any("gave up after 2 attempt(s)" in d.message for d in letters)
        assert inventory_postgres_state(dsn, cut_suffix) != expected

        # Postgres is back: replaying the sink dead letters converges to the reference.
        proxy.restore()
        replay_argv = [
            "--runner=DirectRunner",
            "--pipeline=inventory",
            "--source=files",
            f"--files_dir={dead_dir}",
            f"--error_class={SINK_UNAVAILABLE}",
            f"--bootstrap_servers={cfg.host}:{cfg.port('kafka')}",
            f"--registry_url=http://{cfg.host}:{cfg.port('registry')}",
            f"--postgres_dsn={proxy_dsn}",
            f"--table_suffix={cut_suffix}",
        ]
        first = dlq_replay.run(replay_argv).counters
        assert first["replayed"] == first["replayed_to_sink"] == len(letters)
        assert first.get("parked", 0) == first.get("unreplayable", 0) == 0
        stages = {d.stage for d in letters}
        assert sum(first.get(f"{s}.written", 0) for s in stages) > 0
        for stage in stages:
            assert first.get(f"{stage}.dead_lettered", 0) == 0, stage
        assert inventory_postgres_state(dsn, cut_suffix) == expected
        assert len(_letters(dead_dir)) == len(letters)  # nothing failed again

        # A second replay finds every letter in the ledger and writes nothing.
        second = dlq_replay.run(replay_argv).counters
        assert second.get("replayed", 0) == 0
        assert second["already_replayed"] == len(letters)
        assert not any(k.endswith(".written") for k in second)
        assert inventory_postgres_state(dsn, cut_suffix) == expected
