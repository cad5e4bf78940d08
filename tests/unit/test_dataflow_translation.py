"""Every registered pipeline translates to a Dataflow job graph offline (DataflowRunner dry run).

Batch mode here (files only); streaming mode, whose Kafka read plans partitions at construction,
is in tests/integration/test_dataflow_translation_streaming.py.
"""

from __future__ import annotations

import shlex

import pytest

from retail_backbone.generator import GeneratorConfig, generate_events, write_files
from retail_backbone.pipelines.params import InvalidParams
from retail_backbone.pipelines.registry import PIPELINES, get_pipeline
from retail_backbone.templates.dataflow import flex_template_commands, translate

# The stable labels a Dataflow update or a savepoint relies on, per pipeline and mode.
EXPECTED_STEPS = {
    "inventory": {
        "batch": {"ReadEventFiles"},
        "common": {
            "DeduplicateEvents",
            "UpdateStockLedger",
            "ForecastDemand",
            "DetectStockouts",
            "WriteStockLevels",
            "WriteStockAlerts",
            "WriteDemandForecast",
            "ServeStockLevels",
            "MergeDeadLetters",
        },
    },
    "personalization": {
        "batch": {"ReadEventFiles"},
        "common": {
            "DeduplicateEvents",
            "ExtractCatalog",
            "BuildCustomerProfiles",
            "BuildCoPurchaseGraph",
            "Recommend",
            "ServeProfiles",
            "ServeRecommendations",
            "ServeRelatedProducts",
            "WriteProductNodes",
            "WriteProductGraph",
            "MergeDeadLetters",
        },
    },
}


@pytest.fixture(scope="module")
def event_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("events")
    cfg = GeneratorConfig(
        seed=5, days=1, n_products=10, n_locations=2, n_customers=50, events_per_day=200
    )
    write_files(generate_events(cfg), root, "avro")
    return root


def test_every_registered_pipeline_has_expected_steps():
    assert set(EXPECTED_STEPS) == set(PIPELINES), "add the new pipeline's step labels here"


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_batch_mode_translates_for_dataflow(name, event_files):
    graph = translate(
        get_pipeline(name),
        [
            "--mode=batch",
            f"--input={event_files}",
            "--postgres_dsn=env:NOT_NEEDED_OFFLINE",
            "--pii_hash_key=env:NOT_NEEDED_OFFLINE",
        ],
    )
    assert graph.job_type == "JOB_TYPE_BATCH"
    expected = EXPECTED_STEPS[name]["common"] | EXPECTED_STEPS[name]["batch"]
    assert expected <= graph.top_level_steps, expected - graph.top_level_steps
    # Dataflow runs only Docker environments: the SDK container of the pinned Beam release.
    assert graph.environments and set(graph.environments) == {"beam:env:docker:v1"}
    assert all(img.endswith("beam_python3.11_sdk:2.62.0") for img in graph.container_images)


def test_translation_runs_the_pipelines_launch_checks():
    with pytest.raises(InvalidParams, match="--input is required in batch mode"):
        translate(get_pipeline("inventory"), ["--mode=batch", "--sinks=bigtable"])


def test_flex_template_commands_build_then_run_with_escaped_parameters():
    spec = get_pipeline("inventory")
    commands = flex_template_commands(
        spec,
        project="p",
        region="europe-west1",
        bucket="b",
        params={"mode": "batch", "sinks": "postgres,bigtable", "postgres_dsn": "env:PG"},
        job_name="inv-1",
    )
    text = [shlex.join(c) for c in commands]
    image = "europe-west1-docker.pkg.dev/p/retail-backbone/inventory:0.1.0"
    assert text[0] == f"docker build -f templates/inventory/Dockerfile -t {image} ."
    assert text[1] == f"docker push {image}"
    assert commands[2][:5] == [
        "gcloud",
        "dataflow",
        "flex-template",
        "build",
        "gs://b/templates/inventory-0.1.0.json",
    ]
    assert f"--image={image}" in commands[2]
    assert "--metadata-file=templates/inventory/metadata.json" in commands[2]
    run = commands[3]
    assert run[:5] == ["gcloud", "dataflow", "flex-template", "run", "inv-1"]
    assert "--template-file-gcs-location=gs://b/templates/inventory-0.1.0.json" in run
    # A value with a comma switches gcloud's list delimiter (^~^) instead of being split.
    assert run[-1] == "--parameters=^~^mode=batch~sinks=postgres,bigtable~postgres_dsn=env:PG"
