"""Request/reply on NATS in its native form, against a real nats-server.

Responders join one queue group (the server hands each request to one live member), requests
carry NATS's reply subject (a plain nats-py client sees it as ``msg.reply``), and the server's
503 "no responders" status makes ``NoResponders`` immediate instead of a timeout.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import anyio
import msgspec
import pytest
from nats.aio.msg import Msg

import nanomitter
from nanomitter import DistributedEvent, NoResponders, RequestTimeout
from nanomitter.transports.nats import NatsTransport
from nats_support import NatsServer, nats_server, subscriptions_in_force
from test_nats import plain_client

__all__ = ["nats_server"]  # a fixture: imported so that pytest finds it

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_no_responders_is_immediate(nats_server: NatsServer) -> None:
    async with nanomitter.connect(nats_server.url) as bus:
        started = time.monotonic()
        with pytest.raises(NoResponders, match=r"'quote\.none'.*no subscriber"):
            await bus.request("quote.none", {"ticker": "X"}, timeout=10)
        assert time.monotonic() - started < 2.0  # the server's 503, not the 10 s deadline
        assert await bus.survey("quote.none", timeout=10) == []  # also fast
        assert time.monotonic() - started < 4.0


async def test_the_server_picks_one_responder_per_request(nats_server: NatsServer) -> None:
    """Two responder nodes in the queue group; one of them also listens on bare ``*`` (a plain
    subscription on ``>`` that sees every request too): still one answer per request."""
    served: Counter[str] = Counter()
    url = nats_server.url
    async with (
        nanomitter.connect(url, service="a") as a,
        nanomitter.connect(url, service="b") as b,
        nanomitter.connect(url) as asker,
    ):
        seen_by_wildcard: list[str] = []
        a.on("*", lambda event: seen_by_wildcard.append(event.topic))
        for node in (a, b):
            node.responder("quote", lambda event, node=node: served.update([node.service]) or 1)
            await node.listening()
        for _ in range(60):
            assert await asker.request("quote", timeout=5) == 1
        assert sum(served.values()) == 60  # nobody answered twice
        assert set(served) == {"a", "b"}  # the server spread them
        assert a.stats().served + b.stats().served == 60
        assert asker.stats().late_replies == 0  # no second answer arrived
        assert not [t for t in seen_by_wildcard if t[:2] in ("<?", "<!")]
        assert a.transport.statistics()["duplicates_skipped"] > 0  # the ``>`` copies


async def test_requests_carry_the_nats_reply_subject(nats_server: NatsServer) -> None:
    """A plain nats-py subscriber sees our request with a reply subject it could answer on."""
    url = nats_server.url + "?prefix=acme"
    got: list[Msg] = []
    arrived = anyio.Event()

    async def catch(msg: Msg) -> None:
        got.append(msg)
        arrived.set()

    async with plain_client(nats_server.url) as plain, nanomitter.connect(url) as bus:
        await plain.subscribe("acme.<?.quote", queue="nanomitter", cb=catch)
        await subscriptions_in_force(plain)
        with pytest.raises(RequestTimeout, match=r"'quote'.*within 0\.3 s"):
            await bus.request("quote", {"ticker": "AAPL"}, timeout=0.3)
        with anyio.fail_after(5):
            await arrived.wait()
        msg = got[0]
        assert msg.reply == f"acme.<!.{bus.id}.1"
        assert msg.headers is not None and msg.headers["Nanomitter-Sender"] == bus.id
        envelope = msgspec.json.decode(msg.data)
        assert envelope == {"id": 1, "to": "", "data": {"ticker": "AAPL"}}


async def test_a_killed_responder_is_replaced_at_once(nats_server: NatsServer) -> None:
    """The server drops a dead client's subscriptions when its connection breaks, so the
    next request goes to the survivor; no presence timeout is involved."""
    url = nats_server.url
    async with (
        nanomitter.connect(url, service="survivor") as survivor,
        nanomitter.connect(url) as asker,
    ):
        survivor.responder("quote", lambda event: "survivor")
        await survivor.listening()
        doomed_client: Any = None
        # max_reconnects=0: a crashed process does not come back (nats-py would reconnect)
        async with nanomitter.connect(f"{url}?max_reconnects=0", service="doomed") as doomed:
            doomed.responder("quote", lambda event: "doomed")
            await doomed.listening()
            assert isinstance(doomed.transport, NatsTransport)
            doomed_client = doomed.transport.client
            answers = {await asker.request("quote", timeout=5) for _ in range(40)}
            assert answers == {"survivor", "doomed"}
            # cut the connection the way a crash does: no unsubscribe, no goodbye
            doomed_client._transport.close()
            with anyio.fail_after(10):
                while True:
                    try:
                        if await asker.request("quote", timeout=0.5) == "survivor":
                            break
                    except RequestTimeout:
                        pass
            assert {await asker.request("quote", timeout=5) for _ in range(20)} == {"survivor"}


async def test_typed_request_and_reply(nats_server: NatsServer) -> None:
    class Quote(msgspec.Struct):
        ticker: str
        price: float

    async with (
        nanomitter.connect(nats_server.url + "?codec=msgpack") as server,
        nanomitter.connect(nats_server.url) as client,
    ):

        @server.responder("quote", type=str)
        def quote(event: DistributedEvent) -> dict[str, Any]:
            return {"ticker": event.data, "price": 251.5}

        await server.listening()
        reply = await client.request("quote", "AAPL", timeout=5, type=Quote)
        assert reply == Quote("AAPL", 251.5)
        with pytest.raises(nanomitter.RemoteError, match="ValidationError"):
            await client.request("quote", 42, timeout=5)
