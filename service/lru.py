"""A bounded in-process cache that forgets the least recently used entry."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable, Sequence
from itertools import compress, repeat
from operator import is_not
from typing import Any


class LRU:
    """Used from the event loop only, so no lock; capacity 0 disables it."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._data: OrderedDict[Hashable, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: Hashable) -> Any | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def get_many(self, keys: Sequence[Hashable]) -> list[Any | None]:
        """get() of each key, in C-level passes rather than a Python call per key (a ranking
        call looks up every item); the hits become the most recent, in order."""
        values = list(map(self._data.get, keys))
        found = compress(keys, map(is_not, values, repeat(None)))
        deque(map(self._data.move_to_end, found), maxlen=0)  # consumed for the side effect
        return values

    def put(self, key: Hashable, value: Any) -> None:
        if self.capacity == 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        if len(self._data) > self.capacity:
            self._data.popitem(last=False)
