"""The traffic generator: contracts, determinism, ordering, realism and fraud ground truth."""

from __future__ import annotations

import hashlib
import json
import re
import statistics
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from fastavro.validation import validate

from retail_backbone.generator import (
    EVENT_TYPES,
    GeneratorConfig,
    build_world,
    contracts,
    generate_events,
    write_fraud_truth,
)
from retail_backbone.generator.fraud import PATTERNS
from retail_backbone.generator.sinks import write_files, write_preferences

DAY_MS = 86_400_000
HOUR_MS = 3_600_000

# One run that every statistical test reads: small world, 8 days, a 4x peak on day 3 (Thursday).
STATS = GeneratorConfig(
    seed=11,
    start=date(2025, 11, 24),
    days=8,
    n_products=300,
    n_locations=12,
    n_customers=2_000,
    events_per_day=15_000,
    peak_day=date(2025, 11, 27),
    peak_multiplier=4.0,
    return_window_days=1,
    card_testing_per_day=0.6,
    velocity_per_day=0.6,
    impossible_travel_per_day=0.6,
)
# A short run with every event type, used to validate every single event against its schema.
SMALL = GeneratorConfig(
    seed=3,
    start=date(2025, 11, 27),
    days=3,
    n_products=200,
    n_locations=8,
    n_customers=800,
    events_per_day=4_000,
    peak_day=date(2025, 11, 28),
    peak_multiplier=3.0,
    return_window_days=1,
    card_testing_per_day=1.0,
    velocity_per_day=1.0,
    impossible_travel_per_day=1.0,
)
TINY = GeneratorConfig(
    seed=5, days=1, n_products=60, n_locations=4, n_customers=150, events_per_day=2_000
)


@dataclass
class Observed:
    """Aggregates of one pass over the STATS run (the stream is never held in memory)."""

    ordered: bool = True
    events: int = 0
    event_ids: set[str] = field(default_factory=set)
    by_day: dict[int, Counter] = field(default_factory=lambda: defaultdict(Counter))
    view_hours: Counter = field(default_factory=Counter)
    view_sessions: set[str] = field(default_factory=set)
    order_session: dict[str, str | None] = field(default_factory=dict)
    order_day: dict[str, int] = field(default_factory=dict)
    order_lines: dict[str, int] = field(default_factory=dict)
    order_customer: dict[str, str] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)
    returned_lines: Counter = field(default_factory=Counter)
    payments: dict[str, dict] = field(default_factory=dict)  # event id -> payment fields + time
    orders_by_event: dict[str, dict] = field(default_factory=dict)
    bad_keys: list[str] = field(default_factory=list)
    inventory_events: list[tuple] = field(default_factory=list)
    views_by_customer: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    bought_by_customer: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))


def _observe(stream) -> Observed:
    obs = Observed()
    start = stream.config.start_ms
    last = -1
    for event in stream:
        env = event["envelope"]
        etype, t = env["event_type"], env["event_time"]
        if t < last:
            obs.ordered = False
        last = t
        obs.events += 1
        obs.event_ids.add(env["event_id"])
        day = (t - start) // DAY_MS
        obs.by_day[day][etype] += 1
        key = env["partition_key"]
        if etype == "product_viewed":
            obs.view_sessions.add(event["session_id"])
            obs.view_hours[(t // HOUR_MS) % 24] += 1
            if event["customer_id"]:
                obs.views_by_customer[event["customer_id"]].append(event["sku"])
            if key != (event["customer_id"] or event["session_id"]):
                obs.bad_keys.append(etype)
        elif etype == "order_placed":
            oid = event["order_id"]
            obs.order_session[oid] = event["session_id"]
            obs.order_day[oid] = day
            obs.order_lines[oid] = len(event["lines"])
            obs.order_customer[oid] = event["customer_id"]
            obs.orders_by_event[env["event_id"]] = {"t": t, **event}
            obs.bought_by_customer[event["customer_id"]] += [ln["sku"] for ln in event["lines"]]
        elif etype == "order_cancelled":
            obs.cancelled.add(event["order_id"])
        elif etype == "return_processed":
            obs.returned_lines[event["order_id"]] += 1
        elif etype in ("payment_authorized", "payment_declined"):
            obs.payments[env["event_id"]] = {"t": t, "type": etype, **event}
        elif etype in ("inventory_adjusted", "stock_counted"):
            if key != f"{event['sku']}#{event['location']}":
                obs.bad_keys.append(etype)
            value = event["delta"] if etype == "inventory_adjusted" else event["quantity"]
            obs.inventory_events.append((etype, event["sku"], event["location"], value))
        if "order_id" in event:  # orders, payments, shipments, returns: keyed by the order
            if key != event["order_id"]:
                obs.bad_keys.append(etype)
        elif etype == "customer_upserted" and key != event["customer_id"]:
            obs.bad_keys.append(etype)
    return obs


@pytest.fixture(scope="module")
def run():
    stream = generate_events(STATS)
    obs = _observe(stream)
    return stream, obs


# -- contracts -------------------------------------------------------------------------------


def _check_decimals(value, path=""):
    if isinstance(value, Decimal):
        assert value.as_tuple().exponent == -2, f"{path}: {value!r} is not a 2-place decimal"
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_decimals(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_decimals(v, f"{path}[{i}]")


def test_every_event_validates_against_its_latest_schema():
    by_type = contracts()
    seen = Counter()
    for event in generate_events(SMALL):
        env = event["envelope"]
        contract = by_type[env["event_type"]]
        assert validate(event, contract.parsed, raise_errors=True)
        assert list(event) == [f["name"] for f in contract.schema["fields"]]  # schema order
        assert env["schema_subject"] == contract.subject == f"retail.{env['event_type']}-value"
        assert env["schema_version"] == contract.version
        assert uuid.UUID(env["event_id"]).version == 4
        assert env["ingest_time"] >= env["event_time"]
        assert env["source"] != "UNKNOWN"
        _check_decimals(event)
        seen[env["event_type"]] += 1
    assert set(seen) == set(EVENT_TYPES), f"missing: {set(EVENT_TYPES) - set(seen)}"
    assert contracts()["order_placed"].version == 2  # the latest, not v1


def test_pii_fields_appear_only_in_customer_upserted():
    pii_fields = {
        (t, f["name"]) for t, c in contracts().items() for f in c.schema["fields"] if f.get("pii")
    }
    assert pii_fields and {t for t, _ in pii_fields} == {"customer_upserted"}
    email = re.compile(r"[\w.+-]+@example\.(com|net|org)")
    phone = re.compile(r"555-01\d\d|7700 900\d\d\d")
    customer_events = 0
    for event in generate_events(SMALL):
        text = json.dumps(event, default=str)
        if event["envelope"]["event_type"] == "customer_upserted":
            customer_events += 1
            assert email.fullmatch(event["email"])
        else:
            assert not email.search(text), text[:300]
            assert not phone.search(text), text[:300]
    assert customer_events >= SMALL.n_customers  # the snapshot plus sign-ups


# -- determinism -----------------------------------------------------------------------------


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("fmt", ["jsonl", "avro", "parquet"])
def test_same_seed_same_bytes_different_seed_different_bytes(tmp_path, fmt):
    first = write_files(generate_events(TINY), tmp_path / "a", fmt)
    second = write_files(generate_events(TINY), tmp_path / "b", fmt)
    other = write_files(generate_events(replace(TINY, seed=6)), tmp_path / "c", fmt)
    assert first.events == second.events > 1_000
    assert first.files == second.files
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    assert other.events > 1_000
    layout = re.compile(rf"[a-z_]+/dt=\d{{4}}-\d{{2}}-\d{{2}}/part-00000\.{fmt}")
    assert all(layout.fullmatch(rel) for rel in first.files)


_DIGEST_SCRIPT = """
import hashlib, pathlib, sys
from retail_backbone.generator import GeneratorConfig, generate_events
from retail_backbone.generator.sinks import write_files
cfg = GeneratorConfig(seed=5, days=1, n_products=60, n_locations=4, n_customers=150,
                      events_per_day=2_000, card_testing_per_day=2, velocity_per_day=2)
out = pathlib.Path(sys.argv[1])
for fmt in ("avro", "parquet", "jsonl"):
    write_files(generate_events(cfg), out / fmt, fmt)
h = hashlib.sha256()
for p in sorted(out.rglob("*")):
    if p.is_file():
        h.update(p.read_bytes())
print(h.hexdigest())
"""


def test_output_does_not_depend_on_the_interpreter_hash_seed(tmp_path):
    import os
    import subprocess
    import sys

    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run(
            [sys.executable, "-c", _DIGEST_SCRIPT, str(tmp_path / hash_seed)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        digests.add(result.stdout.strip())
    assert len(digests) == 1


def test_file_outputs_read_back_to_the_generated_events(tmp_path):
    import fastavro
    import pyarrow.parquet as pq

    events = list(generate_events(TINY))
    summary = write_files(iter(events), tmp_path / "avro", "avro")
    write_files(iter(events), tmp_path / "pq", "parquet")
    write_files(iter(events), tmp_path / "js", "jsonl")
    rel = next(r for r in summary.files if r.startswith("order_placed/"))
    originals = [e for e in events if e["envelope"]["event_type"] == "order_placed"]
    with (tmp_path / "avro" / rel).open("rb") as fh:
        avro_rows = list(fastavro.reader(fh))
    parquet_rows = pq.read_table(tmp_path / "pq" / rel.replace(".avro", ".parquet")).to_pylist()
    json_rows = [
        json.loads(line)
        for line in (tmp_path / "js" / rel.replace(".avro", ".jsonl")).read_text().splitlines()
    ]
    assert len(avro_rows) == len(parquet_rows) == len(json_rows) == len(originals) > 0
    for orig, a, p, j in zip(originals, avro_rows, parquet_rows, json_rows, strict=True):
        assert (
            str(a["envelope"]["event_id"]) == p["envelope"]["event_id"] == j["envelope"]["event_id"]
        )
        assert a["total"] == p["total"] == Decimal(j["total"]) == orig["total"]
        assert j["envelope"]["event_time"] == orig["envelope"]["event_time"]
        assert int(p["envelope"]["event_time"].timestamp() * 1000) == orig["envelope"]["event_time"]
        assert isinstance(j["total"], str) and re.fullmatch(r"-?\d+\.\d\d", j["total"])


# -- ordering, volume, shape -----------------------------------------------------------------


def test_events_are_in_event_time_order(run):
    _, obs = run
    assert obs.ordered
    assert obs.events > 100_000


def test_partition_keys_follow_the_entity(run):
    _, obs = run
    assert obs.bad_keys == []
    assert any(e[0] == "inventory_adjusted" for e in obs.inventory_events)


def test_daily_volume_tracks_the_target_and_the_peak_multiplier(run):
    stream, obs = run
    totals = {d: sum(c.values()) for d, c in obs.by_day.items()}
    peak = STATS.peak_index()
    # Day 0 carries the opening snapshot; the rest are ordinary days.
    normal = [totals[d] / STATS.day_factor(d) for d in range(1, STATS.days) if d != peak]
    assert statistics.median(normal) == pytest.approx(STATS.events_per_day, rel=0.2)
    ratio = totals[peak] / statistics.median(totals[d] for d in range(1, STATS.days) if d != peak)
    assert ratio == pytest.approx(STATS.peak_multiplier, rel=0.2)
    views = {d: obs.by_day[d]["product_viewed"] for d in range(1, STATS.days)}
    view_ratio = views[peak] / statistics.median(v for d, v in views.items() if d != peak)
    assert view_ratio == pytest.approx(STATS.peak_multiplier, rel=0.15)
    assert stream.summary().total == obs.events


def test_diurnal_curve_is_low_at_night_and_high_midday(run):
    _, obs = run
    night = statistics.mean(obs.view_hours[h] for h in (2, 3, 4, 5))
    midday = statistics.mean(obs.view_hours[h] for h in (11, 12, 13, 14))
    evening = statistics.mean(obs.view_hours[h] for h in (19, 20, 21))
    assert night < 0.25 * midday
    assert evening > midday  # the evening peak is the day's highest


# -- funnel, cancellations, returns ----------------------------------------------------------


def _fraud_orders(stream) -> set[str]:
    return {o for incident in stream.fraud for o in incident.order_ids}


def test_order_conversion_per_session_is_a_few_percent(run):
    stream, obs = run
    converted = {s for s in obs.order_session.values() if s} & obs.view_sessions
    conversion = len(converted) / len(obs.view_sessions)
    assert 0.01 < conversion < 0.08, conversion
    lines = [n for o, n in obs.order_lines.items() if o not in _fraud_orders(stream)]
    assert statistics.mean(lines) > 1.2  # multi-line orders are common
    assert max(lines) >= 4


def test_cancellation_rate_is_a_few_percent(run):
    stream, obs = run
    honest = set(obs.order_lines) - _fraud_orders(stream)
    rate = len(obs.cancelled & honest) / len(honest)
    assert 0.01 < rate < 0.05, rate


def test_return_rate_of_order_lines_is_about_eight_percent(run):
    stream, obs = run
    # Orders early enough that every return (delivery <= ~4 days + 1-day window) is inside the run.
    eligible = [
        o
        for o, day in obs.order_day.items()
        if day <= 3 and o not in obs.cancelled and o not in _fraud_orders(stream)
    ]
    lines = sum(obs.order_lines[o] for o in eligible)
    returned = sum(obs.returned_lines[o] for o in eligible)
    assert lines > 800
    assert returned / lines == pytest.approx(STATS.return_rate, abs=0.03)


def test_latent_preferences_drive_views_and_purchases(run):
    stream, obs = run
    world = stream.world
    subcat_of = {p.sku: p.subcat for p in world.products}
    prefs = {c.customer_id: set(c.subcats) for c in world.customers}
    viewed = [
        subcat_of[sku] in prefs[cid]
        for cid, skus in obs.views_by_customer.items()
        if cid in prefs
        for sku in skus
    ]
    bought = [
        subcat_of[sku] in prefs[cid]
        for cid, skus in obs.bought_by_customer.items()
        if cid in prefs
        for sku in skus
    ]
    # A random subcategory would be preferred ~10% of the time (3-6 of 45).
    assert statistics.mean(viewed) > 0.7
    assert statistics.mean(bought) > 0.6


# -- inventory -------------------------------------------------------------------------------


def test_stock_replays_without_going_negative(run):
    stream, obs = run
    world = stream.world
    on_hand = {}
    for i, carried in enumerate(world.carried):
        if carried:
            p, loc = divmod(i, world.n_locations)
            on_hand[world.products[p].sku, world.locations[loc].location_id] = (
                world.initial_on_hand[i]
            )
    reasons = Counter()
    for etype, sku, loc, value in obs.inventory_events:
        if etype == "stock_counted":
            assert value >= 0
            on_hand[sku, loc] = value
        else:
            on_hand[sku, loc] = on_hand.get((sku, loc), 0) + value
            assert on_hand[sku, loc] >= 0, (sku, loc)
            reasons[value > 0] += 1
    assert reasons[True] > 0 and reasons[False] > 0  # receipts/returns and sales/shrink
    counters = stream.summary().counters
    assert counters.shipments > 0


# -- fraud ground truth ----------------------------------------------------------------------


def test_fraud_ground_truth_refers_to_existing_events(run, tmp_path):
    stream, obs = run
    incidents = stream.fraud
    assert {i.pattern for i in incidents} == set(PATTERNS)
    for incident in incidents:
        assert incident.event_ids and set(incident.event_ids) <= obs.event_ids
        assert incident.start_ms <= incident.end_ms
        payments = [obs.payments[e] for e in incident.event_ids if e in obs.payments]
        orders = [obs.orders_by_event[e] for e in incident.event_ids if e in obs.orders_by_event]
        assert all(o["customer_id"] == incident.customer_id for o in orders)
        if incident.pattern == "card_testing":
            assert len(payments) >= 5
            assert {p["card_token"] for p in payments} == {incident.card_token}
            assert max(p["t"] for p in payments) - min(p["t"] for p in payments) < 25 * 60_000
            assert sum(p["type"] == "payment_declined" for p in payments) >= len(payments) // 2
            assert all(p["amount"] < Decimal("40") for p in payments)
        elif incident.pattern == "velocity":
            assert len(orders) >= 3
            assert len({o["shipping_address_hash"] for o in orders}) == 1
            assert max(o["t"] for o in orders) - min(o["t"] for o in orders) < 60 * 60_000
        else:
            far = incident.details["far_country"]
            assert any(p["ip_country"] == far for p in payments)
            assert incident.end_ms - incident.start_ms < 45 * 60_000
            assert incident.details["distance_km"] > 5_000
    path = tmp_path / "truth.jsonl"
    assert write_fraud_truth(incidents, path) == len(incidents)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert {r["pattern"] for r in rows} == set(PATTERNS)


def test_no_ground_truth_leaks_into_events():
    stream = generate_events(SMALL)
    for event in stream:
        # SUSPECTED_FRAUD is a decline reason of the schema that honest payments get as well.
        text = json.dumps(event, default=str).lower().replace("suspected_fraud", "")
        assert "fraud" not in text and "velocity" not in text and "card_testing" not in text
    assert stream.fraud  # there were incidents to leak


# -- world -----------------------------------------------------------------------------------


def test_world_is_deterministic_and_sized_by_config(tmp_path):
    a, b = build_world(TINY), build_world(TINY)
    assert [p.title for p in a.products] == [p.title for p in b.products]
    assert [c.person for c in a.customers] == [c.person for c in b.customers]
    assert a.initial_on_hand == b.initial_on_hand
    assert len(a.products) == TINY.n_products and len(a.customers) == TINY.n_customers
    assert len(a.locations) == TINY.n_locations and a.fcs and a.stores
    for p in a.products:
        assert len(p.categories) == 2 and p.list_price.as_tuple().exponent == -2
        assert p.price_band in ("BUDGET", "MID", "PREMIUM", "LUXURY")
    c = a.customers[0]
    assert sum(c.subcat_weights) == pytest.approx(1.0)
    assert write_preferences(a, tmp_path / "prefs.jsonl") == TINY.n_customers
    first = json.loads((tmp_path / "prefs.jsonl").read_text().splitlines()[0])
    assert first["customer_id"] == c.customer_id and first["categories"]


def test_config_rejects_nonsense():
    with pytest.raises(ValueError, match="days"):
        GeneratorConfig(days=0)
    with pytest.raises(ValueError, match="return_rate"):
        GeneratorConfig(return_rate=1.5)
    with pytest.raises(ValueError, match="another seed"):
        generate_events(replace(TINY, seed=99), build_world(TINY))
