"""Options every pipeline shares: where the services are (Kafka, registry, stores) and the run id.

Beam parses the options of every ``PipelineOptions`` subclass for every pipeline, so an option may
be declared only once in the whole process; pipelines inherit these (``class
InventoryOptions(JobOptions, ConnectionOptions, PipelineOptions)``) or read them through
``opts.view_as(ConnectionOptions)``.

Example::

    conn = opts.view_as(ConnectionOptions)
    records = p | ReadFromKafkaEvents(conn.bootstrap_servers, topics)
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from retail_backbone.pipelines.params import Param, add_params
from retail_backbone.stack.components.bigtable import INSTANCE as BIGTABLE_INSTANCE
from retail_backbone.stack.components.bigtable import PROJECT as BIGTABLE_PROJECT

__all__ = ["ConnectionOptions"]


class ConnectionOptions(PipelineOptions):
    PARAMS = (
        Param(
            "bootstrap_servers",
            "Kafka bootstrap servers, host:port[,host:port].",
            default="127.0.0.1:9092",
        ),
        Param(
            "registry_url",
            "Schema registry base URL (Confluent REST API).",
            default="http://127.0.0.1:8085",
        ),
        Param("run_id", "Id of this run, stored with its outputs. Default: random."),
        Param(
            "postgres_dsn",
            "PostgreSQL libpq connection string, or env:VAR to read it from the workers' "
            "environment (keeps it out of options and display data). Never logged.",
            secret=True,
        ),
        Param(
            "bigtable_project",
            "Bigtable project id (any name on the emulator).",
            default=BIGTABLE_PROJECT,
        ),
        Param("bigtable_instance", "Bigtable instance id.", default=BIGTABLE_INSTANCE),
    )

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        add_params(parser, cls.PARAMS)
