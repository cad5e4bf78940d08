"""Beam parses every PipelineOptions class for every pipeline: no option may be declared twice."""

import importlib
import pkgutil

from apache_beam.options.pipeline_options import PipelineOptions

SUBPACKAGES = ["io", "pipelines", "transforms", "schemas", "generator"]


def test_all_option_classes_parse_together():
    for sub in SUBPACKAGES:
        package = importlib.import_module(f"retail_backbone.{sub}")
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if not module.name.endswith("__main__"):
                importlib.import_module(module.name)
    # An option declared by two classes would make argparse raise here.
    options = PipelineOptions(["--bootstrap_servers=h:1", "--run_id=r"]).get_all_options()
    assert options["bootstrap_servers"] == "h:1" and options["run_id"] == "r"
    assert "plan_only" in options and "kafka_io" in options
