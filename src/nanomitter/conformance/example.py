"""A complete, correct transport to copy from: ``example://NAME``, in one process.

Every emitter in this process that opens the same NAME is on one bus. It moves encoded frames
(bytes), not objects, so it does what a network transport does: encode at ``send`` (raising
there, at the caller's ``emit``), refuse what receivers would not accept, decode through the
frame decoder (which counts and reports bad frames), wake a parked ``receive`` on close. It
passes the whole conformance suite (but ``reconnects``: it has no hub to restart)::

    import uuid
    from nanomitter import conformance, transports
    from nanomitter.conformance.example import ExampleTransport

    transports.register("example", ExampleTransport)
    await conformance.run_all(lambda: f"example://{uuid.uuid4().hex}")

A network transport keeps this shape: ``open`` joins (binds, connects, subscribes) and
returns once events can flow; ``send`` puts one frame on the wire; ``receive`` waits for at
least one frame, then takes every frame already there (up to ``MAX_BATCH``) without waiting.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import ClassVar

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .. import DistributedEvent
from ..transports import (
    CODECS,
    DEFAULT_MAX_FRAME_BYTES,
    MAX_BATCH,
    BusURL,
    Capabilities,
    FrameDecoder,
    Transport,
    TransportContext,
    get_codec,
    within_limit,
)

CAPACITY = 1024
"""Frames waiting per member; a sender waits while a member's buffer is full (no loss)."""


class ExampleTransport(Transport):
    schemes: ClassVar[tuple[str, ...]] = ("example",)
    options: ClassVar[Mapping[str, str]] = {
        "codec": f"{', '.join(sorted(CODECS))} (default msgpack)",
        "max_frame_bytes": f"largest frame sent or accepted (default {DEFAULT_MAX_FRAME_BYTES})",
    }
    capabilities: ClassVar[Capabilities] = Capabilities(raw_frames=True, crosses_processes=False)

    _buses: ClassVar[dict[str, list[ExampleTransport]]] = {}
    """Bus name -> its open members (the whole "network")."""

    def __init__(
        self, name: str, *, codec: str = "msgpack", max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    ) -> None:
        if not name:
            raise ValueError("example:// needs a bus name, e.g. 'example://orders'")
        self.name = name
        self.codec = get_codec(codec)
        self.max_frame_bytes = max_frame_bytes
        self._decoder: FrameDecoder | None = None
        self._inbox: MemoryObjectSendStream[bytes] | None = None
        self._frames: MemoryObjectReceiveStream[bytes] | None = None

    @classmethod
    def from_url(cls, url: BusURL) -> ExampleTransport:
        return cls(
            url.address.strip("/"),
            codec=url.choice_option("codec", list(CODECS), "msgpack"),
            max_frame_bytes=url.int_option("max_frame_bytes", DEFAULT_MAX_FRAME_BYTES, minimum=64),
        )

    @property
    def max_event_bytes(self) -> int:
        return self.max_frame_bytes

    async def open(self, context: TransportContext) -> None:
        self._decoder = context.decoder(self.codec, self.max_frame_bytes)
        self._inbox, self._frames = anyio.create_memory_object_stream[bytes](CAPACITY)
        self._buses.setdefault(self.name, []).append(self)

    async def send(self, event: DistributedEvent) -> None:
        # encode (and refuse an oversized frame) before the first await: emit raises it
        frame = within_limit(self.codec.encode(event), event.topic, self.max_frame_bytes)
        await self._deliver(frame, to_self=False)

    async def send_raw(self, frame: bytes) -> None:
        await self._deliver(frame, to_self=True)  # as if a foreign peer sent it: all get it

    async def _deliver(self, frame: bytes, *, to_self: bool) -> None:
        if self._inbox is None:
            raise anyio.ClosedResourceError
        for member in list(self._buses.get(self.name, ())):
            inbox = member._inbox
            if inbox is None or (member is self and not to_self):
                continue
            # it waits while that member's buffer is full; a member that closed meanwhile
            # is gone from the bus
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                await inbox.send(frame)

    async def receive(self) -> list[DistributedEvent]:
        frames, decoder = self._frames, self._decoder
        if frames is None or decoder is None:
            raise anyio.ClosedResourceError
        events: list[DistributedEvent] = []
        while not events:  # frames that fail to decode are counted, not returned
            decoder.decode_into(await frames.receive(), events)  # EndOfStream once closed
            for _ in range(MAX_BATCH - 1):
                try:
                    decoder.decode_into(frames.receive_nowait(), events)
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break  # nothing more now (or closed: the next call says so)
        return events

    async def aclose(self) -> None:
        members = self._buses.get(self.name, [])
        if self in members:
            members.remove(self)
            if not members:
                del self._buses[self.name]
        inbox, self._inbox = self._inbox, None
        if inbox is not None:
            inbox.close()  # a parked receive() gets EndOfStream once the buffer is read
        await anyio.lowlevel.checkpoint()
