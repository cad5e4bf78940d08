"""Launching a registered pipeline on the local stack: defaults from the stack, what must run.

``backbone launch`` and ``backbone backfill`` share this: connection parameters that were not
given are filled in from the stack (the Postgres DSN by an ``env:`` reference, so the connection
string stays out of options and display data), and the stack components the run needs are
derived from its options (its sinks, Kafka in streaming mode, the runner's services).

Example::

    plan = local_plan(get_pipeline("inventory"), ["--mode=batch", "--input=data"], cfg)
    Stack(cfg).up(plan.components(runner_components=("prism",)))
    os.environ.update(plan.env)
    summary = get_pipeline("inventory").load().run([*runner_argv, *plan.argv])
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

from retail_backbone.pipelines.registry import PipelineSpec
from retail_backbone.stack.config import StackConfig

__all__ = ["LocalPlan", "given", "local_plan", "worker_pool_reachable"]


def given(args: Sequence[str], name: str) -> bool:
    """Whether ``--name`` (or ``--name=value``) is among ``args``."""
    return any(a == f"--{name}" or a.startswith(f"--{name}=") for a in args)


@dataclass(frozen=True)
class LocalPlan:
    """The pipeline arguments to run with, the environment they refer to, and what must run."""

    spec: PipelineSpec
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def options(self, runner_argv: Sequence[str] = ()):
        return self.spec.options_class()([*runner_argv, *self.argv])

    def components(self, runner_components: Sequence[str] = ()) -> list[str]:
        """The selected sinks' stack components, Kafka and the registry if used, the runner's."""
        from retail_backbone.stack.components import ALL_COMPONENTS

        opts = self.options()
        known = {c.name for c in ALL_COMPONENTS}
        chosen = getattr(opts, "sinks", None)
        sinks = [s.strip() for s in chosen.split(",")] if chosen else list(self.spec.sinks())
        needed = [s for s in sinks if s in known]
        if getattr(opts, "mode", None) == "streaming" or getattr(
            opts, "dead_letters_to_kafka", False
        ):
            needed += ["kafka", "registry"]
        needed += [c for c in runner_components if c not in needed]
        return needed


def local_plan(spec: PipelineSpec, args: Sequence[str], cfg: StackConfig) -> LocalPlan:
    """``args`` plus the stack's connection defaults for the parameters ``spec`` has."""
    from retail_backbone.stack.components.postgres import dsn as pg_dsn

    names = {p.name for p in spec.params()}
    argv = list(args)
    env: dict[str, str] = {}
    defaults = []
    if "postgres_dsn" in names and not given(argv, "postgres_dsn"):
        # A reference, resolved where the SDK harness runs (this process under LOOPBACK).
        var = f"BACKBONE_{spec.name.upper()}_PG_DSN"
        env[var] = pg_dsn(cfg)
        defaults.append(f"--postgres_dsn=env:{var}")
    if "bootstrap_servers" in names and not given(argv, "bootstrap_servers"):
        defaults.append(f"--bootstrap_servers={cfg.host}:{cfg.port('kafka')}")
    if "registry_url" in names and not given(argv, "registry_url"):
        defaults.append(f"--registry_url=http://{cfg.host}:{cfg.port('registry')}")
    if "bigtable_project" in names:
        # The Bigtable client finds the emulator through this variable.
        env["BIGTABLE_EMULATOR_HOST"] = f"{cfg.host}:{cfg.port('bigtable')}"
    return LocalPlan(spec=spec, argv=[*defaults, *argv], env=env)


def worker_pool_reachable(address: str, timeout: float = 2.0) -> bool:
    """Whether something accepts connections at ``host:port`` (an EXTERNAL worker pool)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False
