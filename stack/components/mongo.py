"""FerretDB v1 (MongoDB wire protocol, SQLite backend, pure Go) from the Go module proxy."""

from __future__ import annotations

from pathlib import Path

from retail_backbone.stack.components.base import Component, NotReady, Progress
from retail_backbone.stack.components.obtain import go_launcher
from retail_backbone.stack.config import FERRETDB_VERSION, StackConfig
from retail_backbone.stack.process import ProcessSpec

MODULE = "github.com/FerretDB/FerretDB/cmd/ferretdb"


def mongo_uri(cfg: StackConfig) -> str:
    return f"mongodb://{cfg.host}:{cfg.port('mongo')}/"


class FerretDB(Component):
    name = "mongo"
    summary = f"FerretDB {FERRETDB_VERSION} (MongoDB wire, SQLite backend; Go module proxy)"
    port_keys = ("mongo",)
    start_timeout = 30.0

    def _exe(self, cfg: StackConfig) -> Path:
        return cfg.bin_dir / f"ferretdb-{FERRETDB_VERSION}" / "ferretdb"

    def obtain(self, cfg: StackConfig, progress: Progress) -> None:
        # A launcher over FerretDB's embeddable package; stack/go/ferretdb/main.go says why.
        go_launcher(
            self.name,
            Path(__file__).resolve().parent.parent / "go" / "ferretdb",
            [f"{MODULE.removesuffix('/cmd/ferretdb')}@{FERRETDB_VERSION}"],
            "ferretdb",
            self._exe(cfg).parent,
            cfg.log_path("mongo-obtain"),
            progress,
        )

    def prepare(self, cfg: StackConfig) -> None:
        (cfg.data_dir(self.name) / "sqlite").mkdir(parents=True, exist_ok=True)

    def processes(self, cfg: StackConfig) -> list[ProcessSpec]:
        data = cfg.data_dir(self.name)
        return [
            ProcessSpec(
                name="mongo",
                argv=[
                    str(self._exe(cfg)),
                    f"--sqlite-url=file:{data / 'sqlite'}/",
                    f"--listen-addr={self.address(cfg)}",
                ],
            )
        ]

    def check(self, cfg: StackConfig) -> None:
        """A ``ping`` through pymongo."""
        from pymongo import MongoClient
        from pymongo.errors import PyMongoError

        try:
            with MongoClient(mongo_uri(cfg), serverSelectionTimeoutMS=2000) as client:
                client.admin.command("ping")
        except PyMongoError as exc:
            raise NotReady(str(exc).splitlines()[0]) from exc
