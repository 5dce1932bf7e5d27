"""The seed's stock-price demo: one hub logs every event, several workers emit prices.

    python examples/stockprice.py                    # hub + 3 workers until Ctrl-C
    python examples/stockprice.py --duration 5 --workers 5

Each worker has its own emitter and sends a ``stockprice`` event
(``{"ticker", "price", "n"}``, a random walk) every 300 ms; the hub listens with
``bus.on("*", ...)``, like the original article's master, and prints each event. Stops on
Ctrl-C, SIGTERM or after ``--duration`` seconds, then prints every emitter's ``stats()``.
"""

from __future__ import annotations

import argparse
import math
import random
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import anyio
import anyio.abc

import nanomitter
from nanomitter import DistributedEvent, Stats

# $NANOMITTER_URL, else the seed's default tcp://127.0.0.1:55555: the first emitter binds and
# is the hub (nng bus), the others connect. `--url memory://stockprice` stays in-process.
DEFAULT_URL = nanomitter.default_url()

TOPIC = "stockprice"
HEARTBEAT = "<3"
INTERVAL = 0.3
TICKERS = {
    "AAPL": 251.30,
    "MSFT": 410.20,
    "NVDA": 131.50,
    "AMZN": 186.40,
    "GOOG": 166.80,
    "META": 589.10,
    "TSLA": 248.90,
    "ORCL": 172.60,
}


def ticker_for(index: int) -> tuple[str, float]:
    """Worker ``index``'s ticker and opening price; every worker gets its own ticker."""
    names = list(TICKERS)
    name = names[index % len(names)]
    if index >= len(names):
        name = f"{name}{index // len(names) + 1}"
    return name, TICKERS[names[index % len(names)]]


def say(line: str) -> None:
    """Print one line at once, so a pipe (or a test) sees it as it happens."""
    print(line, flush=True)


@dataclass
class Hub:
    """The seed's master: logs every event on the bus with ``bus.on("*", ...)``."""

    logged: int = 0
    by_sender: dict[str, int] = field(default_factory=dict)
    _arrived: anyio.Event | None = None

    def log(self, event: DistributedEvent) -> None:
        stamp = datetime.now().strftime("%H:%M:%S.%f")[:-3]
        say(f"{stamp}  hub <- {event.sender[:8]}  {describe(event)}")
        if event.topic == HEARTBEAT:
            return  # presence, as in the original: shown, but not a price to tally
        self.logged += 1
        self.by_sender[event.sender] = self.by_sender.get(event.sender, 0) + 1
        arrived, self._arrived = self._arrived, None
        if arrived is not None:
            arrived.set()

    async def wait_for_total(self, total: int, seconds: float) -> None:
        """Let the hub log what the workers sent before they stopped (bounded wait)."""
        with anyio.move_on_after(seconds):
            while self.logged < total:
                if self._arrived is None:
                    self._arrived = anyio.Event()
                await self._arrived.wait()


def describe(event: DistributedEvent) -> str:
    """``stockprice #12   AAPL      251.71``; other events (a foreign peer's) as they are."""
    data = event.data
    if event.topic == HEARTBEAT and isinstance(data, dict):
        return f"<3 heartbeat from {data.get('service')!r}"
    if event.topic == TOPIC and isinstance(data, dict):
        n, ticker, price = data.get("n"), data.get("ticker"), data.get("price")
        if isinstance(n, int) and isinstance(ticker, str) and isinstance(price, int | float):
            return f"{event.topic} #{n:<4} {ticker:<6} {price:>9.2f}"
    return f"{event.topic} {data!r}"


@dataclass
class WorkerReport:
    """What a worker leaves behind for the summary."""

    name: str
    ticker: str
    sender: str = ""
    stats: Stats | None = None


async def worker(
    url: str,
    index: int,
    interval: float,
    rng: random.Random,
    report: WorkerReport,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Emit a random-walk price every ``interval`` seconds until cancelled."""
    ticker, price = ticker_for(index)
    bus = nanomitter.connect(url, service=report.name)
    try:
        async with bus:
            report.sender = bus.id
            task_status.started()
            start = anyio.current_time()
            n = 0
            while True:
                n += 1
                price = max(0.01, price * math.exp(rng.gauss(0.0, 0.004)))
                await bus.emit(TOPIC, {"ticker": ticker, "price": round(price, 2), "n": n})
                # paced from the start, so the rate does not drift with the cost of emit
                await anyio.sleep(max(0.0, start + n * interval - anyio.current_time()))
    finally:
        report.stats = bus.stats()


async def stop_on_signal(
    scope: anyio.CancelScope,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Cancel ``scope`` on Ctrl-C or SIGTERM (where the platform lets us catch them)."""
    try:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()  # from here on a signal stops the demo cleanly
            async for signum in signals:
                say(f"{signal.Signals(signum).name}: stopping")
                scope.cancel()
                return
    except NotImplementedError:  # Windows: Ctrl-C arrives as KeyboardInterrupt instead
        task_status.started()
        await anyio.sleep_forever()


def stats_line(name: str, stats: Stats) -> str:
    return (
        f"  {name:<10} emitted={stats.emitted:<4} received={stats.received:<4} "
        f"delivered={stats.delivered:<4} dropped={stats.dropped} lost={stats.lost} "
        f"decode_errors={stats.decode_errors} listener_errors={stats.listener_errors}"
    )


async def run(args: argparse.Namespace) -> int:
    """The hub and the workers as tasks of this process, each with its own emitter."""
    rng = random.Random(args.seed)
    reports = [WorkerReport(f"worker-{i + 1}", ticker_for(i)[0]) for i in range(args.workers)]
    hub = Hub()
    async with nanomitter.connect(args.url, service="hub") as hub_bus:
        hub_bus.on("*", hub.log)
        with anyio.CancelScope() as stop:
            if args.duration > 0:
                stop.deadline = anyio.current_time() + args.duration
            async with anyio.create_task_group() as tg:
                await tg.start(stop_on_signal, stop)
                until = f"{args.duration:g} s" if args.duration > 0 else "Ctrl-C"
                say(
                    f"stock-price demo on {hub_bus.transport.address}: a hub and "
                    f"{args.workers} worker(s), until {until}"
                )
                for i, report in enumerate(reports):
                    await tg.start(worker, args.url, i, args.interval, rng, report)
                    say(f"{report.name} ({report.sender[:8]}) emits {TOPIC} for {report.ticker}")
        sent = sum(r.stats.emitted for r in reports if r.stats is not None)
        await hub.wait_for_total(sent, seconds=1.0)

    say("stats:")
    say(stats_line("hub", hub_bus.stats()))
    for report in reports:
        if report.stats is not None:
            say(stats_line(report.name, report.stats))
    counts = ", ".join(f"{r.name}={hub.by_sender.get(r.sender, 0)}" for r in reports)
    say(f"hub logged {hub.logged} of {sent} event(s): {counts}")
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The seed's stock-price demo.")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"bus URL (default {DEFAULT_URL})")
    parser.add_argument("--workers", type=int, default=3, help="number of workers (default 3)")
    parser.add_argument(
        "--duration", type=float, default=0, help="seconds to run; 0 = until Ctrl-C (default)"
    )
    parser.add_argument(
        "--interval", type=float, default=INTERVAL, help="seconds between a worker's events"
    )
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--seed", type=int, default=None, help="random seed (repeatable prices)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.interval <= 0 or args.duration < 0:
        parser.error("--interval must be > 0 and --duration >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return anyio.run(run, args, backend=args.backend)
    except KeyboardInterrupt:  # a second Ctrl-C, or a platform without signal receivers
        return 130
    except nanomitter.NanomitterError as exc:  # unknown scheme or option: say so, no traceback
        print(f"stockprice: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
