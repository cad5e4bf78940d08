"""The Avro contracts the generator emits: the latest schema, subject and version per event type.

Example::

    contract = contracts()["order_placed"]
    contract.subject, contract.version          # ("retail.order_placed-value", 2)
    fastavro.validation.validate(event, contract.parsed)

Events are always built against the *latest* version of each subject in ``schemas/``; the
envelope's ``schema_subject``/``schema_version`` carry these values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache, cached_property

import fastavro

from retail_backbone.schemas.catalog import load_catalog

__all__ = ["EVENT_TYPES", "Contract", "contracts"]


@dataclass(frozen=True)
class Contract:
    """One event type's latest contract.

    Attributes:
        event_type: e.g. ``order_placed``; also the schema folder name.
        topic: Kafka topic, ``retail.<event_type>``.
        subject: registry subject, ``retail.<event_type>-value``.
        version: number of the latest ``v<N>.avsc`` (the registry version when registered in order).
        text: the exact schema file text (what gets registered).
        all_texts: every version's text, v1 first (to register a fresh registry in order).
    """

    event_type: str
    topic: str
    subject: str
    version: int
    text: str
    all_texts: tuple[str, ...]

    @cached_property
    def schema(self) -> dict:
        """The latest schema as JSON."""
        return json.loads(self.text)

    @cached_property
    def parsed(self) -> dict:
        """The latest schema parsed by fastavro (own named-type space per subject)."""
        return fastavro.parse_schema(self.schema, named_schemas={})


@cache
def contracts() -> dict[str, Contract]:
    """Every event subject in ``schemas/`` (not the envelope), keyed by event type."""
    out = {}
    for subject in load_catalog():
        if not subject.is_event:  # the envelope, dead letters, records pipelines derive
            continue
        out[subject.folder] = Contract(
            event_type=subject.folder,
            topic=subject.topic,
            subject=subject.name,
            version=len(subject.version_files),
            text=subject.texts[-1],
            all_texts=tuple(subject.texts),
        )
    return out


EVENT_TYPES: tuple[str, ...] = tuple(sorted(contracts()))
