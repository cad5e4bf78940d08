"""Pipeline parameters declared once: argparse options, launch validation and template metadata.

Each pipeline lists its parameters as ``Param``s on its ``PipelineOptions`` subclass; argparse
options, launch-time validation, the Dataflow Flex Template metadata and the README parameter table
are all derived from that one list (``templates/`` generates the last two).

Example::

    class InventoryOptions(PipelineOptions):
        PARAMS = (
            Param("mode", "Execution mode: streaming (Kafka) or batch (files).",
                  choices=("streaming", "batch"), default="batch"),
            Param("postgres_dsn", "libpq connection string, or env:VAR.", secret=True),
        )

        @classmethod
        def _add_argparse_args(cls, parser):
            add_params(parser, cls.PARAMS)

    opts = InventoryOptions(argv)
    validate_params(opts, InventoryOptions.PARAMS)     # raises InvalidParams, before launch
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["InvalidParams", "Param", "add_params", "parse_bool", "validate_params"]


class InvalidParams(ValueError):
    """One or more parameters are invalid; the message lists each with how to fix it."""


@dataclass(frozen=True)
class Param:
    """One pipeline parameter.

    Attributes:
        name: option name without dashes (``snake_case``), as Dataflow templates expect.
        help: what it is, its format and its default, for people.
        type: ``str``, ``int``, ``float`` or ``bool``.
        default: value when not given (None: no default).
        required: must be given (a required parameter has no default).
        choices: allowed values.
        regex: a full-match pattern for the value's text (also put into template metadata).
        secret: a secret reference (``env:VAR`` or a Secret Manager name); never defaulted,
            logged or shown in display data.
        label: short title for template UIs (default: derived from the name).
    """

    name: str
    help: str
    type: type = str
    default: Any = None
    required: bool = False
    choices: Sequence[Any] | None = None
    regex: str | None = None
    secret: bool = False
    label: str | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ValueError(f"parameter name {self.name!r} must be snake_case")
        if self.required and self.default is not None:
            raise ValueError(f"{self.name}: a required parameter cannot have a default")
        if self.secret and self.default is not None:
            raise ValueError(f"{self.name}: a secret parameter cannot have a default")

    @property
    def title(self) -> str:
        return self.label or self.name.replace("_", " ").capitalize()

    def help_text(self) -> str:
        extra = []
        if self.choices:
            extra.append("one of " + ", ".join(map(str, self.choices)))
        if self.default is not None:
            extra.append(f"default: {self.default}")
        elif self.required:
            extra.append("required")
        return self.help + (f" ({'; '.join(extra)})" if extra else "")


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def parse_bool(text: str) -> bool:
    """``true``/``false`` (also 1/0, yes/no, on/off, any case) as a bool, for boolean params.

    Example: ``parse_bool("False")`` is ``False``.
    """
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a boolean; use true or false")


def add_params(parser: Any, params: Iterable[Param]) -> None:
    """Declare ``params`` on a Beam options parser (``_add_argparse_args``)."""
    for p in params:
        if p.type is bool:
            # ``--flag`` alone means true, and ``--flag=true|false`` works too: Dataflow Flex
            # Templates (and most schedulers) pass every parameter as ``--name=value``, which a
            # plain ``store_true`` flag rejects.
            parser.add_argument(
                f"--{p.name}",
                nargs="?",
                const=True,
                type=parse_bool,
                default=bool(p.default),
                help=p.help_text().replace("%", "%%"),
            )
        else:
            parser.add_argument(
                f"--{p.name}",
                type=p.type,
                default=p.default,
                choices=p.choices,
                help=p.help_text().replace("%", "%%"),
            )


def validate_params(options: Any, params: Iterable[Param]) -> None:
    """Check required values and patterns at launch; raise one error listing every problem."""
    values = options.get_all_options(drop_default=False)
    problems = []
    for p in params:
        value = values.get(p.name)
        if value is None or value == "":
            if p.required:
                problems.append(f"--{p.name} is required: {p.help}")
            continue
        shown = "<secret>" if p.secret else repr(value)
        if p.regex and not re.fullmatch(p.regex, str(value)):
            problems.append(f"--{p.name}={shown} does not match {p.regex!r}: {p.help}")
        if p.choices and value not in p.choices:
            problems.append(f"--{p.name}={shown} is not one of {list(p.choices)}")
    if problems:
        raise InvalidParams("invalid pipeline parameters:\n  " + "\n  ".join(problems))
