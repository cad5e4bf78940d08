"""Routing of dead letters in ``backbone dlq replay``: sink letters go back to their step's sink."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json

import fastavro

from retail_backbone.io.dead_letters import DeadLetter, Origin, dead_letter
from retail_backbone.io.sinks.base import (
    BatchResult,
    BatchWriter,
    ErrorKind,
    SinkPolicy,
    SinkTarget,
    decode_row,
    encode_row,
)
from retail_backbone.io.sinks.bigtable import BigtableTarget
from retail_backbone.io.sinks.postgres import PostgresTarget
from retail_backbone.io.sinks.rows import DemandForecastRow, StockLevelRow
from retail_backbone.pipelines import dlq_replay, inventory, personalization
from retail_backbone.pipelines.dlq_replay import ReplayOptions, ledger_key, route, sink_targets_of
from retail_backbone.pipelines.job_options import sink_policy
from retail_backbone.schemas.catalog import SCHEMAS_DIR

LEVEL = StockLevelRow(
    sku="SKU-1",
    location="STORE-2",
    on_hand=5,
    reserved=1,
    available=4,
    version=1_764_000_000_000,
    updated_at=dt.datetime(2025, 11, 24, 16, 0, tzinfo=dt.UTC),
    movements_applied=3,
)
FORECAST = DemandForecastRow(
    sku="SKU-1",
    location="STORE-2",
    day=dt.date(2025, 11, 24),
    forecast=2.5,
    trend=0.1,
    safety_stock=1.2,
    reorder_point=6.2,
    version=1_764_000_000_000,
    revision=2,
)
OPTS = ["--postgres_dsn=env:PG", "--table_suffix=_blue", "--bigtable_instance=inst"]


def _targets(argv: list[str] = OPTS) -> dict:
    return sink_targets_of("inventory", ReplayOptions(["--pipeline=inventory", *argv]))


def _sink_letter(stage: str, address: str, row, kind: str = "SINK") -> DeadLetter:
    origin = Origin.for_sink(address) if kind == "SINK" else Origin(kind)
    return dead_letter(
        encode_row(row),
        origin,
        "inventory",
        stage,
        "stock_levels_blue unavailable",
        error_class="sink_unavailable",
        event_id=f"{address.split(':')[1]}/{row.sku}#{row.location}@{row.version}",
    )


def test_inventory_declares_every_sink_step_with_the_table_suffix():
    targets = _targets()
    assert {label: t.address for label, t in targets.items()} == {
        "WriteStockLevels": "postgres:stock_levels_blue",
        "WriteStockAlerts": "postgres:stock_alerts_blue",
        "WriteDemandForecast": "postgres:demand_forecast_blue",
        "ServeStockLevels": "bigtable:stock_levels_blue",
    }
    assert isinstance(targets["WriteStockLevels"], PostgresTarget)
    assert targets["WriteStockLevels"].dsn == "env:PG"
    bt = targets["ServeStockLevels"]
    assert isinstance(bt, BigtableTarget) and bt.instance_id == "inst"
    # The pipeline itself applies these very targets (one declaration for both).
    assert inventory.sink_targets(inventory.InventoryOptions(OPTS)) == targets


def test_personalization_declares_its_bigtable_and_graph_steps():
    opts = personalization.PersonalizationOptions(["--table_suffix=_t1"])
    addresses = {label: t.address for label, t in personalization.sink_targets(opts).items()}
    assert addresses == {
        "ServeProfiles": "bigtable:profiles_t1",
        "ServeRecommendations": "bigtable:recommendations_t1",
        "ServeRelatedProducts": "bigtable:related_products_t1",
        "WriteProductNodes": "graph:Product_t1/products",
        "WriteProductGraph": "graph:Product_t1/edges",
    }


def test_sink_letters_route_to_their_steps_target_and_decode_into_its_row_type():
    targets = _targets()
    letter = _sink_letter("WriteDemandForecast", "postgres:demand_forecast_blue", FORECAST)
    assert route(letter, targets) == "sink"
    assert targets[letter.stage].decode(letter.payload) == FORECAST
    served = _sink_letter("ServeStockLevels", "bigtable:stock_levels_blue", LEVEL)
    assert route(served, targets) == "sink"
    assert targets["ServeStockLevels"].decode(served.payload) == LEVEL
    # Letters written before the SINK origin existed (INTERNAL, a sink step's stage) too.
    legacy = _sink_letter("WriteStockLevels", "postgres:stock_levels_blue", LEVEL, "INTERNAL")
    assert route(legacy, targets) == "sink"


def test_sink_letters_that_cannot_go_back_are_not_routed_to_a_sink():
    targets = _targets()
    # Another --table_suffix than the failed run's: never written into the wrong table.
    other = _sink_letter("WriteStockLevels", "postgres:stock_levels_green", LEVEL)
    assert route(other, targets) == "sink_target_mismatch"
    unknown = _sink_letter("WriteSomethingElse", "postgres:stock_levels_blue", LEVEL)
    assert route(unknown, targets) == "unreplayable"
    internal = dead_letter(b"{}", Origin("INTERNAL"), "inventory", "UpdateStockLedger", "bad")
    assert route(internal, targets) == "unreplayable"
    # Unregistered pipelines have no sink steps.
    assert sink_targets_of("no_such_pipeline", ReplayOptions([])) == {}
    assert route(other, {}) == "unreplayable"


def test_kafka_and_file_letters_keep_their_routes_and_ledger_keys():
    kafka = dead_letter(b"x", Origin.kafka("retail.t", 0, 7), "inventory", "Decode", "bad")
    kafka = kafka._replace(event_id="e1")
    file = dead_letter(b"{}", Origin.file_line("/d/x.jsonl", 3), "inventory", "Read", "bad")
    assert route(kafka, _targets()) == "kafka" and route(file, _targets()) == "file"
    assert ledger_key(kafka) == "e1#1"


def test_ledger_keys_of_sink_letters_tell_apart_two_stores_with_one_table_name():
    pg = _sink_letter("WriteStockLevels", "postgres:stock_levels_blue", LEVEL)
    bt = _sink_letter("ServeStockLevels", "bigtable:stock_levels_blue", LEVEL)
    assert pg.event_id == bt.event_id  # the same record id in both stores
    assert ledger_key(pg) != ledger_key(bt)
    assert ledger_key(pg._replace(attempt=2)) != ledger_key(pg)


def test_replay_options_give_the_sink_policy_without_declaring_options_twice():
    opts = ReplayOptions(["--pipeline=inventory", "--sink_batch_size=7", "--sink_max_attempts=2"])
    policy = sink_policy(opts)
    assert (policy.batch_size, policy.max_attempts) == (7, 2)
    assert dlq_replay.NAMESPACE == "dlq_replay"


def test_sink_origin_round_trips_through_json_and_both_avro_versions():
    letter = _sink_letter("WriteStockLevels", "postgres:stock_levels_blue", LEVEL)
    assert DeadLetter.from_json(letter.to_json()) == letter
    v1, v2 = (
        fastavro.parse_schema(json.loads((SCHEMAS_DIR / "dead_letter" / f"{v}.avsc").read_text()))
        for v in ("v1", "v2")
    )
    record = letter.to_avro()
    # Written with v2 and read with v2: the sink survives; an old (v1) reader sees INTERNAL.
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, v2, record)
    buf.seek(0)
    assert DeadLetter.from_avro(fastavro.schemaless_reader(buf, v2)) == letter
    buf.seek(0)
    old = DeadLetter.from_avro(fastavro.schemaless_reader(buf, v2, v1))
    assert old.origin == Origin("INTERNAL") and old.payload == letter.payload


class _FlakyStore(BatchWriter):
    """Writes rows into ``stored`` (newest version wins) unless ``down``."""

    store = "fake"

    def __init__(self, stored: dict, down: bool) -> None:
        self.stored, self.down = stored, down

    @property
    def target(self) -> str:
        return "levels"

    def key(self, row) -> tuple:
        return (row.sku, row.location)

    def version(self, row) -> int:
        return row.version

    def write(self, rows) -> BatchResult:
        if self.down:
            raise ConnectionError("store down")
        written = 0
        for row in rows:
            old = self.stored.get(self.key(row))
            if old is None or old.version < row.version:
                self.stored[self.key(row)] = row
                written += 1
        return BatchResult(written=written, stale=len(rows) - written)

    def classify(self, error: BaseException) -> ErrorKind:
        return ErrorKind.TRANSIENT


@dataclasses.dataclass(frozen=True)
class _FakeTarget(SinkTarget):
    stored: dict
    down: bool = False
    store = "fake"

    @property
    def name(self) -> str:
        return "levels"

    def decode(self, payload: bytes):
        return decode_row(StockLevelRow, payload)

    def writer(self, policy: SinkPolicy) -> BatchWriter:
        return _FlakyStore(self.stored, self.down)

    def transform(self, pipeline, policy=None):
        raise NotImplementedError

    def ensure(self) -> list[str]:
        return []


def _replay(target: _FakeTarget, letters: list[DeadLetter]) -> tuple[list, list, list]:
    policy = SinkPolicy(max_attempts=1, backoff_initial_s=0, backoff_jitter_s=0)
    fn = dlq_replay._ReplaySinkFn({"WriteLevels": target}, policy)
    fn.setup()
    done, failed, parked = [], [], []
    for out in fn.process(("WriteLevels", letters)):
        tag = getattr(out, "tag", None)
        {None: done, "failed": failed, "park": parked}[tag].append(getattr(out, "value", out))
    fn.teardown()
    return done, failed, parked


def test_replayed_sink_rows_are_written_and_a_newer_stored_row_wins():
    newer = LEVEL._replace(version=LEVEL.version + 1, on_hand=9)
    stored = {("SKU-1", "STORE-2"): newer}
    other = LEVEL._replace(sku="SKU-3")
    letters = [
        _sink_letter("WriteLevels", "fake:levels", LEVEL),
        _sink_letter("WriteLevels", "fake:levels", other),
    ]
    done, failed, parked = _replay(_FakeTarget(stored), letters)
    assert sorted(done) == sorted(ledger_key(d) for d in letters)
    assert failed == [] and parked == []
    assert stored == {("SKU-1", "STORE-2"): newer, ("SKU-3", "STORE-2"): other}


def test_a_row_that_fails_again_comes_back_with_attempt_plus_one():
    letter = _sink_letter("WriteLevels", "fake:levels", LEVEL)._replace(attempt=2)
    undecodable = letter._replace(payload=b"not json", event_id="x")
    done, failed, parked = _replay(_FakeTarget({}, down=True), [letter, undecodable])
    assert done == [ledger_key(letter)]  # this failure is handled; the new one is attempt 3
    [again] = failed
    assert (again.attempt, again.first_seen_ms) == (3, letter.first_seen_ms)
    assert (again.stage, again.origin, again.event_id) == (
        "WriteLevels",
        Origin.for_sink("fake:levels"),
        letter.event_id,
    )
    assert again.error_class == "sink_unavailable" and again.payload == letter.payload
    assert parked == [undecodable]  # not a row of the table: nothing a retry could fix
