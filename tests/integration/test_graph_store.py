"""Graph store: Cypher over Bolt against the stack's real Neo4j."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from neo4j import Driver, GraphDatabase

# One customer bought one product; MERGE makes re-delivery of the same event harmless.
_MERGE_PURCHASE = """
MERGE (c:Customer {id: $customer_id})
  ON CREATE SET c.name = $name, c.test_run = $run
MERGE (p:Product {sku: $sku})
  ON CREATE SET p.title = $title, p.price_cents = $price_cents, p.test_run = $run
MERGE (c)-[r:PURCHASED {order_id: $order_id}]->(p)
  ON CREATE SET r.quantity = $quantity
"""


@pytest.fixture(scope="module")
def driver(stack) -> Iterator[Driver]:
    cfg = stack.require("graph")
    with GraphDatabase.driver(f"bolt://{cfg.host}:{cfg.port('neo4j')}", auth=None) as drv:
        yield drv


@pytest.fixture
def purchase(driver: Driver) -> Iterator[dict]:
    # Unique keys per test so reruns against the persistent store never see old data.
    run = uuid.uuid4().hex
    params = {
        "run": run,
        "customer_id": f"cust-{run}",
        "name": "Ada Lovelace",
        "sku": f"sku-{run}",
        "title": "Espresso beans 1kg",
        "price_cents": 1899,
        "order_id": f"order-{run}",
        "quantity": 2,
    }
    yield params
    driver.execute_query("MATCH (n {test_run: $run}) DETACH DELETE n", run=run)


def test_merge_then_match_returns_exact_values(driver: Driver, purchase: dict) -> None:
    driver.execute_query(_MERGE_PURCHASE, purchase)

    records, _, _ = driver.execute_query(
        """
        MATCH (c:Customer {id: $customer_id})-[r:PURCHASED]->(p:Product)
        RETURN c.id AS customer_id, c.name AS name, p.sku AS sku, p.title AS title,
               p.price_cents AS price_cents, r.order_id AS order_id, r.quantity AS quantity
        """,
        customer_id=purchase["customer_id"],
    )

    assert [r.data() for r in records] == [
        {
            "customer_id": purchase["customer_id"],
            "name": "Ada Lovelace",
            "sku": purchase["sku"],
            "title": "Espresso beans 1kg",
            "price_cents": 1899,
            "order_id": purchase["order_id"],
            "quantity": 2,
        }
    ]


def test_re_merge_keeps_one_relationship(driver: Driver, purchase: dict) -> None:
    for _ in range(3):
        driver.execute_query(_MERGE_PURCHASE, purchase)

    records, _, _ = driver.execute_query(
        """
        MATCH (n {test_run: $run})
        OPTIONAL MATCH (n)-[r:PURCHASED]->()
        RETURN count(DISTINCT n) AS nodes, count(r) AS relationships
        """,
        run=purchase["run"],
    )

    assert records[0].data() == {"nodes": 2, "relationships": 1}
