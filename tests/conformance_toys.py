"""Toy transports for testing the conformance suite itself.

Most are the memory transport with one promise broken, registered under their own scheme
(``dupmem://name`` and so on); the suite must catch each. :class:`TcpHubToy` is the
positive control for what memory:// cannot do: a correct transport whose emitters, in any
process, meet at a hub process (``python tests/conformance_toys.py hub`` prints its port).
Importing this module registers every toy.
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Mapping
from typing import Any, ClassVar

import anyio
import anyio.abc
import msgspec
from anyio.streams.buffered import BufferedByteReceiveStream

from nanomitter.core.codecs import DEFAULT_MAX_FRAME_BYTES, FrameDecoder, MsgpackCodec
from nanomitter.core.context import TransportContext
from nanomitter.core.event import DistributedEvent
from nanomitter.transports import BusURL, Capabilities, Transport, register
from nanomitter.transports.memory import MemoryTransport, _hubs


class DuplicatingMemory(MemoryTransport):
    """Sends every event twice, like a hub that echoes or a retry without de-duplication."""

    async def send(self, event: DistributedEvent) -> None:
        await super().send(event)
        await super().send(event)


class ReorderingMemory(MemoryTransport):
    """Swaps each pair of consecutive events (nothing is lost: it flushes on close)."""

    def __init__(self, name: str, **options: Any) -> None:
        super().__init__(name, **options)
        self._held: DistributedEvent | None = None

    async def send(self, event: DistributedEvent) -> None:
        if self._held is None:
            self._held = event
            return
        held, self._held = self._held, None
        await super().send(event)
        await super().send(held)

    async def aclose(self) -> None:
        held, self._held = self._held, None
        if held is not None and self._hub is not None:
            await super().send(held)
        await super().aclose()


class DroppingMemory(MemoryTransport):
    """Silently drops every fifth event it sends."""

    def __init__(self, name: str, **options: Any) -> None:
        super().__init__(name, **options)
        self._sent = 0

    async def send(self, event: DistributedEvent) -> None:
        self._sent += 1
        if self._sent % 5:
            await super().send(event)


class LaggingMemory(MemoryTransport):
    """Sends each event only when the next one comes, and forgets the last one on close
    (heartbeats, the bye included, pass straight through: they do not push it out)."""

    def __init__(self, name: str, **options: Any) -> None:
        super().__init__(name, **options)
        self._pending: DistributedEvent | None = None

    async def send(self, event: DistributedEvent) -> None:
        if event.topic == "<3":
            await super().send(event)
            return
        pending, self._pending = self._pending, event
        if pending is not None:
            await super().send(pending)


class CorruptingMemory(MemoryTransport):
    """Appends one character to the first string in the data of every 25th event it sends."""

    def __init__(self, name: str, **options: Any) -> None:
        super().__init__(name, **options)
        self._sent = 0

    async def send(self, event: DistributedEvent) -> None:
        self._sent += 1
        data = event.data
        if self._sent % 25 == 0 and isinstance(data, dict):
            key = next((k for k, v in data.items() if isinstance(v, str)), None)
            if key is not None:
                event = msgspec.structs.replace(event, data={**data, key: data[key] + "!"})
        await super().send(event)


class SmallMemory(MemoryTransport):
    """Fails with a bare RuntimeError on events over 64 KiB, though it advertises 1 MiB."""

    async def send(self, event: DistributedEvent) -> None:
        if len(MsgpackCodec().encode(event)) > 64 * 1024:
            raise RuntimeError("message too long")
        await super().send(event)


class DeafMemory(MemoryTransport):
    """Opens and closes like the real thing, and delivers nothing."""

    async def send(self, event: DistributedEvent) -> None:
        pass


class SlowClosingMemory(MemoryTransport):
    """Takes 1.5 s to close, idle or not (as if it waited on something that never comes)."""

    async def aclose(self) -> None:
        await anyio.sleep(1.5)
        await super().aclose()


class HangingMemory(MemoryTransport):
    """Its parked receive() is not woken by aclose(): it ends only when cancelled."""

    async def receive(self) -> list[DistributedEvent]:
        try:
            return await super().receive()
        except anyio.EndOfStream:
            await anyio.sleep_forever()
            raise


LEAKED_THREAD_RELEASE = threading.Event()
"""Set by the tests to let the threads of :class:`ThreadLeakingMemory` finish."""


class ThreadLeakingMemory(MemoryTransport):
    """Starts a helper thread on open and never stops it."""

    async def open(self, context: TransportContext) -> None:
        await super().open(context)
        threading.Thread(
            target=LEAKED_THREAD_RELEASE.wait, name="toy-leaked-thread", daemon=True
        ).start()


LEAKED_SOCKETS: list[socket.socket] = []
"""Sockets :class:`SocketLeakingMemory` opened; the tests close them afterwards."""


class SocketLeakingMemory(MemoryTransport):
    """Opens a socket on open and never closes it."""

    async def open(self, context: TransportContext) -> None:
        await super().open(context)
        LEAKED_SOCKETS.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))


class SeqStrippingMemory(MemoryTransport):
    """Drops the sender's sequence numbers, so receivers cannot count loss."""

    async def send(self, event: DistributedEvent) -> None:
        await super().send(msgspec.structs.replace(event, seq=0))


class SwallowingMemory(MemoryTransport):
    """Decodes frames itself and silently skips the bad ones (nothing counted or reported)."""

    _codec: ClassVar[MsgpackCodec] = MsgpackCodec()

    async def send_raw(self, frame: bytes) -> None:
        try:
            decoded = self._codec.decode(frame)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return  # the broken promise: a bad frame vanishes without a trace
        events = decoded if isinstance(decoded, list) else [decoded]
        for event in events:
            await super().send_raw(self._codec.encode(event))


class FragileMemory(MemoryTransport):
    """Lets an empty frame end its receive loop (as pynng's ``recv()`` does on b"")."""

    async def receive(self) -> list[DistributedEvent]:
        if not await self._inbox.wait():
            raise anyio.EndOfStream
        items = self._inbox.take_all()
        if b"" in items:
            raise RuntimeError("cannot use unpack() on <cdata 'char *' NULL>")
        assert self._decoder is not None
        events: list[DistributedEvent] = []
        for item in items:
            if isinstance(item, bytes):
                self._decoder.decode_into(item, events)
            else:
                events.append(item)
        return events


class RestartableMemory(MemoryTransport):
    """A hub that can "restart" (forget its members); members rejoin when they next send."""

    async def send(self, event: DistributedEvent) -> None:
        hub = self._hub
        if hub is not None and self not in hub.members:
            hub.members = (*hub.members, self)
        await super().send(event)


class StubbornMemory(MemoryTransport):
    """Like :class:`RestartableMemory`, but once the hub restarts its members never rejoin."""


class LyingMemory(MemoryTransport):
    """Claims to cross processes, but like any memory:// bus it stays inside one."""

    capabilities: ClassVar[Capabilities] = Capabilities(raw_frames=True, crosses_processes=True)


async def restart_memory_hub(url: str) -> None:
    """The ``restart_hub`` hook for the toys: the named in-process hub forgets its members."""
    hub = _hubs.get(BusURL.parse(url).address.strip("/"))
    if hub is not None:
        hub.members = ()


_CLOSED = (
    anyio.EndOfStream,
    anyio.IncompleteRead,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
)


class TcpHubToy(Transport):
    """``tcptoy://127.0.0.1:PORT/NAME``: frames go to a hub process that forwards them to
    every other member of bus NAME, in order, without loss (TCP backpressure)."""

    capabilities: ClassVar[Capabilities] = Capabilities(raw_frames=True, crosses_processes=True)
    options: ClassVar[Mapping[str, str]] = {}

    def __init__(self, host: str, port: int, name: str) -> None:
        self.host, self.port, self.name = host, port, name
        self.codec = MsgpackCodec()
        self._stream: anyio.abc.SocketStream | None = None
        self._reader: BufferedByteReceiveStream | None = None
        self._decoder: FrameDecoder | None = None
        self._lock = anyio.Lock()

    @classmethod
    def from_url(cls, url: BusURL) -> TcpHubToy:
        hostport, _, name = url.address.partition("/")
        host, _, port = hostport.rpartition(":")
        return cls(host, int(port), name)

    async def open(self, context: TransportContext) -> None:
        self._decoder = context.decoder(self.codec, DEFAULT_MAX_FRAME_BYTES)
        self._stream = await anyio.connect_tcp(self.host, self.port)
        self._reader = BufferedByteReceiveStream(self._stream)
        await self.send_raw(self.name.encode())  # the first frame names the bus

    async def send(self, event: DistributedEvent) -> None:
        await self.send_raw(self.codec.encode(event))

    async def send_raw(self, frame: bytes) -> None:
        if self._stream is None:
            raise anyio.ClosedResourceError
        async with self._lock:
            await self._stream.send(len(frame).to_bytes(4, "big") + frame)

    async def receive(self) -> list[DistributedEvent]:
        assert self._reader is not None and self._decoder is not None
        try:
            size = int.from_bytes(await self._reader.receive_exactly(4), "big")
            frame = await self._reader.receive_exactly(size)
        except _CLOSED:
            raise anyio.EndOfStream from None
        events: list[DistributedEvent] = []
        self._decoder.decode_into(frame, events)
        return events

    async def aclose(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            async with self._lock:  # let a send under way finish: that is the flush
                await stream.aclose()

    @property
    def address(self) -> str:
        return f"tcptoy://{self.host}:{self.port}/{self.name}"


async def serve_hub() -> None:
    """The hub of :class:`TcpHubToy`: prints its port, forwards until killed."""
    buses: dict[str, set[anyio.abc.SocketStream]] = {}
    locks: dict[anyio.abc.SocketStream, anyio.Lock] = {}

    async def member(stream: anyio.abc.SocketStream) -> None:
        reader = BufferedByteReceiveStream(stream)
        locks[stream] = anyio.Lock()
        peers: set[anyio.abc.SocketStream] = set()
        try:
            size = int.from_bytes(await reader.receive_exactly(4), "big")
            peers = buses.setdefault((await reader.receive_exactly(size)).decode(), set())
            peers.add(stream)
            while True:
                header = await reader.receive_exactly(4)
                frame = header + await reader.receive_exactly(int.from_bytes(header, "big"))
                for other in list(peers):
                    lock = locks.get(other)  # None once that member has left
                    if other is stream or lock is None:
                        continue
                    try:
                        async with lock:
                            await other.send(frame)
                    except (*_CLOSED, OSError):
                        peers.discard(other)
        except (*_CLOSED, OSError):
            pass  # this member left; the others carry on
        finally:
            peers.discard(stream)
            del locks[stream]
            await stream.aclose()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    print(listener.extra(anyio.abc.SocketAttribute.local_port), flush=True)
    await listener.serve(member)


TOYS: dict[str, type[Transport]] = {
    "dupmem": DuplicatingMemory,
    "reordermem": ReorderingMemory,
    "dropmem": DroppingMemory,
    "corruptmem": CorruptingMemory,
    "hangmem": HangingMemory,
    "deafmem": DeafMemory,
    "smallmem": SmallMemory,
    "slowclosemem": SlowClosingMemory,
    "lagmem": LaggingMemory,
    "leakmem": ThreadLeakingMemory,
    "fdleakmem": SocketLeakingMemory,
    "seqlessmem": SeqStrippingMemory,
    "swallowmem": SwallowingMemory,
    "fragilemem": FragileMemory,
    "restartmem": RestartableMemory,
    "stubbornmem": StubbornMemory,
    "liarmem": LyingMemory,
    "tcptoy": TcpHubToy,
}

for _scheme, _toy in TOYS.items():
    register(_scheme, _toy)


if __name__ == "__main__" and sys.argv[1:] == ["hub"]:
    anyio.run(serve_hub)
