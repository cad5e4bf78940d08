"""Writing to Kafka with an idempotent producer; delivery failures become dead letters.

Example::

    messages = alerts | "EncodeAlerts" >> EncodeAvroMessages(
        registry_url, "inventory.alerts", "retail.inventory_alert-value", schema_text,
        key_fn=lambda alert: alert["envelope"]["partition_key"])
    failed = messages | "WriteAlerts" >> WriteToKafkaEvents(bootstrap, pipeline="inventory")

The producer runs with ``acks=all`` and ``enable.idempotence=true`` (no duplicates from internal
retries, order kept per partition), is built in ``setup()``, and is flushed in
``finish_bundle``: a bundle is done only when the broker acknowledged every message of it. A
message the broker refuses, or that times out, comes out of ``WriteToKafkaEvents`` as a
``DeadLetter`` (stage = the step label) instead of vanishing or failing the job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import WindowedValue

from retail_backbone.io.dead_letters import Origin, dead_letter

__all__ = ["EncodeAvroMessages", "KafkaMessage", "WriteToKafkaEvents"]


class KafkaMessage(NamedTuple):
    """One message to produce."""

    topic: str
    key: bytes | None
    value: bytes
    event_id: str | None = None


class _WriteFn(beam.DoFn):
    def __init__(self, bootstrap: str, pipeline: str, stage: str, config: Mapping[str, Any]):
        self._bootstrap = bootstrap
        self._pipeline = pipeline
        self._stage = stage
        self._config = dict(config)
        self._producer = None
        self._written = Metrics.counter(pipeline, f"{stage}.written")
        self._failed = Metrics.counter(pipeline, f"{stage}.failed")

    def setup(self) -> None:
        from confluent_kafka import Producer

        self._producer = Producer(
            {
                "bootstrap.servers": self._bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
                "delivery.timeout.ms": 30000,
                "log_level": 3,
                **self._config,
            }
        )

    def start_bundle(self) -> None:
        self._failures: list[tuple[KafkaMessage, str, Any, Any]] = []

    def process(
        self,
        msg: KafkaMessage,
        timestamp=beam.DoFn.TimestampParam,
        window=beam.DoFn.WindowParam,
    ) -> Iterator[None]:
        def on_delivery(err, _record, msg=msg, timestamp=timestamp, window=window) -> None:
            if err is not None:
                self._failures.append((msg, str(err), timestamp, window))
            else:
                self._written.inc()

        while True:
            try:
                self._producer.produce(msg.topic, msg.value, key=msg.key, on_delivery=on_delivery)
                break
            except BufferError:
                self._producer.poll(0.5)  # local queue full: wait for deliveries, then retry
        self._producer.poll(0)
        yield from ()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        remaining = self._producer.flush(60)
        if remaining:
            # Still unacknowledged after a minute: fail the bundle so the runner retries it
            # (the idempotent producer keeps the retry free of duplicates within a session).
            raise RuntimeError(f"{remaining} Kafka messages still unacknowledged after 60s")
        for msg, error, timestamp, window in self._failures:
            self._failed.inc()
            letter = dead_letter(
                msg.value,
                Origin("INTERNAL", topic=msg.topic),
                self._pipeline,
                self._stage,
                f"delivery to {msg.topic} failed: {error}",
                error_class="KafkaDeliveryFailed",
                event_id=msg.event_id,
            )
            yield WindowedValue(letter, timestamp, [window])
        self._failures = []

    def teardown(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)


class WriteToKafkaEvents(beam.PTransform):
    """Produce ``KafkaMessage``s; returns a PCollection of ``DeadLetter`` for failed deliveries.

    Args:
        bootstrap: Kafka bootstrap servers.
        pipeline: pipeline name for dead letters and counters.
        producer_config: extra librdkafka settings (may not weaken acks or idempotence).
    """

    def __init__(
        self,
        bootstrap: str,
        pipeline: str,
        producer_config: Mapping[str, Any] | None = None,
        label: str | None = None,
    ) -> None:
        super().__init__(label)
        config = dict(producer_config or {})
        for key in ("acks", "enable.idempotence"):
            if key in config:
                raise ValueError(f"{key} is fixed by WriteToKafkaEvents (acks=all, idempotent)")
        self._bootstrap = bootstrap
        self._pipeline = pipeline
        self._config = config

    def expand(self, messages: beam.PCollection) -> beam.PCollection:
        stage = self.label or "WriteToKafkaEvents"
        return messages | "Produce" >> beam.ParDo(
            _WriteFn(self._bootstrap, self._pipeline, stage, self._config)
        )


class _EncodeFn(beam.DoFn):
    def __init__(self, registry_url, topic, subject, schema_text, key_fn, event_id_fn):
        self._registry_url = registry_url
        self._topic = topic
        self._subject = subject
        self._schema_text = schema_text
        self._key_fn = key_fn
        self._event_id_fn = event_id_fn
        self._client = None

    def setup(self) -> None:
        from retail_backbone.schemas.serde import AvroSerializer, RegistryClient

        self._client = RegistryClient(self._registry_url)
        self._serializer = AvroSerializer(self._client, self._subject, self._schema_text)

    def process(self, record: Mapping[str, Any]) -> Iterator[KafkaMessage]:
        key = self._key_fn(record)
        yield KafkaMessage(
            self._topic,
            key.encode() if isinstance(key, str) else key,
            self._serializer.serialize(record),
            self._event_id_fn(record) if self._event_id_fn else None,
        )

    def teardown(self) -> None:
        if self._client is not None:
            self._client.close()


def _envelope_event_id(record: Mapping[str, Any]) -> str | None:
    envelope = record.get("envelope")
    return str(envelope["event_id"]) if isinstance(envelope, Mapping) else None


@beam.ptransform_fn
def EncodeAvroMessages(
    records: beam.PCollection,
    registry_url: str,
    topic: str,
    subject: str,
    schema_text: str,
    key_fn: Callable[[Mapping[str, Any]], str | bytes | None],
    event_id_fn: Callable[[Mapping[str, Any]], str | None] | None = _envelope_event_id,
) -> beam.PCollection:
    """Serialize record dicts to Confluent Avro ``KafkaMessage``s keyed by ``key_fn``."""
    return records | "Serialize" >> beam.ParDo(
        _EncodeFn(registry_url, topic, subject, schema_text, key_fn, event_id_fn)
    )
