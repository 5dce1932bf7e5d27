"""A bounded FIFO between synchronous producers and one async consumer.

Cheaper than a memory object stream on the hot path: pushing is a deque append and, only
when the consumer is parked, one ``Event.set()``. Producers choose their overflow policy:
``push_nowait`` refuses when full (the caller counts the drop), ``push`` waits for room.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, NamedTuple, TypeVar

import anyio

T = TypeVar("T")


class InboxStatistics(NamedTuple):
    queued: int
    capacity: int
    closed: bool


class BoundedInbox(Generic[T]):
    __slots__ = ("_items", "_readable", "_writable", "capacity", "closed")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"inbox capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.closed = False
        self._items: deque[T] = deque()
        self._readable: anyio.Event | None = None
        self._writable: anyio.Event | None = None

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def push_nowait(self, item: T) -> bool:
        """Append ``item`` unless the inbox is full or closed; return whether it was taken."""
        if self.closed or len(self._items) >= self.capacity:
            return False
        self._items.append(item)
        readable = self._readable
        if readable is not None:
            self._readable = None
            readable.set()
        return True

    async def push(self, item: T) -> bool:
        """Append ``item``, waiting while the inbox is full; False if it closed meanwhile."""
        while len(self._items) >= self.capacity and not self.closed:
            if self._writable is None:
                self._writable = anyio.Event()
            await self._writable.wait()
        return self.push_nowait(item)

    async def wait(self) -> bool:
        """Wait until an item is queued; return False if the inbox closed while empty."""
        while not self._items:
            if self.closed:
                return False
            if self._readable is None:
                self._readable = anyio.Event()
            await self._readable.wait()
        return True

    def take_all(self) -> list[T]:
        """Remove and return every queued item (possibly none) and wake blocked producers."""
        items = list(self._items)
        self._items.clear()
        self._wake_writers()
        return items

    def take_up_to(self, limit: int) -> list[T]:
        """Remove and return the oldest ``limit`` items at most; wake blocked producers."""
        if len(self._items) <= limit:
            return self.take_all()
        popleft = self._items.popleft
        items = [popleft() for _ in range(limit)]
        self._wake_writers()
        return items

    def take(self) -> T:
        """Remove and return the oldest item (the inbox must not be empty)."""
        item = self._items.popleft()
        if self._writable is not None:
            self._wake_writers()
        return item

    def close(self) -> None:
        """Refuse new items; the consumer still gets what is queued, then ``wait`` -> False."""
        self.closed = True
        readable, self._readable = self._readable, None
        if readable is not None:
            readable.set()
        self._wake_writers()

    def clear(self) -> int:
        """Drop everything queued; return how many items were dropped."""
        count = len(self._items)
        self._items.clear()
        self._wake_writers()
        return count

    def statistics(self) -> InboxStatistics:
        return InboxStatistics(len(self._items), self.capacity, self.closed)

    def _wake_writers(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None:
            writable.set()
