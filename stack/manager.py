"""Bring the local stack up, down, and report on it.

Example::

    stack = Stack(StackConfig.load())
    stack.up(["kafka", "postgres"])      # obtains on first use, returns when both answer
    stack.status()                       # [ComponentStatus(name="kafka", state="healthy", ...)]
    stack.down()

``up`` is idempotent: a healthy component is left alone, a half-started one (process alive but not
answering, or a stale pid file) is stopped and started again. It never reports a half-working
stack as up: every failure raises ``StackError`` with one line naming the component, the cause
and its log.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from retail_backbone.stack import process
from retail_backbone.stack.components import ALL_COMPONENTS
from retail_backbone.stack.components.base import Component, NotReady, Progress, StackError
from retail_backbone.stack.config import StackConfig


@dataclass(frozen=True)
class ComponentStatus:
    """What ``stack status`` reports for one component."""

    name: str
    state: str  # healthy | unhealthy | stopped
    port: int
    pids: list[int]
    log: str
    summary: str
    detail: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _quiet(_: str) -> None:
    pass


class Stack:
    """The set of components, driven as one."""

    def __init__(
        self,
        cfg: StackConfig,
        components: Iterable[Component] | None = None,
        progress: Progress = _quiet,
    ) -> None:
        self.cfg = cfg
        self.components = {c.name: c for c in (components or [cls() for cls in ALL_COMPONENTS])}
        self.progress = progress

    # -- selection -----------------------------------------------------------------------------

    def select(self, only: Iterable[str] | None = None, with_deps: bool = True) -> list[Component]:
        """Components named in ``only`` (all when empty) plus dependencies, in start order."""
        names = list(only or self.components)
        unknown = [n for n in names if n not in self.components]
        if unknown:
            raise ValueError(
                f"unknown component(s): {', '.join(unknown)}; "
                f"choose from {', '.join(self.components)}"
            )
        ordered: list[str] = []

        def visit(name: str) -> None:
            if name in ordered:
                return
            if with_deps:
                for dep in self.components[name].depends_on:
                    visit(dep)
            ordered.append(name)

        for name in names:
            visit(name)
        return [self.components[n] for n in ordered]

    # -- operations ----------------------------------------------------------------------------

    def up(self, only: Iterable[str] | None = None) -> list[ComponentStatus]:
        selected = self.select(only)
        for comp in selected:
            self._up_one(comp)
        return [self._status_one(c) for c in selected]

    def down(self, only: Iterable[str] | None = None) -> list[str]:
        """Stop components (dependents first). Returns the names that were running."""
        stopped = []
        names = set(only or self.components)
        # Dependents first: reverse of start order, whatever order the names were given in.
        for comp in reversed([c for c in self.select(only) if c.name in names]):
            was_running = False
            for spec in reversed(comp.processes(self.cfg)):
                was_running |= process.stop(self.cfg.pid_path(spec.name))
            if was_running:
                stopped.append(comp.name)
        return stopped

    def status(self, only: Iterable[str] | None = None) -> list[ComponentStatus]:
        return [self._status_one(c) for c in self.select(only, with_deps=False)]

    # -- internals -----------------------------------------------------------------------------

    def _pids(self, comp: Component) -> list[int | None]:
        return [process.read_pid(self.cfg.pid_path(s.name)) for s in comp.processes(self.cfg)]

    def _status_one(self, comp: Component) -> ComponentStatus:
        pids = self._pids(comp)
        log = str(self.cfg.log_path(comp.processes(self.cfg)[0].name))
        running = [p for p in pids if p is not None]
        if not running:
            state, detail = "stopped", ""
        elif len(running) < len(pids):
            state, detail = "unhealthy", "some of its processes are not running"
        else:
            try:
                comp.check(self.cfg)
                state, detail = "healthy", ""
            except NotReady as exc:
                state, detail = "unhealthy", str(exc)
        return ComponentStatus(
            name=comp.name,
            state=state,
            port=comp.port(self.cfg),
            pids=running,
            log=log,
            summary=comp.summary,
            detail=detail,
        )

    def _up_one(self, comp: Component) -> None:
        cfg = self.cfg
        specs = comp.processes(cfg)
        pids = self._pids(comp)
        main_log = cfg.log_path(specs[0].name)
        if all(p is not None for p in pids):
            try:
                comp.check(cfg)
                self.progress(f"{comp.name}: already up on {comp.address(cfg)}")
                return
            except NotReady:
                pass
            # Running but not answering: maybe still starting; give it a short grace period.
            if self._wait_healthy(comp, timeout=min(comp.start_timeout, 15.0)) is None:
                self.progress(f"{comp.name}: already up on {comp.address(cfg)}")
                return
            self.progress(f"{comp.name}: running but not answering, restarting")
        dead = [s.name for s, p in zip(specs, pids, strict=True) if p is None]
        if dead and len(dead) < len(specs) and set(dead) <= set(comp.restartable_alone):
            # Only workers died: start them again and keep the rest (and its state) running.
            self.progress(f"{comp.name}: restarting {', '.join(dead)}")
            started = time.monotonic()
            for spec in specs:
                if spec.name in dead:
                    process.start(spec, cfg.log_path(spec.name), cfg.pid_path(spec.name))
            error = self._wait_healthy(comp, timeout=comp.start_timeout)
            if error is not None:
                raise error
            self.progress(f"{comp.name}: healthy after {time.monotonic() - started:.1f}s")
            return
        if any(p is not None for p in pids):
            for spec in reversed(specs):
                process.stop(cfg.pid_path(spec.name))
        comp.obtain(cfg, self.progress)
        for key in comp.port_keys:
            if process.port_open(cfg.host, cfg.port(key)):
                raise StackError(
                    comp.name,
                    f"port {cfg.port(key)} is already in use by another process; stop it or set "
                    f"BACKBONE_{key.upper()}_PORT",
                    main_log,
                )
        comp.prepare(cfg)
        self.progress(f"{comp.name}: starting on {comp.address(cfg)}")
        started = time.monotonic()
        for spec in specs:
            process.start(spec, cfg.log_path(spec.name), cfg.pid_path(spec.name))
        error = self._wait_healthy(comp, timeout=comp.start_timeout)
        if error is not None:
            for spec in reversed(specs):
                process.stop(cfg.pid_path(spec.name))
            raise error
        self.progress(f"{comp.name}: healthy after {time.monotonic() - started:.1f}s")

    def _wait_healthy(self, comp: Component, timeout: float) -> StackError | None:
        """Poll ``check`` until it passes (None), a process dies, or time runs out (the error)."""
        cfg = self.cfg
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            for spec in comp.processes(cfg):
                if process.read_pid(cfg.pid_path(spec.name)) is None:
                    log = cfg.log_path(spec.name)
                    tail = process.last_lines(log, 2)
                    return StackError(
                        comp.name,
                        f"process {spec.name} exited during start: {tail or 'no output'}",
                        log,
                    )
            try:
                comp.check(cfg)
                return None
            except NotReady as exc:
                last = str(exc)
            except Exception as exc:  # a client bug must not leave processes running
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                return StackError(
                    comp.name,
                    f"not healthy after {timeout:.0f}s: {last}",
                    cfg.log_path(comp.processes(cfg)[0].name),
                )
            time.sleep(0.5)
