"""The aligned Kafka watermark: a partition's progress counts for the others only once durable.

Regression: on Prism two partitions' bundles ran at once; the one that finished first reported
a watermark taken from the other's in-flight progress, so the other's records came late.
"""

import time

from apache_beam.io.restriction_trackers import OffsetRange
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.utils.timestamp import Timestamp

from retail_backbone.io.kafka_source import _DONE, _ReadPartitionFn

P0, P1 = ("t", 0), ("t", 1)


def _reader() -> _ReadPartitionFn:
    return _ReadPartitionFn(
        "unused:9092",
        group_id=None,
        consumer_config=None,
        commit_offsets=False,
        max_out_of_orderness=5,
        idle_stop_seconds=None,
        checkpoint_every=1.0,
        read_id=f"board-test-{time.monotonic_ns()}",
        planned=frozenset({P0, P1}),
    )


def _ms(estimator: ManualWatermarkEstimator) -> int | None:
    current = estimator.current_watermark()
    return None if current is None else current.micros // 1000


def test_a_partition_waits_for_the_others_durable_watermark():
    reader = _reader()
    p0, p1 = ManualWatermarkEstimator(None), ManualWatermarkEstimator(None)

    # p1's bundle is still running: its progress is not yet visible to p0.
    p1_progress = reader._advance(p1, P1, 1_000)
    reader._advance(p0, P0, 5_000)
    assert _ms(p0) is None

    # p1's bundle becomes durable: p0 may now move, but not past p1.
    reader._on_durable(P1, OffsetRange(0, 10), 10, p1_progress)
    reader._advance(p0, P0, 5_000)
    assert _ms(p0) == 1_000

    # p0's own durable progress caps p1 the same way.
    reader._on_durable(P0, OffsetRange(0, 10), 10, 5_000)
    reader._advance(p1, P1, 9_000)
    assert _ms(p1) == 5_000


def test_a_finished_partition_holds_nothing_once_its_last_bundle_is_durable():
    reader = _reader()
    p1 = ManualWatermarkEstimator(None)
    reader._on_durable(P0, OffsetRange(0, 10), 10, 2_000)
    reader._advance(p1, P1, 9_000)
    assert _ms(p1) == 2_000

    reader._on_durable(P0, OffsetRange(10, 10), 10, _DONE)
    reader._advance(p1, P1, 9_000)
    assert _ms(p1) == 9_000


def test_the_watermark_never_moves_backwards():
    reader = _reader()
    p0 = ManualWatermarkEstimator(Timestamp(micros=7_000_000))
    reader._on_durable(P1, OffsetRange(0, 10), 10, 3_000)
    reader._advance(p0, P0, 8_000)
    assert _ms(p0) == 7_000
