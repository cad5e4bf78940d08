"""Deterministic retail traffic for the demo, tests and benchmarks.

Example::

    from retail_backbone.generator import (
        GeneratorConfig, build_world, generate_events, write_files, write_fraud_truth,
    )

    cfg = GeneratorConfig(seed=7, start=date(2025, 11, 24), days=7,
                          peak_day=date(2025, 11, 28), peak_multiplier=10)
    world = build_world(cfg)
    stream = generate_events(cfg, world)
    # -> out/backfill/<event_type>/dt=YYYY-MM-DD/part-00000.avro
    write_files(stream, "out/backfill", "avro")
    write_fraud_truth(stream.fraud, "out/fraud_truth.jsonl")
    print(stream.summary().to_dict())

Modules: ``config`` (GeneratorConfig), ``world`` (catalog, locations, customers, latent
preferences), ``traffic`` (the simulation, ``generate_events``), ``shopping`` (sessions and order
lifecycle), ``inventory`` (stock ledger and warehouse processes), ``pricing`` (prices and
promotions), ``masterdata`` (catalog and customer changes), ``fraud`` (injected patterns and
ground truth), ``sinks`` (files and Kafka), ``legacy_erp`` (PostgreSQL seed), ``sim`` (the
discrete-event engine), ``contracts`` (latest Avro schemas), ``clock`` (diurnal curves),
``fakes`` (fake PII), ``ids`` (seeded streams), ``stats`` (summary).
"""

from retail_backbone.generator.config import GeneratorConfig
from retail_backbone.generator.contracts import EVENT_TYPES, contracts
from retail_backbone.generator.fraud import FraudIncident, write_fraud_truth
from retail_backbone.generator.legacy_erp import ErpSummary, seed_legacy_erp
from retail_backbone.generator.sinks import (
    FileSummary,
    KafkaSinkError,
    KafkaSummary,
    produce_to_kafka,
    write_files,
    write_preferences,
)
from retail_backbone.generator.stats import Summary
from retail_backbone.generator.traffic import EventStream, generate_events
from retail_backbone.generator.world import World, build_world

__all__ = [
    "EVENT_TYPES",
    "ErpSummary",
    "EventStream",
    "FileSummary",
    "FraudIncident",
    "GeneratorConfig",
    "KafkaSinkError",
    "KafkaSummary",
    "Summary",
    "World",
    "build_world",
    "contracts",
    "generate_events",
    "produce_to_kafka",
    "seed_legacy_erp",
    "write_files",
    "write_fraud_truth",
    "write_preferences",
]
