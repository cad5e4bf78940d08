"""The schema registry service, through Confluent's own client and serdes, against real Kafka.

Status and error codes are also checked with plain HTTP requests. Subject names are random,
so the suite can run again and again against the same (persistent) ``_schemas`` topic.
"""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import requests
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from retail_backbone.schemas import serde
from retail_backbone.schemas.catalog import SCHEMAS_DIR
from retail_backbone.stack import Stack

ORDER_V1 = (SCHEMAS_DIR / "order_placed" / "v1.avsc").read_text()
ORDER_V2 = (SCHEMAS_DIR / "order_placed" / "v2.avsc").read_text()


def broken_v3() -> str:
    """order_placed v2 plus a required field without default, and quantity turned into a string."""
    schema = json.loads(ORDER_V2)
    schema["fields"].append({"name": "loyalty_tier", "type": "string"})
    line = next(f for f in schema["fields"] if f["name"] == "lines")["type"]["items"]
    next(f for f in line["fields"] if f["name"] == "quantity")["type"] = "string"
    return json.dumps(schema)


ORDER_V3_BROKEN = broken_v3()
V1_JSON = "application/vnd.schemaregistry.v1+json"


def record(name: str, *fields: tuple[str, object, object]) -> str:
    return json.dumps(
        {
            "type": "record",
            "name": name,
            "fields": [
                {"name": n, "type": t} if d is None else {"name": n, "type": t, "default": d}
                for n, t, d in fields
            ],
        }
    )


# Every subject of this run shares a prefix: the restart test compares all of them.
RUN_PREFIX = f"it.registry.{uuid.uuid4().hex[:8]}."


def new_subject(name: str) -> str:
    return f"{RUN_PREFIX}{uuid.uuid4().hex[:8]}.{name}-value"


@pytest.fixture(scope="module")
def url(stack) -> str:
    cfg = stack.require("registry")
    return f"http://{cfg.host}:{cfg.port('registry')}"


@pytest.fixture
def client(url) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": url})


def http(method: str, url: str, body: dict | None = None, **params) -> requests.Response:
    headers = {"Content-Type": V1_JSON} if body is not None else {}
    return requests.request(
        method,
        url,
        data=None if body is None else json.dumps(body),
        params=params,
        headers=headers,
        timeout=10,
    )


def error_of(response: requests.Response) -> tuple[int, int]:
    return response.status_code, response.json()["error_code"]


def same_schema(a: str, b: str) -> bool:
    return json.loads(a) == json.loads(b)


# -- registering, reading --------------------------------------------------------------------------


def test_register_is_idempotent_and_ids_are_global(url, client):
    first, second = new_subject("first"), new_subject("second")
    schema_id = client.register_schema(first, Schema(ORDER_V1, "AVRO"))

    uncached = SchemaRegistryClient({"url": url})
    assert uncached.register_schema(first, Schema(ORDER_V1, "AVRO")) == schema_id
    again = http("POST", f"{url}/subjects/{first}/versions", {"schema": ORDER_V1})
    assert again.status_code == 200 and again.json() == {"id": schema_id, "version": 1}
    assert again.headers["content-type"].startswith(V1_JSON)
    reformatted = json.dumps(json.loads(ORDER_V1), indent=4, sort_keys=True)
    assert uncached.register_schema(first, Schema(reformatted, "AVRO")) == schema_id
    assert client.get_versions(first) == [1]

    # The same schema under another subject gets the same global id, as version 1 there.
    assert client.register_schema(second, Schema(ORDER_V1, "AVRO")) == schema_id
    assert client.get_versions(second) == [1]
    users = client.get_schema_versions(schema_id)
    assert {(u.subject, u.version) for u in users} >= {(first, 1), (second, 1)}
    assert {first, second} <= set(http("GET", f"{url}/schemas/ids/{schema_id}/subjects").json())


def test_lookup_list_get_by_id_and_latest(url, client):
    subject = new_subject("orders")
    client.set_compatibility(subject, "FULL_TRANSITIVE")
    id1 = client.register_schema(subject, Schema(ORDER_V1, "AVRO"))
    id2 = client.register_schema(subject, Schema(ORDER_V2, "AVRO"))
    assert id2 != id1

    found = client.lookup_schema(subject, Schema(ORDER_V1, "AVRO"))
    assert (found.schema_id, found.version, found.subject) == (id1, 1, subject)
    raw = http("POST", f"{url}/subjects/{subject}", {"schema": ORDER_V2}).json()
    assert (raw["id"], raw["version"], raw["subject"]) == (id2, 2, subject)
    assert same_schema(raw["schema"], ORDER_V2)

    assert subject in client.get_subjects()
    assert client.get_versions(subject) == [1, 2]
    v1 = client.get_version(subject, 1)
    assert (v1.schema_id, v1.version) == (id1, 1) and same_schema(v1.schema.schema_str, ORDER_V1)
    latest = client.get_latest_version(subject)
    assert (latest.schema_id, latest.version) == (id2, 2)
    assert same_schema(client.get_schema(id2).schema_str, ORDER_V2)

    raw_schema = http("GET", f"{url}/subjects/{subject}/versions/1/schema")
    assert raw_schema.status_code == 200 and json.loads(raw_schema.text) == json.loads(ORDER_V1)
    assert http("GET", f"{url}/subjects/{subject}/versions/-1").json()["version"] == 2
    assert http("GET", f"{url}/schemas/ids/{id1}").json().keys() == {"schema"}
    assert http("GET", f"{url}/schemas/types").json() == ["AVRO"]
    assert client.get_schema_types() == ["AVRO"]


def test_config_global_and_per_subject(url, client):
    original = client.get_compatibility()
    subject, other = new_subject("config"), new_subject("no-config")
    try:
        client.set_compatibility(level="FULL")
        assert client.get_compatibility() == "FULL"
        assert http("GET", f"{url}/config").json() == {"compatibilityLevel": "FULL"}
        put = http("PUT", f"{url}/config", {"compatibility": "full_transitive"})
        assert put.status_code == 200 and put.json() == {"compatibility": "FULL_TRANSITIVE"}

        # A subject without a level of its own: 40408, unless it asks for the global one.
        assert error_of(http("GET", f"{url}/config/{other}")) == (404, 40408)
        fallback = http("GET", f"{url}/config/{other}", defaultToGlobal="true")
        assert fallback.json() == {"compatibilityLevel": "FULL_TRANSITIVE"}

        client.set_compatibility(subject, "BACKWARD_TRANSITIVE")
        assert client.get_compatibility(subject) == "BACKWARD_TRANSITIVE"
        assert client.get_compatibility() == "FULL_TRANSITIVE"  # the global level is untouched
        removed = http("DELETE", f"{url}/config/{subject}")
        assert removed.json() == {"compatibilityLevel": "BACKWARD_TRANSITIVE"}
        assert error_of(http("GET", f"{url}/config/{subject}")) == (404, 40408)
        assert error_of(http("DELETE", f"{url}/config/{subject}")) == (404, 40401)

        assert error_of(http("PUT", f"{url}/config", {"compatibility": "SIDEWAYS"})) == (
            422,
            42203,
        )
        assert error_of(http("PUT", f"{url}/config/{subject}", {})) == (422, 42203)
        with pytest.raises(SchemaRegistryError) as caught:
            client.set_compatibility(subject, "sideways")
        assert caught.value.error_code == 42203
    finally:
        client.set_compatibility(level=original)
    assert client.get_compatibility() == original


def test_compatibility_endpoint(url, client):
    subject = new_subject("compat")
    client.set_compatibility(subject, "FULL_TRANSITIVE")
    client.register_schema(subject, Schema(ORDER_V1, "AVRO"))

    assert client.test_compatibility(subject, Schema(ORDER_V2, "AVRO")) is True
    assert client.test_compatibility(subject, Schema(ORDER_V3_BROKEN, "AVRO")) is False
    assert client.test_compatibility_all_versions(subject, Schema(ORDER_V2, "AVRO")) is True
    verbose = http(
        "POST",
        f"{url}/compatibility/subjects/{subject}/versions/1",
        {"schema": ORDER_V3_BROKEN},
        verbose="true",
    ).json()
    assert verbose["is_compatible"] is False
    assert any("loyalty_tier" in m for m in verbose["messages"])
    assert any("quantity" in m for m in verbose["messages"])
    quiet = http(
        "POST", f"{url}/compatibility/subjects/{subject}/versions/latest", {"schema": ORDER_V2}
    )
    assert quiet.json() == {"is_compatible": True}

    missing_version = f"{url}/compatibility/subjects/{subject}/versions/7"
    assert error_of(http("POST", missing_version, {"schema": ORDER_V2})) == (404, 40402)
    nobody = f"{url}/compatibility/subjects/{new_subject('nobody')}/versions/latest"
    assert http("POST", nobody, {"schema": ORDER_V2}).json() == {"is_compatible": True}
    invalid = f"{url}/compatibility/subjects/{subject}/versions/latest"
    assert error_of(http("POST", invalid, {"schema": "{"})) == (422, 42201)
    inline = http("POST", invalid, {"schema": "{"}, verbose="true").json()
    assert inline["is_compatible"] is False and "not JSON" in inline["messages"][0]


def test_transitive_levels_check_every_version(url, client):
    # v3 reads v2's data but not v1's (field b has no default and v1 lacks it).
    v1 = record("T", ("a", "string", None))
    v2 = record("T", ("a", "string", None), ("b", "int", 1))
    v3 = record("T", ("b", "int", None))
    subject = new_subject("transitive")
    client.set_compatibility(subject, "BACKWARD_TRANSITIVE")
    client.register_schema(subject, Schema(v1, "AVRO"))
    client.register_schema(subject, Schema(v2, "AVRO"))

    assert client.test_compatibility(subject, Schema(v3, "AVRO"), version="latest") is True
    assert client.test_compatibility_all_versions(subject, Schema(v3, "AVRO")) is False
    with pytest.raises(SchemaRegistryError) as caught:
        client.register_schema(subject, Schema(v3, "AVRO"))
    assert (caught.value.http_status_code, caught.value.error_code) == (409, 409)
    assert "version 1" in caught.value.error_message

    client.set_compatibility(subject, "BACKWARD")  # only the latest version counts now
    assert client.test_compatibility_all_versions(subject, Schema(v3, "AVRO")) is True
    assert client.register_schema(subject, Schema(v3, "AVRO")) > 0
    assert client.get_versions(subject) == [1, 2, 3]


def test_incompatible_schema_is_refused_with_409_and_never_stored(url, client):
    subject = new_subject("orders")
    client.set_compatibility(subject, "FULL_TRANSITIVE")
    client.register_schema(subject, Schema(ORDER_V1, "AVRO"))
    client.register_schema(subject, Schema(ORDER_V2, "AVRO"))  # compatible: it adds defaults

    with pytest.raises(SchemaRegistryError) as caught:
        client.register_schema(subject, Schema(ORDER_V3_BROKEN, "AVRO"))
    error = caught.value
    assert (error.http_status_code, error.error_code) == (409, 409)
    assert "incompatible" in error.error_message and "loyalty_tier" in error.error_message
    raw = http("POST", f"{url}/subjects/{subject}/versions", {"schema": ORDER_V3_BROKEN})
    assert error_of(raw) == (409, 409)
    assert client.get_versions(subject) == [1, 2]
    lookup = http("POST", f"{url}/subjects/{subject}", {"schema": ORDER_V3_BROKEN})
    assert error_of(lookup) == (404, 40403)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"schema": "not json"}, "not JSON"),
        ({"schema": ""}, "Empty schema"),
        ({"schema": record("X", ("n", "int", "ten"))}, "/n"),
        ({"schema": record("X", ("price", "Money", None))}, "Money"),
        ({"schema": json.dumps({"type": "record", "name": "X"})}, "fields"),
        ({"schema": record("X", ("a", "int", None)), "schemaType": "JSON"}, "AVRO"),
        ({"schema": "syntax = 'proto3';", "schemaType": "PROTOBUF"}, "AVRO"),
        (
            {
                "schema": record("X", ("a", "int", None)),
                "references": [{"name": "Y", "subject": "y-value", "version": 1}],
            },
            "references",
        ),
    ],
    ids=[
        "not-json",
        "empty",
        "bad-default",
        "unknown-type",
        "no-fields",
        "json",
        "protobuf",
        "refs",
    ],
)
def test_invalid_schemas_are_refused_with_42201(url, body, words):
    subject = new_subject("invalid")
    response = http("POST", f"{url}/subjects/{subject}/versions", body)
    assert error_of(response) == (422, 42201)
    assert words in response.json()["message"]
    assert error_of(http("GET", f"{url}/subjects/{subject}/versions")) == (404, 40401)


def test_invalid_schema_through_the_confluent_client(client):
    with pytest.raises(SchemaRegistryError) as caught:
        client.register_schema(new_subject("invalid"), Schema('{"type": "recrod"}', "AVRO"))
    assert (caught.value.http_status_code, caught.value.error_code) == (422, 42201)


def test_not_found_and_invalid_version_codes(url, client):
    subject = new_subject("codes")
    schema_id = client.register_schema(subject, Schema(ORDER_V1, "AVRO"))
    nobody = new_subject("nobody")

    assert error_of(http("GET", f"{url}/subjects/{nobody}/versions")) == (404, 40401)
    assert error_of(http("GET", f"{url}/subjects/{nobody}/versions/1")) == (404, 40401)
    assert error_of(http("POST", f"{url}/subjects/{nobody}", {"schema": ORDER_V1})) == (404, 40401)
    assert error_of(http("GET", f"{url}/subjects/{subject}/versions/99")) == (404, 40402)
    assert error_of(http("POST", f"{url}/subjects/{subject}", {"schema": ORDER_V2})) == (404, 40403)
    assert error_of(http("GET", f"{url}/schemas/ids/{2**31 - 1}")) == (404, 40403)
    assert error_of(http("GET", f"{url}/subjects/{subject}/versions/abc")) == (422, 42202)
    assert error_of(http("GET", f"{url}/subjects/{subject}/versions/0")) == (422, 42202)
    assert error_of(http("GET", f"{url}/no/such/path")) == (404, 404)
    wrong_type = requests.post(
        f"{url}/subjects/{subject}/versions",
        data=json.dumps({"schema": ORDER_V1}),
        headers={"Content-Type": "text/plain"},
        timeout=10,
    )
    assert error_of(wrong_type) == (415, 415)
    plain = requests.post(
        f"{url}/subjects/{subject}",
        data=json.dumps({"schema": ORDER_V1}),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        timeout=10,
    )
    assert plain.json()["id"] == schema_id
    assert plain.headers["content-type"].startswith("application/json")

    for call, code in [
        (lambda: client.get_version(nobody, 1), 40401),
        (lambda: client.get_version(subject, 99), 40402),
        (lambda: client.get_schema(2**31 - 1), 40403),
    ]:
        with pytest.raises(SchemaRegistryError) as caught:
            call()
        assert (caught.value.http_status_code, caught.value.error_code) == (404, code)


def test_soft_and_permanent_delete(url, client):
    subject = new_subject("deletes")
    client.set_compatibility(subject, "FULL_TRANSITIVE")
    id1 = client.register_schema(subject, Schema(ORDER_V1, "AVRO"))
    id2 = client.register_schema(subject, Schema(ORDER_V2, "AVRO"))

    # One version: soft, then permanent (which needs the soft delete first).
    assert error_of(http("DELETE", f"{url}/subjects/{subject}/versions/2", permanent="true")) == (
        404,
        40407,
    )
    assert client.delete_version(subject, 2) == 2
    assert client.get_versions(subject) == [1]
    assert http("GET", f"{url}/subjects/{subject}/versions", deleted="true").json() == [1, 2]
    assert error_of(http("GET", f"{url}/subjects/{subject}/versions/2")) == (404, 40402)
    assert http("GET", f"{url}/subjects/{subject}/versions/2", deleted="true").json()["id"] == id2
    assert error_of(http("DELETE", f"{url}/subjects/{subject}/versions/2")) == (404, 40406)
    assert client.get_latest_version(subject).version == 1
    assert same_schema(client.get_schema(id2).schema_str, ORDER_V2)  # old data still decodes
    assert client.delete_version(subject, 2, permanent=True) == 2
    assert http("GET", f"{url}/subjects/{subject}/versions", deleted="true").json() == [1]

    # The subject: soft, then permanent.
    assert error_of(http("DELETE", f"{url}/subjects/{subject}", permanent="true")) == (404, 40405)
    assert client.delete_subject(subject) == [1]
    assert subject not in client.get_subjects()
    assert subject in http("GET", f"{url}/subjects", deleted="true").json()
    assert subject in http("GET", f"{url}/subjects", deletedOnly="true").json()
    assert error_of(http("GET", f"{url}/subjects/{subject}/versions")) == (404, 40401)
    assert error_of(http("DELETE", f"{url}/subjects/{subject}")) == (404, 40404)
    assert same_schema(client.get_schema(id1).schema_str, ORDER_V1)
    assert client.get_compatibility(subject) == "FULL_TRANSITIVE"  # kept until permanent

    assert client.delete_subject(subject, permanent=True) == [1]
    assert subject not in http("GET", f"{url}/subjects", deleted="true").json()
    assert error_of(http("GET", f"{url}/subjects/{subject}/versions", deleted="true")) == (
        404,
        40401,
    )
    assert error_of(http("GET", f"{url}/config/{subject}")) == (404, 40408)
    assert error_of(http("DELETE", f"{url}/subjects/{subject}")) == (404, 40401)

    # Registered again, the content keeps its global id; versions start over at 1.
    again = http("POST", f"{url}/subjects/{subject}/versions", {"schema": ORDER_V1}).json()
    assert again == {"id": id1, "version": 1}


def test_reregistering_a_soft_deleted_schema_gets_a_new_version(url, client):
    subject = new_subject("reregister")
    client.set_compatibility(subject, "NONE")
    first = client.register_schema(subject, Schema(ORDER_V1, "AVRO"))
    client.register_schema(subject, Schema(record("Other", ("x", "int", None)), "AVRO"))
    client.delete_version(subject, 1)
    assert error_of(http("POST", f"{url}/subjects/{subject}", {"schema": ORDER_V1})) == (
        404,
        40403,
    )
    assert (
        http("POST", f"{url}/subjects/{subject}", {"schema": ORDER_V1}, deleted="true").json()[
            "version"
        ]
        == 1
    )
    again = http("POST", f"{url}/subjects/{subject}/versions", {"schema": ORDER_V1}).json()
    assert again == {"id": first, "version": 3}
    assert client.get_versions(subject) == [2, 3]


def test_concurrent_registrations_agree(url):
    text = record("Race", ("a", "string", None))
    subjects = [new_subject("race-a"), new_subject("race-b")]

    def register(index: int) -> dict:
        subject = subjects[index % 2]
        return http("POST", f"{url}/subjects/{subject}/versions", {"schema": text}).json()

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(register, range(24)))
    assert {json.dumps(a, sort_keys=True) for a in answers} == {
        json.dumps({"id": answers[0]["id"], "version": 1}, sort_keys=True)
    }
    for subject in subjects:
        assert http("GET", f"{url}/subjects/{subject}/versions").json() == [1]


# -- data through Kafka ----------------------------------------------------------------------------


def order(order_id: str, **extra: object) -> dict:
    now = datetime.now(UTC)
    line = {
        "line_no": 1,
        "sku": "SKU-1",
        "quantity": 3,
        "unit_price": Decimal("4.50"),
        "discount": Decimal("0.50"),
        "fulfillment_location": "STORE-12",
    }
    return {
        "envelope": {
            "event_id": str(uuid.uuid4()),
            "event_type": "order_placed",
            "event_time": now,
            "ingest_time": now,
            "source": "POS",
            "trace_id": None,
            "partition_key": order_id,
            "schema_subject": "retail.order_placed-value",
            "schema_version": 1,
            "attributes": {},
        },
        "order_id": order_id,
        "customer_id": "cust-1",
        "session_id": None,
        "channel": "STORE",
        "store_id": "STORE-12",
        "lines": [line],
        "total": Decimal("13.00"),
        "shipping_address_hash": "h",
        **extra,
    }


@pytest.fixture
def kafka_topic(stack):
    """A fresh one-partition topic (so the order of messages is kept), deleted afterwards."""
    cfg = stack.require("kafka")
    bootstrap = f"{cfg.host}:{cfg.port('kafka')}"
    topic = f"it.registry.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(15)
    yield bootstrap, topic
    admin.delete_topics([topic])[topic].result(15)


def test_produce_and_consume_through_kafka_with_confluent_serdes(kafka_topic, url, client):
    bootstrap, topic = kafka_topic
    client.set_compatibility(f"{topic}-value", "FULL_TRANSITIVE")
    ctx = SerializationContext(topic, MessageField.VALUE)

    write_v1 = AvroSerializer(client, ORDER_V1)
    write_v2 = AvroSerializer(client, ORDER_V2)
    sent = [order("o-1"), order("o-2"), order("o-3", currency="EUR", coupon_code="C10")]
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    producer.produce(topic, write_v1(sent[0], ctx))
    producer.produce(topic, write_v1(sent[1], ctx))
    producer.produce(topic, write_v2(sent[2], ctx))
    assert producer.flush(15) == 0
    assert client.get_versions(f"{topic}-value") == [1, 2]  # auto-registered, level checked

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"it-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    payloads: list[bytes] = []
    try:
        for _ in range(30):
            for msg in consumer.consume(num_messages=10, timeout=1):
                assert msg.error() is None
                payloads.append(msg.value())
            if len(payloads) == len(sent):
                break
    finally:
        consumer.close()
    assert len(payloads) == len(sent)

    read_v2 = AvroDeserializer(client, ORDER_V2)
    got = [read_v2(p, ctx) for p in payloads]
    assert [g["order_id"] for g in got] == ["o-1", "o-2", "o-3"]
    assert [(g["currency"], g["coupon_code"]) for g in got] == [
        ("USD", None),
        ("USD", None),
        ("EUR", "C10"),
    ]
    assert got[0]["total"] == Decimal("13.00") and got[0]["lines"][0]["quantity"] == 3
    as_written = AvroDeserializer(client)
    assert "currency" not in as_written(payloads[0], ctx)

    # This project's serde reads the same bytes to the same records.
    with serde.RegistryClient(url) as ours:
        reader = serde.AvroDeserializer(ours, reader_schema=ORDER_V2)
        decoded = [reader.deserialize(p) for p in payloads]
    ids = [schema_id for _, schema_id in decoded]
    assert ids[0] == ids[1] != ids[2]
    assert ids[2] == client.get_latest_version(f"{topic}-value").schema_id
    assert [r for r, _ in decoded] == got


def test_project_serde_and_client_against_the_service(url, client):
    subject = new_subject("serde")
    client.set_compatibility(subject, "FULL_TRANSITIVE")
    with serde.RegistryClient(url) as ours:
        writer = serde.AvroSerializer(ours, subject, ORDER_V1)
        data = writer.serialize(order("o-9"))
        assert writer.schema_id == client.get_latest_version(subject).schema_id
        found = ours.lookup(subject, ORDER_V1)
        assert (found.schema_id, found.version) == (writer.schema_id, 1)
        assert ours.register(subject, ORDER_V2) == ours.latest(subject).schema_id
        with pytest.raises(serde.RegistryClientError) as caught:
            ours.lookup(subject, ORDER_V3_BROKEN)
        assert (caught.value.status, caught.value.error_code) == (404, 40403)

        reader = serde.AvroDeserializer(ours, reader_schema=ORDER_V2)
        assert reader.deserialize(data)[0]["currency"] == "USD"
        unknown = data[:1] + (2**31 - 1).to_bytes(4, "big") + data[5:]
        with pytest.raises(serde.UnknownSchemaId) as missing:
            reader.deserialize(unknown)
        assert missing.value.data == unknown and missing.value.schema_id == 2**31 - 1

    with serde.RegistryClient("http://127.0.0.1:9") as nowhere:  # nothing listens on port 9
        with pytest.raises(serde.RegistryClientError) as down:
            serde.AvroDeserializer(nowhere).deserialize(data)
        assert not isinstance(down.value, serde.DecodeError) and down.value.status == 0


# -- durability ------------------------------------------------------------------------------------


def snapshot(url: str) -> dict:
    """What the registry serves for this run's subjects: versions (deleted too), configs, ids.

    Plus every subject's name, so a change elsewhere would show too.
    """
    everything = http("GET", f"{url}/subjects", deleted="true").json()
    subjects = [s for s in everything if s.startswith(RUN_PREFIX)]
    state: dict = {
        "global": http("GET", f"{url}/config").json(),
        "all_subjects": everything,
        "subjects": {},
        "ids": {},
    }
    for subject in subjects:
        versions = http("GET", f"{url}/subjects/{subject}/versions", deleted="true").json()
        live = http("GET", f"{url}/subjects/{subject}/versions", deleted="false")
        config = http("GET", f"{url}/config/{subject}")
        state["subjects"][subject] = {
            "live": live.json() if live.status_code == 200 else [],
            "config": [config.status_code, config.json()],
            "versions": {
                v: http("GET", f"{url}/subjects/{subject}/versions/{v}", deleted="true").json()
                for v in versions
            },
        }
        for entry in state["subjects"][subject]["versions"].values():
            state["ids"][entry["id"]] = http("GET", f"{url}/schemas/ids/{entry['id']}").json()
    return state


def test_restart_keeps_state_and_ids(stack, url, client):
    cfg = stack.require("registry")
    subject, shared = new_subject("durable"), new_subject("durable-shared")
    client.set_compatibility(subject, "FULL_TRANSITIVE")
    id1 = client.register_schema(subject, Schema(ORDER_V1, "AVRO"))
    id2 = client.register_schema(subject, Schema(ORDER_V2, "AVRO"))
    client.delete_version(subject, 1)
    assert client.register_schema(shared, Schema(ORDER_V1, "AVRO")) == id1
    before = snapshot(url)

    assert Stack(cfg).down(["registry"]) == ["registry"]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/subjects", timeout=2)
    stack.require("registry")

    after = snapshot(url)
    assert after == before
    assert after["subjects"][subject]["live"] == [2]
    fresh = SchemaRegistryClient({"url": url})
    assert fresh.register_schema(subject, Schema(ORDER_V2, "AVRO")) == id2
    assert fresh.get_compatibility(subject) == "FULL_TRANSITIVE"
    # A new schema gets a new id: ids are never handed out twice, even across restarts.
    new_id = fresh.register_schema(
        new_subject("after-restart"),
        Schema(record(f"New{uuid.uuid4().hex}", ("n", "long", None)), "AVRO"),
    )
    assert new_id > max(after["ids"])
