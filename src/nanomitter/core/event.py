"""The event: what listeners receive and, field for field, what travels on the wire.

One struct serves both jobs so a received frame decodes straight into the object handed to
listeners. Field order is the wire order of the original nanomitter's msgpack map
(``topic``, ``data``, ``fromLeader``, ``sender``), followed by our ``seq``; peers ignore keys
they do not know, so frames stay readable both ways.
"""

from __future__ import annotations

from typing import Any

import msgspec


class DistributedEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One event: ``topic``, ``data``, who sent it and its per-sender, per-topic number.

    ``seq`` counts from 1 for each (sender, topic) pair; 0 means the sender does not number
    its events (the original nanomitter does not). ``from_leader`` is kept for wire
    compatibility with the original package, whose master sets it on its own events.

    Events are not tracked by the cycle collector (``gc=False``: up to a third faster
    dispatch). The one cost: an event that a listener stores inside its own ``data``
    container forms a cycle that is never freed, so don't do that.
    """

    topic: str
    data: Any = None
    from_leader: bool = msgspec.field(default=False, name="fromLeader")
    sender: str = ""
    seq: int = 0


Envelope = DistributedEvent
"""The wire name of the same struct (see docs/wire.md)."""
