"""Flink runner profiles are data, validated, and map onto options Beam 2.62 understands."""

from __future__ import annotations

import argparse

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from retail_backbone.stack.config import StackConfig
from retail_backbone.templates.profiles import (
    JAVA_OPTIONS,
    ProfileError,
    check_profile_file,
    load_profile,
    profile_args,
    profile_names,
)


def _cfg(tmp_path) -> StackConfig:
    return StackConfig.load(path=tmp_path / "none.toml", env={"BACKBONE_RUN_DIR": str(tmp_path)})


def _python_option_names() -> set[str]:
    parser = argparse.ArgumentParser()
    for cls in PipelineOptions.__subclasses__():
        cls._add_argparse_args(parser)
    return {a.dest for a in parser._actions}


def test_local_and_cluster_profiles_exist_and_are_valid():
    assert {"local", "cluster"} <= set(profile_names())
    for name in profile_names():
        profile = load_profile(name)
        assert check_profile_file(profile.path) == []
    assert load_profile("local").environment_type == "LOOPBACK"
    assert load_profile("cluster").environment_type == "EXTERNAL"


def test_profile_args_use_the_stack_ports_and_known_beam_options(tmp_path):
    cfg = _cfg(tmp_path)
    known = _python_option_names()
    for name in profile_names():
        args = profile_args(load_profile(name), cfg)
        assert args[0] == "--runner=PortableRunner"
        options = dict(a[2:].split("=", 1) for a in args)
        # Each option is the Python SDK's own or a Java FlinkPipelineOptions one the job server
        # describes; nothing is silently dropped by a misspelling.
        unknown = set(options) - known - JAVA_OPTIONS
        assert not unknown, unknown
        assert options["job_endpoint"] == f"127.0.0.1:{cfg.port('jobserver')}"
        assert options["flink_master"] == f"127.0.0.1:{cfg.port('flink_rest')}"
        assert options["state_backend_storage_path"] == (
            f"file://{cfg.data_dir('flink')}/checkpoints"
        )
        assert options["checkpointing_mode"] == "EXACTLY_ONCE"
        assert int(options["checkpointing_interval"]) > 0
        assert int(options["max_bundle_size"]) > 0 and int(options["max_bundle_time_mills"]) > 0
    cluster = dict(a[2:].split("=", 1) for a in profile_args(load_profile("cluster"), cfg))
    assert cluster["environment_type"] == "EXTERNAL"
    assert cluster["environment_config"] == "127.0.0.1:50000"
    parsed = PipelineOptions(profile_args(load_profile("cluster"), cfg)).get_all_options()
    assert parsed["parallelism"] == 2 and parsed["environment_type"] == "EXTERNAL"


def test_bad_profiles_are_refused_with_every_problem(tmp_path):
    (tmp_path / "broken.toml").write_text(
        'description = "x"\njob_endpoint = "h:1"\nflink_master = "h:2"\nparallelism = "two"\n'
        'environment_type = "EXTERNAL"\nwhatever = 1\n'
        '[checkpointing]\ninterval_ms = 10\nmode = "EXACTLY_ONCE"\n'
        "[bundles]\nmax_size = 1\nmax_time_ms = 1\n"
    )
    with pytest.raises(ProfileError) as err:
        load_profile("broken", directory=tmp_path)
    message = str(err.value)
    assert "parallelism must be int" in message
    assert "unknown key whatever" in message
    assert "the [state_backend] table is missing" in message
    with pytest.raises(ProfileError, match=r"no Flink profile 'nope'; choose one of \['broken'\]"):
        load_profile("nope", directory=tmp_path)
