"""State values that the Python SDK's state cache weighs in O(1).

With the SDK harness's state cache on (``--max_cache_memory_usage_mb``, set for Flink by the
runner profiles), every state write puts the new value in the cache, weighed with ``objsize``:
a walk of the whole object graph. A stateful step that keeps one dict per shard (the ledger, the
forecast series) spent a third of the inventory job's bundle time there, walking thousands of
entries on every write. A ``CacheAware`` value stops the walk at itself; ``__sizeof__`` then
estimates its footprint from its length, so the cache stays bounded by (roughly) real memory.

Example::

    book = ShardBook(ledgers.read() or {})
    book[key] = entry
    ledgers.write(book)
"""

from __future__ import annotations

from typing import Any

from apache_beam.runners.worker.statecache import CacheAware

__all__ = ["SeenIds", "ShardBook"]


class SeenIds(set, CacheAware):
    """A set of event ids (``transforms/dedup.py``), weighed as ~80 bytes per id."""

    _ID_BYTES = 80

    def get_referents_for_cache(self) -> list[Any]:
        return []

    def __sizeof__(self) -> int:
        return set.__sizeof__(self) + len(self) * self._ID_BYTES

    def __reduce__(self) -> tuple[Any, ...]:
        return (SeenIds, (list(self),))


class ShardBook(dict, CacheAware):
    """A shard's ``{key: entry}`` state, weighed as ``ENTRY_BYTES`` per entry.

    1 KiB covers an entry of the ledger (a folded level, a few pending movements, an alert) and
    of the forecast (a folded series and the open days' totals) with room to spare.
    """

    ENTRY_BYTES = 1024

    def get_referents_for_cache(self) -> list[Any]:
        return []

    def __sizeof__(self) -> int:
        return dict.__sizeof__(self) + len(self) * self.ENTRY_BYTES

    def __reduce__(self) -> tuple[Any, ...]:
        return (ShardBook, (dict(self),))
