import uuid

from google.cloud import bigtable
from google.cloud.bigtable import column_family

from retail_backbone.stack.components.bigtable import INSTANCE, PROJECT


def test_create_table_write_and_read_row(stack, monkeypatch):
    cfg = stack.require("bigtable")
    monkeypatch.setenv("BIGTABLE_EMULATOR_HOST", f"{cfg.host}:{cfg.port('bigtable')}")
    client = bigtable.Client(project=PROJECT, admin=True)
    table = client.instance(INSTANCE).table(f"it_stock_{uuid.uuid4().hex[:8]}")
    table.create(column_families={"s": column_family.MaxVersionsGCRule(1)})
    try:
        row = table.direct_row(b"SKU-1#STORE-7")
        row.set_cell("s", b"on_hand", b"42", timestamp=None)
        row.commit()
        got = table.read_row(b"SKU-1#STORE-7")
        assert got.cells["s"][b"on_hand"][0].value == b"42"
        assert table.read_row(b"SKU-2#STORE-7") is None
    finally:
        table.delete()
