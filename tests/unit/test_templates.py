"""Template files are generated from each pipeline's options, committed, and kept in sync."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from retail_backbone.cli import main
from retail_backbone.pipelines.registry import PIPELINES, get_pipeline
from retail_backbone.templates.build import (
    LAUNCHER_BASE_IMAGE,
    README_END,
    README_START,
    build_files,
    generated_files,
    repo_root,
    stale_files,
)
from retail_backbone.templates.validate import (
    PARAM_TYPES,
    check_metadata,
    declared_options,
    validate_templates,
)


def test_committed_files_equal_what_the_options_generate():
    # Fails when an option changed without `backbone templates build`.
    assert stale_files(repo_root()) == [], "run `backbone templates build` and commit"


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_metadata_lists_every_option_once_with_dataflow_fields(name):
    spec = get_pipeline(name)
    data = json.loads((repo_root() / f"templates/{name}/metadata.json").read_text())
    assert check_metadata(data) == []
    by_name = {p["name"]: p for p in data["parameters"]}
    # Every option the class puts on the parser (read from argparse) is a template parameter.
    assert set(by_name) == declared_options(spec.options_class()) == {p.name for p in spec.params()}
    for param in spec.params():
        entry = by_name[param.name]
        assert entry["paramType"] in PARAM_TYPES
        assert entry["isOptional"] is (not param.required)
        if param.secret:
            assert "defaultValue" not in entry and entry["customMetadata"] == {"secret": "true"}
        if param.regex:
            assert entry["regexes"] == [f"^(?:{param.regex})$"]
    assert by_name["mode"]["paramType"] == "ENUM"
    assert [o["value"] for o in by_name["mode"]["enumOptions"]] == ["streaming", "batch"]
    assert by_name["dead_letters_to_kafka"]["paramType"] == "BOOLEAN"
    assert by_name["allowed_lateness_seconds"]["defaultValue"] == "3600"


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_spec_and_dockerfile_point_at_the_pipeline(name):
    spec = get_pipeline(name)
    root = repo_root()
    flex = json.loads((root / f"templates/{name}/spec.json").read_text())
    assert flex["sdkInfo"] == {"language": "PYTHON"}
    assert flex["metadata"] == json.loads((root / f"templates/{name}/metadata.json").read_text())
    docker = (root / f"templates/{name}/Dockerfile").read_text()
    assert f"FROM {LAUNCHER_BASE_IMAGE}\n" in docker
    assert f'FLEX_TEMPLATE_PYTHON_PY_FILE="${{WORKDIR}}/{spec.source_file()}"' in docker
    assert 'FLEX_TEMPLATE_PYTHON_SETUP_FILE="${WORKDIR}/setup.py"' in docker
    assert (root / spec.source_file()).is_file()
    # Dependencies come pinned from requirements.txt through setup.py's install_requires.
    assert "COPY setup.py pyproject.toml requirements.txt ./" in docker
    assert all("==" in ln for ln in _requirements(root)), "requirements.txt pins everything"


def _requirements(root):
    lines = (root / "requirements.txt").read_text().splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()]


def test_readme_has_one_table_row_per_parameter():
    readme = (repo_root() / "README.md").read_text()
    block = readme[readme.index(README_START) : readme.index(README_END)]
    for spec in PIPELINES.values():
        for param in spec.params():
            assert f"| `--{param.name}` |" in block


def test_validate_passes_on_the_repository():
    assert validate_templates(repo_root()) == []
    result = CliRunner().invoke(main, ["templates", "validate", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"ok": True, "problems": []}


@pytest.fixture
def scratch_repo(tmp_path):
    """A copy of the files templates are built from and into."""
    root = repo_root()
    for rel in ("README.md", "setup.py"):
        shutil.copy(root / rel, tmp_path / rel)
    shutil.copytree(
        root / "templates",
        tmp_path / "templates",
        ignore=shutil.ignore_patterns("*.py", "__pycache__"),
    )
    return tmp_path


def test_validate_reports_stale_schema_and_secret_problems(scratch_repo):
    meta_path = scratch_repo / "templates/inventory/metadata.json"
    data = json.loads(meta_path.read_text())
    by_name = {p["name"]: p for p in data["parameters"]}
    by_name["postgres_dsn"]["defaultValue"] = "host=db password=x"
    by_name["mode"]["paramType"] = "CHOICE"
    data["parameters"] = [p for p in data["parameters"] if p["name"] != "table_suffix"]
    data["parameters"].append(dict(by_name["input"], name="not_an_option"))
    meta_path.write_text(json.dumps(data))
    (scratch_repo / "templates/inventory/Dockerfile").write_text("FROM python:3.11\n")

    messages = [f"{p.file}: {p.message}" for p in validate_templates(scratch_repo)]
    text = "\n".join(messages)
    assert "secret parameter must not have a defaultValue" in text
    assert "paramType 'CHOICE' is not a Dataflow type" in text
    assert "option --table_suffix of InventoryOptions is not a parameter" in text
    assert "parameter not_an_option is not an option of InventoryOptions" in text
    assert "templates/inventory/Dockerfile: stale" in text
    assert "templates/inventory/metadata.json: stale" in text

    # build rewrites exactly the stale files, after which nothing is left to report.
    changed = build_files(scratch_repo)
    assert sorted(changed) == [
        "templates/inventory/Dockerfile",
        "templates/inventory/metadata.json",
    ]
    assert validate_templates(scratch_repo) == []


def test_build_needs_the_readme_markers(scratch_repo):
    readme = scratch_repo / "README.md"
    readme.write_text(readme.read_text().replace(README_START, ""))
    with pytest.raises(ValueError, match="no generated-table markers"):
        generated_files(scratch_repo)


def test_templates_cli_build_reports_up_to_date_and_rejects_unknown_pipelines():
    result = CliRunner().invoke(main, ["templates", "build", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"changed": []}
    result = CliRunner().invoke(main, ["templates", "build", "nope"])
    assert result.exit_code == 2
    assert "registered: inventory" in result.output
