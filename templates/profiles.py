"""Flink runner profiles: ``templates/flink/<name>.toml`` as data, turned into Beam options.

A profile says where the job goes and how Flink runs it: job server endpoint, Flink master,
parallelism, checkpointing interval and mode, state backend, bundle size/time and the SDK
environment (``LOOPBACK``: the SDK harness runs in the launching process; ``EXTERNAL``: a worker
pool beside each TaskManager). ``profile_args`` maps it onto Beam 2.62 options: the Python-side
``PortableOptions``/``FlinkRunnerOptions`` (``--job_endpoint``, ``--environment_type``,
``--parallelism``, ...) and the Java ``FlinkPipelineOptions`` that the job server describes to the
Python SDK and receives through the pipeline options (``--checkpointing_interval``,
``--state_backend``, ``--max_bundle_size``, ...).

Example::

    profile = load_profile("local")
    args = profile_args(profile, StackConfig.load())
    # ['--runner=PortableRunner', '--job_endpoint=127.0.0.1:8099', ...,
    #  '--checkpointing_interval=10000', '--checkpointing_mode=EXACTLY_ONCE', ...]
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retail_backbone.stack.config import StackConfig

__all__ = [
    "JAVA_OPTIONS",
    "PROFILE_DIR",
    "FlinkProfile",
    "ProfileError",
    "check_profile_file",
    "load_profile",
    "profile_args",
    "profile_names",
]

PROFILE_DIR = Path(__file__).resolve().parent / "flink"

# Java FlinkPipelineOptions of the Beam 2.62 job server (javap of
# org.apache.beam.runners.flink.FlinkPipelineOptions), in the snake_case the Python SDK passes.
_CHECKPOINT_MODES = ("EXACTLY_ONCE", "AT_LEAST_ONCE")
_STATE_BACKENDS = ("filesystem", "rocksdb")  # what FlinkExecutionEnvironments accepts
_ENVIRONMENTS = ("LOOPBACK", "EXTERNAL", "DOCKER", "PROCESS")

# key -> (type, required); tables are [checkpointing], [state_backend], [bundles].
_TOP = {
    "description": (str, True),
    "job_endpoint": (str, True),
    "kafka_expansion_service": (str, False),
    "flink_master": (str, True),
    "parallelism": (int, True),
    "max_parallelism": (int, False),
    "environment_type": (str, True),
    "environment_config": (str, False),
    "sdk_worker_parallelism": (int, False),
    "sdk_cache_mb": (int, False),
}
_TABLES = {
    "checkpointing": {
        "interval_ms": (int, True),
        "mode": (str, True),
        "timeout_ms": (int, False),
        "min_pause_ms": (int, False),
    },
    "state_backend": {"type": (str, True), "path": (str, True)},
    "bundles": {"max_size": (int, True), "max_time_ms": (int, True)},
}
# Profile key -> Beam option name.
_OPTION = {
    "job_endpoint": "job_endpoint",
    "kafka_expansion_service": "kafka_expansion_service",
    "flink_master": "flink_master",
    "parallelism": "parallelism",
    "max_parallelism": "max_parallelism",
    "environment_type": "environment_type",
    "environment_config": "environment_config",
    "sdk_worker_parallelism": "sdk_worker_parallelism",
    "sdk_cache_mb": "max_cache_memory_usage_mb",
    "checkpointing.interval_ms": "checkpointing_interval",
    "checkpointing.mode": "checkpointing_mode",
    "checkpointing.timeout_ms": "checkpoint_timeout_millis",
    "checkpointing.min_pause_ms": "min_pause_between_checkpoints",
    "state_backend.type": "state_backend",
    "state_backend.path": "state_backend_storage_path",
    "bundles.max_size": "max_bundle_size",
    "bundles.max_time_ms": "max_bundle_time_mills",
}
#: The options above that only the Java job server knows (the Python SDK forwards them).
JAVA_OPTIONS = frozenset(
    {
        "checkpointing_interval",
        "checkpointing_mode",
        "checkpoint_timeout_millis",
        "min_pause_between_checkpoints",
        "state_backend",
        "state_backend_storage_path",
        "max_bundle_size",
        "max_bundle_time_mills",
    }
)


class ProfileError(ValueError):
    """A profile is missing, unreadable or has a wrong key or value; the message says which."""


@dataclass(frozen=True)
class FlinkProfile:
    """A validated profile: its name, file and flattened settings (``checkpointing.mode``)."""

    name: str
    path: Path
    settings: dict[str, Any]

    @property
    def description(self) -> str:
        return self.settings["description"]

    @property
    def environment_type(self) -> str:
        return self.settings["environment_type"]


def profile_names(directory: Path = PROFILE_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.toml"))


def _check(data: dict[str, Any], where: str) -> list[str]:
    problems = []

    def check_keys(table: dict[str, Any], spec: dict[str, tuple[type, bool]], prefix: str):
        for key, (kind, required) in spec.items():
            if key not in table:
                if required:
                    problems.append(f"{where}: {prefix}{key} is missing")
            elif type(table[key]) is not kind:
                problems.append(
                    f"{where}: {prefix}{key} must be {kind.__name__}, not {table[key]!r}"
                )
        allowed = set(spec) | (set(_TABLES) if not prefix else set())
        for key in sorted(set(table) - allowed):
            problems.append(f"{where}: unknown key {prefix}{key}")

    check_keys(data, _TOP, "")
    for table, spec in _TABLES.items():
        if not isinstance(data.get(table), dict):
            problems.append(f"{where}: the [{table}] table is missing")
            continue
        check_keys(data[table], spec, f"{table}.")
    if problems:
        return problems
    if data["environment_type"] not in _ENVIRONMENTS:
        problems.append(f"{where}: environment_type must be one of {list(_ENVIRONMENTS)}")
    if data["environment_type"] == "EXTERNAL" and not data.get("environment_config"):
        problems.append(f"{where}: EXTERNAL needs environment_config (the worker pool host:port)")
    if data["checkpointing"]["mode"] not in _CHECKPOINT_MODES:
        problems.append(f"{where}: checkpointing.mode must be one of {list(_CHECKPOINT_MODES)}")
    if data["state_backend"]["type"] not in _STATE_BACKENDS:
        problems.append(f"{where}: state_backend.type must be one of {list(_STATE_BACKENDS)}")
    if data["parallelism"] < 1 or data["checkpointing"]["interval_ms"] < 1:
        problems.append(f"{where}: parallelism and checkpointing.interval_ms must be positive")
    return problems


def check_profile_file(path: Path) -> list[str]:
    """Every problem of one profile file (empty when it is valid)."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        return [f"{path.name}: cannot read: {exc}"]
    return _check(data, path.name)


def load_profile(name: str, directory: Path = PROFILE_DIR) -> FlinkProfile:
    """The profile ``name`` (``templates/flink/<name>.toml``), validated.

    Raises:
        ProfileError: no such profile, or the file has problems (all of them listed).
    """
    path = directory / f"{name}.toml"
    if not path.is_file():
        raise ProfileError(
            f"no Flink profile {name!r}; choose one of {profile_names(directory)} "
            f"(files in {directory})"
        )
    problems = check_profile_file(path)
    if problems:
        raise ProfileError("invalid Flink profile:\n  " + "\n  ".join(problems))
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    flat = {k: v for k, v in data.items() if k not in _TABLES}
    for table in _TABLES:
        flat.update({f"{table}.{k}": v for k, v in data[table].items()})
    return FlinkProfile(name=name, path=path, settings=flat)


class _DataDirs:
    def __init__(self, cfg: StackConfig) -> None:
        self._cfg = cfg

    def __getitem__(self, component: str) -> str:
        return str(self._cfg.data_dir(component))


def _expand(value: Any, cfg: StackConfig) -> str:
    if not isinstance(value, str):
        return str(value)
    return value.format(host=cfg.host, port=cfg.ports, data_dir=_DataDirs(cfg))


def profile_args(profile: FlinkProfile, cfg: StackConfig) -> list[str]:
    """Beam command-line options for ``profile`` with the stack's host, ports and folders."""
    args = ["--runner=PortableRunner"]
    for key, option in _OPTION.items():
        if key in profile.settings:
            args.append(f"--{option}={_expand(profile.settings[key], cfg)}")
    return args
