import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from retail_backbone.pipelines.runners import runner_args


def test_beam_pipeline_runs_on_prism(stack, tmp_path):
    cfg = stack.require("prism")
    out = tmp_path / "counts"
    opts = PipelineOptions(runner_args("prism", cfg))
    with beam.Pipeline(options=opts) as p:
        (
            p
            | beam.Create(["sku-1", "sku-2", "sku-1", "sku-3", "sku-1"])
            | beam.combiners.Count.PerElement()
            | beam.MapTuple(lambda k, n: f"{k},{n}")
            | beam.io.WriteToText(str(out), shard_name_template="")
        )
    assert sorted(out.read_text().split()) == ["sku-1,3", "sku-2,1", "sku-3,1"]
