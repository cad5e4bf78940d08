"""The personalization job against the real Bigtable emulator and the real graph store (Neo4j).

Backfill twice -> identical state; the graph store or the profile store lost mid-run -> breaker,
``sink_unavailable`` dead letters (profiles with their PII sealed), and a replay of them converges
to the state of a run without the outage.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from decimal import Decimal

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from retail_backbone.generator import GeneratorConfig, generate_events, write_files
from retail_backbone.io.sinks.base import SINK_UNAVAILABLE, SinkPolicy, decode_row
from retail_backbone.io.sinks.graph import (
    GraphSpec,
    WriteToGraphVersioned,
    ensure_graph_schema,
    graph_driver,
)
from retail_backbone.io.sinks.testing import FaultProxy, run_pipeline
from retail_backbone.pipelines import personalization
from retail_backbone.pipelines.params import InvalidParams
from retail_backbone.stack.components.bigtable import INSTANCE, PROJECT
from retail_backbone.testing import customer_profile
from retail_backbone.transforms.personalization import customer_key
from retail_backbone.transforms.personalization.types import BOUGHT_WITH, CoPurchaseEdge

HASH_KEY = "integration-test-key"
FAST = SinkPolicy(
    batch_size=50,
    max_attempts=3,
    backoff_initial_s=0.05,
    backoff_max_s=0.2,
    backoff_jitter_s=0.05,
    breaker_threshold=3,
    breaker_reset_s=60,
    connect_timeout_s=2,
    call_timeout_s=10,
)


@pytest.fixture(scope="module")
def backfill(tmp_path_factory):
    """Two small generated days as Parquet files, and per-customer order truth."""
    cfg = GeneratorConfig(
        seed=21, days=2, n_products=60, n_locations=4, n_customers=400, events_per_day=4000
    )
    root = tmp_path_factory.mktemp("personalization")
    orders: dict[str, list[Decimal]] = defaultdict(list)
    emails: set[str] = set()
    stream = generate_events(cfg)

    def tap(events):
        for e in events:
            kind = e["envelope"]["event_type"]
            if kind == "order_placed":
                orders[e["customer_id"]].append(e["total"])
            elif kind == "customer_upserted":
                emails.add(e["email"])
            yield e

    write_files(tap(stream), root, "parquet")
    return root, orders, emails


@pytest.fixture
def stores(stack, monkeypatch):
    cfg = stack.require("bigtable", "graph")
    monkeypatch.setenv("BIGTABLE_EMULATOR_HOST", f"{cfg.host}:{cfg.port('bigtable')}")
    monkeypatch.setenv("IT_PII_HASH_KEY", HASH_KEY)
    uri = f"bolt://{cfg.host}:{cfg.port('neo4j')}"
    suffixes: list[str] = []

    def new_suffix() -> str:
        suffixes.append(f"_t{uuid.uuid4().hex[:8]}")
        return suffixes[-1]

    yield cfg, uri, new_suffix
    from google.cloud import bigtable

    # A failed outage test may leave the variable pointing at its closed proxy.
    monkeypatch.setenv("BIGTABLE_EMULATOR_HOST", f"{cfg.host}:{cfg.port('bigtable')}")

    instance = bigtable.Client(project=PROJECT, admin=True).instance(INSTANCE)
    for suffix in suffixes:
        for name in ("profiles", "recommendations", "related_products"):
            table = instance.table(f"{name}{suffix}")
            if table.exists():
                table.delete()
        _drop_graph(uri, GraphSpec(suffix=suffix))


def _drop_graph(uri: str, spec: GraphSpec) -> None:
    with graph_driver(uri) as driver:
        driver.execute_query(
            f"MATCH (n) WHERE n:{spec.product} OR n:{spec.category} DETACH DELETE n"
        )
        for name in (f"{spec.product.lower()}_sku", f"{spec.category.lower()}_name"):
            driver.execute_query(f"DROP CONSTRAINT {name} IF EXISTS")


def _argv(root, uri, suffix, *extra):
    return [
        "--runner=DirectRunner",
        "--mode=batch",
        f"--input={root}",
        f"--table_suffix={suffix}",
        f"--neo4j_uri={uri}",
        "--pii_hash_key=env:IT_PII_HASH_KEY",
        "--end_date=2025-11-26",
        *extra,
    ]


def _bigtable_state(suffix: str) -> dict[str, dict[bytes, dict]]:
    """Every cell (value and timestamp) of the three tables: a byte-level comparison."""
    names = ("profiles", "recommendations", "related_products")
    return {name: _bigtable_cells(f"{name}{suffix}") for name in names}


def _bigtable_cells(table_name: str) -> dict[bytes, dict]:
    from google.cloud import bigtable

    table = bigtable.Client(project=PROJECT, admin=True).instance(INSTANCE).table(table_name)
    return {
        data.row_key: {
            (family, qualifier): [(c.value, c.timestamp_micros) for c in cells]
            for family, columns in data.cells.items()
            for qualifier, cells in columns.items()
        }
        for data in table.read_rows()
    }


def _graph_state(uri: str, spec: GraphSpec) -> dict[str, list]:
    with graph_driver(uri) as driver:
        nodes, _, _ = driver.execute_query(
            f"MATCH (n:{spec.product}) RETURN n.sku AS sku, properties(n) AS props ORDER BY sku"
        )
        edges, _, _ = driver.execute_query(
            f"MATCH (a:{spec.product})-[e]->(b) RETURN a.sku AS a, type(e) AS kind, "
            "coalesce(b.sku, b.name) AS b, properties(e) AS props ORDER BY a, kind, b"
        )
    return {"nodes": [r.data() for r in nodes], "edges": [r.data() for r in edges]}


def test_backfill_twice_gives_identical_bigtable_and_graph_state(backfill, stores):
    root, orders, emails = backfill
    _, uri, new_suffix = stores
    suffix = new_suffix()
    first = personalization.run(_argv(root, uri, suffix))

    assert first["state"] == "DONE" and first["dead_letters"] == 0
    assert first["accounting"]["balanced"], first["accounting"]
    sinks = first["sinks"]
    assert all(s["dead_lettered"] == 0 for s in sinks.values())
    assert sinks["ServeProfiles"]["written"] == first["profiles"]["profiles_emitted"] > 300
    assert sinks["WriteProductGraph"]["written"] > 100
    state = _bigtable_state(suffix)
    graph = _graph_state(uri, GraphSpec(suffix=suffix))
    kinds = {e["kind"] for e in graph["edges"]}
    assert kinds == {"BOUGHT_WITH", "VIEWED_WITH", "IN_CATEGORY"}
    assert all(e["a"] < e["b"] for e in graph["edges"] if e["kind"] != "IN_CATEGORY")

    # Profiles agree with the generator: order count and value per customer.
    from google.cloud import bigtable

    from retail_backbone.io.sinks.bigtable import read_latest

    spec = personalization.PROFILES_BIGTABLE.renamed(f"profiles{suffix}")
    table = bigtable.Client(project=PROJECT).instance(INSTANCE).table(spec.name)
    for customer, totals in sorted(orders.items())[:25]:
        profile = read_latest(
            table, spec, {"customer_key": customer_key(customer, HASH_KEY.encode())}
        )
        assert profile.customer_id == customer
        assert profile.frequency == len(totals)
        assert profile.monetary == float(sum(totals))
        assert profile.r_score >= 1 and profile.segment != "prospect"

    # PII stays in the profile store: no id or e-mail anywhere in the other tables.
    for name in ("recommendations", "related_products"):
        blob = repr(state[name])
        assert "CUST-" not in blob and not any(e in blob for e in list(emails)[:50])
    assert len(state["recommendations"]) == len(state["profiles"])

    second = personalization.run(_argv(root, uri, suffix))
    assert _bigtable_state(suffix) == state
    assert _graph_state(uri, GraphSpec(suffix=suffix)) == graph
    for label, counts in second["sinks"].items():
        assert counts["written"] == 0, (label, counts)
        assert counts["skipped_stale"] == sinks[label]["written"], label


def test_invalid_options_fail_before_anything_starts(backfill):
    root, _, _ = backfill
    with pytest.raises(InvalidParams, match="--pii_hash_key is required"):
        personalization.run(["--mode=batch", f"--input={root}"])


def _edges(n_keys: int) -> list[CoPurchaseEdge]:
    rows = []
    for i in range(n_keys):
        for version in (2, 1):  # every key twice, the newer first for half of them
            rows.append(
                CoPurchaseEdge(
                    BOUGHT_WITH if i % 2 else "VIEWED_WITH",
                    f"A-{i:04d}",
                    f"B-{i:04d}",
                    "2025-11-24",
                    version,
                    version + 1,
                    float(version) / 2,
                    1_764_028_800_000,
                    ["2025-11-24"],
                    [version],
                    1_764_000_000_000 + version,
                )
            )
    return rows[::2] + rows[1::2]  # newest of every key first, then the older duplicates


def _write_edges(uri, spec, rows):
    def build(p):
        dead = (
            p
            | "Rows" >> beam.Create(rows, reshuffle=False)
            | "WriteProductGraph"
            >> WriteToGraphVersioned(
                uri, spec, kind="edges", pipeline="it", policy=FAST, create_schema=False
            )
        )
        return {"dead": dead}

    return run_pipeline(build, PipelineOptions(["--runner=DirectRunner"]))


def test_graph_lost_mid_run_opens_the_breaker_and_a_replay_of_the_dead_letters_converges(stores):
    cfg, uri, new_suffix = stores
    control, spec = GraphSpec(suffix=new_suffix()), GraphSpec(suffix=new_suffix())
    rows = _edges(300)
    for s in (control, spec):
        ensure_graph_schema(uri, s)
    assert _write_edges(uri, control, rows).outputs["dead"] == []
    expected = _graph_state(uri, control)
    assert len(expected["edges"]) == 300 and all(
        e["props"]["version"] % 10 == 2 for e in expected["edges"]
    )

    # Cut the connection when the 4th batch (rows 150-199) reaches the wire.
    with FaultProxy(cfg.host, cfg.port("neo4j"), cut_on=rows[160].b.encode()) as proxy:
        run = _write_edges(f"bolt://{proxy.address}", spec, rows)
        assert proxy.cuts == 1
        dead = run.outputs["dead"]
        c = {
            n: run.counter(f"WriteProductGraph.{n}", "it")
            for n in ("written", "skipped_stale", "failed", "dead_lettered")
        }
        assert c["written"] >= 150 and dead
        assert c["written"] + c["skipped_stale"] + c["dead_lettered"] == len(rows)
        assert c["dead_lettered"] == len(dead)
        assert {d.error_class for d in dead} == {SINK_UNAVAILABLE}
        assert run.counter("WriteProductGraph.breaker_opened", "it") == 1
        assert any("circuit open after 3 consecutive" in d.message for d in dead)

        proxy.restore()
        replay = [decode_row(CoPurchaseEdge, d.payload) for d in dead]
        again = _write_edges(f"bolt://{proxy.address}", spec, replay)
        assert again.outputs["dead"] == []
    assert _graph_state(uri, spec) == expected


def _profiles(n: int) -> list:
    """``n`` customers with PII, then each again: older for even customers, newer for odd."""
    first, second = [], []
    for i in range(n):
        for version, rows in ((2, first), (1, second)) if i % 2 == 0 else ((1, first), (2, second)):
            rows.append(
                customer_profile(
                    customer_key=f"{i:032x}",
                    customer_id=f"CUST-{i:07d}",
                    email=f"shopper{i}@example.com",
                    phone=f"+44 20 7946 {i:04d}",
                    address=f"{i} Main Street",
                    frequency=version,
                    segment="loyal",
                    as_of_ms=1_764_115_200_000,
                    version=1_764_000_000_000 + version,
                    revision=version * 10**13,
                )
            )
    return first + second


def test_profile_store_lost_mid_run_dead_letters_sealed_rows_and_a_replay_converges(
    stores, monkeypatch
):
    """The outage path of the profile sink: breaker, letters without PII, replay with the key."""
    from retail_backbone.io.sinks.bigtable import BigtableTarget

    cfg, _, new_suffix = stores
    options = personalization.PersonalizationOptions(["--pii_hash_key=env:IT_PII_HASH_KEY"])
    sealed = personalization.table_specs(options)["profiles"]
    control, spec = (sealed.renamed(f"profiles{new_suffix()}") for _ in range(2))
    rows = _profiles(200)

    assert _bigtable_run(control, rows).outputs["dead"] == []
    expected = _bigtable_cells(control.name)
    assert len(expected) == 200

    # Cut when the 4th of 8 batches of 50 (rows 150-199) sends one of its row keys.
    emulator, marker = f"{cfg.host}:{cfg.port('bigtable')}", rows[170].customer_key.encode()
    with FaultProxy(cfg.host, cfg.port("bigtable"), cut_on=marker) as proxy:
        monkeypatch.setenv("BIGTABLE_EMULATOR_HOST", proxy.address)
        run = _bigtable_run(spec, rows)
        assert proxy.cuts == 1
        dead = run.outputs["dead"]
        c = {
            n: run.counter(f"Serve.{n}", "it")
            for n in ("written", "skipped_stale", "dead_lettered")
        }
        assert c["written"] >= 150 and dead
        assert c["written"] + c["skipped_stale"] + c["dead_lettered"] == len(rows)
        assert c["dead_lettered"] == len(dead)
        assert {d.error_class for d in dead} == {SINK_UNAVAILABLE}
        assert run.counter("Serve.breaker_opened", "it") == 1
        # The letters name the customer only by the HMAC key; the PII is sealed.
        for letter in dead:
            i = int(json.loads(letter.payload)["customer_key"], 16)
            for pii in (f"CUST-{i:07d}", f"shopper{i}@", f"7946 {i:04d}", f"{i} Main Street"):
                assert pii.encode() not in letter.payload, letter.payload

        proxy.restore()
        replay = [BigtableTarget(PROJECT, INSTANCE, spec).decode(d.payload) for d in dead]
        assert _bigtable_run(spec, replay).outputs["dead"] == []
    monkeypatch.setenv("BIGTABLE_EMULATOR_HOST", emulator)
    assert _bigtable_cells(spec.name) == expected


def _bigtable_run(spec, rows):
    """``rows`` through the Bigtable sink (step ``Serve``): the run, with its dead letters."""
    from retail_backbone.io.sinks.bigtable import WriteToBigtableVersioned

    def build(p):
        dead = (
            p
            | "Rows" >> beam.Create(rows, reshuffle=False)
            | "Serve"
            >> WriteToBigtableVersioned(PROJECT, INSTANCE, spec, pipeline="it", policy=FAST)
        )
        return {"dead": dead}

    return run_pipeline(build, PipelineOptions(["--runner=DirectRunner"]))


def _write_bigtable(spec, rows):
    run = _bigtable_run(spec, rows)
    assert run.outputs["dead"] == []
    return {n: run.counter(f"Serve.{n}", "it") for n in ("written", "skipped_stale")}


def test_same_version_rows_with_more_evidence_win_in_bigtable_and_the_graph(stores):
    """Late data within the lateness refines rows without a newer event: the tie-breaker wins."""
    from google.cloud import bigtable

    from retail_backbone.io.sinks.bigtable import ensure_bigtable_tables, read_latest
    from retail_backbone.transforms.personalization.types import RelatedProducts

    _, uri, new_suffix = stores
    suffix = new_suffix()
    spec = personalization.RELATED_PRODUCTS_BIGTABLE.renamed(f"related_products{suffix}")
    ensure_bigtable_tables(PROJECT, INSTANCE, [spec])
    v = 1_764_000_000_000
    first = [RelatedProducts(f"S-{i}", [["X", 1.0]], v, v, evidence=5) for i in range(10)]
    assert _write_bigtable(spec, first) == {"written": 10, "skipped_stale": 0}
    # Same version: more evidence (odd skus) replaces the row, less or equal does not.
    refined = [
        RelatedProducts(f"S-{i}", [["Y", 2.0]], v, v, evidence=6 if i % 2 else 5 - i % 4)
        for i in range(10)
    ]
    assert _write_bigtable(spec, refined) == {"written": 5, "skipped_stale": 5}
    table = bigtable.Client(project=PROJECT).instance(INSTANCE).table(spec.name)
    got = [read_latest(table, spec, {"sku": f"S-{i}"}) for i in range(10)]
    assert [(r.items[0][0], r.evidence) for r in got] == [("X", 5), ("Y", 6)] * 5

    graph = GraphSpec(suffix=suffix)
    ensure_graph_schema(uri, graph)
    edge = _edges(1)[0]  # version ...002, total 3
    assert _write_edges(uri, graph, [edge]).outputs["dead"] == []
    more = edge._replace(count=4, total=5, weight=2.5, counts=[4])
    less = edge._replace(count=1, total=2, weight=0.5, counts=[1])
    run = _write_edges(uri, graph, [more])
    assert run.counter("WriteProductGraph.written", "it") == 1
    run = _write_edges(uri, graph, [less, edge])
    assert run.counter("WriteProductGraph.skipped_stale", "it") == 2
    (stored,) = [e for e in _graph_state(uri, graph)["edges"] if e["kind"] != "IN_CATEGORY"]
    assert (stored["props"]["total"], stored["props"]["counts"]) == (5, [4])
    assert stored["props"]["version"] == edge.version
