"""Events per second of ``retail_backbone.schemas.serde`` next to raw fastavro, same records.

Usage::

    backbone stack up --only registry
    .venv/bin/python benchmarks/serde_throughput.py            # --events 20000 --repeat 5

For each event type it times, on one list of records in one process:

- raw ``fastavro.schemaless_writer`` / ``schemaless_reader`` with a parsed schema (the floor:
  no header, no id, no cache lookup, no error handling);
- ``AvroSerializer.serialize`` / ``AvroDeserializer.deserialize`` (wire-format header, cached
  schema by id, typed errors);
- both again reading v1 bytes into the v2 reader schema (Avro schema resolution).

The schemas are registered once in the registry under ``benchmark.<event>-value`` (registering
again returns the same ids). Numbers are the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import random
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import fastavro

from retail_backbone.schemas.catalog import SCHEMAS_DIR
from retail_backbone.schemas.serde import (
    AvroDeserializer,
    AvroSerializer,
    RegistryClient,
    RegistryClientError,
)
from retail_backbone.stack import StackConfig


def envelope(rng: random.Random, event_type: str, when: datetime) -> dict:
    return {
        "event_id": uuid.UUID(int=rng.getrandbits(128), version=4),
        "event_type": event_type,
        "event_time": when,
        "ingest_time": when + timedelta(milliseconds=rng.randint(5, 900)),
        "source": rng.choice(["WEB", "MOBILE", "POS"]),
        "trace_id": rng.choice([None, uuid.UUID(int=rng.getrandbits(128)).hex]),
        "partition_key": f"cust-{rng.randint(1, 50_000)}",
        "schema_subject": f"retail.{event_type}-value",
        "schema_version": 1,
        "attributes": {"client": "ios-7.1"} if rng.random() < 0.3 else {},
    }


def order_placed(rng: random.Random, when: datetime) -> dict:
    lines = []
    for number in range(1, rng.randint(1, 5) + 1):
        lines.append(
            {
                "line_no": number,
                "sku": f"SKU-{rng.randint(1, 20_000):06d}",
                "quantity": rng.randint(1, 4),
                "unit_price": Decimal(rng.randint(99, 99_999)) / 100,
                "discount": Decimal(rng.randint(0, 500)) / 100,
                "fulfillment_location": f"DC-{rng.randint(1, 9)}",
            }
        )
    return {
        "envelope": envelope(rng, "order_placed", when),
        "order_id": f"ord-{rng.getrandbits(40):x}",
        "customer_id": f"cust-{rng.randint(1, 50_000)}",
        "session_id": rng.choice([None, f"sess-{rng.getrandbits(32):x}"]),
        "channel": rng.choice(["WEB", "MOBILE", "STORE"]),
        "store_id": None,
        "lines": lines,
        "total": sum(
            (ln["unit_price"] * ln["quantity"] - ln["discount"] for ln in lines), Decimal(0)
        ),
        "shipping_address_hash": f"{rng.getrandbits(64):016x}",
    }


def product_viewed(rng: random.Random, when: datetime) -> dict:
    return {
        "envelope": envelope(rng, "product_viewed", when),
        "customer_id": rng.choice([None, f"cust-{rng.randint(1, 50_000)}"]),
        "session_id": f"sess-{rng.getrandbits(32):x}",
        "sku": f"SKU-{rng.randint(1, 20_000):06d}",
        "channel": rng.choice(["WEB", "MOBILE"]),
    }


MAKERS = {"order_placed": order_placed, "product_viewed": product_viewed}


def best_rates(steps: list[tuple[str, str, Callable, list]], repeat: int) -> list[tuple]:
    """Events/s of each step, best of ``repeat`` runs.

    The steps take turns (one run of each per round), so that noise from other processes on the
    machine (Kafka shares it) hits them alike; garbage collection is off while timing, as in
    ``timeit``.
    """
    best = [float("inf")] * len(steps)
    for _ in range(repeat):
        for index, (_, _, step, items) in enumerate(steps):
            gc.collect()
            gc.disable()
            try:
                started = time.perf_counter()
                for item in items:
                    step(item)
                best[index] = min(best[index], time.perf_counter() - started)
            finally:
                gc.enable()
    return [(op, name, len(items) / t) for (op, name, _, items), t in zip(steps, best, strict=True)]


def raw_writer(parsed: object) -> Callable[[dict], bytes]:
    def write(record: dict) -> bytes:
        out = io.BytesIO()
        fastavro.schemaless_writer(out, parsed, record)
        return out.getvalue()

    return write


def raw_reader(writer: object, reader: object = None) -> Callable[[bytes], dict]:
    def read(body: bytes) -> dict:
        return fastavro.schemaless_reader(io.BytesIO(body), writer, reader)

    return read


def bench(event: str, client: RegistryClient, events: int, repeat: int) -> list[tuple]:
    rng = random.Random(7)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    records = [MAKERS[event](rng, start + timedelta(seconds=i)) for i in range(events)]
    v1_text = (SCHEMAS_DIR / event / "v1.avsc").read_text()
    v2_text = (SCHEMAS_DIR / event / "v2.avsc").read_text()
    v1 = fastavro.parse_schema(json.loads(v1_text))
    v2 = fastavro.parse_schema(json.loads(v2_text))
    subject = f"benchmark.{event}-value"

    ours_v1 = AvroSerializer(client, subject, v1_text)
    ours_v2 = AvroSerializer(client, subject, v2_text)
    v2_records = [{**r, **_v2_fields(event)} for r in records]
    raw_v2_bodies = [raw_writer(v2)(r) for r in v2_records]
    raw_v1_bodies = [raw_writer(v1)(r) for r in records]
    wire_v2 = [ours_v2.serialize(r) for r in v2_records]
    wire_v1 = [ours_v1.serialize(r) for r in records]
    assert wire_v2[0][5:] == raw_v2_bodies[0]  # same Avro body, plus the 5-byte header

    same = AvroDeserializer(client)
    resolving = AvroDeserializer(client, reader_schema=v2_text)
    assert same.deserialize(wire_v2[0])[0] == raw_reader(v2)(raw_v2_bodies[0])
    steps = [
        ("serialize", "raw fastavro schemaless_writer", raw_writer(v2), v2_records),
        ("serialize", "serde AvroSerializer", ours_v2.serialize, v2_records),
        ("deserialize", "raw fastavro schemaless_reader", raw_reader(v2), raw_v2_bodies),
        ("deserialize", "serde AvroDeserializer", same.deserialize, wire_v2),
        ("v1 -> v2 reader", "raw fastavro schemaless_reader", raw_reader(v1, v2), raw_v1_bodies),
        ("v1 -> v2 reader", "serde AvroDeserializer", resolving.deserialize, wire_v1),
    ]
    return best_rates(steps, repeat)


def _v2_fields(event: str) -> dict:
    if event == "order_placed":
        return {"currency": "USD", "coupon_code": None}
    return {"referrer": None, "dwell_ms": 1200}


def main() -> int:
    cfg = StackConfig.load()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--registry", default=f"http://{cfg.host}:{cfg.port('registry')}", help="registry URL"
    )
    parser.add_argument("--events", type=int, default=20_000, help="records per event type")
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement; best counts")
    parser.add_argument("--event", choices=sorted(MAKERS), action="append", help="default: all")
    args = parser.parse_args()

    client = RegistryClient(args.registry)
    try:
        print(f"registry {args.registry}, {args.events} records, best of {args.repeat} runs")
        for event in args.event or sorted(MAKERS):
            rows = bench(event, client, args.events, args.repeat)
            print(f"\n{event}")
            print(f"  {'operation':16} {'implementation':32} {'events/s':>10}  {'vs raw':>6}")
            raw = 0.0
            for operation, name, rate in rows:
                raw = rate if name.startswith("raw") else raw
                print(f"  {operation:16} {name:32} {rate:10,.0f}  {rate / raw:6.2f}")
    except RegistryClientError as exc:
        print(
            f"cannot use the registry: {exc}\nstart it with: backbone stack up --only registry",
            file=sys.stderr,
        )
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
