"""Security (issue 8): intruders without credentials, secrets that never show, and nothing
from the wire ever executed. docs/security.md is the threat model these tests prove.

1. An intruder without credentials (or with wrong ones) on ZeroMQ CURVE, nng TLS, NATS TLS
   and NATS user/password, token and nkey: a nanomitter emitter, the transport's own client
   library used raw (pyzmq, pynng, nats-py), and for NATS a hand-written TCP client. Its
   events never reach the members, it reads nothing while their traffic flows, and its side
   is told why (or, where libzmq fails silently by design, gets nothing within a bound).
   Proved with fences: the members' own marker, sent once the intruder's attempt has
   demonstrably failed, arrives and nothing of the intruder's came before it.
2. Secrets (passwords, tokens, nkey seeds, creds files, TLS keys, CURVE secret keys, in the
   URL and in option files) set to recognisable sentinels never appear in logs (DEBUG,
   every logger), reprs, stats, errors, problems reported to the error hook, or the CLI.
3. A static scan of src/nanomitter for unpickling, eval, dynamic imports and the like (what
   is there is allow-listed with the reason), and a dynamic test: pickles and msgpack
   extension types on the wire are data or rejected and counted, never executed.

Figures (how each intruder was refused, how long it took) are printed (pytest -s) and kept
in ``$TMPDIR/nanomitter-security-results.json`` for docs/security.md and docs/reliability.md.
"""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import os
import pickle
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import anyio.abc
import anyio.to_thread
import msgspec
import nats
import nats.errors
import pynng
import pytest
import zmq
from anyio.abc import SocketAttribute
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

import nanomitter
from nanomitter import ConnectionStateChanged, DistributedEvent, OverflowProblem, Problem
from nanomitter.core.codecs import MsgpackCodec
from nanomitter.core.report import LogProblems
from nanomitter.transports.nats import NatsTransport, NoServersError
from nanomitter.transports.nng import NoHubError as NngNoHubError
from nanomitter.transports.registry import transport_from_url
from nanomitter.transports.zmq import NoHubError as ZmqNoHubError
from nanomitter.transports.zmq import ZmqTransport
from nats_support import NatsAuth, NatsServer
from peers import Output, Recorder, free_port, running
from tls_files import TlsFiles, make_tls_files
from zmq_support import tcp_url, zmq_of

pytestmark = pytest.mark.anyio
ASYNCIO_ONLY = pytest.mark.parametrize("anyio_backend", ["asyncio"])
"""nats-py runs on asyncio only (and the CLI runs there too)."""

RESULTS = Path(tempfile.gettempdir()) / "nanomitter-security-results.json"
SRC = Path(nanomitter.__file__).resolve().parent
CLI = [sys.executable, "-m", "nanomitter.cli"]
DEADLINE = 30.0
"""Generous bound on anything that must not hang (2 shared, noisy cores)."""
INTRUDER_TIMEOUT = 0.5
"""connect_timeout of nanomitter intruders on nng and ZeroMQ: they are meant to fail."""
EVIL = "forged by an intruder"
SENTINEL = "S3NT1NEL"
"""In every secret below: one search finds them all."""
PASSWORD = "p@ss-S3NT1NEL"  # "@" is percent-encoded in URLs: both forms hold the sentinel
TOKEN = "tok-S3NT1NEL"
WRONG = "wrong-S3NT1NEL"


def record(name: str, **figures: object) -> None:
    """Print a result row and keep it in the results file (one JSON object, rows by name)."""
    try:
        rows = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        rows = {}
    rows[name] = figures
    RESULTS.write_text(json.dumps(rows, indent=2, sort_keys=True, default=str))
    print(f"\n[security] {name}: {json.dumps(figures, sort_keys=True, default=str)}")


def url_password(password: str = PASSWORD) -> str:
    return quote(password, safe="")


@contextmanager
def nats_running(directory: Path, **settings: Any) -> Iterator[NatsServer]:
    server = NatsServer(directory, **settings)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def host_port(server: NatsServer) -> str:
    return server.url.split("://", 1)[1]


# ================================================================ 1. intruders


@dataclass
class Refusal:
    """How a nanomitter intruder was turned away."""

    error: str
    message: str
    seconds: float


async def joined(url: str) -> None:
    """Join the bus at ``url`` and leave at once; raises what joining raises (bounded)."""
    with anyio.fail_after(DEADLINE):
        async with nanomitter.connect(url):
            pass


async def refused(url: str, expected: type[BaseException]) -> Refusal:
    """Try to join ``url``: it must fail with ``expected`` within DEADLINE, not hang."""
    start = time.monotonic()
    with pytest.raises(expected) as caught:
        await joined(url)  # joining raises nothing: pytest.raises fails the test
    seconds = round(time.monotonic() - start, 2)
    return Refusal(type(caught.value).__name__, str(caught.value), seconds)


async def all_refused(
    attempts: Mapping[str, str], expected: type[BaseException], *, connect_timeout: float
) -> dict[str, Refusal]:
    """Every intruder URL tries at once, with ``connect_timeout`` added to its options."""
    results: dict[str, Refusal] = {}

    async def one(name: str, url: str) -> None:
        joiner = "&" if "?" in url else "?"
        results[name] = await refused(f"{url}{joiner}connect_timeout={connect_timeout}", expected)

    async with anyio.create_task_group() as group:
        for name, url in attempts.items():
            group.start_soon(one, name, url)
    return results


class Traffic:
    """The members' own stream during an intruder's attempt (see :func:`legit_traffic`)."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.stopping = anyio.Event()
        self.stopped = anyio.Event()

    async def stop(self) -> None:
        """Stop emitting; returns once the last event has been emitted."""
        self.stopping.set()
        await self.stopped.wait()


@asynccontextmanager
async def legit_traffic(sender: nanomitter.DistributedEventEmitter) -> AsyncIterator[Traffic]:
    """``sender`` emits ``sec.flow`` {"n": k} every few milliseconds until stopped (a pace,
    not a synchronisation)."""
    traffic = Traffic()

    async def stream() -> None:
        try:
            n = 0
            while not traffic.stopping.is_set():
                n += 1
                await sender.emit("sec.flow", {"n": n})
                traffic.sent.append(n)
                with anyio.move_on_after(0.005):
                    await traffic.stopping.wait()
        finally:
            traffic.stopped.set()

    async with anyio.create_task_group() as group:
        group.start_soon(stream)
        try:
            yield traffic
        finally:
            traffic.stopping.set()


def has_topic(recorder: Recorder, topic: str) -> Callable[[], bool]:
    return lambda: any(event.topic == topic for event in recorder.events)


async def flowing(recorder: Recorder, more: int = 3) -> None:
    """Return once ``more`` further legitimate events have arrived."""
    target = len(recorder.events) + more
    await recorder.wait_until(lambda: len(recorder.events) >= target)


async def fence(
    sender: nanomitter.DistributedEventEmitter,
    receiver: nanomitter.DistributedEventEmitter,
    recorder: Recorder,
    traffic: Traffic,
) -> None:
    """The members' marker, sent after the intruders failed and the stream stopped; then
    check what arrived: the whole stream in order, the marker, nothing else."""
    await traffic.stop()
    await sender.emit("sec.fence", None)
    await recorder.wait_until(has_topic(recorder, "sec.fence"))
    assert recorder.events[-1].topic == "sec.fence"
    flow = [e.data for e in recorder.events if e.topic == "sec.flow"]
    assert flow == [{"n": n} for n in traffic.sent], "legitimate traffic was lost or reordered"
    assert all(e.data != EVIL for e in recorder.events), "an intruder's event was delivered"
    assert {e.sender for e in recorder.events} == {sender.id}
    stats = receiver.stats()
    assert (stats.lost, stats.decode_errors) == (0, 0), stats
    assert stats.received == sender.stats().emitted  # the member's events, nobody else's


def forged_frame() -> bytes:
    return MsgpackCodec().encode(DistributedEvent(topic="sec.flow", data=EVIL, sender="x", seq=1))


# ---------------------------------------------------------------- ZeroMQ CURVE


def hexkey(key: bytes) -> str:
    return z85.decode(key).hex()


class CurveKeys:
    """A hub pair, an allowed member pair, a stranger pair (not on the list) and an
    impostor pair (a hub that is not ours)."""

    def __init__(self, directory: Path) -> None:
        self.hub = zmq.curve_keypair()
        self.member = zmq.curve_keypair()
        self.stranger = zmq.curve_keypair()
        self.impostor = zmq.curve_keypair()
        self.allow = directory / "allowed-keys.txt"
        self.allow.write_text(f"{hexkey(self.member[0])}\n")

    def hub_url(self, url: str) -> str:
        public, secret = self.hub
        return (
            f"{url}?role=hub&curve_server_key={hexkey(public)}"
            f"&curve_server_secret={hexkey(secret)}&curve_allow={self.allow}"
        )

    def node_url(self, url: str, pair: tuple[bytes, bytes], server: bytes | None = None) -> str:
        server = self.hub[0] if server is None else server
        return (
            f"{url}?role=node&curve_server_key={hexkey(server)}&curve_secret_key={hexkey(pair[1])}"
        )


HANDSHAKE_FAILED: dict[int, str] = {
    int(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL): "HANDSHAKE_FAILED_NO_DETAIL",
    int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL): "HANDSHAKE_FAILED_PROTOCOL",
    int(zmq.EVENT_HANDSHAKE_FAILED_AUTH): "HANDSHAKE_FAILED_AUTH",
}


class RawZmqPeer:
    """A pyzmq socket that knows nothing of nanomitter: no CURVE, or keys the hub does not
    accept. Its socket monitor is the only place libzmq tells it that a handshake failed."""

    def __init__(
        self, kind: int, endpoint: str, pair: tuple[bytes, bytes] | None, server: bytes | None
    ) -> None:
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sock = self.context.socket(kind)
        self.sock.linger = 0
        if pair is not None and server is not None:
            self.sock.curve_serverkey = server
            self.sock.curve_publickey, self.sock.curve_secretkey = pair
        mask = 0
        for event in HANDSHAKE_FAILED:
            mask |= event
        self.monitor = self.sock.get_monitor_socket(mask)
        self.failures: list[str] = []
        self.sock.connect(endpoint)  # the pipe exists now: what is sent next waits on it
        if kind == zmq.SUB:
            self.sock.subscribe(b"")

    def _drain(self) -> None:
        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            kind = HANDSHAKE_FAILED.get(int(event["event"]), str(event["event"]))
            self.failures.append(f"{kind} ({int(event['value']):#x})")

    async def handshake_failed(self) -> str:
        """The first failed handshake, once libzmq reports it (waits on the monitor's fd)."""
        with anyio.fail_after(DEADLINE):
            while True:
                self._drain()
                if self.failures:
                    return self.failures[0]
                with anyio.move_on_after(0.05):  # the fd is edge-triggered: look again soon
                    await anyio.wait_readable(self.monitor.FD)

    def received_nothing(self) -> bool:
        try:
            self.sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return True
        return False

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close(0)
        self.sock.close(0)
        self.context.term()


@contextmanager
def raw_zmq_peers(
    hub: nanomitter.DistributedEventEmitter, keys: CurveKeys
) -> Iterator[dict[str, RawZmqPeer]]:
    """A reader (SUB) and a writer (PUB) per kind of intruder."""
    endpoints = zmq_of(hub).endpoints
    kinds: dict[str, tuple[tuple[bytes, bytes] | None, bytes | None]] = {
        "no keys": (None, None),
        "key not on the allow-list": (keys.stranger, keys.hub[0]),
        "wrong hub key": (keys.member, keys.impostor[0]),
    }
    peers: dict[str, RawZmqPeer] = {}
    try:
        for name, (pair, server) in kinds.items():
            peers[f"{name}, reader"] = RawZmqPeer(zmq.SUB, endpoints.subscribe, pair, server)
            peers[f"{name}, writer"] = RawZmqPeer(zmq.PUB, endpoints.publish, pair, server)
        yield peers
    finally:
        for peer in peers.values():
            peer.close()


async def keep_sending(sockets: list[zmq.Socket[bytes]], topic: bytes, frame: bytes) -> None:
    """Send ``frame`` on every socket every few milliseconds until cancelled (a pace)."""
    while True:
        for sock in sockets:
            with contextlib.suppress(zmq.Again):
                sock.send_multipart([topic, frame], zmq.NOBLOCK)
        await anyio.sleep(0.005)


async def keep_sending_nng(sockets: list[pynng.Bus0], frame: bytes) -> None:
    """The same for raw pynng sockets (without a pipe, bus0 drops what is sent)."""
    while True:
        for sock in sockets:
            with contextlib.suppress(pynng.TryAgain):
                sock.send(frame, block=False)
        await anyio.sleep(0.005)


async def test_zmq_curve_intruders_neither_read_nor_write(tmp_path: Path) -> None:
    keys = CurveKeys(tmp_path)
    url = tcp_url()
    async with (
        nanomitter.connect(keys.hub_url(url)) as hub,
        nanomitter.connect(keys.node_url(url, keys.member)) as member,
    ):
        recorder = Recorder()
        member.on("sec.>", recorder)
        await member.listening()
        async with legit_traffic(hub) as traffic:
            await flowing(recorder)
            with raw_zmq_peers(hub, keys) as raw:
                writers = [peer.sock for name, peer in raw.items() if name.endswith("writer")]
                async with anyio.create_task_group() as forging:  # the writers never stop trying
                    forging.start_soon(keep_sending, writers, b"sec.flow", forged_frame())
                    handshakes = {name: await peer.handshake_failed() for name, peer in raw.items()}
                    refusals = await all_refused(
                        {
                            "no keys": f"{url}?role=node",
                            "no keys, role=auto": f"{url}?role=auto",
                            "key not on the allow-list": keys.node_url(url, keys.stranger),
                            "wrong hub key": keys.node_url(url, keys.member, keys.impostor[0]),
                        },
                        ZmqNoHubError,
                        connect_timeout=INTRUDER_TIMEOUT,
                    )
                    await flowing(recorder)  # the members still talk while intruders knock
                    forging.cancel_scope.cancel()
                await fence(hub, member, recorder, traffic)
                readers = [peer for name, peer in raw.items() if name.endswith("reader")]
                assert len(readers) == 3
                assert all(reader.received_nothing() for reader in readers)
        # the control: the same raw writer with a member's keys does get through, so the
        # intruders' writers were refused for their keys, not for the way they write
        queued = Recorder()
        member.on("ctl.>", queued)
        await member.listening()
        control = RawZmqPeer(zmq.PUB, zmq_of(hub).endpoints.publish, keys.member, keys.hub[0])
        try:
            frame = MsgpackCodec().encode(DistributedEvent(topic="ctl.written", data="control"))
            async with anyio.create_task_group() as writing:
                writing.start_soon(keep_sending, [control.sock], b"ctl.written", frame)
                await queued.wait(1)
                writing.cancel_scope.cancel()
        finally:
            control.close()
        # the member's own events still reach the hub
        back = Recorder()
        hub.on("sec.back", back)
        await hub.listening()
        await member.emit("sec.back", 1)
        await back.wait(1)
        figures = zmq_of(hub).statistics()
    assert handshakes["key not on the allow-list, reader"].startswith("HANDSHAKE_FAILED_AUTH")
    assert handshakes["key not on the allow-list, writer"].startswith("HANDSHAKE_FAILED_AUTH")
    assert "0x190" in handshakes["key not on the allow-list, writer"]  # ZAP said 400
    for name in ("key not on the allow-list", "wrong hub key"):
        assert "CURVE keys" in refusals[name].message, refusals[name]
    for refusal in refusals.values():
        assert refusal.seconds < INTRUDER_TIMEOUT + 10, refusal
    assert figures["hub_clients_refused"] >= 3  # ZAP said no to every stranger's socket
    record(
        "zmq-curve",
        joined=False,
        read=0,
        wrote=0,
        raw_pyzmq=handshakes,
        nanomitter={
            name: f"{r.error} after {r.seconds} s: {r.message}" for name, r in refusals.items()
        },
        hub_clients_refused=figures["hub_clients_refused"],
        hub_clients_accepted=figures["hub_clients_accepted"],
    )


@ASYNCIO_ONLY
async def test_a_zmq_node_without_keys_is_told_that_the_hub_wants_curve(tmp_path: Path) -> None:
    keys = CurveKeys(tmp_path)
    url = tcp_url()
    async with nanomitter.connect(keys.hub_url(url)):
        refusal = await refused(
            f"{url}?role=node&connect_timeout={INTRUDER_TIMEOUT}", ZmqNoHubError
        )
    assert "CURVE" in refusal.message
    record("zmq-no-keys-told", message=refusal.message, seconds=refusal.seconds)


# ---------------------------------------------------------------- nng TLS


def client_tls(ca: Path, identity: TlsFiles | None) -> pynng.TLSConfig:
    """A raw pynng client's TLS settings: trusts ``ca``, presents ``identity`` if any."""
    own: dict[str, str] = {}
    if identity is not None:
        own = {
            "own_cert_string": identity.cert.read_text(),
            "own_key_string": identity.key.read_text(),
        }
    return pynng.TLSConfig(
        pynng.TLSConfig.MODE_CLIENT,
        server_name="localhost",
        ca_string=ca.read_text(),
        auth_mode=pynng.TLSConfig.AUTH_MODE_REQUIRED,
        **own,
    )


def blocking_dial(address: str, tls: pynng.TLSConfig | None) -> str:
    """A raw pynng bus0 socket dials once, synchronously: nng says why it could not."""
    with pynng.Bus0() as sock:
        if tls is not None:
            sock.tls_config = tls
        try:
            sock.dial(address, block=True)
        except pynng.NNGException as exc:
            return f"{type(exc).__name__}: {exc}"
    return "joined"


async def test_nng_tls_intruders_neither_read_nor_write(tmp_path: Path) -> None:
    good = make_tls_files(tmp_path / "bus", "bus")
    rogue = make_tls_files(tmp_path / "rogue", "rogue")
    port = free_port()
    url = f"tls+tcp://127.0.0.1:{port}?{good.query()}"
    plain_address, tls_address = f"tcp://127.0.0.1:{port}", f"tls+tcp://127.0.0.1:{port}"
    async with (
        nanomitter.connect(url, role="hub") as hub,
        nanomitter.connect(url, role="node") as member,
    ):
        peers_before = hub.transport.statistics()["hub_peers"]
        recorder = Recorder()
        member.on("sec.>", recorder)
        await member.listening()
        async with legit_traffic(hub) as traffic:
            await flowing(recorder)
            dials: dict[str, str] = {}
            with contextlib.ExitStack() as stack:
                spies: dict[str, pynng.Bus0] = {}
                for name, tls in (
                    ("no TLS", None),
                    ("certificate from another CA", client_tls(good.ca, rogue)),
                ):
                    spy = spies[name] = stack.enter_context(pynng.Bus0())
                    if tls is not None:
                        spy.tls_config = tls
                    spy.dial(tls_address if tls is not None else plain_address, block=False)
                async with anyio.create_task_group() as forging:  # they never stop trying
                    forging.start_soon(keep_sending_nng, list(spies.values()), forged_frame())
                    for name, address, tls in (
                        ("no TLS", plain_address, None),
                        ("certificate from another CA", tls_address, client_tls(good.ca, rogue)),
                        ("no certificate", tls_address, client_tls(good.ca, None)),
                    ):
                        with anyio.fail_after(DEADLINE):
                            dials[name] = await anyio.to_thread.run_sync(
                                blocking_dial, address, tls, abandon_on_cancel=True
                            )
                    refusals = await all_refused(
                        {
                            "no TLS": f"{plain_address}?role=node",
                            "no TLS, role=auto": plain_address,
                            "certificate from another CA": (
                                f"{tls_address}?{rogue.query()}&role=node"
                            ),
                        },
                        NngNoHubError,
                        connect_timeout=INTRUDER_TIMEOUT,
                    )
                    await flowing(recorder)
                    forging.cancel_scope.cancel()
                await fence(hub, member, recorder, traffic)
                peers_after = hub.transport.statistics()["hub_peers"]
                for spy in spies.values():
                    assert not spy.pipes
                    with pytest.raises(pynng.TryAgain):
                        spy.recv(block=False)
        # the control: a raw pynng socket with a certificate from the bus CA, sending the
        # same way, gets through: the spies were refused for their certificates
        queued = Recorder()
        member.on("ctl.>", queued)
        await member.listening()
        with pynng.Bus0() as control:
            control.tls_config = client_tls(good.ca, good)
            control.dial(tls_address, block=False)
            frame = MsgpackCodec().encode(DistributedEvent(topic="ctl.written", data="control"))
            async with anyio.create_task_group() as writing:
                writing.start_soon(keep_sending_nng, [control], frame)
                await queued.wait(1)
                writing.cancel_scope.cancel()
    # nng tells a raw dialer at once (measured: "Connection shutdown" without TLS,
    # CryptoError for a foreign certificate or none)
    assert all(told != "joined" for told in dials.values()), dials
    for refusal in refusals.values():
        assert "TLS files" in refusal.message, refusal
        assert refusal.seconds < INTRUDER_TIMEOUT + 10, refusal
    assert peers_before == peers_after == 2  # the hub's own member and ours: nobody else
    record(
        "nng-tls",
        joined=False,
        read=0,
        wrote=0,
        raw_pynng=dials,
        nanomitter={
            name: f"{r.error} after {r.seconds} s: {r.message}" for name, r in refusals.items()
        },
        hub_peers=peers_after,
    )


@ASYNCIO_ONLY
async def test_an_nng_member_with_a_foreign_certificate_is_told_tls_failed(tmp_path: Path) -> None:
    good = make_tls_files(tmp_path / "bus", "bus")
    rogue = make_tls_files(tmp_path / "rogue", "rogue")
    port = free_port()
    async with nanomitter.connect(f"tls+tcp://127.0.0.1:{port}?{good.query()}", role="hub"):
        stranger = f"tls+tcp://127.0.0.1:{port}?{rogue.query()}&role=node&connect_timeout=2"
        refusal = await refused(stranger, NngNoHubError)
    assert "certificate" in refusal.message.lower() or "crypto" in refusal.message.lower()
    assert refusal.seconds < 1.5  # told at once, not after connect_timeout
    record("nng-foreign-certificate-told", message=refusal.message, seconds=refusal.seconds)


# ---------------------------------------------------------------- NATS: TLS and auth


@dataclass
class NatsCase:
    """A server that demands one kind of credential, a member URL that has it, and the
    intruders: nanomitter URLs, plain nats-py connections and what nanomitter should say."""

    server: NatsServer
    member_url: str
    intruders: dict[str, str]
    plain: dict[str, tuple[str, dict[str, Any]]]
    says: str
    control: dict[str, str] | None = None
    """CONNECT fields that let the hand-written client in (user and token cases)."""


def nats_case(kind: str, directory: Path) -> NatsCase:
    import nkeys

    if kind == "tls":
        good = make_tls_files(directory / "bus", "bus")
        rogue = make_tls_files(directory / "rogue", "rogue")
        server = NatsServer(directory, tls=good, verify_clients=True)
        url, port = server.url, server.port
        ca_only = ssl.create_default_context(cafile=str(good.ca))
        foreign = ssl.create_default_context(cafile=str(good.ca))
        foreign.load_cert_chain(str(rogue.cert), str(rogue.key))
        return NatsCase(
            server,
            f"{url}?{good.query()}",
            {
                "no TLS options (system CAs)": url,
                "plaintext nats://": f"nats://127.0.0.1:{port}",
                "the CA, no client certificate": f"{url}?tls_ca={good.ca}",
                "a certificate from another CA": (
                    f"{url}?tls_ca={good.ca}&tls_cert={rogue.cert}&tls_key={rogue.key}"
                ),
            },
            {
                "no TLS options (system CAs)": (url, {}),
                "the CA, no client certificate": (url, {"tls": ca_only}),
                "a certificate from another CA": (url, {"tls": foreign}),
            },
            "[ssl: ",  # the TLS alert, e.g. [SSL: TLSV1_ALERT_UNKNOWN_CA]
        )
    if kind == "nkey":
        seeds: list[Path] = []
        for name in ("member", "stranger"):
            seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
            path = directory / f"{name}.nk"
            path.write_bytes(seed)
            seeds.append(path)
        public = nkeys.from_seed(bytearray(seeds[0].read_bytes())).public_key.decode()
        server = NatsServer(directory, auth=NatsAuth(nkey=public))
        url = server.url
        return NatsCase(
            server,
            f"{url}?nkey={seeds[0]}",
            {"no credentials": url, "a stranger's nkey seed": f"{url}?nkey={seeds[1]}"},
            {
                "no credentials": (url, {}),
                "a stranger's nkey seed": (url, {"nkeys_seed": str(seeds[1])}),
            },
            "refused this connection's credentials",
        )
    if kind == "user":
        server = NatsServer(directory, auth=NatsAuth(user="app", password="app-pw"))
        base = host_port(server)
        wrong = f"nats://app:wrong@{base}"
        return NatsCase(
            server,
            f"nats://app:app-pw@{base}",
            {"no credentials": server.url, "a wrong password": wrong},
            {"no credentials": (server.url, {}), "a wrong password": (wrong, {})},
            "refused this connection's credentials",
            {"user": "app", "pass": "app-pw"},
        )
    assert kind == "token"
    server = NatsServer(directory, auth=NatsAuth(token="app-token"))
    base = host_port(server)
    wrong = f"nats://wrong-token@{base}"
    return NatsCase(
        server,
        f"nats://app-token@{base}",
        {"no credentials": server.url, "a wrong token": wrong},
        {"no credentials": (server.url, {}), "a wrong token": (wrong, {})},
        "refused this connection's credentials",
        {"auth_token": "app-token"},
    )


async def plain_nats_refused(url: str, options: dict[str, Any]) -> str:
    """A plain nats-py client (no nanomitter) tries once; returns what it was told."""
    told: list[Exception] = []

    async def on_error(exc: Exception) -> None:  # instead of nats-py's logged traceback
        told.append(exc)

    try:
        with anyio.fail_after(DEADLINE):
            client = await nats.connect(
                url, allow_reconnect=False, connect_timeout=1, error_cb=on_error, **options
            )
    except (nats.errors.Error, OSError) as exc:  # ssl.SSLError is an OSError
        return f"{type(exc).__name__}: {exc}"
    await client.close()
    pytest.fail(f"a plain nats-py client joined {url} ({options}) without the credentials")


async def raw_nats_client(
    port: int, credentials: Mapping[str, str] | None = None, subject: str = "sec.flow"
) -> bytes:
    """A hand-written NATS client: CONNECT (without credentials unless given), a SUB to
    everything and a PUB pipelined behind it, then PING. Returns all the server said until
    it answered the PING or hung up."""
    evil = json.dumps(EVIL).encode()
    connect = json.dumps(
        {"verbose": False, "pedantic": False, "headers": True, **(credentials or {})}
    )
    said = b""
    with anyio.fail_after(DEADLINE):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            while b"\r\n" not in said:
                said += await stream.receive()
            await stream.send(
                b"CONNECT %b\r\nSUB > 1\r\nPUB %b %d\r\n%b\r\nPING\r\n"
                % (connect.encode(), subject.encode(), len(evil), evil)
            )
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                while b"PONG" not in said:
                    said += await stream.receive()
    return said


@ASYNCIO_ONLY
@pytest.mark.parametrize("kind", ["tls", "user", "token", "nkey"])
async def test_nats_intruders_neither_read_nor_write(tmp_path: Path, kind: str) -> None:
    case = nats_case(kind, tmp_path)
    case.server.start()
    try:
        async with (
            nanomitter.connect(case.member_url) as sender,
            nanomitter.connect(case.member_url) as member,
        ):
            recorder = Recorder()
            member.on("sec.>", recorder)
            await member.listening()
            async with legit_traffic(sender) as traffic:
                await flowing(recorder)
                refusals = await all_refused(case.intruders, NoServersError, connect_timeout=1)
                plain = {
                    name: await plain_nats_refused(url, options)
                    for name, (url, options) in case.plain.items()
                }
                by_hand = await raw_nats_client(case.server.port)
                await anyio.to_thread.run_sync(
                    case.server.wait_until,
                    lambda: case.server.connections() == 2,
                    "have only the two members connected",
                )
                await flowing(recorder)
                await fence(sender, member, recorder, traffic)
            if case.control is not None:  # by hand with the credentials: it does get through
                written = Recorder()
                member.on("ctl.>", written)
                await member.listening()
                control = await raw_nats_client(case.server.port, case.control, "ctl.written")
                assert b"PONG" in control, control
                await written.wait(1)
    finally:
        case.server.kill()
    for name, refusal in refusals.items():
        said = refusal.message.lower()
        # a refused TLS handshake surfaces as the alert, or (when the server hangs up first
        # on the last attempt) as a reset or a broken pipe: the member is told, stays out
        hung_up = ("connection reset", "broken pipe", "connection aborted", "eof occurred")
        assert case.says in said or (
            case.says == "[ssl: " and any(text in said for text in hung_up)
        ), (name, refusal)
        assert refusal.seconds < 1 + 10, (name, refusal)
    assert b"PONG" not in by_hand and b"MSG " not in by_hand, by_hand  # never accepted
    if kind != "tls":
        assert b"-ERR 'Authorization Violation'" in by_hand, by_hand
    record(
        f"nats-{kind}",
        joined=False,
        read=0,
        wrote=0,
        raw_nats_py=plain,
        by_hand=by_hand.decode(errors="replace").split("\r\n", 1)[1].strip()
        or "(closed after INFO)",
        nanomitter={
            name: f"{r.error} after {r.seconds} s: {r.message}" for name, r in refusals.items()
        },
    )


@ASYNCIO_ONLY
async def test_a_nats_tls_refusal_is_reported_as_such_at_once(tmp_path: Path) -> None:
    case = nats_case("tls", tmp_path)
    with nats_running(tmp_path / "tls-server", tls=case.server.tls, verify_clients=True) as server:
        url = case.intruders["a certificate from another CA"].replace(case.server.url, server.url)
        refusal = await refused(f"{url}&connect_timeout=2", NoServersError)
    assert "cannot reach" not in refusal.message
    assert refusal.seconds < 1.5  # told at once, not after connect_timeout


class PermissionsServer(NatsServer):
    """alice and bob may do anything; eve may neither publish nor subscribe on orders.>."""

    def config(self) -> str:
        return super().config() + (
            "authorization {\n  users: [\n"
            '    {user: alice, password: "alice-pw"}\n'
            '    {user: bob, password: "bob-pw"}\n'
            '    {user: eve, password: "eve-pw", permissions: '
            '{publish: {deny: ["orders.>"]}, subscribe: {deny: ["orders.>"]}}}\n'
            "  ]\n}\n"
        )


@asynccontextmanager
async def permissions_bus(
    directory: Path, **eve_options: Any
) -> AsyncIterator[tuple[nanomitter.DistributedEventEmitter, ...]]:
    server = PermissionsServer(directory)
    server.start()
    base = host_port(server)
    try:
        async with (
            nanomitter.connect(f"nats://alice:alice-pw@{base}") as alice,
            nanomitter.connect(f"nats://bob:bob-pw@{base}") as bob,
            nanomitter.connect(f"nats://eve:eve-pw@{base}", **eve_options) as eve,
        ):
            yield alice, bob, eve
    finally:
        server.kill()


@ASYNCIO_ONLY
async def test_nats_permissions_keep_a_member_off_a_subject(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What the other transports cannot do: per-subject authorization, by the NATS server."""
    caplog.set_level(logging.WARNING, logger="nanomitter")
    async with permissions_bus(tmp_path) as (alice, bob, eve):
        at_bob, at_eve = Recorder(), Recorder()
        for bus, recorder in ((bob, at_bob), (eve, at_eve)):
            bus.on("orders.>", recorder)
            bus.on("news.>", recorder)
        await bob.listening()
        with pytest.raises(nanomitter.PermissionDenied, match=r'subscription to "orders\.>"'):
            await eve.listening()  # eve is told her orders listener hears nothing
        await eve.emit("orders.forged", EVIL)  # refused by the server
        await eve.emit("news.from-eve", 1)  # allowed; same connection, so after the forgery
        await alice.emit("orders.placed", 2)
        await alice.emit("news.fence", None)  # after the order, on alice's connection
        for recorder in (at_bob, at_eve):
            await recorder.wait_until(has_topic(recorder, "news.fence"))
        await at_bob.wait_until(has_topic(at_bob, "news.from-eve"))
    assert [e.topic for e in at_bob.events if e.topic != "news.from-eve"] == [
        "orders.placed",
        "news.fence",
    ]
    from_others = [e.topic for e in at_eve.events if e.sender != eve.id]
    assert from_others == ["news.fence"]  # not alice's order
    warnings = [r.getMessage() for r in caplog.records if "permissions violation" in r.getMessage()]
    assert any('subscription to "orders.>"' in w for w in warnings), warnings
    assert any('publish to "orders.forged"' in w for w in warnings), warnings
    record(
        "nats-permissions",
        eve_read=from_others,
        bob_got=[e.topic for e in at_bob.events],
        eve_told=warnings,
    )


@ASYNCIO_ONLY
async def test_nats_permission_violations_reach_the_error_hook(tmp_path: Path) -> None:
    """A refused subscription makes listening() raise and reaches the error hook; a refused
    publish reaches the error hook (the event reached nobody). A permitted listener keeps
    listening() quiet again once the refused one is gone."""
    problems = Recorder()
    async with permissions_bus(tmp_path, on_error=problems) as (_alice, bob, eve):
        refused = eve.on("orders.>", lambda event: None)
        with pytest.raises(nanomitter.PermissionDenied) as told:
            await eve.listening()
        assert (told.value.action, told.value.subject) == ("subscribe", "orders.>")
        assert "grant this user subscribe permission" in str(told.value)
        await eve.emit("orders.forged", EVIL)
        fenced = Recorder()
        bob.on("news.fence", fenced)
        await bob.listening()
        await eve.emit("news.fence", None)  # after the forgery: the server's -ERR came first
        await fenced.wait(1)
        await problems.wait_until(lambda: len(problems.events) >= 2)
        eve.off("orders.>", refused)
        eve.on("news.>", lambda event: None)
        await eve.listening()  # nothing refused is wanted any more
    denied = [p for p in problems.events if isinstance(p, nanomitter.PermissionDenied)]
    assert [(p.action, p.subject) for p in denied] == [
        ("subscribe", "orders.>"),
        ("publish", "orders.forged"),
    ]
    assert 'refused a publish to "orders.forged" (permissions violation)' in str(denied[1])
    record("nats-permissions-hook", told=[str(p) for p in denied])


# ---------------------------------------------------------------- impostors


@pytest.mark.parametrize("transport", ["zmq", "nng"])
async def test_members_do_not_join_an_impostor_hub(tmp_path: Path, transport: str) -> None:
    """Authentication runs both ways: a member refuses a hub that cannot prove it is the
    bus's, even one that would accept the member (curve_allow=any; trusts the bus's CA)."""
    if transport == "zmq":
        keys = CurveKeys(tmp_path)
        url = tcp_url()
        public, secret = keys.impostor
        impostor_url = (
            f"{url}?role=hub&curve_server_key={hexkey(public)}"
            f"&curve_server_secret={hexkey(secret)}&curve_allow=any"
        )
        async with nanomitter.connect(impostor_url) as impostor:
            member = f"{keys.node_url(url, keys.member)}&connect_timeout={INTRUDER_TIMEOUT}"
            refusal = await refused(member, ZmqNoHubError)
            accepted = zmq_of(impostor).statistics()["hub_clients_accepted"]
        assert "CURVE keys" in refusal.message
        assert accepted == 2  # its own member's two sockets; never ours
    else:
        good = make_tls_files(tmp_path / "bus", "bus")
        rogue = make_tls_files(tmp_path / "rogue", "rogue")
        impostor_tls = TlsFiles(good.ca, rogue.cert, rogue.key)  # trusts our CA, is not ours
        port = free_port()
        impostor_url = f"tls+tcp://127.0.0.1:{port}?{impostor_tls.query()}&role=hub"
        async with nanomitter.connect(impostor_url) as impostor:
            member = f"tls+tcp://127.0.0.1:{port}?{good.query()}&role=node"
            refusal = await refused(f"{member}&connect_timeout={INTRUDER_TIMEOUT}", NngNoHubError)
            accepted = impostor.transport.statistics()["hub_peers"]
        assert accepted == 1  # its own member
    record(f"impostor-{transport}", joined=False, told=refusal.message, seconds=refusal.seconds)


@ASYNCIO_ONLY
async def test_nats_members_do_not_join_an_impostor_server(tmp_path: Path) -> None:
    """With tls://, a server whose certificate our CA did not sign is refused."""
    good = make_tls_files(tmp_path / "bus", "bus")
    rogue = make_tls_files(tmp_path / "rogue", "rogue")
    impostor_tls = TlsFiles(good.ca, rogue.cert, rogue.key)
    with nats_running(tmp_path / "impostor", tls=impostor_tls) as server:
        refusal = await refused(f"{server.url}?{good.query()}&connect_timeout=1", NoServersError)
        accepted = await anyio.to_thread.run_sync(server.connections)
    assert "CERTIFICATE_VERIFY_FAILED" in refusal.message
    assert accepted == 0
    record("impostor-nats-tls", joined=False, told=refusal.message, seconds=refusal.seconds)


@asynccontextmanager
async def plaintext_nats_impostor() -> AsyncIterator[tuple[int, bytearray]]:
    """A fake NATS server without TLS: it answers INFO (no tls_required) and PONG, and keeps
    every byte a client sends it. Yields its port and those bytes."""
    heard = bytearray()

    async def impostor(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.send(
                b'INFO {"server_id":"impostor","version":"2.10.0","proto":1,'
                b'"headers":true,"max_payload":1048576}\r\n'
            )
            answered = 0
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while True:
                    heard.extend(await stream.receive())
                    while heard.count(b"PING\r\n") > answered:  # keep the client happy
                        answered += 1
                        await stream.send(b"PONG\r\n")

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, impostor)
        yield listener.extra(SocketAttribute.local_port), heard
        group.cancel_scope.cancel()


@ASYNCIO_ONLY
async def test_nats_without_tls_hands_the_password_to_whoever_answers() -> None:
    """The limit of nats:// without TLS (docs/security.md): nothing proves who the server is,
    and the credentials and events go to it in the clear. An impostor at the address (or
    anyone on the path) gets the password, and the member joins it without complaint."""
    async with plaintext_nats_impostor() as (port, heard):
        url = f"nats://app:{url_password()}@127.0.0.1:{port}?connect_timeout=5"
        with anyio.fail_after(DEADLINE):
            async with nanomitter.connect(url) as bus:
                await bus.emit("orders.placed", {"card": "4111-1111"})
    connect = json.loads(bytes(heard).split(b"\r\n", 1)[0].split(b" ", 1)[1])
    assert (connect["user"], connect["pass"]) == ("app", PASSWORD)
    assert b"orders.placed" in heard and b"4111-1111" in heard


@ASYNCIO_ONLY
@pytest.mark.parametrize("how", ["tls:// URL", "nats:// URL with tls_ca"])
async def test_a_nats_member_that_asks_for_tls_never_talks_plaintext(
    tmp_path: Path, how: str
) -> None:
    """A member configured for TLS must refuse a server that does not offer it: otherwise a
    man in the middle strips TLS by leaving tls_required out of INFO, and gets the password.
    nats-py upgrades only when the server asks (reproduction and fix:
    /tmp/notes/security-tls-downgrade.py, see the report)."""
    files = make_tls_files(tmp_path / "bus", "bus")
    async with plaintext_nats_impostor() as (port, heard):
        scheme = "tls" if how.startswith("tls://") else "nats"
        url = f"{scheme}://app:{url_password()}@127.0.0.1:{port}?{files.query()}&connect_timeout=1"
        told = "joined the impostor"
        try:
            with anyio.fail_after(DEADLINE):
                async with nanomitter.connect(url) as bus:
                    await bus.emit("orders.placed", {"card": "4111-1111"})
        except NoServersError as exc:
            told = str(exc)
    first = bytes(heard).split(b"\r\n", 1)[0]
    assert not first.startswith(b"CONNECT"), f"sent in the clear: {first[:160]!r}"
    assert SENTINEL.encode() not in heard
    assert "cannot reach" in told or "TLS" in told, told


# ================================================================ 2. secrets never shown


class Exposure:
    """Everything a user or an operator may see, kept to be searched for the secrets."""

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {SENTINEL: "a sentinel"}
        self.texts: list[tuple[str, str]] = []

    def secret(self, what: str, *forms: str) -> None:
        for form in forms:
            assert len(form) >= 8, f"too short to search for: {form!r}"
            self.secrets[form] = what

    def text(self, where: str, text: str) -> None:
        self.texts.append((where, text))

    def objects(self, where: str, *objects: object) -> None:
        for obj in objects:
            name = type(obj).__name__
            self.text(f"{where}: str({name})", str(obj))
            self.text(f"{where}: repr({name})", repr(obj))

    def bus(self, where: str, bus: nanomitter.DistributedEventEmitter) -> None:
        """The emitter, its transport, stats(), statistics(), address and URL."""
        transport = bus.transport
        self.objects(where, bus, transport, bus.stats())
        self.text(f"{where}: address", transport.address)
        self.text(f"{where}: statistics()", repr(dict(transport.statistics())))
        url = getattr(transport, "url", None)
        if url is not None:
            self.objects(f"{where}: .url", url)

    def exception(self, where: str, exc: BaseException) -> None:
        """str, repr and args of the exception and of every one chained to it (shown or
        not), and the traceback as Python prints it."""
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            self.text(
                f"{where}: {type(current).__name__}", f"{current!s} {current!r} {current.args!r}"
            )
            current = current.__cause__ or current.__context__
        self.text(f"{where}: traceback", "".join(traceback.format_exception(exc)))

    def logs(self, caplog: pytest.LogCaptureFixture) -> None:
        self.text("the log", caplog.text)
        for entry in caplog.records:
            self.text(f"log record of {entry.name}", f"{entry.getMessage()} {entry.args!r}")
            if entry.exc_info and entry.exc_info[1] is not None:
                self.exception(f"log record of {entry.name}", entry.exc_info[1])

    def check(self) -> None:
        assert len(self.texts) >= 5, "nothing was looked at"
        leaks = sorted(
            {
                f"{what} ({secret[:12]}...) in {where}"
                for where, text in self.texts
                for secret, what in self.secrets.items()
                if secret in text
            }
        )
        assert not leaks, "secrets shown:\n" + "\n".join(leaks)
        print(f"\n[security] searched {len(self.texts)} texts for {len(self.secrets)} secrets")


async def failure(exposure: Exposure, where: str, attempt: Callable[[], Any]) -> BaseException:
    """Run ``attempt`` (sync or async); it must raise; keep what the exception shows."""
    try:
        with anyio.fail_after(DEADLINE):
            result = attempt()
            if hasattr(result, "__await__"):
                await result
    except Exception as exc:
        exposure.exception(where, exc)
        return exc
    pytest.fail(f"{where}: expected a failure")


def pem_lines(path: Path) -> list[str]:
    """The base64 lines of a PEM file: the key material itself."""
    return [line for line in path.read_text().splitlines() if line and not line.startswith("---")]


def problem_hook(exposure: Exposure) -> tuple[Recorder, Callable[[Problem], None]]:
    """A hook that logs each problem the default way (every one: interval 0) and keeps it."""
    problems = Recorder()
    log = LogProblems(interval=0)

    def hook(problem: Problem) -> None:
        log(problem)
        problems(problem)

    return problems, hook


def watch_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="nanomitter")


@ASYNCIO_ONLY
async def test_nats_secrets_never_show(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import nkeys

    watch_logs(caplog)
    seen = Exposure()
    problems, hook = problem_hook(seen)

    # user and password in the URL; connection changes and an overflow reported on the way
    with nats_running(tmp_path / "user", auth=NatsAuth(user="app", password=PASSWORD)) as server:
        base = host_port(server)
        url = f"nats://app:{url_password()}@{base}?reconnect_ms=50&buffer=300"
        async with (
            nanomitter.connect(url, on_error=hook) as a,
            nanomitter.connect(url) as b,
            nanomitter.connect(f"{url}&max_reconnects=1", on_error=hook) as c,
        ):
            received = Recorder()
            b.on("sec.>", received)
            await b.listening()
            await a.emit("sec.t", 1)
            await received.wait(1)  # the password worked
            seen.bus("user/password", a)
            await anyio.to_thread.run_sync(server.kill)
            await problems.wait_until(lambda: states(problems) >= {"disconnected", "closed"})
            for n in range(40):  # past the 300-byte buffer: one OverflowProblem
                await a.emit("sec.offline", {"n": n, "pad": "x" * 40})
            await anyio.to_thread.run_sync(server.start)
            await problems.wait_until(lambda: "reconnected" in states(problems))
            seen.bus("user/password, after the reconnect", a)
            seen.bus("user/password, closed by the transport", c)
        seen.bus("user/password, closed", a)
        await failure(seen, "a wrong password", lambda: joined(f"nats://app:{WRONG}@{base}"))
    assert any(isinstance(p, OverflowProblem) for p in problems.events)
    dead = [free_port(), free_port()]
    await failure(
        seen,
        "unreachable servers",
        lambda: joined(
            f"nats://app:{url_password()}@127.0.0.1:{dead[0]},"
            f"nats://app:{url_password()}@127.0.0.1:{dead[1]}?connect_timeout=1"
        ),
    )
    seen.exception(
        "a bad option next to the password",
        await failure(seen, "bad option", lambda: nanomitter.connect(f"{url}&linger=soon")),
    )

    # a token, in nats:// and tls:// URLs
    with nats_running(tmp_path / "token", auth=NatsAuth(token=TOKEN)) as server:
        base = host_port(server)
        async with nanomitter.connect(f"nats://{TOKEN}@{base}", on_error=hook) as bus:
            seen.bus("token", bus)
        await failure(seen, "a wrong token", lambda: joined(f"nats://{WRONG}@{base}"))
    unreachable = f"tls://{TOKEN}@127.0.0.1:{free_port()}?connect_timeout=1"
    await failure(seen, "tls:// token, unreachable", lambda: joined(unreachable))

    # nkey seed files, a creds file and a seed file that holds no seed
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    stranger = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    seen.secret("an nkey seed", seed.decode(), stranger.decode())
    (tmp_path / "user.nk").write_bytes(seed)
    (tmp_path / "stranger.nk").write_bytes(stranger)
    (tmp_path / "garbled.nk").write_text(f"SU{SENTINEL}-not-a-seed\n")
    (tmp_path / "user.creds").write_text(
        f"-----BEGIN NATS USER JWT-----\neyJ0eXAi.{SENTINEL}.jwt\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{stranger.decode()}\n------END USER NKEY SEED------\n"
    )
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    with nats_running(tmp_path / "nkey", auth=NatsAuth(nkey=public)) as server:
        async with nanomitter.connect(f"{server.url}?nkey={tmp_path / 'user.nk'}") as bus:
            seen.bus("nkey", bus)
        for name in ("stranger.nk", "garbled.nk"):
            await failure(seen, name, partial(joined, f"{server.url}?nkey={tmp_path / name}"))
        await failure(
            seen, "creds", lambda: joined(f"{server.url}?creds={tmp_path / 'user.creds'}")
        )

    # mutual TLS: the private keys' contents
    good = make_tls_files(tmp_path / "bus", "bus")
    rogue = make_tls_files(tmp_path / "rogue", "rogue")
    seen.secret("a TLS private key", *pem_lines(good.key), *pem_lines(rogue.key))
    with nats_running(tmp_path / "tls", tls=good, verify_clients=True) as server:
        async with nanomitter.connect(f"{server.url}?{good.query()}") as bus:
            seen.bus("mutual TLS", bus)
        stranger_url = f"{server.url}?tls_ca={good.ca}&tls_cert={rogue.cert}&tls_key={rogue.key}"
        await failure(
            seen, "a foreign certificate", lambda: joined(f"{stranger_url}&connect_timeout=1")
        )
    await failure(
        seen,
        "a key that does not match",
        lambda: nanomitter.connect(f"{stranger_url}&tls_cert={good.cert}"),
    )

    for problem in problems.events:
        seen.objects("a problem from the error hook", problem)
    seen.logs(caplog)
    assert states(problems) >= {"disconnected", "reconnected", "closed"}
    seen.check()


def states(problems: Recorder) -> set[str]:
    return {p.state for p in problems.events if isinstance(p, ConnectionStateChanged)}


def curve_secret(text: bytes) -> tuple[bytes, bytes, list[str]]:
    """A CURVE key pair whose 32-byte secret is ``text`` (any 32 bytes are a secret key), and
    every form the secret may take: the bytes, hex, HEX, Z85."""
    assert len(text) == 32, len(text)
    secret = z85.encode(text)
    forms = [text.decode(), text.hex(), text.hex().upper(), secret.decode()]
    return zmq.curve_public(secret), secret, forms


def curve_keyfile(path: Path, public: bytes, secret: bytes) -> Path:
    path.write_text(
        "#   a ZeroMQ certificate\nmetadata\ncurve\n"
        f'    public-key = "{public.decode()}"\n    secret-key = "{secret.decode()}"\n'
    )
    return path


async def test_zmq_and_nng_secrets_never_show(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    watch_logs(caplog)
    seen = Exposure()
    problems, hook = problem_hook(seen)
    hub_public, hub_secret, forms = curve_secret(b"S3NT1NEL-hub-curve-secret-key-32")
    seen.secret("the hub's CURVE secret key", *forms)
    node_public, node_secret, forms = curve_secret(b"S3NT1NEL-node-curve-secret-key-3")
    seen.secret("a member's CURVE secret key", *forms)
    file_public, file_secret, forms = curve_secret(b"S3NT1NEL-file-curve-secret-key-3")
    seen.secret("a member's CURVE secret key file", *forms)
    _, stranger_secret, forms = curve_secret(b"S3NT1NEL-evil-curve-secret-key-3")
    seen.secret("a stranger's CURVE secret key", *forms)
    allow = tmp_path / "allowed.txt"
    allow.write_text(f"{hexkey(node_public)}\n{hexkey(file_public)}\n")
    keyfile = curve_keyfile(tmp_path / "member.key_secret", file_public, file_secret)
    hub_keyfile = tmp_path / "hub.key"
    hub_keyfile.write_text(f'curve\n    public-key = "{hub_public.decode()}"\n')

    url = tcp_url()
    hub_url = (
        f"{url}?role=hub&curve_server_key={hexkey(hub_public)}"
        f"&curve_server_secret={hexkey(hub_secret)}&curve_allow={allow}"
    )
    node_url = (
        f"{url}?role=node&curve_server_key={hexkey(hub_public)}"
        f"&curve_secret_key={hexkey(node_secret)}"
    )
    file_url = f"{url}?role=node&curve_server_keyfile={hub_keyfile}&curve_keyfile={keyfile}"
    async with (
        nanomitter.connect(hub_url, on_error=hook) as hub,
        nanomitter.connect(node_url, on_error=hook) as node,
        nanomitter.connect(file_url, on_error=hook) as by_file,
    ):
        received = Recorder()
        hub.on("sec.>", received)
        await hub.listening()
        await node.emit("sec.t", 1)
        await by_file.emit("sec.t", 2)
        await received.wait(2)  # both keys worked
        for name, bus in (("CURVE hub", hub), ("CURVE node", node), ("CURVE keyfile", by_file)):
            seen.bus(name, bus)
        stranger = node_url.replace(hexkey(node_secret), hexkey(stranger_secret))
        await failure(seen, "a stranger's key", lambda: joined(f"{stranger}&connect_timeout=0.5"))
        assert zmq_of(hub).statistics()["hub_clients_refused"] >= 1  # it was heard, and logged
    seen.bus("CURVE hub, closed", hub)
    await failure(
        seen, "a bad option next to the keys", lambda: nanomitter.connect(f"{node_url}&hwm=lots")
    )
    await failure(
        seen,
        "a hub without curve_allow",
        lambda: joined(hub_url.replace(f"&curve_allow={allow}", "")),
    )
    await failure(
        seen,
        "a secret that is not a key",
        lambda: nanomitter.connect(
            f"{url}?curve_server_key={hexkey(hub_public)}&curve_secret_key={SENTINEL}xyz"
        ),
    )

    # nng tls+tcp: the private key's contents
    good = make_tls_files(tmp_path / "bus", "bus")
    seen.secret("a TLS private key", *pem_lines(good.key))
    garbled = tmp_path / "garbled-key.pem"
    garbled.write_text(f"-----BEGIN PRIVATE KEY-----\n{SENTINEL}AAAA\n-----END PRIVATE KEY-----\n")
    port = free_port()
    tls_url = f"tls+tcp://127.0.0.1:{port}?{good.query()}"
    async with (
        nanomitter.connect(tls_url, role="hub", on_error=hook) as hub,
        nanomitter.connect(tls_url, role="node", on_error=hook) as member,
    ):
        seen.bus("nng TLS hub", hub)
        seen.bus("nng TLS member", member)
        bad_key = tls_url.replace(f"tls_key={good.key}", f"tls_key={garbled}")
        await failure(
            seen, "a garbled key file", lambda: joined(f"{bad_key}&role=node&connect_timeout=0.5")
        )
    for problem in problems.events:
        seen.objects("a problem from the error hook", problem)
    seen.logs(caplog)
    assert any("refused a CURVE client" in r.getMessage() for r in caplog.records)
    seen.check()


def test_configuration_objects_keep_their_secrets_out_of_repr() -> None:
    """The parsed credentials live on the transport (``transport.servers``,
    ``transport.curve``); printing them while debugging must not print the secrets."""
    hub_public, hub_secret, forms = curve_secret(b"S3NT1NEL-hub-curve-secret-key-32")
    _, node_secret, node_forms = curve_secret(b"S3NT1NEL-node-curve-secret-key-3")
    shown: dict[str, str] = {}
    for label, url in (
        ("Servers, user:password@", f"nats://app:{url_password()}@h1:4222,h2"),
        ("Servers, token@", f"tls://{TOKEN}@h1:4222"),
    ):
        transport = transport_from_url(url)
        assert isinstance(transport, NatsTransport)
        assert SENTINEL in f"{transport.servers.password}{transport.servers.token}"  # it is there
        shown[label] = repr(transport.servers)
    server_key = f"curve_server_key={hexkey(hub_public)}"
    for label, query in (
        ("Curve, hub", f"{server_key}&curve_server_secret={hexkey(hub_secret)}&curve_allow=any"),
        ("Curve, node", f"role=node&{server_key}&curve_secret_key={hexkey(node_secret)}"),
    ):
        transport = transport_from_url(f"zmq+tcp://127.0.0.1:5600?{query}")
        assert isinstance(transport, ZmqTransport) and transport.curve is not None
        shown[label] = repr(transport.curve)
    leaks = sorted(
        where
        for where, text in shown.items()
        if any(secret in text for secret in (SENTINEL, *forms, *node_forms))
    )
    assert not leaks, f"secrets in the repr of: {leaks}"


URLS_WITHOUT_A_SCHEME = [
    f"app:{url_password()}@127.0.0.1:4222",
    f"{TOKEN}@127.0.0.1:4222",
    f"127.0.0.1:4222?token={TOKEN}",
]


@pytest.mark.parametrize("url", URLS_WITHOUT_A_SCHEME, ids=["user:password@", "token@", "?token="])
def test_a_url_without_a_scheme_is_not_echoed_with_its_credentials(url: str) -> None:
    with pytest.raises(ValueError, match="has no scheme") as caught:
        nanomitter.connect(url)
    assert SENTINEL not in str(caught.value), str(caught.value)


def test_the_cli_does_not_echo_a_url_without_a_scheme() -> None:
    result = subprocess.run(
        [*CLI, "sub", "--url", URLS_WITHOUT_A_SCHEME[0]],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "has no scheme" in result.stderr
    assert SENTINEL not in result.stderr + result.stdout, result.stderr


def containing(text: str) -> Callable[[str], bool]:
    return lambda line: text in line


async def run_cli(
    *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    with anyio.fail_after(DEADLINE):
        return await anyio.run_process(
            [*CLI, *args], check=False, env={**os.environ, **(env or {})}
        )


def cli_text(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")


def output_text(output: Output) -> str:
    return "\n".join(output.lines)


@ASYNCIO_ONLY
async def test_the_cli_never_prints_secrets(tmp_path: Path) -> None:
    """``nanomitter sub``, ``pub`` and ``hub`` with credentials in --url and in
    $NANOMITTER_URL, joining, failing to join and misused: nothing they print shows them."""
    seen = Exposure()
    with nats_running(tmp_path / "nats", auth=NatsAuth(user="app", password=PASSWORD)) as server:
        base = host_port(server)
        good = f"nats://app:{url_password()}@{base}"
        async with running([*CLI, "sub", "--json", "--count", "1", "--url", good]) as (sub, out):
            listening = await out.wait_for(containing("listening on"), DEADLINE)
            published = await run_cli("pub", "sec.t", '{"n": 1}', "--url", good)
            assert published.returncode == 0, published.stderr
            with anyio.fail_after(DEADLINE):
                assert await sub.wait() == 0, out.lines
        assert f"listening on nats://app:***@{base} for *" in listening  # shown, masked
        assert json.loads(next(line for line in out.lines if line.startswith("{")))["data"] == {
            "n": 1
        }
        seen.text("nanomitter sub", output_text(out))
        seen.text("nanomitter pub", cli_text(published))
        unreachable = ",".join(
            f"nats://app:{url_password()}@127.0.0.1:{free_port()}" for _ in range(2)
        )
        failing = {
            "pub, a wrong password": (
                ["pub", "sec.t", "1", "--url", f"nats://app:{WRONG}@{base}"],
                {},
                1,
                "refused",
            ),
            "pub, a wrong token in $NANOMITTER_URL": (
                ["pub", "sec.t", "1"],
                {"NANOMITTER_URL": f"nats://{WRONG}@{base}"},
                1,
                "refused",
            ),
            "sub, unreachable servers": (
                ["sub", "--url", f"{unreachable}?connect_timeout=1"],
                {},
                1,
                "cannot reach",
            ),
            "sub, a bad option": (
                ["sub", "--url", f"{good}?linger=soon"],
                {},
                2,
                "must be a number",
            ),
        }
        results: dict[str, subprocess.CompletedProcess[bytes]] = {}

        async def attempt(name: str, args: list[str], env: dict[str, str]) -> None:
            results[name] = await run_cli(*args, env=env)

        async with anyio.create_task_group() as group:
            for name, (args, env, _, _) in failing.items():
                group.start_soon(attempt, name, args, env)
        for name, (_, _, code, says) in failing.items():
            result = results[name]
            assert result.returncode == code, (name, cli_text(result))
            assert says in result.stderr.decode(), (name, cli_text(result))
            assert b"Traceback" not in result.stderr, (name, cli_text(result))
            seen.text(f"nanomitter {name}", cli_text(result))

    # ZeroMQ with CURVE secret keys in the URLs: hub, sub and pub
    hub_public, hub_secret, forms = curve_secret(b"S3NT1NEL-hub-curve-secret-key-32")
    seen.secret("the hub's CURVE secret key", *forms)
    node_public, node_secret, forms = curve_secret(b"S3NT1NEL-node-curve-secret-key-3")
    seen.secret("a member's CURVE secret key", *forms)
    allow = tmp_path / "allowed.txt"
    allow.write_text(f"{hexkey(node_public)}\n")
    url = tcp_url()
    hub_url = (
        f"{url}?curve_server_key={hexkey(hub_public)}&curve_server_secret={hexkey(hub_secret)}"
        f"&curve_allow={allow}"
    )
    node_url = f"{url}?curve_server_key={hexkey(hub_public)}&curve_secret_key={hexkey(node_secret)}"
    hub_command = [*CLI, "hub", hub_url, "--stats-interval", "0.2"]
    async with running(hub_command) as (hub, hub_out):
        await hub_out.wait_for(containing("hub running on"), DEADLINE)
        async with running([*CLI, "sub", "--count", "1", "--url", node_url]) as (sub, out):
            await out.wait_for(containing("listening on"), DEADLINE)
            published = await run_cli("pub", "sec.t", "2", "--url", node_url)
            assert published.returncode == 0, cli_text(published)
            with anyio.fail_after(DEADLINE):
                assert await sub.wait() == 0, out.lines
        await hub_out.wait_for(containing("hub_clients_accepted"), DEADLINE)
        hub.send_signal(signal.SIGINT)
        with anyio.fail_after(DEADLINE):
            assert await hub.wait() == 0, hub_out.lines
    assert any("curve_server_secret=***" in line for line in hub_out.lines), hub_out.lines
    for name, text in (
        ("hub", output_text(hub_out)),
        ("sub", output_text(out)),
        ("pub", cli_text(published)),
    ):
        assert "Traceback" not in text, text
        seen.text(f"nanomitter {name} (ZeroMQ CURVE)", text)
    seen.check()


def garbled_key_url(kind: str, directory: Path) -> str:
    """A URL whose key file holds no usable key (its text carries the sentinel)."""
    if kind == "nkey seed":
        garbled = directory / "garbled.nk"
        garbled.write_text(f"SU{SENTINEL}-not-a-seed\n")
        return f"nats://127.0.0.1:{free_port()}?nkey={garbled}&connect_timeout=1"
    if kind == "CURVE key file":
        public, _ = zmq.curve_keypair()
        garbled = directory / "garbled.key_secret"
        garbled.write_text(
            f'curve\n    public-key = "{public.decode()}"\n    secret-key = "{SENTINEL}"\n'
        )
        server = hexkey(zmq.curve_keypair()[0])
        query = f"curve_server_key={server}&curve_keyfile={garbled}"
        return f"{tcp_url()}?role=node&connect_timeout=0.5&{query}"
    assert kind == "TLS key file"
    good = make_tls_files(directory / "bus", "bus")
    garbled = directory / "garbled-key.pem"
    garbled.write_text(f"-----BEGIN PRIVATE KEY-----\n{SENTINEL}AAAA\n-----END PRIVATE KEY-----\n")
    query = good.query().replace(str(good.key), str(garbled))
    return f"tls+tcp://127.0.0.1:{free_port()}?{query}&role=node&connect_timeout=0.5"


@ASYNCIO_ONLY
@pytest.mark.parametrize("kind", ["nkey seed", "CURVE key file", "TLS key file"])
async def test_the_cli_reports_a_garbled_key_file_in_one_line(tmp_path: Path, kind: str) -> None:
    """A key file that holds no usable key is the user's mistake: one 'Error:' line naming
    the option, no traceback, and nothing of the file's contents. (Found: nkeys.ErrInvalidSeed,
    zmq.ZMQError 'Invalid argument' and pynng.CryptoError escaped open() as tracebacks.)"""
    result = await run_cli("sub", "--url", garbled_key_url(kind, tmp_path))
    text = cli_text(result)
    assert SENTINEL not in text
    assert result.returncode in (1, 2), text
    assert "Traceback" not in text, text[-600:]
    assert len(result.stderr.decode().strip().splitlines()) == 1, text
    option = {"nkey seed": "nkey", "CURVE key file": "curve_keyfile", "TLS key file": "tls_"}[kind]
    assert option in text, text


# ================================================================ 3. nothing from the wire runs

FORBIDDEN_MODULES = {
    "pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle",
    "yaml", "ruamel", "runpy", "code", "codeop",
}  # fmt: skip
"""Modules that turn bytes into objects (or code) by what the bytes say."""
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "breakpoint"}
DYNAMIC_IMPORTS_ALLOWED = {
    ("transports/registry.py", "transport_class"): "imports the 'module:Class' registered for "
    "a URL scheme (the built-in table, the 'nanomitter.transports' entry points, register()): "
    "chosen by the program's own URL, never by anything received",
    ("cli/__init__.py", "LazyGroup.get_command"): "imports the module of the CLI command named "
    "on the command line, from the fixed COMMANDS table",
    ("conformance/peer.py", "main"): "--import MODULE on the conformance peer's command line, "
    "given by the test harness that starts it",
}
"""``importlib.import_module(non-constant)`` call sites, each with why its name is trusted."""
DYNAMIC_GETATTR_ALLOWED = {
    ("transports/registry.py", "transport_class"): "the Class of that 'module:Class'",
    ("cli/__init__.py", "LazyGroup.get_command"): "the command object of that module",
    ("conformance/peer.py", "PeerSession.handle"): "'do_' + the command of a JSON line on the "
    "peer's stdin, written by the harness that started it (not the bus); unknown ones refused",
    ("core/stats.py", "Counters.snapshot"): "its own __slots__",
}
"""``getattr(x, non-constant)`` call sites: the attribute name is never from the wire."""


def call_name(node: ast.Call) -> str:
    """``f``, ``module.f`` or ``a.b.f`` for a call's function (``?`` for anything else)."""
    parts: list[str] = []
    target: ast.expr = node.func
    while isinstance(target, ast.Attribute):
        parts.append(target.attr)
        target = target.value
    if isinstance(target, ast.Name):
        parts.append(target.id)
        return ".".join(reversed(parts))
    return "?." + ".".join(reversed(parts))


class WireSafety(ast.NodeVisitor):
    """Finds what could run code or build arbitrary objects, with its enclosing function."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.scope: list[str] = []
        self.forbidden: list[str] = []
        self.dynamic_imports: set[tuple[str, str]] = set()
        self.dynamic_getattrs: set[tuple[str, str]] = set()

    def where(self, node: ast.AST) -> str:
        return f"{self.path}:{getattr(node, 'lineno', '?')} ({'.'.join(self.scope) or 'module'})"

    def visit_scope(self, node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_ClassDef = visit_FunctionDef = visit_AsyncFunctionDef = visit_scope

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                self.forbidden.append(f"import {alias.name} at {self.where(node)}")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
            self.forbidden.append(f"from {node.module} import at {self.where(node)}")
        if node.module == "importlib" and any(
            a.name in {"import_module", "__import__"} for a in node.names
        ):
            self.forbidden.append(f"from importlib import import_module at {self.where(node)}")

    def visit_Call(self, node: ast.Call) -> None:
        name = call_name(node)
        last = name.rsplit(".", 1)[-1]
        constant_first = bool(node.args) and isinstance(node.args[0], ast.Constant)
        if last in FORBIDDEN_CALLS and name in {last, f"builtins.{last}", f"importlib.{last}"}:
            self.forbidden.append(f"{name}() at {self.where(node)}")
        elif name == "importlib.import_module" and not constant_first:
            self.dynamic_imports.add((self.path, ".".join(self.scope)))
        elif (
            name == "getattr" and len(node.args) >= 2 and not isinstance(node.args[1], ast.Constant)
        ):
            self.dynamic_getattrs.add((self.path, ".".join(self.scope)))
        elif last in {"Decoder", "decode", "convert"} and name.startswith("msgspec"):
            hooks = {k.arg for k in node.keywords if k.arg} & {"ext_hook", "dec_hook"}
            if hooks:  # a hook could build objects by what the bytes name
                self.forbidden.append(f"{name}({', '.join(sorted(hooks))}=) at {self.where(node)}")
        self.generic_visit(node)


def test_no_code_from_the_wire_static_scan() -> None:
    """Nothing in src/nanomitter unpickles, evaluates or imports by a name it received."""
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 30, files  # the package is really there
    found = [WireSafety(str(path.relative_to(SRC))) for path in files]
    for scan, path in zip(found, files, strict=True):
        scan.visit(ast.parse(path.read_text(), filename=str(path)))
    forbidden = [item for scan in found for item in scan.forbidden]
    imports = {item for scan in found for item in scan.dynamic_imports}
    getattrs = {item for scan in found for item in scan.dynamic_getattrs}
    assert not forbidden, forbidden
    assert imports == set(DYNAMIC_IMPORTS_ALLOWED), "dynamic imports changed: review them"
    assert getattrs == set(DYNAMIC_GETATTR_ALLOWED), "dynamic getattr changed: review them"
    # the scanner sees what it must: it flags these when they are there
    probe = WireSafety("probe.py")
    probe.visit(ast.parse(
        "import pickle\nfrom yaml import load\nimport importlib\n"
        "def f(frame, name):\n    eval(frame)\n    importlib.import_module(name)\n"
        "    getattr(f, name)\n    msgspec.msgpack.Decoder(ext_hook=h)\n"
    ))  # fmt: skip
    assert len(probe.forbidden) == 4 and probe.dynamic_imports and probe.dynamic_getattrs


class Tripwire:
    """Unpickled, it creates the file at ``path`` (open(path, "w")): proof of execution."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def tripwire(path: Path) -> bytes:
    """A pickle that creates ``path`` when unpickled (checked on a twin that unpickling does
    create: the trap works)."""
    sanity = path.with_name(path.name + ".sanity")
    pickle.loads(pickle.dumps(Tripwire(sanity))).close()
    assert sanity.exists()
    return pickle.dumps(Tripwire(path))


def wire_frames(payload: bytes) -> tuple[list[bytes], int]:
    """What a hostile peer sends (msgpack envelopes and non-envelopes), in order, and how
    many of them must be rejected. The fence goes last."""

    def envelope(data: Any, topic: str = "sec.pickle") -> bytes:
        return msgspec.msgpack.encode({"topic": topic, "data": data, "sender": "intruder"})

    frames = [
        payload,  # a bare pickle: not msgpack -> rejected
        envelope(payload),  # a pickle as bytes data -> delivered as bytes
        envelope(msgspec.msgpack.Ext(42, payload)),  # an extension type -> delivered as Ext
        msgspec.msgpack.encode(msgspec.msgpack.Ext(1, envelope(payload))),  # not a map: rejected
        envelope({"py/object": "os.system", "!!python/object/apply:os.system": ["touch x"]}),
        envelope(None, "sec.fence"),
    ]
    return frames, 2


def check_delivery(received: Recorder, payload: bytes) -> None:
    events = [e for e in received.events if e.topic.startswith("sec.")]
    assert [e.topic for e in events] == ["sec.pickle"] * 3 + ["sec.fence"], events
    as_bytes, as_ext, as_dict = (e.data for e in events[:3])
    assert as_bytes == payload
    assert isinstance(as_ext, msgspec.msgpack.Ext) and (as_ext.code, as_ext.data) == (42, payload)
    assert as_dict == {"py/object": "os.system", "!!python/object/apply:os.system": ["touch x"]}


@asynccontextmanager
async def pair_on(transport: str) -> AsyncIterator[tuple[Any, Any]]:
    if transport == "memory":
        url = f"memory://security-{uuid.uuid4().hex}"
        receiver_url, sender_url = url, url
    elif transport == "nng":
        url = f"tcp://127.0.0.1:{free_port()}"
        receiver_url, sender_url = f"{url}?role=hub", f"{url}?role=node"
    else:
        url = tcp_url()
        receiver_url, sender_url = f"{url}?role=hub", f"{url}?role=node"
    async with (
        nanomitter.connect(receiver_url) as receiver,
        nanomitter.connect(sender_url) as sender,
    ):
        yield receiver, sender


@pytest.mark.parametrize("transport", ["memory", "nng", "zmq"])
async def test_pickles_and_extension_types_are_data_or_rejected(
    tmp_path: Path, transport: str
) -> None:
    target = tmp_path / "pwned"
    payload = tripwire(target)
    frames, rejected = wire_frames(payload)
    async with pair_on(transport) as (receiver, sender):
        received = Recorder()
        receiver.on("*", received)
        await receiver.listening()
        for frame in frames:
            await sender.transport.send_raw(frame)
        await received.wait_until(lambda: any(e.topic == "sec.fence" for e in received.events))
        decode_errors = receiver.stats().decode_errors
    check_delivery(received, payload)
    assert decode_errors == rejected
    assert not target.exists(), "a frame was unpickled"
    record(f"wire-{transport}", delivered_as_data=3, rejected=decode_errors, executed=False)


@ASYNCIO_ONLY
async def test_nats_pickles_and_extension_types_are_data_or_rejected(tmp_path: Path) -> None:
    """The same frames through nanomitter, plus what a plain nats-py client can send: a pickle
    declared as such, a pickle without headers (read as JSON), YAML with a Python tag."""
    target = tmp_path / "pwned"
    payload = tripwire(target)
    frames, rejected = wire_frames(payload)
    foreign: list[tuple[bytes, dict[str, str] | None]] = [
        (payload, {"Content-Type": "application/python-pickle"}),
        (payload, None),
        (b"!!python/object/apply:os.system ['touch x']", {"Content-Type": "application/x-yaml"}),
    ]
    with nats_running(tmp_path / "nats") as server:
        async with (
            nanomitter.connect(server.url) as receiver,
            nanomitter.connect(f"{server.url}?codec=msgpack") as sender,
        ):
            received = Recorder()
            receiver.on("*", received)
            await receiver.listening()
            plain = await nats.connect(server.url, allow_reconnect=False)
            try:
                for body, headers in foreign:
                    await plain.publish("sec.foreign", body, headers=headers)
                await plain.flush()  # the server has them before the fence below
            finally:
                await plain.close()
            for frame in frames:
                await sender.transport.send_raw(frame)
            await received.wait_until(lambda: any(e.topic == "sec.fence" for e in received.events))
            decode_errors = receiver.stats().decode_errors
    check_delivery(received, payload)
    assert decode_errors == rejected + len(foreign)
    assert not target.exists(), "a message was unpickled"
    record("wire-nats", delivered_as_data=3, rejected=decode_errors, executed=False)
