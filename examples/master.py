"""The seed's master: joins the bus and logs every event on it.

    python examples/master.py          # start it first: it binds and becomes the hub

The bus is ``$NANOMITTER_URL``, else ``tcp://127.0.0.1:55555`` (nng: the first process binds
and is the hub, later ones connect). Stops cleanly on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import signal

import anyio

import nanomitter


def log(event: nanomitter.DistributedEvent) -> None:
    """The seed's ``on("*", logger)``: every event, whoever sent it."""
    print(f"{event.topic} from {event.sender}: {event.data}", flush=True)


async def main() -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with nanomitter.connect(service="master") as bus:
            bus.on("*", log)
            print(f"master {bus.id} on {bus.transport.address}, logging every event", flush=True)
            async for signum in signals:
                print(f"{signal.Signals(signum).name}: stopping", flush=True)
                break
        print(f"stats: {bus.stats()}", flush=True)


if __name__ == "__main__":
    anyio.run(main)
