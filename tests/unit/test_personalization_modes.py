"""Streaming and batch give the same final profiles, edges and recommendations (generated data)."""

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that
from apache_beam.transforms import window
from apache_beam.utils.timestamp import Timestamp

from retail_backbone.generator import GeneratorConfig, generate_events
from retail_backbone.io.dead_letters import Origin
from retail_backbone.io.events import event_from_record
from retail_backbone.testing import collect
from retail_backbone.transforms.inventory.windowing import WindowingOptions
from retail_backbone.transforms.personalization import (
    BuildCoPurchaseGraph,
    BuildCustomerProfiles,
    ExtractCatalog,
    ProfileSettings,
    Recommend,
)

HOUR_MS = 3_600_000
TYPES = {"product_viewed", "cart_updated", "order_placed", "customer_upserted", "product_upserted"}


def _events():
    cfg = GeneratorConfig(
        seed=5, days=1, n_products=30, n_locations=3, n_customers=60, events_per_day=1500
    )
    return [
        event_from_record(r, Origin("INTERNAL"), now_ms=2**50)
        for r in generate_events(cfg)
        if r["envelope"]["event_type"] in TYPES
    ]


class _WithPane(beam.DoFn):
    def process(self, row, pane=beam.DoFn.PaneInfoParam):
        yield (pane.index, row)


def _build(events, opts, as_of):
    catalog = events | "Catalog" >> ExtractCatalog(opts)
    profiles = events | "Profiles" >> BuildCustomerProfiles(
        opts, catalog=catalog, hash_key="k", settings=ProfileSettings(as_of_ms=as_of)
    )
    graph = events | "Graph" >> BuildCoPurchaseGraph(opts)
    recs = {
        "profiles": profiles.profiles,
        "edges": graph.edges,
        "events": events,
        "catalog": catalog,
    } | "Recommend" >> Recommend(opts)
    return {
        "profiles": profiles.profiles | "PP" >> beam.ParDo(_WithPane()),
        "edges": graph.edges | "PE" >> beam.ParDo(_WithPane()),
        "related": recs.related | "PR" >> beam.ParDo(_WithPane()),
        "recommendations": recs.customers,
    }


def _final(rows, key):
    best = {}
    for index, row in rows:
        k = key(row)
        if k not in best or index > best[k][0]:
            best[k] = (index, row)
    return {k: row for k, (_, row) in best.items()}


def test_streaming_final_state_equals_batch():
    events = _events()
    as_of = max(e.event_time_ms for e in events) + HOUR_MS
    batch = collect(lambda p: _build(p | beam.Create(events), WindowingOptions("batch"), as_of))

    events.sort(key=lambda e: (e.ingest_time_ms, e.event_id))
    start = events[0].ingest_time_ms - HOUR_MS
    stream = TestStream().advance_watermark_to(Timestamp(micros=start * 1000))
    step = 4 * HOUR_MS
    t = start
    i = 0
    while i < len(events):
        chunk = []
        while i < len(events) and events[i].ingest_time_ms < t + step:
            chunk.append(window.TimestampedValue(events[i], events[i].event_time_ms / 1000))
            i += 1
        if chunk:
            stream = stream.add_elements(chunk)
        t += step
        stream = stream.advance_processing_time(60).advance_watermark_to(
            Timestamp(micros=(t - HOUR_MS) * 1000)
        )
    stream = stream.advance_watermark_to_infinity()
    opts = WindowingOptions(
        "streaming",
        confirm_panes=False,
        early_firing_seconds=30,
        allowed_lateness_seconds=6 * 3600,
        late_check_shards=1,
        watermark_tick_seconds=600,
    )
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    keys = {
        "profiles": lambda r: r.customer_key,
        "edges": lambda r: (r.kind, r.a, r.b),
        "related": lambda r: r.sku,
    }
    # What the sinks keep of every key: the highest (version, tie-breaker).
    ranks = {
        "profiles": lambda r: (r.version, r.revision),
        "edges": lambda r: (r.version, r.total),
        "related": lambda r: (r.version, r.evidence),
    }
    with TestPipeline(options=options) as p:
        outputs = _build(p | stream, opts, as_of)
        for name, key in keys.items():
            want = _final(batch[name], key)
            assert len(want) > 10, name
            check = _same_final(name, key, ranks[name], want)
            assert_that(outputs[name], check, label=f"Same{name}")
        # Recommendations come out of a ParDo (no panes): what the sinks keep is the highest
        # (version, revision), the list computed once the profile's day had closed.
        want = {r.customer_key: r for r in batch["recommendations"]}
        assert len(want) > 10 and all(r.revision % 2 == 1 for r in want.values())
        assert_that(outputs["recommendations"], _same_kept(want), label="SameRecommendations")


def _same_kept(want):
    def check(rows):
        kept: dict = {}
        for row in rows:
            old = kept.get(row.customer_key)
            if old is None or (row.version, row.revision) > (old.version, old.revision):
                kept[row.customer_key] = row
        assert kept.keys() == want.keys()
        wrong = [k for k in want if kept[k] != want[k]]
        assert not wrong, [(kept[k], want[k]) for k in wrong[:2]]

    return check


def _same_final(name, key, rank, want):
    def check(rows):
        got = _final(rows, key)
        assert got.keys() == want.keys(), name
        wrong = [k for k in want if got[k] != want[k]]
        assert not wrong, (name, [(got[k], want[k]) for k in wrong[:2]])
        # The sinks' rule picks the same rows: the last pane ranks highest, strictly above
        # every earlier pane that differs from it (else a sink would skip it as stale).
        kept: dict = {}
        for _, row in rows:
            k = key(row)
            if k not in kept or rank(row) > rank(kept[k]):
                kept[k] = row
        assert {k: kept[k] for k in want} == want, name
        ties = [r for _, r in rows if rank(r) == rank(want[key(r)]) and r != want[key(r)]]
        assert not ties, (name, ties[:2])

    return check
