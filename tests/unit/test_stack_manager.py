"""The stack manager against small real processes that are made to succeed or fail.

The components here are test doubles of the *service* (a Python HTTP server), not of the
manager: the manager really spawns, health-checks, restarts and stops them.
"""

from __future__ import annotations

import socket
import sys
import urllib.request
from pathlib import Path

import pytest

from retail_backbone.stack import Stack, StackConfig
from retail_backbone.stack.components.base import Component, NotReady, StackError
from retail_backbone.stack.process import ProcessSpec, read_pid


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HttpComponent(Component):
    """A real HTTP server process; ``argv_override`` makes it fail in chosen ways."""

    summary = "python -m http.server"
    start_timeout = 10.0

    def __init__(self, name: str, port_key: str, argv_override: list[str] | None = None):
        self.name = name
        self.port_keys = (port_key,)
        self.argv_override = argv_override
        self.obtained = 0

    def obtain(self, cfg, progress) -> None:
        self.obtained += 1

    def processes(self, cfg) -> list[ProcessSpec]:
        argv = self.argv_override or [
            sys.executable,
            "-m",
            "http.server",
            str(self.port(cfg)),
            "--bind",
            cfg.host,
        ]
        return [ProcessSpec(name=self.name, argv=argv, cwd=cfg.run_dir)]

    def check(self, cfg) -> None:
        try:
            with urllib.request.urlopen(f"http://{self.address(cfg)}/", timeout=1) as resp:
                if resp.status != 200:
                    raise NotReady(f"HTTP {resp.status}")
        except OSError as exc:
            raise NotReady(str(exc)) from exc


@pytest.fixture
def cfg(tmp_path: Path) -> StackConfig:
    return StackConfig(
        cache_dir=tmp_path / "cache",
        run_dir=tmp_path / "run",
        ports={"web": _free_port(), "other": _free_port()},
        heaps={},
    )


def test_up_status_down_round_trip(cfg):
    comp = HttpComponent("web", "web")
    stack = Stack(cfg, [comp])
    try:
        (status,) = stack.up()
        assert status.state == "healthy" and status.port == cfg.port("web")
        pid = status.pids[0]
        assert read_pid(cfg.pid_path("web")) == pid
        assert Path(status.log) == cfg.log_path("web")
    finally:
        assert stack.down() == ["web"]
    (status,) = stack.status()
    assert status.state == "stopped" and status.pids == []


def test_up_twice_is_harmless(cfg):
    comp = HttpComponent("web", "web")
    stack = Stack(cfg, [comp])
    try:
        first = stack.up()[0].pids
        second = stack.up()[0].pids
        assert first == second  # the running, healthy process was left alone
        assert comp.obtained == 1
    finally:
        stack.down()


def test_stale_pid_file_is_repaired(cfg):
    comp = HttpComponent("web", "web")
    stack = Stack(cfg, [comp])
    pid_path = cfg.pid_path("web")
    pid_path.parent.mkdir(parents=True)
    pid_path.write_text("999999")  # a previous run that died without cleaning up
    try:
        (status,) = stack.up()
        assert status.state == "healthy" and status.pids != [999999]
    finally:
        stack.down()


def test_process_that_dies_during_start_is_reported_in_one_line(cfg):
    comp = HttpComponent(
        "web",
        "web",
        argv_override=[sys.executable, "-c", "import sys; print('boom: no config'); sys.exit(3)"],
    )
    stack = Stack(cfg, [comp])
    with pytest.raises(StackError) as err:
        stack.up()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("web: process web exited during start")
    assert "boom: no config" in message
    assert str(cfg.log_path("web")) in message
    assert stack.status()[0].state == "stopped"


def test_port_in_use_is_reported_and_nothing_is_started(cfg):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", cfg.port("web")))
        squatter.listen()
        stack = Stack(cfg, [HttpComponent("web", "web")])
        with pytest.raises(StackError, match=rf"web: port {cfg.port('web')} is already in use"):
            stack.up()
        assert read_pid(cfg.pid_path("web")) is None


def test_unhealthy_component_times_out_and_is_stopped(cfg):
    # Alive but never answering on its port.
    comp = HttpComponent(
        "web", "web", argv_override=[sys.executable, "-c", "import time; time.sleep(60)"]
    )
    comp.start_timeout = 2.0
    stack = Stack(cfg, [comp])
    with pytest.raises(StackError, match="web: not healthy after 2s"):
        stack.up()
    assert read_pid(cfg.pid_path("web")) is None


def test_dependencies_start_first_and_unknown_names_are_rejected(cfg):
    base = HttpComponent("base", "web")
    top = HttpComponent("top", "other")
    top.depends_on = ("base",)
    stack = Stack(cfg, [base, top])
    assert [c.name for c in stack.select(["top"])] == ["base", "top"]
    with pytest.raises(ValueError, match="unknown component"):
        stack.select(["nope"])


def test_failed_download_is_one_line_with_log(cfg, tmp_path):
    from retail_backbone.stack.components.obtain import maven_artifacts

    with pytest.raises(StackError) as err:
        maven_artifacts(
            "kafka",
            tmp_path / "m2",
            ["org.example.nonexistent:nothing:0.0.0"],
            tmp_path / "obtain.log",
            progress=lambda _: None,
        )
    assert "download failed" in str(err.value) and "obtain.log" in str(err.value)
    assert not (tmp_path / "m2" / ".complete").exists()


class TwoProcessComponent(HttpComponent):
    """A server plus a worker that ``up`` may restart alone (like a Flink TaskManager)."""

    restartable_alone = ("web-worker",)

    def processes(self, cfg) -> list[ProcessSpec]:
        worker = ProcessSpec(
            name="web-worker",
            argv=[sys.executable, "-c", "import time; time.sleep(600)"],
            cwd=cfg.run_dir,
        )
        return [*super().processes(cfg), worker]


def test_a_dead_worker_is_restarted_alone(cfg):
    import os
    import signal

    stack = Stack(cfg, [TwoProcessComponent("web", "web")])
    try:
        server, worker = stack.up()[0].pids
        os.kill(worker, signal.SIGKILL)
        os.waitpid(worker, 0)
        assert read_pid(cfg.pid_path("web-worker")) is None
        (status,) = stack.up()
        assert status.state == "healthy"
        assert status.pids[0] == server  # the server (and what it holds) kept running
        assert status.pids[1] != worker
    finally:
        stack.down()


def test_a_dead_server_restarts_the_whole_component(cfg):
    import os
    import signal

    stack = Stack(cfg, [TwoProcessComponent("web", "web")])
    try:
        server, worker = stack.up()[0].pids
        os.kill(server, signal.SIGKILL)
        os.waitpid(server, 0)
        (status,) = stack.up()
        assert status.state == "healthy"
        assert server not in status.pids and worker not in status.pids
    finally:
        stack.down()
