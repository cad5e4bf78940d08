"""Shared pytest wiring: markers by folder, and the real stack for integration tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_FOLDER_MARKERS = {"unit": "unit", "integration": "integration", "flink": "flink"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        if folder in _FOLDER_MARKERS:
            item.add_marker(_FOLDER_MARKERS[folder])
        if folder == "flink":
            item.add_marker("integration")


class _StackHandle:
    """Starts components on first request and, under CI, stops what it started at the end."""

    def __init__(self) -> None:
        from retail_backbone.stack import Stack, StackConfig

        self.cfg = StackConfig.load()
        self.stack = Stack(self.cfg, progress=lambda line: print(f"[stack] {line}", flush=True))
        self.started: set[str] = set()
        self.failed: dict[str, str] = {}

    def require(self, *names: str):
        """Bring up ``names`` (and their dependencies); fail the test with the stack's one-liner."""
        from retail_backbone.stack.components.base import StackError

        for name in names:
            if name in self.failed:
                pytest.fail(self.failed[name])
        before = {s.name for s in self.stack.status() if s.state == "healthy"}
        try:
            self.stack.up(list(names))
        except StackError as exc:
            self.failed[exc.component] = str(exc)
            pytest.fail(str(exc))
        self.started |= {c.name for c in self.stack.select(names)} - before
        return self.cfg

    def stop_started(self) -> None:
        if self.started:
            self.stack.down(sorted(self.started))


@pytest.fixture(scope="session")
def stack():
    """The real local stack. ``stack.require("kafka")`` returns the StackConfig once it is up.

    Components this session started are stopped at the end when ``CI`` is set, or when
    ``BACKBONE_TEST_STOP_STACK=1``; otherwise they stay up to make the next run fast.
    """
    handle = _StackHandle()
    yield handle
    if os.environ.get("CI") or os.environ.get("BACKBONE_TEST_STOP_STACK") == "1":
        handle.stop_started()
