"""Flink operations helpers, and the step labels that savepoints are mapped by.

Beam's Flink runner uses each transform's unique name as the Flink operator uid, and Flink maps a
savepoint's state to operators by uid: the labels must be unique and must not depend on run
parameters. Built offline (batch mode reads files only; no stack needed).
"""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from retail_backbone.generator import GeneratorConfig, generate_events, write_files
from retail_backbone.pipelines.flink_ops import FlinkOpsError, FlinkRest, override_args
from retail_backbone.pipelines.registry import PIPELINES, get_pipeline


@pytest.fixture(scope="module")
def event_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("events")
    cfg = GeneratorConfig(
        seed=5, days=1, n_products=10, n_locations=2, n_customers=50, events_per_day=200
    )
    write_files(generate_events(cfg), root, "avro")
    return root


def _unique_names(name: str, args: list[str]) -> list[str]:
    spec = get_pipeline(name)
    module = spec.load()
    opts = spec.options_class()(args)
    p = beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"]))
    if name == "personalization":
        module.build_pipeline(p, opts, None)
    else:
        module.build_pipeline(p, opts)
    proto = p.to_runner_api()
    return [t.unique_name for t in proto.components.transforms.values()]


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_step_labels_are_unique_and_independent_of_run_parameters(name, event_files):
    common = [
        "--mode=batch",
        f"--input={event_files}",
        "--postgres_dsn=env:NOT_NEEDED",
        "--pii_hash_key=env:NOT_NEEDED",
    ]
    one = _unique_names(name, [*common, "--run_id=a1", "--table_suffix=_x"])
    two = _unique_names(name, [*common, "--run_id=b2", "--table_suffix=_y"])
    assert len(one) == len(set(one)), "duplicate transform names"
    assert sorted(one) == sorted(two)


def test_override_args_replaces_earlier_values():
    args = ["--runner=PortableRunner", "--checkpointing_interval=10000", "--parallelism=1"]
    assert override_args(args, checkpointing_interval=2000, job_name="j") == [
        "--runner=PortableRunner",
        "--parallelism=1",
        "--checkpointing_interval=2000",
        "--job_name=j",
    ]


def test_rest_errors_name_the_call():
    rest = FlinkRest("http://127.0.0.1:9", timeout=1)  # the discard port: nothing listens
    with pytest.raises(FlinkOpsError, match=r"GET http://127.0.0.1:9/jobs/overview"):
        rest.jobs()
