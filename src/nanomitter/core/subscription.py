"""Pull-style delivery: ``async for event in subscription``."""

from __future__ import annotations

from .codecs import Reporter
from .event import DistributedEvent
from .inbox import BoundedInbox, InboxStatistics
from .listeners import refused
from .stats import Counters


class Subscription:
    """Events matching one pattern, queued (bounded) until the consumer pulls them.

    When full, the newest event is dropped, counted in ``dropped`` and reported.
    """

    def __init__(self, pattern: str, capacity: int, counters: Counters, report: Reporter) -> None:
        self.pattern = pattern
        self._inbox: BoundedInbox[DistributedEvent] = BoundedInbox(capacity)
        self._counters = counters
        self._report = report

    def push(self, event: DistributedEvent) -> None:
        if not self._inbox.push_nowait(event):
            where = f"subscription {self.pattern!r}"
            inbox = self._inbox
            refused(inbox, where, self._counters, self._report, removed=inbox.closed)

    async def receive(self) -> DistributedEvent:
        """The next event; ``StopAsyncIteration`` once the subscription is closed and empty."""
        inbox = self._inbox
        if not inbox and not await inbox.wait():
            raise StopAsyncIteration
        return inbox.take()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> DistributedEvent:
        return await self.receive()

    def close(self) -> None:
        self._inbox.close()

    def statistics(self) -> InboxStatistics:
        return self._inbox.statistics()

    def __repr__(self) -> str:
        stats = self._inbox.statistics()
        return f"<Subscription {self.pattern!r} queued={stats.queued}/{stats.capacity}>"
