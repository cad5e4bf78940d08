"""Shared by the streaming benchmarks: latency percentiles and the plain-consumer baseline."""

from __future__ import annotations

import statistics
import threading
import time
import uuid

from confluent_kafka import Consumer


def percentiles(values: list[float]) -> tuple[float, float, float]:
    """p50, p95, p99 (NaN when fewer than two values)."""
    if len(values) < 2:
        return (float("nan"),) * 3
    q = statistics.quantiles(values, n=100, method="inclusive")
    return statistics.median(values), q[94], q[98]


def baseline_consumer(
    bootstrap: str, topic: str, since_ms: int, stop: threading.Event, out: list
) -> None:
    """Produce -> receive latency (ms) of the records produced from ``since_ms`` on, until stop."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 10,
            "log_level": 0,
        }
    )
    consumer.subscribe([topic])
    try:
        while not stop.is_set():
            for msg in consumer.consume(500, timeout=0.1):
                if msg.error() is None and msg.timestamp()[1] >= since_ms:
                    out.append(time.time() * 1000 - msg.timestamp()[1])
    finally:
        consumer.close()
