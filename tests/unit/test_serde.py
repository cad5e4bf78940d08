"""Confluent wire format: layout, round trips across schema versions, caching, and every error.

The registry here is an in-memory ``RegistryClient`` subclass (unit tests only); the
integration tests run the same code against the real registry service.
"""

from __future__ import annotations

import io
import json
import pickle
import threading
import uuid
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import fastavro
import pytest

from retail_backbone.schemas.catalog import SCHEMAS_DIR
from retail_backbone.schemas.serde import (
    AvroDeserializer,
    AvroSerializer,
    BadMagicByte,
    CorruptPayload,
    DecodeError,
    PayloadTooLarge,
    RegistryClient,
    RegistryClientError,
    SchemaCache,
    SchemaMismatch,
    SerializationError,
    TruncatedPayload,
    UnknownSchemaId,
)


def schema_text(folder: str, version: int) -> str:
    return (SCHEMAS_DIR / folder / f"v{version}.avsc").read_text()


class InMemoryRegistry(RegistryClient):
    """Global ids by schema content, like a real registry; counts the calls it gets."""

    def __init__(self) -> None:  # no HTTP connection at all
        self.url, self.timeout, self.headers = "memory://", 0.0, {}
        self.schemas: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}
        self.calls: Counter = Counter()
        self.fail_with: RegistryClientError | None = None
        self._guard = threading.Lock()

    def _id(self, schema: str) -> int:
        canonical = json.dumps(json.loads(schema), sort_keys=True)
        for schema_id, text in self.schemas.items():
            if json.dumps(json.loads(text), sort_keys=True) == canonical:
                return schema_id
        schema_id = len(self.schemas) + 1
        self.schemas[schema_id] = schema
        return schema_id

    def get_schema(self, schema_id: int) -> str:
        with self._guard:
            self.calls["get_schema"] += 1
        if self.fail_with is not None:
            raise self.fail_with
        if schema_id not in self.schemas:
            raise RegistryClientError(f"Schema {schema_id} not found", 404, 40403)
        return self.schemas[schema_id]

    def register(self, subject: str, schema: str) -> int:
        with self._guard:
            self.calls["register"] += 1
            schema_id = self._id(schema)
            if schema_id not in self.subjects.setdefault(subject, []):
                self.subjects[subject].append(schema_id)
            return schema_id

    def lookup(self, subject: str, schema: str):
        from retail_backbone.schemas.serde import RegisteredSchema

        self.calls["lookup"] += 1
        schema_id = self._id(schema)
        if schema_id not in self.subjects.get(subject, []):
            raise RegistryClientError("Schema not found", 404, 40403)
        version = self.subjects[subject].index(schema_id) + 1
        return RegisteredSchema(subject, schema_id, version, self.schemas[schema_id])

    def close(self) -> None:
        pass


def now_ms() -> datetime:
    # timestamp-millis keeps milliseconds: build values that survive the round trip exactly.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def envelope(event_type: str) -> dict:
    return {
        "event_id": uuid.uuid4(),
        "event_type": event_type,
        "event_time": now_ms(),
        "ingest_time": now_ms(),
        "source": "WEB",
        "trace_id": None,
        "partition_key": "cust-1",
        "schema_subject": f"retail.{event_type}-value",
        "schema_version": 1,
        "attributes": {"client": "ios-7.1"},
    }


def product_viewed_v1() -> dict:
    return {
        "envelope": envelope("product_viewed"),
        "customer_id": "cust-1",
        "session_id": "sess-9",
        "sku": "SKU-123",
        "channel": "MOBILE",
    }


def order_placed_v1() -> dict:
    line = {
        "line_no": 1,
        "sku": "SKU-123",
        "quantity": 2,
        "unit_price": Decimal("19.99"),
        "discount": Decimal("0.00"),
        "fulfillment_location": "DC-1",
    }
    return {
        "envelope": envelope("order_placed"),
        "order_id": "ord-1",
        "customer_id": "cust-1",
        "session_id": None,
        "channel": "WEB",
        "store_id": None,
        "lines": [line, {**line, "line_no": 2, "quantity": 1}],
        "total": Decimal("59.97"),
        "shipping_address_hash": "ab12",
    }


V2_DEFAULTS = {
    "product_viewed": ({"referrer": None, "dwell_ms": 0}, product_viewed_v1),
    "order_placed": ({"currency": "USD", "coupon_code": None}, order_placed_v1),
}


@pytest.fixture
def registry() -> InMemoryRegistry:
    return InMemoryRegistry()


def test_wire_format_is_magic_byte_id_then_fastavro_binary(registry):
    record = product_viewed_v1()
    text = schema_text("product_viewed", 1)
    registry.register("other-value", schema_text("order_placed", 1))  # make the id not 1
    data = AvroSerializer(registry, "retail.product_viewed-value", text).serialize(record)

    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(json.loads(text)), record)
    assert data[0] == 0
    assert int.from_bytes(data[1:5], "big") == 2
    assert data[5:] == body.getvalue()


@pytest.mark.parametrize("folder", sorted(V2_DEFAULTS))
def test_same_version_round_trip(registry, folder):
    _, make = V2_DEFAULTS[folder]
    record = make()
    text = schema_text(folder, 1)
    serializer = AvroSerializer(registry, f"retail.{folder}-value", text)
    got, schema_id = AvroDeserializer(registry).deserialize(serializer.serialize(record))
    assert schema_id == serializer.schema_id
    assert got == record


@pytest.mark.parametrize("folder", sorted(V2_DEFAULTS))
def test_v1_bytes_read_with_the_v2_reader_get_v2_defaults(registry, folder):
    defaults, make = V2_DEFAULTS[folder]
    record = make()
    v1_bytes = AvroSerializer(registry, f"retail.{folder}-value", schema_text(folder, 1))(record)

    reader = AvroDeserializer(registry, reader_schema=schema_text(folder, 2))
    got, schema_id = reader.deserialize(v1_bytes)
    assert got == {**record, **defaults}
    assert registry.schemas[schema_id] == schema_text(folder, 1)  # the writer's id is reported


V2_VALUES = {
    "product_viewed": {"referrer": "campaign-7", "dwell_ms": 5400},
    "order_placed": {"currency": "EUR", "coupon_code": "SPRING"},
}


@pytest.mark.parametrize("folder", sorted(V2_DEFAULTS))
def test_v2_bytes_read_with_the_v1_reader_drop_the_new_fields(registry, folder):
    record = V2_DEFAULTS[folder][1]()
    serializer = AvroSerializer(registry, f"retail.{folder}-value", schema_text(folder, 2))
    v2_bytes = serializer.serialize({**record, **V2_VALUES[folder]})
    got, _ = AvroDeserializer(registry, reader_schema=schema_text(folder, 1)).deserialize(v2_bytes)
    assert got == record


def test_one_registry_request_per_id_even_under_concurrent_first_use(registry):
    data = AvroSerializer(registry, "s-value", schema_text("product_viewed", 1))(
        product_viewed_v1()
    )
    deserializer = AvroDeserializer(registry, reader_schema=schema_text("product_viewed", 2))
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def work() -> None:
        start.wait()
        try:
            for _ in range(200):
                deserializer.deserialize(data)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert registry.calls["get_schema"] == 1


def test_serializer_registers_once_across_threads(registry):
    serializer = AvroSerializer(registry, "s-value", schema_text("product_viewed", 1))
    start = threading.Barrier(6)
    outputs: list[bytes] = []

    def work() -> None:
        start.wait()
        outputs.append(serializer.serialize(product_viewed_v1()))

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert registry.calls["register"] == 1
    assert {data[:5] for data in outputs} == {b"\x00" + serializer.schema_id.to_bytes(4, "big")}


def test_without_auto_register_the_schema_must_exist(registry):
    text = schema_text("product_viewed", 1)
    missing = AvroSerializer(registry, "s-value", text, auto_register=False)
    with pytest.raises(RegistryClientError) as caught:
        missing.serialize(product_viewed_v1())
    assert caught.value.status == 404
    registry.register("s-value", text)
    assert AvroSerializer(registry, "s-value", text, auto_register=False).schema_id == 1
    assert registry.calls["lookup"] == 2


def test_a_record_that_does_not_match_the_schema_is_a_serialization_error(registry):
    serializer = AvroSerializer(registry, "s-value", schema_text("product_viewed", 1))
    record = product_viewed_v1()
    del record["sku"]
    with pytest.raises(SerializationError, match="sku"):
        serializer.serialize(record)
    with pytest.raises(SerializationError):
        serializer.serialize({**product_viewed_v1(), "channel": "FAX"})
    with pytest.raises(SerializationError):
        AvroSerializer(registry, "s-value", schema_text("product_viewed", 1), strict=True)(
            {**product_viewed_v1(), "unexpected": 1}
        )


def test_serializers_and_deserializers_survive_pickling():
    client = RegistryClient("http://127.0.0.1:1")  # never contacted
    serializer = pickle.loads(
        pickle.dumps(AvroSerializer(client, "s-value", schema_text("product_viewed", 1)))
    )
    deserializer = pickle.loads(pickle.dumps(AvroDeserializer(client)))
    assert serializer.client.url == "http://127.0.0.1:1"
    assert isinstance(deserializer.cache, SchemaCache) and len(deserializer.cache) == 0


# -- errors ----------------------------------------------------------------------------------------


@pytest.fixture
def good(registry) -> bytes:
    return AvroSerializer(registry, "s-value", schema_text("product_viewed", 1))(
        product_viewed_v1()
    )


def corrupt_string(data: bytes) -> bytes:
    # The first field is envelope.event_id, a 36-character string: its first byte becomes 0xFF,
    # which is not UTF-8.
    assert data[5] == 72  # zigzag varint of the length 36
    return data[:6] + b"\xff" + data[7:]


CASES = {
    "empty": (lambda good: b"", TruncatedPayload, None),
    "json_not_wire_format": (lambda good: b'{"sku": "SKU-1"}', BadMagicByte, None),
    "magic_byte_1": (lambda good: b"\x01" + good[1:], BadMagicByte, None),
    "shorter_than_header": (lambda good: b"\x00\x00\x01", TruncatedPayload, None),
    "unknown_id": (lambda good: b"\x00\x00\x00\x03\xe7" + good[5:], UnknownSchemaId, 999),
    "body_ends_early": (lambda good: good[:-4], TruncatedPayload, 1),
    "header_only": (lambda good: good[:5], TruncatedPayload, 1),
    "invalid_utf8": (corrupt_string, CorruptPayload, 1),
    "trailing_bytes": (lambda good: good + b"\x00\x01", CorruptPayload, 1),
    "too_large": (lambda good: good + bytes(2000), PayloadTooLarge, None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_decode_error_keeps_the_raw_bytes(registry, good, case):
    make, kind, schema_id = CASES[case]
    data = make(good)
    deserializer = AvroDeserializer(registry, max_bytes=1024)
    with pytest.raises(kind) as caught:
        deserializer.deserialize(data)
    assert isinstance(caught.value, DecodeError)
    assert caught.value.data == data
    assert caught.value.schema_id == schema_id
    assert str(caught.value)


def test_payload_limit_is_configurable(registry, good):
    with pytest.raises(PayloadTooLarge):
        AvroDeserializer(registry, max_bytes=len(good) - 1).deserialize(good)
    assert AvroDeserializer(registry, max_bytes=len(good)).deserialize(good)[1] == 1


def test_a_writer_the_reader_cannot_read_is_a_schema_mismatch(registry, good):
    reader = json.loads(schema_text("product_viewed", 2))
    reader["fields"].append({"name": "required_later", "type": "string"})  # no default
    deserializer = AvroDeserializer(registry, reader_schema=json.dumps(reader))
    with pytest.raises(SchemaMismatch, match="required_later") as caught:
        deserializer.deserialize(good)
    assert caught.value.data == good and caught.value.schema_id == 1


def test_an_unreachable_registry_is_not_a_decode_error(registry, good):
    registry.fail_with = RegistryClientError("connection refused")
    with pytest.raises(RegistryClientError) as caught:
        AvroDeserializer(registry).deserialize(good)
    assert not isinstance(caught.value, DecodeError)
    registry.fail_with = None
    assert AvroDeserializer(registry).deserialize(good)[1] == 1  # nothing bad was cached
