import zipfile

from retail_backbone.stack.components.jobserver import build_server_jar


def _jar(path, entries: dict[str, str], manifest: str = "Manifest-Version: 1.0\n"):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("META-INF/MANIFEST.MF", manifest)
        for name, text in entries.items():
            zf.writestr(name, text)
    return path


def test_merge_keeps_first_entry_and_every_service_registration(tmp_path):
    first = _jar(
        tmp_path / "a.jar",
        {
            "org/x/A.class": "from-a",
            "META-INF/services/org.x.Registrar": "org.x.One\n# comment\norg.x.Two\n",
            "META-INF/SIGNER.SF": "signature",
            "META-INF/versions/11/org/x/A.class": "ignored: a.jar is not multi-release",
            "module-info.class": "module",
        },
    )
    second = _jar(
        tmp_path / "b.jar",
        {
            "org/x/A.class": "from-b",
            "org/y/B.class": "b",
            "META-INF/services/org.x.Registrar": "org.x.Two\norg.y.Three\n",
            "META-INF/versions/11/org/y/B.class": "b11",
        },
        manifest="Manifest-Version: 1.0\nMulti-Release: true\n",
    )
    target = tmp_path / "server.jar"

    build_server_jar([first, second], target)

    with zipfile.ZipFile(target) as merged:
        names = set(merged.namelist())
        assert merged.read("org/x/A.class") == b"from-a"
        assert merged.read("org/y/B.class") == b"b"
        assert merged.read("META-INF/services/org.x.Registrar").decode().split() == [
            "org.x.One",
            "org.x.Two",
            "org.y.Three",
        ]
        assert merged.read("META-INF/versions/11/org/y/B.class") == b"b11"
        manifest = merged.read("META-INF/MANIFEST.MF").decode()
    assert "Main-Class: org.apache.beam.runners.flink.FlinkJobServerDriver" in manifest
    assert "Multi-Release: true" in manifest
    assert "META-INF/SIGNER.SF" not in names
    assert "META-INF/versions/11/org/x/A.class" not in names
    assert "module-info.class" not in names
    assert not (tmp_path / "server.jar.part").exists()
