"""The contracts shipped in ``schemas/``: one folder per subject, ``v1.avsc``, ``v2.avsc``, ...

Example::

    for subject in load_catalog():
        print(subject.name, subject.level, [v.name for v in subject.version_files])
    failures = [c for c in check_catalog() if not c.compatible]

A folder ``order_placed`` is the registry subject ``retail.order_placed-value`` (Confluent's
TopicNameStrategy for topic ``retail.order_placed``). ``envelope`` (the standard envelope every
event embeds) and ``dead_letter`` (the dead-letter record of every ``dlq.<pipeline>`` topic) have
record-name subjects, ``retail.common.Envelope`` and ``retail.common.DeadLetter``.
Compatibility levels come from ``compatibility.toml`` (default BACKWARD).
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from retail_backbone.schemas.compatibility import (
    InvalidSchema,
    Level,
    check_compatibility,
    parse_schema,
)

__all__ = [
    "SCHEMAS_DIR",
    "Subject",
    "SubjectCheck",
    "check_catalog",
    "load_catalog",
    "subject_for_topic",
    "topic_for_event_type",
]

SCHEMAS_DIR = Path(__file__).resolve().parent
TOPIC_PREFIX = "retail."
ENVELOPE_SUBJECT = "retail.common.Envelope"
#: Folders that are not event topics: their subjects follow the record name.
RECORD_NAME_SUBJECTS = {"envelope": ENVELOPE_SUBJECT, "dead_letter": "retail.common.DeadLetter"}
#: Folders of records the pipelines derive (not touchpoint events): their own topic, no envelope.
DERIVED_TOPICS = {"inventory_alert": "inventory.alerts"}
_VERSION_FILE = re.compile(r"^v(\d+)\.avsc$")


def topic_for_event_type(event_type: str) -> str:
    return f"{TOPIC_PREFIX}{event_type}"


def subject_for_topic(topic: str) -> str:
    return f"{topic}-value"


@dataclass(frozen=True)
class Subject:
    folder: str
    level: Level
    version_files: list[Path]

    @property
    def name(self) -> str:
        if self.folder in RECORD_NAME_SUBJECTS:
            return RECORD_NAME_SUBJECTS[self.folder]
        return subject_for_topic(self.topic)

    @property
    def topic(self) -> str | None:
        if self.folder in RECORD_NAME_SUBJECTS:
            return None
        return DERIVED_TOPICS.get(self.folder) or topic_for_event_type(self.folder)

    @property
    def is_event(self) -> bool:
        """A touchpoint event type (envelope, ``retail.<type>`` topic), not a derived record."""
        return self.folder not in RECORD_NAME_SUBJECTS and self.folder not in DERIVED_TOPICS

    @cached_property
    def texts(self) -> list[str]:
        return [p.read_text() for p in self.version_files]

    @property
    def latest(self) -> dict:
        return json.loads(self.texts[-1])

    def version(self, number: int) -> dict:
        return json.loads(self.texts[number - 1])


@dataclass(frozen=True)
class SubjectCheck:
    subject: str
    level: Level
    versions: int
    compatible: bool
    messages: list[str] = field(default_factory=list)


def _levels(root: Path) -> tuple[Level, dict[str, Level]]:
    path = root / "compatibility.toml"
    data = tomllib.loads(path.read_text()) if path.is_file() else {}
    default = Level(data.get("default", "BACKWARD").upper())
    return default, {k: Level(v.upper()) for k, v in data.get("subjects", {}).items()}


def load_catalog(root: Path = SCHEMAS_DIR) -> list[Subject]:
    """Every subject folder under ``root`` with its versions in order.

    Raises:
        ValueError: a folder's versions are not exactly v1..vN.
    """
    default, levels = _levels(root)
    subjects = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = {}
        for path in folder.glob("*.avsc"):
            match = _VERSION_FILE.match(path.name)
            if not match:
                raise ValueError(f"{path}: schema files must be named v<N>.avsc")
            files[int(match.group(1))] = path
        if not files:
            continue
        if sorted(files) != list(range(1, len(files) + 1)):
            raise ValueError(f"{folder}: versions must be v1..v{len(files)} without gaps")
        subjects.append(
            Subject(
                folder.name, levels.get(folder.name, default), [files[n] for n in sorted(files)]
            )
        )
    return subjects


def check_catalog(root: Path = SCHEMAS_DIR) -> list[SubjectCheck]:
    """Validate every subject's version chain at its configured level.

    Each version N is checked against versions 1..N-1 exactly as the registry would check it when
    it was registered, so a change to an old file is caught too.
    """
    results = []
    for subject in load_catalog(root):
        messages: list[str] = []
        parsed = []
        for path, text in zip(subject.version_files, subject.texts, strict=True):
            try:
                parsed.append(parse_schema(text))
            except InvalidSchema as exc:
                messages.append(f"{path.name}: invalid schema: {exc}")
        if not messages:
            for n in range(1, len(parsed)):
                result = check_compatibility(parsed[n], parsed[:n], subject.level)
                messages += [f"v{n + 1}: {m}" for m in result.messages]
        results.append(
            SubjectCheck(
                subject.name, subject.level, len(subject.version_files), not messages, messages
            )
        )
    return results
