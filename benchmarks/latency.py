"""Shared by the streaming benchmarks: latency percentiles, the plain-consumer baseline, and the
Flink tuning options both take."""

from __future__ import annotations

import argparse
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


def add_flink_tuning(parser: argparse.ArgumentParser) -> None:
    """``--max_bundle_time_ms`` and ``--sdk_cache_mb``: the Flink knobs the benchmarks compare."""
    parser.add_argument(
        "--max_bundle_time_ms",
        type=int,
        default=1000,
        help="Flink runner: longest a bundle stays open (Beam's default is 1000)",
    )
    parser.add_argument(
        "--sdk_cache_mb",
        type=int,
        default=None,
        help="the SDK harness's state and side-input cache (--max_cache_memory_usage_mb); "
        "default: what runner_args sets",
    )


def flink_tuning_args(args: argparse.Namespace) -> list[str]:
    """The job options for what ``add_flink_tuning`` parsed."""
    out = [f"--max_bundle_time_mills={args.max_bundle_time_ms}"]
    if args.sdk_cache_mb is not None:
        out.append(f"--max_cache_memory_usage_mb={args.sdk_cache_mb}")
    return out
