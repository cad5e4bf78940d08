"""The dead-letter record: what could not be processed, where it came from and why.

Every fallible step sends failures here instead of raising or dropping them, so a run can account
for its input (in = out + dead letters). The full schema (attempts, first/last seen, traceback
bounds, Kafka and file sinks, replay) grows in issue #4; the fields below are its core.
"""

from __future__ import annotations

import traceback
from typing import NamedTuple

__all__ = ["DeadLetter", "dead_letter_from_exception"]

_TRACEBACK_LIMIT = 4000


class DeadLetter(NamedTuple):
    payload: bytes
    source: str  # topic/partition/offset, file:line or LSN, as text
    pipeline: str
    stage: str
    error_class: str
    message: str
    traceback: str


def dead_letter_from_exception(
    payload: bytes, source: str, pipeline: str, stage: str, exc: BaseException
) -> DeadLetter:
    """Build a dead letter from a caught exception, with a bounded traceback."""
    tb = "".join(traceback.format_exception(exc))[-_TRACEBACK_LIMIT:]
    return DeadLetter(payload, source, pipeline, stage, type(exc).__name__, str(exc), tb)
