"""``backbone templates validate``: are the committed launch files right and in sync?

Checks, for every registered pipeline: the metadata follows the Flex Template metadata schema;
every option the options class declares is a template parameter and nothing else is; no secret
parameter has a default; every generated file (metadata, spec, Dockerfile, README tables) equals
what ``backbone templates build`` would write now; and every Flink profile is valid.

Example::

    problems = validate_templates(repo_root())
    for p in problems:
        print(f"{p.file}: {p.message}")
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

from retail_backbone.pipelines.registry import PIPELINES, PipelineSpec
from retail_backbone.templates.build import stale_files
from retail_backbone.templates.profiles import PROFILE_DIR, check_profile_file

__all__ = ["PARAM_TYPES", "Problem", "check_metadata", "declared_options", "validate_templates"]

#: Dataflow's ``ParameterType`` values (v1b3 API).
PARAM_TYPES = frozenset(
    {
        "DEFAULT",
        "TEXT",
        "GCS_READ_BUCKET",
        "GCS_WRITE_BUCKET",
        "GCS_READ_FILE",
        "GCS_WRITE_FILE",
        "GCS_READ_FOLDER",
        "GCS_WRITE_FOLDER",
        "PUBSUB_TOPIC",
        "PUBSUB_SUBSCRIPTION",
        "BIGQUERY_TABLE",
        "JAVASCRIPT_UDF_FILE",
        "SERVICE_ACCOUNT",
        "MACHINE_TYPE",
        "KMS_KEY_NAME",
        "WORKER_REGION",
        "WORKER_ZONE",
        "BOOLEAN",
        "ENUM",
        "NUMBER",
        "KAFKA_TOPIC",
        "KAFKA_READ_TOPIC",
        "KAFKA_WRITE_TOPIC",
    }
)
_TOP_KEYS = {"name": str, "description": str, "parameters": list}
_PARAM_REQUIRED = {"name": str, "label": str, "helpText": str}
_PARAM_OPTIONAL = {
    "isOptional": bool,
    "regexes": list,
    "paramType": str,
    "enumOptions": list,
    "defaultValue": str,
    "customMetadata": dict,
    "groupName": str,
    "parentName": str,
    "parentTriggerValues": list,
    "hiddenUi": bool,
}


@dataclass(frozen=True)
class Problem:
    """One finding: the file it is about and what to fix."""

    file: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"file": self.file, "message": self.message}


def check_metadata(data: Any) -> list[str]:
    """Schema problems of one Flex Template metadata document (empty when valid)."""
    if not isinstance(data, dict):
        return ["the metadata must be a JSON object"]
    problems = []
    for key, kind in _TOP_KEYS.items():
        if not isinstance(data.get(key), kind):
            problems.append(f"{key} must be a {kind.__name__}")
    if problems:
        return problems
    seen = set()
    for i, param in enumerate(data["parameters"]):
        where = f"parameters[{i}]"
        if not isinstance(param, dict):
            problems.append(f"{where} must be an object")
            continue
        where = f"parameters[{i}] ({param.get('name', '?')})"
        for key, kind in _PARAM_REQUIRED.items():
            if not isinstance(param.get(key), kind) or not param[key]:
                problems.append(f"{where}: {key} must be a non-empty {kind.__name__}")
        for key, value in param.items():
            if key in _PARAM_REQUIRED:
                continue
            if key not in _PARAM_OPTIONAL:
                problems.append(f"{where}: unknown key {key}")
            elif not isinstance(value, _PARAM_OPTIONAL[key]):
                problems.append(f"{where}: {key} must be a {_PARAM_OPTIONAL[key].__name__}")
        name = param.get("name")
        if isinstance(name, str):
            if not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9_]*", name):
                problems.append(f"{where}: name must be letters, digits and underscores")
            if name in seen:
                problems.append(f"{where}: duplicate parameter name")
            seen.add(name)
        if param.get("paramType", "TEXT") not in PARAM_TYPES:
            problems.append(f"{where}: paramType {param['paramType']!r} is not a Dataflow type")
        for regex in param.get("regexes", []) if isinstance(param.get("regexes"), list) else []:
            try:
                re.compile(regex)
            except (re.error, TypeError) as exc:
                problems.append(f"{where}: regex {regex!r} does not compile: {exc}")
        if param.get("paramType") == "ENUM" and not param.get("enumOptions"):
            problems.append(f"{where}: an ENUM needs enumOptions")
        secret = (param.get("customMetadata") or {}).get("secret") == "true"
        if secret and "defaultValue" in param:
            problems.append(f"{where}: a secret parameter must not have a defaultValue")
    return problems


def declared_options(options_class: type[PipelineOptions]) -> set[str]:
    """Every option the class and its bases (below ``PipelineOptions``) put on the parser.

    Read from argparse itself, so an option added with a raw ``parser.add_argument`` instead of a
    ``Param`` is found too.
    """
    names: set[str] = set()
    for cls in options_class.mro():
        hook = cls.__dict__.get("_add_argparse_args")
        if hook is None or cls is PipelineOptions:
            continue
        parser = argparse.ArgumentParser(add_help=False)
        hook.__func__(cls, parser)
        names |= {a.dest for a in parser._actions}
    return names


def _check_pipeline(spec: PipelineSpec, root: Path) -> list[Problem]:
    rel = f"templates/{spec.name}/metadata.json"
    path = root / rel
    if not path.is_file():
        return [Problem(rel, "missing; run `backbone templates build`")]
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        return [Problem(rel, f"not valid JSON: {exc}")]
    problems = [Problem(rel, m) for m in check_metadata(data)]
    entries = data.get("parameters") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return problems
    in_metadata = {p.get("name") for p in entries if isinstance(p, dict)} - {None}
    declared = declared_options(spec.options_class())
    for name in sorted(declared - in_metadata):
        problems.append(Problem(rel, f"option --{name} of {spec.options} is not a parameter"))
    for name in sorted(in_metadata - declared):
        problems.append(Problem(rel, f"parameter {name} is not an option of {spec.options}"))
    for param in spec.params():
        if param.secret and param.default is not None:
            problems.append(Problem(spec.source_file(), f"secret --{param.name} has a default"))
    return problems


def validate_templates(root: Path) -> list[Problem]:
    """Every problem of the committed launch files (empty when all is well)."""
    problems: list[Problem] = []
    for spec in PIPELINES.values():
        problems += _check_pipeline(spec, root)
    for rel in stale_files(root):
        problems.append(
            Problem(rel, "stale: differs from the options; run `backbone templates build`")
        )
    profiles = sorted(PROFILE_DIR.glob("*.toml"))
    if not profiles:
        problems.append(Problem("templates/flink/", "no Flink profiles"))
    for path in profiles:
        problems += [Problem(f"templates/flink/{path.name}", m) for m in check_profile_file(path)]
    return problems
