import json
import uuid

import psycopg

from retail_backbone.stack.components.postgres import dsn


def test_wal2json_slot_yields_the_change(stack):
    cfg = stack.require("postgres")
    slot = f"it_slot_{uuid.uuid4().hex[:8]}"
    table = f"it_products_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn(cfg), autocommit=True) as conn:
        assert conn.execute("show wal_level").fetchone()[0] == "logical"
        conn.execute(f"create table {table} (sku text primary key, qty int)")
        conn.execute("select pg_create_logical_replication_slot(%s, 'wal2json')", (slot,))
        try:
            conn.execute(f"insert into {table} values ('SKU-1', 7)")
            conn.execute(f"update {table} set qty = 9 where sku = 'SKU-1'")
            rows = conn.execute(
                "select data from pg_logical_slot_get_changes(%s, NULL, NULL, "
                "'format-version', '2')",
                (slot,),
            ).fetchall()
        finally:
            conn.execute("select pg_drop_replication_slot(%s)", (slot,))
            conn.execute(f"drop table {table}")
    changes = [json.loads(r[0]) for r in rows]
    dml = [c for c in changes if c["action"] in ("I", "U")]
    assert [c["action"] for c in dml] == ["I", "U"]
    assert dml[0]["table"] == table
    assert {c["name"]: c["value"] for c in dml[0]["columns"]} == {"sku": "SKU-1", "qty": 7}
    assert {c["name"]: c["value"] for c in dml[1]["columns"]} == {"sku": "SKU-1", "qty": 9}
