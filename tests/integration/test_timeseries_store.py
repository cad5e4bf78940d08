"""Time-series store: ILP over HTTP in, SQL out (HTTP /exec and PG wire) on the stack's QuestDB."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
import requests
from questdb import Sender

# Amounts are binary fractions so sums are exact doubles and can be compared with ==.
_ROWS = [
    # (store, sku, quantity, amount, at)
    ("store-1", "sku-a", 2, 37.75, datetime(2024, 3, 1, 9, 0, 0, tzinfo=UTC)),
    ("store-1", "sku-b", 1, 4.5, datetime(2024, 3, 1, 9, 0, 1, tzinfo=UTC)),
    ("store-2", "sku-a", 5, 94.25, datetime(2024, 3, 1, 9, 0, 2, tzinfo=UTC)),
    ("store-2", "sku-c", 3, 12.0, datetime(2024, 3, 1, 9, 0, 3, tzinfo=UTC)),
]


def _exec(http: str, query: str) -> dict:
    resp = requests.get(f"http://{http}/exec", params={"query": query}, timeout=10)
    return resp.json()


@pytest.fixture(scope="module")
def sales_table(stack) -> Iterator[tuple[str, object]]:
    """Write ``_ROWS`` into a fresh table once; drop it afterwards."""
    cfg = stack.require("timeseries")
    http = f"{cfg.host}:{cfg.port('questdb_http')}"
    table = f"test_sales_{uuid.uuid4().hex[:12]}"
    with Sender.from_conf(f"http::addr={http};") as sender:
        for store, sku, quantity, amount, at in _ROWS:
            sender.row(
                table,
                symbols={"store": store, "sku": sku},
                columns={"quantity": quantity, "amount": amount},
                at=at,
            )
    # Tables created by ILP are WAL tables: rows become readable once the apply job has run.
    deadline = time.monotonic() + 30
    while _exec(http, f"SELECT count() FROM {table}").get("dataset") != [[len(_ROWS)]]:
        assert time.monotonic() < deadline, f"{table} did not show {len(_ROWS)} rows in 30s"
        time.sleep(0.2)
    yield table, cfg
    _exec(http, f"DROP TABLE IF EXISTS {table}")


def test_http_exec_reads_back_exact_rows(sales_table) -> None:
    table, cfg = sales_table
    body = _exec(
        f"{cfg.host}:{cfg.port('questdb_http')}",
        f"SELECT store, sku, quantity, amount, timestamp FROM {table} ORDER BY timestamp",
    )

    assert [c["name"] for c in body["columns"]] == [
        "store",
        "sku",
        "quantity",
        "amount",
        "timestamp",
    ]
    assert [c["type"] for c in body["columns"]][:4] == ["SYMBOL", "SYMBOL", "LONG", "DOUBLE"]
    assert body["count"] == len(_ROWS)
    assert [row[:4] for row in body["dataset"]] == [list(r[:4]) for r in _ROWS]
    assert [row[4] for row in body["dataset"]] == [
        "2024-03-01T09:00:00.000000Z",
        "2024-03-01T09:00:01.000000Z",
        "2024-03-01T09:00:02.000000Z",
        "2024-03-01T09:00:03.000000Z",
    ]


def test_pg_wire_aggregates_exactly(sales_table) -> None:
    table, cfg = sales_table
    conninfo = f"host={cfg.host} port={cfg.port('questdb_pg')} user=admin password=quest dbname=qdb"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT store, sum(quantity), sum(amount), count(), min(timestamp) "
            f"FROM {table} ORDER BY store"
        ).fetchall()

    assert rows == [
        ("store-1", 3, 42.25, 2, datetime(2024, 3, 1, 9, 0, 0)),
        ("store-2", 8, 106.25, 2, datetime(2024, 3, 1, 9, 0, 2)),
    ]
