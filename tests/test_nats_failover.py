"""Fault test on a NATS cluster: SIGKILL the server a node is connected to while events flow.

A publisher P and a subscriber S sit on different servers of a three-server cluster; P emits
numbered events at ~200/s. The server of one of them (the parameter) is killed with SIGKILL;
the node must resume through another server within 5 s, S's ``stats().lost`` must count
exactly the events that never arrived (no duplicates, nothing reordered), and the killed
server, restarted on the same ports, must rejoin the cluster: a node connected to it alone
hears P, who is on another server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from itertools import pairwise
from typing import Any

import anyio
import anyio.to_thread
import pytest

import nanomitter
from nanomitter import ConnectionStateChanged, DistributedEvent, DistributedEventEmitter
from nanomitter.transports.nats import NatsTransport
from nats_support import NatsCluster, NatsServer, nats_cluster, nats_server
from peers import Recorder

__all__ = ["nats_cluster", "nats_server"]  # fixtures: imported so that pytest finds them

pytestmark = pytest.mark.anyio
TOPIC = "fail.tick"
PACE = 0.005
"""Seconds between two emits of P (~200 events/s): pacing, not synchronisation."""
RECOVERY_LIMIT = 5.0
AFTER_RECOVERY = 1.5
"""Seconds P keeps emitting once S hears it again (pacing of the stream's tail)."""
WAIT = 20.0
PLACEMENT_TRIES = 12


@pytest.fixture
def anyio_backend() -> str:
    """nats-py runs on asyncio only."""
    return "asyncio"


@contextmanager
def deadline(seconds: float, what: str) -> Iterator[None]:
    """``anyio.fail_after`` whose timeout says what was missing."""
    try:
        with anyio.fail_after(seconds):
            yield
    except TimeoutError:
        raise AssertionError(f"{what} within {seconds} s") from None


class Timed(Recorder):
    """A Recorder that also notes when each event arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def __call__(self, event: Any) -> None:
        self.times.append(time.monotonic())
        super().__call__(event)


class Ticks:
    """S's listener on TOPIC: P's numbered events apart from the warm-up probes."""

    def __init__(self) -> None:
        self.numbered = Timed()
        self.probes = Recorder()

    def __call__(self, event: DistributedEvent) -> None:
        if isinstance(event.data, dict) and "n" in event.data:
            self.numbered(event)
        else:
            self.probes(event)

    @property
    def numbers(self) -> list[int]:
        return [int(event.data["n"]) for event in self.numbered.events]

    def last(self) -> int:
        events = self.numbered.events
        return int(events[-1].data["n"]) if events else 0


class Publisher:
    """P's stream: {"n": 1}, {"n": 2}, ... every PACE seconds until told to stop."""

    def __init__(self, bus: DistributedEventEmitter) -> None:
        self.bus = bus
        self.sent = 0
        self.running = True

    async def run(self) -> None:
        while self.running:
            number = self.sent + 1
            await self.bus.emit(TOPIC, {"n": number})
            self.sent = number
            await anyio.sleep(PACE)


def port_of(bus: DistributedEventEmitter) -> int:
    """The client port of the server ``bus`` is connected to now."""
    transport = bus.transport
    assert isinstance(transport, NatsTransport)
    client = transport.client
    assert client is not None and client.is_connected, f"{bus} is not connected"
    url = client.connected_url
    assert url is not None and url.port is not None
    return url.port


def states(problems: Recorder) -> list[str]:
    return [p.state for p in problems.events if isinstance(p, ConnectionStateChanged)]


async def open_on_another_server(
    stack: AsyncExitStack, url: str, avoid: int
) -> tuple[DistributedEventEmitter, Recorder]:
    """An emitter on ``url`` that is not on the server at port ``avoid``.

    nats-py shuffles the server list (the transport has no ``dont_randomize``), so connect
    and look; on the wrong server, close and try again."""
    for _ in range(PLACEMENT_TRIES):
        problems = Recorder()
        attempt = AsyncExitStack()
        bus = await attempt.enter_async_context(nanomitter.connect(url, on_error=problems))
        if port_of(bus) != avoid:
            stack.push_async_exit(attempt)
            return bus, problems
        await attempt.aclose()
    raise AssertionError(f"{PLACEMENT_TRIES} connections all landed on the server at {avoid}")


async def warm_up(server: NatsServer, ticks: Ticks) -> None:
    """Return once S's interest in TOPIC has reached ``server`` (P's).

    Interest crosses routes asynchronously: a probe from another sender on that server is
    repeated every 50 ms until S hears one. P's own seq numbers stay untouched, so S counts
    every one of P's events from the first."""
    async with nanomitter.connect(server.url) as prober:
        with deadline(WAIT, f"S never heard a probe sent through {server.name}"):
            probe = 0
            while not ticks.probes.events:
                probe += 1
                await prober.emit(TOPIC, {"probe": probe})
                with anyio.move_on_after(0.05):
                    await ticks.probes.wait(1)


@pytest.mark.parametrize("victim_role", ["subscriber", "publisher"])
async def test_a_node_resumes_through_another_server_and_counts_the_gap(
    nats_cluster: NatsCluster, anyio_backend: str, victim_role: str
) -> None:
    cluster = nats_cluster
    async with AsyncExitStack() as stack:
        s_problems = Recorder()
        s = await stack.enter_async_context(nanomitter.connect(cluster.url, on_error=s_problems))
        ticks = Ticks()
        s.on(TOPIC, ticks)
        await s.listening()
        p, p_problems = await open_on_another_server(stack, cluster.url, avoid=port_of(s))
        s_server, p_server = cluster.server_of_port(port_of(s)), cluster.server_of_port(port_of(p))
        await warm_up(p_server, ticks)

        victim, victim_node = (s_server, s) if victim_role == "subscriber" else (p_server, p)
        publisher = Publisher(p)
        async with anyio.create_task_group() as tg:
            tg.start_soon(publisher.run)
            with deadline(WAIT, "S did not receive P's first 50 events"):
                await ticks.numbered.wait(50)

            killed_at = time.monotonic()
            await anyio.to_thread.run_sync(victim.kill)  # returns once the process is reaped
            boundary = publisher.sent  # every event after this one was emitted to a dead server
            with deadline(WAIT, f"S heard nothing emitted after the kill of {victim.name}"):
                await ticks.numbered.wait_until(lambda: ticks.last() > boundary)
            first_after = next(i for i, number in enumerate(ticks.numbers) if number > boundary)
            recovery = ticks.numbered.times[first_after] - killed_at
            await anyio.sleep(AFTER_RECOVERY)  # the stream goes on after recovery (pacing)
            publisher.running = False

        final = publisher.sent + 1  # a marker after the stream: no tail can go uncounted
        await p.emit(TOPIC, {"n": final, "final": True})
        with deadline(WAIT, f"S did not receive the final marker {final}"):
            await ticks.numbered.wait_until(lambda: ticks.last() == final)

        numbers = ticks.numbers
        lost = s.stats().lost
        missing = final - len(numbers)
        print(
            f"nats failover ({victim_role}'s server killed): resumed {recovery:.2f} s after "
            f"SIGKILL (after event {boundary}); S lost {lost} of {final} events"
        )
        assert recovery < RECOVERY_LIMIT, f"S heard P again {recovery:.2f} s after the kill"
        assert numbers[0] == 1, f"S's first event from P was {numbers[0]}, not 1"
        assert all(a < b for a, b in pairwise(numbers)), "duplicates or disorder at S"
        assert lost == missing, f"S counted {lost} lost, but {missing} of {final} never arrived"
        assert s.stats().reordered == 0
        assert p.stats().emitted == final
        assert p.stats().dropped == 0, "P's buffer while disconnected overflowed"

        # the node whose server died reports the disconnect and the reconnect; the other nothing
        victim_problems = s_problems if victim_node is s else p_problems
        with deadline(WAIT, f"the {victim_role} did not report its reconnect"):
            await victim_problems.wait(2)
        assert states(victim_problems) == ["disconnected", "reconnected"], victim_problems.events
        other_problems = p_problems if victim_node is s else s_problems
        assert other_problems.events == [], f"the other node was disturbed: {other_problems.events}"
        assert victim_problems.events == [
            problem
            for problem in victim_problems.events
            if isinstance(problem, ConnectionStateChanged)
        ]
        other_node = p if victim_node is s else s
        for node, expected in ((victim_node, 1), (other_node, 0)):
            figures = node.transport.statistics()
            assert (figures["disconnects"], figures["reconnects"]) == (expected, expected), figures
        assert port_of(victim_node) != victim.port
        assert not victim.running

        # restarted on the same ports, the killed server rejoins the cluster: a node on it
        # alone hears P, who is on another server
        await anyio.to_thread.run_sync(victim.restart)
        for server in cluster.servers:
            await anyio.to_thread.run_sync(server.wait_routes, 2)
        assert port_of(p) != victim.port
        async with nanomitter.connect(victim.url) as r:
            assert port_of(r) == victim.port
            heard = Recorder()
            r.on(TOPIC, heard)
            await r.listening()
            with deadline(10, f"R on the restarted {victim.name} never heard P"):
                number = final
                while not heard.events:
                    number += 1
                    await p.emit(TOPIC, {"n": number})
                    with anyio.move_on_after(0.05):
                        await heard.wait(1)
            assert heard.events[0].sender == p.id
