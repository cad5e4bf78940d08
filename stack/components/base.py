"""The contract every stack component fulfils.

A component knows how to obtain itself from a package registry (once; cached), prepare its data
directory, describe the processes to run, and prove it is healthy with a real request through its
normal client. The manager (``retail_backbone.stack.manager``) does the rest: ordering, pid files,
logs, waiting and reporting.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from retail_backbone.stack.config import StackConfig
from retail_backbone.stack.process import ProcessSpec

Progress = Callable[[str], None]


class StackError(Exception):
    """A component could not be obtained, started or reached.

    Its ``str`` is one line naming the component, the cause and the log to read.
    """

    def __init__(self, component: str, cause: str, log_path: object | None = None) -> None:
        self.component = component
        self.cause = cause
        self.log_path = log_path
        where = f" (log: {log_path})" if log_path else ""
        super().__init__(f"{component}: {cause}{where}")


class NotReady(Exception):
    """Raised by ``Component.check`` while the component is not (yet) answering."""


class Component(ABC):
    """One real service of the local stack."""

    #: Short unique name used on the command line (``--only kafka,postgres``).
    name: str
    #: One line for ``status``: what it is and where it came from.
    summary: str
    #: Config port keys; the first is the one clients use.
    port_keys: Sequence[str]
    #: Components that must be up first.
    depends_on: Sequence[str] = ()
    #: Seconds to wait for the first healthy answer after start.
    start_timeout: float = 90.0
    #: Names of processes that ``up`` may restart alone when they died while the component's
    #: other processes still run (e.g. a Flink TaskManager beside a JobManager that holds the
    #: running jobs). Any other dead process restarts the whole component.
    restartable_alone: Sequence[str] = ()

    @abstractmethod
    def obtain(self, cfg: StackConfig, progress: Progress) -> None:
        """Download or build the component into the cache. Idempotent and cheap when cached."""

    def prepare(self, cfg: StackConfig) -> None:  # noqa: B027 - optional hook
        """Create or repair the data directory before start. Idempotent."""

    @abstractmethod
    def processes(self, cfg: StackConfig) -> list[ProcessSpec]:
        """The long-lived processes to run, in start order."""

    @abstractmethod
    def check(self, cfg: StackConfig) -> None:
        """Make one real request through the component's normal client.

        Raises:
            NotReady: with the reason, while the component does not answer correctly.
        """

    def port(self, cfg: StackConfig) -> int:
        return cfg.port(self.port_keys[0])

    def address(self, cfg: StackConfig) -> str:
        return f"{cfg.host}:{self.port(cfg)}"
