"""The registry's state and its durable home: a compacted Kafka topic, ``_schemas`` by default.

Example::

    store = KafkaStore("127.0.0.1:9092")
    store.start()                     # creates the topic if missing, replays it, then serves
    schema_id, version = store.register("retail.order_placed-value", schema_text)
    store.get_version("retail.order_placed-value", LATEST)["id"] == schema_id
    store.close()

Every state change is one or more keyed JSON records in the topic (one partition, so one total
order; ``cleanup.policy=compact``, so the latest record per key is the state):

- ``{"keytype":"SCHEMA","subject":S,"version":V}`` -> ``{"subject","version","id","schemaType",
  "schema","deleted"}``; a tombstone (no value) is a permanent delete.
- ``{"keytype":"SCHEMA_ID","id":N}`` -> ``{"id":N,"fingerprint":F}``: reserves a global id for a
  schema content. It is never deleted, so an id is never reused and the same content gets the same
  id again even after every version using it was permanently deleted (the schema text itself is
  not kept there: a permanent delete still removes the text).
- ``{"keytype":"CONFIG","subject":S or null}`` -> ``{"compatibilityLevel":L}``; a tombstone
  removes a subject's own level.

Because the state is a function of the latest record per key, compaction never changes it. On
start the whole topic is read before the service answers. A write is produced synchronously
(``acks=all``, idempotent producer) and applied to memory only once the broker acknowledged it,
so memory never holds anything the topic does not.

Single instance: this process is the only writer and never re-reads the topic after start.
Two instances on one topic would each miss the other's writes and could hand out the same id;
run one (the stack does).

Operations that write several records (deleting a subject, for example) are not atomic, as in
Confluent's own Kafka store: if the broker fails half-way the request fails with 50001 and the
records already written stay written; repeating the request finishes it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import avro.schema

from retail_backbone.schemas.compatibility import (
    InvalidSchema,
    Level,
    parse_schema,
    reader_writer_problems,
)

__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_TOPIC",
    "LATEST",
    "KafkaStore",
    "PreparedSchema",
    "RegistryError",
    "RegistryState",
    "StoreUnavailable",
    "compatibility_problems",
    "prepare_schema",
]

log = logging.getLogger(__name__)

DEFAULT_TOPIC = "_schemas"
#: Confluent's default global level.
DEFAULT_LEVEL = Level.BACKWARD
#: Version number that means "the latest version" (the REST API's ``latest`` or ``-1``).
LATEST = -1
SUPPORTED_TYPES = ("AVRO",)


class RegistryError(Exception):
    """A request the registry refuses, with Confluent's HTTP status and error code."""

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


class StoreUnavailable(RuntimeError):
    """Kafka could not be reached, or the topic is unusable, while starting."""


# Confluent's messages (io.confluent.kafka.schemaregistry.rest.exceptions.Errors), so that tools
# matching on them keep working.


def subject_not_found(subject: str) -> RegistryError:
    return RegistryError(404, 40401, f"Subject '{subject}' not found.")


def version_not_found(version: int) -> RegistryError:
    return RegistryError(404, 40402, f"Version {version} not found.")


def schema_not_found(schema_id: int | None = None) -> RegistryError:
    return RegistryError(
        404, 40403, "Schema not found" if schema_id is None else f"Schema {schema_id} not found"
    )


def invalid_schema(message: str) -> RegistryError:
    return RegistryError(422, 42201, message)


def store_error(action: str, cause: object) -> RegistryError:
    return RegistryError(500, 50001, f"{action} failed while writing to the Kafka store: {cause}")


# -- schema text -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedSchema:
    """A validated schema and the two forms the registry keeps of it.

    Attributes:
        parsed: the Apache ``avro`` schema (what compatibility checks use).
        canonical: compact JSON with the submitted key order; what the registry stores and
            returns.
        fingerprint: SHA-256 of the JSON with sorted keys and no whitespace. Two submissions
            that differ only in whitespace or in the order of JSON object keys have the same
            fingerprint, hence the same global id (Confluent also ignores both).
    """

    parsed: avro.schema.Schema
    canonical: str
    fingerprint: str


def _fingerprint(decoded: Any) -> str:
    text = json.dumps(decoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"AVRO\n{text}".encode()).hexdigest()


def prepare_schema(text: object, schema_type: object = None) -> PreparedSchema:
    """Validate a submitted schema.

    Raises:
        RegistryError: 42201 for an empty, non-Avro or invalid schema; the message names the
            problem.
    """
    kind = "AVRO" if schema_type is None else str(schema_type).upper()
    if kind not in SUPPORTED_TYPES:
        raise invalid_schema(
            f"Invalid schema type {schema_type}: this registry supports AVRO schemas only"
        )
    if not isinstance(text, str) or not text.strip():
        raise invalid_schema(
            "Empty schema" if text in (None, "") else "'schema' must be a string of JSON text"
        )
    try:
        decoded = json.loads(text)
    except json.JSONDecodeError as exc:
        raise invalid_schema(f"Invalid schema: not JSON: {exc}") from exc
    try:
        parsed = parse_schema(decoded)
    except InvalidSchema as exc:
        raise invalid_schema(f"Invalid schema: {exc}") from exc
    canonical = json.dumps(decoded, separators=(",", ":"), ensure_ascii=False)
    return PreparedSchema(parsed, canonical, _fingerprint(decoded))


def compatibility_problems(
    new: avro.schema.Schema,
    previous: Sequence[tuple[int, avro.schema.Schema]],
    level: Level,
) -> list[str]:
    """Why ``new`` may not follow ``previous`` ((version, schema), oldest first) at ``level``.

    The verdicts are ``compatibility.check_compatibility``'s; this variant names the previous
    versions by their real numbers (that function counts positions, which differ once versions
    were deleted).
    """
    if level is Level.NONE or not previous:
        return []
    against = previous if level.transitive else previous[-1:]
    messages: list[str] = []
    for version, old in reversed(against):
        if level.checks_backward:
            messages += [
                f"BACKWARD: the new schema cannot read data written with version {version}: {p}"
                for p in reader_writer_problems(new, old)
            ]
        if level.checks_forward:
            messages += [
                f"FORWARD: version {version} cannot read data written with the new schema: {p}"
                for p in reader_writer_problems(old, new)
            ]
    return messages


# -- in-memory state -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Version:
    subject: str
    version: int
    schema_id: int
    deleted: bool


def _key(**fields: Any) -> bytes:
    # Compaction works on exact key bytes: sorted keys and fixed separators keep them stable.
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def _value(fields: dict | None) -> bytes | None:
    return None if fields is None else json.dumps(fields, separators=(",", ":")).encode()


Record = tuple[dict, dict | None]


class RegistryState:
    """Everything the registry knows, rebuilt by applying the topic's records in order.

    Not thread-safe by itself; ``KafkaStore`` serialises access.
    """

    def __init__(self) -> None:
        self.subjects: dict[str, dict[int, Version]] = {}
        self.texts: dict[int, str] = {}  # id -> schema, while any version (even deleted) uses it
        self.refs: dict[int, set[tuple[str, int]]] = {}
        self.fingerprints: dict[str, int] = {}
        self.id_fingerprints: dict[int, str] = {}
        self.configs: dict[str | None, Level] = {}
        self.max_id = 0

    def apply(self, key: dict, value: dict | None) -> None:
        kind = key.get("keytype")
        if kind == "SCHEMA":
            self._apply_schema(key["subject"], int(key["version"]), value)
        elif kind == "SCHEMA_ID":
            if value is not None:
                self._reserve(int(value["id"]), value["fingerprint"])
        elif kind == "CONFIG":
            if value is None:
                self.configs.pop(key.get("subject"), None)
            else:
                self.configs[key.get("subject")] = Level(value["compatibilityLevel"])
        else:
            # A record from a newer release; skipping keeps this one readable, not writable.
            log.warning("skipping unknown record key %s", key)

    def _reserve(self, schema_id: int, fingerprint: str) -> None:
        self.fingerprints[fingerprint] = schema_id
        self.id_fingerprints[schema_id] = fingerprint
        self.max_id = max(self.max_id, schema_id)

    def _apply_schema(self, subject: str, number: int, value: dict | None) -> None:
        versions = self.subjects.setdefault(subject, {})
        old = versions.pop(number, None)
        if old is not None:
            users = self.refs.get(old.schema_id, set())
            users.discard((subject, number))
            if not users:
                self.refs.pop(old.schema_id, None)
                self.texts.pop(old.schema_id, None)
        if value is not None:
            schema_id = int(value["id"])
            versions[number] = Version(subject, number, schema_id, bool(value.get("deleted")))
            self.refs.setdefault(schema_id, set()).add((subject, number))
            self.texts.setdefault(schema_id, value["schema"])
            if schema_id not in self.id_fingerprints:
                # Written without its SCHEMA_ID record (never by this code): derive it.
                self._reserve(schema_id, _fingerprint(json.loads(value["schema"])))
            self.max_id = max(self.max_id, schema_id)
        if not versions:
            del self.subjects[subject]

    # -- queries -------------------------------------------------------------------------------

    def versions_of(self, subject: str, deleted: bool = False) -> list[Version]:
        """Versions of ``subject`` in order; soft-deleted ones only when ``deleted``."""
        found = self.subjects.get(subject, {})
        return [found[n] for n in sorted(found) if deleted or not found[n].deleted]

    def has_subject(self, subject: str, deleted: bool = False) -> bool:
        return bool(self.versions_of(subject, deleted))

    def level(self, subject: str | None) -> Level:
        if subject is not None and subject in self.configs:
            return self.configs[subject]
        return self.configs.get(None, DEFAULT_LEVEL)


# -- the store -------------------------------------------------------------------------------------


class KafkaStore:
    """The registry's operations, with Confluent's semantics, persisted in a Kafka topic.

    Reads are served from memory. Writes are serialised by one lock, produced, and applied to
    memory once acknowledged. Methods raise ``RegistryError`` for refused requests.

    Args:
        bootstrap: Kafka bootstrap servers.
        topic: the compacted topic holding the state.
        write_timeout: seconds a write may take before it fails with 50002.
        kafka_config: extra librdkafka settings for the producer, consumer and admin client
            (security settings, for example).
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str = DEFAULT_TOPIC,
        *,
        write_timeout: float = 10.0,
        kafka_config: dict[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.write_timeout = write_timeout
        self._common = {"bootstrap.servers": bootstrap, **(kafka_config or {})}
        self._state = RegistryState()
        self._parsed: dict[int, avro.schema.Schema] = {}
        # Readers take _state_lock only briefly; writers hold _write_lock through the broker
        # round trip, so a slow broker never blocks reads.
        self._state_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._producer: Any = None

    # -- life cycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        """Create the topic if missing, read it from the beginning, open the producer.

        Args:
            timeout: seconds to wait for Kafka, and again to read the topic.

        Raises:
            StoreUnavailable: Kafka did not answer in time, the topic exists with more than one
                partition or without compaction, or it holds a record that is not the
                registry's.
        """
        from confluent_kafka import Producer

        self._ensure_topic(time.monotonic() + timeout)
        count = self._replay(time.monotonic() + timeout)
        self._producer = Producer(
            {
                **self._common,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 0,
                # Below the flush timeout, so every record gets a definite outcome.
                "message.timeout.ms": int(self.write_timeout * 1000),
            }
        )
        with self._state_lock:
            subjects, ids = len(self._state.subjects), len(self._state.texts)
        log.info(
            "read %d records from %s: %d subjects, %d schemas", count, self.topic, subjects, ids
        )

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(self.write_timeout)
            self._producer = None

    def _ensure_topic(self, deadline: float) -> None:
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

        admin = AdminClient(self._common)
        last: object = None
        while time.monotonic() < deadline:
            try:
                # All topics, not just ours: a request naming a missing topic could auto-create
                # it with the broker's defaults (several partitions, no compaction).
                meta = admin.list_topics(timeout=5)
                found = meta.topics.get(self.topic)
                if found is None or found.error is not None:
                    replicas = max(1, min(3, len(meta.brokers)))
                    new = NewTopic(self.topic, 1, replicas, config={"cleanup.policy": "compact"})
                    try:
                        admin.create_topics([new])[self.topic].result(10)
                        log.info("created topic %s (compacted, 1 partition)", self.topic)
                    except KafkaException as exc:
                        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                            raise
                    continue  # read the metadata again, now with the topic
                if len(found.partitions) != 1:
                    raise StoreUnavailable(
                        f"topic {self.topic} has {len(found.partitions)} partitions; the registry "
                        "needs exactly 1 for a single order of its records"
                    )
                resource = ConfigResource(ConfigResource.Type.TOPIC, self.topic)
                configs = admin.describe_configs([resource])[resource].result(10)
                policy = configs["cleanup.policy"].value or ""
                if "compact" not in policy:
                    raise StoreUnavailable(
                        f"topic {self.topic} has cleanup.policy={policy}; it must be 'compact' or "
                        "old schemas would be deleted by retention"
                    )
                return
            except KafkaException as exc:
                last = exc
                time.sleep(1)
        raise StoreUnavailable(f"Kafka at {self.bootstrap} did not answer: {last or 'timeout'}")

    def _replay(self, deadline: float) -> int:
        from confluent_kafka import (
            OFFSET_BEGINNING,
            Consumer,
            KafkaError,
            KafkaException,
            TopicPartition,
        )

        consumer = Consumer(
            {
                **self._common,
                "group.id": f"_schemas-reader-{uuid.uuid4().hex[:8]}",  # assign() only; no commits
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "log_level": 3,
            }
        )
        count = 0
        try:
            try:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, 0), timeout=max(1.0, deadline - time.monotonic())
                )
            except KafkaException as exc:
                raise StoreUnavailable(f"reading the end offset of {self.topic}: {exc}") from exc
            if high <= 0:
                return 0
            consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
            while time.monotonic() < deadline:
                for msg in consumer.consume(num_messages=1000, timeout=1.0):
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            return count
                        raise StoreUnavailable(f"reading {self.topic}: {err}")
                    try:
                        key, value = json.loads(msg.key()), msg.value()
                        self._state.apply(key, None if value is None else json.loads(value))
                    except (TypeError, ValueError, KeyError) as exc:
                        # Serving a state with a hole in it would be worse than not serving.
                        raise StoreUnavailable(
                            f"{self.topic} offset {msg.offset()} is not a registry record: {exc}"
                        ) from exc
                    count += 1
            raise StoreUnavailable(f"reading {self.topic} did not reach its end in time")
        finally:
            consumer.close()

    # -- writing -------------------------------------------------------------------------------

    def _write(self, records: Sequence[Record], action: str) -> None:
        """Produce ``records`` in order and apply those the broker acknowledged.

        Call with ``_write_lock`` held.
        """
        from confluent_kafka import KafkaError, KafkaException

        if self._producer is None:
            raise RegistryError(500, 50001, "the store is not started")
        outcomes: list[object] = [None] * len(records)

        def delivered(index: int, err: object, _msg: object) -> None:
            outcomes[index] = err if err is not None else True

        failure: object = None
        produced = 0
        for index, (key, value) in enumerate(records):
            try:
                self._producer.produce(
                    self.topic,
                    key=_key(**key),
                    value=_value(value),
                    partition=0,
                    on_delivery=functools.partial(delivered, index),
                )
                produced += 1
            except (KafkaException, BufferError) as exc:
                failure = exc.args[0] if exc.args else exc
                break
        left = self._producer.flush(self.write_timeout + 5)
        # Apply exactly what reached the log, in log order (one partition, idempotent producer).
        with self._state_lock:
            for (key, value), outcome in zip(records[:produced], outcomes, strict=False):
                if outcome is True:
                    self._state.apply(key, value)
        if failure is None:
            failure = next((o for o in outcomes[:produced] if o is not True), None)
        if failure is None:
            return
        code = getattr(failure, "code", lambda: None)()
        if code == KafkaError.MSG_SIZE_TOO_LARGE:
            raise RegistryError(422, 42209, f"{action} failed because the schema is too large")
        if left or code == KafkaError._MSG_TIMED_OUT:
            raise RegistryError(500, 50002, f"{action} timed out writing to the Kafka store")
        raise store_error(action, failure)

    # -- reads ---------------------------------------------------------------------------------

    def subjects(
        self, deleted: bool = False, deleted_only: bool = False, prefix: str = ""
    ) -> list[str]:
        """Subject names, sorted. A subject whose versions are all soft-deleted is "deleted"."""
        with self._state_lock:
            out = []
            for name, versions in self._state.subjects.items():
                if not name.startswith(prefix):
                    continue
                gone = all(v.deleted for v in versions.values())
                if (deleted_only and gone) or (not deleted_only and (deleted or not gone)):
                    out.append(name)
        return sorted(out)

    def versions(self, subject: str, deleted: bool = False, deleted_only: bool = False) -> list:
        with self._state_lock:
            found = self._state.versions_of(subject, deleted or deleted_only)
        if not found:
            raise subject_not_found(subject)
        return [v.version for v in found if v.deleted or not deleted_only]

    def _find(self, subject: str, number: int, deleted: bool) -> Version:
        """The version ``number`` (or ``LATEST``); call with ``_state_lock`` or ``_write_lock``."""
        versions = self._state.versions_of(subject, deleted)
        if number == LATEST:
            if versions:
                return versions[-1]
        else:
            match = next((v for v in versions if v.version == number), None)
            if match is not None:
                return match
        if not versions:
            raise subject_not_found(subject)
        raise version_not_found(number)

    def _describe(self, version: Version) -> dict:
        return {
            "subject": version.subject,
            "version": version.version,
            "id": version.schema_id,
            "schema": self._state.texts[version.schema_id],
        }

    def get_version(self, subject: str, number: int, deleted: bool = False) -> dict:
        """``{"subject","version","id","schema"}`` of one version (``number`` may be LATEST)."""
        with self._state_lock:
            return self._describe(self._find(subject, number, deleted))

    def schema_by_id(self, schema_id: int) -> str:
        """The schema text of a global id; soft-deleted versions still count (to decode data)."""
        with self._state_lock:
            text = self._state.texts.get(schema_id)
        if text is None:
            raise schema_not_found(schema_id)
        return text

    def id_versions(self, schema_id: int, deleted: bool = False) -> list[dict]:
        """``[{"subject","version"}]`` using ``schema_id``, sorted."""
        with self._state_lock:
            users = sorted(self._state.refs.get(schema_id, ()))
            if not users:
                raise schema_not_found(schema_id)
            found = [
                {"subject": s, "version": n}
                for s, n in users
                if deleted or not self._state.subjects[s][n].deleted
            ]
        return found

    def lookup(
        self, subject: str, text: object, schema_type: object = None, deleted: bool = False
    ) -> dict:
        """The version of ``subject`` holding this schema (the newest if several).

        Raises:
            RegistryError: 40401 when the subject has no versions, 42201 for an invalid schema,
                40403 when no version of the subject holds it.
        """
        with self._state_lock:
            if not self._state.has_subject(subject, deleted):
                raise subject_not_found(subject)
        prepared = prepare_schema(text, schema_type)
        with self._state_lock:
            schema_id = self._state.fingerprints.get(prepared.fingerprint)
            matches = [
                v for v in self._state.versions_of(subject, deleted) if v.schema_id == schema_id
            ]
            if not matches:
                raise schema_not_found()
            return self._describe(matches[-1])

    def get_config(self, subject: str | None = None, default_to_global: bool = False) -> Level:
        """The subject's own level (or the global one when ``subject`` is None).

        Raises:
            RegistryError: 40408 when the subject has no level of its own and not
                ``default_to_global``.
        """
        with self._state_lock:
            if subject is None or default_to_global:
                return self._state.level(subject)
            level = self._state.configs.get(subject)
        if level is None:
            raise RegistryError(
                404,
                40408,
                f"Subject '{subject}' does not have subject-level compatibility configured",
            )
        return level

    def _parsed_schema(self, schema_id: int, text: str) -> avro.schema.Schema:
        parsed = self._parsed.get(schema_id)
        if parsed is None:
            # Stored schemas were validated when registered; parsing them again is only slow.
            parsed = self._parsed[schema_id] = parse_schema(text)
        return parsed

    def check(
        self,
        subject: str,
        text: object,
        schema_type: object = None,
        number: int | None = None,
    ) -> list[str]:
        """Compatibility problems of a candidate schema (empty when compatible).

        Args:
            subject: the subject.
            text: the candidate schema.
            schema_type: the request's ``schemaType``.
            number: check against this version only (or LATEST); None checks against the live
                versions as registering would (all of them at transitive levels, else the
                latest). A missing subject or ``latest`` of an empty subject is compatible.

        Raises:
            RegistryError: 40402 for a missing version, 42201 for an invalid schema.
        """
        with self._state_lock:
            live = self._state.versions_of(subject)
            level = self._state.level(subject)
            if number is None:
                against = live
            elif number == LATEST:
                against = live[-1:]
            else:
                against = [v for v in live if v.version == number]
                if not against:
                    raise version_not_found(number)
            texts = [(v.version, v.schema_id, self._state.texts[v.schema_id]) for v in against]
        prepared = prepare_schema(text, schema_type)
        previous = [(n, self._parsed_schema(i, t)) for n, i, t in texts]
        return compatibility_problems(prepared.parsed, previous, level)

    # -- writes --------------------------------------------------------------------------------

    def register(self, subject: str, text: object, schema_type: object = None) -> tuple[int, int]:
        """Register a schema under ``subject``; return ``(id, version)``.

        An identical schema already live in the subject returns its id and version. The same
        content under any subject, or registered earlier and since deleted, keeps its id.

        Raises:
            RegistryError: 42201 invalid schema, 409 incompatible at the subject's level, 5xxxx
                when Kafka fails.
        """
        if not subject or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in subject):
            raise RegistryError(422, 42208, f"Invalid subject {subject!r}")
        prepared = prepare_schema(text, schema_type)
        with self._write_lock:
            state = self._state  # only writers change it, and we are the only writer now
            every = state.versions_of(subject, deleted=True)
            live = [v for v in every if not v.deleted]
            schema_id = state.fingerprints.get(prepared.fingerprint)
            for version in reversed(live):
                if version.schema_id == schema_id:
                    return schema_id, version.version
            level = state.level(subject)
            previous = [
                (v.version, self._parsed_schema(v.schema_id, state.texts[v.schema_id]))
                for v in live
            ]
            problems = compatibility_problems(prepared.parsed, previous, level)
            if problems:
                details = ", ".join([*problems, f"{{compatibility: '{level}'}}"])
                raise RegistryError(
                    409,
                    409,
                    "Schema being registered is incompatible with an earlier schema for subject "
                    f'"{subject}", details: [{details}]',
                )
            records: list[Record] = []
            if schema_id is None:
                schema_id = state.max_id + 1
                records.append(
                    (
                        {"keytype": "SCHEMA_ID", "id": schema_id},
                        {"id": schema_id, "fingerprint": prepared.fingerprint},
                    )
                )
            number = max((v.version for v in every), default=0) + 1
            # As Confluent: a soft-deleted earlier version with the same schema is dropped, so
            # that a lookup finds one version per schema.
            for old in every:
                if old.deleted and old.schema_id == schema_id:
                    records.append(({"keytype": "SCHEMA", **_vkey(old)}, None))
            records.append(
                (
                    {"keytype": "SCHEMA", "subject": subject, "version": number},
                    {
                        "subject": subject,
                        "version": number,
                        "id": schema_id,
                        "schemaType": "AVRO",
                        # One text per id: the first registration's, while it is kept.
                        "schema": state.texts.get(schema_id, prepared.canonical),
                        "deleted": False,
                    },
                )
            )
            self._parsed.setdefault(schema_id, prepared.parsed)
            self._write(records, "Register operation")
            log.info("registered %s version %d as id %d", subject, number, schema_id)
            return schema_id, number

    def delete_version(self, subject: str, number: int, permanent: bool = False) -> int:
        """Soft-delete one version, or permanently delete a soft-deleted one.

        Raises:
            RegistryError: 40401, 40402, 40406 (already soft-deleted), 40407 (permanent delete
                of a version that was not soft-deleted first).
        """
        with self._write_lock:
            state = self._state
            if number == LATEST:
                version = self._find(subject, LATEST, deleted=permanent)
            else:
                version = self._find(subject, number, deleted=True)
            if not permanent and version.deleted:
                raise RegistryError(
                    404,
                    40406,
                    f"Subject '{subject}' Version {version.version} was soft deleted. "
                    "Set permanent=true to delete permanently",
                )
            if permanent and not version.deleted:
                raise RegistryError(
                    404,
                    40407,
                    f"Subject '{subject}' Version {version.version} was not deleted first before "
                    "being permanently deleted",
                )
            key = {"keytype": "SCHEMA", **_vkey(version)}
            if permanent:
                records: list[Record] = [(key, None)]
                if len(state.versions_of(subject, deleted=True)) == 1:
                    records += self._config_tombstone(subject)  # the subject is gone: as Confluent
            else:
                records = [(key, self._version_value(version, deleted=True))]
            self._write(records, "Delete Schema Version operation")
            return version.version

    def delete_subject(self, subject: str, permanent: bool = False) -> list[int]:
        """Soft-delete every live version, or permanently delete an all-soft-deleted subject.

        Raises:
            RegistryError: 40401, 40404 (already soft-deleted), 40405 (permanent delete of a
                subject that was not soft-deleted first).
        """
        with self._write_lock:
            every = self._state.versions_of(subject, deleted=True)
            if not every:
                raise subject_not_found(subject)
            live = [v for v in every if not v.deleted]
            if permanent:
                if live:
                    raise RegistryError(
                        404,
                        40405,
                        f"Subject '{subject}' was not deleted first before being permanently "
                        "deleted",
                    )
                records: list[Record] = [
                    ({"keytype": "SCHEMA", **_vkey(v)}, None) for v in reversed(every)
                ]
                records += self._config_tombstone(subject)
                done = every
            else:
                if not live:
                    raise RegistryError(
                        404,
                        40404,
                        f"Subject '{subject}' was soft deleted.Set permanent=true to delete "
                        "permanently",
                    )
                records = [
                    ({"keytype": "SCHEMA", **_vkey(v)}, self._version_value(v, deleted=True))
                    for v in live
                ]
                done = live
            self._write(records, "Delete subject operation")
            return [v.version for v in done]

    def set_config(self, subject: str | None, level: Level) -> None:
        with self._write_lock:
            self._write(
                [({"keytype": "CONFIG", "subject": subject}, {"compatibilityLevel": str(level)})],
                "Update compatibility level",
            )

    def delete_config(self, subject: str | None) -> Level:
        """Remove a subject's own level (or reset the global one); return the removed level.

        Raises:
            RegistryError: 40401 when the subject has no level of its own (as Confluent).
        """
        with self._write_lock:
            previous = self._state.configs.get(subject)
            if previous is None:
                if subject is not None:
                    raise subject_not_found(subject)
                return DEFAULT_LEVEL
            self._write(
                [({"keytype": "CONFIG", "subject": subject}, None)], "Delete compatibility level"
            )
            return previous

    def _config_tombstone(self, subject: str) -> list[Record]:
        if subject in self._state.configs:
            return [({"keytype": "CONFIG", "subject": subject}, None)]
        return []

    def _version_value(self, version: Version, deleted: bool) -> dict:
        return {
            "subject": version.subject,
            "version": version.version,
            "id": version.schema_id,
            "schemaType": "AVRO",
            "schema": self._state.texts[version.schema_id],
            "deleted": deleted,
        }


def _vkey(version: Version) -> dict:
    return {"subject": version.subject, "version": version.version}
