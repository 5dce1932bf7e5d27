"""Request/reply with responders in other processes, over nng tcp, ZeroMQ tcp and NATS.

The responders are conformance peers (``python -m nanomitter.conformance.peer``, driven over
stdin; each answers with its pid); the requester is an emitter in this process, opened
first, so on nng and ZeroMQ it is the hub and killing a responder leaves the bus standing.
nats-py is asyncio-only: NATS runs on asyncio, nng and ZeroMQ on asyncio and trio.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest

import nanomitter
from nanomitter import DistributedEventEmitter, RequestTimeout
from nanomitter.conformance.processes import Peer, spawn_peer
from nanomitter.core.presence import Peer as PeerInfo
from nats_support import NatsServer
from peers import free_port
from zmq_support import tcp_url

pytestmark = pytest.mark.anyio

WAIT = 20.0
"""Seconds to wait for something that should happen (generous: two busy cores)."""
HEARTBEAT = 0.2
"""The responders' heartbeat interval: a killed one is declared gone after 3 of them."""
CASES = [
    ("nng", "asyncio"),
    ("nng", "trio"),
    ("zmq", "asyncio"),
    ("zmq", "trio"),
    ("nats", "asyncio"),
]


@pytest.fixture(params=CASES, ids=[f"{t}-{b}" for t, b in CASES])
def case(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend(case: tuple[str, str]) -> str:
    return case[1]


@pytest.fixture(scope="module")
def nats_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One nats-server for the module (started only if a NATS case runs)."""
    server = NatsServer(tmp_path_factory.mktemp("nats-requests"))
    server.start()
    try:
        yield server.url
    finally:
        server.kill()


@pytest.fixture
def bus_url(case: tuple[str, str], request: pytest.FixtureRequest) -> str:
    """A fresh bus: a free tcp port (nng), a free port pair (ZeroMQ), a subject prefix (NATS)."""
    transport = case[0]
    if transport == "nng":
        return f"tcp://127.0.0.1:{free_port()}"
    if transport == "zmq":
        return tcp_url()
    base: str = request.getfixturevalue("nats_base")
    return f"{base}?prefix=req{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def requester(bus_url: str) -> AsyncIterator[DistributedEventEmitter]:
    """The emitter in this process: opened before any peer, so it is the hub/proxy."""
    async with nanomitter.connect(bus_url) as bus:
        yield bus


async def start_peers(stack: AsyncExitStack, url: str, count: int, **options: Any) -> list[Peer]:
    peers = []
    for n in range(1, count + 1):
        peers.append(await stack.enter_async_context(spawn_peer(url, name=f"P{n}", **options)))
    return peers


def serving(bus: DistributedEventEmitter, topic: str) -> set[str]:
    return {peer.id for peer in bus.peers() if topic in peer.responds}


async def until(condition: Any, what: str, timeout: float = WAIT) -> None:
    """Wait for ``condition()`` (a state nothing signals: poll briefly) within ``timeout``."""
    with anyio.move_on_after(timeout):
        while not condition():  # noqa: ASYNC110 (polling a condition, not a fixed wait)
            await anyio.sleep(0.01)
    assert condition(), f"{what} did not happen within {timeout} s"


async def test_a_survey_reaches_responders_in_three_processes(
    requester: DistributedEventEmitter, bus_url: str
) -> None:
    async with AsyncExitStack() as stack:
        peers = await start_peers(stack, bus_url, 3)
        for peer in peers:
            await peer.respond("proc.who")
        replies = await requester.survey("proc.who", {"q": 1}, timeout=WAIT, expect=3)
        got = sorted((r.sender, r.service, r.data["pid"], r.data["echo"]) for r in replies)
        assert got == sorted((p.id, f"conformance-{p.name}", p.pid, {"q": 1}) for p in peers)
        assert all(reply.error is None for reply in replies)

        await until(
            lambda: serving(requester, "proc.who") >= {p.id for p in peers},
            "the requester knowing the three responders",
        )
        pids = {(await requester.request("proc.who", n, timeout=WAIT))["pid"] for n in range(30)}
        assert pids == {p.pid for p in peers}  # every responder got some


async def test_a_killed_responder_is_passed_over_and_declared_gone(
    requester: DistributedEventEmitter, bus_url: str
) -> None:
    left: list[PeerInfo] = []
    requester.on_peer("left", left.append)
    timeout = 2.0
    async with AsyncExitStack() as stack:
        doomed, survivor = await start_peers(stack, bus_url, 2, heartbeat_interval=HEARTBEAT)
        for peer in (doomed, survivor):
            await peer.respond("proc.svc")
        await until(
            lambda: serving(requester, "proc.svc") >= {doomed.id, survivor.id},
            "the requester knowing both responders",
        )
        before = set()
        for n in range(20):
            before.add((await requester.request("proc.svc", n, timeout=WAIT))["pid"])
        assert before == {doomed.pid, survivor.pid}

        doomed.process.kill()  # SIGKILL: no bye
        await doomed.process.wait()
        answers: list[int] = []
        timeouts: list[RequestTimeout] = []
        started = time.perf_counter()
        first_answer = 0.0
        for n in range(10):
            try:
                reply = await requester.request("proc.svc", n, timeout=timeout)
            except RequestTimeout as exc:
                timeouts.append(exc)
                continue
            answers.append(reply["pid"])
            first_answer = first_answer or time.perf_counter() - started
        assert len(timeouts) <= 1, f"{len(timeouts)} requests timed out after the kill"
        assert all(exc.responder == doomed.id for exc in timeouts)
        assert answers == [survivor.pid] * (10 - len(timeouts))
        assert first_answer < timeout + 3.0  # at most one timeout before the survivor answers

        await until(
            lambda: any(peer.id == doomed.id for peer in left),
            f"presence declaring the killed responder gone (3 x {HEARTBEAT} s of silence)",
        )
        assert doomed.id not in {peer.id for peer in requester.peers()}
        for n in range(10):
            reply = await requester.request("proc.svc", n, timeout=WAIT)
            assert reply["pid"] == survivor.pid
        assert (await survivor.report())["stats"]["served"] >= 20


async def test_a_responder_in_another_process_fails_cleanly(
    requester: DistributedEventEmitter, bus_url: str
) -> None:
    async with AsyncExitStack() as stack:
        [peer] = await start_peers(stack, bus_url, 1)
        await peer.respond("proc.fail", mode="raise")
        with pytest.raises(nanomitter.RemoteError) as caught:
            await requester.request("proc.fail", timeout=WAIT)
        error = caught.value
        assert (error.type, error.responder, error.service) == (
            "RuntimeError",
            peer.id,
            "conformance-P1",
        )
        assert "refuses 'proc.fail' on purpose" in error.message
        assert await peer.unrespond("proc.fail") is True
        assert await peer.unrespond("proc.fail") is False
        # and the other way round: the peer asks this process's responder
        requester.responder("proc.back", lambda event: {"pid": "parent", "echo": event.data})
        await requester.listening()
        answer = await peer.ask("proc.back", [1, 2], timeout=WAIT)
        assert answer == {"ok": True, "reply": {"pid": "parent", "echo": [1, 2]}}
        nobody = await peer.ask("proc.nobody", timeout=0.5)
        assert nobody["ok"] is False
        assert nobody["raised"]["type"] in ("NoResponders", "RequestTimeout")
