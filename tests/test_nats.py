"""The NATS transport against a real nats-server: interop with plain nats-py clients, the
header mapping, filtering on the server, bad messages, auth, TLS, reconnection, limits.

nats-py is asyncio-only; one test shows the clear error on trio.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import msgspec
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

import nanomitter
from nanomitter import (
    ConnectionStateChanged,
    DistributedEvent,
    FrameDecodeError,
    OverflowProblem,
    Problem,
)
from nanomitter.core.errors import UnsupportedBackendError
from nanomitter.transports.nats import NatsTransport, NoServersError, PayloadTooLargeError, Servers
from nanomitter.transports.nats_client import BusClient
from nanomitter.transports.registry import transport_from_url
from nats_support import NatsAuth, NatsServer, nats_server, subscriptions_in_force
from peers import Recorder
from tls_files import make_tls_files

__all__ = ["nats_server"]  # a fixture: imported so that pytest finds it

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def plain_client(url: str, **options: Any) -> AsyncIterator[Client]:
    """A nats-py client with no nanomitter in it: the foreign peer of the interop tests."""
    client = await nats.connect(url, allow_reconnect=False, **options)
    try:
        yield client
    finally:
        await client.close()


async def plain_messages(client: Client, subject: str) -> Recorder:
    recorder = Recorder()

    async def record(message: Msg) -> None:
        recorder(message)

    await client.subscribe(subject, cb=record)
    await subscriptions_in_force(client)
    return recorder


# ---------------------------------------------------------------------------- URLs


def test_server_lists_credentials_and_default_ports() -> None:
    servers = Servers.parse("nats", "alice:s%40cret@h1:4300,nats://h2,tls://h3:5000")
    assert servers.urls == ("nats://h1:4300", "nats://h2:4222", "tls://h3:5000")
    assert (servers.user, servers.password, servers.token) == ("alice", "s@cret", None)
    token = Servers.parse("tls", "t0ken@example.org")
    assert token.urls == ("tls://example.org:4222",)
    assert token.token == "t0ken"
    assert Servers.parse("nats", "").urls == ("nats://127.0.0.1:4222",)
    assert Servers.parse("nats", "[::1]:4300").urls == ("nats://[::1]:4300",)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nats://h1:http", "bad port"),
        ("nats://a:b@h1,c:d@h2", "same credentials"),
        ("nats://zmq+tcp://h1:4222", "each server is"),
        ("nats://h1?codec=xml", "codec='xml' is not one of"),
        ("nats://h1?prefix=a.*", "prefix"),
        ("nats://h1?tls_ca=/nonexistent/ca.pem", "no such file"),
        ("nats://h1?creds=/nonexistent/user.creds", "no such file"),
        ("nats://h1?hwm=5", "unknown option"),
    ],
)
def test_bad_urls_fail_at_the_call_site(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        nanomitter.connect(url)


def test_credentials_never_show() -> None:
    for url, secret in [
        ("nats://alice:hunter2@127.0.0.1:1,nats://alice:hunter2@h2:2", "hunter2"),
        ("tls://bob-token@h2:2?name=x", "bob-token"),
    ]:
        transport = transport_from_url(url)
        assert isinstance(transport, NatsTransport)
        shown = f"{transport.address} {transport.url} {transport.url!r}"
        assert secret not in shown
        assert "h2:2" in shown


def test_nats_py_internals_used_for_speed_are_still_there() -> None:
    """nats_client.py reaches into nats-py; fail loudly if a release moves those parts."""
    parameters = list(inspect.signature(Client._process_msg).parameters)
    assert parameters == ["self", "sid", "subject", "reply", "data", "headers"]
    client = BusClient()
    for name in ("_pending", "_pending_data_size", "_max_pending_size", "_sid", "_max_payload"):
        assert hasattr(client, name), name
    assert inspect.iscoroutinefunction(client._flush_pending)
    assert "_flush_queue" in vars(client)


# ---------------------------------------------------------------------------- interop


async def test_plain_nats_client_and_bus_understand_each_other(nats_server: NatsServer) -> None:
    async with (
        nanomitter.connect(nats_server.url) as bus,
        plain_client(nats_server.url) as plain,
    ):
        received = Recorder()
        bus.on("stockprice", received)
        await bus.listening()
        seen_by_plain = await plain_messages(plain, "stockprice")

        await plain.publish("stockprice", b'{"ticker":"AAPL","price":251.3}')
        [event] = await received.wait(1)
        assert event.data == {"ticker": "AAPL", "price": 251.3}
        assert (event.sender, event.seq) == ("", 0)  # a foreign, unnumbered sender

        await bus.emit("stockprice", {"ticker": "MSFT", "price": 420})
        await seen_by_plain.wait(2)  # its own publish (plain clients echo), then ours
        message = seen_by_plain.events[1]
        assert json.loads(message.data) == {"ticker": "MSFT", "price": 420}
        assert message.headers == {
            "Content-Type": "application/json",
            "Nanomitter-Sender": bus.id,
            "Nanomitter-Seq": "1",
        }


async def test_msgpack_nodes_and_json_nodes_share_a_bus(nats_server: NatsServer) -> None:
    async with (
        nanomitter.connect(nats_server.url + "?codec=msgpack") as packer,
        nanomitter.connect(nats_server.url) as jsoner,
        plain_client(nats_server.url) as plain,
    ):
        received = Recorder()
        jsoner.on("mixed", received)
        await jsoner.listening()
        raw = await plain_messages(plain, "mixed")
        await packer.emit("mixed", {"blob": b"\x00\x01", "n": 1})
        [event] = await received.wait(1)
        assert event.data == {"blob": b"\x00\x01", "n": 1}  # the Content-Type chose msgpack
        [message] = await raw.wait(1)
        assert message.headers is not None
        assert message.headers["Content-Type"] == "application/msgpack"
        assert msgspec.msgpack.decode(message.data) == {"blob": b"\x00\x01", "n": 1}
        with pytest.raises(TypeError, match="not serialisable by the json codec"):
            await jsoner.emit("mixed", {"when": object()})


async def test_prefix_is_a_namespace(nats_server: NatsServer) -> None:
    async with (
        nanomitter.connect(nats_server.url + "?prefix=prod.shop") as bus,
        nanomitter.connect(nats_server.url) as outside,
        plain_client(nats_server.url) as plain,
    ):
        inside, everything = Recorder(), Recorder()
        bus.on("*", inside)
        outside.on("*", everything)
        await bus.listening()
        await outside.listening()
        raw = await plain_messages(plain, "prod.shop.>")
        await plain.publish("order.created", b"1")  # outside the namespace
        await plain.publish("prod.shop.order.created", b"2")
        await bus.emit("order.paid", 3)
        await inside.wait(2)
        assert sorted((e.topic, e.data) for e in inside.events) == [
            ("order.created", 2),  # from the plain client, inside the namespace
            ("order.paid", 3),  # its own, delivered by emit
        ]
        await raw.wait(2)
        assert sorted(m.subject for m in raw.events) == [
            "prod.shop.order.created",
            "prod.shop.order.paid",
        ]
        await everything.wait_until(lambda: len(everything.events) >= 3)
        topics = sorted(e.topic for e in everything.events)
        assert topics == ["order.created", "prod.shop.order.created", "prod.shop.order.paid"]


# ---------------------------------------------------------------------------- filtering


async def server_subscriptions(server: NatsServer) -> int:
    def read() -> int:
        return int(server._monitor("subsz")["num_subscriptions"])

    return await anyio.to_thread.run_sync(read)


async def test_one_subscription_per_pattern_and_each_event_once(nats_server: NatsServer) -> None:
    async with (
        nanomitter.connect(nats_server.url) as bus,
        nanomitter.connect(nats_server.url) as sender,
    ):
        baseline = await server_subscriptions(nats_server)
        calls: list[tuple[str, str]] = []
        first = bus.on("stock.>", lambda e: calls.append(("stock.>", e.topic)))
        bus.on("stock.>", lambda e: calls.append(("stock.> again", e.topic)))
        bus.on("*.AAPL", lambda e: calls.append(("*.AAPL", e.topic)))
        bus.on("*", lambda e: calls.append(("*", e.topic)))
        await bus.listening()
        assert await server_subscriptions(nats_server) == baseline + 3
        assert bus.transport.statistics()["subscriptions"] == 4  # and "<3", for presence

        done = Recorder()
        bus.on("done", done)
        await bus.listening()
        await sender.emit("stock.AAPL", 1)  # matches three subscriptions on the server
        await sender.emit("news", 2)
        await sender.emit("done", None)
        await done.wait(1)
        assert calls == [
            ("stock.>", "stock.AAPL"),
            ("stock.> again", "stock.AAPL"),
            ("*.AAPL", "stock.AAPL"),
            ("*", "stock.AAPL"),
            ("*", "news"),
            ("*", "done"),
        ]
        assert bus.stats().received == 3
        assert bus.transport.statistics()["duplicates_skipped"] == 3  # "*.AAPL", 2x ">"

        bus.off("stock.>", first)
        await bus.listening()
        assert await server_subscriptions(nats_server) == baseline + 4  # "stock.>" still used
        bus.remove_all_listeners("stock.>")
        bus.remove_all_listeners("*")
        await bus.listening()
        assert await server_subscriptions(nats_server) == baseline + 2  # "*.AAPL", "done"


async def test_the_server_does_not_echo_and_the_core_does(nats_server: NatsServer) -> None:
    async with nanomitter.connect(nats_server.url) as bus:
        mine = Recorder()
        bus.on("*", mine)
        await bus.listening()
        for n in range(5):
            await bus.emit("self.talk", n)
        assert mine.data == [0, 1, 2, 3, 4]  # delivered inline by emit (echo=True)
        await bus.transport.client.flush()  # type: ignore[attr-defined]
        assert bus.stats().own_echoes == 0  # no_echo: nothing came back from the server
        assert bus.transport.statistics()["received"] == 0


# ---------------------------------------------------------------------------- bad input


async def test_bad_messages_are_counted_and_reported(nats_server: NatsServer) -> None:
    problems: list[Problem] = []
    async with (
        nanomitter.connect(nats_server.url, on_error=problems.append) as bus,
        plain_client(nats_server.url) as plain,
    ):
        received = Recorder()
        bus.on("bad.>", received)
        await bus.listening()
        json_type = {"Content-Type": "application/json"}
        bad: list[tuple[bytes, dict[str, str] | None]] = [
            (b"not json", None),
            (b"{truncated", json_type),
            (b"", json_type),  # declared JSON, but empty
            (b"1", {"Nanomitter-Seq": "seven"}),
            (b"1", {"Content-Type": "text/csv"}),
            (b"\xc1", {"Content-Type": "application/msgpack"}),
        ]
        for body, headers in bad:
            await plain.publish("bad.frame", body, headers=headers)
        await plain.publish("bad.empty", b"")  # no headers, no body: data None
        await plain.publish("bad.ok", b'{"fine": true}', headers={"Nanomitter-Seq": "3"})
        await received.wait(2)
        assert [(e.topic, e.data) for e in received.events] == [
            ("bad.empty", None),
            ("bad.ok", {"fine": True}),
        ]
        assert bus.stats().decode_errors == len(bad)
        reasons = [p.reason for p in problems if isinstance(p, FrameDecodeError)]
        assert len(reasons) == len(bad)
        assert "unsupported Content-Type 'text/csv'" in reasons[4]
        assert "Nanomitter-Seq 'seven'" in reasons[3]


async def test_payload_over_max_payload_raises_at_emit(tmp_path: Path) -> None:
    server = NatsServer(tmp_path, max_payload=4096)
    server.start()
    try:
        async with nanomitter.connect(server.url) as bus:
            await bus.emit("small", "x" * 1000)
            with pytest.raises(PayloadTooLargeError, match=r"limit of 4096 bytes.*max_payload"):
                await bus.emit("big", "x" * 5000)
            assert bus.stats().emitted == 1
    finally:
        server.kill()


async def test_trio_gets_a_clear_error_at_connect(nats_server: NatsServer) -> None:
    async def main() -> None:
        async with nanomitter.connect(nats_server.url):
            pass

    def run_on_trio() -> None:
        anyio.run(main, backend="trio")

    with pytest.raises(UnsupportedBackendError, match="asyncio only"):
        await anyio.to_thread.run_sync(run_on_trio)


async def test_no_server_is_a_clear_error(tmp_path: Path) -> None:
    server = NatsServer(tmp_path)  # never started: its port is free
    with pytest.raises(NoServersError, match="cannot reach a NATS server") as caught:
        async with nanomitter.connect(f"nats://u:pw123@127.0.0.1:{server.port}?connect_timeout=1"):
            pass
    assert "pw123" not in str(caught.value)


# ---------------------------------------------------------------------------- auth and TLS


@pytest.mark.parametrize("kind", ["user", "token"])
async def test_credentials_in_the_url(tmp_path: Path, kind: str) -> None:
    auth = NatsAuth(user="app", password="s3cret") if kind == "user" else NatsAuth(token="t0k3n")
    server = NatsServer(tmp_path, auth=auth)
    server.start()
    good = "app:s3cret" if kind == "user" else "t0k3n"
    wrong = "app:nope" if kind == "user" else "n0pe"
    base = server.url.removeprefix("nats://")
    try:
        async with (
            nanomitter.connect(f"nats://{good}@{base}") as a,
            nanomitter.connect(f"nats://{good}@{base}") as b,
        ):
            received = Recorder()
            b.on("secure", received)
            await b.listening()
            await a.emit("secure", 1)
            await received.wait(1)
        for credentials in (wrong, None):
            url = f"nats://{credentials}@{base}" if credentials else server.url
            with pytest.raises(NoServersError, match="refused") as caught:
                async with nanomitter.connect(url + "?connect_timeout=5"):
                    pass
            assert "nope" not in str(caught.value)
            assert "n0pe" not in str(caught.value)
    finally:
        server.kill()


async def test_nkey_seed_file(tmp_path: Path) -> None:
    import nkeys

    def new_user() -> tuple[str, bytes]:
        seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
        return nkeys.from_seed(bytearray(seed)).public_key.decode(), seed

    public, seed = new_user()
    _, stranger = new_user()
    server = NatsServer(tmp_path, auth=NatsAuth(nkey=public))
    server.start()
    (tmp_path / "user.nk").write_bytes(seed)
    (tmp_path / "stranger.nk").write_bytes(stranger)
    try:
        async with nanomitter.connect(f"{server.url}?nkey={tmp_path / 'user.nk'}") as bus:
            received = Recorder()
            bus.on("signed", received)
            await bus.listening()
            async with nanomitter.connect(f"{server.url}?nkey={tmp_path / 'user.nk'}") as other:
                await other.emit("signed", 1)
            await received.wait(1)
        with pytest.raises(NoServersError, match="refused"):
            async with nanomitter.connect(f"{server.url}?nkey={tmp_path / 'stranger.nk'}"):
                pass
    finally:
        server.kill()


async def test_tls_with_a_private_ca(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path / "tls", "nats")
    server = NatsServer(tmp_path, tls=files, verify_clients=True)
    server.start()
    query = f"tls_ca={files.ca}&tls_cert={files.cert}&tls_key={files.key}"
    try:
        async with (
            nanomitter.connect(f"{server.url}?{query}") as a,
            nanomitter.connect(f"{server.url}?{query}") as b,
        ):
            received = Recorder()
            b.on("private", received)
            await b.listening()
            await a.emit("private", {"n": 1})
            await received.wait(1)
        with pytest.raises(NoServersError):  # the system CAs do not trust our test CA
            async with nanomitter.connect(f"{server.url}?connect_timeout=2"):
                pass
        with pytest.raises(NoServersError):  # the server wants a client certificate
            async with nanomitter.connect(f"{server.url}?tls_ca={files.ca}&connect_timeout=2"):
                pass
    except ssl.SSLError as exc:  # pragma: no cover - a clear failure instead of a hang
        pytest.fail(f"TLS failed: {exc}")
    finally:
        server.kill()


# ---------------------------------------------------------------------------- reconnection


async def test_reconnection_is_reported_and_keeps_subscriptions(nats_server: NatsServer) -> None:
    problems = Recorder()
    url = nats_server.url + "?reconnect_ms=100"
    async with (
        nanomitter.connect(url, on_error=problems) as receiver,
        nanomitter.connect(url) as sender,
    ):
        received = Recorder()
        receiver.on("after.restart", received)
        await receiver.listening()
        await anyio.to_thread.run_sync(nats_server.kill)
        await problems.wait_until(
            lambda: any(getattr(p, "state", "") == "disconnected" for p in problems.events)
        )
        await anyio.to_thread.run_sync(nats_server.restart)
        await problems.wait_until(
            lambda: any(getattr(p, "state", "") == "reconnected" for p in problems.events)
        )
        states = [p.state for p in problems.events if isinstance(p, ConnectionStateChanged)]
        assert states[:2] == ["disconnected", "reconnected"]
        with anyio.fail_after(20):
            while not received.events:  # the sender may still be reconnecting: repeat
                await sender.emit("after.restart", 1)
                with anyio.move_on_after(0.1):
                    await received.wait(1)
        assert receiver.transport.statistics()["reconnects"] >= 1


async def test_a_server_that_stops_answering_while_opening_is_a_clear_error() -> None:
    """A fake (no real server behaves so): INFO, one PONG for nats-py's connect, then
    silence. open() must raise NoServersError, not nats-py's FlushTimeoutError."""
    info = (
        b'INFO {"server_id":"x","version":"2.10.0","proto":1,"headers":true,"max_payload":1048576}'
    )

    async def serve(stream: anyio.abc.SocketStream) -> None:
        await stream.send(info + b"\r\n")
        seen, ponged = b"", False
        with suppress(anyio.EndOfStream, anyio.BrokenResourceError):
            while True:
                seen += await stream.receive()
                if not ponged and b"PING\r\n" in seen:
                    await stream.send(b"PONG\r\n")
                    ponged = True

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        with pytest.raises(NoServersError, match="accepted the connection but did not answer"):
            async with nanomitter.connect(f"nats://127.0.0.1:{port}?connect_timeout=1"):
                pass
        tg.cancel_scope.cancel()


async def test_max_reconnects_zero_means_never(nats_server: NatsServer) -> None:
    """nats-py takes 0 attempts for "forever"; ours means what it says."""
    problems = Recorder()
    async with nanomitter.connect(f"{nats_server.url}?max_reconnects=0", on_error=problems):
        await anyio.to_thread.run_sync(nats_server.kill)
        await problems.wait_until(
            lambda: any(
                isinstance(p, ConnectionStateChanged) and p.state == "closed"
                for p in problems.events
            )
        )
    states = [p.state for p in problems.events if isinstance(p, ConnectionStateChanged)]
    assert "reconnected" not in states


async def test_buffer_while_disconnected_is_bounded_and_counted(nats_server: NatsServer) -> None:
    problems = Recorder()
    url = nats_server.url + "?buffer=2000&reconnect_ms=60000"
    async with nanomitter.connect(url, on_error=problems) as bus:
        await anyio.to_thread.run_sync(nats_server.kill)
        await problems.wait_until(
            lambda: any(isinstance(p, ConnectionStateChanged) for p in problems.events)
        )
        for n in range(100):
            await bus.emit("offline", {"n": n, "pad": "x" * 40})
        dropped = bus.stats().dropped
        assert 0 < dropped < 100  # some fit the 2000-byte buffer, the rest were counted
        assert bus.transport.statistics()["send_dropped"] == dropped
        overflows = [p for p in problems.events if isinstance(p, OverflowProblem)]
        assert len(overflows) == 1  # reported once per episode, not per event
        assert "?buffer=" in str(overflows[0])
    # closing while disconnected: the buffered ones too, and the bye (it tells the last numbers)
    assert bus.stats().dropped == 100 + 1


def test_default_log_shows_connection_changes(caplog: pytest.LogCaptureFixture) -> None:
    """The default error hook logs a ConnectionStateChanged as a warning line."""
    from nanomitter.core.report import LogProblems

    caplog.set_level(logging.WARNING, logger="nanomitter")
    log = LogProblems()
    log(ConnectionStateChanged("disconnected", "nats://127.0.0.1:1"))
    log(ConnectionStateChanged("reconnected", "nats://127.0.0.1:2"))
    assert "lost the connection to nats://127.0.0.1:1" in caplog.text
    assert "reconnected to nats://127.0.0.1:2" in caplog.text


async def test_wire_example_in_the_docs_is_what_we_send(nats_server: NatsServer) -> None:
    docs = (Path(__file__).parent.parent / "docs" / "wire.md").read_text()
    example = docs.split("## NATS", 1)[1].split("```", 2)[1]
    expected = "".join(line.removesuffix("\\r\\n") + "\r\n" for line in example.splitlines()[1:])
    async with nanomitter.connect(nats_server.url) as bus:
        transport = bus.transport
        assert isinstance(transport, NatsTransport)
        event = DistributedEvent(
            topic="stock.AAPL", data={"price": 1}, sender="V1StGXR8_Z5jdHi6B-myT", seq=7
        )
        assert transport._command(event).decode() == expected


def test_sync_facade_on_nats(nats_server: NatsServer) -> None:
    """Blocking code uses NATS through nanomitter.sync (its loop is asyncio)."""
    url = nats_server.url + "?prefix=sync"
    with nanomitter.sync.connect(url) as a, nanomitter.sync.connect(url) as b:
        b.on("ping", lambda event: None)
        b.listening()
        with b.subscribe("ping") as events:
            a.emit("ping", {"n": 1})
            assert next(iter(events)).data == {"n": 1}


async def test_the_client_still_serves_nats_py_requests(nats_server: NatsServer) -> None:
    """Messages of subscriptions that are not the bus's take nats-py's own path."""
    async with (
        nanomitter.connect(nats_server.url) as bus,
        plain_client(nats_server.url) as plain,
    ):
        bus.on("*", lambda event: None)  # a ">" subscription sees the inbox reply too
        await bus.listening()

        async def answer(message: Msg) -> None:
            await message.respond(message.data.upper())

        await plain.subscribe("svc.upper", cb=answer)
        await subscriptions_in_force(plain)
        client = bus.transport.client  # type: ignore[attr-defined]
        reply = await client.request("svc.upper", b"hi", timeout=10)
        assert reply.data == b"HI"
        assert bus.transport.statistics()["plumbing_skipped"] >= 1  # the _INBOX reply
