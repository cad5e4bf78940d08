import zipfile

from retail_backbone.stack.components.jobserver import build_flink_lib_jar


def _jar(path, entries: dict[str, str], manifest: str = "Manifest-Version: 1.0\n"):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("META-INF/MANIFEST.MF", manifest)
        for name, text in entries.items():
            zf.writestr(name, text)
    return path


def test_lib_jar_leaves_out_flink_slf4j_logging_config_and_what_flink_lib_holds(tmp_path):
    server = _jar(
        tmp_path / "server.jar",
        {
            "org/apache/beam/Runner.class": "beam",
            "org/apache/kafka/Consumer.class": "kafka",
            "org/apache/flink/api/Job.class": "flink 1.19.0",
            "org/apache/flink/OnlyHere.class": "flink, not in lib",
            "org/slf4j/impl/StaticLoggerBinder.class": "slf4j-simple",
            "org/slf4j/Logger.class": "slf4j-api",
            "org/apache/commons/lang3/StringUtils.class": "lang3 3.14",
            "org/apache/commons/compress/Only.class": "compress",
            "META-INF/versions/11/org/apache/commons/lang3/StringUtils.class": "lang3 on 11",
            "META-INF/versions/11/org/apache/beam/Runner.class": "beam on 11",
            "log4j.properties": "stray config",
            "org/joda/time/tz/data/UTC": "resource",
            "META-INF/services/org.apache.beam.Registrar": "org.apache.beam.Runner\n",
            "META-INF/services/org.apache.flink.core.Factory": "org.apache.flink.api.Job\n",
            "META-INF/services/reactor.Integration": (
                "org.apache.flink.shaded.Hidden\norg.apache.kafka.Consumer\n"
            ),
            "META-INF/services/only.Flink": "org.apache.flink.api.Job\n",
        },
        manifest="Manifest-Version: 1.0\nMain-Class: x\nMulti-Release: true\n",
    )
    flink_dist = _jar(
        tmp_path / "flink-dist.jar",
        {
            "org/apache/flink/api/Job.class": "flink 1.19.3",
            "org/apache/commons/lang3/StringUtils.class": "lang3 3.12",
        },
    )
    target = tmp_path / "lib.jar"

    build_flink_lib_jar(server, target, [flink_dist])

    with zipfile.ZipFile(target) as lib:
        names = set(lib.namelist())
        manifest = lib.read("META-INF/MANIFEST.MF").decode()
        services = {n: lib.read(n) for n in names if n.startswith("META-INF/services/")}
    assert names == {
        "META-INF/MANIFEST.MF",
        "org/apache/beam/Runner.class",
        "org/apache/kafka/Consumer.class",
        "org/apache/commons/compress/Only.class",
        "META-INF/versions/11/org/apache/beam/Runner.class",
        "org/joda/time/tz/data/UTC",
        "META-INF/services/org.apache.beam.Registrar",
        "META-INF/services/reactor.Integration",
    }
    assert services == {
        "META-INF/services/org.apache.beam.Registrar": b"org.apache.beam.Runner\n",
        "META-INF/services/reactor.Integration": b"org.apache.kafka.Consumer\n",
    }
    assert "Multi-Release: true" in manifest
    assert "Main-Class" not in manifest
    assert not (tmp_path / "lib.jar.part").exists()
