import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from retail_backbone.stack.components.kafka import RETENTION_BYTES_PER_PARTITION


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


def test_broker_retains_by_size_only_so_past_event_times_survive(stack):
    # Topics created without a retention setting (tests, auto-created ones) hold records with
    # past event times; time retention (by record timestamp) would delete them within minutes.
    cfg = stack.require("kafka")
    admin = AdminClient({"bootstrap.servers": f"{cfg.host}:{cfg.port('kafka')}"})
    broker = ConfigResource(ConfigResource.Type.BROKER, "1")
    config = admin.describe_configs([broker])[broker].result(10)
    assert config["log.retention.ms"].value == "-1"
    assert int(config["log.retention.bytes"].value) == RETENTION_BYTES_PER_PARTITION > 0
