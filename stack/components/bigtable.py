"""The Cloud Bigtable emulator, built from the Go module proxy."""

from __future__ import annotations

import os

from retail_backbone.stack.components.base import Component, NotReady, Progress
from retail_backbone.stack.components.obtain import go_binary
from retail_backbone.stack.config import BIGTABLE_EMULATOR_VERSION, StackConfig
from retail_backbone.stack.process import ProcessSpec

MODULE = "cloud.google.com/go/bigtable/cmd/emulator"
#: The emulator accepts any project and instance name.
PROJECT = "backbone-local"
INSTANCE = "backbone"


class BigtableEmulator(Component):
    name = "bigtable"
    summary = f"Bigtable emulator ({MODULE}@{BIGTABLE_EMULATOR_VERSION}, Go module proxy)"
    port_keys = ("bigtable",)
    start_timeout = 30.0

    def _exe(self, cfg: StackConfig):
        return cfg.bin_dir / f"bigtable-{BIGTABLE_EMULATOR_VERSION}" / "emulator"

    def obtain(self, cfg: StackConfig, progress: Progress) -> None:
        go_binary(
            self.name,
            MODULE,
            BIGTABLE_EMULATOR_VERSION,
            "emulator",
            self._exe(cfg).parent,
            cfg.log_path("bigtable-obtain"),
            progress,
        )

    def processes(self, cfg: StackConfig) -> list[ProcessSpec]:
        return [
            ProcessSpec(
                name="bigtable",
                argv=[str(self._exe(cfg)), f"-host={cfg.host}", f"-port={cfg.port('bigtable')}"],
            )
        ]

    def check(self, cfg: StackConfig) -> None:
        """An admin call: list the instance's tables."""
        from google.api_core.exceptions import GoogleAPICallError, RetryError
        from google.cloud import bigtable

        os.environ["BIGTABLE_EMULATOR_HOST"] = self.address(cfg)
        try:
            client = bigtable.Client(project=PROJECT, admin=True)
            parent = client.instance(INSTANCE).name
            client.table_admin_client.list_tables(request={"parent": parent}, timeout=3)
        except (GoogleAPICallError, RetryError) as exc:
            raise NotReady(str(exc).splitlines()[0]) from exc
