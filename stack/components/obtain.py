"""Obtaining components from the package registries this machine reaches, with a cache.

Each helper writes a ``.complete`` marker holding what was obtained only after success, so an
interrupted download is repeated on the next ``stack up`` instead of being trusted half-done.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from retail_backbone.stack.components.base import Progress, StackError

_MARKER = ".complete"


def is_complete(target: Path, what: str) -> bool:
    marker = target / _MARKER
    return marker.is_file() and marker.read_text() == what


def mark_complete(target: Path, what: str) -> None:
    (target / _MARKER).write_text(what)


def _run(
    component: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None
) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"\n$ {' '.join(argv)}\n".encode())
        log.flush()
        try:
            result = subprocess.run(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                check=False,
            )
        except FileNotFoundError as exc:
            raise StackError(component, f"{argv[0]} not found: install it first") from exc
    if result.returncode != 0:
        raise StackError(
            component, f"download failed: {argv[0]} exited {result.returncode}", log_path
        )


def maven_artifacts(
    component: str,
    target: Path,
    coordinates: list[str],
    log_path: Path,
    progress: Progress,
    transitive: bool = True,
) -> Path:
    """Copy Maven artifacts (``group:artifact:version``) and runtime deps to ``target/libs``."""
    what = " ".join(coordinates) + f" transitive={transitive}"
    if is_complete(target, what):
        return target / "libs"
    progress(f"{component}: fetching {', '.join(coordinates)} from Maven Central")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    deps = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version>"
        + (
            ""
            if transitive
            else "<exclusions><exclusion><groupId>*</groupId>"
            "<artifactId>*</artifactId></exclusion></exclusions>"
        )
        + "</dependency>"
        for g, a, v in (c.split(":") for c in coordinates)
    )
    (target / "pom.xml").write_text(
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        f"<groupId>retail-backbone.stack</groupId><artifactId>{component}</artifactId>"
        f"<version>1</version><dependencies>{deps}</dependencies></project>"
    )
    _run(
        component,
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(target / "pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={target / 'libs'}",
        ],
        log_path,
    )
    mark_complete(target, what)
    return target / "libs"


def go_binary(
    component: str,
    module: str,
    version: str,
    binary: str,
    target: Path,
    log_path: Path,
    progress: Progress,
) -> Path:
    """``go install module@version`` into ``target``; returns the binary's path."""
    what = f"{module}@{version}"
    exe = target / binary
    if is_complete(target, what) and exe.is_file():
        return exe
    progress(f"{component}: building {what} with the Go toolchain (first time only)")
    target.mkdir(parents=True, exist_ok=True)
    _run(
        component,
        ["go", "install", what],
        log_path,
        env={"GOBIN": str(target), "GOFLAGS": "-mod=mod"},
    )
    mark_complete(target, what)
    return exe


def pip_target(
    component: str, requirements: list[str], target: Path, log_path: Path, progress: Progress
) -> Path:
    """``pip install --no-deps --target`` into a private folder, never the project's env."""
    what = " ".join(requirements)
    if is_complete(target, what):
        return target
    progress(f"{component}: installing {what} from PyPI into its own folder")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    _run(
        component,
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--target",
            str(target),
            *requirements,
        ],
        log_path,
    )
    mark_complete(target, what)
    return target


def apt_packages(component: str, packages: list[str], log_path: Path, progress: Progress) -> None:
    """Install Debian packages (needs root); a no-op when they are already installed."""
    missing = [
        p
        for p in packages
        if subprocess.run(["dpkg", "-s", p], capture_output=True, check=False).returncode != 0
    ]
    if not missing:
        return
    if os.geteuid() != 0:
        raise StackError(
            component, f"missing Debian packages; run: sudo apt-get install -y {' '.join(missing)}"
        )
    progress(f"{component}: installing {' '.join(missing)} with apt-get")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    _run(component, ["apt-get", "update", "-q"], log_path, env)
    _run(component, ["apt-get", "install", "-y", "-q", *missing], log_path, env)


def go_launcher(
    component: str,
    source_dir: Path,
    requires: list[str],
    binary: str,
    target: Path,
    log_path: Path,
    progress: Progress,
) -> Path:
    """Build one of our own small Go launchers (``stack/go/<name>``) against pinned modules."""
    sources = sorted(source_dir.glob("*.go"))
    what = " ".join(requires) + " " + " ".join(f"{p.name}:{p.stat().st_size}" for p in sources)
    exe = target / binary
    if is_complete(target, what) and exe.is_file():
        return exe
    progress(f"{component}: building its launcher against {', '.join(requires)} (first time only)")
    if target.exists():
        shutil.rmtree(target)
    src = target / "src"
    src.mkdir(parents=True)
    for path in sources:
        shutil.copy(path, src / path.name)
    env = {"GOFLAGS": "-mod=mod"}
    _run(
        component, ["go", "-C", str(src), "mod", "init", f"backbone.local/{binary}"], log_path, env
    )
    for req in requires:
        _run(component, ["go", "-C", str(src), "get", req], log_path, env)
    _run(component, ["go", "-C", str(src), "build", "-o", str(exe), "."], log_path, env)
    mark_complete(target, what)
    return exe
