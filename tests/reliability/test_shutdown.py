"""Closing flushes (issue 8, item 5): emit 10 000 events flat out, then ``aclose()`` at once.

A live subscriber (another emitter: in this process for ``memory://``, in a child process
for nng, ZeroMQ and NATS, whose hub or server runs in a process of its own and stays up) must
receive all 10 000, exactly once and in order. The emitter ends with a marker on another
topic, emitted last, so the test knows when everything that will arrive has arrived.
Figures (emit rate, close time, count) are printed and appended to
``/tmp/nanomitter-shutdown.json``.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from fault_support import END, PROBE, PROBE_EVERY, TICK, WAIT, Child, hub_for, member

import nanomitter
from nanomitter import DistributedEvent

pytestmark = pytest.mark.anyio
COUNT = 10_000
RESULTS = Path("/tmp/nanomitter-shutdown.json")
QUIET = 1.0
"""Seconds without a new event after which a subscriber that missed the end marker is done."""


def record(figures: dict[str, Any]) -> None:
    line = json.dumps(figures)
    print(f"\nshutdown: {line}")
    with RESULTS.open("a") as results:
        results.write(line + "\n")


async def emit_and_close(url: str, probed: Any) -> dict[str, float]:
    """Open an emitter on ``url``, probe until ``probed()`` says the subscriber hears it,
    emit COUNT numbered events flat out and the end marker, close; how long each part took."""
    async with nanomitter.connect(url, heartbeat_interval=0) as bus:
        with anyio.fail_after(WAIT):
            while not await probed():
                await bus.emit(PROBE, {"probe": True})
                await anyio.sleep(PROBE_EVERY)  # pacing of the probes, not synchronisation
        started = time.monotonic()
        for number in range(1, COUNT + 1):
            await bus.emit(TICK, {"n": number})
        await bus.emit(END, {})
        emitted = time.monotonic()
        emit_seconds = emitted - started
    return {
        "emit_seconds": round(emit_seconds, 3),
        "rate": round(COUNT / emit_seconds),
        "close_seconds": round(time.monotonic() - emitted, 3),
    }


async def test_memory_subscriber_gets_every_event_emitted_before_close(
    anyio_backend: str,
) -> None:
    url = f"memory://shutdown-{uuid.uuid4().hex}"
    numbers: list[int] = []
    ended = anyio.Event()

    def on_tick(event: DistributedEvent) -> None:
        numbers.append(int(event.data["n"]))

    async with nanomitter.connect(url, heartbeat_interval=0) as subscriber:
        subscriber.on(TICK, on_tick)
        subscriber.on(END, lambda _: ended.set())

        async def always() -> bool:
            return True

        figures = await emit_and_close(url, always)
        with anyio.move_on_after(WAIT):
            await ended.wait()
        stats = subscriber.stats()
    record({"transport": "memory", "backend": anyio_backend, "received": len(numbers), **figures})
    assert numbers == list(range(1, COUNT + 1))
    assert (stats.lost, stats.dropped) == (0, 0)


async def subscriber_result(child: Child, closed_at: float) -> dict[str, Any]:
    """The child's status once the end marker arrived, or once nothing more arrived for
    QUIET seconds after ``closed_at`` (the marker itself can be lost)."""
    progress = {"received": -1, "since": 0.0}

    def settled(status: dict[str, Any]) -> bool:
        if status.get("ended", False):
            return True
        if status.get("t", 0.0) < closed_at:
            return False
        if status["received"] != progress["received"]:
            progress.update(received=status["received"], since=status["t"])
        return bool(status["t"] - progress["since"] >= QUIET)

    return await child.status(settled, "neither ended nor went quiet")


@pytest.mark.parametrize(
    "transport",
    ["nng", "zmq"],
)
async def test_subscriber_in_another_process_gets_every_event_emitted_before_close(
    anyio_backend: str, transport: str, tmp_path: Path
) -> None:
    await check_remote(transport, anyio_backend, tmp_path)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # nats-py: asyncio only
async def test_nats_subscriber_gets_every_event_emitted_before_close(
    anyio_backend: str, tmp_path: Path
) -> None:
    await check_remote("nats", anyio_backend, tmp_path)


async def check_remote(transport: str, backend: str, tmp_path: Path) -> None:
    async with (
        hub_for(transport, tmp_path) as bus,
        member("sub", bus.url, "S", backend) as subscriber,
    ):

        async def probed() -> bool:
            return bool(subscriber.latest().get("probed", False))

        figures = await emit_and_close(bus.url, probed)
        status = await subscriber_result(subscriber, time.monotonic())
    received, last = status["received"], status["last"]
    stats = status["stats"]
    record(
        {
            "transport": transport,
            "backend": backend,
            "received": received,
            "last": last,
            "missing": COUNT - received,
            "lost": stats["lost"],
            "dropped": stats["dropped"],
            "gaps": status["gaps"][:5],
            **figures,
        }
    )
    assert (status["first"], last, status["out_of_order"]) == (1, COUNT, 0), status
    assert received == COUNT, status
    assert (stats["lost"], stats["dropped"]) == (0, 0), stats
