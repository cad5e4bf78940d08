"""The stack's components, in default start order (one module each)."""

from retail_backbone.stack.components.base import Component

ALL_COMPONENTS: list[type[Component]] = []


def _register() -> None:
    # Imported here so that each component module can import ``base`` without a cycle.
    from retail_backbone.stack.components.bigtable import BigtableEmulator
    from retail_backbone.stack.components.flink import Flink
    from retail_backbone.stack.components.graph import Neo4jGraph
    from retail_backbone.stack.components.jobserver import FlinkJobServer
    from retail_backbone.stack.components.kafka import Kafka
    from retail_backbone.stack.components.mongo import FerretDB
    from retail_backbone.stack.components.postgres import Postgres
    from retail_backbone.stack.components.prism import Prism
    from retail_backbone.stack.components.registry import SchemaRegistry
    from retail_backbone.stack.components.timeseries import QuestDB

    ALL_COMPONENTS.extend(
        [Kafka, Postgres, BigtableEmulator, FerretDB, QuestDB, Neo4jGraph, Flink, FlinkJobServer]
    )
    ALL_COMPONENTS.append(Prism)
    ALL_COMPONENTS.insert(ALL_COMPONENTS.index(Kafka) + 1, SchemaRegistry)  # needs Kafka only


_register()
