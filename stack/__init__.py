"""The real local stack: obtain, start, health-check and stop every service the suite talks to.

Example::

    from retail_backbone.stack import Stack, StackConfig

    Stack(StackConfig.load()).up(["kafka", "postgres"])
"""

from retail_backbone.stack.config import StackConfig
from retail_backbone.stack.manager import ComponentStatus, Stack

__all__ = ["ComponentStatus", "Stack", "StackConfig"]
