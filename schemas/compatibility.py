"""Avro schema validation and compatibility with the Confluent Schema Registry levels.

Example::

    result = check_compatibility(new_text, [v1_text, v2_text], Level.BACKWARD)
    if not result.compatible:
        print("\\n".join(result.messages))

Semantics (as in Confluent Schema Registry):

- BACKWARD: the new schema can read data written with the previous one.
- FORWARD: the previous schema can read data written with the new one.
- FULL: both. NONE: no check.
- ``*_TRANSITIVE``: against every previous version instead of only the latest.

Parsing is the Apache ``avro`` package's. The reader/writer rules are the Avro specification's
schema resolution, the same as ``avro``'s ``ReaderWriterCompatibilityChecker`` (a port of Java's
``SchemaCompatibility``, which Confluent uses) gives, re-done here because of the defects listed at
``reader_writer_problems``. Two things are added because no library does them:

- Logical types: the Avro resolution rules ignore them, so a decimal whose scale changes, or a
  timestamp that goes from millis to micros, passes yet silently reads wrong values. Here those are
  incompatible.
- Defaults: ``avro`` does not validate field defaults and ``fastavro`` does not validate union
  defaults (which must match the union's first branch); a schema with a wrong default is invalid.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import avro.errors
import avro.schema

__all__ = [
    "CompatibilityResult",
    "InvalidSchema",
    "Level",
    "check_compatibility",
    "parse_schema",
    "reader_writer_problems",
]


class Level(StrEnum):
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"
    NONE = "NONE"

    @property
    def transitive(self) -> bool:
        return self.endswith("_TRANSITIVE")

    @property
    def checks_backward(self) -> bool:
        return self.startswith(("BACKWARD", "FULL"))

    @property
    def checks_forward(self) -> bool:
        return self.startswith(("FORWARD", "FULL"))


class InvalidSchema(ValueError):
    """The text is not a valid Avro schema; the message names the problem."""


@dataclass(frozen=True)
class CompatibilityResult:
    compatible: bool
    messages: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"compatible": self.compatible, "messages": list(self.messages)}


# -- parsing and validation --------------------------------------------------------------------


def parse_schema(schema: str | dict | list) -> avro.schema.Schema:
    """Parse and fully validate an Avro schema (JSON text or already-decoded JSON).

    Raises:
        InvalidSchema: not JSON, not Avro, unknown or duplicate named types, duplicate fields,
            bad enum symbols, or a default that does not match its field's type.
    """
    if isinstance(schema, str):
        try:
            decoded = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise InvalidSchema(f"not JSON: {exc}") from exc
    else:
        decoded = schema
    try:
        parsed = avro.schema.parse(json.dumps(decoded))
    except (avro.errors.AvroException, TypeError, ValueError) as exc:
        raise InvalidSchema(_clean_parse_error(exc)) from exc
    problems: list[str] = []
    _check_defaults(parsed, "", problems, set())
    if problems:
        raise InvalidSchema("; ".join(problems))
    return parsed


def _clean_parse_error(exc: Exception) -> str:
    text = str(exc)
    if "Could not make an Avro Schema object from" in text:
        name = text.rsplit("from", 1)[-1].strip()
        return f"unknown type {name!r} (not a primitive and not a named type defined before use)"
    if "already in use" in text:
        return text.split("not a valid Avro schema:")[-1].strip()
    return text


def _check_defaults(schema: avro.schema.Schema, path: str, problems: list[str], seen: set) -> None:
    if isinstance(schema, avro.schema.RecordSchema):
        if schema.fullname in seen:
            return
        seen.add(schema.fullname)
        for f in schema.fields:
            fpath = f"{path}/{f.name}"
            if f.has_default and not _default_matches(f.type, f.default):
                problems.append(
                    f"field {fpath or '/'}: default {json.dumps(f.default)} does not match type "
                    f"{_describe(f.type)}"
                )
            _check_defaults(f.type, fpath, problems, seen)
    elif isinstance(schema, avro.schema.ArraySchema):
        _check_defaults(schema.items, f"{path}[]", problems, seen)
    elif isinstance(schema, avro.schema.MapSchema):
        _check_defaults(schema.values, f"{path}{{}}", problems, seen)
    elif isinstance(schema, avro.schema.UnionSchema):
        for branch in schema.schemas:
            _check_defaults(branch, path, problems, seen)


_INT_RANGE = (-(2**31), 2**31 - 1)
_LONG_RANGE = (-(2**63), 2**63 - 1)


def _default_matches(schema: avro.schema.Schema, value: Any) -> bool:
    """Whether a JSON default value is valid for ``schema`` (Avro spec, "Complex Types")."""
    kind = schema.type
    if kind == "union":
        # A union's default must match its first branch.
        return _default_matches(schema.schemas[0], value)
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind in ("int", "long"):
        low, high = _INT_RANGE if kind == "int" else _LONG_RANGE
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    if kind in ("float", "double"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind in ("string", "bytes"):
        return isinstance(value, str)
    if kind == "fixed":
        return isinstance(value, str) and len(value.encode("latin-1", "replace")) == schema.size
    if kind == "enum":
        return isinstance(value, str) and value in schema.symbols
    if kind == "array":
        return isinstance(value, list) and all(_default_matches(schema.items, v) for v in value)
    if kind == "map":
        return isinstance(value, dict) and all(
            _default_matches(schema.values, v) for v in value.values()
        )
    if kind in ("record", "error"):
        if not isinstance(value, dict):
            return False
        for f in schema.fields:
            if f.name in value:
                if not _default_matches(f.type, value[f.name]):
                    return False
            elif not f.has_default:
                return False
        return True
    return False


def _describe(schema: avro.schema.Schema) -> str:
    if isinstance(schema, avro.schema.UnionSchema):
        return "union [" + ", ".join(_describe(s) for s in schema.schemas) + "]"
    if isinstance(schema, avro.schema.NamedSchema):
        return f"{schema.type} {schema.fullname}"
    logical = schema.get_prop("logicalType")
    return f"{schema.type} ({logical})" if logical else schema.type


# -- reader/writer checks ----------------------------------------------------------------------
#
# Why not ``avro.compatibility.ReaderWriterCompatibilityChecker`` as is: it keeps messages and
# locations in two unordered sets, so with more than one problem a message cannot be paired with
# its location, and identical messages at different places collapse into one; it compares a
# reader alias with the writer's full name without qualifying the alias by the reader's namespace
# (so ``"aliases": ["OldName"]`` in a namespaced record is ignored); and it ignores logical types.
# The rules below are the Avro specification's schema-resolution rules (the same verdicts as the
# avro checker on everything else, which the tests compare), with one problem per location.

_PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}


def reader_writer_problems(reader: avro.schema.Schema, writer: avro.schema.Schema) -> list[str]:
    """Why data written with ``writer`` cannot be read with ``reader`` (empty when it can)."""
    problems: list[str] = []
    _resolve(reader, writer, "", problems, set())
    return list(dict.fromkeys(problems))


def _can_read(reader: avro.schema.Schema, writer: avro.schema.Schema, seen: set) -> bool:
    probe: list[str] = []
    _resolve(reader, writer, "", probe, seen)
    return not probe


def _names_match(reader: avro.schema.NamedSchema, writer: avro.schema.NamedSchema) -> bool:
    if reader.name == writer.name:
        return True
    for alias in reader.props.get("aliases") or []:
        full = alias if "." in alias else ".".join(filter(None, [reader.namespace, alias]))
        if full == writer.fullname or alias == writer.fullname:
            return True
    return False


def _resolve(
    reader: avro.schema.Schema, writer: avro.schema.Schema, path: str, out: list[str], seen: set
) -> None:
    where = path or "/"
    key = (id(reader), id(writer))
    if key in seen:  # recursive types: this pair is already being checked further up
        return
    seen.add(key)
    try:
        if isinstance(writer, avro.schema.UnionSchema):
            for branch in writer.schemas:
                if isinstance(reader, avro.schema.UnionSchema):
                    if not any(_can_read(r, branch, seen) for r in reader.schemas):
                        out.append(
                            f"{where}: the writer's union branch {_describe(branch)} has no "
                            f"matching branch in the reader's {_describe(reader)}"
                        )
                else:
                    sub: list[str] = []
                    _resolve(reader, branch, path, sub, seen)
                    if sub:
                        out.append(
                            f"{where}: the writer may write {_describe(branch)} (a branch of its "
                            f"{_describe(writer)}), which the reader's {_describe(reader)} "
                            "cannot read"
                        )
            return
        if isinstance(reader, avro.schema.UnionSchema):
            if not any(_can_read(r, writer, seen) for r in reader.schemas):
                out.append(
                    f"{where}: the reader's {_describe(reader)} has no branch for the writer's "
                    f"{_describe(writer)}"
                )
            else:
                match = next(r for r in reader.schemas if _can_read(r, writer, seen))
                out.extend(_logical_problems(match, writer, where))
            return
        r_kind, w_kind = reader.type, writer.type
        if r_kind != w_kind:
            if r_kind in _PROMOTIONS.get(w_kind, ()):
                return
            out.append(
                f"{where}: the writer's {_describe(writer)} cannot be read as the reader's "
                f"{_describe(reader)}"
            )
            return
        if r_kind in ("record", "error"):
            if not _names_match(reader, writer):
                out.append(
                    f"{where}: record renamed from {writer.fullname} to {reader.fullname} "
                    "without an alias"
                )
                return
            writer_fields = writer.fields_dict
            for rf in reader.fields:
                wf = writer_fields.get(rf.name) or next(
                    (
                        writer_fields[a]
                        for a in (rf.props.get("aliases") or [])
                        if a in writer_fields
                    ),
                    None,
                )
                fpath = f"{path}/{rf.name}"
                if wf is None:
                    if not rf.has_default:
                        out.append(
                            f"{fpath}: field is in the reader but not in the writer, and has no "
                            "default"
                        )
                    continue
                _resolve(rf.type, wf.type, fpath, out, seen)
        elif r_kind == "enum":
            if not _names_match(reader, writer):
                out.append(
                    f"{where}: enum renamed from {writer.fullname} to {reader.fullname} "
                    "without an alias"
                )
                return
            missing = [s for s in writer.symbols if s not in reader.symbols]
            if missing and reader.props.get("default") not in reader.symbols:
                out.append(
                    f"{where}: the writer's enum symbols {missing} are unknown to the reader, "
                    "and the reader's enum has no default"
                )
        elif r_kind == "fixed":
            if not _names_match(reader, writer):
                out.append(f"{where}: fixed renamed from {writer.fullname} to {reader.fullname}")
            elif reader.size != writer.size:
                out.append(f"{where}: fixed size changed from {writer.size} to {reader.size}")
        elif r_kind == "array":
            _resolve(reader.items, writer.items, f"{path}[]", out, seen)
        elif r_kind == "map":
            _resolve(reader.values, writer.values, f"{path}{{}}", out, seen)
        else:
            out.extend(_logical_problems(reader, writer, where))
    finally:
        seen.discard(key)


def _logical(schema: avro.schema.Schema) -> tuple:
    logical = schema.get_prop("logicalType")
    if logical == "decimal":
        return (logical, schema.get_prop("precision"), schema.get_prop("scale") or 0)
    return (logical,) if logical else ()


def _logical_problems(reader: avro.schema.Schema, writer: avro.schema.Schema, where: str) -> list:
    """Logical-type changes that Avro resolution accepts but that change the meaning of values."""
    if reader.type != writer.type:
        return []
    r_log, w_log = _logical(reader), _logical(writer)
    if r_log == w_log:
        return []
    if r_log[:1] == w_log[:1] == ("decimal",):
        (_, r_prec, r_scale), (_, w_prec, w_scale) = r_log, w_log
        if r_scale != w_scale:
            return [
                f"{where}: decimal scale changed from {w_scale} to {r_scale}: values would be "
                "read multiplied or divided by a power of ten"
            ]
        if r_prec < w_prec:
            return [
                f"{where}: decimal precision shrinks from {w_prec} to {r_prec}: large values "
                "written cannot be represented by the reader"
            ]
        return []
    names = {r_log[0] if r_log else None, w_log[0] if w_log else None}
    if names <= {"uuid", None}:
        return []  # uuid annotates a string; adding or removing it keeps the values
    return [
        f"{where}: logical type changed from {w_log[0] if w_log else 'none'} to "
        f"{r_log[0] if r_log else 'none'} on {reader.type}: values would be misread"
    ]


# -- levels ------------------------------------------------------------------------------------


def check_compatibility(
    new: str | dict | avro.schema.Schema,
    previous: Sequence[str | dict | avro.schema.Schema],
    level: Level | str,
) -> CompatibilityResult:
    """Check ``new`` against ``previous`` versions (oldest first) at ``level``.

    Raises:
        InvalidSchema: if ``new`` or a previous version is not a valid schema.
        ValueError: for an unknown level.
    """
    level = Level(str(level).upper())
    new_schema = new if isinstance(new, avro.schema.Schema) else parse_schema(new)
    olds = [p if isinstance(p, avro.schema.Schema) else parse_schema(p) for p in previous]
    if level is Level.NONE or not olds:
        return CompatibilityResult(True)
    numbered = list(enumerate(olds, start=1))
    against = numbered if level.transitive else numbered[-1:]
    messages: list[str] = []
    for version, old in reversed(against):
        if level.checks_backward:
            for problem in reader_writer_problems(new_schema, old):
                messages.append(
                    f"BACKWARD: the new schema cannot read data written with previous version "
                    f"#{version}: {problem}"
                )
        if level.checks_forward:
            for problem in reader_writer_problems(old, new_schema):
                messages.append(
                    f"FORWARD: previous version #{version} cannot read data written with the new "
                    f"schema: {problem}"
                )
    return CompatibilityResult(not messages, messages)
