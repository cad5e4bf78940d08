"""Avro in Confluent's wire format: magic byte 0, the 4-byte big-endian schema id, Avro binary.

Example::

    client = RegistryClient("http://127.0.0.1:8085")
    serializer = AvroSerializer(client, "retail.order_placed-value", v2_text)
    data = serializer.serialize(record)                 # registers v2 on first use

    deserializer = AvroDeserializer(client, reader_schema=v2_text)
    record, schema_id = deserializer.deserialize(data)  # v1 bytes come out as v2 records

Bytes written by Confluent's serializers (and by Apicurio's with its 4-byte, Confluent-compatible
id handler) read here, and the other way round. ``RegistryClient`` talks to any registry with
Confluent's REST API: this project's, Confluent's, or Apicurio's ``/apis/ccompat/v7``.

Decoding failures are ``DecodeError`` subclasses that keep the raw bytes (``exc.data``), so a
pipeline can dead-letter the exact payload: ``BadMagicByte``, ``UnknownSchemaId``,
``TruncatedPayload``, ``CorruptPayload``, ``SchemaMismatch`` and ``PayloadTooLarge``. A registry
that cannot be reached raises ``RegistryClientError`` instead: that is not the payload's fault
and the message should be retried, not dead-lettered.

Speed: parsed schemas are cached by id (one registry request per id per ``SchemaCache``; pass one
cache to several deserializers to share it), the 5-byte header is built once per serializer, and
the hot path does no JSON work.
"""

from __future__ import annotations

import io
import json
import struct
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import fastavro
import httpx
from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAGIC_BYTE",
    "AvroDeserializer",
    "AvroSerializer",
    "BadMagicByte",
    "CorruptPayload",
    "DecodeError",
    "PayloadTooLarge",
    "RegisteredSchema",
    "RegistryClient",
    "RegistryClientError",
    "SchemaCache",
    "SchemaMismatch",
    "SerializationError",
    "TruncatedPayload",
    "UnknownSchemaId",
    "parse_avro",
]

MAGIC_BYTE = 0
HEADER_SIZE = 5
#: Default largest payload a deserializer accepts (Kafka's default message size limit).
DEFAULT_MAX_BYTES = 1 << 20
_HEADER = struct.Struct(">bI")
_ACCEPT = (
    "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json, application/json"
)


# -- errors ----------------------------------------------------------------------------------------


class DecodeError(ValueError):
    """A payload that cannot be decoded; ``data`` is the raw bytes as received.

    Attributes:
        data: the payload, unchanged.
        schema_id: the id from the header, when the header could be read.
    """

    def __init__(self, message: str, data: bytes, schema_id: int | None = None) -> None:
        super().__init__(message)
        self.data = bytes(data)
        self.schema_id = schema_id


class BadMagicByte(DecodeError):
    """The first byte is not 0: not Confluent wire format (plain JSON, another serializer...)."""


class UnknownSchemaId(DecodeError):
    """The registry has no schema with the header's id (deleted, or another registry's)."""


class TruncatedPayload(DecodeError):
    """Shorter than the 5-byte header, or the Avro body ends before the record does."""


class CorruptPayload(DecodeError):
    """The Avro body is not a valid encoding for the writer schema, or has trailing bytes."""


class SchemaMismatch(DecodeError):
    """The writer's schema cannot be read with the reader schema (they are not compatible)."""


class PayloadTooLarge(DecodeError):
    """Larger than the deserializer's ``max_bytes``; not even looked at."""


class SerializationError(ValueError):
    """A record that does not match the serializer's schema."""


class RegistryClientError(Exception):
    """The registry refused a request or could not be reached.

    Attributes:
        status: HTTP status (0 when there was no response).
        error_code: the registry's ``error_code`` (-1 when there was none).
    """

    def __init__(self, message: str, status: int = 0, error_code: int = -1) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code


# -- registry client -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisteredSchema:
    subject: str
    schema_id: int
    version: int | None
    schema: str


class RegistryClient:
    """A small, thread-safe client for the Confluent Schema Registry REST API.

    Args:
        url: base URL, e.g. ``http://127.0.0.1:8085`` or Apicurio's
            ``http://host:8080/apis/ccompat/v7``.
        timeout: seconds per request.
        headers: extra headers (authentication, for example).
    """

    def __init__(
        self, url: str, timeout: float = 10.0, headers: Mapping[str, str] | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.headers = dict(headers or {})
        self._http = self._connect()

    def _connect(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, timeout=self.timeout, headers={"Accept": _ACCEPT, **self.headers}
        )

    # Pickling (Beam ships DoFns and their attributes to workers): the connection pool is
    # process-local, so it is dropped and reopened on the other side.
    def __getstate__(self) -> dict:
        return {"url": self.url, "timeout": self.timeout, "headers": self.headers}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._http = self._connect()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(self, method: str, path: str, body: dict | None = None) -> Any:
        try:
            response = self._http.request(
                method,
                path,
                json=body,
                headers={"Content-Type": "application/vnd.schemaregistry.v1+json"}
                if body is not None
                else None,
            )
        except httpx.HTTPError as exc:
            raise RegistryClientError(f"{method} {self.url}{path}: {exc}") from exc
        if response.status_code >= 400:
            try:
                error = response.json()
                code, message = int(error.get("error_code", -1)), str(error.get("message"))
            except (ValueError, AttributeError):
                code, message = -1, response.text[:500]
            raise RegistryClientError(
                f"{method} {self.url}{path}: HTTP {response.status_code} ({code}): {message}",
                response.status_code,
                code,
            )
        try:
            return response.json()
        except ValueError as exc:  # a proxy's HTML page, for example
            raise RegistryClientError(
                f"{method} {self.url}{path}: not JSON: {response.text[:200]}",
                response.status_code,
            ) from exc

    def get_schema(self, schema_id: int) -> str:
        """The schema text of a global id.

        Raises:
            RegistryClientError: status 404 when the id is unknown; other failures too.
        """
        answer = self._request("GET", f"/schemas/ids/{int(schema_id)}")
        kind = answer.get("schemaType") or "AVRO"
        if kind != "AVRO":
            raise RegistryClientError(f"schema {schema_id} is {kind}, not AVRO", 200, -1)
        return answer["schema"]

    def register(self, subject: str, schema: str) -> int:
        """Register ``schema`` (Avro JSON text) under ``subject``; return its global id."""
        answer = self._request("POST", f"/subjects/{_quote(subject)}/versions", {"schema": schema})
        return int(answer["id"])

    def lookup(self, subject: str, schema: str) -> RegisteredSchema:
        """The id and version ``schema`` has under ``subject`` (404 if it was not registered)."""
        answer = self._request("POST", f"/subjects/{_quote(subject)}", {"schema": schema})
        return RegisteredSchema(subject, int(answer["id"]), answer.get("version"), answer["schema"])

    def latest(self, subject: str) -> RegisteredSchema:
        answer = self._request("GET", f"/subjects/{_quote(subject)}/versions/latest")
        return RegisteredSchema(subject, int(answer["id"]), answer.get("version"), answer["schema"])


def _quote(subject: str) -> str:
    return urllib.parse.quote(subject, safe="")


# -- schemas ---------------------------------------------------------------------------------------


def parse_avro(schema: str | Mapping | list) -> Any:
    """A fastavro-parsed schema from Avro JSON text (or decoded JSON)."""
    decoded = json.loads(schema) if isinstance(schema, str) else schema
    return fastavro.parse_schema(decoded)


class SchemaCache:
    """Thread-safe cache of parsed writer schemas by global id.

    A hit is one dict lookup with no lock; a miss asks the registry once, even when many
    threads miss the same id together.
    """

    def __init__(self, client: RegistryClient) -> None:
        self.client = client
        self._schemas: dict[int, Any] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {"client": self.client}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["client"])

    def get(self, schema_id: int) -> Any:
        """The parsed schema of ``schema_id``.

        Raises:
            RegistryClientError: from the client (status 404 for an unknown id).
        """
        parsed = self._schemas.get(schema_id)
        if parsed is not None:
            return parsed
        with self._lock:
            parsed = self._schemas.get(schema_id)
            if parsed is None:
                parsed = self._schemas[schema_id] = parse_avro(self.client.get_schema(schema_id))
            return parsed

    def __len__(self) -> int:
        return len(self._schemas)


# -- serializer ------------------------------------------------------------------------------------


class AvroSerializer:
    """Records (dicts) to Confluent wire-format bytes for one subject and schema.

    The schema is registered (or, with ``auto_register=False``, looked up) on first use, once.

    Args:
        client: the registry client.
        subject: e.g. ``retail.order_placed-value``.
        schema: Avro JSON text of the writer schema.
        auto_register: register the schema if missing; otherwise it must be registered already.
        strict: reject records with fields the schema does not have.
    """

    def __init__(
        self,
        client: RegistryClient,
        subject: str,
        schema: str,
        auto_register: bool = True,
        strict: bool = False,
    ) -> None:
        self.client = client
        self.subject = subject
        self.schema_text = schema
        self.auto_register = auto_register
        self.strict = strict
        self._parsed = parse_avro(schema)  # fails here, not on the first record
        self._header: bytes | None = None
        self._schema_id: int | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def schema_id(self) -> int:
        """The schema's global id (registers or looks it up on first use)."""
        if self._schema_id is None:
            self._resolve()
        assert self._schema_id is not None
        return self._schema_id

    def _resolve(self) -> bytes:
        with self._lock:
            if self._header is None:
                if self.auto_register:
                    schema_id = self.client.register(self.subject, self.schema_text)
                else:
                    schema_id = self.client.lookup(self.subject, self.schema_text).schema_id
                self._schema_id = schema_id
                self._header = _HEADER.pack(MAGIC_BYTE, schema_id)
            return self._header

    def serialize(self, record: Mapping[str, Any]) -> bytes:
        """Encode one record.

        Raises:
            SerializationError: the record does not match the schema.
            RegistryClientError: the first call could not register or find the schema.
        """
        header = self._header or self._resolve()
        out = io.BytesIO()
        out.write(header)
        try:
            schemaless_writer(out, self._parsed, record, strict=self.strict)
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            raise SerializationError(f"record does not match {self.subject}: {exc}") from exc
        return out.getvalue()

    __call__ = serialize


# -- deserializer ----------------------------------------------------------------------------------


class AvroDeserializer:
    """Confluent wire-format bytes to records, optionally resolved to one reader schema.

    Args:
        client: the registry client (or pass ``cache`` to share one cache).
        reader_schema: Avro JSON text the records should have; bytes written with any schema
            the reader can read (per Avro resolution) come out in this shape. None returns each
            record as written.
        max_bytes: larger payloads raise ``PayloadTooLarge`` without being decoded.
        cache: a ``SchemaCache`` shared with other deserializers.
    """

    def __init__(
        self,
        client: RegistryClient | None = None,
        reader_schema: str | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        cache: SchemaCache | None = None,
    ) -> None:
        if cache is None:
            if client is None:
                raise ValueError("give a RegistryClient or a SchemaCache")
            cache = SchemaCache(client)
        self.cache = cache
        self.reader_schema = reader_schema
        self.max_bytes = max_bytes
        self._reader = None if reader_schema is None else parse_avro(reader_schema)
        # id -> (writer, reader or None): fastavro compares writer and reader on every call and
        # resolves when they differ, so an equal reader is dropped once here instead.
        self._plans: dict[int, tuple[Any, Any]] = {}

    def deserialize(self, data: bytes) -> tuple[dict, int]:
        """Decode one payload; return ``(record, writer schema id)``.

        Raises:
            DecodeError: a subclass naming what is wrong with ``data`` (kept on the error).
            RegistryClientError: the registry could not be asked (retry; the data may be fine).
        """
        size = len(data)
        if size > self.max_bytes:
            raise PayloadTooLarge(f"payload of {size} bytes exceeds {self.max_bytes}", data)
        if size == 0:
            raise TruncatedPayload("empty payload", data)
        if data[0] != MAGIC_BYTE:
            raise BadMagicByte(f"magic byte is {data[0]}, expected {MAGIC_BYTE}", data)
        if size < HEADER_SIZE:
            raise TruncatedPayload(f"{size} bytes, shorter than the 5-byte header", data)
        _, schema_id = _HEADER.unpack_from(data)
        plan = self._plans.get(schema_id)
        if plan is None:
            plan = self._plan(schema_id, data)
        stream = io.BytesIO(data)
        stream.seek(HEADER_SIZE)
        try:
            record = schemaless_reader(stream, plan[0], plan[1])
        except EOFError as exc:
            raise TruncatedPayload(
                f"Avro body ends early for schema {schema_id}: {exc}", data, schema_id
            ) from exc
        except SchemaResolutionError as exc:
            raise SchemaMismatch(
                f"schema {schema_id} cannot be read as the reader schema: {exc}", data, schema_id
            ) from exc
        except Exception as exc:  # fastavro raises anything from IndexError to UnicodeError
            raise CorruptPayload(
                f"not a valid Avro body for schema {schema_id}: {type(exc).__name__}: {exc}",
                data,
                schema_id,
            ) from exc
        end = stream.tell()
        if end != size:
            raise CorruptPayload(
                f"{size - end} trailing bytes after the record (schema {schema_id})",
                data,
                schema_id,
            )
        return record, schema_id

    def _plan(self, schema_id: int, data: bytes) -> tuple[Any, Any]:
        try:
            writer = self.cache.get(schema_id)
        except RegistryClientError as exc:
            if exc.status == 404:
                raise UnknownSchemaId(
                    f"schema id {schema_id} is not in the registry", data, schema_id
                ) from exc
            raise
        reader = None if self._reader == writer else self._reader
        # A race here only computes the same plan twice.
        plan = self._plans[schema_id] = (writer, reader)
        return plan

    def __call__(self, data: bytes) -> dict:
        return self.deserialize(data)[0]
