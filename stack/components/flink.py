"""Apache Flink session cluster: one JobManager and one TaskManager, from the PyFlink packages.

PyPI serves the whole Flink distribution: the ``apache-flink`` wheel carries ``bin/`` and
``apache-flink-libraries`` carries ``lib/``, ``opt/`` and ``plugins/``. Installed together into a
private folder, ``<folder>/pyflink`` is a complete ``FLINK_HOME``. Both daemons run in the
foreground (``start-foreground`` execs the JVM), so the manager's pid files and logs apply.

Beam is part of the cluster's class path: ``obtain`` has the job-server component derive a Beam
jar for Flink (``FlinkJobServer.flink_lib_jar``), and both daemons start with ``FLINK_LIB_DIR``
pointing at a folder in the run directory that links Flink's ``lib/`` jars and that jar. With
``classloader.resolve-order: parent-first`` a Beam job's classes then come from there, loaded once,
instead of from the job's own copy of the job-server jar in a class loader per job (see
``_settings`` for why that matters).
"""

from __future__ import annotations

from pathlib import Path

from retail_backbone.stack.components.base import Component, NotReady, Progress, StackError
from retail_backbone.stack.components.jobserver import FlinkJobServer
from retail_backbone.stack.components.obtain import pip_target
from retail_backbone.stack.config import FLINK_VERSION, StackConfig
from retail_backbone.stack.process import ProcessSpec

# Console-only logging: the manager already sends stdout to one log file per process, so a second
# rolling file per daemon under FLINK_LOG_DIR would only duplicate it.
_LOG4J_CONSOLE = """\
monitorInterval = 30
rootLogger.level = ${env:ROOT_LOG_LEVEL:-INFO}
rootLogger.appenderRef.console.ref = ConsoleAppender
logger.pekko.name = org.apache.pekko
logger.pekko.level = INFO
logger.netty.name = org.jboss.netty.channel.DefaultChannelPipeline
logger.netty.level = OFF
appender.console.name = ConsoleAppender
appender.console.type = CONSOLE
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yyyy-MM-dd HH:mm:ss,SSS} %-5p %-60c %x - %m%n
"""


class Flink(Component):
    name = "flink"
    summary = (
        f"Apache Flink {FLINK_VERSION} session cluster (1 JobManager + 1 TaskManager), "
        "apache-flink + apache-flink-libraries from PyPI"
    )
    port_keys = ("flink_rest", "flink_rpc")
    # Two JVMs on two cores; the TaskManager only registers once the JobManager is up.
    start_timeout = 120.0
    # A TaskManager that died (crash, OOM, kill) comes back alone: restarting the JobManager
    # too would lose every running job (no high availability here), and Flink's restart
    # strategy restores the jobs from their last checkpoint once the new TaskManager registers.
    restartable_alone = ("flink-taskmanager",)

    def _install_dir(self, cfg: StackConfig) -> Path:
        return cfg.cache_dir / "flink" / FLINK_VERSION

    def home(self, cfg: StackConfig) -> Path:
        """``FLINK_HOME``: bin scripts from the wheel, jars from the libraries package."""
        return self._install_dir(cfg) / "pyflink"

    def conf_dir(self, cfg: StackConfig) -> Path:
        return cfg.data_dir(self.name) / "conf"

    def lib_dir(self, cfg: StackConfig) -> Path:
        """``FLINK_LIB_DIR``: links to ``FLINK_HOME/lib``'s jars and Beam's jar for Flink."""
        return cfg.data_dir(self.name) / "lib"

    def _lib_jars(self, cfg: StackConfig) -> list[Path]:
        return sorted((self.home(cfg) / "lib").glob("*.jar"))

    def obtain(self, cfg: StackConfig, progress: Progress) -> None:
        pip_target(
            self.name,
            [f"apache-flink=={FLINK_VERSION}", f"apache-flink-libraries=={FLINK_VERSION}"],
            self._install_dir(cfg),
            cfg.log_path("flink-obtain"),
            progress,
        )
        home = self.home(cfg)
        missing = [
            str(p.relative_to(home))
            for p in (
                home / "bin" / "jobmanager.sh",
                home / "lib" / f"flink-dist-{FLINK_VERSION}.jar",
            )
            if not p.is_file()
        ]
        if missing:
            raise StackError(
                self.name,
                f"PyPI install lacks {', '.join(missing)}; "
                f"delete {self._install_dir(cfg)} and retry",
                cfg.log_path("flink-obtain"),
            )
        # Only the job server's jar, not its processes: `flink` does not depend on `jobserver`.
        FlinkJobServer().obtain_flink_lib_jar(cfg, progress, self._lib_jars(cfg))

    def _settings(self, cfg: StackConfig) -> dict[str, object]:
        import yaml

        data = cfg.data_dir(self.name)
        host = cfg.host
        # The distribution's defaults carry the --add-opens/--add-exports Flink needs on Java 17.
        with (self.home(cfg) / "conf" / "config.yaml").open() as fh:
            java_opts = yaml.safe_load(fh)["env"]["java"]["opts"]["all"]
        return {
            "env.java.opts.all": java_opts,
            "jobmanager.rpc.address": host,
            "jobmanager.rpc.port": cfg.port("flink_rpc"),
            "jobmanager.bind-host": host,
            "taskmanager.bind-host": host,
            "taskmanager.host": host,
            "rest.address": host,
            "rest.bind-address": host,
            "rest.port": cfg.port("flink_rest"),
            # Process sizes cap everything (heap, metaspace, direct and managed memory), keeping
            # the whole stack inside a few GiB.
            "jobmanager.memory.process.size": cfg.heap("flink_jobmanager"),
            "taskmanager.memory.process.size": cfg.heap("flink_taskmanager"),
            # A job's classes are loaded by a class loader of that job, child-first by default:
            # each Beam job loaded its own ~50-100 MB copy of Beam from the job-server jar it
            # ships. A Java-engine (KafkaIO) job never gave it back: the EMBEDDED Java SDK
            # harness leaves a FinalizeBundleHandler thread behind that keeps the job's class
            # loader reachable, and the TaskManager died of OutOfMemoryError: Metaspace after ~7
            # such jobs. Beam is now on the cluster's class path (see lib_dir), and parent-first
            # makes every class a job asks for come from there when it exists there: Beam,
            # KafkaIO and their dependencies are loaded once per process, shared by all jobs,
            # and a leftover harness thread no longer pins a per-job copy. Parent-first for all
            # classes, rather than additional parent-first patterns for org.apache.beam. and
            # org.apache.kafka., keeps Beam's own dependencies (Joda-Time, Avro, ByteBuddy,
            # gRPC...) from being loaded a second time next to the shared Beam classes (loader
            # constraint violations); the job jar holds nothing Beam uses that is not there.
            # What is left per Java-engine job is the parked harness thread itself (a few KB).
            "classloader.resolve-order": "parent-first",
            # Flink (~40 MB) plus Beam loaded once (~100 MB with KafkaIO), with room for the
            # little a job still loads on its own. Managed memory (only Flink's batch sorter
            # uses it here) gives up the difference to the 256m default.
            "taskmanager.memory.jvm-metaspace.size": "384m",
            "taskmanager.memory.managed.fraction": 0.25,
            "taskmanager.numberOfTaskSlots": 2,
            "parallelism.default": 1,
            "jobmanager.execution.failover-strategy": "region",
            "state.checkpoints.dir": (data / "checkpoints").as_uri(),
            "state.savepoints.dir": (data / "savepoints").as_uri(),
            "io.tmp.dirs": str(data / "tmp"),
            # Every Beam job ships the ~180 MB job-server jar; the TaskManager's cached copy of a
            # finished job's jar goes after this many seconds instead of the default hour.
            "blob.service.cleanup.interval": 60,
            "web.tmpdir": str(data / "tmp" / "web"),
        }

    def prepare(self, cfg: StackConfig) -> None:
        import yaml

        data = cfg.data_dir(self.name)
        for sub in ("checkpoints", "savepoints", "tmp"):
            (data / sub).mkdir(parents=True, exist_ok=True)
        conf = self.conf_dir(cfg)
        conf.mkdir(parents=True, exist_ok=True)
        # Flat keys are valid in Flink 1.19's standard YAML config.yaml; regenerated on every start
        # so that changed ports or heaps take effect.
        (conf / "config.yaml").write_text(
            yaml.safe_dump(self._settings(cfg), sort_keys=False, width=10_000)
        )
        (conf / "log4j-console.properties").write_text(_LOG4J_CONSOLE)
        # bin/config.sh puts every *.jar in FLINK_LIB_DIR on the class path (flink-dist last).
        lib = self.lib_dir(cfg)
        lib.mkdir(parents=True, exist_ok=True)
        for old in lib.iterdir():
            old.unlink()
        for jar in (*self._lib_jars(cfg), FlinkJobServer().flink_lib_jar(cfg)):
            (lib / jar.name).symlink_to(jar)

    def _env(self, cfg: StackConfig) -> dict[str, str]:
        return {
            "FLINK_CONF_DIR": str(self.conf_dir(cfg)),
            "FLINK_LIB_DIR": str(self.lib_dir(cfg)),
            "FLINK_LOG_DIR": str(cfg.log_dir / "flink"),
            "FLINK_PID_DIR": str(cfg.run_dir / "pids" / "flink"),
            # Names Flink's own pid file; $USER may be unset when started from a service.
            "FLINK_IDENT_STRING": "backbone",
        }

    def processes(self, cfg: StackConfig) -> list[ProcessSpec]:
        bin_dir = self.home(cfg) / "bin"
        env = self._env(cfg)
        return [
            ProcessSpec(
                name="flink-jobmanager",
                argv=[str(bin_dir / "jobmanager.sh"), "start-foreground"],
                env=env,
            ),
            ProcessSpec(
                name="flink-taskmanager",
                argv=[str(bin_dir / "taskmanager.sh"), "start-foreground"],
                env=env,
            ),
        ]

    def check(self, cfg: StackConfig) -> None:
        """Ask the REST API for the cluster overview; healthy once a TaskManager has registered."""
        import requests

        url = f"http://{cfg.host}:{cfg.port('flink_rest')}/overview"
        try:
            resp = requests.get(url, timeout=3)
            resp.raise_for_status()
            overview = resp.json()
        except (requests.RequestException, ValueError) as exc:
            raise NotReady(f"GET {url}: {exc}") from exc
        version = overview.get("flink-version")
        if version != FLINK_VERSION:
            raise NotReady(f"{url} answers with Flink {version}, expected {FLINK_VERSION}")
        if overview.get("taskmanagers", 0) < 1:
            raise NotReady("no TaskManager has registered with the JobManager yet")
