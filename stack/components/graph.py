"""Neo4j 5 Community, embedded behind Bolt by our own small launcher, from Maven Central."""

from __future__ import annotations

import subprocess
from pathlib import Path

from retail_backbone.stack.components.base import Component, NotReady, Progress, StackError
from retail_backbone.stack.components.obtain import maven_artifacts
from retail_backbone.stack.config import NEO4J_VERSION, StackConfig
from retail_backbone.stack.process import ProcessSpec

# Shipped as package data of ``retail_backbone.stack`` (see setup.py).
_LAUNCHER = Path(__file__).parent.parent / "java" / "Neo4jLauncher.java"


class Neo4jGraph(Component):
    name = "graph"
    summary = (
        f"Neo4j {NEO4J_VERSION} Community (embedded, Bolt), org.neo4j:neo4j + neo4j-bolt "
        "from Maven Central"
    )
    port_keys = ("neo4j",)
    # First start creates the system and neo4j databases; a cold JVM on 2 cores needs a while.
    start_timeout = 120.0

    def _home(self, cfg: StackConfig) -> Path:
        return cfg.cache_dir / "neo4j" / NEO4J_VERSION

    def _classes(self, cfg: StackConfig) -> Path:
        return self._home(cfg) / "classes"

    def obtain(self, cfg: StackConfig, progress: Progress) -> None:
        libs = maven_artifacts(
            self.name,
            self._home(cfg),
            [f"org.neo4j:neo4j:{NEO4J_VERSION}", f"org.neo4j:neo4j-bolt:{NEO4J_VERSION}"],
            cfg.log_path("graph-obtain"),
            progress,
        )
        classes = self._classes(cfg)
        compiled = classes / "Neo4jLauncher.class"
        if compiled.is_file() and compiled.stat().st_mtime > _LAUNCHER.stat().st_mtime:
            return
        progress(f"{self.name}: compiling {_LAUNCHER.name}")
        classes.mkdir(parents=True, exist_ok=True)
        log_path = cfg.log_path("graph-obtain")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = ["javac", "-d", str(classes), "-cp", f"{libs}/*", str(_LAUNCHER)]
        try:
            result = subprocess.run(argv, capture_output=True, text=True, check=False)
        except FileNotFoundError as exc:
            raise StackError(self.name, "javac not found: install a JDK (17+) first") from exc
        with log_path.open("a") as log:
            log.write(f"\n$ {' '.join(argv)}\n{result.stdout}{result.stderr}")
        if result.returncode != 0:
            raise StackError(self.name, f"javac exited {result.returncode}", log_path)

    def prepare(self, cfg: StackConfig) -> None:
        cfg.data_dir(self.name).mkdir(parents=True, exist_ok=True)

    def processes(self, cfg: StackConfig) -> list[ProcessSpec]:
        libs = self._home(cfg) / "libs"
        return [
            ProcessSpec(
                name="graph",
                argv=[
                    "java",
                    f"-Xmx{cfg.heap('neo4j')}",
                    "-XX:+UseG1GC",
                    "-cp",
                    f"{libs}/*:{self._classes(cfg)}",
                    "Neo4jLauncher",
                    str(cfg.data_dir(self.name)),
                    str(self.port(cfg)),
                ],
            )
        ]

    def check(self, cfg: StackConfig) -> None:
        """Run ``RETURN 1`` over Bolt with the official driver."""
        from neo4j import GraphDatabase
        from neo4j.exceptions import DriverError, Neo4jError

        try:
            with (
                GraphDatabase.driver(
                    f"bolt://{self.address(cfg)}",
                    auth=None,
                    connection_timeout=3.0,
                    connection_acquisition_timeout=5.0,
                ) as driver,
                driver.session() as session,
            ):
                # An auto-commit query is not retried, so a starting server fails fast here and
                # the manager's poll loop does the waiting.
                record = session.run("RETURN 1 AS one").single()
        except (DriverError, Neo4jError, OSError) as exc:
            # The driver's messages span lines; the manager reports one line.
            raise NotReady(f"{type(exc).__name__}: {' '.join(str(exc).split())}") from exc
        if record is None or record["one"] != 1:
            raise NotReady(f"RETURN 1 answered {record!r}")
