"""Backfills: one batch run per date partition, idempotent, resumable, optionally in parallel.

``run_backfill`` runs a registered pipeline in batch mode once per day of ``[start, end]``
(``--to`` is inclusive). Each finished date is recorded in a small JSON state file, written
atomically after every date, so a backfill that dies (killed, machine lost) continues with the
first unfinished date when started again; finished dates are skipped unless ``force``. Re-running
a date is harmless because every sink is idempotent (newest version wins), so a date that was
half-written when the process died is simply written again.

What one date's run reads depends on the pipeline (``PipelineSpec.backfill_history``): ``day``
reads its own partition (``--start_date d --end_date d+1``); ``from_start`` reads every partition
from the backfill's first date to ``d`` inclusive (``--start_date start --end_date d+1``) because
its results are running state (the inventory's stock ledger replays every movement of a key: a
run over one day alone would write that day's movements as the whole stock). Either way the
state after the last date equals one run over the whole range, and with versioned sinks it does
not matter in which order parallel runs finish.

The state file belongs to one set of parameters: it stores a fingerprint of the pipeline, its
arguments (secret values left out) and, for ``from_start``, the first date; a mismatch is refused
(``StateMismatch``) instead of silently skipping dates that were run with other parameters.

Example::

    summary = run_backfill(
        get_pipeline("inventory"), dt.date(2025, 11, 1), dt.date(2025, 11, 7),
        ["--input=data/backfill", "--postgres_dsn=env:PG"], runner_argv=["--runner=DirectRunner"],
        state_path=Path("inventory.backfill.json"), parallel=2)
    summary.ok, summary.as_dict()
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from retail_backbone.pipelines.registry import PipelineSpec

__all__ = [
    "BackfillSummary",
    "DateResult",
    "StateMismatch",
    "backfill_dates",
    "date_args",
    "default_state_path",
    "fingerprint",
    "run_backfill",
]

#: Runs one pipeline invocation and returns its summary (``events_in``, ``state``, ...).
RunFn = Callable[[list[str]], Mapping[str, Any]]
#: Receives progress lines (the CLI prints them on stderr).
Progress = Callable[[str], None]

_STATE_VERSION = 1


class StateMismatch(ValueError):
    """The state file was written by a backfill with other parameters."""


@dataclass(frozen=True)
class DateResult:
    """The outcome of one date: ``done``, ``skipped`` (done earlier) or ``failed``."""

    date: str
    status: str
    events: int = 0
    seconds: float = 0.0
    run_id: str | None = None
    error: str | None = None


@dataclass
class BackfillSummary:
    """Every date's outcome, with totals; ``ok`` when no date failed."""

    pipeline: str
    start: str
    end: str
    state_file: str
    results: list[DateResult] = field(default_factory=list)
    seconds: float = 0.0

    def _count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def ok(self) -> bool:
        return self._count("failed") == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "from": self.start,
            "to": self.end,
            "state_file": self.state_file,
            "dates": len(self.results),
            "done": self._count("done"),
            "skipped": self._count("skipped"),
            "failed": self._count("failed"),
            "failed_dates": [r.date for r in self.results if r.status == "failed"],
            "events": sum(r.events for r in self.results if r.status == "done"),
            "seconds": round(self.seconds, 3),
            "results": [asdict(r) for r in sorted(self.results, key=lambda r: r.date)],
        }


def backfill_dates(start: dt.date, end: dt.date) -> list[dt.date]:
    """Every day from ``start`` to ``end``, both included."""
    if end < start:
        raise ValueError(f"--to {end} is before --from {start}")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def date_args(spec: PipelineSpec, start: dt.date, day: dt.date) -> list[str]:
    """The batch-mode bounds of ``day``'s run (see the module docstring for ``history``)."""
    first = day if spec.backfill_history == "day" else start
    return ["--mode=batch", f"--start_date={first}", f"--end_date={day + dt.timedelta(days=1)}"]


def _public_args(spec: PipelineSpec, args: Sequence[str]) -> list[str]:
    """``args`` without secret values and the run id (which differs on every run)."""
    secret = {p.name for p in spec.params() if p.secret}
    kept = []
    for arg in args:
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") else None
        if name == "run_id":
            continue
        kept.append(f"--{name}=<secret>" if name in secret else arg)
    return kept


def fingerprint(spec: PipelineSpec, start: dt.date, args: Sequence[str]) -> str:
    """What makes two backfills the same: pipeline, history, public args (and first date)."""
    ident = {
        "pipeline": spec.name,
        "history": spec.backfill_history,
        "args": sorted(_public_args(spec, args)),
        "first": str(start) if spec.backfill_history == "from_start" else None,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def default_state_path(spec: PipelineSpec, start: dt.date, args: Sequence[str]) -> Path:
    """``.backfill/<pipeline>-<fingerprint>.json`` in the working directory."""
    return Path(".backfill") / f"{spec.name}-{fingerprint(spec, start, args)}.json"


class _State:
    """The state file: finished dates with their counts, rewritten atomically."""

    def __init__(self, path: Path, ident: dict[str, Any]) -> None:
        self.path = path
        self.ident = ident
        self.dates: dict[str, dict[str, Any]] = {}

    @classmethod
    def open(cls, path: Path, ident: dict[str, Any]) -> _State:
        state = cls(path, ident)
        if path.is_file():
            data = json.loads(path.read_text())
            if data.get("fingerprint") != ident["fingerprint"]:
                raise StateMismatch(
                    f"{path} belongs to a backfill of {data.get('pipeline')} with other "
                    f"parameters ({data.get('args')}); use another --state file, or delete it "
                    "to start over"
                )
            state.dates = dict(data.get("dates", {}))
        return state

    def done(self, day: str) -> bool:
        return self.dates.get(day, {}).get("status") == "done"

    def record(self, result: DateResult) -> None:
        entry = {k: v for k, v in asdict(result).items() if k != "date" and v is not None}
        entry["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        if result.status == "failed" and self.done(result.date):
            return  # a forced rerun that failed does not undo the earlier success
        self.dates[result.date] = entry
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "version": _STATE_VERSION,
            **self.ident,
            "dates": dict(sorted(self.dates.items())),
        }
        # Write then rename: a process killed mid-write leaves the previous file intact.
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from a scheduler's other users
        os.replace(tmp, self.path)


def _one_date(run_fn: RunFn, day: str, argv: list[str]) -> DateResult:
    began = time.monotonic()
    summary = run_fn(argv)
    state = str(summary.get("state", "DONE"))
    seconds = time.monotonic() - began
    if "DONE" not in state:
        return DateResult(day, "failed", seconds=seconds, error=f"pipeline ended {state}")
    return DateResult(
        day,
        "done",
        events=int(summary.get("events_in", 0)),
        seconds=round(seconds, 3),
        run_id=summary.get("run_id"),
    )


def _failed(day: str, exc: Exception, began: float) -> DateResult:
    return DateResult(
        day,
        "failed",
        seconds=round(time.monotonic() - began, 3),
        error=f"{type(exc).__name__}: {exc}",
    )


def _bar(done: int, total: int, width: int = 20) -> str:
    filled = width * done // total if total else width
    return "[" + "#" * filled + "-" * (width - filled) + f"] {done}/{total}"


def run_backfill(
    spec: PipelineSpec,
    start: dt.date,
    end: dt.date,
    pipeline_args: Sequence[str],
    *,
    runner_argv: Sequence[str] = ("--runner=DirectRunner",),
    state_path: Path | None = None,
    parallel: int = 1,
    force: bool = False,
    run_fn: RunFn | None = None,
    prepare_sinks: bool = True,
    progress: Progress | None = None,
) -> BackfillSummary:
    """Run ``spec`` once per date of ``[start, end]``; see the module docstring.

    Args:
        spec: a registered pipeline.
        start: first date.
        end: last date (inclusive).
        pipeline_args: the pipeline's parameters (``--input``, sinks, ...), without the mode
            and dates, which the backfill sets per run.
        runner_argv: Beam runner options, not part of the state's fingerprint.
        state_path: the state file (default ``default_state_path``).
        parallel: dates run at once; above 1 each date runs in its own process.
        force: run dates the state file lists as done too.
        run_fn: runs one invocation (default: the pipeline module's ``run``); injectable so
            tests can make a date fail. Must be picklable when ``parallel > 1``.
        prepare_sinks: create the sinks' tables once before the runs (the module's
            ``ensure_sink_tables``), so that parallel runs do not race to create them.
        progress: receives one line per started/finished date.

    Raises:
        InvalidParams: the parameters fail the pipeline's launch checks (nothing has run).
        StateMismatch: the state file belongs to another backfill.
    """
    for fixed in ("mode", "start_date", "end_date"):
        if any(a == f"--{fixed}" or a.startswith(f"--{fixed}=") for a in pipeline_args):
            raise ValueError(f"--{fixed} is set by the backfill for each date; leave it out")
    if parallel < 1:
        raise ValueError("--parallel must be at least 1")
    say = progress or (lambda _line: None)
    dates = backfill_dates(start, end)
    args = list(pipeline_args)
    ident = {
        "pipeline": spec.name,
        "fingerprint": fingerprint(spec, start, args),
        "history": spec.backfill_history,
        "args": _public_args(spec, args),
    }
    path = state_path or default_state_path(spec, start, args)
    state = _State.open(path, ident)

    module = spec.load()
    first_opts = spec.options_class()([*runner_argv, *date_args(spec, start, dates[0]), *args])
    module.check_options(first_opts)  # every date differs only in its bounds
    if prepare_sinks and hasattr(module, "ensure_sink_tables"):
        module.ensure_sink_tables(first_opts)

    began = time.monotonic()
    summary = BackfillSummary(spec.name, str(start), str(end), str(path))
    todo = []
    for day in dates:
        if state.done(str(day)) and not force:
            summary.results.append(DateResult(str(day), "skipped"))
        else:
            todo.append(day)
    say(f"{spec.name} backfill {start}..{end}: {len(todo)} to run, {len(dates) - len(todo)} done")
    if len(dates) > len(todo):
        say(f"state: {path}")

    def finish(result: DateResult) -> None:
        state.record(result)
        summary.results.append(result)
        finished = sum(1 for r in summary.results if r.status != "skipped")
        detail = (
            f"{result.events:,} events read in {result.seconds:.1f}s"
            if result.status == "done"
            else result.error
        )
        say(f"{_bar(finished, len(todo))} {result.date} {result.status}: {detail}")

    argvs = {day: [*runner_argv, *date_args(spec, start, day), *args] for day in todo}
    fn = run_fn or module.run
    if parallel == 1 or len(todo) <= 1:
        for day in todo:
            say(f"{day} running")
            t0 = time.monotonic()
            try:
                finish(_one_date(fn, str(day), argvs[day]))
            except Exception as exc:  # one date's failure must not stop the others
                finish(_failed(str(day), exc, t0))
    else:
        _run_parallel(spec, run_fn, todo, argvs, parallel, finish, say)
    summary.seconds = time.monotonic() - began
    return summary


def _run_parallel(
    spec: PipelineSpec,
    run_fn: RunFn | None,
    todo: list[dt.date],
    argvs: dict[dt.date, list[str]],
    parallel: int,
    finish: Callable[[DateResult], None],
    say: Progress,
) -> None:
    # Separate processes: one Beam job per process, and a crash takes down one date, not all.
    # Spawned, not forked: the parent may hold gRPC and client threads that do not survive fork.
    pending = list(todo)
    running: dict[Future, tuple[str, float]] = {}
    with ProcessPoolExecutor(
        max_workers=parallel, mp_context=get_context("spawn"), initializer=_quiet_worker
    ) as pool:
        while pending or running:
            while pending and len(running) < parallel:
                day = pending.pop(0)
                say(f"{day} running")
                try:
                    if run_fn is None:
                        future = pool.submit(_one_date_module, spec.module, str(day), argvs[day])
                    else:
                        future = pool.submit(_one_date, run_fn, str(day), argvs[day])
                except BrokenProcessPool as exc:
                    # A worker died (killed, out of memory): the pool takes no more work.
                    for left in [day, *pending]:
                        finish(_failed(str(left), exc, time.monotonic()))
                    pending.clear()
                    break
                running[future] = (str(day), time.monotonic())
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                day, t0 = running.pop(future)
                try:
                    finish(future.result())
                except Exception as exc:
                    finish(_failed(day, exc, t0))


def _quiet_worker() -> None:
    import warnings

    # The same import-time FutureWarnings of google-api-core/google-auth the CLI silences.
    warnings.filterwarnings("ignore", category=FutureWarning)


def _one_date_module(module: str, day: str, argv: list[str]) -> DateResult:
    import importlib

    return _one_date(importlib.import_module(module).run, day, argv)
