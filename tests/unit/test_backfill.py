"""Backfill bookkeeping: one run per date, state file, resume after a failure or a death, force.

The runs are a fake ``run_fn`` (fault injection); tests/integration/test_backfill_inventory.py
runs the real inventory job.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from click.testing import CliRunner

from retail_backbone.cli import main
from retail_backbone.pipelines.backfill import (
    StateMismatch,
    backfill_dates,
    date_args,
    run_backfill,
)
from retail_backbone.pipelines.params import InvalidParams
from retail_backbone.pipelines.registry import PipelineSpec, get_pipeline

START, END = dt.date(2025, 11, 24), dt.date(2025, 11, 26)
ARGS = ["--input=/data/events", "--sinks=bigtable"]


class Died(BaseException):
    """Stands for the process being killed: not an Exception, so nothing catches it."""


class FakeRuns:
    """Records each run's bounds; fails or dies on chosen dates."""

    def __init__(self, fail_on=(), die_on=()):
        self.calls: list[tuple[str, str]] = []
        self.fail_on, self.die_on = set(fail_on), set(die_on)

    def __call__(self, argv):
        bounds = {a.split("=")[0][2:]: a.split("=")[1] for a in argv if "_date=" in a}
        start, end = bounds["start_date"], bounds["end_date"]
        day = str(dt.date.fromisoformat(end) - dt.timedelta(days=1))
        assert "--mode=batch" in argv and "--runner=DirectRunner" in argv
        if day in self.die_on:
            raise Died()
        self.calls.append((start, end))
        if day in self.fail_on:
            raise RuntimeError(f"partition {day} is corrupt")
        return {"state": "PipelineState.DONE", "events_in": 10, "run_id": f"r{day}"}


def _spec(history):
    inventory = get_pipeline("inventory")
    return PipelineSpec("inventory", inventory.module, inventory.options, history)


def _run(tmp_path, runs, **kwargs):
    return run_backfill(
        _spec(kwargs.pop("history", "from_start")),
        START,
        END,
        ARGS,
        state_path=tmp_path / "state.json",
        run_fn=runs,
        prepare_sinks=False,
        **kwargs,
    )


def test_dates_are_inclusive_and_history_sets_each_runs_bounds():
    assert backfill_dates(START, END) == [START, dt.date(2025, 11, 25), END]
    day = dt.date(2025, 11, 25)
    assert date_args(_spec("day"), START, day) == [
        "--mode=batch",
        "--start_date=2025-11-25",
        "--end_date=2025-11-26",
    ]
    # Running state (a stock ledger) needs every partition from the first date on.
    assert date_args(_spec("from_start"), START, day)[1] == "--start_date=2025-11-24"
    with pytest.raises(ValueError, match="before"):
        backfill_dates(END, START)


def test_every_date_runs_once_and_is_recorded(tmp_path):
    runs = FakeRuns()
    lines = []
    summary = _run(tmp_path, runs, history="day", progress=lines.append)
    assert runs.calls == [
        ("2025-11-24", "2025-11-25"),
        ("2025-11-25", "2025-11-26"),
        ("2025-11-26", "2025-11-27"),
    ]
    data = summary.as_dict()
    assert (data["done"], data["skipped"], data["failed"], data["events"]) == (3, 0, 0, 30)
    state = json.loads((tmp_path / "state.json").read_text())
    assert list(state["dates"]) == ["2025-11-24", "2025-11-25", "2025-11-26"]
    assert {d["status"] for d in state["dates"].values()} == {"done"}
    assert state["dates"]["2025-11-25"]["run_id"] == "r2025-11-25"
    assert any(line.startswith("[####################] 3/3 2025-11-26 done") for line in lines)

    # A rerun skips every finished date and runs nothing; --force runs them again.
    again = FakeRuns()
    assert _run(tmp_path, again, history="day").as_dict()["skipped"] == 3
    assert again.calls == []
    forced = FakeRuns()
    assert _run(tmp_path, forced, history="day", force=True).as_dict()["done"] == 3
    assert len(forced.calls) == 3


def test_a_failed_date_is_reported_and_rerun_next_time(tmp_path):
    summary = _run(tmp_path, FakeRuns(fail_on={"2025-11-25"}))
    assert not summary.ok
    data = summary.as_dict()
    assert data["failed_dates"] == ["2025-11-25"] and data["done"] == 2
    failed = next(r for r in data["results"] if r["status"] == "failed")
    assert failed["error"] == "RuntimeError: partition 2025-11-25 is corrupt"

    resumed = FakeRuns()
    assert _run(tmp_path, resumed).ok
    assert resumed.calls == [("2025-11-24", "2025-11-26")]  # only the failed date


def test_a_backfill_that_dies_continues_from_the_first_unfinished_date(tmp_path):
    with pytest.raises(Died):
        _run(tmp_path, FakeRuns(die_on={"2025-11-25"}))
    state = json.loads((tmp_path / "state.json").read_text())
    assert list(state["dates"]) == ["2025-11-24"]  # the file is whole: written atomically

    resumed = FakeRuns()
    summary = _run(tmp_path, resumed)
    assert summary.ok
    assert resumed.calls == [("2025-11-24", "2025-11-26"), ("2025-11-24", "2025-11-27")]
    assert summary.as_dict()["skipped"] == 1


def test_a_state_file_of_other_parameters_is_refused(tmp_path):
    _run(tmp_path, FakeRuns())
    with pytest.raises(StateMismatch, match="other parameters"):
        run_backfill(
            _spec("from_start"),
            START,
            END,
            [*ARGS, "--table_suffix=_other"],
            state_path=tmp_path / "state.json",
            run_fn=FakeRuns(),
            prepare_sinks=False,
        )
    # Secret values are not part of the identity, nor stored.
    secret_run = run_backfill(
        _spec("from_start"),
        START,
        END,
        [*ARGS, "--postgres_dsn=host=db password=hunter2", "--sinks=postgres"],
        state_path=tmp_path / "secret.json",
        run_fn=FakeRuns(),
        prepare_sinks=False,
    )
    assert secret_run.ok
    assert "hunter2" not in (tmp_path / "secret.json").read_text()


def test_bad_parameters_fail_before_any_run(tmp_path):
    runs = FakeRuns()
    with pytest.raises(InvalidParams, match="--forecast_alpha"):
        run_backfill(
            _spec("day"),
            START,
            END,
            [*ARGS, "--forecast_alpha=3"],
            state_path=tmp_path / "s.json",
            run_fn=runs,
            prepare_sinks=False,
        )
    with pytest.raises(ValueError, match="--start_date is set by the backfill"):
        run_backfill(_spec("day"), START, END, [*ARGS, "--start_date=2025-01-01"], run_fn=runs)
    assert runs.calls == [] and not (tmp_path / "s.json").exists()


def test_cli_rejects_bad_dates_and_unknown_pipelines():
    result = CliRunner().invoke(
        main, ["backfill", "inventory", "--from", "2025-11-26", "--to", "2025-11-24"]
    )
    assert result.exit_code == 2 and "--to is before --from" in result.output
    result = CliRunner().invoke(
        main, ["backfill", "nope", "--from", "2025-11-24", "--to", "2025-11-24"]
    )
    assert result.exit_code == 2 and "registered: inventory" in result.output
