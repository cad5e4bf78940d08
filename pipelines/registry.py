"""The pipelines that can be templated, launched and backfilled, in one place.

Templates (``backbone templates build``), ``backbone launch``, ``backbone backfill`` and the
Dataflow dry-run test all iterate over ``PIPELINES``; registering a new job is one entry here.
A registered module provides what ``pipelines/inventory.py`` does: an options class whose
parameters are ``Param``s (``params_of``), ``check_options(opts)``, ``build_pipeline(p, opts)``,
``run(argv) -> dict`` (a summary with at least ``events_in`` and ``state``), ``start(argv) ->
(PipelineResult, options)`` (the same without waiting; ``flink_ops.start_job`` uses it),
``SINKS`` (the sink names, which are also the names of the stack components they write to, when
local) and ``sink_targets(opts) -> {step label: SinkTarget}`` (where each sink step writes, with
``--table_suffix``; ``backbone dlq replay`` writes sink dead letters back through it).

Example::

    spec = get_pipeline("inventory")
    spec.params()                     # every Param, for templates and docs
    spec.module().run(["--mode=batch", "--input=data", ...])
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

from apache_beam.options.pipeline_options import PipelineOptions

from retail_backbone.pipelines.job_options import params_of
from retail_backbone.pipelines.params import Param

__all__ = ["PIPELINES", "PipelineSpec", "get_pipeline"]

History = Literal["day", "from_start"]


@dataclass(frozen=True)
class PipelineSpec:
    """One registered pipeline.

    Attributes:
        name: the command-line and template name (``backbone launch inventory``).
        module: import path of the job module.
        options: name of its ``PipelineOptions`` subclass in that module.
        backfill_history: what one backfill date's run must read. ``day``: only its own date
            partition (outputs are per-day facts). ``from_start``: every partition from the
            backfill's first date up to and including its own, because the job's results are
            running state (a stock ledger, a profile) that a single day cannot rebuild; the
            run for the last date then equals one run over the whole range.
    """

    name: str
    module: str
    options: str
    backfill_history: History

    def load(self) -> ModuleType:
        """The job module (imported on first use: Beam and the transforms are heavy)."""
        return importlib.import_module(self.module)

    def options_class(self) -> type[PipelineOptions]:
        return getattr(self.load(), self.options)

    def params(self) -> tuple[Param, ...]:
        """Every parameter the pipeline accepts, its own first, then the shared ones."""
        return params_of(self.options_class())

    def description(self) -> str:
        """The first line of the job module's docstring."""
        doc = self.load().__doc__ or self.name
        return doc.strip().splitlines()[0]

    def sinks(self) -> tuple[str, ...]:
        return tuple(self.load().SINKS)

    def source_file(self) -> str:
        """The job module's path relative to the repository root (``pipelines/inventory.py``)."""
        _package, folder, leaf = self.module.split(".")
        return f"{folder}/{leaf}.py"


PIPELINES: dict[str, PipelineSpec] = {
    spec.name: spec
    for spec in (
        PipelineSpec(
            "inventory",
            "retail_backbone.pipelines.inventory",
            "InventoryOptions",
            backfill_history="from_start",
        ),
        PipelineSpec(
            "personalization",
            "retail_backbone.pipelines.personalization",
            "PersonalizationOptions",
            # Profiles and the graph are running state over all history, like the ledger.
            backfill_history="from_start",
        ),
    )
}


def get_pipeline(name: str) -> PipelineSpec:
    """The registered pipeline ``name``; ``KeyError`` naming the choices otherwise."""
    try:
        return PIPELINES[name]
    except KeyError:
        raise KeyError(
            f"unknown pipeline {name!r}; registered: {', '.join(sorted(PIPELINES))}"
        ) from None
