"""``backbone launch``: Dataflow commands printed (not run without credentials), refusals."""

from __future__ import annotations

import json

from click.testing import CliRunner

from retail_backbone.cli import main


def test_dataflow_target_prints_the_commands_and_redacts_literal_secrets():
    result = CliRunner().invoke(
        main,
        [
            "launch",
            "inventory",
            "--target",
            "dataflow",
            "--json",
            "--mode=batch",
            "--input=gs://b/events",
            "--postgres_dsn=host=db password=hunter2",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["executed"] is False
    assert [c.split()[:4] for c in out["commands"]] == [
        ["docker", "build", "-f", "templates/inventory/Dockerfile"],
        ["docker", "push", "REGION-docker.pkg.dev/PROJECT_ID/retail-backbone/inventory:0.1.0"],
        ["gcloud", "dataflow", "flex-template", "build"],
        ["gcloud", "dataflow", "flex-template", "run"],
    ]
    run = out["commands"][-1]
    assert "input=gs://b/events" in run and "postgres_dsn=REDACTED" in run
    assert "hunter2" not in result.output
    notes = " ".join(out["notes"])
    assert "placeholders for --project, --region, --bucket" in notes
    assert "secret postgres_dsn replaced by REDACTED" in notes


def test_dataflow_target_checks_the_parameters_first():
    result = CliRunner().invoke(main, ["launch", "inventory", "--target", "dataflow"])
    assert result.exit_code == 2
    assert "--input is required in batch mode" in result.output


def test_cluster_profile_without_a_worker_pool_is_refused_before_anything_starts(monkeypatch):
    import retail_backbone.pipelines.launch as launch

    started = []
    monkeypatch.setattr(launch, "worker_pool_reachable", lambda address: False)
    monkeypatch.setattr("retail_backbone.stack.Stack.up", lambda self, names: started.append(names))
    result = CliRunner().invoke(
        main,
        ["launch", "inventory", "--target", "flink", "--profile", "cluster", "--input=/data"],
    )
    assert result.exit_code == 1
    assert "no Beam SDK worker pool at 127.0.0.1:50000" in result.output
    assert started == []


def test_unknown_profile_is_a_usage_error():
    result = CliRunner().invoke(
        main, ["launch", "inventory", "--target", "flink", "--profile", "nope", "--input=/d"]
    )
    assert result.exit_code == 2
    assert "no Flink profile 'nope'; choose one of ['cluster', 'local']" in result.output
