"""``memory://NAME``: every emitter in this process that opens NAME is on one bus.

For unit tests and single-process apps. By default each event goes through the codec, so a
test fails where production would (data that does not serialise, a Struct mismatch);
``?codec=none`` passes the objects themselves, for speed. Each member has a bounded inbox;
a sender waits while a receiver's inbox is full (backpressure, no loss), and a receiver
that closes stops receiving at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import ClassVar

import anyio
import anyio.lowlevel

from ..core.codecs import (
    CODECS,
    DEFAULT_MAX_FRAME_BYTES,
    Codec,
    FrameDecoder,
    get_codec,
    within_limit,
)
from ..core.context import TransportContext
from ..core.errors import NanomitterError
from ..core.event import DistributedEvent
from ..core.inbox import BoundedInbox
from .base import MAX_BATCH, Capabilities, Transport
from .url import BusURL

Item = bytes | DistributedEvent

DEFAULT_CAPACITY = 4096


class BusInUseError(NanomitterError, RuntimeError):
    """A memory:// name is already served by a different event loop."""


class _Hub:
    """The members of one named in-process bus."""

    __slots__ = ("loop", "members", "name")

    def __init__(self, name: str, loop: object) -> None:
        self.name = name
        self.loop = loop
        self.members: tuple[MemoryTransport, ...] = ()


_hubs: dict[str, _Hub] = {}


def hub_names() -> list[str]:
    """Names of the in-process buses that currently have members (for diagnostics)."""
    return sorted(_hubs)


class MemoryTransport(Transport):
    schemes: ClassVar[tuple[str, ...]] = ("memory",)
    options: ClassVar[Mapping[str, str]] = {
        "codec": f"{', '.join(sorted(CODECS))} or none (no serialisation; default msgpack)",
        "capacity": f"events queued per member before senders wait (default {DEFAULT_CAPACITY})",
        "max_frame_bytes": f"largest frame accepted (default {DEFAULT_MAX_FRAME_BYTES})",
    }
    capabilities: ClassVar[Capabilities] = Capabilities(raw_frames=True, crosses_processes=False)

    def __init__(
        self,
        name: str,
        *,
        codec: str = "msgpack",
        capacity: int = DEFAULT_CAPACITY,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        if not name:
            raise ValueError("memory:// needs a bus name, e.g. 'memory://orders'")
        self.name = name
        self.codec: Codec | None = None if codec == "none" else get_codec(codec)
        self.capacity = capacity
        self.max_frame_bytes = max_frame_bytes
        self._inbox: BoundedInbox[Item] = BoundedInbox(capacity)
        self._hub: _Hub | None = None
        self._decoder: FrameDecoder | None = None
        self._raw_frames = False  # raw bytes were queued here at some point: decode items

    @classmethod
    def from_url(cls, url: BusURL) -> MemoryTransport:
        return cls(
            url.address.strip("/"),
            codec=url.choice_option("codec", [*CODECS, "none"], "msgpack"),
            capacity=url.int_option("capacity", DEFAULT_CAPACITY, minimum=1),
            max_frame_bytes=url.int_option("max_frame_bytes", DEFAULT_MAX_FRAME_BYTES, minimum=64),
        )

    async def open(self, context: TransportContext) -> None:
        self._decoder = context.decoder(self.codec or get_codec("msgpack"), self.max_frame_bytes)
        loop = anyio.lowlevel.current_token()
        hub = _hubs.get(self.name)
        if hub is None:
            hub = _hubs[self.name] = _Hub(self.name, loop)
        elif hub.loop != loop:
            raise BusInUseError(
                f"memory://{self.name} is in use by another event loop (thread); a memory:// "
                "bus lives in one event loop: use one loop, nanomitter.sync for threads "
                "(all sync emitters share a loop), or a network transport between loops"
            )
        hub.members = (*hub.members, self)
        self._hub = hub

    async def send(self, event: DistributedEvent) -> None:
        pending = self._offer(event)
        if pending is not None:
            await pending

    def send_nowait(self, event: DistributedEvent) -> Awaitable[None] | None:
        return self._offer(event)

    def _offer(self, event: DistributedEvent) -> Awaitable[None] | None:
        """Queue for every other member; an awaitable only if some inbox is full."""
        hub = self._hub
        if hub is None:
            raise anyio.ClosedResourceError
        codec = self.codec
        item: Item = (
            event
            if codec is None
            else within_limit(codec.encode(event), event.topic, self.max_frame_bytes)
        )
        members = hub.members
        for index, member in enumerate(members):
            if member is not self and not member._inbox.push_nowait(item):
                return self._push_waiting(item, members[index:])  # a full inbox: wait
        return None

    async def _push_waiting(self, item: Item, members: tuple[MemoryTransport, ...]) -> None:
        for member in members:
            if member is not self and not member._inbox.push_nowait(item):
                await member._inbox.push(item)  # waits for room (False if it closed)

    async def send_raw(self, frame: bytes) -> None:
        hub = self._hub
        if hub is None:
            raise anyio.ClosedResourceError
        for member in hub.members:  # every member, this one included
            member._raw_frames = True
            if not member._inbox.push_nowait(frame):
                await member._inbox.push(frame)

    async def receive(self) -> list[DistributedEvent]:
        inbox = self._inbox
        if len(inbox):
            await anyio.lowlevel.checkpoint()  # let others run even when we never wait
        if not await inbox.wait():
            raise anyio.EndOfStream
        items = inbox.take_up_to(MAX_BATCH)
        if self.codec is None and not self._raw_frames:
            return items  # type: ignore[return-value]  # only events were ever queued here
        decoder = self._decoder
        assert decoder is not None
        events: list[DistributedEvent] = []
        for item in items:
            if type(item) is bytes:
                decoder.decode_into(item, events)
            else:
                events.append(item)  # type: ignore[arg-type]
        return events

    async def aclose(self) -> None:
        hub, self._hub = self._hub, None
        if hub is not None:
            hub.members = tuple(m for m in hub.members if m is not self)
            if not hub.members and _hubs.get(hub.name) is hub:
                del _hubs[hub.name]
        self._inbox.close()
        self._inbox.clear()
        await anyio.lowlevel.checkpoint()

    @property
    def max_event_bytes(self) -> int | None:
        """None with ``codec=none``: objects pass by reference, whatever their size."""
        return None if self.codec is None else self.max_frame_bytes

    def statistics(self) -> Mapping[str, int]:
        stats = self._inbox.statistics()
        members = len(self._hub.members) if self._hub is not None else 0
        return {"queued": stats.queued, "capacity": stats.capacity, "members": members}

    @property
    def address(self) -> str:
        return f"memory://{self.name}"
