"""Pipeline options that point a job at a runner of the local stack.

Example::

    args = runner_args("prism", StackConfig.load())
    # ['--runner=PortableRunner', '--job_endpoint=127.0.0.1:8073', '--environment_type=LOOPBACK']

``prism`` and ``flink`` submit to the stack's long-running job services (Prism, or the Beam Flink
job server in front of the Flink session cluster); the Python SDK harness runs in this process
(LOOPBACK). ``direct`` runs in process without any service.
"""

from __future__ import annotations

from retail_backbone.stack.config import StackConfig
from retail_backbone.templates.profiles import load_profile

__all__ = ["RUNNER_COMPONENTS", "runner_args"]

#: The stack components each runner needs.
RUNNER_COMPONENTS: dict[str, tuple[str, ...]] = {
    "prism": ("prism",),
    "flink": ("jobserver",),
    "direct": (),
}


def runner_args(runner: str, cfg: StackConfig) -> list[str]:
    """Beam command-line options for ``runner`` on the local stack."""
    if runner == "direct":
        return ["--runner=DirectRunner"]
    if runner == "prism":
        endpoint = f"{cfg.host}:{cfg.port('prism')}"
    elif runner == "flink":
        endpoint = f"{cfg.host}:{cfg.port('jobserver')}"
    else:
        raise ValueError(f"unknown runner {runner!r}; choose prism, flink or direct")
    args = ["--runner=PortableRunner", f"--job_endpoint={endpoint}", "--environment_type=LOOPBACK"]
    if runner == "flink":
        # The job server's expansion service expands Java KafkaIO (the Flink Kafka engine).
        args.append(f"--kafka_expansion_service={cfg.host}:{cfg.port('jobserver_expansion')}")
        # The SDK harness's state cache, as the `local` Flink profile sets it (see there why).
        cache_mb = load_profile("local").settings.get("sdk_cache_mb", 0)
        args.append(f"--max_cache_memory_usage_mb={cache_mb}")
    return args
