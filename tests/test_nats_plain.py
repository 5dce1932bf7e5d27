"""Plain NATS clients and nanomitter requests, both ways, against a real nats-server.

A nats-py client that knows nothing of nanomitter calls ``nc.request("<?.price", body)`` and
gets the responder's answer (or a NATS service error); a plain nats-py responder answers our
``bus.request`` with a bare body, which is the reply's data; a reply that does not decode
fails the request at once.
"""

from __future__ import annotations

import time
from collections import Counter

import msgspec
import pytest
from nats.aio.msg import Msg

import nanomitter
from nanomitter import DistributedEvent, InvalidReplyError, RemoteError
from nanomitter.core.requests import reply_envelope
from nanomitter.transports.nats_plain import ERROR_CODE_HEADER, ERROR_HEADER
from nats_support import NatsServer, nats_server, subscriptions_in_force
from test_nats import plain_client

__all__ = ["nats_server"]  # a fixture: imported so that pytest finds it

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_plain_request_gets_the_responders_answer(nats_server: NatsServer) -> None:
    url = nats_server.url + "?prefix=acme"
    async with (
        nanomitter.connect(url, service="prices") as bus,
        plain_client(nats_server.url) as plain,
    ):

        @bus.responder("price")
        def price(event: DistributedEvent) -> dict[str, object]:
            assert event.sender == ""  # a foreign requester: no emitter id
            return {"ticker": event.data["ticker"], "price": 251.5}

        await bus.listening()
        msg = await plain.request("acme.<?.price", b'{"ticker": "AAPL"}', timeout=5)
        assert msgspec.json.decode(msg.data) == {"ticker": "AAPL", "price": 251.5}
        assert not msg.headers  # a plain body, as any NATS service answers
        assert bus.stats().served == 1


async def test_a_raising_responder_answers_with_a_nats_service_error(
    nats_server: NatsServer,
) -> None:
    async with nanomitter.connect(nats_server.url) as bus, plain_client(nats_server.url) as plain:

        @bus.responder("price")
        def price(event: DistributedEvent) -> None:
            raise LookupError(f"no ticker\r\n{event.data!r}")

        await bus.listening()
        msg = await plain.request("<?.price", b'"ZZZZ"', timeout=5)
        assert msg.data == b""
        assert msg.headers is not None
        assert msg.headers[ERROR_HEADER] == "LookupError: no ticker 'ZZZZ'"  # one header line
        assert msg.headers[ERROR_CODE_HEADER] == "500"


async def test_plain_requests_get_one_answer_each_from_the_queue_group(
    nats_server: NatsServer,
) -> None:
    served: Counter[str] = Counter()
    url = nats_server.url
    async with (
        nanomitter.connect(url, service="a") as a,
        nanomitter.connect(url, service="b") as b,
        plain_client(url) as plain,
    ):
        for node in (a, b):
            node.on("*", lambda event: None)  # a plain ">" subscription sees requests too
            node.responder(
                "n", lambda event, node=node: served.update([node.service]) or event.data
            )
            await node.listening()
        answers = [await plain.request("<?.n", b"%d" % n, timeout=5) for n in range(40)]
        assert [msgspec.json.decode(msg.data) for msg in answers] == list(range(40))
        assert sum(served.values()) == 40  # nobody answered twice


async def test_a_plain_responders_bare_answer_is_the_replys_data(nats_server: NatsServer) -> None:
    url = nats_server.url + "?prefix=acme"
    async with plain_client(nats_server.url) as plain, nanomitter.connect(url) as bus:

        async def answer(msg: Msg) -> None:
            await plain.publish(msg.reply, b'{"price": 1}')

        await plain.subscribe("acme.<?.quote", queue="nanomitter", cb=answer)
        await subscriptions_in_force(plain)
        await plain.subscribe("acme.<??.quote", cb=answer)  # surveys: everyone answers
        await subscriptions_in_force(plain)
        assert await bus.request("quote", {"ticker": "AAPL"}, timeout=5) == {"price": 1}
        replies = await bus.survey("quote", {"ticker": "AAPL"}, timeout=5, expect=1)
        assert [(r.data, r.sender, r.error) for r in replies] == [({"price": 1}, "", None)]


async def test_a_reply_that_does_not_decode_fails_the_request_at_once(
    nats_server: NatsServer,
) -> None:
    async with plain_client(nats_server.url) as plain, nanomitter.connect(nats_server.url) as bus:

        async def answer(msg: Msg) -> None:
            await plain.publish(msg.reply, b"\xff not json")

        await plain.subscribe("<?.quote", queue="nanomitter", cb=answer)
        await plain.subscribe("<??.quote", cb=answer)
        await subscriptions_in_force(plain)
        started = time.monotonic()
        with pytest.raises(InvalidReplyError, match=r"'quote' from a foreign responder did not"):
            await bus.request("quote", None, timeout=10)
        assert time.monotonic() - started < 5  # not the 10 s timeout
        assert bus.stats().decode_errors == 1  # counted and reported as well
        (reply,) = await bus.survey("quote", None, timeout=10, expect=1)
        assert isinstance(reply.error, RemoteError)
        assert reply.error.type == "InvalidReplyError"


def test_only_our_envelopes_are_read_as_envelopes() -> None:
    assert reply_envelope({"data": 1, "service": "s"}) == {"data": 1, "service": "s"}
    assert reply_envelope({"status": 503}) == {"status": 503}
    for bare in ({"price": 1}, [1, 2], "text", None, {"data": 1, "price": 2}, {}):
        assert reply_envelope(bare) == {"data": bare}
