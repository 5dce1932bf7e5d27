"""Rule 8 with role=auto: SIGKILL the hub of three real processes; a survivor takes over.

Runs on nng (a survivor binds the bus) and ZeroMQ (a survivor runs the proxy).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from peers import Output, free_port, running
from zmq_support import free_port_pair

pytestmark = pytest.mark.anyio
MEMBER = Path(__file__).with_name("bus_member.py")
URLS = {
    "nng": lambda: f"tcp://127.0.0.1:{free_port()}?election_ms=300",
    "zmq": lambda: f"zmq+tcp://127.0.0.1:{free_port_pair()}?election_ms=300",
}
RECOVERY_LIMIT = 3.0


class Member:
    def __init__(self, name: str, process: anyio.abc.Process, output: Output) -> None:
        self.name = name
        self.process = process
        self.output = output

    def statuses(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.output.lines if line.startswith("{")]

    async def status(self, predicate: Any, timeout: float = 20) -> dict[str, Any]:
        line = await self.output.wait_for(
            lambda text: text.startswith("{") and predicate(json.loads(text)), timeout
        )
        return dict(json.loads(line))

    async def request_stop(self) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(b"stop\n")

    async def final(self) -> dict[str, Any]:
        return await self.status(lambda s: s["final"])


@asynccontextmanager
async def member(url: str, name: str, backend: str) -> AsyncIterator[Member]:
    command = [sys.executable, str(MEMBER), url, name, backend]
    async with running(command, stdin=True) as (process, output):
        yield Member(name, process, output)


@pytest.mark.parametrize("transport", sorted(URLS))
async def test_survivors_elect_a_new_hub_within_3_s_and_count_the_gap(
    anyio_backend: str, transport: str
) -> None:
    url = URLS[transport]()
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(member(url, "p1", anyio_backend))
        await first.status(lambda s: s["hub"])  # p1 binds first: the hub
        second = await stack.enter_async_context(member(url, "p2", anyio_backend))
        third = await stack.enter_async_context(member(url, "p3", anyio_backend))
        for me, other in ((second, "p3"), (third, "p2"), (first, "p2")):
            await me.status(lambda s, other=other: s["received"].get(other, 0) > 10)
        assert not second.statuses()[-1]["hub"]
        assert not third.statuses()[-1]["hub"]

        before = {m.name: m.statuses()[-1]["received"] for m in (second, third)}
        first.process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        await first.process.wait()

        # both survivors hear each other again, and one of them is the hub
        resumed = []
        for me, other in ((second, "p3"), (third, "p2")):
            seen = before[me.name].get(other, 0)
            status = await me.status(
                lambda s, other=other, seen=seen: s["received"].get(other, 0) > seen + 5
            )
            resumed.append(status["t"] - killed_at)
        recovery = max(resumed)
        assert recovery < RECOVERY_LIMIT, f"traffic resumed after {recovery:.2f} s"
        await second.status(lambda s: True)
        hubs = [m.statuses()[-1]["hub"] for m in (second, third)]
        assert hubs.count(True) == 1, f"exactly one survivor must be the hub, got {hubs}"

        for survivor in (second, third):  # stop both first: a stopped hub forwards no tails
            await survivor.request_stop()
        finals = {m.name: await m.final() for m in (second, third)}
        for name, other in (("p2", "p3"), ("p3", "p2")):
            final = finals[name]
            first, last = final["first_seen"][other], final["last_seen"][other]
            got = final["received"][other]
            assert last == finals[other]["sent"], "the tail after recovery must arrive"
            # every event of the other survivor it missed since it first heard it is counted
            # (p1's tail cannot be: nothing from p1 follows it), so lost is exactly that gap
            assert final["lost"] == (last - first + 1) - got, final
            if transport == "nng":  # bus0 drops at once; zmq publishers wait (bounded) instead
                assert final["lost"] > 0, "events emitted with no hub must show as lost"
        lost = [final["lost"] for final in finals.values()]
        print(f"{transport} failover: resumed {recovery:.2f} s after SIGKILL; lost {lost}")
