import json

import httpx
from click.testing import CliRunner

from retail_backbone.cli import main
from retail_backbone.schemas.catalog import load_catalog


def test_register_every_subject_in_order_then_again_idempotently(stack):
    cfg = stack.require("registry")
    url = f"http://{cfg.host}:{cfg.port('registry')}"
    first = CliRunner().invoke(main, ["schemas", "register", "--registry", url, "--json"])
    assert first.exit_code == 0, first.output
    report = {r["subject"]: r for r in json.loads(first.output)}
    catalog = load_catalog()
    assert set(report) == {s.name for s in catalog}
    for subject in catalog:
        ids = report[subject.name]["ids"]
        assert len(ids) == len(subject.version_files)
        versions = httpx.get(f"{url}/subjects/{subject.name}/versions").json()
        assert versions[-len(ids) :] == list(range(versions[-1] - len(ids) + 1, versions[-1] + 1))
        level = httpx.get(f"{url}/config/{subject.name}").json()["compatibilityLevel"]
        assert level == str(subject.level)
    again = CliRunner().invoke(main, ["schemas", "register", "--registry", url, "--json"])
    assert again.exit_code == 0
    assert {r["subject"]: r["ids"] for r in json.loads(again.output)} == {
        s: r["ids"] for s, r in report.items()
    }


def test_register_reports_an_unreachable_registry():
    result = CliRunner().invoke(main, ["schemas", "register", "--registry", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "cannot reach the registry" in result.output
