"""Options every pipeline shares: where Kafka and the schema registry are, and the run id.

Beam parses the options of every ``PipelineOptions`` subclass for every pipeline, so an option may
be declared only once in the whole process; pipelines read these through
``opts.view_as(ConnectionOptions)``.

Example::

    conn = opts.view_as(ConnectionOptions)
    records = p | ReadFromKafkaEvents(conn.bootstrap_servers, topics)
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

__all__ = ["ConnectionOptions"]


class ConnectionOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument(
            "--bootstrap_servers",
            default="127.0.0.1:9092",
            help="Kafka bootstrap servers, host:port[,host:port]. Default: 127.0.0.1:9092.",
        )
        parser.add_argument(
            "--registry_url",
            default="http://127.0.0.1:8085",
            help="Schema registry base URL (Confluent REST API). Default: http://127.0.0.1:8085.",
        )
        parser.add_argument(
            "--run_id",
            default=None,
            help="Id of this run, stored with its outputs. Default: random.",
        )
