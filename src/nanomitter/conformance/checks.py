"""One async function per promise in DESIGN.md's "Semantics every transport must keep".

Each check takes ``make_url`` (a callable returning a fresh bus URL), calls it once, opens at
least three emitters on that URL with ``nanomitter.connect``, and raises ``AssertionError``
saying which promise broke and how, or :class:`CheckSkipped` when the transport lacks what
the check needs.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import msgspec

from ..core.codecs import DEFAULT_MAX_FRAME_BYTES, Codec, MsgpackCodec
from ..core.errors import (
    FrameDecodeError,
    InvalidEventError,
    ListenerError,
    NoResponders,
    OverflowProblem,
    RemoteError,
    RequestTimeout,
)
from ..core.event import DistributedEvent
from ..core.report import logger as nanomitter_logger
from ..core.requests import Reply
from ..core.subscription import Subscription
from ..core.topics import REQUEST_PREFIXES, pattern_matches
from .harness import (
    PROBE_INTERVAL,
    CheckSkipped,
    Cluster,
    MakeURL,
    Node,
    Recorder,
    current_backend,
    current_deadline,
    expected_numbers,
    fresh_url,
    verify_stream,
)
from .quiet import held_logs

RestartHub = Callable[[str], Awaitable[None]]
"""``await restart_hub(url)`` kills and restarts the hub, proxy or server behind ``url``."""


class Quote(msgspec.Struct):
    """The payload type of :func:`check_typed_validation`."""

    ticker: str
    price: float


class Boom(Exception):
    """Raised by the listeners of :func:`check_listener_errors_isolated`."""


# ---------------------------------------------------------------------------- rule 1


async def check_exactly_once(make_url: MakeURL, *, count: int = 50) -> None:
    """Rule 1: every event reaches every matching listener on every node exactly once.

    Four emitters (A, B with ``echo=True``; C, D with ``echo=False``) each emit ``count``
    events while listening with exact, ``*``-token, ``>``-tail and bare ``*`` patterns, sync
    and async. Own events must reach own listeners only with ``echo=True``; nothing may
    arrive twice (a hub echoing back, two patterns matching, a transport resending), and the
    sender's sequence number must survive the trip.
    """
    url, _ = fresh_url(make_url)
    cluster = Cluster(url)
    nodes = [
        cluster.node("A"),
        cluster.node("B"),
        cluster.node("C", echo=False),
        cluster.node("D", echo=False),
    ]
    topic = "once.t"
    recorders = {
        node.name: [
            *(cluster.recorder(node, p) for p in (topic, "once.*", "once.>", "*")),
            cluster.recorder(node, topic, kind="async"),
        ]
        for node in nodes
    }

    def topic_for(n: int) -> str:
        return topic

    async with cluster, anyio.create_task_group() as tg:
        for sender in nodes:
            waiting = [
                r for node in nodes if node is not sender or node.echo for r in recorders[node.name]
            ]
            tg.start_soon(cluster.stream, sender, count, topic_for, waiting)

    for node in nodes:
        for recorder in recorders[node.name]:
            for sender in nodes:
                if sender is node and not node.echo:
                    if recorder.heard_from(node.name):
                        raise AssertionError(
                            f"node {node.name} has echo=False, yet its own events reached its "
                            f"{recorder.label} (own events reach own listeners only with "
                            "echo=True)"
                        )
                    continue
                verify_stream(recorder, sender.name, range(1, count + 1), topic_for, ordered=False)
            for event in recorder.events:
                data = event.data
                if type(data) is dict and type(data.get("n")) is int and event.seq != data["n"]:
                    raise AssertionError(
                        f"event {event.topic!r} #{data['n']} from node "
                        f"{cluster.name_of(event.sender)} reached {recorder.label} with "
                        f"seq={event.seq}; the transport must carry the sender's sequence "
                        "number unchanged (receivers count lost events with it)"
                    )

    await _check_inline_echo(make_url)


async def _check_inline_echo(make_url: MakeURL) -> None:
    """With echo=True an emitter's own sync listeners have run when ``emit`` returns."""
    url, _ = fresh_url(make_url)
    cluster = Cluster(url)
    a, b, c = cluster.node("A"), cluster.node("B"), cluster.node("C", echo=False)
    own = {node.name: cluster.recorder(node, "inline.t") for node in (a, b, c)}
    async with cluster:
        for node in (a, b, c):
            await node.bus.emit("inline.t", {"node": node.name, "n": 1})
            heard = own[node.name].count_from(node.name)
            if node.echo and heard != 1:
                raise AssertionError(
                    f"node {node.name} (echo=True) emitted 'inline.t' and its own listener had "
                    f"been called {heard} times when emit() returned; it must be called once, "
                    "during emit, like Node's EventEmitter"
                )
            if not node.echo and heard:
                raise AssertionError(
                    f"node {node.name} (echo=False) emitted 'inline.t' and its own listener "
                    "was called"
                )


# ---------------------------------------------------------------------------- rule 2


async def check_order_under_load(make_url: MakeURL, *, count: int = 10_000) -> None:
    """Rule 2: events from one emitter reach each listener in emit order, even flat out.

    A and B each emit ``count`` events as fast as they can, alternating two topics, while C
    (``echo=False``) and both senders listen with sync, async and pull-style listeners.
    Every listener must see each sender's events in increasing order. Brokerless transports
    may lose some under load, but only if the receiver counts them (``lost``/``dropped``).
    """
    url, _ = fresh_url(make_url)
    cluster = Cluster(url)
    queue = 2 * count + 100
    a = cluster.node("A", listener_queue_size=queue)
    b = cluster.node("B", listener_queue_size=queue)
    c = cluster.node("C", echo=False, listener_queue_size=queue)
    nodes = [a, b, c]
    recorders = {
        node.name: [
            cluster.recorder(node, "*"),
            cluster.recorder(node, "load.*"),
            cluster.recorder(node, "load.x"),
            cluster.recorder(node, "load.>", kind="async"),
        ]
        for node in nodes
    }
    pulled = Recorder(c, "load.>", kind="pull")
    recorders[c.name].append(pulled)
    subscription = await cluster.subscribe(c, "load.>", capacity=queue)

    def topic_for(n: int) -> str:
        return "load.x" if n % 2 else "load.y"

    async with cluster, anyio.create_task_group() as tg:
        tg.start_soon(_pull, subscription, pulled)
        async with anyio.create_task_group() as senders:
            for sender in (a, b):
                waiting = [
                    r
                    for node in nodes
                    if node is not sender or node.echo
                    for r in recorders[node.name]
                ]
                senders.start_soon(cluster.stream, sender, count, topic_for, waiting)
        tg.cancel_scope.cancel()

    for node in nodes:
        for recorder in recorders[node.name]:
            for sender in (a, b):
                if sender is node and not node.echo:
                    continue
                verify_stream(
                    recorder,
                    sender.name,
                    expected_numbers(recorder.pattern, count, topic_for),
                    topic_for,
                    ordered=True,
                    loss_allowed_if_counted=True,
                )


async def _pull(subscription: Subscription, recorder: Recorder) -> None:
    async for event in subscription:
        recorder.note(event)


# ---------------------------------------------------------------------------- rule 3


async def check_registration_order(make_url: MakeURL) -> None:
    """Rule 3: listeners on one node fire in registration order, exact and wildcard alike.

    B registers bare ``*``, ``reg.*``, ``reg.>`` and exact listeners interleaved (plus a
    ``once`` and one listener moved to the end by ``off`` + ``on``); C registers the same in
    reverse. Events from A, B and C (remote and echoed) must call them in that order, and
    only those whose pattern matches the topic.
    """
    url, _ = fresh_url(make_url)
    cluster = Cluster(url)
    a, b, c = cluster.node("A"), cluster.node("B"), cluster.node("C")
    plan: list[tuple[str, str, bool]] = [
        ("*", "any-1", False),
        ("reg.*", "one-1", False),
        ("reg.x", "exact-1", False),
        ("reg.>", "tail-1", False),
        ("reg.>", "once", True),
        ("reg.x", "exact-2", False),
        ("*", "any-2", False),
        ("reg.*", "one-2", False),
        ("reg.>", "tail-2", False),
    ]
    logs: dict[str, list[tuple[tuple[str, str, int], str]]] = {"B": [], "C": []}
    orders: dict[str, list[tuple[str, str, bool]]] = {}

    def make_listener(node: Node, label: str) -> Callable[[DistributedEvent], None]:
        def listener(event: DistributedEvent) -> None:
            if event.topic.startswith("reg"):
                key = (cluster.name_of(event.sender), event.topic, event.seq)
                logs[node.name].append((key, label))
                cluster.signal.pulse()

        listener.__qualname__ = f"{label}@{node.name}"
        return listener

    for node, entries in ((b, plan), (c, plan[::-1])):
        moved = make_listener(node, "moved")
        node.bus.on("reg.*", moved)
        for pattern, label, once in entries:
            listener = make_listener(node, label)
            if once:
                node.bus.once(pattern, listener)
            else:
                node.bus.on(pattern, listener)
        if not node.bus.off("reg.*", moved):
            raise AssertionError(f"off('reg.*', listener) on node {node.name} returned False")
        node.bus.on("reg.*", moved)
        orders[node.name] = [*entries, ("reg.*", "moved", False)]

    topics = ["reg.x", "reg.x.y", "reg.z", "reg"]

    def calls_for(order: list[tuple[str, str, bool]], topic: str) -> int:
        return sum(1 for pattern, _, once in order if not once and pattern_matches(pattern, topic))

    expected_total = {
        name: 3 * sum(calls_for(order, t) for t in topics)
        + (1 if any(once for *_, once in order) else 0)
        for name, order in orders.items()
    }

    async with cluster:
        for sender in (a, b, c):
            for topic in topics:
                await sender.bus.emit(topic, {"node": sender.name})
        for name, total in expected_total.items():
            log = logs[name]
            await _expect_calls(cluster, name, log, total)

    for name, order in orders.items():
        per_event: dict[tuple[str, str, int], list[str]] = {}
        for key, label in logs[name]:
            per_event.setdefault(key, []).append(label)
        once_pending = True
        for (origin, topic, seq), labels in per_event.items():
            want = [
                label
                for pattern, label, once in order
                if pattern_matches(pattern, topic) and (not once or once_pending)
            ]
            if "once" in want:
                once_pending = False
            if labels != want:
                raise AssertionError(
                    f"event {topic!r} #{seq} from node {origin} called node {name}'s listeners "
                    f"in the order {labels}; registration order is {want} (listeners fire in "
                    "registration order, exact and wildcard alike, each once)"
                )
        if len(per_event) != 3 * len(topics):
            raise AssertionError(
                f"node {name} dispatched {len(per_event)} distinct events, expected "
                f"{3 * len(topics)} (3 senders x {len(topics)} topics)"
            )


# ---------------------------------------------------------------------------- rule 4


async def check_listener_errors_isolated(make_url: MakeURL, *, count: int = 5) -> None:
    """Rule 4: a listener that raises stops neither the others nor the bus, and is reported.

    On four nodes a sync and an async listener raise for every event, between listeners
    that must still get everything. Each raise must be counted in
    ``stats().listener_errors`` and reach the error hook as a ``ListenerError`` carrying the
    exception; ``emit`` must not raise it; D's error hook itself raises and must not break
    anything either. Afterwards the bus must still carry events.
    """
    url, _ = fresh_url(make_url)
    cluster = Cluster(url)
    nodes = [cluster.node(name) for name in "ABC"]
    d = cluster.node("D", hook_raises=True)
    nodes.append(d)
    topic = "err.t"
    good: dict[str, list[Recorder]] = {}
    raised: dict[str, list[Boom]] = {}
    for node in nodes:
        boom_list = raised[node.name] = []
        first = cluster.recorder(node, topic)

        def boom(event: DistributedEvent, into: list[Boom] = boom_list) -> None:
            exc = Boom(f"conformance: listener fails on purpose for {event.topic!r}")
            into.append(exc)
            raise exc

        async def boom_async(event: DistributedEvent, into: list[Boom] = boom_list) -> None:
            exc = Boom(f"conformance: async listener fails on purpose for {event.topic!r}")
            into.append(exc)
            raise exc

        node.bus.on(topic, boom)
        second = cluster.recorder(node, "err.*")
        node.bus.on(topic, boom_async)
        third = cluster.recorder(node, topic, kind="async")
        good[node.name] = [first, second, third]

    senders = nodes[:2]
    total = count * len(senders)
    with held_logs() as held:  # D's fallback logs every problem: expected, not shown
        async with cluster:
            for sender in senders:
                for n in range(1, count + 1):
                    try:
                        await sender.bus.emit(topic, {"node": sender.name, "n": n})
                    except Boom as exc:
                        raise AssertionError(
                            f"node {sender.name}'s emit() raised its own listener's exception "
                            f"({exc}); a listener that raises must not break emit"
                        ) from exc
            for node in nodes:
                for recorder in good[node.name]:
                    why = "listeners that raise must not stop the others"
                    await recorder.expect(total, why=why)
                await node.expect_problems(
                    ListenerError,
                    2 * total,
                    f"{2 * total} listener calls raised and each must reach the hook",
                )
            for node in nodes:
                errors = node.bus.stats().listener_errors
                if errors != 2 * total:
                    raise AssertionError(
                        f"node {node.name}: stats().listener_errors = {errors} after "
                        f"{2 * total} listener calls raised"
                    )
                for problem in node.problems_of(ListenerError):
                    if not any(problem.exception is exc for exc in raised[node.name]):
                        raise AssertionError(
                            f"node {node.name}'s hook got {problem!r}, which does not carry the "
                            "exception the listener raised"
                        )
                    if problem.topic != topic:
                        raise AssertionError(f"ListenerError names topic {problem.topic!r}")

            after = {node.name: cluster.recorder(node, "after.t") for node in nodes}
            await cluster.handshake()
            await nodes[2].bus.emit("after.t", {"node": nodes[2].name, "n": 1})
            for node in nodes:
                recorder = after[node.name]
                await recorder.expect(1, why="after listener errors the bus must keep running")
        logged = held.claim(lambda record: _carries_one_of(record, raised[d.name]))
    if not logged and nanomitter_logger.isEnabledFor(logging.ERROR):
        raise AssertionError(
            f"node {d.name}'s error hook raised, and none of its {2 * total} ListenerErrors "
            "was logged instead (a broken hook must not make problems vanish)"
        )


def _carries_one_of(record: logging.LogRecord, exceptions: list[Boom]) -> bool:
    """Whether ``record`` was logged with one of ``exceptions`` (by identity)."""
    raised = record.exc_info[1] if record.exc_info else None
    return any(raised is exc for exc in exceptions)


# ---------------------------------------------------------------------------- typed data


async def check_typed_validation(make_url: MakeURL) -> None:
    """Typed listeners (``on(pattern, fn, type=Struct)``): invalid data skips that listener.

    A emits invalid and valid quotes, an invalid one first. On A (echo), B and C the typed
    listeners (sync and async) must get only the valid ones, converted to the Struct, and a
    typed ``once`` listener the first valid one (invalid data must not use it up); untyped
    listeners must get all; each skip must be counted in ``stats().invalid`` and reported
    with msgspec's path.
    """
    url, _ = fresh_url(make_url)
    cluster = Cluster(url)
    nodes = [cluster.node("A"), cluster.node("B"), cluster.node("C", echo=False)]
    topic = "typed.t"
    typed: dict[str, list[Recorder]] = {}
    plain: dict[str, Recorder] = {}
    first: dict[str, Recorder] = {}
    for node in nodes:
        typed[node.name] = [
            cluster.recorder(node, topic, type=Quote),
            cluster.recorder(node, topic, kind="async", type=Quote),
        ]
        plain[node.name] = cluster.recorder(node, topic)
        first[node.name] = Recorder(node, topic, register=False)
        node.bus.once(topic, first[node.name].note, type=Quote)
    payloads: list[Any] = [
        {"ticker": "AAPL", "price": "very high"},
        {"ticker": "AAPL", "price": 251.5},
        {"price": 1.0},
        Quote("MSFT", 410.25),
        {"ticker": "NVDA", "price": 120.0},
    ]
    valid = [Quote("AAPL", 251.5), Quote("MSFT", 410.25), Quote("NVDA", 120.0)]
    invalid = len(payloads) - len(valid)
    skips = 2 * invalid + 1  # the once listener skips the first event, then is gone
    receivers = nodes  # A has echo=True, C is not a sender
    async with cluster:
        for payload in payloads:
            await nodes[0].bus.emit(topic, payload)
        for node in receivers:
            for recorder in [plain[node.name], *typed[node.name]]:
                want = len(payloads) if recorder is plain[node.name] else len(valid)
                await recorder.expect(want)
            await first[node.name].expect(1, why="invalid data must not use up a once listener")
            await node.expect_problems(
                InvalidEventError,
                skips,
                f"expected {skips} ({invalid} invalid events x 2 typed listeners, and the "
                "first event for the typed once listener)",
            )

    for node in receivers:
        for recorder in typed[node.name]:
            got = [event.data for event in recorder.events]
            if got != valid:
                raise AssertionError(
                    f"{recorder.label} (type=Quote) got {got!r}; expected exactly the valid "
                    f"quotes converted to Quote: {valid!r}"
                )
        once_got = [event.data for event in first[node.name].events]
        if once_got != valid[:1]:
            raise AssertionError(
                f"a typed once listener on node {node.name} got {once_got!r}; expected only "
                f"the first valid quote {valid[0]!r}"
            )
        stats = node.bus.stats()
        if stats.invalid != skips:
            raise AssertionError(
                f"node {node.name}: stats().invalid = {stats.invalid}, expected {skips}"
            )
        details = " | ".join(p.detail for p in node.problems_of(InvalidEventError))
        if "$.price" not in details or "ticker" not in details:
            raise AssertionError(
                f"node {node.name}: invalid-data reports should carry msgspec's path "
                f"(`$.price`, missing `ticker`); got: {details}"
            )


# ---------------------------------------------------------------------------- rule 5


async def check_garbage_frames(make_url: MakeURL) -> None:
    """Rule 5: undecodable frames are dropped, counted in ``decode_errors``, reported, survived.

    Needs ``capabilities.raw_frames``. A injects garbage, truncated, oversized and wrongly
    typed frames, and frames with invalid topics, between valid frames. B and C must count
    each bad one exactly once, report it as ``FrameDecodeError``, and keep delivering.
    """
    url, capabilities = fresh_url(make_url)
    if not capabilities.raw_frames:
        raise CheckSkipped("the transport cannot inject raw frames (capabilities.raw_frames)")
    cluster = Cluster(url)
    a, b, c = cluster.node("A"), cluster.node("B"), cluster.node("C")
    receivers = [b, c]
    recorders = {node.name: cluster.recorder(node, "*") for node in receivers}
    async with cluster:
        codec = _codec_of(a)
        ghost = "conformance-ghost-sender"

        def frame(topic: str, data: Any) -> bytes:
            return codec.encode(DistributedEvent(topic=topic, data=data, sender=ghost))

        valid = frame("garbage.ok", {"n": 1})
        msgpack = msgspec.msgpack.encode
        bad: list[tuple[str, bytes]] = [
            ("empty frame", b""),
            ("reserved msgpack byte", b"\xc1"),
            ("random bytes", b"\x93garbage\x00\xff\xfe not a frame"),
            ("truncated frame", valid[: len(valid) // 2]),
            ("topic of the wrong type", msgpack({"topic": 42, "data": 1})),
            ("seq of the wrong type", msgpack({"topic": "garbage.t", "seq": "seven"})),
            ("map without a topic", msgpack({"data": {"n": 1}})),
            ("array of integers", msgpack([1, 2, 3])),
            ("wildcard topic", frame("garbage.*", None)),
            ("empty-token topic", frame("garbage..t", None)),
        ]
        oversized = frame("garbage.big", b"x" * (DEFAULT_MAX_FRAME_BYTES + 1024))
        transport = a.bus.transport
        await transport.send_raw(valid)
        for _, raw in bad:
            await transport.send_raw(raw)
        expected_bad = len(bad)
        try:
            await transport.send_raw(oversized)
            expected_bad += 1
        except Exception:  # a transport may refuse to send it: then there is nothing to count
            pass
        await transport.send_raw(frame("garbage.ok", {"n": 2}))
        for n in range(1, 4):
            await a.bus.emit("garbage.after", {"node": "A", "n": n})
        for node in receivers:
            recorder = recorders[node.name]
            why = "valid traffic must continue after garbage frames"
            await recorder.expect(3, sender="A", why=why)
            await recorder.expect(5, why=f"2 valid raw frames and 3 emitted events; {why}")
            await node.expect_problems(
                FrameDecodeError,
                expected_bad,
                f"{expected_bad} bad frames were sent ({', '.join(w for w, _ in bad)}, "
                "oversized); each must be reported",
            )
            errors = node.bus.stats().decode_errors
            if errors != expected_bad:
                raise AssertionError(
                    f"node {node.name}: stats().decode_errors = {errors} after {expected_bad} "
                    "bad frames (each must be counted exactly once)"
                )
            topics = [event.topic for event in recorder.events]
            if topics.count("garbage.ok") != 2 or any(
                t.startswith("garbage.")
                and t
                not in (
                    "garbage.ok",
                    "garbage.after",
                )
                for t in topics
            ):
                raise AssertionError(
                    f"node {node.name} delivered {topics}; only the valid frames "
                    "('garbage.ok' twice) and the emitted events may reach listeners"
                )


def _codec_of(node: Node) -> Codec:
    """The codec the node's transport speaks, if it says; msgpack (the default) otherwise."""
    codec = getattr(node.bus.transport, "codec", None)
    return codec if isinstance(codec, Codec) else MsgpackCodec()


# ---------------------------------------------------------------------------- rule 6


async def check_loss_is_counted(make_url: MakeURL) -> None:
    """Rule 6: sequence gaps are counted in ``stats().lost``; loss is never silent.

    Needs ``capabilities.raw_frames``. A injects numbered events from a foreign sender with
    gaps (1, 2, 5, 6, 10: seven missing events); B and C must deliver the five and count
    ``lost == 5``. Events of a real emitter carry the numbers (see check_exactly_once).
    """
    url, capabilities = fresh_url(make_url)
    if not capabilities.raw_frames:
        raise CheckSkipped("the transport cannot inject raw frames (capabilities.raw_frames)")
    cluster = Cluster(url)
    a, b, c = cluster.node("A"), cluster.node("B"), cluster.node("C")
    receivers = [b, c]
    recorders = {node.name: cluster.recorder(node, "gap.>") for node in receivers}
    seqs = [1, 2, 5, 6, 10]
    gaps = (5 - 2 - 1) + (10 - 6 - 1)
    async with cluster:
        codec = _codec_of(a)
        for seq in seqs:
            event = DistributedEvent(
                topic="gap.t", data={"seq": seq}, sender="conformance-gappy-sender", seq=seq
            )
            await a.bus.transport.send_raw(codec.encode(event))
        for node in receivers:
            recorder = recorders[node.name]
            await recorder.expect(len(seqs))
            lost = node.bus.stats().lost
            if lost != gaps:
                raise AssertionError(
                    f"node {node.name} received a sender's events numbered {seqs} and counted "
                    f"lost={lost}; the {gaps} missing numbers (3-4, 7-9) must be counted"
                )


async def check_bounded_queues(make_url: MakeURL, *, count: int = 30) -> None:
    """Rule 6: queues are bounded and overflow is counted in ``dropped``, never silent.

    A emits ``count`` events. On B a stalled async listener has a 4-event queue; on C a
    subscription of capacity 3 is never read. Each overflow must be counted in ``dropped``
    and reported as ``OverflowProblem``, without stalling the sync listeners on the same
    nodes, and the stalled listener must get what its queue held once it resumes.
    """
    url, _ = fresh_url(make_url)
    cluster = Cluster(url)
    a = cluster.node("A")
    queue_size, capacity = 4, 3
    b = cluster.node("B", listener_queue_size=queue_size)
    c = cluster.node("C")
    topic = "bound.t"
    release = anyio.Event()
    stalled: list[DistributedEvent] = []

    async def stalled_listener(event: DistributedEvent) -> None:
        stalled.append(event)
        cluster.signal.pulse()
        await release.wait()

    b.bus.on(topic, stalled_listener)
    await cluster.subscribe(c, topic, capacity=capacity)  # never read
    # registered after the stalled listener and the subscription, so dispatched after them
    counters = {node.name: cluster.recorder(node, topic) for node in (b, c)}
    async with cluster:
        try:
            for n in range(1, count + 1):
                await a.bus.emit(topic, {"node": "A", "n": n})
            for node in (b, c):
                recorder = counters[node.name]
                await recorder.expect(
                    count,
                    sender="A",
                    why="another listener on its node was stalled, and a slow listener must "
                    "stall nothing else",
                )
            c_dropped = c.bus.stats().dropped
            if c_dropped != count - capacity:
                raise AssertionError(
                    f"node C: a subscription of capacity {capacity} that is never read got "
                    f"{count} events; stats().dropped = {c_dropped}, expected "
                    f"{count - capacity}"
                )
            b_dropped = b.bus.stats().dropped
            low, high = count - queue_size - 1, count - queue_size
            if not low <= b_dropped <= high:
                raise AssertionError(
                    f"node B: an async listener stalled on its first event with a "
                    f"{queue_size}-event queue got {count} events; stats().dropped = "
                    f"{b_dropped}, expected {low}..{high}"
                )
            for node, dropped in ((b, b_dropped), (c, c_dropped)):
                reports = len(node.problems_of(OverflowProblem))
                if reports != dropped:
                    raise AssertionError(
                        f"node {node.name} dropped {dropped} events but its error hook got "
                        f"{reports} OverflowProblem reports (every drop must be reported)"
                    )
            release.set()
            accepted = count - b_dropped
            await cluster.signal.expect(
                lambda: len(stalled) >= accepted,
                lambda: (
                    f"the stalled async listener on node B resumed and got {len(stalled)} "
                    f"events; its queue had accepted {accepted}"
                ),
            )
            numbers = [event.data["n"] for event in stalled]
            if numbers != sorted(numbers) or numbers[0] != 1:
                raise AssertionError(
                    f"the stalled async listener on node B got events {numbers}; the queue "
                    "must keep what it accepted, in order, dropping the newest when full"
                )
            if a.bus.stats().dropped:
                raise AssertionError("node A dropped events, but none of its queues was full")
        finally:
            release.set()


# ---------------------------------------------------------------------------- rule 7


async def check_close_flushes(make_url: MakeURL, *, count: int = 200) -> None:
    """Rule 7: ``aclose()`` flushes what was emitted before it.

    A emits ``count`` events and closes at once: B and C must still get every one, and A's
    own async listener must have handled all of them when ``aclose()`` returns. Then B
    closes while its async listener still has a backlog: the backlog must be handled before
    ``aclose()`` returns.
    """
    url, _ = fresh_url(make_url)
    cluster = Cluster(url)
    c = cluster.node("C")
    b = cluster.node("B")
    a = cluster.node("A")  # opened last, so it can be closed first
    topic = "close.t"
    a_async = cluster.recorder(a, topic, kind="async")
    sync = {node.name: cluster.recorder(node, topic) for node in (b, c)}
    c_async = cluster.recorder(c, topic, kind="async")
    gate = anyio.Event()
    b_async = Recorder(b, topic, kind="async", register=False)

    async def gated(event: DistributedEvent) -> None:
        await gate.wait()
        await anyio.lowlevel.checkpoint()
        b_async.note(event)

    b.bus.on(topic, gated)

    async with cluster:
        try:
            for n in range(1, count + 1):
                await a.bus.emit(topic, {"node": "A", "n": n})
            await a.close()
            if a_async.count_from("A") != count:
                raise AssertionError(
                    f"node A's async listener had handled {a_async.count_from('A')} of the {count} "
                    "events A emitted when aclose() returned; aclose must let async listeners "
                    "finish what was queued before it"
                )
            for recorder in [*sync.values(), c_async]:
                await recorder.expect(
                    count,
                    sender="A",
                    why="node A emitted them right before aclose(), which must flush them",
                )
            gate.set()  # no checkpoint between this and the close: B's backlog is still queued
            await b.close()
            if b_async.count_from("A") != count:
                raise AssertionError(
                    f"node B closed with its async listener's queue full; when aclose() returned "
                    f"the listener had handled {b_async.count_from('A')} of {count} events"
                )
        finally:
            gate.set()  # never leave B's listener parked (its close would wait it out)

    for recorder in (a_async, *sync.values(), c_async, b_async):
        verify_stream(recorder, a.name, range(1, count + 1), lambda n: topic, ordered=True)


# ---------------------------------------------------------------------------- rule 7


async def check_no_leaked_tasks(make_url: MakeURL) -> None:
    """Rule 7: after ``aclose()`` no task, thread or file descriptor of the bus is left.

    Three emitters with async listeners, a subscription and ``wait_for`` run traffic and
    close; then three more are cancelled in the middle of traffic. The running tasks,
    threads and (where ``/proc/self/fd`` exists) open file descriptors must be those from
    before (a warm-up round first lets lazily created pools and selectors appear).
    """
    url, _ = fresh_url(make_url)
    await _leak_round(url)  # warm-up: lazily started thread pools etc. are not leaks
    tasks = {task.id for task in anyio.get_running_tasks()}
    threads = set(threading.enumerate())
    fds = _open_fds()

    await _leak_round(make_url())
    await _leak_round(make_url(), cancel_midway=True)

    left = [task for task in anyio.get_running_tasks() if task.id not in tasks]
    if left:
        shown = ", ".join(repr(task.name) for task in left)
        raise AssertionError(f"tasks still running after every emitter closed: {shown}")

    def leaked_threads() -> list[threading.Thread]:
        return [
            t
            for t in threading.enumerate()
            if t not in threads and t.is_alive() and not t.name.startswith(_POOL_THREADS)
        ]

    def leaked_fds() -> dict[int, str]:
        now = _open_fds()
        return {fd: target for fd, target in now.items() if fds.get(fd) != target}

    await _settle(lambda: not leaked_threads() and not leaked_fds())
    if extra := leaked_threads():
        counted = Counter(t.name for t in extra)
        raise AssertionError(
            "threads still alive after every emitter closed: "
            + ", ".join(f"{name!r}" + (f" (x{k})" if k > 1 else "") for name, k in counted.items())
        )
    if extra_fds := leaked_fds():
        shown = ", ".join(f"{fd} -> {target}" for fd, target in sorted(extra_fds.items()))
        raise AssertionError(f"file descriptors still open after every emitter closed: {shown}")


_POOL_THREADS = ("AnyIO worker thread", "Trio thread", "asyncio_")
"""Idle worker threads of the event loops' own pools: reused, and they exit on their own."""


async def _leak_round(url: str, *, cancel_midway: bool = False) -> None:
    cluster = Cluster(url)
    nodes = [cluster.node("A"), cluster.node("B", echo=False), cluster.node("C")]
    recorders = [cluster.recorder(node, "leak.>", kind="async") for node in nodes]
    count = 20
    pulled = Recorder(nodes[2], "leak.>", kind="pull")
    with anyio.CancelScope() as scope:
        subscription = await cluster.subscribe(nodes[2], "leak.>", capacity=64)
        async with cluster, anyio.create_task_group() as tg:
            tg.start_soon(_pull, subscription, pulled)
            waiter_ready = anyio.Event()

            async def wait_for_last() -> None:
                waiter_ready.set()
                await nodes[1].bus.wait_for("leak.last", timeout=current_deadline())

            tg.start_soon(wait_for_last)
            await waiter_ready.wait()
            for n in range(1, count + 1):
                await nodes[0].bus.emit("leak.t", {"node": "A", "n": n})
                if cancel_midway and n == count // 2:
                    scope.cancel()
            await nodes[0].bus.emit("leak.last", {"node": "A", "n": count + 1})
            for recorder in recorders[1:]:
                await recorder.expect(count, sender="A")
            tg.cancel_scope.cancel()
    if cancel_midway and not scope.cancelled_caught:
        raise AssertionError("cancelling the emitters' scope mid-traffic did not cancel it")


def _open_fds() -> dict[int, str]:
    """Open file descriptors -> what they point at (empty where /proc is unavailable)."""
    root = "/proc/self/fd"
    if not sys.platform.startswith("linux") or not os.path.isdir(root):
        return {}
    found: dict[int, str] = {}
    for entry in os.listdir(root):
        try:
            found[int(entry)] = os.readlink(f"{root}/{entry}")
        except OSError:  # closed while listing (the listing's own descriptor)
            continue
    return found


async def _settle(done: Callable[[], bool]) -> None:
    """Give threads and sockets released by ``aclose`` a moment (2 s at most) to finish."""
    with anyio.move_on_after(min(2.0, current_deadline())):
        while not done():  # noqa: ASYNC110 (nothing signals a thread's exit; poll briefly)
            await anyio.sleep(0.02)


# ---------------------------------------------------------------------------- rule 8


async def check_reconnects(make_url: MakeURL, *, restart_hub: RestartHub | None = None) -> None:
    """Rule 8: after the hub, proxy or server restarts, traffic resumes without user action.

    Needs a ``restart_hub(url)`` hook from the transport's author (memory:// has no hub).
    Three emitters exchange events, the hub restarts, and each emitter then probes until
    everyone hears everyone again within the deadline; after that, fenced streams from all
    three must arrive exactly once and in order.
    """
    url, _ = fresh_url(make_url)
    if restart_hub is None:
        raise CheckSkipped(
            "rule 8 needs a restart_hub(url) hook: run_check(..., restart_hub=...) or "
            "run_all(..., restart_hub=...)"
        )
    cluster = Cluster(url)
    nodes = [cluster.node("A"), cluster.node("B"), cluster.node("C", echo=False)]
    before = {node.name: cluster.recorder(node, "before.t") for node in nodes}
    after = {node.name: cluster.recorder(node, "after.t") for node in nodes}
    async with cluster:
        for sender in nodes:
            await sender.bus.emit("before.t", {"node": sender.name, "n": 1})
        for node in nodes:
            others = [m.name for m in nodes if m is not node]
            recorder = before[node.name]
            for other in others:
                await recorder.expect(1, sender=other, why="before the hub restarted")
        await restart_hub(url)
        try:
            await cluster.handshake()
        except AssertionError as exc:
            raise AssertionError(f"after restart_hub(): {exc}") from exc
        count = 20
        async with anyio.create_task_group() as tg:
            for sender in nodes:
                waiting = [after[node.name] for node in nodes if node is not sender or node.echo]
                tg.start_soon(cluster.stream, sender, count, lambda n: "after.t", waiting)
    for node in nodes:
        for sender in nodes:
            if sender is node and not node.echo:
                continue
            verify_stream(
                after[node.name],
                sender.name,
                range(1, count + 1),
                lambda n: "after.t",
                ordered=True,
            )


# ---------------------------------------------------------------------------- rule 9


BAD_TOPICS = (
    "*",
    ">",
    "a.*",
    "a.>",
    "*.a",
    "a.*.b",
    "",
    ".",
    "a..b",
    ".a",
    "a.",
    "a b",
    "a\x00b",
    "a*",
    "a>b",
    "x" * 1025,
)
"""Topics ``emit`` must refuse with ``ValueError``."""

BAD_PATTERNS = (
    "a.>.b",
    ">.a",
    "a.>.>",
    "a*",
    "*a",
    "a.b*",
    "a.>x",
    "",
    "a..b",
    ".",
    "a.",
    "a b",
    "x" * 1025,
)
"""Patterns ``on``, ``once``, ``subscribe`` and ``wait_for`` must refuse with ``ValueError``."""

GOOD_PATTERNS = ("*", ">", "a", "a.*", "a.>", "*.b", "a.*.c", "*.*", "a.b.c")


async def check_invalid_topics(make_url: MakeURL) -> None:
    """Rule 9: no wildcard in ``emit``; invalid topics and patterns raise at the call site.

    Every topic in :data:`BAD_TOPICS` (also in the seed's ``{"topic": ...}`` form) must raise
    ``ValueError`` from ``emit`` on each of three emitters, before anything is sent; every
    pattern in :data:`BAD_PATTERNS` must raise ``ValueError`` from ``on``, ``once``,
    ``subscribe`` and ``wait_for`` without registering anything; valid patterns must work.
    """
    url, _ = fresh_url(make_url)
    cluster = Cluster(url)
    nodes = [cluster.node("A"), cluster.node("B"), cluster.node("C")]
    spies = {node.name: cluster.recorder(node, "*") for node in nodes}

    def noop(event: DistributedEvent) -> None:
        """A listener that must never get registered."""

    async with cluster:
        for node in nodes:
            emitted = node.bus.stats().emitted
            for topic in BAD_TOPICS:
                await _expect_value_error(
                    f"node {node.name}: emit({topic!r:.40})", node.bus.emit(topic, 1)
                )
                await _expect_value_error(
                    f"node {node.name}: emit({{'topic': {topic!r:.40}, ...}})",
                    node.bus.emit({"topic": topic, "data": 1}),
                )
            if node.bus.stats().emitted != emitted:
                raise AssertionError(
                    f"node {node.name}: stats().emitted changed after emits that raised; an "
                    "invalid topic must be refused before anything is sent"
                )
            listeners = node.bus.listener_count()
            for pattern in BAD_PATTERNS:
                shown = f"{pattern!r:.40}"
                _expect_value_error_now(f"on({shown}, fn)", node.bus.on, pattern, noop)
                _expect_value_error_now(f"once({shown}, fn)", node.bus.once, pattern, noop)
                await _expect_value_error(
                    f"wait_for({shown})", node.bus.wait_for(pattern, timeout=current_deadline())
                )
                await _expect_value_error(f"subscribe({shown})", _enter(node, pattern))
            if node.bus.listener_count() != listeners:
                raise AssertionError(
                    f"node {node.name}: listener_count() went from {listeners} to "
                    f"{node.bus.listener_count()} after registrations that raised"
                )
            for pattern in GOOD_PATTERNS:
                try:
                    node.bus.on(pattern, noop)
                except ValueError as exc:
                    raise AssertionError(
                        f"on({pattern!r}, fn) refused a valid pattern: {exc}"
                    ) from exc
                node.bus.off(pattern, noop)
        for node in nodes:
            await node.bus.emit("valid.t", {"node": node.name, "n": 1})
        for node in nodes:
            spy = spies[node.name]
            await spy.expect(len(nodes), why="each node emitted one valid event")
            strays = [event.topic for event in spy.events if event.topic != "valid.t"]
            if strays:
                raise AssertionError(
                    f"{spy.label} received events on invalid topics {strays!r}: emit must "
                    "refuse them before sending"
                )


async def _expect_value_error(what: str, call: Awaitable[object]) -> None:
    try:
        await call
    except ValueError:
        return
    except Exception as exc:
        raise AssertionError(
            f"{what} raised {type(exc).__name__}: {exc}; invalid topics and patterns must "
            "raise ValueError"
        ) from exc
    raise AssertionError(f"{what} was accepted; it must raise ValueError at the call site")


def _expect_value_error_now(what: str, call: Callable[..., object], *args: object) -> None:
    try:
        call(*args)
    except ValueError:
        return
    except Exception as exc:
        raise AssertionError(
            f"{what} raised {type(exc).__name__}: {exc}; invalid patterns must raise ValueError"
        ) from exc
    raise AssertionError(f"{what} was accepted; it must raise ValueError at the call site")


async def _enter(node: Node, pattern: str) -> None:
    async with node.bus.subscribe(pattern):
        pass


# ---------------------------------------------------------------------------- processes


async def check_presence(make_url: MakeURL) -> None:
    """Presence: ``peers()`` lists the members that announce themselves, ``on_peer`` hooks
    hear them join and leave, and a member that closes leaves at once (its ``<3`` bye).

    B and C have service names and heartbeat every 0.2 s; A has neither. A must list both
    with their services, hear each join once, then hear C leave when C closes, B staying.
    """
    url, _ = fresh_url(make_url)
    cluster = Cluster(url)
    a = cluster.node("A")
    b = cluster.node("B", service="svc-b", heartbeat_interval=0.2)
    c = cluster.node("C", service="svc-c", heartbeat_interval=0.2)
    joined: list[str] = []
    left: list[str] = []

    def on_joined(peer: Any) -> None:
        joined.append(peer.id)
        cluster.signal.pulse()

    def on_left(peer: Any) -> None:
        left.append(peer.id)
        cluster.signal.pulse()

    a.bus.on_peer("joined", on_joined)
    a.bus.on_peer("left", on_left)
    async with cluster:
        ids = {b.bus.id: "svc-b", c.bus.id: "svc-c"}

        def listed() -> dict[str, str]:
            return {peer.id: peer.service for peer in a.bus.peers()}

        await cluster.signal.expect(
            lambda: listed() == ids,
            lambda: (
                f"node A's peers() is {listed()}; B and C (service names, heartbeats "
                f"every 0.2 s) must be listed as {ids}"
            ),
        )
        if sorted(joined) != sorted(ids):
            raise AssertionError(f"on_peer('joined') saw {joined}; B and C once each")
        await c.close()
        await cluster.signal.expect(
            lambda: left == [c.bus.id],
            lambda: (
                f"node A's on_peer('left') saw {left} after C closed; C's bye must make it "
                "leave (and only C)"
            ),
        )
        if listed() != {b.bus.id: "svc-b"}:
            raise AssertionError(f"after C left, node A's peers() is {listed()}; B must stay")


async def check_across_processes(make_url: MakeURL, *, count: int = 200) -> None:
    """Rules 1 and 2 across processes: this process and two peers in processes of their own.

    Needs ``capabilities.crosses_processes``. Each of the three emits ``count`` numbered
    events; each must receive the other two's events exactly once and in order (the peers
    check their side and report). The peers run :mod:`nanomitter.conformance.peer`.
    """
    url, capabilities = fresh_url(make_url)
    if not capabilities.crosses_processes:
        raise CheckSkipped("the transport does not cross processes (crosses_processes=False)")
    from .processes import spawn_peer

    cluster = Cluster(url)
    local = cluster.node("A")
    recorder = cluster.recorder(local, "xproc.>")
    heard_locally: set[str] = set()
    probe = "xproc.sync"  # matched by "xproc.>": hearing it proves that interest is active

    def on_probe(event: DistributedEvent) -> None:
        heard_locally.add(event.sender)
        cluster.signal.pulse()

    local.bus.on(probe, on_probe)
    backend = current_backend()
    async with (
        cluster,
        spawn_peer(url, name="P1", backend=backend) as p1,
        spawn_peer(url, name="P2", backend=backend, echo=False) as p2,
    ):
        peers = [p1, p2]
        for peer in peers:
            cluster.alias(peer.id, peer.name)
            await peer.listen("xproc.>")
        everyone = {local.bus.id, p1.id, p2.id}

        def local_done() -> bool:
            return heard_locally >= {p1.id, p2.id}

        with anyio.move_on_after(current_deadline()):
            while True:
                await local.bus.emit(probe, {"node": "A"})
                heard = [await peer.ping(probe) for peer in peers]
                if local_done() and all(
                    h >= everyone - {peer.id} for h, peer in zip(heard, peers, strict=True)
                ):
                    break
                await anyio.sleep(PROBE_INTERVAL)  # retry pacing, not synchronisation
        local.bus.off(probe, on_probe)
        if not local_done() or not all(
            h >= everyone - {peer.id} for h, peer in zip(heard, peers, strict=True)
        ):
            raise AssertionError(
                f"this process and two peer processes on {url} could not all hear each other "
                f"within {current_deadline():g} s"
            )
        for peer in peers:
            await peer.emit("xproc.t", count)
        for n in range(1, count + 1):
            await local.bus.emit("xproc.t", {"node": "A", "n": n})
        for peer in peers:
            got = await peer.wait("xproc.>", 2 * count, within=current_deadline())
            if got < 2 * count:
                raise AssertionError(
                    f"peer {peer.name} (another process) got {got} of the {2 * count} events "
                    f"this process and the other peer emitted; its report: {await peer.report()}"
                )
        for peer in peers:
            await recorder.expect(count, sender=peer.name, why="sent from another process")
        for peer in peers:
            listener = (await peer.report())["listeners"]["xproc.>"]
            if listener["duplicates"] or listener["out_of_order"]:
                raise AssertionError(
                    f"peer {peer.name} (another process) saw {listener['duplicates']} "
                    f"duplicate and {listener['out_of_order']} out-of-order events"
                )
    for peer in peers:
        verify_stream(recorder, peer.name, range(1, count + 1), lambda n: "xproc.t", ordered=True)


# ---------------------------------------------------------------------------- rule 10


class Refused(Exception):
    """Raised by the responders of the request/reply checks, on purpose."""


NO_RESPONDER_SLACK = 3.0
"""Seconds a request to a topic nobody serves may take beyond its timeout (slow machines)."""


def _request_timeout() -> float:
    """A per-request timeout for requests that must be answered: generous, within the deadline."""
    return min(5.0, current_deadline() / 2)


def _responders_of(node: Node, topic: str) -> set[str]:
    """The ids of the peers that ``node`` knows serve ``topic`` (from presence)."""
    return {
        peer.id
        for peer in node.bus.peers()
        if any(pattern_matches(pattern, topic) for pattern in peer.responds)
    }


async def _expect_known_responders(
    node: Node, topic: str, ids: dict[str, str], *, why: str = ""
) -> None:
    """Wait until ``node``'s presence lists every responder in ``ids`` (id -> name) for
    ``topic``; they announce a new responder at once, but it reaches others asynchronously."""
    limit = current_deadline()
    with anyio.move_on_after(limit):
        while not _responders_of(node, topic) >= set(ids):  # noqa: ASYNC110 (nothing signals it)
            await anyio.sleep(0.01)
    known = _responders_of(node, topic)
    if not known >= set(ids):
        missing = sorted(name for id_, name in ids.items() if id_ not in known)
        raise AssertionError(
            f"node {node.name}'s peers() never listed {', '.join(missing)} as serving "
            f"{topic!r} within {limit:g} s (an emitter announces a new responder at once in "
            f"its '<3' heartbeat; peers() shows it in Peer.responds){why}"
        )


async def _request(node: Node, topic: str, data: Any = None, **options: Any) -> Any:
    """``node.bus.request(...)`` that must be answered; any exception fails the check."""
    timeout = options.pop("timeout", _request_timeout())
    try:
        return await node.bus.request(topic, data, timeout=timeout, **options)
    except Exception as exc:
        raise AssertionError(
            f"node {node.name}: request({topic!r}, {data!r:.60}) raised "
            f"{type(exc).__name__}: {exc}; a responder serves it, so it must be answered"
        ) from exc


async def _expect_remote_error(
    node: Node, topic: str, data: Any, *, responder: Node, kind: str, message: str
) -> None:
    """A request whose responder fails must raise ``RemoteError`` with its type and message."""
    try:
        reply = await node.bus.request(topic, data, timeout=_request_timeout())
    except RemoteError as exc:
        problems = []
        if exc.type != kind:
            problems.append(f".type is {exc.type!r}, expected {kind!r}")
        if message not in exc.message:
            problems.append(f".message is {exc.message!r}, expected it to contain {message!r}")
        if exc.topic != topic:
            problems.append(f".topic is {exc.topic!r}")
        if exc.responder != responder.bus.id:
            problems.append(
                f".responder is {responder.cluster.name_of(exc.responder)}, expected node "
                f"{responder.name}"
            )
        if exc.service != responder.bus.service:
            problems.append(f".service is {exc.service!r}, expected {responder.bus.service!r}")
        if problems:
            raise AssertionError(
                f"node {node.name}: the RemoteError for {topic!r} is wrong: {'; '.join(problems)}"
            ) from exc
        return
    except Exception as exc:
        raise AssertionError(
            f"node {node.name}: request({topic!r}) raised {type(exc).__name__}: {exc}; a "
            f"responder that fails ({kind}) must make it raise RemoteError"
        ) from exc
    raise AssertionError(
        f"node {node.name}: request({topic!r}) returned {reply!r}, but its responder on node "
        f"{responder.name} failed ({kind}); the requester must get RemoteError"
    )


async def _expect_nobody(node: Node, topic: str, timeout: float) -> None:  # noqa: ASYNC109
    """A request nobody serves fails with NoResponders or RequestTimeout within ``timeout``."""
    started = time.perf_counter()
    try:
        reply = await node.bus.request(topic, {"node": node.name}, timeout=timeout)
    except (NoResponders, RequestTimeout) as exc:
        elapsed = time.perf_counter() - started
        if elapsed > timeout + NO_RESPONDER_SLACK:
            raise AssertionError(
                f"node {node.name}: request({topic!r}, timeout={timeout}) (nobody serves it) "
                f"raised {type(exc).__name__} only after {elapsed:.2f} s; it must give up "
                "within its timeout"
            ) from exc
        if topic not in str(exc):
            raise AssertionError(f"{type(exc).__name__} does not name the topic: {exc}") from exc
        return
    except Exception as exc:
        raise AssertionError(
            f"node {node.name}: request({topic!r}) (nobody serves it) raised "
            f"{type(exc).__name__}: {exc}; expected NoResponders or RequestTimeout"
        ) from exc
    raise AssertionError(
        f"node {node.name}: request({topic!r}) returned {reply!r}, yet nobody serves it"
    )


def _no_request_traffic(recorders: list[Recorder]) -> None:
    """Request/reply travels on reserved topics that listeners (even bare ``*``) never see."""
    for recorder in recorders:
        leaked = sorted({e.topic for e in recorder.events if e.topic.startswith(REQUEST_PREFIXES)})
        if leaked:
            raise AssertionError(
                f"{recorder.label} received request/reply traffic on {leaked[:5]!r}; "
                "requests and replies must never reach listeners"
            )


async def check_request_reply(make_url: MakeURL, *, count: int = 40) -> None:
    """Request/reply: one responder answers each request, whichever way the transport picks.

    B and C serve ``rr.svc``; A sends ``count`` requests one by one and ``count // 2`` at
    once: each must be answered with its own data, and both responders must answer some
    (round robin by the requester, or a server's pick). A responder that raises gives the
    requester a ``RemoteError`` with its type, message, id and service, is reported on its
    own node, and answers the next request. A topic nobody serves fails with
    ``NoResponders`` or ``RequestTimeout`` within the timeout. A's own responder answers
    A's requests (B serves that topic too). A typed responder gets converted data and turns
    invalid data into ``RemoteError`` type ``ValidationError``; ``request(type=)`` converts
    the reply. Listeners on bare ``*`` and ``>`` never see any of this traffic.
    """
    url, capabilities = fresh_url(make_url)
    cluster = Cluster(url)
    a = cluster.node("A")
    b = cluster.node("B", service="conformance-b")
    c = cluster.node("C", service="conformance-c", echo=False)
    nodes = [a, b, c]
    spies = [cluster.recorder(node, pattern) for node in nodes for pattern in ("*", ">")]
    svc = "rr.svc"

    def echo(node: Node) -> Callable[[DistributedEvent], Any]:
        def respond(event: DistributedEvent) -> Any:
            return {"node": node.name, "echo": event.data}

        respond.__qualname__ = f"respond@{node.name}"
        return respond

    async def echo_async(event: DistributedEvent) -> Any:
        await anyio.lowlevel.checkpoint()
        return {"node": "C", "echo": event.data}

    def refuse(event: DistributedEvent) -> Any:
        if isinstance(event.data, dict) and event.data.get("fail"):
            raise Refused(f"conformance: refused {event.data.get('n')} on purpose")
        return {"node": "B", "echo": event.data}

    def typed(event: DistributedEvent) -> Any:
        quote = event.data
        return {
            "converted": isinstance(quote, Quote),
            "ticker": getattr(quote, "ticker", None),
            "price": getattr(quote, "price", None),
        }

    asked = 0
    async with cluster:
        b.bus.responder(svc, echo(b))
        c.bus.responder(svc, echo_async)
        b.bus.responder("rr.fail", refuse)
        b.bus.responder("rr.typed", typed, type=Quote)
        a.bus.responder("rr.local", echo(a))
        b.bus.responder("rr.local", echo(b))
        for node in nodes:
            await node.bus.listening()
        await _expect_known_responders(a, svc, {b.bus.id: "B", c.bus.id: "C"})

        answered: Counter[str] = Counter()

        def check_reply(n: int, reply: Any) -> None:
            want = {"node": "A", "n": n}
            if not isinstance(reply, dict) or reply.get("echo") != want:
                raise AssertionError(
                    f"request #{n} on {svc!r} from node A got {reply!r}; the responder echoes "
                    f"the request's data, so it must carry {want!r}"
                )
            if reply.get("node") not in ("B", "C"):
                raise AssertionError(f"request #{n} answered by {reply.get('node')!r}")
            answered[reply["node"]] += 1

        for n in range(1, count + 1):
            check_reply(n, await _request(a, svc, {"node": "A", "n": n}))
        asked += count

        async def one(n: int) -> None:
            check_reply(n, await _request(a, svc, {"node": "A", "n": n}))

        async with anyio.create_task_group() as tg:
            for n in range(count + 1, count + count // 2 + 1):
                tg.start_soon(one, n)
        asked += count // 2
        if len(answered) < 2:
            raise AssertionError(
                f"{sum(answered.values())} requests on {svc!r} from node A were all answered "
                f"by node {next(iter(answered))}; B and C both serve it (known to A from "
                "presence), so both must get some (round robin, or the server's pick)"
            )

        await _expect_remote_error(
            a,
            "rr.fail",
            {"fail": True, "n": 1},
            responder=b,
            kind="Refused",
            message="conformance: refused 1 on purpose",
        )
        asked += 1
        await b.expect_problems(ListenerError, 1, "its responder raised and must be reported")
        after = await _request(a, "rr.fail", {"n": 2})
        asked += 1
        if after != {"node": "B", "echo": {"n": 2}}:
            raise AssertionError(
                f"after raising, node B's responder answered {after!r}; it must keep serving"
            )
        if b.bus.stats().listener_errors != 1:
            raise AssertionError(
                f"node B: stats().listener_errors = {b.bus.stats().listener_errors} after its "
                "responder raised once"
            )

        for _ in range(5):
            reply = await _request(a, "rr.local", {"n": 0})
            asked += 1
            if not isinstance(reply, dict) or reply.get("node") != "A":
                raise AssertionError(
                    f"node A asked 'rr.local', which A itself serves (B too), and got {reply!r}; "
                    "a responder on the requesting emitter answers its own requests"
                )

        plain = await _request(a, "rr.typed", {"ticker": "ACME", "price": 2})
        asked += 1
        if plain != {"converted": True, "ticker": "ACME", "price": 2.0}:
            raise AssertionError(
                f"a responder with type=Quote got {{'ticker': 'ACME', 'price': 2}} and "
                f"answered {plain!r}; it must get the data converted to Quote"
            )
        quote = await _request(a, "rr.typed", {"ticker": "ACME", "price": 2.5}, type=Quote)
        asked += 1
        if quote != Quote("ACME", 2.5):
            raise AssertionError(f"request(..., type=Quote) returned {quote!r}, not a Quote")
        await _expect_remote_error(
            a,
            "rr.typed",
            {"ticker": "ACME", "price": "high"},
            responder=b,
            kind="ValidationError",
            message="$.price",
        )
        asked += 1
        if b.bus.stats().invalid != 1:
            raise AssertionError(
                f"node B: stats().invalid = {b.bus.stats().invalid} after its typed responder "
                "got one invalid request"
            )

        await _expect_nobody(a, "rr.nobody", 1.0)
        if capabilities.balances_requests:
            asked += 1  # sent, and the server said nobody serves it; elsewhere a probe found
            # nobody and the request itself never left
        got = a.bus.stats().requests
        if got != asked:
            raise AssertionError(
                f"node A: stats().requests = {got} after {asked} requests (probes not counted)"
            )
    _no_request_traffic(spies)


async def check_survey(make_url: MakeURL) -> None:
    """Surveys: every responder of a topic answers, one reply per emitter.

    A (the surveyor), B and C serve ``sv.t`` (B also ``sv.*``, registered later: an emitter
    answers with its first matching responder); D serves nothing. ``survey(expect=3)``
    must return the three replies (distinct senders, their service names and answers) well
    before its timeout; without ``expect`` a survey waits its whole timeout and still has
    exactly three; with ``expect=2`` it returns early. A raising responder's ``Reply``
    carries ``error`` (a ``RemoteError``); a topic nobody serves gives ``[]`` by the timeout.
    """
    url, capabilities = fresh_url(make_url)
    cluster = Cluster(url)
    a = cluster.node("A", service="svc-a")
    b = cluster.node("B", service="svc-b")
    c = cluster.node("C", service="svc-c", echo=False)
    d = cluster.node("D")
    responders = [a, b, c]
    spies = [cluster.recorder(node, "*") for node in (*responders, d)]

    def answer(node: Node, via: str) -> Callable[[DistributedEvent], Any]:
        def respond(event: DistributedEvent) -> Any:
            return {"node": node.name, "via": via, "echo": event.data}

        return respond

    def fail(event: DistributedEvent) -> Any:
        raise Refused("conformance: survey refused on purpose")

    for node in responders:
        node.bus.responder("sv.t", answer(node, "sv.t"))
    b.bus.responder("sv.fail", fail)
    c.bus.responder("sv.fail", answer(c, "sv.fail"))
    b.bus.responder("sv.*", answer(b, "sv.*"))  # matches sv.t too, but registered after it
    ids = {node.bus.id: node for node in responders}
    limit = current_deadline()

    def verify(replies: list[Reply], what: str, want: set[str]) -> None:
        senders = [cluster.name_of(reply.sender) for reply in replies]
        if len(set(senders)) != len(senders):
            raise AssertionError(
                f"{what} got replies from {senders}: each emitter must answer a survey once "
                "(with its first matching responder)"
            )
        if not set(senders) <= want:
            raise AssertionError(f"{what} got replies from {senders}; only {sorted(want)} serve it")
        for reply in replies:
            node = ids[reply.sender]
            expected = {"node": node.name, "via": "sv.t", "echo": {"n": 1}}
            if reply.data != expected or reply.error is not None:
                raise AssertionError(
                    f"{what}: node {node.name}'s reply is {reply!r}; expected data {expected!r}"
                )
            if reply.service != node.bus.service:
                raise AssertionError(
                    f"{what}: node {node.name}'s reply says service {reply.service!r}, "
                    f"expected {node.bus.service!r}"
                )

    everyone = {"A", "B", "C"}
    async with cluster:
        started = time.perf_counter()
        replies = await a.bus.survey("sv.t", {"n": 1}, timeout=limit, expect=3)
        elapsed = time.perf_counter() - started
        verify(replies, "survey('sv.t', expect=3)", everyone)
        if len(replies) != 3:
            raise AssertionError(
                f"survey('sv.t', expect=3, timeout={limit:g}) returned after {elapsed:.2f} s "
                f"with replies from {sorted(cluster.name_of(r.sender) for r in replies)}; "
                "A, B and C serve it"
            )
        if elapsed > limit / 2:
            raise AssertionError(
                f"survey(expect=3) took {elapsed:.2f} s of its {limit:g} s timeout; it must "
                "return as soon as three replies are in"
            )

        whole = 1.5
        started = time.perf_counter()
        replies = await a.bus.survey("sv.t", {"n": 1}, timeout=whole)
        elapsed = time.perf_counter() - started
        verify(replies, f"survey('sv.t', timeout={whole})", everyone)
        if len(replies) != 3:
            raise AssertionError(
                f"survey('sv.t', timeout={whole}) got replies from "
                f"{sorted(cluster.name_of(r.sender) for r in replies)}; A, B and C serve it"
            )
        if elapsed < whole * 0.9:
            raise AssertionError(
                f"survey('sv.t', timeout={whole}) without expect returned after "
                f"{elapsed:.2f} s; it must collect replies for its whole timeout"
            )

        started = time.perf_counter()
        replies = await b.bus.survey("sv.t", {"n": 1}, timeout=limit, expect=2)
        elapsed = time.perf_counter() - started
        verify(replies, "survey('sv.t', expect=2) from B", everyone)
        if len(replies) < 2 or elapsed > limit / 2:
            raise AssertionError(
                f"survey('sv.t', expect=2, timeout={limit:g}) from B returned {len(replies)} "
                f"replies after {elapsed:.2f} s; it must return once two are in"
            )

        replies = await d.bus.survey("sv.fail", None, timeout=limit, expect=2)
        by_name = {cluster.name_of(reply.sender): reply for reply in replies}
        if set(by_name) != {"B", "C"}:
            raise AssertionError(
                f"survey('sv.fail', expect=2) from D got replies from {sorted(by_name)}; "
                "B (raising) and C serve it"
            )
        failed = by_name["B"]
        error = failed.error
        if (
            not isinstance(error, RemoteError)
            or error.type != "Refused"
            or "survey refused on purpose" not in error.message
            or error.responder != b.bus.id
            or failed.data is not None
        ):
            raise AssertionError(
                f"node B's responder raised Refused, yet its survey reply is {failed!r}; it "
                "must carry error=RemoteError (type 'Refused', its message) and data None"
            )
        if by_name["C"].error is not None or by_name["C"].data != {
            "node": "C",
            "via": "sv.fail",
            "echo": None,
        }:
            raise AssertionError(f"node C's survey reply is {by_name['C']!r}")
        await b.expect_problems(ListenerError, 1, "its responder raised in a survey")

        nobody = 0.5
        started = time.perf_counter()
        replies = await a.bus.survey("nobody.sv", {"n": 1}, timeout=nobody)
        elapsed = time.perf_counter() - started
        if replies:
            raise AssertionError(f"survey('nobody.sv') got {replies!r}; nobody serves it")
        if elapsed > nobody + NO_RESPONDER_SLACK:
            raise AssertionError(
                f"survey('nobody.sv', timeout={nobody}) returned after {elapsed:.2f} s; it "
                "must return by its timeout"
            )
        if elapsed < nobody * 0.9 and not capabilities.balances_requests:
            raise AssertionError(
                f"survey('nobody.sv', timeout={nobody}) returned [] after {elapsed:.2f} s; "
                "without word from the transport that nobody serves it, it waits its timeout"
            )
    _no_request_traffic(spies)


async def check_requests_across_processes(make_url: MakeURL, *, count: int = 30) -> None:
    """Request/reply across processes: responders in two peer processes, the requester here.

    Needs ``capabilities.crosses_processes``. Peers P1 and P2 serve ``xreq.t`` (answering
    with their pid and the request's data); this process's node A sends ``count`` requests,
    which must all be answered, by both peers; a survey must get one reply from each, with
    their pids and service names. P1's raising responder gives A a ``RemoteError``. Then a
    peer is the requester: P2 asks A's responder and gets its answer.
    """
    url, capabilities = fresh_url(make_url)
    if not capabilities.crosses_processes:
        raise CheckSkipped("the transport does not cross processes (crosses_processes=False)")
    from .processes import spawn_peer

    cluster = Cluster(url)
    a = cluster.node("A")
    a.bus.responder("xreq.back", lambda event: {"node": "A", "echo": event.data})
    backend = current_backend()
    topic = "xreq.t"
    async with (
        cluster,
        spawn_peer(url, name="P1", backend=backend) as p1,
        spawn_peer(url, name="P2", backend=backend, echo=False) as p2,
    ):
        peers = {p1.id: p1, p2.id: p2}
        for peer in peers.values():
            cluster.alias(peer.id, peer.name)
            await peer.respond(topic)
        await p1.respond("xreq.fail", mode="raise")
        await _expect_known_responders(a, topic, {p.id: p.name for p in peers.values()})
        pids: Counter[int] = Counter()
        for n in range(1, count + 1):
            reply = await _request(a, topic, {"n": n})
            if not isinstance(reply, dict) or reply.get("echo") != {"n": n}:
                raise AssertionError(
                    f"request #{n} on {topic!r} got {reply!r}; the peer echoes its data"
                )
            pids[reply.get("pid", 0)] += 1
        if set(pids) != {p1.pid, p2.pid}:
            raise AssertionError(
                f"{count} requests on {topic!r} were answered by processes {dict(pids)}; both "
                f"peers (pids {p1.pid}, {p2.pid}) serve it and must each get some"
            )
        replies = await a.bus.survey(topic, {"n": 0}, timeout=current_deadline(), expect=2)
        got = sorted(
            (cluster.name_of(r.sender), r.service, (r.data or {}).get("pid")) for r in replies
        )
        want = sorted((p.name, f"conformance-{p.name}", p.pid) for p in peers.values())
        if got != want:
            raise AssertionError(
                f"survey({topic!r}, expect=2) got (sender, service, pid) {got}; expected {want}"
            )
        try:
            reply = await a.bus.request("xreq.fail", None, timeout=_request_timeout())
        except RemoteError as exc:
            if (
                exc.type != "RuntimeError"
                or exc.responder != p1.id
                or "on purpose" not in exc.message
            ):
                raise AssertionError(
                    f"peer P1's responder raised RuntimeError; the RemoteError says {exc!r} "
                    f"(type {exc.type!r}, responder {cluster.name_of(exc.responder)})"
                ) from exc
        except Exception as exc:
            raise AssertionError(
                f"request('xreq.fail') raised {type(exc).__name__}: {exc}; peer P1's responder "
                "raised, so A must get RemoteError"
            ) from exc
        else:
            raise AssertionError(f"request('xreq.fail') returned {reply!r}; P1's responder raised")
        answer = await p2.ask("xreq.back", {"from": "P2"}, timeout=_request_timeout())
        if answer.get("reply") != {"node": "A", "echo": {"from": "P2"}}:
            raise AssertionError(
                f"peer P2 asked A's responder on 'xreq.back' and got {answer}; expected A's "
                "answer echoing P2's data"
            )


async def _expect_calls(
    cluster: Cluster, name: str, log: list[tuple[tuple[str, str, int], str]], total: int
) -> None:
    def failure() -> str:
        return (
            f"node {name}'s listeners were called {len(log)} times, expected {total} "
            "(3 senders x 4 topics x matching listeners)"
        )

    await cluster.signal.expect(lambda: len(log) >= total, failure)


__all__ = [
    "BAD_PATTERNS",
    "BAD_TOPICS",
    "GOOD_PATTERNS",
    "Boom",
    "Quote",
    "Refused",
    "RestartHub",
    "check_across_processes",
    "check_bounded_queues",
    "check_close_flushes",
    "check_exactly_once",
    "check_garbage_frames",
    "check_invalid_topics",
    "check_listener_errors_isolated",
    "check_loss_is_counted",
    "check_no_leaked_tasks",
    "check_order_under_load",
    "check_presence",
    "check_reconnects",
    "check_registration_order",
    "check_request_reply",
    "check_requests_across_processes",
    "check_survey",
    "check_typed_validation",
]
