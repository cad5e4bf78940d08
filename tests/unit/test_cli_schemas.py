import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from retail_backbone.cli import main
from retail_backbone.schemas.catalog import SCHEMAS_DIR, load_catalog

ORDER = SCHEMAS_DIR / "order_placed"


def run(*args):
    return CliRunner().invoke(main, list(map(str, args)))


def test_compat_exit_codes_and_json(tmp_path: Path):
    ok = run(
        "schemas",
        "compat",
        "--level",
        "FULL_TRANSITIVE",
        ORDER / "v2.avsc",
        ORDER / "v1.avsc",
        "--json",
    )
    assert ok.exit_code == 0
    assert json.loads(ok.output) == {"compatible": True, "messages": []}

    broken = json.loads((ORDER / "v2.avsc").read_text())
    broken["fields"].append({"name": "loyalty_tier", "type": "string", "doc": "no default"})
    new = tmp_path / "v3.avsc"
    new.write_text(json.dumps(broken))
    bad = run("schemas", "compat", "--level", "BACKWARD", new, ORDER / "v1.avsc", ORDER / "v2.avsc")
    assert bad.exit_code == 1
    assert "/loyalty_tier: field is in the reader but not in the writer" in bad.output
    as_json = run("schemas", "compat", "--level", "BACKWARD", new, ORDER / "v2.avsc", "--json")
    assert as_json.exit_code == 1 and json.loads(as_json.output)["compatible"] is False


def test_compat_invalid_input_exits_2_with_a_named_problem(tmp_path: Path):
    invalid = tmp_path / "bad.avsc"
    invalid.write_text('{"type": "record", "name": "R", "fields": [{"name": "a", "type": "Nope"}]}')
    result = run("schemas", "compat", "--level", "FULL", invalid)
    assert result.exit_code == 2 and "unknown type 'Nope'" in result.output
    assert run("schemas", "compat", "--level", "FULL", tmp_path / "missing.avsc").exit_code == 2
    assert run("schemas", "compat", "--level", "SIDEWAYS", invalid).exit_code == 2
    binary = tmp_path / "x.avsc"
    binary.write_bytes(b"\x00\xff\xfe")
    result = run("schemas", "compat", "--level", "FULL", binary)
    assert result.exit_code == 2


def test_check_passes_on_the_shipped_contracts():
    result = run("schemas", "check", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert len(report) == len(load_catalog()) >= 17
    assert all(r["compatible"] for r in report)
    assert sum(1 for r in report if r["versions"] >= 2) >= 2


def test_check_fails_on_a_breaking_change(tmp_path: Path):
    root = tmp_path / "schemas"
    shutil.copytree(SCHEMAS_DIR, root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    v3 = json.loads((root / "order_placed" / "v2.avsc").read_text())
    v3["fields"] = [f for f in v3["fields"] if f["name"] != "total"]  # consumers need it
    (root / "order_placed" / "v3.avsc").write_text(json.dumps(v3))
    result = run("schemas", "check", "--dir", root)
    assert result.exit_code == 1
    assert "FAIL retail.order_placed-value" in result.output
    assert "/total" in result.output


def test_check_rejects_gaps_in_versions(tmp_path: Path):
    root = tmp_path / "schemas"
    (root / "thing").mkdir(parents=True)
    (root / "thing" / "v2.avsc").write_text('"int"')
    assert run("schemas", "check", "--dir", root).exit_code == 2


def test_envelope_is_identical_in_every_event_schema():
    envelope = json.loads((SCHEMAS_DIR / "envelope" / "v1.avsc").read_text())
    for subject in load_catalog():
        if not subject.is_event:  # the envelope itself, dead letters, derived records
            continue
        for number in range(1, len(subject.version_files) + 1):
            fields = {f["name"]: f for f in subject.version(number)["fields"]}
            assert fields["envelope"]["type"] == envelope, (subject.name, number)


def test_every_record_and_field_has_a_doc():
    def walk(schema, where):
        if isinstance(schema, dict) and schema.get("type") in ("record", "enum"):
            assert schema.get("doc"), where
            for f in schema.get("fields", []):
                assert f.get("doc"), f"{where}.{f['name']}"
                walk(f["type"], f"{where}.{f['name']}")
        elif isinstance(schema, dict) and schema.get("type") == "array":
            walk(schema["items"], where)
        elif isinstance(schema, list):
            for branch in schema:
                walk(branch, where)

    for subject in load_catalog():
        walk(subject.latest, subject.name)
