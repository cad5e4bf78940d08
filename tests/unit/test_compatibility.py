"""Compatibility engine: every level, every Avro type, and the fixes over the avro package."""

from __future__ import annotations

import json

import avro.schema
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from hypothesis import given, settings
from hypothesis import strategies as st

from retail_backbone.schemas.compatibility import (
    InvalidSchema,
    Level,
    check_compatibility,
    parse_schema,
    reader_writer_problems,
)


def rec(*fields, name="R", **extra):
    return {"type": "record", "name": name, "fields": list(fields), **extra}


def fld(name, type_, **extra):
    return {"name": name, "type": type_, **extra}


def enum(*symbols, name="E", **extra):
    return {"type": "enum", "name": name, "symbols": list(symbols), **extra}


def compat(new, prev, level):
    return check_compatibility(new, prev if isinstance(prev, list) else [prev], level)


V1 = rec(fld("a", "int"))
V2_ADD_DEFAULT = rec(fld("a", "int"), fld("b", "string", default="x"))
V2_ADD_REQUIRED = rec(fld("a", "int"), fld("b", "string"))
V2_DROP = rec()


# -- levels -----------------------------------------------------------------------------------

LEVEL_TABLE = [
    # (new, previous, {level: expected})
    (V2_ADD_DEFAULT, V1, dict(BACKWARD=True, FORWARD=True, FULL=True, NONE=True)),
    (V2_ADD_REQUIRED, V1, dict(BACKWARD=False, FORWARD=True, FULL=False, NONE=True)),
    (V2_DROP, V1, dict(BACKWARD=True, FORWARD=False, FULL=False, NONE=True)),
    (V1, V2_ADD_DEFAULT, dict(BACKWARD=True, FORWARD=True, FULL=True, NONE=True)),
]


@pytest.mark.parametrize("new,prev,expected", LEVEL_TABLE)
def test_levels(new, prev, expected):
    for level, want in expected.items():
        assert compat(new, prev, level).compatible is want, level
        assert (
            compat(new, prev, f"{level}_TRANSITIVE" if level != "NONE" else level).compatible
            is want
        )


def test_non_transitive_checks_only_the_latest_previous_version():
    v1 = rec(fld("a", "int"))
    v2 = rec(fld("a", "int"), fld("b", "int", default=0))
    v3 = rec(fld("b", "int", default=0))  # drops a (no default in v1): v1 cannot read v3 data
    assert compat(v3, [v1, v2], "FORWARD").compatible is False  # v2 lacks a default for a too
    v2b = rec(fld("a", "int", default=1), fld("b", "int", default=0))
    assert compat(v3, [v1, v2b], "FORWARD").compatible is True
    result = compat(v3, [v1, v2b], "FORWARD_TRANSITIVE")
    assert result.compatible is False
    assert result.messages == [
        "FORWARD: previous version #1 cannot read data written with the new schema: "
        "/a: field is in the reader but not in the writer, and has no default"
    ]


def test_backward_transitive_reports_each_failing_version():
    v1 = rec(fld("a", "int"))
    v2 = rec(fld("a", "long"))
    v3 = rec(fld("a", "int"))
    assert compat(v3, [v1, v2], "BACKWARD_TRANSITIVE").messages == [
        "BACKWARD: the new schema cannot read data written with previous version #2: "
        "/a: the writer's long cannot be read as the reader's int"
    ]


def test_full_reports_both_directions():
    new = rec(fld("a", "long"))
    result = compat(new, V1, "FULL")
    assert not result.compatible
    assert len(result.messages) == 1 and result.messages[0].startswith("FORWARD: ")


def test_no_previous_versions_is_compatible_and_levels_are_case_insensitive():
    assert compat(V1, [], "FULL_TRANSITIVE").compatible
    assert compat(V2_ADD_REQUIRED, V1, "backward").compatible is False
    with pytest.raises(ValueError):
        compat(V1, V1, "SIDEWAYS")
    assert Level.FULL_TRANSITIVE.transitive and not Level.FULL.transitive


# -- types ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "writer,reader,ok",
    [
        ("int", "long", True),
        ("int", "float", True),
        ("int", "double", True),
        ("long", "double", True),
        ("float", "double", True),
        ("string", "bytes", True),
        ("bytes", "string", True),
        ("long", "int", False),
        ("double", "float", False),
        ("string", "int", False),
        ("boolean", "int", False),
        ("null", "null", True),
    ],
)
def test_primitive_promotions(writer, reader, ok):
    problems = reader_writer_problems(
        parse_schema(rec(fld("a", reader))), parse_schema(rec(fld("a", writer)))
    )
    assert (problems == []) is ok


def test_enums_added_symbols_and_reader_default():
    old, new = rec(fld("e", enum("A", "B"))), rec(fld("e", enum("A", "B", "C")))
    assert compat(new, old, "BACKWARD").compatible
    fwd = compat(new, old, "FORWARD")
    assert fwd.messages == [
        "FORWARD: previous version #1 cannot read data written with the new schema: "
        "/e: the writer's enum symbols ['C'] are unknown to the reader, and the reader's enum "
        "has no default"
    ]
    old_d = rec(fld("e", enum("A", "B", default="A")))
    assert compat(new, old_d, "FULL").compatible


def test_unions():
    nullable = rec(fld("a", ["null", "int"], default=None))
    wider = rec(fld("a", ["null", "int", "string"], default=None))
    plain = rec(fld("a", "int"))
    assert compat(wider, nullable, "BACKWARD").compatible
    assert not compat(nullable, wider, "BACKWARD").compatible
    assert compat(nullable, plain, "BACKWARD").compatible  # int into a union with int
    msg = compat(plain, nullable, "BACKWARD").messages[0]
    assert "the writer may write null" in msg and "/a" in msg
    # union branch matched through promotion
    assert compat(rec(fld("a", ["null", "long"], default=None)), nullable, "BACKWARD").compatible


def test_arrays_maps_fixed_and_nested_records():
    item_v1 = rec(fld("x", "int"), name="Item")
    item_v2 = rec(fld("x", "int"), fld("y", "int"), name="Item")
    arr = lambda item: rec(fld("items", {"type": "array", "items": item}))  # noqa: E731
    result = compat(arr(item_v2), arr(item_v1), "BACKWARD")
    assert result.messages == [
        "BACKWARD: the new schema cannot read data written with previous version #1: "
        "/items[]/y: field is in the reader but not in the writer, and has no default"
    ]
    m = lambda v: rec(fld("m", {"type": "map", "values": v}))  # noqa: E731
    assert compat(m("long"), m("int"), "BACKWARD").compatible
    assert "/m{}" in compat(m("int"), m("long"), "BACKWARD").messages[0]
    fx = lambda n: rec(fld("f", {"type": "fixed", "name": "F", "size": n}))  # noqa: E731
    assert compat(fx(16), fx(16), "FULL").compatible
    assert "fixed size changed from 8 to 16" in compat(fx(16), fx(8), "BACKWARD").messages[0]


def test_aliases_for_fields_and_records():
    renamed_field = rec(fld("qty", "int", aliases=["a"]))
    assert compat(renamed_field, V1, "BACKWARD").compatible
    assert not compat(rec(fld("qty", "int")), V1, "BACKWARD").compatible
    old = rec(fld("a", "int"), name="Old", namespace="retail.x")
    new = rec(fld("a", "int"), name="New", namespace="retail.x", aliases=["Old"])
    assert compat(
        new, old, "BACKWARD"
    ).compatible  # avro's checker misses namespace-relative aliases
    assert (
        "renamed"
        in compat(rec(fld("a", "int"), name="New", namespace="retail.x"), old, "BACKWARD").messages[
            0
        ]
    )


def _decimal(precision, scale):
    return rec(
        fld(
            "d", {"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale}
        )
    )


def test_logical_types_are_checked():
    dec = _decimal
    assert compat(dec(14, 2), dec(12, 2), "BACKWARD").compatible
    assert (
        "decimal scale changed from 2 to 3"
        in compat(dec(12, 3), dec(12, 2), "BACKWARD").messages[0]
    )
    assert "precision shrinks" in compat(dec(10, 2), dec(12, 2), "BACKWARD").messages[0]
    ts = lambda lt: rec(fld("t", {"type": "long", "logicalType": lt}))  # noqa: E731
    assert (
        "timestamp-millis to timestamp-micros"
        in compat(ts("timestamp-micros"), ts("timestamp-millis"), "BACKWARD").messages[0]
    )
    uuid_str = rec(fld("u", {"type": "string", "logicalType": "uuid"}))
    assert compat(uuid_str, rec(fld("u", "string")), "FULL").compatible


def test_recursive_schema():
    node = {
        "type": "record",
        "name": "Node",
        "fields": [fld("v", "int"), fld("next", ["null", "Node"], default=None)],
    }
    node2 = json.loads(json.dumps(node))
    node2["fields"].append(fld("w", "int", default=0))
    assert compat(node2, node, "FULL").compatible
    node3 = json.loads(json.dumps(node))
    node3["fields"][0]["type"] = "string"
    assert not compat(node3, node, "BACKWARD").compatible


def test_multiple_problems_each_keep_their_own_location():
    # avro's checker pairs messages and locations through two unordered sets
    old = rec(fld("a", "int"), fld("b", "int"))
    new = rec(fld("a", "string"), fld("b", "string"), fld("c", "int"))
    msgs = compat(new, old, "BACKWARD").messages
    assert sorted(m.split(": ", 2)[-1].split(":")[0] for m in msgs) == ["/a", "/b", "/c"]


# -- invalid schemas --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,needle",
    [
        ("not json at all", "not JSON"),
        (json.dumps(rec(fld("a", "Unknown"))), "unknown type 'Unknown'"),
        (json.dumps(rec(fld("a", rec(name="R")))), "already in use"),
        (json.dumps(rec(fld("a", "int"), fld("a", "long"))), "already in use"),
        (json.dumps(rec(fld("a", "int", default="x"))), 'default "x" does not match type int'),
        (json.dumps(rec(fld("a", ["null", "int"], default=1))), "default 1 does not match"),
        (json.dumps(rec(fld("a", "int", default=2**40))), "does not match type int"),
        (json.dumps(rec(fld("e", enum("A"), default="B"))), "does not match type enum"),
        (json.dumps(enum("A", default="Z")), "Z"),
        (json.dumps({"type": "record", "name": "R"}), "fields"),
        (json.dumps(rec(fld("a", {"type": "fixed", "name": "F"}))), "size"),
    ],
)
def test_invalid_schemas_name_the_problem(text, needle):
    with pytest.raises(InvalidSchema) as err:
        parse_schema(text)
    assert needle in str(err.value)


def test_valid_defaults_of_every_kind():
    parsed = parse_schema(
        rec(
            fld("n", ["null", "int"], default=None),
            fld("i", "int", default=3),
            fld("f", "float", default=1),
            fld("s", "string", default="x"),
            fld("b", "bytes", default="\u00ff"),
            fld("e", enum("A"), default="A"),
            fld("arr", {"type": "array", "items": "int"}, default=[1, 2]),
            fld("m", {"type": "map", "values": "string"}, default={"k": "v"}),
            fld("r", rec(fld("x", "int", default=1), name="Inner"), default={}),
        )
    )
    assert [f.name for f in parsed.fields] == ["n", "i", "f", "s", "b", "e", "arr", "m", "r"]


# -- agreement with the avro package where it is right ----------------------------------------

_PRIMS = st.sampled_from(["int", "long", "float", "double", "string", "bytes", "boolean"])


@st.composite
def _record(draw, name="R"):
    names = draw(st.lists(st.sampled_from(list("abcdef")), unique=True, max_size=5))
    fields = []
    for n in names:
        kind = draw(st.sampled_from(["prim", "nullable", "array", "enum"]))
        if kind == "prim":
            t = draw(_PRIMS)
        elif kind == "nullable":
            t = ["null", draw(_PRIMS)]
        elif kind == "array":
            t = {"type": "array", "items": draw(_PRIMS)}
        else:
            t = enum(*draw(st.lists(st.sampled_from("XYZ"), unique=True, min_size=1)), name=f"E{n}")
        f = fld(n, t)
        if kind == "nullable" and draw(st.booleans()):
            f["default"] = None
        fields.append(f)
    return rec(*fields, name=name)


@settings(max_examples=300, deadline=None)
@given(_record(), _record())
def test_same_verdict_as_avro_on_plain_schemas(reader, writer):
    r, w = avro.schema.parse(json.dumps(reader)), avro.schema.parse(json.dumps(writer))
    theirs = ReaderWriterCompatibilityChecker().get_compatibility(r, w).compatibility
    ours = not reader_writer_problems(r, w)
    assert ours is (theirs is SchemaCompatibilityType.compatible)
