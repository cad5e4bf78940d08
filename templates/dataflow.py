"""Dataflow: the Flex Template build/run commands, and an offline translation of a pipeline.

``flex_template_commands`` gives the exact commands that build a pipeline's launcher image and
template spec and run it; ``gcloud_ready`` says whether they can run here. ``translate`` builds a
registered pipeline with the ``DataflowRunner`` in dry-run mode (Beam's ``--dry_run``): the
pipeline is expanded, Dataflow's overrides and v2 adjustments are applied and the Runner API job
graph is produced, but nothing is staged or submitted (the runner returns right after building
``apiclient.Job``), so no cloud access is needed. Sources still validate at construction time
(a batch input folder is listed, Kafka partitions are planned), so those must be reachable.

Example::

    graph = translate(get_pipeline("inventory"), ["--mode=batch", "--input=data/backfill"])
    assert "UpdateStockLedger" in graph.top_level_steps
    for cmd in flex_template_commands(spec, project="p", region="europe-west1", bucket="b",
                                      params={"mode": "batch"}):
        print(shlex.join(cmd))
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from retail_backbone import __version__
from retail_backbone.pipelines.registry import PipelineSpec

__all__ = [
    "DRY_RUN_ARGS",
    "DataflowGraph",
    "flex_template_commands",
    "gcloud_ready",
    "image_for",
    "template_path",
    "translate",
]

#: Fake project, region and bucket: the dry run checks they are set, never that they exist.
DRY_RUN_ARGS = (
    "--runner=DataflowRunner",
    "--dry_run=True",
    "--project=dry-run-project",
    "--region=us-central1",
    "--temp_location=gs://dry-run-bucket/tmp",
)


@dataclass(frozen=True)
class DataflowGraph:
    """What the DataflowRunner produced: job type, step labels and worker environments."""

    job_type: str
    top_level_steps: frozenset[str]
    all_steps: frozenset[str]
    environments: tuple[str, ...]
    container_images: tuple[str, ...]


def translate(spec: PipelineSpec, pipeline_args: Sequence[str]) -> DataflowGraph:
    """Translate ``spec``'s pipeline for Dataflow without any cloud access.

    Args:
        spec: a registered pipeline.
        pipeline_args: its parameters (``--mode``, ``--input``, ...); the runner options come
            from ``DRY_RUN_ARGS``.

    Raises:
        InvalidParams: the parameters fail the pipeline's launch checks.
    """
    import apache_beam as beam
    from apache_beam.options.pipeline_options import StandardOptions
    from apache_beam.portability.api import beam_runner_api_pb2

    module = spec.load()
    opts = spec.options_class()([*DRY_RUN_ARGS, *pipeline_args])
    module.check_options(opts)
    if getattr(opts, "mode", None) == "streaming":
        opts.view_as(StandardOptions).streaming = True  # as the job's run() does
    p = beam.Pipeline(options=opts)
    module.build_pipeline(p, opts)
    result = p.run()
    job = result.job
    components = job.proto_pipeline.components
    names = {t.unique_name for t in components.transforms.values()}
    images = []
    for env in components.environments.values():
        if env.urn == "beam:env:docker:v1":
            payload = beam_runner_api_pb2.DockerPayload.FromString(env.payload)
            images.append(payload.container_image)
    return DataflowGraph(
        job_type=str(job.proto.type),
        top_level_steps=frozenset(n for n in names if "/" not in n),
        all_steps=frozenset(names),
        environments=tuple(sorted(e.urn for e in components.environments.values())),
        container_images=tuple(sorted(images)),
    )


def image_for(spec: PipelineSpec, project: str, region: str) -> str:
    """The launcher image's Artifact Registry path (repository ``retail-backbone``)."""
    return f"{region}-docker.pkg.dev/{project}/retail-backbone/{spec.name}:{__version__}"


def template_path(spec: PipelineSpec, bucket: str) -> str:
    return f"gs://{bucket}/templates/{spec.name}-{__version__}.json"


def _parameters_arg(params: Mapping[str, str]) -> str | None:
    if not params:
        return None
    pairs = [f"{k}={v}" for k, v in params.items()]
    if any("," in p for p in pairs):
        # gcloud's escape for lists whose values contain commas: ^DELIM^ names another delimiter.
        return "--parameters=^~^" + "~".join(pairs)
    return "--parameters=" + ",".join(pairs)


def flex_template_commands(
    spec: PipelineSpec,
    *,
    project: str,
    region: str,
    bucket: str,
    params: Mapping[str, str],
    job_name: str | None = None,
    image: str | None = None,
) -> list[list[str]]:
    """The commands that build and run ``spec``'s Flex Template, in order (argv lists).

    Image build and push (docker, from the repository root), template build (writes the spec to
    ``gs://<bucket>/templates/``), and run with ``params`` as template parameters.
    """
    image = image or image_for(spec, project, region)
    template = template_path(spec, bucket)
    run = [
        "gcloud",
        "dataflow",
        "flex-template",
        "run",
        job_name or f"{spec.name}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}",
        f"--project={project}",
        f"--region={region}",
        f"--template-file-gcs-location={template}",
        f"--staging-location=gs://{bucket}/staging",
        f"--temp-location=gs://{bucket}/temp",
    ]
    parameters = _parameters_arg(params)
    if parameters:
        run.append(parameters)
    return [
        ["docker", "build", "-f", f"templates/{spec.name}/Dockerfile", "-t", image, "."],
        ["docker", "push", image],
        [
            "gcloud",
            "dataflow",
            "flex-template",
            "build",
            template,
            f"--project={project}",
            f"--image={image}",
            "--sdk-language=PYTHON",
            f"--metadata-file=templates/{spec.name}/metadata.json",
        ],
        run,
    ]


def gcloud_ready() -> tuple[bool, str]:
    """Whether gcloud and docker exist and gcloud has an active credential; the reason if not."""
    missing = [tool for tool in ("gcloud", "docker") if shutil.which(tool) is None]
    if missing:
        return False, f"{' and '.join(missing)} not found on PATH"
    adc = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if adc and Path(adc).is_file():
        return True, f"credentials from GOOGLE_APPLICATION_CREDENTIALS ({adc})"
    try:
        out = subprocess.run(
            ["gcloud", "auth", "list", "--filter=status:ACTIVE", "--format=value(account)"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"gcloud auth list failed: {exc}"
    account = out.stdout.strip()
    if out.returncode != 0 or not account:
        return False, "gcloud has no active account (gcloud auth login)"
    return True, f"gcloud account {account}"
