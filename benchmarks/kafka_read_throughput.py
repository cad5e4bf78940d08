"""Kafka read throughput: ReadFromKafkaEvents (Python engine) on Prism next to raw confluent-kafka.

Usage::

    .venv/bin/python benchmarks/kafka_read_throughput.py        # 200k records, 6 partitions
    .venv/bin/python benchmarks/kafka_read_throughput.py --records 500000 --partitions 3 --json

One run produces ``--records`` small records (``--value-bytes`` each, keys ``k<i>``, Kafka
timestamps set) to a fresh topic on the stack's broker, then measures, each in a fresh process so
that peak memory belongs to one stage:

- ``raw consume``: one confluent-kafka consumer assigned to every partition from offset 0,
  ``consume(1000)`` until every record arrived; nothing else per record. The client's floor.
- ``raw + KafkaRecord``: the same, building the ``KafkaRecord`` tuple and timestamp the source
  emits per record: the Python floor of any reader producing these elements.
- ``beam empty read``: the pipeline below over empty ranges (stop = start): job submission,
  Prism start-up, SDK harness, planning; what every Beam run pays before the first record.
- ``beam read``: ``ReadFromKafkaEvents(stop=StopPosition.at_offsets(end offsets))`` ->
  ``Count.Globally`` on a Prism started for the run (``--runner=PrismRunner``, LOOPBACK: the SDK
  harness runs in the measuring process). ``net`` divides by the time above the empty read.

The Beam count is checked against the number produced (a benchmark that loses records is not a
benchmark). Peak memory is the maximum resident set size of the stage's process and, for Beam, of
its children (the Prism process). The topic is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path

PRISM = Path.home() / ".cache/retail-backbone/bin/prism-2.62.0/prism"


def _peak_mb() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def _produce(bootstrap: str, topic: str, records: int, partitions: int, value_bytes: int) -> float:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(10)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1 << 20, "acks": "all"}
    )
    pad = b"x" * max(value_bytes - 24, 0)
    now = int(time.time() * 1000) - records
    started = time.perf_counter()
    for i in range(records):
        while True:
            try:
                producer.produce(
                    topic,
                    b'{"i":%d,"p":"' % i + pad + b'"}',
                    key=b"k%d" % i,
                    partition=i % partitions,
                    timestamp=now + i,
                )
                break
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.05)
    if producer.flush(60) != 0:
        raise SystemExit("producing the benchmark records did not finish")
    return time.perf_counter() - started


def _stage_raw(bootstrap: str, topic: str, records: int, build: bool) -> dict:
    from confluent_kafka import Consumer, TopicPartition

    if build:  # imports Beam (~150 MB): only the stage that needs the tuple pays for it
        from retail_backbone.io.kafka import KafkaRecord

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "log_level": 0,
        }
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    seen = 0
    started = time.perf_counter()
    while seen < records:
        for msg in consumer.consume(1000, timeout=1.0):
            if msg.error() is None:
                seen += 1
                if build:
                    _, ts = msg.timestamp()
                    KafkaRecord(msg.key(), msg.value(), topic, msg.partition(), msg.offset(), ts)
    seconds = time.perf_counter() - started
    consumer.close()
    own, children = _peak_mb()
    return {"records": seen, "seconds": seconds, "peak_rss_mb": own, "children_rss_mb": children}


def _stage_beam(bootstrap: str, topic: str, records: int) -> dict:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from retail_backbone.io.kafka import snapshot_offset_ranges
    from retail_backbone.io.kafka_source import ReadFromKafkaEvents, StartPosition, StopPosition

    ends = {r.partition: r.stop for r in snapshot_offset_ranges(bootstrap, topic)}
    options = PipelineOptions(
        ["--runner=PrismRunner", f"--prism_location={PRISM}", "--environment_type=LOOPBACK"]
    )

    def run(stop: dict[int, int], out: Path) -> float:
        p = beam.Pipeline(options=options)
        _ = (
            p
            | ReadFromKafkaEvents(
                bootstrap, topic, start=StartPosition.earliest(), stop=StopPosition.at_offsets(stop)
            )
            | beam.combiners.Count.Globally()
            | beam.Map(lambda n, path=str(out): Path(path).write_text(str(n)))
        )
        started = time.perf_counter()
        p.run().wait_until_finish()
        return time.perf_counter() - started

    tmp = Path(f"/tmp/kafka-read-bench-{uuid.uuid4().hex[:6]}")
    tmp.mkdir()
    try:
        empty_s = run(dict.fromkeys(ends, 0), tmp / "empty")
        full_s = run(ends, tmp / "full")
        counted = int((tmp / "full").read_text())
    finally:
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    if counted != records:
        raise SystemExit(f"Beam counted {counted} records, {records} were produced")
    own, children = _peak_mb()
    return {
        "records": counted,
        "seconds": full_s,
        "empty_seconds": empty_s,
        "peak_rss_mb": own,
        "children_rss_mb": children,
    }


def _in_child(stage: str, args: argparse.Namespace, topic: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--_stage",
        stage,
        "--_topic",
        topic,
        "--records",
        str(args.records),
        "--bootstrap",
        args.bootstrap,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"the {stage} stage failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--value-bytes", type=int, default=64)
    parser.add_argument("--bootstrap", default=None, help="default: the stack's broker")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("--_stage", help=argparse.SUPPRESS)
    parser.add_argument("--_topic", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bootstrap is None:
        from retail_backbone.stack.config import StackConfig

        cfg = StackConfig.load()
        args.bootstrap = f"{cfg.host}:{cfg.port('kafka')}"

    if args._stage:
        if args._stage == "beam":
            result = _stage_beam(args.bootstrap, args._topic, args.records)
        else:
            result = _stage_raw(args.bootstrap, args._topic, args.records, args._stage == "record")
        print(json.dumps(result))
        return

    from confluent_kafka.admin import AdminClient

    topic = f"bench.kafka-read.{uuid.uuid4().hex[:8]}"
    produce_s = _produce(args.bootstrap, topic, args.records, args.partitions, args.value_bytes)
    print(
        f"produced {args.records:,} records of ~{args.value_bytes} B to {topic} "
        f"({args.partitions} partitions) in {produce_s:.1f} s"
    )
    try:
        raw = _in_child("raw", args, topic)
        record = _in_child("record", args, topic)
        beam = _in_child("beam", args, topic)
    finally:
        admin = AdminClient({"bootstrap.servers": args.bootstrap})
        admin.delete_topics([topic])[topic].result(10)

    net_s = beam["seconds"] - beam["empty_seconds"]
    rows = [
        ("raw consume", raw["records"], raw["seconds"], raw["peak_rss_mb"], None),
        ("raw + KafkaRecord", record["records"], record["seconds"], record["peak_rss_mb"], None),
        ("beam empty read", 0, beam["empty_seconds"], None, None),
        (
            "beam read",
            beam["records"],
            beam["seconds"],
            beam["peak_rss_mb"],
            beam["children_rss_mb"],
        ),
        ("beam read (net)", beam["records"], net_s, None, None),
    ]
    print(f"\n{'stage':<20}{'records':>10}{'seconds':>10}{'events/s':>12}  {'peak RSS MB':<20}")
    for name, n, seconds, rss, child_rss in rows:
        rate = f"{n / seconds:,.0f}" if n and seconds > 0 else "-"
        memory = "-" if rss is None else f"{rss:.0f}"
        if child_rss is not None:
            memory += f" (+{child_rss:.0f} prism)"
        print(f"{name:<20}{n:>10,}{seconds:>10.2f}{rate:>12}  {memory:<20}")
    share = (beam["records"] / net_s) / (raw["records"] / raw["seconds"])
    print(f"\nbeam read (net) runs at {share:.1%} of the raw consume rate")
    if args.json:
        print(json.dumps({"raw": raw, "record": record, "beam": beam, "produce_s": produce_s}))


if __name__ == "__main__":
    main()
