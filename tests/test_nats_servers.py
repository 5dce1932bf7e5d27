"""Self-tests of nats_support against the real nats-server, with the plain nats-py client.

They make sure the helpers the NATS transport tests rely on really start, route, restart,
authenticate and encrypt, so a failure there points at the transport and not at the harness.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import nats
import nats.errors
import pytest

from nats_support import (
    NatsAuth,
    NatsCluster,
    NatsServer,
    nats_cluster,
    nats_server,
    subscriptions_in_force,
)
from tls_files import make_tls_files

__all__ = ["nats_cluster", "nats_server"]  # fixtures: imported so that pytest finds them

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """nats-py runs on asyncio only."""
    return "asyncio"


async def _quiet(error: Exception) -> None:
    """An error callback that keeps expected refusals out of the log."""


async def connect(url: str, **options: Any) -> Any:
    """A nats-py client that gives up at once instead of reconnecting."""
    return await nats.connect(
        url,
        allow_reconnect=False,
        max_reconnect_attempts=0,
        connect_timeout=2,
        error_cb=_quiet,
        **options,
    )


async def publish_until_received(publisher: Any, subscription: Any, data: bytes) -> bytes:
    """Publish every 50 ms until the subscription gets a message: interest crosses routes
    asynchronously, so the first publishes on another server may find no subscriber yet."""
    with anyio.fail_after(10):
        while True:
            await publisher.publish(subscription.subject, data)
            await publisher.flush()
            try:
                message = await subscription.next_msg(timeout=0.05)
            except nats.errors.TimeoutError:
                continue
            return bytes(message.data)


async def test_a_single_server_carries_a_message(nats_server: NatsServer) -> None:
    subscriber = await connect(nats_server.url)
    publisher = await connect(nats_server.url)
    try:
        subscription = await subscriber.subscribe("greetings")
        await subscriptions_in_force(subscriber)
        await publisher.publish("greetings", b"hello")
        await publisher.flush()
        message = await subscription.next_msg(timeout=5)
        assert message.data == b"hello"
        assert nats_server.connections() == 2
    finally:
        await subscriber.close()
        await publisher.close()
    nats_server.stop()
    assert not nats_server.running
    assert "Server Exiting" in nats_server.log_tail()  # SIGTERM shut it down cleanly


async def test_a_cluster_routes_between_its_servers(nats_cluster: NatsCluster) -> None:
    first, _, third = nats_cluster.servers
    assert nats_cluster.url == ",".join(f"nats://127.0.0.1:{s.port}" for s in nats_cluster.servers)
    assert nats_cluster.server_of_port(third.port) is third
    subscriber = await connect(first.url)
    publisher = await connect(third.url)
    try:
        subscription = await subscriber.subscribe("across")
        await subscriptions_in_force(subscriber)
        assert await publish_until_received(publisher, subscription, b"hop") == b"hop"
        assert first.connections() == 1
        assert third.connections() == 1
    finally:
        await subscriber.close()
        await publisher.close()


async def test_a_killed_server_rejoins_after_a_restart(nats_cluster: NatsCluster) -> None:
    first, second, third = nats_cluster.servers
    third.kill()
    assert not third.running
    first.wait_until(lambda: first.routes_up() == 1, "drop its route to n3", 10)
    second.wait_until(lambda: second.routes_up() == 1, "drop its route to n3", 10)

    subscriber = await connect(first.url)
    try:
        subscription = await subscriber.subscribe("still")
        await subscriptions_in_force(subscriber)
        publisher = await connect(second.url)
        try:
            assert await publish_until_received(publisher, subscription, b"two") == b"two"
        finally:
            await publisher.close()

        port = third.port
        started = time.monotonic()
        await anyio.to_thread.run_sync(third.restart)
        assert third.port == port
        for server in nats_cluster.servers:
            await anyio.to_thread.run_sync(server.wait_routes, 2)
        assert time.monotonic() - started < 20

        publisher = await connect(third.url)
        try:
            assert await publish_until_received(publisher, subscription, b"back") == b"back"
        finally:
            await publisher.close()
    finally:
        await subscriber.close()


@pytest.mark.parametrize(
    ("auth", "good", "bad"),
    [
        (
            NatsAuth(user="alice", password="s3cret"),
            {"user": "alice", "password": "s3cret"},
            {"user": "alice", "password": "wrong"},
        ),
        (NatsAuth(token="t0ken"), {"token": "t0ken"}, {"token": "other"}),
    ],
    ids=["user-password", "token"],
)
async def test_auth_lets_the_right_client_in(
    tmp_path: Path, auth: NatsAuth, good: dict[str, str], bad: dict[str, str]
) -> None:
    server = NatsServer(tmp_path, auth=auth)
    server.start()
    try:
        client = await connect(server.url, **good)
        try:
            subscription = await client.subscribe("door")
            await client.publish("door", b"open")
            assert (await subscription.next_msg(timeout=5)).data == b"open"
        finally:
            await client.close()
        for credentials in ({}, bad):
            with pytest.raises(nats.errors.Error, match="Authorization Violation"):
                await connect(server.url, **credentials)
    finally:
        server.kill()


async def test_tls_with_client_certificates(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path / "tls", "nats")
    server = NatsServer(tmp_path, tls=files, verify_clients=True, max_payload=4096)
    assert server.url == f"tls://localhost:{server.port}"
    server.start()
    try:
        context = ssl.create_default_context(cafile=str(files.ca))
        context.load_cert_chain(str(files.cert), str(files.key))
        client = await connect(server.url, tls=context)
        try:
            assert client.max_payload == 4096
            subscription = await client.subscribe("sealed")
            await client.publish("sealed", b"secret")
            assert (await subscription.next_msg(timeout=5)).data == b"secret"
        finally:
            await client.close()

        # TLS 1.3 checks the client certificate after the handshake: depending on timing the
        # client reads the "certificate required" alert or finds the connection closed
        without_cert = ssl.create_default_context(cafile=str(files.ca))
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await connect(server.url, tls=without_cert)
        with pytest.raises(ssl.SSLCertVerificationError):
            await connect(server.url)  # nats-py's default context does not trust the test CA
    finally:
        server.kill()
