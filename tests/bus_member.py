"""A bus member for the failover tests (nng, ZeroMQ): emits ticks, reports what it receives.

Run as ``python tests/bus_member.py URL NAME BACKEND`` (asyncio or trio). Every 100 ms it
prints one JSON status line (its clock is CLOCK_MONOTONIC, comparable across processes).
A line ``stop`` on stdin stops the ticks; it then prints a final status line
with ``"final": true`` and exits.
"""

from __future__ import annotations

import json
import sys
import time

import anyio

import nanomitter

TICK = 0.01


async def main(url: str, name: str) -> None:
    received: dict[str, int] = {}
    last_seen: dict[str, int] = {}
    first_seen: dict[str, int] = {}
    stop = anyio.Event()

    def on_tick(event: nanomitter.DistributedEvent) -> None:
        sender = event.topic.split(".", 1)[1]
        received[sender] = received.get(sender, 0) + 1
        last_seen[sender] = event.data["n"]
        first_seen.setdefault(sender, event.data["n"])

    async with nanomitter.connect(url, service=name) as bus:
        transport = bus.transport
        assert hasattr(transport, "is_hub"), "a transport with hub election (nng, zmq)"
        bus.on("tick.>", on_tick)
        sent = 0

        def status(final: bool = False) -> None:
            stats = bus.stats()
            line = {
                "name": name,
                "t": time.monotonic(),
                "hub": transport.is_hub,
                "sent": sent,
                "received": received,
                "last_seen": last_seen,
                "first_seen": first_seen,
                "lost": stats.lost,
                "final": final,
            }
            print(json.dumps(line), flush=True)

        async def ticks() -> None:
            nonlocal sent
            while not stop.is_set():
                sent += 1
                await bus.emit(f"tick.{name}", {"n": sent})
                await anyio.sleep(TICK)

        async def reports() -> None:
            while not stop.is_set():
                status()
                await anyio.sleep(0.1)

        async def commands() -> None:
            async with anyio.wrap_file(sys.stdin) as stdin:
                async for line in stdin:
                    if line.strip() == "stop":
                        stop.set()
                        return

        async with anyio.create_task_group() as tg:
            tg.start_soon(ticks)
            tg.start_soon(reports)
            tg.start_soon(commands)
            await stop.wait()
        with anyio.move_on_after(1):  # let the last ticks of the others arrive
            await anyio.sleep_forever()
        status(final=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], backend=sys.argv[3])
