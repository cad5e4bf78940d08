"""Flink operations for streaming jobs: start without blocking, savepoints, restore, cancel.

A streaming job on the stack's Flink session cluster is submitted through the Beam job server;
the Flink side (its job id, checkpoints, savepoints, cancellation) is driven through Flink's REST
API on the ``flink_rest`` port.

Example::

    cfg = StackConfig.load()
    job = start_job(get_pipeline("inventory"), [*flink_args, "--mode=streaming", ...], cfg)
    flink = FlinkRest.from_config(cfg)
    flink.wait_for_checkpoint(job.job_id, timeout=120)
    savepoint = flink.stop_with_savepoint(job.job_id)          # file:///.../savepoint-...
    job.wait_until_stopped()
    again = start_job(spec, [..., f"--savepoint_path={savepoint}"], cfg)
    flink.restored_from(again.job_id)                           # == savepoint
    flink.cancel(again.job_id)

Semantics (Flink 1.19): ``stop_with_savepoint(drain=False)`` takes a savepoint and stops the
sources; a job started from it continues with the same state and Kafka offsets, as if it had never
stopped. ``drain=True`` also sends the maximum watermark before stopping, which fires every window
and event-time timer: the sinks receive final results, so use it to end a job for good (or at a
point where no window is still open). A job started from a drained savepoint judges the events it
reads against state that already saw the end of time: windows are closed and the late-data check
has moved on, so restarting from it is not the same as never having stopped.

Savepoint compatibility: Beam's Flink runner gives every Flink operator the unique name of its
Beam transform (step label path) as uid, and Flink maps savepoint state to operators by uid. The
labels of the registered pipelines are fixed strings, unique per pipeline, and do not depend on
run parameters (see tests/unit/test_flink_ops.py), so a savepoint of one run restores into the next
run of the same code. Renaming or removing a stateful step breaks that mapping; Flink then refuses
the restore unless ``--allow_non_restored_state`` is given (the state of that step is dropped).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from retail_backbone.pipelines.registry import PipelineSpec
from retail_backbone.stack.config import StackConfig

__all__ = [
    "TERMINAL_STATES",
    "FlinkJob",
    "FlinkOpsError",
    "FlinkRest",
    "RunningJob",
    "override_args",
    "start_job",
]

#: Flink job states after which a job does nothing more.
TERMINAL_STATES = frozenset({"FINISHED", "CANCELED", "FAILED"})


class FlinkOpsError(RuntimeError):
    """A Flink REST call failed, or a job did not reach the expected state in time."""


def override_args(args: Sequence[str], **values: object) -> list[str]:
    """``args`` with ``--name=value`` for each of ``values``, replacing earlier ``--name``s.

    Beam rejects an option given twice when it is one the job server describes (e.g. a
    profile's ``--checkpointing_interval`` and a test's own).
    """
    names = set(values)
    kept = [a for a in args if a[2:].split("=", 1)[0] not in names or not a.startswith("--")]
    return [*kept, *(f"--{name}={value}" for name, value in values.items())]


@dataclass(frozen=True)
class FlinkJob:
    """One row of ``GET /jobs/overview``."""

    job_id: str
    name: str
    state: str
    start_time: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "name": self.name,
            "state": self.state,
            "start_time": self.start_time,
        }


def _poll(
    what: str,
    probe: Callable[[], Any],
    timeout: float,
    interval: float = 0.5,
    describe: Callable[[], str] | None = None,
) -> Any:
    """Call ``probe`` until it returns something truthy; ``FlinkOpsError`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f": {describe()}" if describe else ""
            raise FlinkOpsError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


class FlinkRest:
    """The few calls of Flink's REST API (v1) that operating a streaming job needs."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    @classmethod
    def from_config(cls, cfg: StackConfig) -> FlinkRest:
        return cls(f"http://{cfg.host}:{cfg.port('flink_rest')}")

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        import requests

        url = f"{self.base_url}{path}"
        try:
            resp = requests.request(method, url, json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            raise FlinkOpsError(f"{method} {url}: {exc}") from exc
        if resp.status_code >= 400:
            raise FlinkOpsError(f"{method} {url}: HTTP {resp.status_code} {resp.text[:500]}")
        return resp.json() if resp.content else {}

    # -- jobs ----------------------------------------------------------------------------------

    def jobs(self) -> list[FlinkJob]:
        """Every job the cluster knows, newest first."""
        rows = self._call("GET", "/jobs/overview").get("jobs", [])
        jobs = [
            FlinkJob(
                job_id=r["jid"],
                name=r.get("name", ""),
                state=r.get("state", ""),
                start_time=int(r.get("start-time", 0)),
            )
            for r in rows
        ]
        return sorted(jobs, key=lambda j: j.start_time, reverse=True)

    def state(self, job_id: str) -> str:
        return self._call("GET", f"/jobs/{job_id}")["state"]

    def wait_for_job(self, name: str, timeout: float = 120.0, exclude: Iterable[str] = ()) -> str:
        """The id of the job called ``name`` once it exists (any state but the ``exclude`` ids)."""
        skip = set(exclude)

        def probe() -> str | None:
            for job in self.jobs():
                if job.name == name and job.job_id not in skip:
                    return job.job_id
            return None

        return _poll(
            f"a Flink job named {name!r}",
            probe,
            timeout,
            describe=lambda: f"jobs: {[(j.name, j.state) for j in self.jobs()]}",
        )

    def wait_state(
        self, job_id: str, states: Iterable[str], timeout: float = 120.0, interval: float = 0.5
    ) -> str:
        """Wait until job ``job_id`` is in one of ``states``; returns that state.

        Raises ``FlinkOpsError`` on timeout, or when the job ends in a state not asked for.
        """
        wanted = set(states)

        def probe() -> str | None:
            state = self.state(job_id)
            if state in wanted:
                return state
            if state in TERMINAL_STATES:
                raise FlinkOpsError(
                    f"job {job_id} ended {state} while waiting for {sorted(wanted)}: "
                    f"{self.failure_cause(job_id)}"
                )
            return None

        return _poll(
            f"job {job_id} to be {'/'.join(sorted(wanted))}",
            probe,
            timeout,
            interval,
            describe=lambda: f"it is {self.state(job_id)}",
        )

    def wait_running(self, job_id: str, timeout: float = 120.0) -> None:
        """Wait until the job is RUNNING and every one of its tasks is too (not just deployed)."""

        def probe() -> bool:
            info = self._call("GET", f"/jobs/{job_id}")
            if info["state"] in TERMINAL_STATES:
                raise FlinkOpsError(
                    f"job {job_id} ended {info['state']}: {self.failure_cause(job_id)}"
                )
            vertices = info.get("vertices", [])
            return (
                info["state"] == "RUNNING"
                and bool(vertices)
                and all(v.get("status") == "RUNNING" for v in vertices)
            )

        _poll(
            f"job {job_id} and all its tasks to be RUNNING",
            probe,
            timeout,
            describe=lambda: f"it is {self.state(job_id)}",
        )

    def failure_cause(self, job_id: str) -> str:
        """The root exception of a failed job, or of its last restart (first line)."""
        try:
            info = self._call("GET", f"/jobs/{job_id}/exceptions")
        except FlinkOpsError as exc:
            return str(exc)
        root = info.get("root-exception") or ""
        return root.strip().splitlines()[0] if root else "no exception recorded"

    def restarts(self, job_id: str) -> int:
        """How often Flink restarted the job after a failure (exception history entries)."""
        info = self._call("GET", f"/jobs/{job_id}/exceptions")
        return len(info.get("exceptionHistory", {}).get("entries", []))

    def cancel(self, job_id: str, timeout: float = 60.0) -> None:
        """Cancel the job (no savepoint) and wait until it is CANCELED (or ended otherwise)."""
        if self.state(job_id) in TERMINAL_STATES:
            return
        self._call("PATCH", f"/jobs/{job_id}?mode=cancel")
        _poll(
            f"job {job_id} to be canceled",
            lambda: self.state(job_id) in TERMINAL_STATES,
            timeout,
            describe=lambda: f"it is {self.state(job_id)}",
        )

    # -- checkpoints and savepoints ------------------------------------------------------------

    def checkpoints(self, job_id: str) -> dict[str, Any]:
        """``GET /jobs/<id>/checkpoints``: counts, the latest completed and the restored one."""
        return self._call("GET", f"/jobs/{job_id}/checkpoints")

    def completed_checkpoints(self, job_id: str) -> int:
        return int(self.checkpoints(job_id).get("counts", {}).get("completed", 0))

    def wait_for_checkpoint(self, job_id: str, after: int = 0, timeout: float = 120.0) -> int:
        """Wait until more than ``after`` checkpoints have completed; returns the count."""

        def probe() -> int:
            if self.state(job_id) in TERMINAL_STATES:
                raise FlinkOpsError(
                    f"job {job_id} ended {self.state(job_id)} before checkpoint {after + 1}: "
                    f"{self.failure_cause(job_id)}"
                )
            count = self.completed_checkpoints(job_id)
            return count if count > after else 0

        return _poll(
            f"checkpoint {after + 1} of job {job_id}",
            probe,
            timeout,
            describe=lambda: (
                f"counts {self.checkpoints(job_id).get('counts')} "
                "(is checkpointing enabled: --checkpointing_interval?)"
            ),
        )

    def restored_from(self, job_id: str) -> dict[str, Any] | None:
        """The checkpoint or savepoint the job's state was last restored from, if any.

        Keys of Flink's answer: ``id``, ``is_savepoint``, ``external_path``, ``restore_timestamp``.
        """
        return (self.checkpoints(job_id).get("latest") or {}).get("restored")

    def stop_with_savepoint(
        self,
        job_id: str,
        target_dir: str | None = None,
        drain: bool = False,
        timeout: float = 300.0,
    ) -> str:
        """Take a savepoint, stop the job, and return the savepoint's location.

        ``target_dir``: a directory URI (``file:///...``); default: the cluster's
        ``state.savepoints.dir``. ``drain``: send the maximum watermark first (fires every window
        and timer; for ending a job for good, see the module docstring).
        """
        body: dict[str, Any] = {"drain": drain}
        if target_dir:
            body["targetDirectory"] = target_dir
        trigger = self._call("POST", f"/jobs/{job_id}/stop", body)["request-id"]
        status: dict[str, Any] = {}

        def probe() -> dict[str, Any] | None:
            nonlocal status
            status = self._call("GET", f"/jobs/{job_id}/savepoints/{trigger}")
            return status if status.get("status", {}).get("id") == "COMPLETED" else None

        _poll(
            f"the savepoint of job {job_id}",
            probe,
            timeout,
            describe=lambda: str(status),
        )
        operation = status.get("operation") or {}
        if "location" not in operation:
            cause = operation.get("failure-cause", {}).get("stack-trace", str(operation))
            first = cause.strip().splitlines()[0] if cause.strip() else "no cause given"
            raise FlinkOpsError(f"stop-with-savepoint of job {job_id} failed: {first}")
        return operation["location"]


@dataclass
class RunningJob:
    """A pipeline submitted to Flink: its Beam ``PipelineResult`` and its Flink job id.

    With the LOOPBACK environment the SDK harness lives in this process: keep it alive while the
    job runs (and while Flink restarts it after a failure).
    """

    result: Any
    job_id: str
    job_name: str
    options: Any
    flink: FlinkRest

    def state(self) -> str:
        return self.flink.state(self.job_id)

    def stop_with_savepoint(
        self, target_dir: str | None = None, drain: bool = False, timeout: float = 300.0
    ) -> str:
        location = self.flink.stop_with_savepoint(self.job_id, target_dir, drain, timeout)
        self.wait_until_stopped(timeout)
        return location

    def cancel(self, timeout: float = 60.0) -> None:
        self.flink.cancel(self.job_id, timeout)
        self.wait_until_stopped(timeout)

    def wait_until_stopped(self, timeout: float = 120.0) -> str:
        """Wait for the Flink job to end, then for the Beam job service to notice; its state."""
        self.flink.wait_state(self.job_id, TERMINAL_STATES, timeout)
        from apache_beam.runners.runner import PipelineState

        _poll(
            f"the Beam job of {self.job_id} to end",
            lambda: PipelineState.is_terminal(self.result.state),
            timeout,
            describe=lambda: f"it is {self.result.state}",
        )
        return str(self.result.state)


def start_job(
    spec: PipelineSpec,
    argv: Sequence[str],
    cfg: StackConfig,
    job_name: str | None = None,
    timeout: float = 180.0,
) -> RunningJob:
    """Submit ``spec``'s pipeline with ``argv`` (runner options included) without waiting.

    The job gets a unique Flink job name (``--job_name``, default ``<pipeline>-<random>``), by
    which its Flink job id is found. Returns once Flink runs the job and all its tasks.
    Restoring from a savepoint: put ``--savepoint_path=<location>`` in ``argv``.
    """
    module = spec.load()
    name = job_name or f"{spec.name}-{uuid.uuid4().hex[:10]}"
    argv = override_args(argv, job_name=name)
    flink = FlinkRest.from_config(cfg)
    before = {j.job_id for j in flink.jobs()}
    result, opts = module.start(argv)
    job_id = flink.wait_for_job(name, timeout=timeout, exclude=before)
    running = RunningJob(result=result, job_id=job_id, job_name=name, options=opts, flink=flink)
    flink.wait_running(job_id, timeout=timeout)
    return running
