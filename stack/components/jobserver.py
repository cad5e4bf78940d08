"""Beam Flink job server: the portable-runner endpoint that submits pipelines to the Flink cluster.

Maven Central serves no shaded ``beam-runners-flink-<minor>-job-server`` jar here, so the server is
assembled from ``beam-runners-flink-<minor>`` and its runtime dependencies, merged into one jar
(see ``build_server_jar``) and started through ``FlinkJobServerDriver``. Beam's Java KafkaIO is on
its classpath, and a standalone expansion service from the same jar (see ``_EXPANSION_OPTIONS``)
lets Python pipelines expand ``ReadFromKafka``/``WriteToKafka`` into steps that run on the Flink
cluster without Docker.

A second jar built from the merged one (see ``build_flink_lib_jar``) goes into the Flink cluster's
own class path, so that the TaskManager and JobManager load Beam once instead of once per job.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from retail_backbone.stack.components.base import Component, NotReady, Progress, StackError
from retail_backbone.stack.components.obtain import is_complete, mark_complete, maven_artifacts
from retail_backbone.stack.config import BEAM_VERSION, FLINK_MINOR, StackConfig
from retail_backbone.stack.process import ProcessSpec

_DRIVER = "org.apache.beam.runners.flink.FlinkJobServerDriver"
_EXPANSION_SERVICE = "org.apache.beam.sdk.expansion.service.ExpansionService"

# The expansion port is served by a standalone expansion service from the same jar, not by the job
# server's built-in one: FlinkJobServerDriver builds that with `new ExpansionService()`, which takes
# no options. Expanded by it, KafkaIO becomes a splittable-DoFn read, which on the portable Flink
# runner in streaming mode reads (and commits) but never hands a record downstream, and its Java
# steps get a DOCKER environment (there is no Docker here). The options fix both:
#   use_deprecated_read: KafkaIO expands to the Read(UnboundedSource) primitive, which the Flink
#     runner executes natively (max_num_records reads already took that path);
#   defaultEnvironmentType=EMBEDDED: the remaining Java steps run in a Java SDK harness inside the
#     TaskManager.
_EXPANSION_OPTIONS = ["--experiments=use_deprecated_read", "--defaultEnvironmentType=EMBEDDED"]

# KafkaIO is fetched without its transitive dependencies: its POM names Confluent's schema-registry
# artifacts, which live on packages.confluent.io (unreachable here), and Maven then fails the whole
# resolution. Listed instead are the jars KafkaIO needs that beam-runners-flink does not already
# bring: the Kafka client, its zstd codec, Beam's Avro extension with Avro, Spring's expression
# language (KafkaIO bridges Kafka client versions with it) and an SLF4J binding, without which the
# job server logs nothing at all. jamm is the Java SDK harness's memory meter, a "provided"
# dependency of beam-sdks-java-harness: without it the in-process (EMBEDDED environment) harness
# that runs expanded Java transforms such as KafkaIO inside the Flink task manager fails to start.
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
    "com.github.jbellis:jamm:0.4.0",
]

# slf4j-simple: timestamps, and no multi-thousand-line metrics dump after every job.
_LOGGING = [
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd HH:mm:ss,SSS",
    "-Dorg.slf4j.simpleLogger.log.org.apache.beam.runners.flink.FlinkPipelineRunner=warn",
]

_SIGNATURE_SUFFIXES = (".SF", ".DSA", ".RSA", ".EC")


def build_server_jar(jars: list[Path], target: Path) -> None:
    """Merge ``jars`` into one runnable jar at ``target``, like the release's shaded job-server jar.

    Why: the job server stages every file on its classpath to Flink with each job, and Flink's
    REST endpoint hands them to its blob server one round trip per file. With ~170 separate jars
    that took ~13 s per submission here; one jar takes ~1.5 s.

    Rules: the first jar holding an entry wins (classpath order); ``META-INF/services`` files are
    concatenated so every ServiceLoader registrar (Beam's file systems, options, transforms)
    survives; signatures, manifests and ``module-info`` are dropped; ``META-INF/versions`` entries
    are kept only from multi-release jars, and the result is multi-release.
    """
    seen: set[str] = set()
    services: dict[str, list[str]] = {}
    tmp = target.with_name(target.name + ".part")
    manifest = (
        "Manifest-Version: 1.0\r\n"
        "Created-By: retail-backbone stack\r\n"
        f"Main-Class: {_DRIVER}\r\n"
        "Multi-Release: true\r\n\r\n"
    )
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out:
        out.writestr("META-INF/MANIFEST.MF", manifest)
        for jar in jars:
            with zipfile.ZipFile(jar) as src:
                multi_release = _is_multi_release(src)
                for info in src.infolist():
                    name = info.filename
                    upper = name.upper()
                    if (
                        info.is_dir()
                        or name in seen
                        or name.endswith("module-info.class")
                        or upper in ("META-INF/MANIFEST.MF", "META-INF/INDEX.LIST")
                        or (upper.startswith("META-INF/") and upper.endswith(_SIGNATURE_SUFFIXES))
                        or (name.startswith("META-INF/versions/") and not multi_release)
                    ):
                        continue
                    if name.startswith("META-INF/services/"):
                        lines = services.setdefault(name, [])
                        for line in src.read(info).decode("utf-8", "replace").splitlines():
                            line = line.split("#", 1)[0].strip()
                            if line and line not in lines:
                                lines.append(line)
                        continue
                    seen.add(name)
                    out.writestr(info, src.read(info), zipfile.ZIP_DEFLATED, 1)
        for name, lines in services.items():
            out.writestr(name, "\n".join(lines) + "\n")
    os.replace(tmp, target)


# What the Flink lib jar leaves out besides the entries Flink's lib/ already holds: Flink itself
# (the merged jar carries Flink 1.19.0's client and runtime classes), SLF4J (Flink binds it to Log4j
# 2; the merged jar carries slf4j-simple's binding) and logging configurations.
_FLINK_LIB_SKIP_PREFIXES = ("org/apache/flink/", "org/slf4j/")
_FLINK_LIB_SKIP_FILES = frozenset(
    {
        "log4j.properties",
        "log4j2.xml",
        "log4j2.properties",
        "logback.xml",
        "simplelogger.properties",
    }
)


def build_flink_lib_jar(server_jar: Path, target: Path, provided: list[Path]) -> None:
    """Copy the merged job-server jar to ``target`` without what Flink's ``provided`` jars hold.

    Why: the job server ships its jar with every job, and Flink loads a job's classes in a class
    loader of that job. The EMBEDDED Java SDK harness that runs expanded Java steps (KafkaIO) in
    the TaskManager leaves a thread running after the job (``FnHarness`` ends its executor with
    ``shutdown()``, and ``FinalizeBundleHandler``'s clean-up loop never returns), and that thread
    kept each job's class loader, ~50 MB of metaspace, until the TaskManager died of it. With this
    jar on the cluster's class path and ``classloader.resolve-order: parent-first`` (see the flink
    component), Beam, KafkaIO and their dependencies are loaded once, by the system class loader.

    Rules: entries under ``_FLINK_LIB_SKIP_PREFIXES``, logging configurations and every entry a
    ``provided`` jar holds (Flink's copies of commons-*, Kryo, Snappy, ... win; also under
    ``META-INF/versions/<n>/``) are left out; ``META-INF/services`` files keep only providers whose
    class is in the result, and those of Flink's own interfaces are dropped.
    """
    provided_names: set[str] = set()
    for jar in provided:
        with zipfile.ZipFile(jar) as src:
            provided_names.update(src.namelist())

    def wanted(name: str) -> bool:
        parts = name.split("/", 3)
        base = parts[3] if name.startswith("META-INF/versions/") and len(parts) == 4 else name
        if name.startswith("META-INF/services/"):
            return not name.startswith("META-INF/services/org.apache.flink.")
        return not (
            base.startswith(_FLINK_LIB_SKIP_PREFIXES)
            or base in _FLINK_LIB_SKIP_FILES
            or base in provided_names
            or name in provided_names
            or name.upper() == "META-INF/MANIFEST.MF"
        )

    manifest = (
        "Manifest-Version: 1.0\r\nCreated-By: retail-backbone stack\r\nMulti-Release: true\r\n\r\n"
    )
    tmp = target.with_name(target.name + ".part")
    with (
        zipfile.ZipFile(server_jar) as src,
        zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out,
    ):
        infos = [i for i in src.infolist() if not i.is_dir() and wanted(i.filename)]
        kept = {i.filename for i in infos}
        out.writestr("META-INF/MANIFEST.MF", manifest)
        for info in infos:
            if info.filename.startswith("META-INF/services/"):
                lines = src.read(info).decode("utf-8", "replace").splitlines()
                providers = [line for line in lines if line.replace(".", "/") + ".class" in kept]
                if providers:
                    out.writestr(info.filename, "\n".join(providers) + "\n")
                continue
            out.writestr(info, src.read(info), zipfile.ZIP_DEFLATED, 1)
    os.replace(tmp, target)


def _is_multi_release(jar: zipfile.ZipFile) -> bool:
    try:
        manifest = jar.read("META-INF/MANIFEST.MF").decode("utf-8", "replace")
    except KeyError:
        return False
    return any(line.strip().lower() == "multi-release: true" for line in manifest.splitlines())


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

    def server_jar(self, cfg: StackConfig) -> Path:
        return (
            self._home(cfg) / "server" / f"beam-flink-{FLINK_MINOR}-job-server-{BEAM_VERSION}.jar"
        )

    def flink_lib_jar(self, cfg: StackConfig) -> Path:
        """Beam for the Flink cluster's class path; built by ``obtain_flink_lib_jar``."""
        return self._home(cfg) / "flink-lib" / f"beam-flink-lib-{BEAM_VERSION}.jar"

    def obtain_flink_lib_jar(
        self, cfg: StackConfig, progress: Progress, flink_lib: list[Path]
    ) -> Path:
        """Obtain the server jar, then derive ``flink_lib_jar`` from it for Flink's ``flink_lib``.

        Called by the flink component's ``obtain``: the cluster needs the jar, not this server.
        """
        self.obtain(cfg, progress)
        server, target = self.server_jar(cfg), self.flink_lib_jar(cfg)
        stat = server.stat()
        what = f"{server.name} {stat.st_size} {stat.st_mtime_ns} without " + " ".join(
            sorted(jar.name for jar in flink_lib)
        )
        if is_complete(target.parent, what) and target.is_file():
            return target
        progress(f"{self.name}: deriving {target.name} (Beam for Flink's class path)")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            build_flink_lib_jar(server, target, flink_lib)
        except (OSError, zipfile.BadZipFile) as exc:
            raise StackError(self.name, f"building {target.name} failed: {exc}") from exc
        mark_complete(target.parent, what)
        return target

    def obtain(self, cfg: StackConfig, progress: Progress) -> None:
        log = cfg.log_path("jobserver-obtain")
        home = self._home(cfg)
        runner = maven_artifacts(
            self.name,
            home / "runner",
            [f"org.apache.beam:beam-runners-flink-{FLINK_MINOR}:{BEAM_VERSION}"],
            log,
            progress,
        )
        extras = maven_artifacts(
            self.name, home / "extras", _EXTRA_JARS, log, progress, transitive=False
        )
        jars = sorted(runner.glob("*.jar")) + sorted(extras.glob("*.jar"))
        what = " ".join(j.name for j in jars)
        server_dir = self.server_jar(cfg).parent
        if is_complete(server_dir, what) and self.server_jar(cfg).is_file():
            return
        progress(f"{self.name}: merging {len(jars)} jars into {self.server_jar(cfg).name}")
        server_dir.mkdir(parents=True, exist_ok=True)
        try:
            build_server_jar(jars, self.server_jar(cfg))
        except (OSError, zipfile.BadZipFile) as exc:
            raise StackError(self.name, f"merging the job-server jar failed: {exc}") from exc
        mark_complete(server_dir, what)

    def prepare(self, cfg: StackConfig) -> None:
        (cfg.data_dir(self.name) / "artifacts").mkdir(parents=True, exist_ok=True)
        # Flink loads Beam from its own class path, parent-first: a server jar rebuilt since the
        # cluster started would submit jobs that run on the cluster's older copy of Beam.
        server, lib = self.server_jar(cfg), self.flink_lib_jar(cfg)
        if not lib.is_file() or lib.stat().st_mtime_ns < server.stat().st_mtime_ns:
            raise StackError(
                self.name,
                f"{server.name} was rebuilt after the Flink cluster got its copy of Beam; "
                "restart flink first: backbone stack down --only flink && "
                "backbone stack up --only jobserver",
            )

    def processes(self, cfg: StackConfig) -> list[ProcessSpec]:
        return [
            ProcessSpec(
                name="jobserver",
                argv=[
                    "java",
                    f"-Xmx{cfg.heap('jobserver')}",
                    *_LOGGING,
                    "-cp",
                    str(self.server_jar(cfg)),
                    _DRIVER,
                    f"--flink-master={cfg.host}:{cfg.port('flink_rest')}",
                    f"--job-host={cfg.host}",
                    f"--job-port={cfg.port('jobserver')}",
                    f"--artifact-port={cfg.port('jobserver_artifact')}",
                    # The built-in expansion service gets a free port; see _EXPANSION_OPTIONS.
                    "--expansion-port=0",
                    f"--artifacts-dir={cfg.data_dir(self.name) / 'artifacts'}",
                ],
            ),
            ProcessSpec(
                name="jobserver-expansion",
                argv=[
                    "java",
                    "-Xmx256m",
                    *_LOGGING,
                    "-cp",
                    str(self.server_jar(cfg)),
                    _EXPANSION_SERVICE,
                    str(cfg.port("jobserver_expansion")),
                    *_EXPANSION_OPTIONS,
                ],
            ),
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
        expansion = f"{cfg.host}:{cfg.port('jobserver_expansion')}"
        with grpc.insecure_channel(expansion) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=3)
            except grpc.FutureTimeoutError as exc:
                raise NotReady(f"the expansion service on {expansion} does not answer") from exc
