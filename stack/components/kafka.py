"""Apache Kafka 4.x, one KRaft node (broker + controller), from Maven Central."""

from __future__ import annotations

import uuid

from retail_backbone.stack.components.base import Component, NotReady, Progress
from retail_backbone.stack.components.obtain import maven_artifacts
from retail_backbone.stack.config import KAFKA_VERSION, StackConfig
from retail_backbone.stack.process import ProcessSpec

_HEALTH_TOPIC = "_backbone_health"
RETENTION_BYTES_PER_PARTITION = 1 << 30


class Kafka(Component):
    name = "kafka"
    summary = (
        f"Apache Kafka {KAFKA_VERSION} (KRaft), org.apache.kafka:kafka_2.13 from Maven Central"
    )
    port_keys = ("kafka", "kafka_controller")
    start_timeout = 90.0

    def _home(self, cfg: StackConfig):
        return cfg.cache_dir / "kafka" / KAFKA_VERSION

    def obtain(self, cfg: StackConfig, progress: Progress) -> None:
        maven_artifacts(
            self.name,
            self._home(cfg),
            [f"org.apache.kafka:kafka_2.13:{KAFKA_VERSION}"],
            cfg.log_path("kafka-obtain"),
            progress,
        )

    def _properties(self, cfg: StackConfig) -> str:
        data = cfg.data_dir(self.name)
        host, port, ctl = cfg.host, cfg.port("kafka"), cfg.port("kafka_controller")
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers={host}:{ctl}",
                f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{ctl}",
                f"advertised.listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{ctl}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={data / 'logs'}",
                "num.partitions=4",
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=true",
                # Test, demo and backfill events carry past event times, and time retention
                # goes by record timestamp: its first check (30 s after start, then every
                # 5 min) would delete them from any topic. The local broker keeps by size only.
                "log.retention.ms=-1",
                f"log.retention.bytes={RETENTION_BYTES_PER_PARTITION}",
                "",
            ]
        )

    def prepare(self, cfg: StackConfig) -> None:
        data = cfg.data_dir(self.name)
        data.mkdir(parents=True, exist_ok=True)
        props = data / "server.properties"
        props.write_text(self._properties(cfg))
        if (data / "logs" / "meta.properties").is_file():
            return
        # KRaft storage must be formatted once with a cluster id before the first start.
        import subprocess

        libs = self._home(cfg) / "libs"
        result = subprocess.run(
            [
                "java",
                "-cp",
                f"{libs}/*",
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                uuid.uuid4().hex[:22],
                "-c",
                str(props),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            from retail_backbone.stack.components.base import StackError

            log = cfg.log_path("kafka")
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(result.stdout + result.stderr)
            raise StackError(self.name, "formatting KRaft storage failed", log)

    def processes(self, cfg: StackConfig) -> list[ProcessSpec]:
        libs = self._home(cfg) / "libs"
        props = cfg.data_dir(self.name) / "server.properties"
        return [
            ProcessSpec(
                name="kafka",
                argv=[
                    "java",
                    f"-Xmx{cfg.heap('kafka')}",
                    f"-Xms{cfg.heap('kafka')}",
                    "-XX:+UseG1GC",
                    "-cp",
                    f"{libs}/*",
                    "kafka.Kafka",
                    str(props),
                ],
            )
        ]

    def check(self, cfg: StackConfig) -> None:
        """Produce one message and consume it back."""
        from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

        bootstrap = self.address(cfg)
        token = uuid.uuid4().hex.encode()
        try:
            producer = Producer(
                {
                    "bootstrap.servers": bootstrap,
                    "message.timeout.ms": 5000,
                    "acks": "all",
                    "log_level": 0,  # connection refusals while starting are expected
                }
            )
            delivered: list = []
            producer.produce(
                _HEALTH_TOPIC, token, on_delivery=lambda err, msg: delivered.append((err, msg))
            )
            producer.flush(6)
            if not delivered or delivered[0][0] is not None:
                raise NotReady(f"produce failed: {delivered[0][0] if delivered else 'timeout'}")
            msg = delivered[0][1]
            consumer = Consumer(
                {
                    "bootstrap.servers": bootstrap,
                    "group.id": "_backbone_health",
                    "enable.auto.commit": False,
                    "log_level": 0,
                }
            )
            try:
                consumer.assign([TopicPartition(msg.topic(), msg.partition(), msg.offset())])
                got = consumer.consume(num_messages=1, timeout=5)
            finally:
                consumer.close()
        except KafkaException as exc:
            raise NotReady(str(exc)) from exc
        if not got or got[0].error() or got[0].value() != token:
            raise NotReady("consumed message did not match the produced one")
