"""The product graph: pairs bought in one order or viewed in one session, per day, decayed.

Example::

    from retail_backbone.transforms.personalization import BuildCoPurchaseGraph

    graph = events | "BuildCoPurchaseGraph" >> BuildCoPurchaseGraph(
        WindowingOptions(mode="batch"), half_life_days=14)
    graph.pair_days     # PairDay: distinct orders/sessions per pair per UTC day
    graph.edges         # CoPurchaseEdge: one per pair and kind, daily counts and decayed weight
    graph.dead_letters  # malformed events (and, streaming, late ones)

Pairs are canonical: ``(a, b)`` with ``a < b``, so (a, b) and (b, a) are one edge
(``canonical_pairs``). Kinds:

- ``BOUGHT_WITH``: distinct skus of one ``order_placed`` (at most ``max_items`` per order);
- ``VIEWED_WITH``: distinct skus viewed in one ``session_id`` within one UTC day (sessions that
  cross midnight count on each day; anonymous sessions count too: no customer is involved).

Counting without increments: per pair and daily window the evidence is a map evidence id (order
or session id) -> newest event time, merged by union with max, so the count is the number of
distinct ids. A streaming pane that re-sends a session's growing sku set re-sends the same ids,
and nothing is counted twice. Per pair, the days then fold into one edge whose daily counts merge
by ``max`` per day (each later pane of a day holds at least as much evidence), which is again
order-independent and idempotent. The weight is
``fsum(count_d * 0.5 ** ((as_of - end_d) / half_life))`` with ``as_of`` = end of the edge's
latest day, so it does not depend on when the pipeline ran; a reader that compares edges at time
T decays each from its ``as_of_ms`` (``recommend`` does).

Windows per mode: the day is part of every grouping key (``pair#day``, ``session#day``), so the
counts do not depend on the windows. Streaming groups in daily event-time windows with the
mode's triggers (late data within the lateness re-fires its day; expired days free their
state); batch groups in the global window, where the local runners group with their fast path
instead of a trigger driver per key and window (that per-key driver was most of the backfill's
time).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Iterator
from itertools import combinations
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms import window

from retail_backbone.io.dead_letters import DeadLetter
from retail_backbone.io.events import Event
from retail_backbone.transforms.inventory.windowing import (
    WindowForMode,
    WindowingOptions,
    event_dead_letter,
    unwindow,
    window_into,
)
from retail_backbone.transforms.personalization.types import (
    BOUGHT_WITH,
    VIEWED_WITH,
    CoPurchaseEdge,
    PairDay,
)

__all__ = [
    "BuildCoPurchaseGraph",
    "CoPurchaseResult",
    "EdgeCombineFn",
    "canonical_pairs",
    "edge_weight",
    "pair_key",
]

DAY_MS = 86_400_000
_NAMESPACE = "personalization_graph"
_SEP = "\x1f"  # never part of a sku; keys must be plain strings (Prism needs standard coders)
_MAX_DAYS = 60
_EPOCH = dt.date(1970, 1, 1)


def canonical_pairs(skus: Iterable[str], max_items: int = 30) -> list[tuple[str, str]]:
    """Every unordered pair of distinct skus, each as ``(a, b)`` with ``a < b``, sorted.

    Only the first ``max_items`` distinct skus in sorted order take part (a bulk order of 500
    lines would otherwise add 124,750 pairs).

    Example::

        canonical_pairs(["b", "a", "c", "a"])  # [('a', 'b'), ('a', 'c'), ('b', 'c')]
    """
    distinct = sorted(set(skus))[:max_items]
    return list(combinations(distinct, 2))


def pair_key(kind: str, a: str, b: str) -> str:
    """The grouping key of an edge (a plain string)."""
    return _SEP.join((kind, a, b))


def day_key(key: str, ms: int) -> str:
    """``key`` and the UTC day of ``ms`` as one grouping key."""
    return f"{key}{_SEP}{_day_of(ms)}"


def _day_of(ms: int) -> str:
    return (_EPOCH + dt.timedelta(days=ms // DAY_MS)).isoformat()


def _day_end_ms(day: str) -> int:
    return (dt.date.fromisoformat(day) - _EPOCH).days * DAY_MS + DAY_MS


def edge_weight(days: dict[str, int], half_life_days: float) -> tuple[float, int]:
    """``(weight, as_of_ms)`` of daily counts: decayed to the end of the latest day.

    Example::

        edge_weight({"2025-11-23": 4, "2025-11-24": 1}, half_life_days=1)  # (3.0, ...)
    """
    as_of = max(_day_end_ms(d) for d in days)
    half = half_life_days * DAY_MS
    terms = [n * 0.5 ** ((as_of - _day_end_ms(d)) / half) for d, n in days.items()]
    return round(math.fsum(terms), 6), as_of


# -- events -> evidence -------------------------------------------------------------------------


class _EvidenceFn(beam.DoFn):
    """Orders -> ``(pair key, {order_id: t})``; views -> ``(session_id, (sku, t))`` (tagged)."""

    VIEWS = "views"
    INVALID = "invalid"

    def __init__(self, pipeline: str, stage: str, max_items: int) -> None:
        self._pipeline = pipeline
        self._stage = stage
        self._max_items = max_items
        self._orders = Metrics.counter(_NAMESPACE, "orders")
        self._views = Metrics.counter(_NAMESPACE, "views")
        self._ignored = Metrics.counter(_NAMESPACE, "ignored")
        self._invalid = Metrics.counter(_NAMESPACE, "invalid")

    def process(self, event: Event) -> Iterator[Any]:
        try:
            if event.event_type == "order_placed":
                skus = [line["sku"] for line in event.payload["lines"]]
                if not all(isinstance(s, str) and s and _SEP not in s for s in skus):
                    raise ValueError("bad sku in order lines")
                order_id = str(event.payload["order_id"])
                self._orders.inc()
                t = event.event_time_ms
                for a, b in canonical_pairs(skus, self._max_items):
                    yield day_key(pair_key(BOUGHT_WITH, a, b), t), {order_id: t}
            elif event.event_type == "product_viewed":
                sku, session = event.payload["sku"], event.payload["session_id"]
                if not (isinstance(sku, str) and sku and _SEP not in sku and session):
                    raise ValueError("product_viewed needs a sku and a session_id")
                self._views.inc()
                yield beam.pvalue.TaggedOutput(
                    self.VIEWS,
                    (day_key(str(session), event.event_time_ms), (sku, event.event_time_ms)),
                )
            else:
                self._ignored.inc()
        except (KeyError, TypeError, ValueError) as exc:
            self._invalid.inc()
            yield beam.pvalue.TaggedOutput(
                self.INVALID,
                event_dead_letter(
                    event,
                    self._pipeline,
                    self._stage,
                    "invalid_event",
                    f"{type(exc).__name__}: {exc}",
                ),
            )


class _SessionSkusCombineFn(beam.CombineFn):
    """Distinct skus of one session (in one day) and the newest view time."""

    def create_accumulator(self) -> tuple[frozenset, int]:
        return frozenset(), -1

    def add_input(self, acc, view):
        sku, t = view
        return acc[0] | {sku}, max(acc[1], t)

    def merge_accumulators(self, accs):
        skus, newest = frozenset(), -1
        for s, t in accs:
            skus, newest = skus | s, max(newest, t)
        return skus, newest

    def extract_output(self, acc):
        return acc


class _EvidenceCombineFn(beam.CombineFn):
    """Union of ``{evidence id: newest time}`` maps (max per id): counts distinct evidence."""

    def create_accumulator(self) -> dict[str, int]:
        return {}

    def add_input(self, acc: dict[str, int], evidence: dict[str, int]) -> dict[str, int]:
        for k, t in evidence.items():
            if acc.get(k, -1) < t:
                acc[k] = t
        return acc

    def merge_accumulators(self, accs: Iterable[dict[str, int]]) -> dict[str, int]:
        out: dict[str, int] = {}
        for acc in accs:
            self.add_input(out, acc)
        return out

    def extract_output(self, acc: dict[str, int]) -> dict[str, int]:
        return acc


def _to_pair_day(element: tuple[str, dict[str, int]]) -> Iterator[PairDay]:
    key, evidence = element
    if not evidence:  # an empty pane (Flink fires some at the end of a streaming run)
        return
    kind, a, b, day = key.split(_SEP)
    yield PairDay(kind, a, b, day, len(evidence), max(evidence.values()))


def _viewed_pairs(element: tuple[str, tuple[frozenset, int]], max_items: int) -> list:
    session_day, (skus, newest) = element
    session, day = session_day.rsplit(_SEP, 1)
    return [
        (_SEP.join((VIEWED_WITH, a, b, day)), {session: newest})
        for a, b in canonical_pairs(skus, max_items)
    ]


class EdgeCombineFn(beam.CombineFn):
    """``PairDay``s of one pair -> ``CoPurchaseEdge``; days merge by max count (idempotent).

    Example::

        fn = EdgeCombineFn(half_life_days=14)
        edge = fn.extract_output(fn.add_input(fn.create_accumulator(), pair_day))
    """

    def __init__(self, half_life_days: float) -> None:
        self._half_life_days = half_life_days

    def create_accumulator(self) -> dict[str, tuple[int, int]]:
        return {}

    def add_input(self, acc: dict, pd: PairDay) -> dict:
        acc["_pair"] = (pd.kind, pd.a, pd.b)
        count, last = acc.get(pd.day, (0, 0))
        acc[pd.day] = (max(count, pd.count), max(last, pd.last_ms))
        return acc

    def merge_accumulators(self, accs: Iterable[dict]) -> dict:
        out: dict = {}
        for acc in accs:
            for day, value in acc.items():
                if day == "_pair":
                    out["_pair"] = value
                    continue
                count, last = out.get(day, (0, 0))
                out[day] = (max(count, value[0]), max(last, value[1]))
        days = sorted(d for d in out if d != "_pair")
        for old in days[:-_MAX_DAYS]:
            del out[old]
        return out

    def extract_output(self, acc: dict) -> CoPurchaseEdge | None:
        if "_pair" not in acc:
            return None  # an empty pane
        kind, a, b = acc["_pair"]
        days = sorted(d for d in acc if d != "_pair")[-_MAX_DAYS:]
        counts = {d: acc[d][0] for d in days}
        weight, as_of = edge_weight(counts, self._half_life_days)
        return CoPurchaseEdge(
            kind=kind,
            a=a,
            b=b,
            window=days[-1],
            count=counts[days[-1]],
            total=sum(counts.values()),
            weight=weight,
            as_of_ms=as_of,
            days=days,
            counts=[counts[d] for d in days],
            version=max(acc[d][1] for d in days),
        )


class CoPurchaseResult(NamedTuple):
    """Outputs of ``BuildCoPurchaseGraph``."""

    pair_days: beam.PCollection
    edges: beam.PCollection
    dead_letters: beam.PCollection


class BuildCoPurchaseGraph(beam.PTransform):
    """Deduplicated ``Event``s -> daily pair counts and decayed edges (see module docstring).

    Args:
        windowing: mode, firing interval and allowed lateness.
        half_life_days: decay of the edge weight.
        max_items: distinct skus per order/session that form pairs.
        pipeline: pipeline name for dead letters.
    """

    def __init__(
        self,
        windowing: WindowingOptions,
        *,
        half_life_days: float = 14.0,
        max_items: int = 30,
        pipeline: str = "personalization",
        label: str | None = None,
    ) -> None:
        super().__init__(label)
        self._windowing = windowing
        self._half_life_days = half_life_days
        self._max_items = max_items
        self._pipeline = pipeline

    def expand(self, events: beam.PCollection) -> CoPurchaseResult:
        opts, stage = self._windowing, self.label
        relevant = events | "OrdersAndViews" >> beam.Filter(
            lambda e: e.event_type in ("order_placed", "product_viewed")
        )
        # Days are in the keys; streaming also windows by day (triggers, lateness, expiry).
        days = window.FixedWindows(DAY_MS // 1000) if opts.streaming else None
        daily = relevant | "WindowDaily" >> WindowForMode(
            opts, days, pipeline=self._pipeline, stage=stage
        )
        evidence = daily.elements | "ToEvidence" >> beam.ParDo(
            _EvidenceFn(self._pipeline, stage, self._max_items)
        ).with_output_types(tuple[str, dict[str, int]]).with_outputs(
            _EvidenceFn.VIEWS, _EvidenceFn.INVALID, main="bought"
        )
        max_items = self._max_items
        viewed = (
            evidence[_EvidenceFn.VIEWS]
            # Keys carry str hints everywhere: Prism only groups by standard-coder keys.
            | "SessionKeys"
            >> beam.Map(lambda kv: kv).with_output_types(tuple[str, tuple[str, int]])
            | "SkusPerSession" >> beam.CombinePerKey(_SessionSkusCombineFn())
            | "ViewedPairs" >> beam.FlatMap(_viewed_pairs, max_items)
            # Same daily windows again, with the mode's own trigger (not a continuation).
            | "PairKeys" >> beam.Map(lambda kv: kv).with_output_types(tuple[str, dict[str, int]])
            | "RewindowViewedPairs" >> window_into(opts, days)
        )
        pair_days = (
            (evidence.bought, viewed)
            | "AllPairs" >> beam.Flatten().with_output_types(tuple[str, dict[str, int]])
            | "CountEvidence" >> beam.CombinePerKey(_EvidenceCombineFn())
            | "ToPairDays" >> beam.FlatMap(_to_pair_day).with_output_types(PairDay)
        )
        half = self._half_life_days
        edges = (
            pair_days
            | "KeyByPair"
            >> beam.Map(lambda pd: (pair_key(pd.kind, pd.a, pd.b), pd)).with_output_types(
                tuple[str, PairDay]
            )
            | "EdgesToGlobal" >> window_into(opts)
            | "FoldEdges" >> beam.CombinePerKey(EdgeCombineFn(half))
            | "DropKeys"
            >> beam.FlatMap(lambda kv: [kv[1]] if kv[1] is not None else []).with_output_types(
                CoPurchaseEdge
            )
        )
        # Dead letters leave in the plain global window (these are in daily windows), like the
        # late ones from DropLateData, so the merge below keeps every element's real window.
        invalid = evidence[_EvidenceFn.INVALID] | "UnwindowInvalid" >> unwindow()
        dead = (
            daily.dead_letters,
            invalid,
        ) | "MergeDeadLetters" >> beam.Flatten().with_output_types(DeadLetter)
        return CoPurchaseResult(pair_days=pair_days, edges=edges, dead_letters=dead)
