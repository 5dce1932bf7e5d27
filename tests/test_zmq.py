"""The ZeroMQ transport: endpoints, roles, slow joiners, prefix filtering, coalescing, limits."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import msgspec
import pytest
import zmq

import nanomitter
from nanomitter import DistributedEvent
from nanomitter.core.codecs import JsonCodec, MsgpackCodec
from nanomitter.transports.zmq import PROBE_PREFIX, NoHubError, endpoints_for
from peers import HubProcess, Recorder
from zmq_support import ipc_url, make_url, tcp_url, zmq_of

pytestmark = pytest.mark.anyio
SCHEMES = ["tcp", "ipc"]


@asynccontextmanager
async def raw_socket(kind: int, endpoint: str) -> AsyncIterator[zmq.Socket[bytes]]:
    """A plain pyzmq socket (a foreign peer), closed and its context terminated on exit."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = context.socket(kind)
    sock.linger = 0
    sock.connect(endpoint)
    try:
        yield sock
    finally:
        sock.close(0)
        context.term()


async def poll_recv(sock: zmq.Socket[bytes], timeout: float = 20) -> list[bytes]:
    """Receive one multipart message from a raw socket, polling without blocking the loop."""
    with anyio.fail_after(timeout):
        while True:
            try:
                return sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                await anyio.sleep(0.01)  # a foreign peer's socket: poll, bounded by the deadline


# ---------------------------------------------------------------- URLs and roles


@pytest.mark.parametrize(
    ("scheme", "address", "publish", "subscribe", "bind_subscribe"),
    [
        ("zmq+tcp", "127.0.0.1:5560", "tcp://127.0.0.1:5560", "tcp://127.0.0.1:5561", None),
        ("zmq+tcp", "0.0.0.0:7000", "tcp://127.0.0.1:7000", "tcp://127.0.0.1:7001", "tcp://0.0.0.0:7001"),
        ("zmq+ipc", "/run/bus", "ipc:///run/bus.in", "ipc:///run/bus.out", None),
        ("zmq+ipc", "@bus", "ipc://@bus.in", "ipc://@bus.out", None),
    ],
)  # fmt: skip
def test_two_endpoints_derive_from_one_url(
    scheme: str, address: str, publish: str, subscribe: str, bind_subscribe: str | None
) -> None:
    endpoints = endpoints_for(scheme, address)
    assert (endpoints.publish, endpoints.subscribe) == (publish, subscribe)
    assert endpoints.bind_subscribe == (bind_subscribe or subscribe)
    assert (endpoints.lock is not None) == (scheme == "zmq+ipc" and not address.startswith("@"))


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("zmq+tcp://127.0.0.1", "needs HOST:PORT"),
        ("zmq+tcp://127.0.0.1:65535", "must be a number in 1..65534"),
        ("zmq+tcp://127.0.0.1:5560?role=leader", "role='leader' is not one of auto, hub, node"),
        ("zmq+tcp://127.0.0.1:5560?hwm=0", "hwm=0 must be >= 1"),
        ("zmq+tcp://127.0.0.1:5560?tls_ca=x.pem", "unknown option(s) 'tls_ca'"),
        ("zmq+tcp://127.0.0.1:5560?curve_server_key=short", "must be a CURVE key"),
        ("zmq+tcp://127.0.0.1:5560?curve_allow=any", "needs the hub's public key"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        nanomitter.connect(url)


def test_secret_keys_never_show() -> None:
    secret = "ab" * 32
    bus = nanomitter.connect(
        f"zmq+tcp://127.0.0.1:5560?curve_server_key={'cd' * 32}&curve_server_secret={secret}"
        "&curve_allow=any"
    )
    assert secret not in repr(bus)
    with pytest.raises(ValueError, match="curve_secret_key") as caught:
        nanomitter.connect(
            f"zmq+tcp://127.0.0.1:5560?curve_server_key={'cd' * 32}&curve_secret_key=x"
        )
    assert secret not in str(caught.value)


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_auto_role_binds_first_then_connects(scheme: str) -> None:
    url = make_url(scheme)
    async with nanomitter.connect(url) as hub, nanomitter.connect(url) as node:
        assert zmq_of(hub).is_hub
        assert not zmq_of(node).is_hub
        at_hub, at_node = Recorder(), Recorder()
        hub.on("t", at_hub)
        node.on("t", at_node)
        await zmq_of(hub).sync_interest()
        await zmq_of(node).sync_interest()
        await node.emit("t", "from node")
        await hub.emit("t", "from hub")
        assert {e.data for e in await at_hub.wait(2)} == {"from node", "from hub"}
        assert {e.data for e in await at_node.wait(2)} == {"from node", "from hub"}
        figures = zmq_of(hub).statistics()
        assert figures["hub"] == 1
        assert figures["hub_in_messages"] >= 4  # two frames per message
        assert zmq_of(node).statistics()["hub"] == 0


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_role_hub_on_a_taken_address_is_a_clear_error(scheme: str) -> None:
    url = make_url(scheme)
    async with nanomitter.connect(url):
        with pytest.raises(nanomitter.NanomitterError, match="address is in use"):
            async with nanomitter.connect(url, role="hub"):
                pass


async def test_role_node_without_a_hub_says_so() -> None:
    with pytest.raises(NoHubError, match="no hub answered"):
        async with nanomitter.connect(tcp_url(), role="node", connect_timeout=0.3):
            pass


async def test_ipc_hub_is_found_by_its_lock_and_a_stale_path_is_taken_over() -> None:
    """libzmq would silently steal a live ipc path; the lock file makes `auto` join instead."""
    url = ipc_url()
    path = Path(url.removeprefix("zmq+ipc://"))
    async with nanomitter.connect(url) as first, nanomitter.connect(url) as second:
        assert zmq_of(first).is_hub
        assert not zmq_of(second).is_hub
    # the lock is released with the hub; the next auto member becomes the hub
    async with nanomitter.connect(url) as again:
        assert zmq_of(again).is_hub
    assert path.with_name(path.name + ".lock").exists()


# ---------------------------------------------------------------- slow joiner


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_an_event_emitted_right_after_connect_returns_is_delivered(scheme: str) -> None:
    """No retries: one emit, by the hub's process and by another node, right after connect."""
    url = make_url(scheme)
    async with nanomitter.connect(url) as hub, nanomitter.connect(url) as other:
        for attempt in range(8):
            recorder = Recorder()
            late = nanomitter.connect(url)
            late.on("joiner.>", recorder)
            async with late:
                await hub.emit("joiner.hub", attempt)
                await other.emit("joiner.other", attempt)
                events = await recorder.wait(2, timeout=10)
            assert sorted(e.topic for e in events) == ["joiner.hub", "joiner.other"]


async def test_sync_interest_makes_a_new_listener_live() -> None:
    url = tcp_url()
    async with nanomitter.connect(url) as hub, nanomitter.connect(url) as node:
        for n in range(8):
            recorder = Recorder()
            node.on(f"late.{n}", recorder)
            await zmq_of(node).sync_interest()
            await hub.emit(f"late.{n}", n)
            (event,) = await recorder.wait(1, timeout=10)
            assert event.data == n


async def test_listening_and_subscribe_are_live_when_they_return() -> None:
    """The public forms: `await bus.listening()` after `on()`, and `subscribe()` itself."""
    url = tcp_url()
    async with nanomitter.connect(url) as hub, nanomitter.connect(url) as node:
        for n in range(4):
            recorder = Recorder()
            node.on(f"later.{n}", recorder)
            await node.listening()
            await hub.emit(f"later.{n}", n)
            (event,) = await recorder.wait(1, timeout=10)
            assert event.data == n
            async with node.subscribe(f"pulled.{n}") as events:
                await hub.emit(f"pulled.{n}", n)  # once, no retry: the block starts live
                with anyio.fail_after(10):
                    assert (await events.receive()).data == n


# ---------------------------------------------------------------- filtering


async def test_prefixes_are_subscribed_and_unsubscribed_at_the_hub() -> None:
    url = tcp_url()
    async with nanomitter.connect(url) as a, nanomitter.connect(url) as b:
        wanted, later = Recorder(), Recorder()
        b.on("a.>", wanted)
        await zmq_of(b).sync_interest()
        assert zmq_of(b).statistics()["subscriptions"] == 2  # and "<3", for presence
        for n in range(10):
            await a.emit("b.x", n)  # nobody listens: the hub must not forward these to b
            await a.emit("a.x", n)
        await wanted.wait(10)
        assert b.stats().received == 10
        b.on("c.t", later)
        assert b.off("a.>", wanted)
        await zmq_of(b).sync_interest()
        assert zmq_of(b).statistics()["subscriptions"] == 2  # and "<3", for presence
        for n in range(5):
            await a.emit("a.x", n)
        await a.emit("c.t", "fence")
        await later.wait(1)
        assert b.stats().received == 11  # "a.x" was unsubscribed: only the fence arrived


async def test_bare_star_gets_everything_but_never_control_frames() -> None:
    url = tcp_url()
    async with nanomitter.connect(url) as a, nanomitter.connect(url) as b:
        everything = Recorder()
        b.on("*", everything)
        await zmq_of(b).sync_interest()
        await zmq_of(a).sync_interest()  # a's probe passes b's "" subscription
        await a.emit("one", 1)
        await a.emit("two.three", 2)
        events = await everything.wait(2)
        await zmq_of(a).sync_interest()
        await a.emit("fence", 3)
        await everything.wait(3)
        assert [e.topic for e in events] == ["one", "two.three", "fence"]
        assert not any(e.topic.startswith(PROBE_PREFIX) for e in events)


# ---------------------------------------------------------------- coalescing and the wire


@pytest.mark.parametrize("codec", ["msgpack", "json"])
async def test_bursts_are_coalesced_and_arrive_complete_and_in_order(codec: str) -> None:
    url = tcp_url(f"?codec={codec}")
    count = 3000
    async with nanomitter.connect(url) as a, nanomitter.connect(url) as b:
        x, y = Recorder(), Recorder()
        b.on("burst.x", x)
        b.on("burst.y", y)
        await zmq_of(b).sync_interest()
        before = zmq_of(a).frames_sent
        for n in range(count):
            await a.emit("burst.x", n)
        for n in range(count):
            await a.emit("burst.x" if n % 2 else "burst.y", n)
        await x.wait(count + count // 2)
        await y.wait(count // 2)
        assert [e.data for e in x.events[:count]] == list(range(count))
        assert [e.seq for e in x.events] == list(range(1, count + count // 2 + 1))
        assert [e.data for e in y.events] == list(range(0, count, 2))
        sent = zmq_of(a).frames_sent - before
        assert sent < count + count // 4, "a same-topic burst must be coalesced"
        assert zmq_of(a).events_coalesced > count // 2
        assert b.stats().lost == 0
        assert b.stats().decode_errors == 0


@pytest.mark.parametrize("codec", ["msgpack", "json"])
async def test_coalesced_frames_stay_within_what_receivers_accept(codec: str) -> None:
    """With max_frame_bytes=4096, a burst of 1 KiB events is packed three at a time at most:
    a batch over the receivers' limit would be dropped whole as an oversized frame."""
    url = tcp_url(f"?codec={codec}&max_frame_bytes=4096")
    count = 300
    async with nanomitter.connect(url) as a, nanomitter.connect(url) as b:
        recorder = Recorder()
        b.on("wide", recorder)
        await zmq_of(b).sync_interest()
        for n in range(count):
            await a.emit("wide", {"n": n, "pad": "x" * 1000})
        await recorder.wait(count)
        assert [e.data["n"] for e in recorder.events] == list(range(count))
        assert zmq_of(a).events_coalesced > 0  # the burst was packed, within the limit
        assert b.stats().decode_errors == 0
        with pytest.raises(nanomitter.EventTooLargeError, match="limit of 4096 bytes"):
            await a.emit("wide", "x" * 4096)


async def test_without_coalescing_each_event_is_one_frame() -> None:
    url = tcp_url("?batch=1")
    async with nanomitter.connect(url) as a, nanomitter.connect(url) as b:
        recorder = Recorder()
        b.on("one.by.one", recorder)
        await zmq_of(b).sync_interest()
        before = zmq_of(a).frames_sent
        for n in range(200):
            await a.emit("one.by.one", n)
        await recorder.wait(200)
        assert zmq_of(a).frames_sent - before == 200
        assert zmq_of(a).events_coalesced == 0


@pytest.mark.parametrize("codec", ["msgpack", "json"])
async def test_the_wire_is_topic_then_envelope(codec: str) -> None:
    """What a foreign SUB sees: frame 1 the topic, frame 2 one envelope or an array of them."""
    url = tcp_url(f"?codec={codec}")
    decode = msgspec.msgpack.decode if codec == "msgpack" else msgspec.json.decode
    async with nanomitter.connect(url) as a:
        endpoints = zmq_of(a).endpoints
        async with raw_socket(zmq.SUB, endpoints.subscribe) as sub:
            sub.subscribe(b"wire.")
            while True:  # the foreign subscriber's own slow-joiner wait
                await a.emit("wire.hello", {"x": 1})
                with anyio.move_on_after(0.1):
                    topic, envelope = await poll_recv(sub)
                    break
            assert topic == b"wire.hello"
            decoded = decode(envelope)
            assert list(decoded) == ["topic", "data", "fromLeader", "sender", "seq"]
            assert decoded["topic"] == "wire.hello"
            assert decoded["data"] == {"x": 1}
            assert decoded["sender"] == a.id
            await a.emit("other", 0)  # not subscribed: filtered by the hub
            for n in range(50):
                await a.emit("wire.burst", n)
            frames: list[Any] = []
            while sum(len(f) if isinstance(f, list) else 1 for f in frames) < 50:
                topic, envelope = await poll_recv(sub)
                if topic == b"wire.burst":
                    frames.append(decode(envelope))
            assert any(isinstance(f, list) for f in frames), "a burst arrives coalesced"
            flat = [e for f in frames for e in (f if isinstance(f, list) else [f])]
            assert [e["data"] for e in flat] == list(range(50))
            assert [e["seq"] for e in flat] == list(range(1, 51))


@pytest.mark.parametrize("codec", ["msgpack", "json"])
async def test_receivers_accept_single_envelopes_and_arrays(codec: str) -> None:
    url = tcp_url(f"?codec={codec}")
    wire = MsgpackCodec() if codec == "msgpack" else JsonCodec()
    async with nanomitter.connect(url) as a, nanomitter.connect(url) as b:
        recorder = Recorder()
        b.on("*", recorder)
        await zmq_of(b).sync_interest()
        events = [
            DistributedEvent(topic="arr.t", data=n, sender="foreign-peer", seq=n)
            for n in range(1, 4)
        ]
        await a.transport.send_raw(wire.encode_batch(events))
        await a.transport.send_raw(wire.encode(events[0]))
        got = await recorder.wait(4)
        assert [(e.topic, e.data) for e in got] == [("arr.t", n) for n in (1, 2, 3, 1)]


async def test_messages_with_the_wrong_number_of_frames_are_counted() -> None:
    url = tcp_url()
    problems = Recorder()
    async with (
        nanomitter.connect(url) as a,
        nanomitter.connect(url, on_error=problems) as b,
    ):
        recorder = Recorder()
        b.on("raw.>", recorder)
        await zmq_of(b).sync_interest()
        good = MsgpackCodec().encode(DistributedEvent(topic="raw.ok", data=1, sender="peer"))
        async with raw_socket(zmq.PUB, zmq_of(a).endpoints.publish) as pub:
            while not recorder.events:  # the foreign publisher's slow-joiner wait
                pub.send_multipart([b"raw.ok", good])
                with anyio.move_on_after(0.1):
                    await recorder.wait(1)
            pub.send(b"raw.one-frame")
            pub.send_multipart([b"raw.three", good, b"extra"])
            fence = MsgpackCodec().encode(DistributedEvent(topic="raw.fence", sender="peer"))
            pub.send_multipart([b"raw.fence", fence])
            await recorder.wait_until(lambda: any(e.topic == "raw.fence" for e in recorder.events))
        assert b.stats().decode_errors == 2
        reasons = [str(p) for p in problems.events]
        assert any("one-frame" in r for r in reasons)
        assert any("3-frame" in r for r in reasons)


async def test_oversized_frames_are_counted_and_traffic_continues() -> None:
    url = tcp_url("?max_frame_bytes=1000")
    async with nanomitter.connect(url) as a, nanomitter.connect(url) as b:
        recorder = Recorder()
        b.on("t", recorder)
        await zmq_of(b).sync_interest()
        await a.transport.send_raw(
            MsgpackCodec().encode(DistributedEvent(topic="t", data="x" * 2000))
        )
        await a.emit("t", "small")
        (event,) = await recorder.wait(1)
        assert event.data == "small"
        assert b.stats().decode_errors == 1


# ---------------------------------------------------------------- limits and failures


async def test_publisher_never_blocks_forever_and_counts_what_it_drops() -> None:
    """Hub gone, queue full: each emit waits at most send_timeout once, then drops and counts;
    after the hub returns, traffic resumes and the receiver counts the gap."""
    hub = HubProcess(tcp_url())
    await anyio.to_thread.run_sync(hub.start)
    try:
        options = "?role=node&batch=1&send_hwm=20&recv_hwm=20&hub_hwm=20&send_timeout_ms=200"
        url = hub.url + options
        problems = Recorder()
        async with (
            nanomitter.connect(url, on_error=problems) as a,
            nanomitter.connect(url) as b,
        ):
            recorder = Recorder()
            b.on("hwm.t", recorder)
            await zmq_of(b).sync_interest()
            await a.emit("hwm.t", 0)
            await recorder.wait(1)
            await anyio.to_thread.run_sync(hub.kill)
            started = time.monotonic()
            for n in range(1, 2001):
                await a.emit("hwm.t", n)
            assert time.monotonic() - started < 10
            dropped = a.stats().dropped
            assert dropped > 0
            assert zmq_of(a).statistics()["send_dropped"] == dropped
            overflows = [p for p in problems.events if isinstance(p, nanomitter.OverflowProblem)]
            assert len(overflows) == 1, "one report per congestion, not one per dropped event"
            await anyio.to_thread.run_sync(hub.start)
            with anyio.fail_after(20):
                while not any(e.data == "after" for e in recorder.events):
                    await a.emit("hwm.t", "after")
                    with anyio.move_on_after(0.1):
                        await recorder.wait(len(recorder.events) + 1)
            assert b.stats().lost >= dropped
    finally:
        hub.kill()


async def test_a_closing_hub_flushes_its_own_events_through_its_proxy() -> None:
    url = tcp_url()
    recorder = Recorder()
    async with nanomitter.connect(url) as hub, nanomitter.connect(url) as node:
        assert zmq_of(hub).is_hub
        node.on("bye", recorder)
        await zmq_of(node).sync_interest()
        for n in range(500):
            await hub.emit("bye", n)
        await hub.aclose()  # its events must pass its own proxy before the proxy stops
        events = await recorder.wait(500, timeout=10)
    assert [e.data for e in events] == list(range(500))


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the facade runs its own loop
def test_sync_facade_over_zmq(anyio_backend: str) -> None:
    url = tcp_url()
    with nanomitter.sync.connect(url) as a, nanomitter.sync.connect(url) as b:
        arrived = threading.Event()
        b.on("sync.t", lambda event: arrived.set())
        b.call(zmq_of(b.emitter).sync_interest)
        a.emit("sync.t", 1)
        assert arrived.wait(20)
