"""Beam Flink job server: the portable-runner endpoint that submits pipelines to the Flink cluster.

Maven Central serves no shaded ``beam-runners-flink-<minor>-job-server`` jar here, so the server is
assembled from ``beam-runners-flink-<minor>`` and its runtime dependencies and started through
``FlinkJobServerDriver``. Its built-in expansion service gets Beam's Java KafkaIO on the classpath
so that Python pipelines can expand ``ReadFromKafka``/``WriteToKafka`` against it.
"""

from __future__ import annotations

from pathlib import Path

from retail_backbone.stack.components.base import Component, NotReady, Progress
from retail_backbone.stack.components.obtain import maven_artifacts
from retail_backbone.stack.config import BEAM_VERSION, FLINK_MINOR, StackConfig
from retail_backbone.stack.process import ProcessSpec

_DRIVER = "org.apache.beam.runners.flink.FlinkJobServerDriver"

# KafkaIO is fetched without its transitive dependencies: its POM names Confluent's schema-registry
# artifacts, which live on packages.confluent.io (unreachable here), and Maven then fails the whole
# resolution. Listed instead are the jars KafkaIO needs that beam-runners-flink does not already
# bring: the Kafka client, its zstd codec, Beam's Avro extension with Avro, Spring's expression
# language (KafkaIO bridges Kafka client versions with it) and an SLF4J binding, without which the
# job server logs nothing at all.
KAFKA_CLIENTS_VERSION = "3.9.1"
_EXTRA_JARS = [
    f"org.apache.beam:beam-sdks-java-io-kafka:{BEAM_VERSION}",
    f"org.apache.kafka:kafka-clients:{KAFKA_CLIENTS_VERSION}",
    "com.github.luben:zstd-jni:1.5.6-4",
    f"org.apache.beam:beam-sdks-java-extensions-avro:{BEAM_VERSION}",
    "org.apache.avro:avro:1.11.4",
    "org.springframework:spring-expression:5.3.27",
    "org.springframework:spring-core:5.3.27",
    "org.springframework:spring-jcl:5.3.27",
    "org.slf4j:slf4j-simple:1.7.30",
]

# slf4j-simple: timestamps, and no multi-thousand-line metrics dump after every job.
_LOGGING = [
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd HH:mm:ss,SSS",
    "-Dorg.slf4j.simpleLogger.log.org.apache.beam.runners.flink.FlinkPipelineRunner=warn",
]


class FlinkJobServer(Component):
    name = "jobserver"
    summary = (
        f"Beam {BEAM_VERSION} Flink job server (job, artifact and expansion services), "
        f"org.apache.beam:beam-runners-flink-{FLINK_MINOR} + KafkaIO from Maven Central"
    )
    port_keys = ("jobserver", "jobserver_artifact", "jobserver_expansion")
    depends_on = ("flink",)
    start_timeout = 90.0

    def _home(self, cfg: StackConfig) -> Path:
        return cfg.cache_dir / "jobserver" / BEAM_VERSION

    def _classpath(self, cfg: StackConfig) -> str:
        home = self._home(cfg)
        return f"{home / 'runner' / 'libs'}/*:{home / 'extras' / 'libs'}/*"

    def obtain(self, cfg: StackConfig, progress: Progress) -> None:
        log = cfg.log_path("jobserver-obtain")
        home = self._home(cfg)
        maven_artifacts(
            self.name,
            home / "runner",
            [f"org.apache.beam:beam-runners-flink-{FLINK_MINOR}:{BEAM_VERSION}"],
            log,
            progress,
        )
        maven_artifacts(self.name, home / "extras", _EXTRA_JARS, log, progress, transitive=False)

    def prepare(self, cfg: StackConfig) -> None:
        (cfg.data_dir(self.name) / "artifacts").mkdir(parents=True, exist_ok=True)

    def processes(self, cfg: StackConfig) -> list[ProcessSpec]:
        return [
            ProcessSpec(
                name="jobserver",
                argv=[
                    "java",
                    f"-Xmx{cfg.heap('jobserver')}",
                    *_LOGGING,
                    "-cp",
                    self._classpath(cfg),
                    _DRIVER,
                    f"--flink-master={cfg.host}:{cfg.port('flink_rest')}",
                    f"--job-host={cfg.host}",
                    f"--job-port={cfg.port('jobserver')}",
                    f"--artifact-port={cfg.port('jobserver_artifact')}",
                    f"--expansion-port={cfg.port('jobserver_expansion')}",
                    f"--artifacts-dir={cfg.data_dir(self.name) / 'artifacts'}",
                ],
            )
        ]

    def check(self, cfg: StackConfig) -> None:
        """List jobs through the Beam Job API, the call every portable pipeline starts with."""
        import grpc
        from apache_beam.portability.api import beam_job_api_pb2, beam_job_api_pb2_grpc

        channel = grpc.insecure_channel(self.address(cfg))
        try:
            stub = beam_job_api_pb2_grpc.JobServiceStub(channel)
            stub.GetJobs(beam_job_api_pb2.GetJobsRequest(), timeout=3)
        except grpc.RpcError as exc:
            code = exc.code().name if isinstance(exc, grpc.Call) else "error"
            detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            raise NotReady(f"GetJobs on {self.address(cfg)}: {code} {detail}") from exc
        finally:
            channel.close()
