"""The project's schema registry (Confluent REST API), state in Kafka's compacted ``_schemas``.

Example::

    backbone stack up --only registry      # starts Kafka first, then the registry on :8085

    from confluent_kafka.schema_registry import SchemaRegistryClient
    SchemaRegistryClient({"url": "http://127.0.0.1:8085"}).get_subjects()

It is this repository's own code (``retail_backbone.schemas.registry``), so there is nothing to
obtain. It keeps no data directory: everything lives in the Kafka topic, which survives restarts.
"""

from __future__ import annotations

import sys

from retail_backbone.stack.components.base import Component, NotReady, Progress
from retail_backbone.stack.config import StackConfig
from retail_backbone.stack.process import ProcessSpec


class SchemaRegistry(Component):
    name = "registry"
    summary = (
        "schema registry, Confluent REST API (retail_backbone.schemas.registry, topic _schemas)"
    )
    port_keys = ("registry",)
    depends_on = ("kafka",)
    # It reads the whole _schemas topic before it opens its port.
    start_timeout = 60.0

    def obtain(self, cfg: StackConfig, progress: Progress) -> None:
        """Nothing to download: the registry is part of this package."""

    def processes(self, cfg: StackConfig) -> list[ProcessSpec]:
        return [
            ProcessSpec(
                name="registry",
                argv=[
                    sys.executable,
                    "-m",
                    "retail_backbone.schemas.registry",
                    "--host",
                    cfg.host,
                    "--port",
                    str(self.port(cfg)),
                    "--bootstrap",
                    f"{cfg.host}:{cfg.port('kafka')}",
                ],
                env={"PYTHONUNBUFFERED": "1"},  # log lines reach the log file as they happen
            )
        ]

    def check(self, cfg: StackConfig) -> None:
        """``GET /subjects`` answers 200 with a JSON list."""
        import httpx

        url = f"http://{self.address(cfg)}/subjects"
        try:
            response = httpx.get(url, timeout=3.0)
            body = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            raise NotReady(f"GET {url}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(body, list):
            raise NotReady(f"GET {url}: HTTP {response.status_code} {response.text[:200]}")
