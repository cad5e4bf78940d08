"""Prism, Beam's portable local runner, built from the Go module proxy at the Beam release.

It runs as a long-lived job service; pipelines reach it with ``--runner=PortableRunner
--job_endpoint=127.0.0.1:8073 --environment_type=LOOPBACK``, or ``--runner=PrismRunner
--prism_location=<binary>`` (see ``retail_backbone.pipelines.options``).
"""

from __future__ import annotations

from retail_backbone.stack.components.base import Component, NotReady, Progress
from retail_backbone.stack.components.obtain import go_binary
from retail_backbone.stack.config import BEAM_VERSION, StackConfig
from retail_backbone.stack.process import ProcessSpec

MODULE = "github.com/apache/beam/sdks/v2/go/cmd/prism"


def prism_binary(cfg: StackConfig):
    return cfg.bin_dir / f"prism-{BEAM_VERSION}" / "prism"


def job_service_ready(address: str) -> None:
    """A real ``GetJobs`` call to a Beam job service; raises NotReady if it does not answer."""
    import grpc
    from apache_beam.portability.api import beam_job_api_pb2, beam_job_api_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            beam_job_api_pb2_grpc.JobServiceStub(channel).GetJobs(
                beam_job_api_pb2.GetJobsRequest(), timeout=3
            )
        except grpc.RpcError as exc:
            raise NotReady(f"job service at {address}: {exc.code().name}") from exc


class Prism(Component):
    name = "prism"
    summary = f"Beam Prism runner {BEAM_VERSION} ({MODULE}, Go module proxy)"
    port_keys = ("prism", "prism_ui")
    start_timeout = 30.0

    def obtain(self, cfg: StackConfig, progress: Progress) -> None:
        # The checksum database does not list this module version; the proxy still serves it.
        import os

        os.environ.setdefault("GONOSUMDB", "github.com/apache/beam")
        go_binary(
            self.name,
            MODULE,
            f"v{BEAM_VERSION}",
            "prism",
            prism_binary(cfg).parent,
            cfg.log_path("prism-obtain"),
            progress,
        )

    def processes(self, cfg: StackConfig) -> list[ProcessSpec]:
        return [
            ProcessSpec(
                name="prism",
                argv=[
                    str(prism_binary(cfg)),
                    f"--job_port={cfg.port('prism')}",
                    f"--web_port={cfg.port('prism_ui')}",
                    "--log_level=warn",
                ],
            )
        ]

    def check(self, cfg: StackConfig) -> None:
        job_service_ready(self.address(cfg))
