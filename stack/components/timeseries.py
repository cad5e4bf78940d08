"""QuestDB, the time-series store (ILP ingestion, SQL over HTTP and PG wire), from Maven Central."""

from __future__ import annotations

import json
import time
import urllib.parse
import uuid
from pathlib import Path

from retail_backbone.stack.components.base import Component, NotReady, Progress
from retail_backbone.stack.components.obtain import maven_artifacts
from retail_backbone.stack.config import QUESTDB_VERSION, StackConfig
from retail_backbone.stack.process import ProcessSpec

_HEALTH_TABLE = "_backbone_health"
# WAL tables become readable only after the apply job runs; allow it a few seconds.
_VISIBLE_WITHIN = 5.0


class QuestDB(Component):
    name = "timeseries"
    summary = f"QuestDB {QUESTDB_VERSION}, org.questdb:questdb from Maven Central"
    port_keys = ("questdb_http", "questdb_pg", "questdb_ilp", "questdb_min_http")
    start_timeout = 90.0

    def _home(self, cfg: StackConfig) -> Path:
        return cfg.cache_dir / "questdb" / QUESTDB_VERSION

    def _jar(self, cfg: StackConfig) -> Path:
        return self._home(cfg) / "libs" / f"questdb-{QUESTDB_VERSION}.jar"

    def obtain(self, cfg: StackConfig, progress: Progress) -> None:
        # The server jar is self-contained; its POM only lists test and provided dependencies.
        maven_artifacts(
            self.name,
            self._home(cfg),
            [f"org.questdb:questdb:{QUESTDB_VERSION}"],
            cfg.log_path("timeseries-obtain"),
            progress,
            transitive=False,
        )

    def prepare(self, cfg: StackConfig) -> None:
        cfg.data_dir(self.name).mkdir(parents=True, exist_ok=True)

    def _env(self, cfg: StackConfig) -> dict[str, str]:
        # QuestDB maps every server.conf key to QDB_<KEY> (dots to underscores), and environment
        # values win over the file it writes into <root>/conf on first start.
        host = cfg.host
        return {
            "QDB_HTTP_BIND_TO": f"{host}:{cfg.port('questdb_http')}",
            "QDB_PG_NET_BIND_TO": f"{host}:{cfg.port('questdb_pg')}",
            "QDB_LINE_TCP_NET_BIND_TO": f"{host}:{cfg.port('questdb_ilp')}",
            "QDB_HTTP_MIN_NET_BIND_TO": f"{host}:{cfg.port('questdb_min_http')}",
            # UDP ingestion would listen on 0.0.0.0:9009 and is not needed.
            "QDB_LINE_UDP_ENABLED": "false",
            # No phoning home and no telemetry tables in the data directory.
            "QDB_TELEMETRY_ENABLED": "false",
            "QDB_TELEMETRY_DISABLE_COMPLETELY": "true",
        }

    def processes(self, cfg: StackConfig) -> list[ProcessSpec]:
        return [
            ProcessSpec(
                name="timeseries",
                argv=[
                    "java",
                    f"-Xmx{cfg.heap('questdb')}",
                    "-p",
                    str(self._jar(cfg)),
                    # Needed for QuestDB's fast float parsing (same flag as its own questdb.sh).
                    "--add-exports",
                    "java.base/jdk.internal.math=io.questdb",
                    "-m",
                    "io.questdb/io.questdb.ServerMain",
                    "-d",
                    str(cfg.data_dir(self.name).resolve()),
                ],
                env=self._env(cfg),
            )
        ]

    def check(self, cfg: StackConfig) -> None:
        """Write one row over ILP/HTTP with the official client and read it back via /exec."""
        import requests
        from questdb import QuestDBError, Sender, TimestampNanos

        http = f"{cfg.host}:{cfg.port('questdb_http')}"
        token = uuid.uuid4().hex
        try:
            # retry_timeout=0: the manager's poll loop does the waiting, not the client.
            with Sender.from_conf(
                f"http::addr={http};retry_timeout=0;request_timeout=3000;"
            ) as sender:
                sender.row(_HEALTH_TABLE, columns={"token": token}, at=TimestampNanos.now())
        except QuestDBError as exc:
            raise NotReady(f"ILP write failed: {' '.join(str(exc).split())}") from exc
        query = f"SELECT count() AS n FROM {_HEALTH_TABLE} WHERE token = '{token}'"
        url = f"http://{http}/exec?" + urllib.parse.urlencode({"query": query})
        deadline = time.monotonic() + _VISIBLE_WITHIN
        last = "row not visible yet"
        while True:
            try:
                resp = requests.get(url, timeout=3)
                body = resp.json()
            except (requests.RequestException, json.JSONDecodeError) as exc:
                raise NotReady(f"/exec failed: {exc}") from exc
            if resp.status_code == 200 and body.get("dataset") == [[1]]:
                return
            last = body.get("error") or f"/exec answered {body.get('dataset')!r}"
            if time.monotonic() >= deadline:
                raise NotReady(f"written row not readable: {last}")
            time.sleep(0.2)
