"""A finished run's Beam counters, read once, for the jobs' summaries.

Example::

    counters = RunCounters.of(result)
    counters.events_in("inventory", opts.mode)        # records the job read
    counters.dead_letters_by_stage()                  # {stage: n}
    counters.sinks("inventory", ("WriteStockLevels",))  # {label: {written, skipped_stale, ...}}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from apache_beam.metrics.metric import MetricsFilter

__all__ = ["SINK_COUNTERS", "RunCounters"]

#: What every versioned sink counts (``io/sinks/base.py``), per step label.
SINK_COUNTERS = ("written", "skipped_stale", "failed", "dead_lettered", "retries", "breaker_opened")


class RunCounters:
    """Committed (else attempted) counter values by ``(namespace, name)``."""

    def __init__(self, values: dict[tuple[str, str], int]) -> None:
        self._values = values

    @classmethod
    def of(cls, result: Any) -> RunCounters:
        values: dict[tuple[str, str], int] = Counter()
        for c in result.metrics().query(MetricsFilter())["counters"]:
            value = c.committed if c.committed is not None else c.attempted
            values[(c.key.metric.namespace, c.key.metric.name)] += value or 0
        return cls(values)

    def get(self, namespace: str, name: str) -> int:
        return self._values.get((namespace, name), 0)

    def events_in(self, pipeline: str, mode: str) -> int:
        """Records read: files in batch, Kafka records in streaming."""
        if mode == "batch":
            return self.get(pipeline, "ReadEventFiles.records_read")
        return self.get("kafka", "records_read")

    def dead_letters_by_stage(self) -> dict[str, int]:
        return dict(self._dead_letters()[0])

    def dead_letters_by_class(self) -> dict[str, int]:
        return dict(sorted(self._dead_letters()[1].items()))

    def _dead_letters(self) -> tuple[Counter, Counter]:
        by_stage: Counter = Counter()
        by_class: Counter = Counter()
        for (namespace, name), value in self._values.items():
            # (``files_written`` counts what the file sink wrote, not another dead letter.)
            if namespace == "dead_letters" and name != "files_written":
                if "." in name:
                    by_class[name.split(".", 1)[1]] += value
                else:
                    by_stage[name] += value
        return by_stage, by_class

    def sinks(self, pipeline: str, labels: Iterable[str]) -> dict[str, dict[str, int]]:
        """``SINK_COUNTERS`` per sink step that counted anything in this run."""
        return {
            label: {k: self.get(pipeline, f"{label}.{k}") for k in SINK_COUNTERS}
            for label in labels
            if any(ns == pipeline and n.startswith(f"{label}.") for ns, n in self._values)
        }
