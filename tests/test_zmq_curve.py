"""CURVE on zmq+tcp: keys by query parameter or key file; the proxy's ZAP allow-list.

A node without keys, or with a key not on the list, neither receives nor injects events:
shown with raw pyzmq sockets (a foreign peer that ignores our code) and with nanomitter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import zmq
import zmq.auth
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

import nanomitter
from nanomitter import DistributedEvent
from nanomitter.core.codecs import MsgpackCodec
from nanomitter.transports.zmq import NoHubError, ZmqTransport
from peers import Recorder
from zmq_support import tcp_url, zmq_of

pytestmark = pytest.mark.anyio
FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


def hexkey(key: bytes) -> str:
    return z85.decode(key).hex()


class Keys:
    """A throwaway hub keypair, an allowed client keypair and a stranger's keypair."""

    def __init__(self, directory: Path) -> None:
        self.server = zmq.curve_keypair()
        self.client = zmq.curve_keypair()
        self.stranger = zmq.curve_keypair()
        self.allow_file = directory / "allowed.txt"
        self.allow_file.write_text(f"# clients allowed on the bus\n{hexkey(self.client[0])}\n")

    def hub_query(self) -> str:
        public, secret = self.server
        return (
            f"?curve_server_key={hexkey(public)}&curve_server_secret={hexkey(secret)}"
            f"&curve_allow={self.allow_file}"
        )

    def node_query(self, pair: tuple[bytes, bytes]) -> str:
        return (
            f"?role=node&curve_server_key={hexkey(self.server[0])}"
            f"&curve_public_key={hexkey(pair[0])}&curve_secret_key={hexkey(pair[1])}"
        )


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path)


@asynccontextmanager
async def intruder(
    kind: int, endpoint: str, pair: tuple[bytes, bytes] | None, server: bytes
) -> AsyncIterator[zmq.Socket[bytes]]:
    """A raw socket that tries to join; yields once its handshake has failed."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = context.socket(kind)
    sock.linger = 0
    if pair is not None:
        sock.curve_serverkey = server
        sock.curve_publickey, sock.curve_secretkey = pair
    monitor = sock.get_monitor_socket(FAILED)
    try:
        sock.connect(endpoint)
        if kind == zmq.SUB:
            sock.subscribe(b"")
        with anyio.fail_after(20):
            while True:
                try:
                    recv_monitor_message(monitor, zmq.NOBLOCK)
                    break
                except zmq.Again:
                    await anyio.sleep(0.01)  # a foreign socket's monitor: poll, bounded
        yield sock
    finally:
        sock.disable_monitor()
        monitor.close(0)
        sock.close(0)
        context.term()


def nothing_received(sock: zmq.Socket[bytes]) -> bool:
    try:
        sock.recv_multipart(zmq.NOBLOCK)
    except zmq.Again:
        return True
    return False


async def exchange(a: nanomitter.DistributedEventEmitter, b: Any, label: str) -> Recorder:
    """b listens on curve.>; a emits one event; returns b's recorder once it arrived."""
    recorder = Recorder()
    b.on("curve.>", recorder)
    await zmq_of(b).sync_interest()
    await a.emit("curve.t", label)
    await recorder.wait(1)
    return recorder


@pytest.mark.parametrize("stranger", ["no keys", "key not on the list"])
async def test_strangers_neither_receive_nor_inject(keys: Keys, stranger: str) -> None:
    url = tcp_url()
    async with (
        nanomitter.connect(url + keys.hub_query()) as hub,
        nanomitter.connect(url + keys.node_query(keys.client)) as node,
    ):
        recorder = await exchange(hub, node, "hello")
        endpoints = zmq_of(hub).endpoints
        pair = None if stranger == "no keys" else keys.stranger
        bad = MsgpackCodec().encode(DistributedEvent(topic="curve.t", data="evil", sender="x"))
        async with (
            intruder(zmq.SUB, endpoints.subscribe, pair, keys.server[0]) as spy,
            intruder(zmq.PUB, endpoints.publish, pair, keys.server[0]) as forger,
        ):
            for _ in range(20):
                forger.send_multipart([b"curve.t", bad])
            for n in range(20):
                await hub.emit("curve.t", n)
            await hub.emit("curve.t", "fence")
            await recorder.wait_until(lambda: any(e.data == "fence" for e in recorder.events))
            assert nothing_received(spy)
        assert all(e.data != "evil" for e in recorder.events)
        assert node.stats().received == hub.stats().emitted  # the hub's, and nobody else's
        if pair is not None:
            assert zmq_of(hub).statistics()["hub_clients_refused"] >= 2


async def test_a_nanomitter_node_with_a_key_not_on_the_list_cannot_join(keys: Keys) -> None:
    url = tcp_url()
    async with nanomitter.connect(url + keys.hub_query()) as hub:
        query = keys.node_query(keys.stranger) + "&connect_timeout=0.5"
        with pytest.raises(NoHubError, match="curve_allow"):
            async with nanomitter.connect(url + query):
                pass
        with pytest.raises(NoHubError):
            async with nanomitter.connect(url, role="node", connect_timeout=0.5):
                pass  # no keys at all
        assert zmq_of(hub).statistics()["hub_clients_refused"] >= 1


@pytest.fixture
def certificates(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """pyzmq/CZMQ certificate files: the hub's pair, a client's secret file, an allow dir."""
    server_public, server_secret = zmq.auth.create_certificates(tmp_path, "server")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    client_public, client_secret = zmq.auth.create_certificates(tmp_path, "client")
    Path(client_public).rename(allowed / "client.key")
    return Path(server_public), Path(server_secret), Path(client_secret), allowed


async def test_keys_from_certificate_files(certificates: tuple[Path, Path, Path, Path]) -> None:
    server_public, server_secret, client_secret, allowed = certificates
    url = tcp_url()
    hub_url = f"{url}?curve_server_keyfile={server_secret}&curve_allow={allowed}"
    node_url = f"{url}?role=node&curve_server_keyfile={server_public}&curve_keyfile={client_secret}"
    async with nanomitter.connect(hub_url) as hub, nanomitter.connect(node_url) as node:
        await exchange(node, hub, "up")
        await exchange(hub, node, "down")
        assert isinstance(hub.transport, ZmqTransport)
        assert hub.transport.statistics()["hub_clients_accepted"] >= 2


async def test_a_hub_needs_an_explicit_allow_list(keys: Keys) -> None:
    public, secret = keys.server
    query = f"?curve_server_key={hexkey(public)}&curve_server_secret={hexkey(secret)}"
    with pytest.raises(ValueError, match="needs curve_allow"):
        async with nanomitter.connect(tcp_url(query), role="hub"):
            pass
