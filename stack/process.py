"""Starting, finding and stopping the stack's background processes.

Each process runs in its own session (so a Ctrl-C in the terminal does not take it down), writes
stdout and stderr to one log file, and is remembered by a pid file. A pid file whose process is
gone, or belongs to another program since the pid was reused, counts as "not running".
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessSpec:
    """How to run one long-lived process of a component.

    Attributes:
        name: unique process name; also names its log and pid files.
        argv: the command line.
        env: extra environment variables.
        cwd: working directory.
        user: run as this user (PostgreSQL refuses to run as root).
    """

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    user: str | None = None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def read_pid(pid_path: Path) -> int | None:
    try:
        pid = int(pid_path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def start(spec: ProcessSpec, log_path: Path, pid_path: Path) -> int:
    """Start ``spec`` in the background; return its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(spec.env or {})
    argv = list(spec.argv)
    if spec.user and os.geteuid() == 0 and spec.user != "root":
        argv = ["runuser", "-u", spec.user, "--", *argv]
    with log_path.open("ab") as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=spec.cwd,
            env=env,
            start_new_session=True,
        )
    pid_path.write_text(str(proc.pid))
    return proc.pid


def stop(pid_path: Path, timeout: float = 20.0) -> bool:
    """Stop the process group behind ``pid_path`` (SIGTERM, then SIGKILL); True if it ran."""
    pid = read_pid(pid_path)
    if pid is None:
        pid_path.unlink(missing_ok=True)
        return False
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        _reap(pid)
        time.sleep(0.2)
    if pid_alive(pid):
        _signal_group(pid, signal.SIGKILL)
        time.sleep(0.5)
        _reap(pid)
    pid_path.unlink(missing_ok=True)
    return True


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _reap(pid: int) -> None:
    # Only our own children can be reaped; others are reaped by init.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def last_lines(path: Path, n: int = 3) -> str:
    """The last ``n`` non-empty lines of a log, for one-line error messages."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines()]
    except FileNotFoundError:
        return ""
    return " | ".join([ln for ln in lines if ln][-n:])
