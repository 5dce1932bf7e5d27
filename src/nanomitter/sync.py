"""The emitter for code that is not async: an event loop in a background thread.

``nanomitter.sync.connect(url)`` returns an emitter that is already connected. Its methods
are plain blocking calls; listeners run on the background thread, so a listener that touches
state shared with your threads needs a lock. Every sync emitter of a process shares one
background loop (started with the first, stopped with the last), so sync emitters on the same
``memory://`` name reach each other.

    bus = nanomitter.sync.connect("memory://demo")
    bus.on("stockprice", print)
    bus.emit("stockprice", {"ticker": "AAPL", "price": 251.3})
    bus.close()
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from types import TracebackType
from typing import Any, TypeVar, overload

from anyio.from_thread import BlockingPortal, start_blocking_portal

from .connect import connect as async_connect
from .core.codecs import Reporter
from .core.emitter import (
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_LISTENER_QUEUE,
    DistributedEventEmitter,
)
from .core.errors import BusClosedError
from .core.event import DistributedEvent
from .core.listeners import Listener
from .core.requests import DEFAULT_CONCURRENCY, Reply, Responder
from .core.stats import Stats
from .core.subscription import Subscription

L = TypeVar("L", bound=Listener)
R = TypeVar("R", bound=Responder)


class _SharedLoop:
    """One background event loop per backend for all sync emitters; reference counted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._portals: dict[str, tuple[ExitStack, BlockingPortal, int]] = {}

    def acquire(self, backend: str) -> BlockingPortal:
        with self._lock:
            entry = self._portals.get(backend)
            if entry is None:
                stack = ExitStack()
                portal = stack.enter_context(start_blocking_portal(backend=backend))
                entry = (stack, portal, 0)
            stack, portal, users = entry
            self._portals[backend] = (stack, portal, users + 1)
            return portal

    def release(self, backend: str) -> None:
        with self._lock:
            stack, portal, users = self._portals[backend]
            if users > 1:
                self._portals[backend] = (stack, portal, users - 1)
                return
            del self._portals[backend]
        stack.close()


_shared_loop = _SharedLoop()


class SyncDistributedEventEmitter:
    """A connected emitter driven from ordinary threads. Close it with ``close()`` or ``with``."""

    def __init__(self, emitter: DistributedEventEmitter, backend: str = "asyncio") -> None:
        self._stack = ExitStack()
        self._portal: BlockingPortal = _shared_loop.acquire(backend)
        self._stack.callback(_shared_loop.release, backend)
        try:
            self._emitter = self._stack.enter_context(
                self._portal.wrap_async_context_manager(emitter)
            )
        except BaseException:
            self._stack.close()
            raise
        self._closed = False

    @property
    def id(self) -> str:
        return self._emitter.id

    @property
    def emitter(self) -> DistributedEventEmitter:
        """The async emitter underneath (runs on the background thread)."""
        return self._emitter

    def on(self, pattern: str, listener: L, *, type: Any = None) -> L:
        """Call ``listener(event)`` (on the background thread) for every matching event."""
        self._check_open()
        return self._portal.call(lambda: self._emitter.on(pattern, listener, type=type))

    def once(self, pattern: str, listener: L, *, type: Any = None) -> L:
        self._check_open()
        return self._portal.call(lambda: self._emitter.once(pattern, listener, type=type))

    def off(self, pattern: str, listener: Listener) -> bool:
        self._check_open()
        return self._portal.call(self._emitter.off, pattern, listener)

    def remove_all_listeners(self, pattern: str | None = None) -> int:
        self._check_open()
        return self._portal.call(self._emitter.remove_all_listeners, pattern)

    def emit(self, topic: str | Mapping[str, Any], data: Any = None) -> None:
        """Emit and return once the transport has taken the event (errors raise here)."""
        self._check_open()
        self._portal.call(self._emitter.emit, topic, data)

    def listening(self) -> None:
        """Block until every listener registered so far receives what any node emits
        (filtering transports, ZeroMQ and NATS, take a round trip after ``on``)."""
        self._check_open()
        self._portal.call(self._emitter.listening)

    def wait_for(
        self, pattern: str, timeout: float | None = None, *, type: Any = None
    ) -> DistributedEvent:
        """Block until an event matches ``pattern``; ``TimeoutError`` after ``timeout`` s."""
        self._check_open()
        return self._portal.call(lambda: self._emitter.wait_for(pattern, timeout, type=type))

    def request(
        self, topic: str, data: Any = None, *, timeout: float = 1.0, type: Any = None
    ) -> Any:
        """Block for one responder's reply (see ``DistributedEventEmitter.request``)."""
        self._check_open()
        return self._portal.call(
            lambda: self._emitter.request(topic, data, timeout=timeout, type=type)
        )

    def survey(
        self, topic: str, data: Any = None, *, timeout: float = 0.5, expect: int | None = None
    ) -> list[Reply]:
        """Block for every responder's reply within ``timeout`` (or the first ``expect``)."""
        self._check_open()
        return self._portal.call(
            lambda: self._emitter.survey(topic, data, timeout=timeout, expect=expect)
        )

    @overload
    def responder(
        self, topic: str, fn: R, *, type: Any = None, concurrency: int = DEFAULT_CONCURRENCY
    ) -> R: ...
    @overload
    def responder(
        self,
        topic: str,
        fn: None = None,
        *,
        type: Any = None,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> Callable[[R], R]: ...

    def responder(
        self,
        topic: str,
        fn: R | None = None,
        *,
        type: Any = None,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> R | Callable[[R], R]:
        """Answer requests on ``topic`` with ``fn(event)`` (called on the background thread)."""
        self._check_open()

        def add(function: R) -> R:
            return self._portal.call(
                lambda: self._emitter.responder(topic, function, type=type, concurrency=concurrency)
            )

        return add if fn is None else add(fn)

    def off_responder(self, topic: str) -> bool:
        self._check_open()
        return self._portal.call(self._emitter.off_responder, topic)

    @contextmanager
    def subscribe(self, pattern: str, *, type: Any = None) -> Iterator[Iterator[DistributedEvent]]:
        """``with bus.subscribe("stock.>") as events: for event in events: ...``."""
        self._check_open()
        manager = self._emitter.subscribe(pattern, type=type, capacity=DEFAULT_LISTENER_QUEUE)
        with self._portal.wrap_async_context_manager(manager) as subscription:
            yield self._iterate(subscription)

    def _iterate(self, subscription: Subscription) -> Iterator[DistributedEvent]:
        while True:
            try:
                yield self._portal.call(subscription.receive)
            except StopAsyncIteration:
                return

    def stats(self) -> Stats:
        return self._emitter.stats()

    def set_error_hook(self, hook: Reporter) -> None:
        self._portal.call(self._emitter.set_error_hook, hook)

    def call(self, function: Callable[[], Any]) -> Any:
        """Run ``function()`` on the background thread (where listeners run)."""
        return self._portal.call(function)

    def close(self) -> None:
        """Flush, close the emitter and stop the background thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stack.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> SyncDistributedEventEmitter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Sync {self._emitter!r}>"

    def _check_open(self) -> None:
        if self._closed:
            raise BusClosedError("this sync emitter is closed; call nanomitter.sync.connect again")


def connect(
    url: str | None = None,
    *,
    service: str = "",
    echo: bool = True,
    on_error: Reporter | None = None,
    listener_queue_size: int = DEFAULT_LISTENER_QUEUE,
    close_timeout: float = 5.0,
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
    backend: str = "asyncio",
    **options: object,
) -> SyncDistributedEventEmitter:
    """A connected emitter for threaded code; same arguments as :func:`nanomitter.connect`."""
    emitter = async_connect(
        url,
        service=service,
        echo=echo,
        on_error=on_error,
        listener_queue_size=listener_queue_size,
        close_timeout=close_timeout,
        heartbeat_interval=heartbeat_interval,
        **options,
    )
    return SyncDistributedEventEmitter(emitter, backend=backend)


__all__ = ["SyncDistributedEventEmitter", "connect"]
