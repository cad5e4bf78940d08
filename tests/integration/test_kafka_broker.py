import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic


def test_produce_and_consume_back_every_message(stack):
    cfg = stack.require("kafka")
    bootstrap = f"{cfg.host}:{cfg.port('kafka')}"
    topic = f"it.kafka.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(10)

    sent = {f"k{i}".encode(): f"v{i}".encode() for i in range(300)}
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    for key, value in sent.items():
        producer.produce(topic, value, key=key)
    assert producer.flush(15) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"it-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    got: dict[bytes, bytes] = {}
    partitions = set()
    try:
        for _ in range(60):
            for msg in consumer.consume(num_messages=500, timeout=1):
                assert msg.error() is None
                got[msg.key()] = msg.value()
                partitions.add(msg.partition())
            if len(got) == len(sent):
                break
    finally:
        consumer.close()
    assert got == sent
    assert partitions == {0, 1, 2}
