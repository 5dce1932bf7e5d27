"""The nng bus transport: roles, the reflector, real nng/nanomsg peers, limits."""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

import anyio
import msgspec
import pynng
import pytest

import nanomitter
from nanomitter import DistributedEvent, DistributedEventEmitter
from nanomitter.core.codecs import MsgpackCodec
from nanomitter.core.context import TransportContext
from nanomitter.core.stats import Counters
from nanomitter.transports import nng_lowlevel, transport_from_url
from nanomitter.transports.nng import NngTransport, NoHubError
from peers import Recorder, free_port, require_binary, running
from wire_vectors import vector_frame

pytestmark = pytest.mark.anyio
_ids = itertools.count()


def tcp_url(options: str = "") -> str:
    return f"tcp://127.0.0.1:{free_port()}{options}"


def nng_of(bus: DistributedEventEmitter) -> NngTransport:
    assert isinstance(bus.transport, NngTransport)
    return bus.transport


def test_pynng_still_exposes_the_raw_socket_api() -> None:
    """The hub relies on pynng internals; a pynng upgrade that drops them must fail here."""
    assert nng_lowlevel.raw_api_available(), (
        "pynng no longer exposes nng_bus0_open_raw/nng_device: the nng hub cannot work"
    )
    reflector = nng_lowlevel.Reflector(
        [f"inproc://reflector-{next(_ids)}"], recv_max_size=1024, buffer_size=8
    )
    try:
        assert reflector.socket.raw is True
    finally:
        reflector.close()


async def test_the_dialers_failure_counters_are_readable() -> None:
    """A TLS member is told at once that its handshake failed only through nng's statistics
    (pynng internals too): a dial to a closed port must show up in them."""
    socket = pynng.Bus0(reconnect_time_min=10)
    try:
        dialer = socket.dial(f"tcp://127.0.0.1:{free_port()}", block=False)
        with anyio.fail_after(10):
            while not nng_lowlevel.dialer_errors(dialer).get("refused", 0):  # noqa: ASYNC110
                await anyio.sleep(0.01)  # nng has no awaitable for its dialer's counters
    finally:
        socket.close()


async def test_auto_role_binds_first_then_connects() -> None:
    url = tcp_url()
    async with nanomitter.connect(url) as hub, nanomitter.connect(url) as node:
        assert nng_of(hub).is_hub
        assert not nng_of(node).is_hub
        recorder = Recorder()
        hub.on("t", recorder)
        await node.emit("t", 1)
        await recorder.wait(1)
        assert nng_of(hub).statistics()["hub_peers"] == 2  # node + the hub's own member


async def test_hub_sends_nothing_back_to_the_origin() -> None:
    url = tcp_url()
    async with (
        nanomitter.connect(url) as hub,
        nanomitter.connect(url) as a,
        nanomitter.connect(url) as b,
    ):
        recorder = Recorder()
        b.on("t", recorder)
        for n in range(20):
            await a.emit("t", n)
        await recorder.wait(20)
        fence, hub_fence = Recorder(), Recorder()
        a.on("fence", fence)
        hub.on("fence", hub_fence)
        await b.emit("fence")
        await fence.wait(1)
        await hub_fence.wait(1)  # the hub's member is a peer like a: wait for it too
        assert a.stats().own_echoes == 0
        assert hub.stats().received == 21  # a's 20 and b's fence, each once


async def test_role_hub_on_a_taken_address_is_a_clear_error() -> None:
    url = tcp_url()
    async with nanomitter.connect(url):
        with pytest.raises(nanomitter.NanomitterError, match="address is in use"):
            async with nanomitter.connect(url, role="hub"):
                pass


async def test_role_node_without_a_hub_says_so() -> None:
    with pytest.raises(NoHubError, match="no hub answered"):
        async with nanomitter.connect(tcp_url(), role="node", connect_timeout=0.3):
            pass


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ("?role=leader", "role='leader' is not one of auto, hub, node"),
        ("?tls_ca=x.pem", "tls_* options need a tls+tcp:// URL"),
        ("?hwm=5", "unknown option(s) 'hwm'"),
    ],
)
def test_bad_options(options: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        nanomitter.connect(tcp_url(options))


async def test_oversized_frames_are_counted_and_traffic_continues() -> None:
    url = tcp_url("?max_frame_bytes=1000")
    async with nanomitter.connect(url) as hub, nanomitter.connect(url) as node:
        recorder = Recorder()
        hub.on("t", recorder)
        await node.transport.send_raw(
            MsgpackCodec().encode(DistributedEvent(topic="t", data="x" * 2000))
        )
        await node.emit("t", "small")
        (event,) = await recorder.wait(1)
        assert event.data == "small"
        assert hub.stats().decode_errors == 1


@pytest.mark.parametrize("scheme", ["ipc", "inproc", "ws"])
async def test_other_nng_schemes(scheme: str, tmp_path: Path) -> None:
    address = {
        "ipc": f"ipc://{tmp_path}/bus.sock",
        "inproc": f"inproc://nanomitter-test-{next(_ids)}",
        "ws": f"ws://127.0.0.1:{free_port()}/bus",
    }[scheme]
    async with nanomitter.connect(address) as a, nanomitter.connect(address) as b:
        recorder = Recorder()
        b.on("x.>", recorder)
        await a.emit("x.y", {"scheme": scheme})
        (event,) = await recorder.wait(1)
        assert event.data == {"scheme": scheme}


# ---------------------------------------------------------------- real peers on the wire


def quoted_hex_frames(lines: list[str]) -> list[bytes]:
    """Frames printed by `nngcat --hex` / `nanocat --hex`: "\\x85\\xa5..." one per line."""
    frames = []
    for line in lines:
        pairs = re.findall(r"\\x([0-9a-fA-F]{2})", line)
        if pairs:
            frames.append(bytes(int(p, 16) for p in pairs))
    return frames


PEERS = {  # command, Debian package, --interval (nngcat takes whole seconds only)
    "nngcat": (["nngcat", "--bus0", "--dial"], "nng-utils", "1"),
    "nanocat": (["nanocat", "--bus", "--connect"], "nanomsg-utils", "0.1"),
}


@pytest.mark.parametrize("peer", sorted(PEERS))
async def test_real_peer_joins_our_hub(peer: str, tmp_path: Path) -> None:
    """An nng/nanomsg BUS peer sends the original's frames and garbage, and reads ours."""
    command, package, interval = PEERS[peer]
    require_binary(command[0], package)
    original = tmp_path / "original.bin"
    original.write_bytes(vector_frame("nanomitter-stockprice"))
    url = tcp_url()
    problems = Recorder()
    async with nanomitter.connect(url, on_error=problems) as hub:
        prices = Recorder()
        everything = Recorder()
        hub.on("stockprice", prices)
        hub.on("*", everything)
        args = [*command, url, "--hex", "--file", str(original), "--interval", interval]
        async with running(args) as (_, output):
            (first,) = (await prices.wait(1))[:1]
            assert first.data == {"ticker": "AAPL", "price": 250.5, "n": 1}
            assert first.sender == "DwmXLpYYeYfV4mwVQKr6O"
            await hub.emit("from.python", {"x": 1})
            line = await output.wait_for(lambda text: "\\x" in text)
            frame = quoted_hex_frames([line])[0]
            decoded = msgspec.msgpack.decode(frame)
            assert list(decoded)[:4] == ["topic", "data", "fromLeader", "sender"]
            assert (decoded["topic"], decoded["data"]) == ("from.python", {"x": 1})
        garbage = tmp_path / "garbage.bin"
        garbage.write_bytes(b"\xc1 this is not msgpack")
        args = [*command, url, "--file", str(garbage), "--interval", interval]
        async with running(args):
            await problems.wait(2)
            assert all(isinstance(p, nanomitter.FrameDecodeError) for p in problems.events)
            assert hub.stats().decode_errors >= 2
            before = len(prices.events)
            async with running([*command, url, "--file", str(original), "--interval", interval]):
                await prices.wait(before + 2)
        assert hub.stats().listener_errors == 0


async def test_original_heartbeats_reach_star_and_heart_listeners_only(tmp_path: Path) -> None:
    require_binary("nngcat", "nng-utils")
    heartbeat = tmp_path / "heartbeat.bin"
    heartbeat.write_bytes(vector_frame("nanomitter-heartbeat"))
    url = tcp_url()
    async with nanomitter.connect(url) as hub:
        everything, hearts, prices = Recorder(), Recorder(), Recorder()
        hub.on("*", everything)
        hub.on("<3", hearts)
        hub.on("stockprice", prices)
        args = ["nngcat", "--bus0", "--dial", url, "--file", str(heartbeat), "--interval", "1"]
        async with running(args):
            (beat,) = (await hearts.wait(1))[:1]
        assert beat.data == {"service": "master"}
        assert beat.from_leader is True
        assert everything.events[0].topic == "<3"
        assert prices.events == []
        assert hub.stats().decode_errors == 0


async def test_service_sends_the_original_heartbeat(tmp_path: Path) -> None:
    """`service=` makes an emitter send `<3` {service} like the original; nngcat reads it."""
    require_binary("nngcat", "nng-utils")
    url = tcp_url()
    async with nanomitter.connect(url) as hub:
        hearts = Recorder()
        hub.on("<3", hearts)
        async with (
            running(["nngcat", "--bus0", "--dial", url, "--hex"]) as (_, output),
            nanomitter.connect(url, service="pricer", heartbeat_interval=0.2) as node,
        ):
            beats = await hearts.wait(2)
            # the original's {service}, plus what presence uses (extra keys are fine for it)
            assert all(b.data["service"] == "pricer" for b in beats)
            assert beats[0].data["interval"] == 0.2
            assert beats[0].data["pid"] == os.getpid()
            assert [b.seq for b in beats[:2]] == [1, 2]

            def is_heartbeat(text: str) -> bool:
                frames = quoted_hex_frames([text])
                return bool(frames) and msgspec.msgpack.decode(frames[0])["topic"] == "<3"

            line = await output.wait_for(is_heartbeat)
            decoded = msgspec.msgpack.decode(quoted_hex_frames([line])[0])
            assert decoded["data"]["service"] == "pricer"
            assert node.stats().emitted == 0  # heartbeats are not the user's events


async def test_cancelling_a_receive_with_an_anyio_timeout_is_clean() -> None:
    """A timeout around the fd wait cancels it cleanly; the socket keeps working."""
    url = tcp_url()
    async with nanomitter.connect(url) as hub:
        transport = transport_from_url(url)
        problems: list[object] = []
        await transport.open(TransportContext("bare", "", Counters(), problems.append))
        try:
            for _ in range(3):
                with anyio.move_on_after(0.05) as scope:
                    await transport.receive()  # nothing to read: parked on the fd
                assert scope.cancelled_caught
            await hub.emit("after", 1)
            with anyio.fail_after(20):
                (event,) = await transport.receive()
            assert (event.topic, event.data) == ("after", 1)
        finally:
            await transport.aclose()
        assert problems == []


def test_sync_facade_over_nng() -> None:
    url = tcp_url()
    with (
        nanomitter.sync.connect(url) as hub,
        nanomitter.sync.connect(url) as node,
        node.subscribe("x.>") as events,
    ):
        hub.emit("x.y", {"n": 1})
        assert next(events).data == {"n": 1}


async def test_members_joining_at_once_each_get_their_own_welcome(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A welcome for another joiner's nonce must not end (or spoil) this member's join."""
    url = tcp_url()
    joined: list[Recorder] = []
    all_joined = anyio.Event()

    async def member() -> None:
        async with nanomitter.connect(url, role="node") as bus:
            recorder = Recorder()
            bus.on("hello", recorder)
            joined.append(recorder)
            if len(joined) == 4:
                all_joined.set()
            await recorder.wait(1)  # the hub's single emit reaches every joiner

    async with nanomitter.connect(url) as hub:
        with caplog.at_level("WARNING", logger="nanomitter.nng"):
            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(member)
                with anyio.fail_after(20):
                    await all_joined.wait()
                await hub.emit("hello", 1)
    assert "did not answer the join handshake" not in caplog.text


def test_a_welcome_for_another_nonce_is_not_ours() -> None:
    transport = transport_from_url(tcp_url())
    assert isinstance(transport, NngTransport)
    transport._join_nonce = "mine"
    transport._control(DistributedEvent(topic="$nanomitter.welcome", data={"nonce": "theirs"}))
    assert transport._joined_nonce is None
    transport._control(DistributedEvent(topic="$nanomitter.welcome", data={"nonce": "mine"}))
    assert transport._joined_nonce == "mine"
    transport._control(DistributedEvent(topic="$nanomitter.welcome", data={"nonce": "theirs"}))
    assert transport._joined_nonce == "mine"  # a later foreign welcome does not undo it
