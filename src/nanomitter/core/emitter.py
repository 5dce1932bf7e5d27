"""The DistributedEventEmitter: Node's EventEmitter API, with the bus semantics.

Everything a transport does not need to know lives here: topic validation, pattern
matching, listener order, echo, sequence numbering and gap counting, error isolation,
subscriptions and ``wait_for``. The transport only moves events.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

import anyio

from .codecs import Reporter
from .context import TransportContext
from .errors import BusClosedError, FrameDecodeError, ListenerError, Problem
from .event import DistributedEvent
from .listeners import (
    AsyncListenerRunner,
    Listener,
    Registration,
    check_type,
    is_async_callable,
    typed_call,
)
from .presence import Peer, PeerEvent, PeerHook, PeerTable, heartbeat_data
from .report import LogProblems
from .requests import DEFAULT_CONCURRENCY, Reply, Requests, Responder
from .stats import Counters, Stats
from .subscription import Subscription
from .tail import TailBeacon, revealed_tail
from .topics import REQUEST_PREFIXES, PatternTrie, validate_pattern, validate_topic

if TYPE_CHECKING:
    from ..transports.base import Transport

L = TypeVar("L", bound=Listener)
R = TypeVar("R", bound=Responder)
Route = tuple[tuple[Callable[[DistributedEvent], object], Registration], ...]

DEFAULT_LISTENER_QUEUE = 1024
HEARTBEAT_TOPIC = "<3"
DEFAULT_HEARTBEAT_INTERVAL = 60.0
PRESENCE_INTEREST = frozenset({HEARTBEAT_TOPIC})
MAX_CACHED_ROUTES = 8192
MAX_TRACKED = 8192
"""Bound on remembered senders, topics per sender, and own per-topic counters."""
RECEIVE_END_TIMEOUT = 1.0
"""How long a close waits for the receive loop to end once the transport is closed."""

_NEW, _OPEN, _CLOSING, _CLOSED = "new", "open", "closing", "closed"


def new_sender_id() -> str:
    """A 21-character URL-safe id, the shape of the original nanomitter's nanoid."""
    return secrets.token_urlsafe(16)[:21]


class DistributedEventEmitter:
    """An EventEmitter whose events reach every matching listener on every connected node.

    Use it as an async context manager (``async with nanomitter.connect(url) as bus``);
    listeners may be registered before or after it opens.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        service: str = "",
        echo: bool = True,
        on_error: Reporter | None = None,
        listener_queue_size: int = DEFAULT_LISTENER_QUEUE,
        close_timeout: float = 5.0,
        sender_id: str | None = None,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
    ) -> None:
        if isinstance(listener_queue_size, bool) or not isinstance(listener_queue_size, int):
            raise TypeError(f"listener_queue_size must be an int >= 1, got {listener_queue_size!r}")
        if listener_queue_size < 1:
            raise ValueError(f"listener_queue_size must be >= 1, got {listener_queue_size}")
        self.id = sender_id or new_sender_id()
        self.service = service
        self.echo = echo
        self.transport = transport
        self.listener_queue_size = listener_queue_size
        self.close_timeout = close_timeout
        self.heartbeat_interval = heartbeat_interval
        self._report_hook: Reporter = on_error if on_error is not None else LogProblems()
        self._fallback_report = LogProblems()
        self._subscriptions: set[Subscription] = set()
        self._counters = Counters()
        self._state = _NEW
        self._trie: PatternTrie[Registration] = PatternTrie()
        self._registrations: list[Registration] = []
        self._pattern_refs: dict[str, int] = {}
        self._routes: dict[str, Route] = {}
        self._order = 0
        self._own_seqs: dict[str, int] = {}
        self._seen: dict[str, dict[str, int]] = {}
        self._beacon = TailBeacon(self._own_seqs, MAX_TRACKED)
        self._task_group: anyio.abc.TaskGroup | None = None
        self._receive_ended: anyio.Event | None = None
        self._send_nowait = transport.send_nowait
        self._presence = PeerTable(self._report, self._count_listener_error)
        self._requests = Requests(
            self.id,
            service=service,
            presence=self._presence,
            counters=self._counters,
            report=self._report,
            send=transport.send_nowait,
            interest_changed=self._interest_changed,
            heartbeat_interval=heartbeat_interval,
        )
        self._wake_heartbeat: anyio.Event | None = None
        self._announced: tuple[str, ...] = ()

    # ------------------------------------------------------------------ listeners

    @overload
    def on(self, pattern: str, listener: L, *, type: Any = None) -> L: ...
    @overload
    def on(self, pattern: str, listener: None = None, *, type: Any = None) -> Callable[[L], L]: ...

    def on(
        self, pattern: str, listener: L | None = None, *, type: Any = None
    ) -> L | Callable[[L], L]:
        """Call ``listener(event)`` for every event matching ``pattern``; returns ``listener``.

        Without ``listener`` it returns a decorator. ``type=`` (a msgspec Struct or any type
        msgspec can convert to) validates and converts ``event.data`` for this listener.
        """
        if listener is None:
            return lambda fn: self._add(pattern, fn, once=False, type=type)
        return self._add(pattern, listener, once=False, type=type)

    def once(self, pattern: str, listener: L, *, type: Any = None) -> L:
        """Like :meth:`on`, but the listener is removed before its first call."""
        return self._add(pattern, listener, once=True, type=type)

    def off(self, pattern: str, listener: Listener) -> bool:
        """Remove the most recent registration of ``listener`` on ``pattern``.

        Returns whether one was found. As in Node, a dispatch already under way still
        calls it.
        """
        for registration in reversed(self._registrations):
            if registration.pattern == pattern and registration.fn == listener:
                self._remove(registration)
                return True
        return False

    def remove_all_listeners(self, pattern: str | None = None) -> int:
        """Remove every listener, or every listener on ``pattern``; returns how many."""
        doomed = [r for r in self._registrations if pattern is None or r.pattern == pattern]
        for registration in doomed:
            self._remove(registration)
        return len(doomed)

    def listener_count(self, pattern: str | None = None) -> int:
        return sum(1 for r in self._registrations if pattern is None or r.pattern == pattern)

    def patterns(self) -> frozenset[str]:
        """The patterns that currently have listeners."""
        return frozenset(self._pattern_refs)

    def _add(self, pattern: str, fn: L, *, once: bool, type: Any) -> L:
        if not callable(fn):
            raise TypeError(f"listener must be callable, got {fn!r}")
        if self._state in (_CLOSING, _CLOSED):
            raise BusClosedError("cannot add a listener: the emitter is closed")
        validate_pattern(pattern)
        check_type(type)
        self._order += 1
        registration = Registration(pattern, fn, self._order, once=once, type=type)
        call: Callable[[DistributedEvent], object] = fn
        if is_async_callable(fn):
            runner = AsyncListenerRunner(
                registration, self.listener_queue_size, self._counters, self._report
            )
            registration.runner = runner
            call = runner.push
            if self._task_group is not None:
                runner.start(self._task_group)
        if once:
            call = self._once_call(registration, call)
        if type is not None:  # outermost: invalid data must not use up a once listener
            call = typed_call(call, registration, self._counters, self._report)
        registration.call = call
        self._registrations.append(registration)
        self._trie.add(pattern, registration)
        self._routes.clear()
        refs = self._pattern_refs.get(pattern, 0)
        self._pattern_refs[pattern] = refs + 1
        if refs == 0:
            self.transport.set_interest(self._interest())
        return fn

    def _once_call(
        self, registration: Registration, call: Callable[[DistributedEvent], object]
    ) -> Callable[[DistributedEvent], object]:
        if registration.runner is not None:
            # async: queue the event first; removing closes the queue after it (it drains)
            def call_once_async(event: DistributedEvent) -> object:
                if not registration.active:
                    return None
                call(event)
                self._remove(registration)
                return None

            return call_once_async

        def call_once(event: DistributedEvent) -> object:
            # sync: remove first, like Node, so an emit inside the listener doesn't re-fire it
            if not registration.active:
                return None
            self._remove(registration)
            return call(event)

        return call_once

    def _remove(self, registration: Registration) -> None:
        if not registration.active:
            return
        registration.active = False
        self._registrations.remove(registration)
        self._trie.remove(registration.pattern, registration)
        self._routes.clear()
        if registration.runner is not None:
            registration.runner.stop()
        refs = self._pattern_refs[registration.pattern] - 1
        if refs:
            self._pattern_refs[registration.pattern] = refs
        else:
            del self._pattern_refs[registration.pattern]
            self.transport.set_interest(self._interest())
            if self.transport.capabilities.filters_by_interest:
                self._forget_unheard()

    def _hears(self, topic: str) -> bool:
        """Whether events on ``topic`` reach this emitter (filtering transports send only
        what a listener matches; the others send everything)."""
        if not self.transport.capabilities.filters_by_interest:
            return True
        route = self._routes.get(topic)
        if route is None:
            try:
                route = self._route(topic)
            except (ValueError, TypeError):
                return False
        return bool(route)

    def _forget_unheard(self) -> None:
        """Forget the numbers of topics no longer listened to: events sent meanwhile never
        come here, and are no loss when a listener comes back (nor in a heartbeat's tail)."""
        for topics in self._seen.values():
            for topic in [t for t in topics if t[:1] != "<" and not self._hears(t)]:
                del topics[topic]

    # ------------------------------------------------------------------ emitting

    async def emit(self, topic: str | Mapping[str, Any], data: Any = None) -> None:
        """Send ``data`` on ``topic`` to every matching listener on the bus.

        Also accepts the seed's form ``emit({"topic": ..., "data": ...})``. Raises
        ``ValueError`` for an invalid topic (wildcards are for patterns) and
        ``TypeError`` for data the codec cannot encode, before anything is sent.
        """
        if type(topic) is not str:
            topic, data = _seed_form(topic, data)
        if self._state is not _OPEN:
            raise BusClosedError(self._closed_reason("emit"))
        route = self._routes.get(topic)
        if route is None:
            route = self._route(topic)
        own = self._own_seqs
        seq = own.get(topic, 0) + 1
        event = DistributedEvent(topic=topic, data=data, sender=self.id, seq=seq)
        pending = self._send_nowait(event)  # None when the transport took it at once
        if pending is not None:
            await pending
        if seq == 1 and len(own) >= MAX_TRACKED:
            del own[next(iter(own))]  # evict the oldest topic; it restarts at 1, a reset
        own[topic] = seq
        self._counters.emitted += 1
        if self.echo and route:
            self._deliver(event, route)

    async def _send(self, topic: str, data: Any) -> DistributedEvent:
        """Number the event and hand it to the transport; the number is used only if sent.

        (``emit`` inlines the same steps: it is the hot path.)
        """
        own = self._own_seqs
        seq = own.get(topic, 0) + 1
        event = DistributedEvent(topic=topic, data=data, sender=self.id, seq=seq)
        await self.transport.send(event)
        if seq == 1 and len(own) >= MAX_TRACKED:
            del own[next(iter(own))]  # evict the oldest topic; it restarts at 1, a reset
        own[topic] = seq
        return event

    async def _heartbeats(self) -> None:
        """The original nanomitter's presence signal: ``<3`` with ``{service}``, for others
        (ours add ``interval``, ``host``, ``pid`` and what our responders serve; see
        :mod:`.presence`). A new or removed responder is announced at once."""
        while self._state is _OPEN:
            responds = self._requests.patterns()
            if self.service or responds or self._announced:
                seqs = self._beacon.untold()
                data = heartbeat_data(
                    self.service, self.heartbeat_interval, responds=responds, seqs=seqs
                )
                try:
                    await self._send(HEARTBEAT_TOPIC, data)
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    return
                self._announced = responds
                self._beacon.told(seqs)
            wake = self._wake_heartbeat = anyio.Event()
            with anyio.move_on_after(self.heartbeat_interval):
                await wake.wait()

    async def _expire_peers(self) -> None:
        """Declare peers gone when they miss their heartbeats (a killed process says no bye)."""
        while self._state is _OPEN:
            next_expiry = self._presence.expire()
            wait = 1.0 if next_expiry is None else next_expiry - time.time()
            await anyio.sleep(min(1.0, max(0.01, wait)))

    async def _say_goodbye(self) -> None:
        """A last ``<3`` with ``bye``, so peers see us leave now, not after the timeout, and
        learn the last number of every topic (:mod:`.tail`): an emitter without a service
        name sends it too when it emitted since its last heartbeat."""
        if self.heartbeat_interval <= 0:
            return
        seqs = self._beacon.untold()
        if not (self.service or self._announced or seqs):
            return
        with anyio.move_on_after(1.0):
            with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                while True:  # more topics than one heartbeat carries: several byes
                    interval = self.heartbeat_interval
                    data = heartbeat_data(self.service, interval, bye=True, seqs=seqs)
                    await self._send(HEARTBEAT_TOPIC, data)
                    self._beacon.told(seqs)
                    seqs = self._beacon.untold()
                    if not seqs:
                        return

    # ------------------------------------------------------------------ presence

    def peers(self) -> list[Peer]:
        """The live members that announce themselves (a service name or a responder).

        Built from the ``<3`` heartbeats; a peer is gone after its bye or after three of its
        heartbeat intervals of silence. This emitter is not in the list.
        """
        return self._presence.peers()

    @overload
    def on_peer(self, kind: PeerEvent, hook: PeerHook) -> PeerHook: ...
    @overload
    def on_peer(self, kind: PeerEvent, hook: None = None) -> Callable[[PeerHook], PeerHook]: ...

    def on_peer(
        self, kind: PeerEvent, hook: PeerHook | None = None
    ) -> PeerHook | Callable[[PeerHook], PeerHook]:
        """Call ``hook(peer)`` when a peer joins (``"joined"``) or leaves (``"left"``).

        Without ``hook`` it returns a decorator. A hook that raises is reported like a
        listener error.
        """
        if hook is None:

            def decorate(fn: PeerHook) -> PeerHook:
                self._presence.add_hook(kind, fn)
                return fn

            return decorate
        self._presence.add_hook(kind, hook)
        return hook

    def off_peer(self, kind: PeerEvent, hook: PeerHook) -> bool:
        """Remove a hook added with :meth:`on_peer`; returns whether it was there."""
        return self._presence.remove_hook(kind, hook)

    def _interest(self) -> frozenset[str]:
        """What this emitter must receive: its listeners' patterns, heartbeats (presence
        needs them even without a ``<3`` listener; filtering transports would drop them), and
        the request/reply topics of its responders and of its own requests."""
        return frozenset(self._pattern_refs) | PRESENCE_INTEREST | self._requests.interest()

    def _interest_changed(self) -> None:
        self.transport.set_interest(self._interest())
        if self._wake_heartbeat is not None and self._requests.patterns() != self._announced:
            self._wake_heartbeat.set()

    # ------------------------------------------------------------------ request/reply

    async def request(
        self,
        topic: str,
        data: Any = None,
        *,
        timeout: float = 1.0,  # noqa: ASYNC109 (a per-request deadline, named in the errors)
        type: Any = None,
    ) -> Any:
        """Ask one responder of ``topic`` and return what it replies.

        A responder on this emitter answers first; otherwise one live responder elsewhere
        (see docs/concepts.md, "Request/reply", for how it is chosen). Raises
        :class:`~nanomitter.NoResponders` when nobody serves the topic,
        :class:`~nanomitter.RequestTimeout` (a ``TimeoutError``) when no reply comes within
        ``timeout`` seconds, and :class:`~nanomitter.RemoteError` when the responder raised.
        ``type=`` converts the reply (msgspec).
        """
        if self._state is not _OPEN:
            raise BusClosedError(self._closed_reason("send a request"))
        return await self._requests.request(topic, data, timeout, type)

    async def survey(
        self,
        topic: str,
        data: Any = None,
        *,
        timeout: float = 0.5,  # noqa: ASYNC109 (how long to collect replies)
        expect: int | None = None,
    ) -> list[Reply]:
        """Ask every responder of ``topic``; return the replies that arrive within ``timeout``.

        With ``expect=N`` it returns as soon as N replies are in. Each
        :class:`~nanomitter.Reply` has ``data``, ``sender``, ``service``, and ``error`` (a
        :class:`~nanomitter.RemoteError`) when that responder raised.
        """
        if self._state is not _OPEN:
            raise BusClosedError(self._closed_reason("send a survey"))
        return await self._requests.survey(topic, data, timeout, expect)

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
        """Answer requests and surveys on ``topic`` (a topic or pattern) with ``fn(event)``.

        ``fn`` is sync or async and returns the reply data; an exception it raises goes
        back to the requester as :class:`~nanomitter.RemoteError` (and is reported here),
        and it keeps serving. ``type=`` converts ``event.data`` like a typed listener. An
        async responder works on up to ``concurrency`` requests at once; beyond that it
        answers ``ResponderBusy`` at once. Without ``fn`` it returns a decorator.
        """
        if self._state in (_CLOSING, _CLOSED):
            raise BusClosedError("cannot add a responder: the emitter is closed")
        if fn is None:

            def decorate(function: R) -> R:
                self._requests.add(topic, function, type=type, concurrency=concurrency)
                return function

            return decorate
        self._requests.add(topic, fn, type=type, concurrency=concurrency)
        return fn

    def off_responder(self, topic: str) -> bool:
        """Stop answering on ``topic``; returns whether there was a responder."""
        return self._requests.remove(topic)

    def responders(self) -> tuple[str, ...]:
        """The topics and patterns this emitter answers, in registration order."""
        return self._requests.patterns()

    def _count_listener_error(self) -> None:
        self._counters.listener_errors += 1

    # ------------------------------------------------------------------ pull style

    @asynccontextmanager
    async def subscribe(
        self, pattern: str, *, type: Any = None, capacity: int = DEFAULT_LISTENER_QUEUE
    ) -> AsyncIterator[Subscription]:
        """``async with bus.subscribe("stock.>") as events: async for event in events``.

        Events are queued (bounded; overflow drops the newest, counted in ``dropped``) from
        the moment the block is entered until it is left.
        """
        subscription = Subscription(pattern, capacity, self._counters, self._report)
        self._add(pattern, subscription.push, once=False, type=type)
        self._subscriptions.add(subscription)
        try:
            if self._state is _OPEN:
                await self.transport.sync_interest()  # live end to end before the block runs
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
            self.off(pattern, subscription.push)
            subscription.close()

    async def listening(self) -> None:
        """Return once every listener registered so far receives what any node emits.

        ``on()`` is synchronous; on transports that filter at a hub (ZeroMQ) a new pattern
        takes a round trip to be in force there. ``bus.on(...); await bus.listening()``
        closes that gap. Elsewhere it returns at once.
        """
        if self._state is not _OPEN:
            raise BusClosedError(self._closed_reason("wait for listeners"))
        await self.transport.sync_interest()

    async def wait_for(
        self,
        pattern: str,
        timeout: float | None = None,  # noqa: ASYNC109 (the DESIGN's API, like asyncio.wait_for)
        *,
        type: Any = None,
    ) -> DistributedEvent:
        """Return the next event matching ``pattern``; ``TimeoutError`` after ``timeout`` s."""
        caught: list[DistributedEvent] = []
        arrived = anyio.Event()

        def catch(event: DistributedEvent) -> None:
            caught.append(event)
            arrived.set()

        self._add(pattern, catch, once=True, type=type)
        try:
            with anyio.move_on_after(timeout):
                await arrived.wait()
        finally:
            self.off(pattern, catch)
        if not caught:
            raise TimeoutError(f"no event matching {pattern!r} arrived within {timeout} s")
        return caught[0]

    # ------------------------------------------------------------------ receiving

    def _route(self, topic: str) -> Route:
        """Listeners for ``topic`` in registration order (raises for an invalid topic)."""
        validate_topic(topic)
        matched = sorted(self._trie.match(topic), key=_by_order)
        route: Route = tuple((r.call, r) for r in matched)
        if len(self._routes) >= MAX_CACHED_ROUTES:
            self._routes.clear()
        self._routes[topic] = route
        return route

    def _deliver(self, event: DistributedEvent, route: Route) -> None:
        self._counters.delivered += len(route)
        for call, registration in route:
            try:
                call(event)
            except Exception as exc:
                self._counters.listener_errors += 1
                self._report(ListenerError(event.topic, registration.fn, exc))

    def _accept(self, events: list[DistributedEvent]) -> None:
        """Dispatch a batch from the transport: drop own echoes, count gaps, deliver."""
        me = self.id
        seen = self._seen
        routes = self._routes
        counters = self._counters
        for event in events:
            sender = event.sender
            if sender == me:
                counters.own_echoes += 1
                continue
            counters.received += 1
            topic = event.topic
            if topic[:1] == "<":  # the reserved corner: heartbeats and request/reply traffic
                if topic == HEARTBEAT_TOPIC:
                    self._presence.heartbeat(sender, event.data)
                    counters.lost += revealed_tail(seen.get(sender), event.data, self._hears)
                elif topic.startswith(REQUEST_PREFIXES):
                    self._requests.accept(event)
                    continue
            seq = event.seq
            if seq:
                topics = seen.get(sender)
                if topics is None:
                    if len(seen) >= MAX_TRACKED:
                        del seen[next(iter(seen))]
                    topics = seen[sender] = {}
                last = topics.get(topic)
                if last is None:
                    if len(topics) >= MAX_TRACKED:
                        del topics[next(iter(topics))]
                    topics[topic] = seq
                elif seq == last + 1 or seq == 1:
                    topics[topic] = seq
                elif seq > last:
                    counters.lost += seq - last - 1
                    topics[topic] = seq
                else:
                    counters.reordered += 1
            route = routes.get(topic)
            if route is None:
                try:
                    route = self._route(topic)
                except (ValueError, TypeError) as exc:
                    counters.received -= 1
                    counters.decode_errors += 1
                    self._report(FrameDecodeError(f"bad topic from {sender!r}: {exc}"))
                    continue
            if route:
                self._deliver(event, route)

    async def _receive_loop(self, ended: anyio.Event) -> None:
        receive = self.transport.receive
        accept = self._accept
        try:
            while True:
                accept(await receive())
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            return
        finally:
            ended.set()

    async def _await_receive_loop(self) -> None:
        """Wait until the receive loop has dispatched its last batch (the transport is closed).

        Async listeners stop taking events after this; a batch the transport handed over just
        before its close must reach them first, not be half-delivered (sync listeners only).
        Closed transports end ``receive()`` at once; the bound only guards a stuck one.
        """
        ended = self._receive_ended
        if ended is None:
            return
        with anyio.move_on_after(RECEIVE_END_TIMEOUT):
            await ended.wait()
        if not ended.is_set():
            name = type(self.transport).__name__
            self._report(
                Problem(
                    f"{name}.receive() had not ended {RECEIVE_END_TIMEOUT:g} s after its "
                    "aclose(); the close went on without it. A transport must wake a parked "
                    "receive() when it closes (see Transport.receive)"
                )
            )

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> DistributedEventEmitter:
        if self._state is not _NEW:
            raise BusClosedError("an emitter can be opened once; call connect() again")
        context = TransportContext(self.id, self.service, self._counters, self._report)
        await self.transport.open(context)  # before the task group: errors stay ungrouped
        try:
            self.transport.set_interest(self._interest())
            task_group = anyio.create_task_group()
            await task_group.__aenter__()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.transport.aclose()
            raise
        self._task_group = task_group
        self._state = _OPEN
        self._requests.start(
            task_group,
            balanced=self.transport.capabilities.balances_requests,
            sync_interest=self.transport.sync_interest,
        )
        self._receive_ended = anyio.Event()
        task_group.start_soon(self._receive_loop, self._receive_ended)
        if self.heartbeat_interval > 0:
            task_group.start_soon(self._heartbeats)
        task_group.start_soon(self._expire_peers)
        for registration in self._registrations:
            if registration.runner is not None:
                registration.runner.start(task_group)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        task_group = self._task_group
        try:
            await self.aclose()
        finally:
            if task_group is not None:
                task_group.cancel_scope.cancel()
                # exit clean: the block's own exception propagates as itself, not grouped
                await task_group.__aexit__(None, None, None)
        return None

    async def aclose(self) -> None:
        """Flush what was emitted (bounded linger), drain async listeners, release all.

        Async listeners get up to ``close_timeout`` seconds to finish what was queued before
        the close; what remains after that is counted in ``dropped``.
        """
        if self._state in (_CLOSING, _CLOSED, _NEW):
            self._state = _CLOSED if self._state is _NEW else self._state
            return
        self._state = _CLOSING
        self._requests.close()
        try:
            with anyio.CancelScope(shield=True):
                await self._say_goodbye()
                await self.transport.aclose()
                await self._await_receive_loop()
                for subscription in self._subscriptions:
                    subscription.close()  # `async for` ends once the queue is drained
                runners = [r.runner for r in self._registrations if r.runner is not None]
                for runner in runners:
                    runner.stop()
                with anyio.move_on_after(self.close_timeout):
                    for runner in runners:
                        if runner.done is not None:
                            await runner.done.wait()
                for runner in runners:
                    abandoned = runner.inbox.clear()
                    self._counters.dropped += abandoned
                    self._counters.delivered -= abandoned
                    if runner.scope is not None:
                        runner.scope.cancel()
        finally:
            self._state = _CLOSED

    @property
    def closed(self) -> bool:
        return self._state in (_CLOSING, _CLOSED)

    # ------------------------------------------------------------------ reporting

    def stats(self) -> Stats:
        """A snapshot of the counters (emitted, delivered, dropped, lost, errors ...)."""
        return self._counters.snapshot()

    def set_error_hook(self, hook: Reporter) -> None:
        """Call ``hook(problem)`` for every listener error, bad frame, invalid or dropped event."""
        self._report_hook = hook

    def _report(self, problem: Problem) -> None:
        try:
            self._report_hook(problem)
        except Exception:  # a broken hook must not break the receive loop
            self._fallback_report(problem)

    def _closed_reason(self, action: str) -> str:
        if self._state is _NEW:
            return f"cannot {action}: the emitter is not open yet; use 'async with connect(...)'"
        return f"cannot {action}: the emitter is closed"

    def __repr__(self) -> str:
        service = f" service={self.service!r}" if self.service else ""
        return (
            f"<DistributedEventEmitter {self.id}{service} {self._state} "
            f"via {type(self.transport).__name__} {self.transport.address}>"
        )


def _by_order(registration: Registration) -> int:
    return registration.order


def _seed_form(event: Any, data: Any) -> tuple[str, Any]:
    if isinstance(event, Mapping) and "topic" in event:
        if data is not None:
            raise TypeError("emit({'topic': ..., 'data': ...}) takes no second argument")
        return event["topic"], event.get("data")
    if isinstance(event, DistributedEvent):
        return event.topic, event.data
    raise TypeError(
        "emit() takes a topic string and data, or a mapping {'topic': ..., 'data': ...}; "
        f"got {type(event).__name__}"
    )


__all__ = ["DistributedEventEmitter", "new_sender_id"]
