"""Configuration of the local stack: where things are cached and run, ports, heaps, versions.

Every value has a default; each can be overridden by an environment variable or by a TOML file
(``backbone-stack.toml`` in the working directory, or the path in ``BACKBONE_STACK_CONFIG``).
Environment variables win over the file.

Example::

    cfg = StackConfig.load()
    cfg.port("kafka")            # 9092 unless BACKBONE_KAFKA_PORT or the file says otherwise
    cfg.heap("kafka")            # "512m"

TOML layout::

    cache_dir = "/data/backbone-cache"
    [ports]
    kafka = 19092
    [heaps]
    flink_taskmanager = "2g"
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

# Beam's Python SDK and the Java Flink job server must be the same release. No Beam Flink
# job-server jar is served by Maven Central here, and the newest release whose Flink runner and
# job-service artifacts are all served is 2.62.0 (Flink 1.19). See README "Versions".
BEAM_VERSION = "2.62.0"
FLINK_VERSION = "1.19.3"
FLINK_MINOR = "1.19"
KAFKA_VERSION = "4.1.1"
NEO4J_VERSION = "5.26.30"
QUESTDB_VERSION = "9.2.3"
BIGTABLE_EMULATOR_VERSION = "v1.58.0"
FERRETDB_VERSION = "v1.24.2"

DEFAULT_PORTS: dict[str, int] = {
    "kafka": 9092,
    "kafka_controller": 9093,
    "registry": 8085,
    "postgres": 5432,
    "bigtable": 8086,
    "mongo": 27017,
    "questdb_http": 9000,
    "questdb_pg": 8812,
    "questdb_ilp": 9009,
    "questdb_min_http": 9003,
    "neo4j": 7687,
    "flink_rest": 8081,
    "flink_rpc": 6123,
    "jobserver": 8099,
    "jobserver_artifact": 8098,
    "jobserver_expansion": 8097,
    "prism": 8073,
    "prism_ui": 8074,
}

DEFAULT_HEAPS: dict[str, str] = {
    "kafka": "512m",
    "neo4j": "512m",
    "questdb": "512m",
    "flink_jobmanager": "768m",
    "flink_taskmanager": "1536m",
    "jobserver": "512m",
}


def _env_key(kind: str, name: str) -> str:
    return f"BACKBONE_{name.upper()}_{kind.upper()}"


@dataclass(frozen=True)
class StackConfig:
    """Resolved stack settings.

    Attributes:
        cache_dir: downloads and builds, kept across runs (``~/.cache/retail-backbone``).
        run_dir: data directories, logs and pid files of running services. It lives outside
            ``/root`` by default because PostgreSQL refuses to run as root and its data
            directory must be reachable by the ``postgres`` user.
        ports: service name -> TCP port on 127.0.0.1.
        heaps: JVM name -> ``-Xmx`` value.
    """

    cache_dir: Path
    run_dir: Path
    ports: dict[str, int] = field(default_factory=dict)
    heaps: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"

    @classmethod
    def load(cls, path: Path | None = None, env: dict[str, str] | None = None) -> StackConfig:
        """Build the configuration from defaults, an optional TOML file and the environment."""
        env = dict(os.environ if env is None else env)
        file_path = path or Path(env.get("BACKBONE_STACK_CONFIG", "backbone-stack.toml"))
        data: dict = {}
        if file_path.is_file():
            with file_path.open("rb") as fh:
                data = tomllib.load(fh)
        user = env.get("USER") or str(os.getuid())
        cache_dir = Path(
            env.get("BACKBONE_CACHE_DIR")
            or data.get("cache_dir")
            or Path(env.get("XDG_CACHE_HOME") or Path(env.get("HOME") or Path.home()) / ".cache")
            / "retail-backbone"
        )
        run_dir = Path(
            env.get("BACKBONE_RUN_DIR")
            or data.get("run_dir")
            or Path("/var/tmp") / f"retail-backbone-{user}"
        )
        ports = dict(DEFAULT_PORTS)
        ports.update({k: int(v) for k, v in data.get("ports", {}).items()})
        heaps = dict(DEFAULT_HEAPS)
        heaps.update({k: str(v) for k, v in data.get("heaps", {}).items()})
        for name in ports:
            if _env_key("port", name) in env:
                ports[name] = int(env[_env_key("port", name)])
        for name in heaps:
            if _env_key("heap", name) in env:
                heaps[name] = env[_env_key("heap", name)]
        return cls(
            cache_dir=cache_dir.resolve(), run_dir=run_dir.resolve(), ports=ports, heaps=heaps
        )

    def port(self, name: str) -> int:
        return self.ports[name]

    def heap(self, name: str) -> str:
        return self.heaps[name]

    @property
    def bin_dir(self) -> Path:
        return self.cache_dir / "bin"

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    def data_dir(self, component: str) -> Path:
        return self.run_dir / "data" / component

    def log_path(self, process: str) -> Path:
        return self.log_dir / f"{process}.log"

    def pid_path(self, process: str) -> Path:
        return self.run_dir / "pids" / f"{process}.pid"
