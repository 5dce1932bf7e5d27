"""The building blocks the checks share: named emitters, recording listeners, deadlines, fences.

Nothing here sleeps to synchronise. Waiting is always "until this condition holds", woken by
the listener that makes it hold, under a generous deadline (:func:`deadline`); when the
deadline passes the wait fails with a message that says what was still missing.
"""

from __future__ import annotations

import itertools
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, contextmanager
from contextvars import ContextVar
from types import TracebackType
from typing import Any, Literal, TypeVar

import anyio
import anyio.lowlevel

from ..connect import connect
from ..core.emitter import DistributedEventEmitter
from ..core.errors import Problem
from ..core.event import DistributedEvent
from ..core.subscription import Subscription
from ..core.topics import pattern_matches
from ..transports.base import Capabilities, current_backend
from ..transports.registry import transport_class
from ..transports.url import BusURL
from . import traffic

MakeURL = Callable[[], str]
"""Returns a fresh bus URL each call: a bus no other check uses."""

DEFAULT_DEADLINE = 20.0
"""Seconds a check waits for something that should happen; generous for slow CI machines."""

PROBE_INTERVAL = 0.1
"""Seconds between repeated probes and closing markers while waiting for them to land."""

SYNC_TOPIC = "conformance.sync"
"""Topic of the start-up handshake; recorders ignore it so ``*`` listeners stay exact."""

_deadline: ContextVar[float] = ContextVar(
    "nanomitter_conformance_deadline", default=DEFAULT_DEADLINE
)

P = TypeVar("P", bound=Problem)


class CheckSkipped(Exception):
    """The transport lacks what a check needs (a capability, a backend, a hook): not a failure.

    :func:`nanomitter.conformance.run_check` turns it into ``pytest.skip``.
    """


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Use ``seconds`` instead of :data:`DEFAULT_DEADLINE` for the checks run inside the block.

    Lower it when a check is *expected* to fail (a broken toy transport), so the test does
    not wait the full default before reporting.
    """
    if seconds <= 0:
        raise ValueError(f"deadline must be positive, got {seconds}")
    token = _deadline.set(seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def current_deadline() -> float:
    return _deadline.get()


def capabilities_of(url: str) -> Capabilities:
    """The capabilities of the transport registered for ``url``'s scheme."""
    return transport_class(BusURL.parse(url).scheme).capabilities


def fresh_url(make_url: MakeURL) -> tuple[str, Capabilities]:
    """A new URL from ``make_url``, after checking the transport runs on this backend."""
    url = make_url()
    capabilities = capabilities_of(url)
    backend = current_backend()
    if backend not in capabilities.backends:
        raise CheckSkipped(
            f"{BusURL.parse(url).scheme}:// does not run on {backend} "
            f"(capabilities.backends = {sorted(capabilities.backends)})"
        )
    return url, capabilities


class Signal:
    """Wakes waiters whenever something they count may have changed.

    Listeners and error hooks call :meth:`pulse`; waiters re-check their condition. A pulse
    with nobody waiting costs an attribute read.
    """

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    def pulse(self) -> None:
        event = self._event
        if event is not None:
            self._event = None
            event.set()

    async def wait(self, condition: Callable[[], bool], seconds: float) -> bool:
        """Wait until ``condition()`` holds or ``seconds`` pass; return whether it holds."""
        with anyio.move_on_after(seconds):
            while not condition():
                if self._event is None:
                    self._event = anyio.Event()
                await self._event.wait()
        return condition()

    async def expect(self, condition: Callable[[], bool], failure: Callable[[], str]) -> None:
        """Wait for ``condition()`` within the deadline, else fail with ``failure()``."""
        seconds = current_deadline()
        if not await self.wait(condition, seconds):
            raise AssertionError(f"{failure()} (gave up after {seconds:g} s)")


class Node:
    """One emitter of a check, with a name for messages and a list of what its hook got."""

    def __init__(
        self,
        cluster: Cluster,
        name: str,
        *,
        echo: bool = True,
        hook_raises: bool = False,
        **connect_options: Any,
    ) -> None:
        self.cluster = cluster
        self.name = name
        self.echo = echo
        self.hook_raises = hook_raises
        self.problems: list[Problem] = []
        self.close_seconds = 0.0
        """How long this node's ``aclose()`` took (once it is closed)."""
        self.bus: DistributedEventEmitter = connect(
            cluster.url, echo=echo, on_error=self._report, **connect_options
        )
        self._state: Literal["new", "open", "closed"] = "new"

    def _report(self, problem: Problem) -> None:
        self.problems.append(problem)
        self.cluster.signal.pulse()
        if self.hook_raises:
            raise RuntimeError(f"conformance: node {self.name}'s error hook is broken on purpose")

    def problems_of(self, kind: type[P]) -> list[P]:
        return [p for p in self.problems if isinstance(p, kind)]

    async def expect_problems(self, kind: type[Problem], count: int, why: str) -> None:
        """Wait until the error hook has had ``count`` problems of ``kind``."""

        def reached() -> bool:
            return len(self.problems_of(kind)) >= count

        def failure() -> str:
            got = len(self.problems_of(kind))
            return f"node {self.name}'s error hook got {got} {kind.__name__} reports; {why}"

        await self.cluster.signal.expect(reached, failure)

    async def open(self) -> None:
        await self.bus.__aenter__()
        self._state = "open"

    async def close(self) -> None:
        """Close the emitter (idempotent).

        Only the most recently opened node that is still open may be closed early: emitters
        own task groups, whose cancel scopes must be exited in reverse order.
        """
        if self._state != "open":
            return
        self._state = "closed"
        started = time.perf_counter()
        try:
            await self.bus.__aexit__(None, None, None)
        except Exception as exc:  # a task inside the emitter died (never a cancellation)
            raise AssertionError(
                f"node {self.name}'s emitter crashed: {describe_failure(exc)}; whatever "
                "arrives (a bad frame, a peer leaving), a node must keep running and report it"
            ) from exc
        finally:
            self.close_seconds = time.perf_counter() - started

    def __str__(self) -> str:
        return f"node {self.name}"


class Recorder:
    """A listener that remembers what reached it, so a check can compare it with what was sent.

    Traffic in the checks carries :func:`~.traffic.numbered` ``(name, n)`` (``n`` counts from
    1 per sender) or :func:`~.traffic.fence` ``(name)``, a closing marker that says "everything
    I sent before this has been sent"; each is compared whole with what its sender sent, and a
    difference is kept in :attr:`corrupted` (the cluster fails the check with it). Events on
    :data:`SYNC_TOPIC` are ignored.
    """

    def __init__(
        self,
        node: Node,
        pattern: str,
        *,
        kind: Literal["sync", "async", "pull"] = "sync",
        type: Any = None,
        register: bool = True,
    ) -> None:
        self.node = node
        self.pattern = pattern
        self.kind = kind
        self.events: list[DistributedEvent] = []
        self.numbers: dict[str, list[int]] = {}
        self.fences: set[str] = set()
        self.corrupted: list[str] = []
        self._signal = node.cluster.signal
        self._name_of = node.cluster.name_of
        node.cluster.recorders.append(self)
        if not register or kind == "pull":
            return  # the check feeds it (from a subscription, or a listener of its own)
        if kind == "sync":
            node.bus.on(pattern, self.note, type=type)
        else:
            node.bus.on(pattern, self.note_async, type=type)

    @property
    def label(self) -> str:
        what = {"sync": "listener", "async": "async listener", "pull": "subscription"}[self.kind]
        return f"{what} {self.pattern!r} on node {self.node.name}"

    def note(self, event: DistributedEvent) -> None:
        if event.topic == SYNC_TOPIC:
            return
        self.events.append(event)
        data = event.data
        if type(data) is dict:
            sender = self._name_of(event.sender)
            wrong = traffic.corruption(data, sender)
            if wrong is not None and len(self.corrupted) < 3:
                self.corrupted.append(
                    f"event {event.topic!r} #{data.get('n', 'fence')} from node {sender} to "
                    f"{self.label} arrived changed: {wrong}"
                )
            n = data.get("n")
            if type(n) is int:
                numbers = self.numbers.get(sender)
                if numbers is None:
                    numbers = self.numbers[sender] = []
                numbers.append(n)
            elif data.get("fence") is True:
                self.fences.add(sender)
        self._signal.pulse()

    async def note_async(self, event: DistributedEvent) -> None:
        self.note(event)

    def count_from(self, sender: str) -> int:
        return len(self.numbers.get(sender, ()))

    async def expect(self, count: int, *, sender: str | None = None, why: str = "") -> None:
        """Wait until ``count`` events (numbered ones from ``sender``, if given) arrived."""

        def got() -> int:
            return len(self.events) if sender is None else self.count_from(sender)

        def failure() -> str:
            origin = "" if sender is None else f" from node {sender}"
            return f"{self.label} got {got()} of {count} events{origin}" + (
                f"; {why}" if why else ""
            )

        await self._signal.expect(lambda: got() >= count, failure)

    def heard_from(self, sender: str) -> bool:
        return bool(self.numbers.get(sender)) or sender in self.fences


class Cluster:
    """The emitters of one check, all on the same fresh URL; ``async with`` opens them.

    Opening runs a handshake (every node hears every other node on :data:`SYNC_TOPIC`), so
    listeners registered before it are known bus-wide (a filtering transport has pushed
    their interest to its hub) before the check starts sending. Closing closes every node.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.provoked: tuple[type[Problem], ...] = ()
        self.signal = Signal()
        self.nodes: list[Node] = []
        self.recorders: list[Recorder] = []
        self._names: dict[str, str] = {}
        self._stack = AsyncExitStack()
        self._subscriptions: list[AbstractAsyncContextManager[Subscription]] = []

    def node(self, name: str, *, echo: bool = True, **options: Any) -> Node:
        """Add an emitter named ``name`` (opened with the cluster). ``options`` go to connect."""
        node = Node(self, name, echo=echo, **options)
        self.nodes.append(node)
        self._names[node.bus.id] = name
        return node

    def provokes(self, *kinds: type[Problem]) -> None:
        """Declare the problems this check causes on purpose; any other report fails it."""
        self.provoked += kinds

    def name_of(self, sender: str) -> str:
        return self._names.get(sender) or f"sender {sender!r}"

    def alias(self, sender: str, name: str) -> None:
        """Call events from sender id ``sender`` (an emitter in another process) ``name``."""
        self._names[sender] = name

    async def subscribe(self, node: Node, pattern: str, *, capacity: int) -> Subscription:
        """``node.bus.subscribe(pattern)``, entered now (before the cluster opens, so the
        handshake covers it) and left before the nodes close."""
        manager = node.bus.subscribe(pattern, capacity=capacity)
        subscription = await manager.__aenter__()
        self._subscriptions.append(manager)
        return subscription

    async def _leave_subscriptions(self) -> None:
        managers, self._subscriptions = self._subscriptions, []
        for manager in reversed(managers):
            await manager.__aexit__(None, None, None)

    def recorder(
        self,
        node: Node,
        pattern: str,
        *,
        kind: Literal["sync", "async"] = "sync",
        type: Any = None,
    ) -> Recorder:
        return Recorder(node, pattern, kind=kind, type=type)

    async def __aenter__(self) -> Cluster:
        await self._stack.__aenter__()
        try:
            for node in self.nodes:
                await node.open()
                self._stack.push_async_callback(node.close)
            await self.handshake()
        except BaseException:
            await self._leave_subscriptions()
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._leave_subscriptions()
        finally:
            await self._stack.__aexit__(exc_type, exc, tb)
        if exc is None:
            self.verify_data()
            self.verify_reports()

    def verify_reports(self) -> None:
        """Fail if an error hook got a problem the check did not provoke (a close that did not
        end, a send that failed, a bad frame when none was sent...): nothing may go wrong
        quietly in traffic that should be clean."""
        unexpected = [
            f"node {node.name}: {type(problem).__name__} ({problem.kind}): {problem}"
            for node in self.nodes
            for problem in node.problems
            if not isinstance(problem, self.provoked)
        ]
        if unexpected:
            expected = ", ".join(kind.__name__ for kind in self.provoked) or "none"
            raise AssertionError(
                f"{len(unexpected)} problem reports this check did not provoke (it provokes: "
                f"{expected}): " + "; ".join(unexpected[:5])
            )

    def verify_data(self) -> None:
        """Fail if any recorder got an event whose data differs from what was sent."""
        corrupted = [text for recorder in self.recorders for text in recorder.corrupted]
        if corrupted:
            raise AssertionError(
                "the transport changed the data of events it delivered (a listener must get "
                "exactly what was emitted): " + "; ".join(corrupted[:3])
            )

    async def handshake(self, nodes: Sequence[Node] | None = None) -> None:
        """Probe until every node has heard every other node; fail if the deadline passes."""
        members = list(nodes if nodes is not None else self.nodes)
        heard: dict[str, set[str]] = {node.name: set() for node in members}
        listeners: list[tuple[Node, Callable[[DistributedEvent], None]]] = []
        for node in members:

            def on_probe(event: DistributedEvent, into: set[str] = heard[node.name]) -> None:
                into.add(self.name_of(event.sender))
                self.signal.pulse()

            node.bus.on(SYNC_TOPIC, on_probe)
            listeners.append((node, on_probe))

        def complete() -> bool:
            return all(heard[n.name] >= {m.name for m in members if m is not n} for n in members)

        try:
            with anyio.move_on_after(current_deadline()):
                while not complete():
                    for node in members:
                        await node.bus.emit(SYNC_TOPIC, {"node": node.name})
                    await self.signal.wait(complete, PROBE_INTERVAL)
        finally:
            for node, listener in listeners:
                node.bus.off(SYNC_TOPIC, listener)
        if not complete():
            deaf = [
                f"node {n.name} never heard {', '.join(sorted(missing))}"
                for n in members
                if (missing := {m.name for m in members if m is not n} - heard[n.name])
            ]
            raise AssertionError(
                f"the emitters on {self.url} cannot hear each other: {'; '.join(deaf)} "
                f"(start-up handshake gave up after {current_deadline():g} s)"
            )

    async def fence(
        self,
        sender: Node,
        topics: Sequence[str],
        waiting: Sequence[Recorder],
        *,
        sent: int,
    ) -> None:
        """Repeat ``sender``'s closing marker on ``topics`` until every recorder in ``waiting``
        has one; fail with what each one got if the deadline passes.

        Events from one emitter arrive in order (rule 2), so a recorder holding the marker has
        everything the sender emitted before it: a missing event can be named at once.
        """

        def done() -> bool:
            return all(sender.name in r.fences for r in waiting)

        with anyio.move_on_after(current_deadline()):
            while not done():
                for topic in topics:
                    await sender.bus.emit(topic, traffic.fence(sender.name))
                await self.signal.wait(done, PROBE_INTERVAL)
        if not done():
            stuck = [
                f"{r.label} (got {r.count_from(sender.name)} of its events)"
                for r in waiting
                if sender.name not in r.fences
            ]
            raise AssertionError(
                f"node {sender.name} emitted {sent} events, then closing markers on "
                f"{', '.join(map(repr, topics))} for {current_deadline():g} s, but these never "
                f"got a marker: {'; '.join(stuck)}"
            )

    async def stream(
        self,
        sender: Node,
        count: int,
        topic_for: Callable[[int], str],
        waiting: Sequence[Recorder],
    ) -> None:
        """Emit ``count`` numbered events from ``sender``, then fence them (see :meth:`fence`)."""
        emit = sender.bus.emit
        name = sender.name
        for n in range(1, count + 1):
            await emit(topic_for(n), traffic.numbered(name, n))
        topics = sorted({topic_for(n) for n in range(1, min(count, 64) + 1)})
        await self.fence(sender, topics, waiting, sent=count)


def verify_stream(
    recorder: Recorder,
    sender: str,
    expected: Iterable[int],
    topic_for: Callable[[int], str],
    *,
    ordered: bool,
    loss_allowed_if_counted: bool = False,
) -> None:
    """Compare what ``recorder`` got from the node named ``sender`` with what it should get.

    Raises ``AssertionError`` naming the first duplicate, the first out-of-order arrival, or
    the missing events (allowed only when ``loss_allowed_if_counted`` and the receiver's
    ``stats().lost + dropped`` account for them: loss must never be silent).
    """
    recorder.node.cluster.verify_data()
    got = recorder.numbers.get(sender, [])
    want = list(expected)
    wanted = set(want)
    where = f"from node {sender} to {recorder.label}"
    seen: set[int] = set()
    for n in got:
        if n in seen:
            times = got.count(n)
            raise AssertionError(
                f"event {topic_for(n)!r} #{n} {where} was delivered {_times(times)} "
                "(every event must reach every matching listener exactly once)"
            )
        if n not in wanted:
            raise AssertionError(
                f"event {topic_for(n)!r} #{n} {where} was delivered, but that listener's "
                f"pattern {recorder.pattern!r} does not match it"
            )
        seen.add(n)
    if ordered:
        for earlier, later in itertools.pairwise(got):
            if later < earlier:
                raise AssertionError(
                    f"event {topic_for(later)!r} #{later} {where} arrived after "
                    f"{topic_for(earlier)!r} #{earlier} (events from one emitter must reach "
                    "each listener in emit order)"
                )
    missing = [n for n in want if n not in seen]
    if not missing:
        return
    stats = recorder.node.bus.stats()
    counted = stats.lost + stats.dropped
    shown = ", ".join(f"#{n}" for n in missing[:10]) + (" ..." if len(missing) > 10 else "")
    if loss_allowed_if_counted and len(missing) <= counted:
        return
    raise AssertionError(
        f"{len(missing)} of {len(want)} events {where} never arrived ({shown}), although "
        f"later events from node {sender} did; node {recorder.node.name} counted "
        f"lost={stats.lost} dropped={stats.dropped}"
        + (" (loss must never be silent)" if loss_allowed_if_counted else "")
    )


def leaves_of(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc`` (itself if it is not a group), groups flattened, in order."""
    leaves: list[BaseException] = []
    pending = [exc]
    while pending:
        current = pending.pop()
        if isinstance(current, BaseExceptionGroup):
            pending.extend(reversed(current.exceptions))
        else:
            leaves.append(current)
    return leaves


def describe_failure(exc: BaseException) -> str:
    """The innermost exception(s) of ``exc`` with where they were raised, in one line."""
    described = []
    for leaf in leaves_of(exc):
        frames = traceback.extract_tb(leaf.__traceback__)
        where = (
            f" (at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name})"
            if frames
            else ""
        )
        described.append(f"{type(leaf).__name__}: {leaf}{where}")
    return "; ".join(described)


def expected_numbers(pattern: str, count: int, topic_for: Callable[[int], str]) -> list[int]:
    """The event numbers among ``1..count`` whose topic ``pattern`` matches."""
    return [n for n in range(1, count + 1) if pattern_matches(pattern, topic_for(n))]


def _times(times: int) -> str:
    return {2: "twice", 3: "three times"}.get(times, f"{times} times")


__all__ = [
    "DEFAULT_DEADLINE",
    "PROBE_INTERVAL",
    "SYNC_TOPIC",
    "CheckSkipped",
    "Cluster",
    "MakeURL",
    "Node",
    "Recorder",
    "Signal",
    "capabilities_of",
    "current_backend",
    "current_deadline",
    "deadline",
    "expected_numbers",
    "fresh_url",
    "verify_stream",
]
