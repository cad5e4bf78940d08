"""A schema registry speaking the Confluent Schema Registry REST API, stored in Kafka.

Example::

    python -m retail_backbone.schemas.registry --port 8085 --bootstrap 127.0.0.1:9092

    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    client = SchemaRegistryClient({"url": "http://127.0.0.1:8085"})
    schema_id = client.register_schema("retail.order_placed-value", Schema(text, "AVRO"))

``backbone stack up --only registry`` starts it (after Kafka). ``store`` keeps the state in the
compacted topic ``_schemas``; ``app`` serves the REST API; compatibility is decided by
``retail_backbone.schemas.compatibility``.
"""

from retail_backbone.schemas.registry.app import create_app
from retail_backbone.schemas.registry.store import KafkaStore, RegistryError, StoreUnavailable

__all__ = ["KafkaStore", "RegistryError", "StoreUnavailable", "create_app"]
