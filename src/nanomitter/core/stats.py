"""Counters every emitter keeps, and the frozen snapshot ``stats()`` returns."""

from __future__ import annotations

import msgspec


class Counters:
    """Mutable counters shared by an emitter and its transport; plain ints, no locking."""

    __slots__ = (
        "decode_errors",
        "delivered",
        "dropped",
        "emitted",
        "invalid",
        "late_replies",
        "listener_errors",
        "lost",
        "own_echoes",
        "received",
        "reordered",
        "requests",
        "served",
    )

    def __init__(self) -> None:
        self.emitted = 0
        self.received = 0
        self.delivered = 0
        self.dropped = 0
        self.lost = 0
        self.reordered = 0
        self.decode_errors = 0
        self.invalid = 0
        self.listener_errors = 0
        self.own_echoes = 0
        self.requests = 0
        self.served = 0
        self.late_replies = 0

    def snapshot(self) -> Stats:
        return Stats(**{name: getattr(self, name) for name in self.__slots__})


class Stats(msgspec.Struct, frozen=True, kw_only=True):
    """What an emitter has done since it opened. Loss is never silent: it shows up here.

    - ``emitted``: events this emitter emitted.
    - ``received``: events that arrived from other emitters (own echoes excluded).
    - ``delivered``: listener deliveries (one event to one listener).
    - ``dropped``: events dropped because a bounded queue was full (async listener,
      subscription, or transport buffer).
    - ``lost``: gaps in other senders' sequence numbers (lost in transit).
    - ``reordered``: events that arrived with an older sequence number than one already seen.
    - ``decode_errors``: frames that did not decode (garbage, truncated, oversized, wrong
      types, invalid topic) and were dropped.
    - ``invalid``: events skipped for a typed listener because ``data`` failed validation.
    - ``listener_errors``: exceptions raised by listeners.
    - ``own_echoes``: own frames sent back by a hub that echoes (dropped by sender id).
    - ``requests``: requests and surveys this emitter sent.
    - ``served``: requests its responders answered (replies and errors).
    - ``late_replies``: replies that came after their request's deadline (dropped).
    """

    emitted: int = 0
    received: int = 0
    delivered: int = 0
    dropped: int = 0
    lost: int = 0
    reordered: int = 0
    decode_errors: int = 0
    invalid: int = 0
    listener_errors: int = 0
    own_echoes: int = 0
    requests: int = 0
    served: int = 0
    late_replies: int = 0
