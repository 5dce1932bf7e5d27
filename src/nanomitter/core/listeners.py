"""Listener registrations and the machinery that calls them.

Sync listeners are called inline by the dispatcher. Each async listener gets a
:class:`AsyncListenerRunner`: a bounded inbox and its own task, so a slow coroutine stalls
neither the receive loop nor other listeners. When its inbox is full the newest event is
dropped, counted in ``dropped`` and reported (drop-newest keeps what was already accepted in
order, and never blocks the receive loop).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec
import msgspec.inspect

from .codecs import Reporter
from .errors import InvalidEventError, ListenerError, OverflowProblem
from .event import DistributedEvent
from .inbox import BoundedInbox
from .stats import Counters

SyncListener = Callable[[DistributedEvent], object]
AsyncListener = Callable[[DistributedEvent], Awaitable[object]]
Listener = SyncListener | AsyncListener
Call = Callable[[DistributedEvent], object]


def is_async_callable(fn: object) -> bool:
    """True for ``async def`` functions, methods, partials of them and async ``__call__``."""
    while hasattr(fn, "func"):  # functools.partial
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004
    )


class Registration:
    """One ``on``/``once`` call: the pattern, the user's function and how to call it."""

    __slots__ = ("active", "call", "fn", "once", "order", "pattern", "runner", "type")

    def __init__(
        self, pattern: str, fn: Listener, order: int, *, once: bool, type: Any = None
    ) -> None:
        self.pattern = pattern
        self.fn = fn
        self.order = order
        self.once = once
        self.type = type
        self.active = True
        self.runner: AsyncListenerRunner | None = None
        self.call: Call = fn

    def __repr__(self) -> str:
        name = getattr(self.fn, "__qualname__", repr(self.fn))
        return f"<Registration {self.pattern!r} -> {name}{' once' if self.once else ''}>"


def check_type(target: Any) -> None:
    """Raise ``TypeError`` at registration for a ``type=`` msgspec cannot convert to (else
    every event would fail later, in the receive loop)."""
    if target is None:
        return
    try:
        msgspec.inspect.type_info(target)
    except TypeError as exc:
        raise TypeError(
            f"type={target!r} is not a type msgspec can convert data to ({exc}); use a "
            "msgspec Struct, a dataclass, a TypedDict or a builtin type such as dict or float"
        ) from None


def typed_call(
    call: Call, registration: Registration, counters: Counters, report: Reporter
) -> Call:
    """Wrap ``call`` so ``event.data`` is converted to ``registration.type`` first.

    Invalid data skips this listener only; it is counted in ``invalid`` and reported with
    msgspec's error path (e.g. ``Expected `float`, got `str` - at `$.price```).
    """
    target = registration.type
    convert = msgspec.convert
    replace = msgspec.structs.replace

    def call_typed(event: DistributedEvent) -> object:
        data = event.data
        if type(data) is not target:
            try:
                data = convert(data, target)
            except msgspec.ValidationError as exc:
                counters.invalid += 1
                counters.delivered -= 1
                report(InvalidEventError(event.topic, registration.fn, target, str(exc)))
                return None
            event = replace(event, data=data)
        return call(event)

    return call_typed


def refused(
    inbox: BoundedInbox[DistributedEvent],
    where: str,
    counters: Counters,
    report: Reporter,
    *,
    removed: bool,
) -> None:
    """Account for an event a bounded queue did not take: not delivered; dropped unless its
    consumer was removed (it wants no more); reported if the queue was full, not closed."""
    counters.delivered -= 1
    if removed:
        return
    counters.dropped += 1
    if not inbox.closed:
        report(OverflowProblem(where, inbox.capacity))


class AsyncListenerRunner:
    """Feeds one async listener from its own bounded inbox, in its own task."""

    __slots__ = ("_counters", "_report", "done", "fn", "inbox", "registration", "scope")

    def __init__(
        self,
        registration: Registration,
        capacity: int,
        counters: Counters,
        report: Reporter,
    ) -> None:
        self.registration = registration
        self.fn: AsyncListener = registration.fn  # type: ignore[assignment]
        self.inbox: BoundedInbox[DistributedEvent] = BoundedInbox(capacity)
        self._counters = counters
        self._report = report
        self.scope: anyio.CancelScope | None = None
        self.done: anyio.Event | None = None

    def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Schedule the runner's task; ``done`` exists from now on, so close can wait for it."""
        self.done = anyio.Event()
        task_group.start_soon(self.run)

    def push(self, event: DistributedEvent) -> None:
        if not self.inbox.push_nowait(event):
            name = getattr(self.fn, "__qualname__", repr(self.fn))
            removed = not self.registration.active  # off() mid-dispatch, not a close
            refused(
                self.inbox, f"async listener {name}", self._counters, self._report, removed=removed
            )

    async def run(self) -> None:
        """Call the listener for each queued event until the inbox is closed and drained."""
        if self.done is None:
            self.done = anyio.Event()
        try:
            with anyio.CancelScope() as self.scope:
                inbox = self.inbox
                fn = self.fn
                while await inbox.wait():
                    while inbox:  # drain what is queued before parking again
                        event = inbox.take()
                        try:
                            await fn(event)
                        except Exception as exc:
                            self._counters.listener_errors += 1
                            self._report(ListenerError(event.topic, fn, exc))
        finally:
            self.done.set()

    def stop(self) -> None:
        """No new events; what is queued is still delivered."""
        self.inbox.close()
