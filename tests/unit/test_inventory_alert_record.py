"""Alerts published to inventory.alerts match their registered contract."""

import json

import fastavro

from retail_backbone.io.sinks.rows import StockAlertRow
from retail_backbone.pipelines import inventory
from retail_backbone.schemas.catalog import SCHEMAS_DIR, load_catalog


def test_alert_records_validate_against_the_inventory_alert_schema():
    schema = fastavro.parse_schema(
        json.loads((SCHEMAS_DIR / "inventory_alert" / "v1.avsc").read_text())
    )
    row = StockAlertRow("a-1", "SKU-1", "STORE-2", "LOW_STOCK", 3, 4.5, 1_764_000_000_000)
    record = inventory.to_alert_record(row)
    assert fastavro.validate(record, schema)
    assert record["event_time"] == row.version and record["kind"] == "LOW_STOCK"


def test_the_alert_subject_is_the_topics_and_not_an_event_type():
    subject = next(s for s in load_catalog() if s.folder == "inventory_alert")
    assert (subject.topic, subject.name) == ("inventory.alerts", "inventory.alerts-value")
    assert not subject.is_event


def test_alerts_go_to_kafka_by_default_only_when_streaming():
    batch = inventory.InventoryOptions(["--mode=batch"])
    streaming = inventory.InventoryOptions(["--mode=streaming"])
    assert "kafka" not in inventory.enabled_sinks(batch)
    assert inventory.enabled_sinks(streaming) == ("postgres", "bigtable", "kafka")
    suffixed = inventory.InventoryOptions(["--table_suffix=_blue"])
    assert inventory.alerts_topic(suffixed) == "inventory.alerts_blue"
