"""Rules 4-5: raising listeners, invalid typed data and undecodable frames are isolated,
counted and reported."""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from ...core.codecs import DEFAULT_MAX_FRAME_BYTES, Codec, MsgpackCodec
from ...core.errors import (
    FrameDecodeError,
    InvalidEventError,
    ListenerError,
)
from ...core.event import DistributedEvent
from ...core.report import logger as nanomitter_logger
from ..harness import (
    CheckSkipped,
    Cluster,
    MakeURL,
    Node,
    Recorder,
    fresh_url,
)
from ..quiet import held_logs
from ..traffic import numbered
from .common import Quote


class Boom(Exception):
    """Raised by the listeners of :func:`check_listener_errors_isolated`."""


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
    cluster.provokes(ListenerError)
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
                        await sender.bus.emit(topic, numbered(sender.name, n))
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
            await nodes[2].bus.emit("after.t", numbered(nodes[2].name, 1))
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
    cluster.provokes(InvalidEventError)
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
    cluster.provokes(FrameDecodeError)
    a, b, c = cluster.node("A"), cluster.node("B"), cluster.node("C")
    receivers = [b, c]
    recorders = {node.name: cluster.recorder(node, "*") for node in receivers}
    async with cluster:
        codec = _codec_of(a)
        ghost = "conformance-ghost-sender"
        cluster.alias(ghost, "ghost")

        def frame(topic: str, data: Any) -> bytes:
            return codec.encode(DistributedEvent(topic=topic, data=data, sender=ghost))

        valid = frame("garbage.ok", numbered("ghost", 1))
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
        await transport.send_raw(frame("garbage.ok", numbered("ghost", 2)))
        for n in range(1, 4):
            await a.bus.emit("garbage.after", numbered("A", n))
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
