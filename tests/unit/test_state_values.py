"""State values the SDK's state cache weighs without walking them."""

import sys

from apache_beam.coders import PickleCoder
from apache_beam.runners.worker.statecache import get_deep_size

from retail_backbone.transforms.state_values import SeenIds, ShardBook


def _book(n: int) -> ShardBook:
    return ShardBook({(f"SKU-{i}", "LOC-1"): [i, list(range(50)), None] for i in range(n)})


def test_a_shard_book_is_weighed_by_its_length_not_by_walking_its_entries():
    small, large = _book(10), _book(2000)
    # Only the object itself is measured: the deep size is its own estimate...
    assert get_deep_size(large) == sys.getsizeof(large)
    # ...which grows with the entries like the memory they hold (1 KiB each).
    assert get_deep_size(large) - get_deep_size(small) >= 1990 * ShardBook.ENTRY_BYTES
    # A plain dict of the same entries is walked entry by entry (what the book avoids).
    assert get_deep_size(dict(large)) != get_deep_size(large)


def test_state_values_survive_the_state_coder_with_their_type():
    coder = PickleCoder()
    book = coder.decode(coder.encode(_book(3)))
    assert type(book) is ShardBook and book == _book(3)
    ids = coder.decode(coder.encode(SeenIds({"a", "b"})))
    assert type(ids) is SeenIds and ids == {"a", "b"}
    assert get_deep_size(ids) == sys.getsizeof(ids)
