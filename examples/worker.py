"""The seed's worker: emits a ``stockprice`` event every 300 ms.

    python examples/worker.py          # as many as you like, after the master
    TICKER=MSFT python examples/worker.py

The bus is ``$NANOMITTER_URL``, else ``tcp://127.0.0.1:55555``. The price is a random walk.
Stops cleanly on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import math
import os
import random
import signal

import anyio

import nanomitter

TICKER = os.environ.get("TICKER", "AAPL")


async def emit_prices(bus: nanomitter.DistributedEventEmitter) -> None:
    price = 250.0
    while True:
        price *= math.exp(random.gauss(0.0, 0.004))
        data = {"ticker": TICKER, "price": round(price, 2)}
        await bus.emit({"topic": "stockprice", "data": data})  # the seed's form
        await anyio.sleep(0.3)


async def main() -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with (
            nanomitter.connect(service="worker") as bus,
            anyio.create_task_group() as tasks,
        ):
            tasks.start_soon(emit_prices, bus)
            print(f"worker {bus.id} on {bus.transport.address}, emitting {TICKER}", flush=True)
            async for signum in signals:
                print(f"{signal.Signals(signum).name}: stopping", flush=True)
                tasks.cancel_scope.cancel()
                break
        print(f"stats: {bus.stats()}", flush=True)


if __name__ == "__main__":
    anyio.run(main)
