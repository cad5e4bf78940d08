"""ReadEventFiles and DecodeEvents(json) on generated data: same events from every format."""

import datetime as dt
import json
from pathlib import Path

import apache_beam as beam
import pytest

from retail_backbone import generator as gen
from retail_backbone.io.dead_letters import Origin
from retail_backbone.io.events import DecodeEvents, RawRecord
from retail_backbone.io.files import ReadEventFiles, list_event_files
from retail_backbone.testing import collect

CFG = gen.GeneratorConfig(
    seed=3,
    start=dt.date(2025, 11, 24),
    days=2,
    events_per_day=1500,
    n_products=80,
    n_customers=300,
    n_locations=4,
)


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("events")
    dirs = {}
    for fmt in ("avro", "parquet", "jsonl"):
        dirs[fmt] = root / fmt
        gen.write_files(gen.generate_events(CFG), str(dirs[fmt]), fmt)
    return dirs


def _read(root: Path, **kwargs) -> tuple[list, list]:
    def build(p):
        result = p | ReadEventFiles(str(root), "test", **kwargs)
        return {"events": result.events, "dead": result.dead_letters}

    out = collect(build)
    return out.get("events", []), out.get("dead", [])


def _comparable(events):
    return sorted((e._replace(origin=None) for e in events), key=lambda e: e.event_id)


def test_every_format_gives_the_same_events(data_dirs):
    expected = sum(1 for _ in gen.generate_events(CFG))
    read = {fmt: _read(root) for fmt, root in data_dirs.items()}
    for fmt, (events, dead) in read.items():
        assert dead == [], fmt
        assert len(events) == expected, fmt
    avro = _comparable(read["avro"][0])
    assert _comparable(read["parquet"][0]) == avro
    assert _comparable(read["jsonl"][0]) == avro
    origins = {e.origin.kind for e in read["jsonl"][0]}
    assert origins == {"FILE"}


def test_time_range_prunes_partitions_and_filters_exactly(data_dirs):
    day2 = CFG.start + dt.timedelta(days=1)
    files = list_event_files(str(data_dirs["avro"]), start=day2)
    assert files and all(f"dt={day2.isoformat()}" in f for f in files)
    start_ms = int(dt.datetime(2025, 11, 25, 12, tzinfo=dt.UTC).timestamp() * 1000)
    events, _ = _read(data_dirs["jsonl"], start="2025-11-25")
    later = [e for e in events if e.event_time_ms >= start_ms]
    noon, _ = _read(data_dirs["avro"], start="2025-11-25", end="2025-11-26")
    assert len(noon) == len(events) > len(later) > 0
    only_orders, _ = _read(data_dirs["parquet"], event_types=["order_placed"])
    assert only_orders and {e.event_type for e in only_orders} == {"order_placed"}


def test_missing_root_fails_at_launch(tmp_path):
    with pytest.raises(FileNotFoundError, match="no event files"):
        ReadEventFiles(str(tmp_path / "nope"), "test")


def test_bad_lines_and_files_become_dead_letters_with_coordinates(data_dirs, tmp_path):
    root = tmp_path / "mixed"
    part = root / "order_placed" / "dt=2025-11-24"
    part.mkdir(parents=True)
    good = next(data_dirs["jsonl"].glob("order_placed/dt=2025-11-24/*.jsonl")).read_text()
    first = good.splitlines()[0]
    (part / "part-00000.jsonl").write_text(first + "\n{not json\n" + '{"envelope": {}}\n')
    (part / "part-00001.avro").write_bytes(b"definitely not avro")
    events, dead = _read(root)
    assert len(events) == 1
    reasons = sorted((d.error_class, d.origin.line) for d in dead)
    assert reasons == [("InvalidJson", 2), ("MissingField", 3), ("UnreadableFile", 0)]
    assert all(d.pipeline == "test" and d.stage == "ReadEventFiles" for d in dead)


def _decode(payloads: list[bytes]) -> tuple[list, list]:
    def build(p):
        records = p | beam.Create(
            [
                RawRecord(v, Origin.kafka("retail.order_placed", 0, i))
                for i, v in enumerate(payloads)
            ]
        )
        result = records | DecodeEvents("test", fmt="json")
        return {"events": result.events, "dead": result.dead_letters}

    out = collect(build)
    return out.get("events", []), out.get("dead", [])


def test_json_decoding_failures_name_their_reason(data_dirs):
    line = next(data_dirs["jsonl"].glob("order_placed/dt=2025-11-24/*.jsonl")).read_text()
    doc = json.loads(line.splitlines()[0])

    def variant(**envelope_changes):
        d = json.loads(json.dumps(doc))
        d["envelope"].update(envelope_changes)
        return json.dumps(d).encode()

    missing_total = json.loads(json.dumps(doc))
    del missing_total["total"]
    wrong_type = json.loads(json.dumps(doc))
    wrong_type["lines"][0]["quantity"] = "three"
    payloads = [
        json.dumps(doc).encode(),
        b"\xff\xfe not json",
        json.dumps(missing_total).encode(),
        json.dumps(wrong_type).encode(),
        variant(event_time=915_148_800_000),  # 1999
        variant(event_time=int(dt.datetime.now(dt.UTC).timestamp() * 1000) + 3 * 86_400_000),
        variant(event_type="teleported"),
        b"{" + b" " * (1 << 20) + b"}",
    ]
    events, dead = _decode(payloads)
    assert len(events) == 1 and events[0].event_type == "order_placed"
    by_offset = {d.origin.offset: d for d in dead}
    assert {o: d.error_class for o, d in by_offset.items()} == {
        1: "InvalidJson",
        2: "MissingField",
        3: "SchemaMismatch",
        4: "event_time_out_of_range",
        5: "event_time_out_of_range",
        6: "UnknownEventType",
        7: "PayloadTooLarge",
    }
    assert "/total" in by_offset[2].message
    assert "/lines[0]/quantity" in by_offset[3].message
    assert by_offset[3].payload == payloads[3]  # original bytes kept
    assert by_offset[3].origin == Origin.kafka("retail.order_placed", 0, 3)
