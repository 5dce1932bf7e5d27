"""The transport contract: the few things the core needs from a backend.

A transport moves :class:`DistributedEvent` objects between emitters. It encodes on
``send`` (raising encoding errors at once, so ``emit`` reports them at the call site) and
returns every event that is ready on ``receive``, decoding frames through the context's
:class:`FrameDecoder`, which counts bad frames instead of raising. Everything else (listener
matching, ordering, echo, sequence gaps, error isolation) lives in the core, once.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import anyio
from anyio.lowlevel import current_token

from ..core.context import TransportContext
from ..core.event import DistributedEvent
from .url import BusURL

__all__ = ["BusURL", "Capabilities", "Transport", "TransportContext", "current_backend"]


MAX_BATCH = 256
"""The most events one ``receive()`` returns. Smaller than the default async-listener queue
(1024), so one batch cannot overflow a listener that keeps up, and other tasks (async
listeners among them) run between batches."""


def current_backend() -> str:
    """``"asyncio"`` or ``"trio"``: the anyio backend running the caller (for transports
    whose client library runs on one backend only)."""
    module = current_token().backend_class.__module__  # anyio._backends._trio
    return module.rsplit("._", 1)[-1]


def wake_fd_waiters(*fds: int) -> None:
    """Wake tasks waiting on ``fds`` (``-1``: none) before their socket closes them: the
    waiters get ``ClosedResourceError`` now, instead of waiting on a closed descriptor."""
    for fd in fds:
        if fd >= 0:
            with contextlib.suppress(Exception):  # no running loop: nobody is waiting
                anyio.notify_closing(fd)


@dataclass(frozen=True)
class Capabilities:
    """What a transport can do; the core and the conformance suite read these."""

    echoes_to_sender: bool = False
    """The hub may send an emitter's own frames back (the core drops them by sender id)."""
    filters_by_interest: bool = False
    """``set_interest`` narrows what arrives (ZeroMQ prefixes, NATS subjects)."""
    raw_frames: bool = False
    """``send_raw`` can inject arbitrary bytes (used to test garbage handling)."""
    crosses_processes: bool = True
    """Emitters in other processes can join the same URL."""
    balances_requests: bool = False
    """Each ``<?.`` request reaches one live responder, picked by the server (NATS queue
    groups); the requester does not pick one itself (see :mod:`nanomitter.core.requests`)."""
    backends: frozenset[str] = field(default_factory=lambda: frozenset({"asyncio", "trio"}))
    """The anyio backends the transport runs on."""


class Transport(ABC):
    """Base class of every transport. Subclasses register under one or more URL schemes."""

    schemes: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[Mapping[str, str]] = {}
    """Known URL query options, name -> one-line help (unknown ones are rejected)."""
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "send" in cls.__dict__ and "send_nowait" not in cls.__dict__:
            # a subclass that overrides only send() (a wrapper, a test double) must not be
            # bypassed by an inherited fast path: route send_nowait through its send()
            cls.send_nowait = Transport.send_nowait  # type: ignore[method-assign]

    @classmethod
    @abstractmethod
    def from_url(cls, url: BusURL) -> Transport:
        """Build an unopened transport; options were already checked against ``options``."""

    @abstractmethod
    async def open(self, context: TransportContext) -> None:
        """Join the bus (bind, connect, subscribe). Returns once events can flow."""

    @abstractmethod
    async def send(self, event: DistributedEvent) -> None:
        """Send one event to every other member; encoding errors raise before any await."""

    def send_nowait(self, event: DistributedEvent) -> Awaitable[None] | None:
        """Send without a coroutine when possible: return None if the event was taken, or an
        awaitable that finishes the send (a full buffer). ``emit`` uses this; the default
        always returns ``send(event)``. Encoding errors raise here, before any await.
        """
        return self.send(event)

    @abstractmethod
    async def receive(self) -> list[DistributedEvent]:
        """Wait for at least one event and return every event that is ready.

        Raises ``anyio.EndOfStream`` (or ``anyio.ClosedResourceError``) once the transport
        is closed, promptly: ``aclose`` wakes a ``receive`` parked in a wait. The emitter
        waits for its receive loop to end before its async listeners stop taking events.
        """

    @abstractmethod
    async def aclose(self) -> None:
        """Flush what was sent (bounded linger) and release every socket, thread and task."""

    async def send_raw(self, frame: bytes) -> None:
        """Put raw bytes on the bus as if a foreign peer sent them (for tests)."""
        raise NotImplementedError(f"{type(self).__name__} cannot inject raw frames")

    def set_interest(self, patterns: frozenset[str]) -> None:  # noqa: B027
        """The patterns listeners currently use; filtering transports narrow what arrives."""

    async def sync_interest(self) -> None:  # noqa: B027
        """Return once the interest last given to ``set_interest`` is in force end to end.

        A no-op where nothing is filtered remotely; ZeroMQ waits for a probe to come back
        through the proxy.
        """

    @property
    def max_event_bytes(self) -> int | None:
        """The largest event this transport carries, in encoded bytes; None: no limit it knows.

        ``send`` raises :class:`~nanomitter.core.errors.EventTooLargeError` (naming the limit)
        above it, before anything is sent; every event up to it arrives intact (the
        conformance check ``payload_sizes`` holds a transport to both). A per-instance value,
        not a capability: it follows URL options and, on NATS, the server's ``max_payload``.
        """
        return None

    def statistics(self) -> Mapping[str, int]:
        """Transport-level figures (buffer sizes, peers); shown next to the emitter's stats."""
        return {}

    @property
    def address(self) -> str:
        """Where this transport is attached, credentials redacted."""
        return ""
