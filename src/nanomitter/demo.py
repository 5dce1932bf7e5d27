"""The seed's stock-price demo as real processes: ``python -m nanomitter.demo``.

The scenario of the original nanomitter article, one process per role: a hub (the article's
master) logs every event with ``bus.on("*", ...)``, and each worker emits a ``stockprice`` (a
random walk per ticker) every 300 ms. The launcher starts the hub, waits until it is ready,
starts the workers, relays every process's output with a label naming it, stops them all
cleanly and sums up which process sent what. It needs only the base install.

``python -m nanomitter.demo hub`` and ``python -m nanomitter.demo worker --index N`` are the
roles the launcher starts; they read the bus URL from ``$NANOMITTER_URL`` (so credentials never
show in a process list) and stop on SIGINT, SIGTERM, or when their launcher is gone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
from anyio.streams.text import TextReceiveStream

import nanomitter
from nanomitter.connect import URL_ENVIRONMENT_VARIABLE
from nanomitter.transports.registry import transport_class
from nanomitter.transports.url import BusURL

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
READY = "ready: "
"""A child's line starting with this says it has joined the bus (the launcher relays it too)."""
SUMMARY = "@summary "
"""A child's last line: its figures as JSON, for the launcher's summary (not relayed)."""
START_TIMEOUT = 30.0
GRACE = 5.0
"""Seconds a child gets to close its emitter after SIGTERM before it is killed."""
QUIET = 0.3
"""When stopping, the hub keeps logging until the bus has been quiet this long (bounded)."""
PARENT_POLL = 0.5


class DemoError(Exception):
    """A reason the demo cannot run at all, said in one line (exit code 2)."""


def say(line: str) -> bool:
    """Print one line at once, so a pipe (the launcher, a test) sees it as it happens.

    False once nobody reads our output any more (``| head``, a launcher that died).
    """
    try:
        print(line, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # quiet from now on
        return False
    return True


def ticker_for(index: int) -> tuple[str, float]:
    """Worker ``index``'s (from 1) ticker and opening price; every worker gets its own."""
    names = list(TICKERS)
    name = names[(index - 1) % len(names)]
    suffix = (index - 1) // len(names)
    return (f"{name}{suffix + 1}" if suffix else name), TICKERS[name]


# ---------------------------------------------------------------------------- the URL


def role_urls(url: str) -> tuple[str, str]:
    """The hub's and the workers' URLs; raises :class:`DemoError` for a URL that cannot work.

    On transports with roles (nng, ZeroMQ) the hub must be the one that binds (``role=hub``)
    and workers only join (``role=node``), unless the URL already picks a role. On NATS the
    server is the hub and both use the URL as it is.
    """
    try:
        parsed = BusURL.parse(url)
        transport = transport_class(parsed.scheme)
        parsed.check_options(transport.options)
    except (nanomitter.NanomitterError, ValueError, TypeError) as exc:
        raise DemoError(str(exc)) from None
    if not transport.capabilities.crosses_processes or parsed.scheme.endswith("inproc"):
        raise DemoError(
            f"{parsed.scheme}:// cannot cross processes, and the demo runs its hub and workers "
            "as separate processes; use tcp://, ipc://, zmq+tcp:// or nats://"
        )
    if "role" not in transport.options or "role" in parsed.options:
        return url, url
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}role=hub", f"{url}{separator}role=node"


# ---------------------------------------------------------------------------- child roles


@dataclass
class StopRequest:
    """Set on SIGINT/SIGTERM, or when the launcher that started this process is gone."""

    reason: str = ""
    event: anyio.Event = field(default_factory=anyio.Event)

    def set(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()

    async def wait(self) -> str:
        await self.event.wait()
        return self.reason


async def _watch_signals(
    stop: StopRequest, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    try:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                stop.set(signal.Signals(signum).name)
    except NotImplementedError:  # Windows: Ctrl-C arrives as KeyboardInterrupt instead
        task_status.started()


async def _watch_parent(stop: StopRequest, parent: int) -> None:
    """A child runs in its own session (Ctrl-C goes to the launcher, which stops children in
    order), so it must notice by itself when the launcher dies without stopping it."""
    while os.getppid() == parent:  # noqa: ASYNC110 (nothing signals a parent's death portably)
        await anyio.sleep(PARENT_POLL)
    stop.set("the launcher is gone")


@asynccontextmanager
async def stop_requested() -> AsyncIterator[StopRequest]:
    """Watch for the reasons to stop while the block runs; signals are caught from entry."""
    stop = StopRequest()
    async with anyio.create_task_group() as tg:
        await tg.start(_watch_signals, stop)
        tg.start_soon(_watch_parent, stop, os.getppid())
        try:
            yield stop
        finally:
            tg.cancel_scope.cancel()


def where(bus: nanomitter.DistributedEventEmitter) -> str:
    """How this emitter is attached: bound as the hub, or joined to one."""
    is_hub = getattr(bus.transport, "is_hub", None)
    if is_hub is None:
        return f"joined {bus.transport.address} (its server is the hub)"
    return f"{'the hub at' if is_hub else 'joined the hub at'} {bus.transport.address}"


@dataclass
class HubLog:
    """The seed's master: logs every event, says which process sent it, counts per sender."""

    by_sender: dict[str, dict[str, Any]] = field(default_factory=dict)
    _arrived: anyio.Event = field(default_factory=anyio.Event)

    def log(self, event: nanomitter.DistributedEvent) -> None:
        data = event.data
        who = f"sender {event.sender[:8]}"
        if isinstance(data, dict) and isinstance(data.get("worker"), str):
            who = f"{data['worker']} (pid {data.get('pid')})"
        if event.topic == HEARTBEAT and isinstance(data, dict):
            say(f"{HEARTBEAT} heartbeat from service {data.get('service')!r} ({who})")
        elif event.topic == TOPIC and isinstance(data, dict) and _is_price(data):
            say(f"{TOPIC} from {who}: {data['ticker']} {data['price']:.2f}")
        else:
            say(f"{event.topic} from {who}: {data!r}")
        if event.topic == TOPIC:
            tally = self.by_sender.setdefault(event.sender, {"count": 0})
            tally["count"] += 1
            if isinstance(data, dict):
                tally.update(name=data.get("worker"), pid=data.get("pid"))
        self._arrived.set()

    async def until_quiet(self, quiet: float, limit: float) -> None:
        """Return once no event arrived for ``quiet`` seconds (at most ``limit``): what the
        workers sent before they stopped is logged before the hub closes."""
        with anyio.move_on_after(limit):
            while True:
                self._arrived = anyio.Event()
                with anyio.move_on_after(quiet) as waiting:
                    await self._arrived.wait()
                if waiting.cancelled_caught:
                    return


def _is_price(data: dict[Any, Any]) -> bool:
    return isinstance(data.get("ticker"), str) and isinstance(data.get("price"), int | float)


def _figures(stats: nanomitter.Stats) -> dict[str, int]:
    return {
        "emitted": stats.emitted,
        "received": stats.received,
        "lost": stats.lost,
        "dropped": stats.dropped,
        "decode_errors": stats.decode_errors,
    }


async def hub_role(url: str) -> int:
    """Log every event on the bus until asked to stop; then report what came from whom."""
    hub = HubLog()
    async with nanomitter.connect(url, service="hub") as bus:
        bus.on("*", hub.log)
        async with stop_requested() as stop:
            say(f"{READY}{where(bus)}, logging every event with on('*')")
            say(f"{await stop.wait()}: stopping")
            await hub.until_quiet(QUIET, limit=2.0)
    summary = {"role": "hub", "pid": os.getpid(), "by_sender": hub.by_sender}
    say(SUMMARY + json.dumps({**summary, **_figures(bus.stats())}))
    return 0


async def emit_prices(
    bus: nanomitter.DistributedEventEmitter, name: str, index: int, interval: float
) -> None:
    """A random walk of this worker's ticker, one ``stockprice`` every ``interval`` seconds."""
    ticker, price = ticker_for(index)
    rng = random.Random()
    start = anyio.current_time()
    n = 0
    while True:
        n += 1
        price = max(0.01, price * math.exp(rng.gauss(0.0, 0.004)))
        data = {"ticker": ticker, "price": round(price, 2), "worker": name, "pid": os.getpid()}
        await bus.emit({"topic": TOPIC, "data": data})  # the seed's form; pid: who sent it
        # paced from the start, so the rate does not drift with the cost of emit
        await anyio.sleep(max(0.0, start + n * interval - anyio.current_time()))


async def worker_role(url: str, index: int, interval: float) -> int:
    """Emit prices until asked to stop; then report how many."""
    name = f"worker-{index}"
    async with (
        nanomitter.connect(url, service=name) as bus,
        stop_requested() as stop,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(emit_prices, bus, name, index, interval)
        ticker = ticker_for(index)[0]
        say(f"{READY}{name} {where(bus)}; emits {TOPIC} for {ticker} every {interval:g} s")
        say(f"{await stop.wait()}: stopping")
        tg.cancel_scope.cancel()
    summary = {"role": "worker", "name": name, "pid": os.getpid(), "sender": bus.id}
    say(SUMMARY + json.dumps({**summary, **_figures(bus.stats())}))
    return 0


# ---------------------------------------------------------------------------- the launcher


@dataclass
class Child:
    """One process the launcher started, and what it said about itself."""

    label: str
    name: str
    process: anyio.abc.Process
    ready: anyio.Event = field(default_factory=anyio.Event)
    exited: anyio.Event = field(default_factory=anyio.Event)
    summary: dict[str, Any] | None = None

    @property
    def clean(self) -> bool:
        """It closed its emitter and exited 0 (or a stop reached it before it had started)."""
        code = self.process.returncode
        return code == 0 or (code == -signal.SIGTERM and not self.ready.is_set())


class Launcher:
    """Starts the hub, then the workers; relays their output; stops them in order."""

    def __init__(self, url: str, seconds: float, workers: int) -> None:
        self.hub_url, self.worker_url = role_urls(url)
        self.url = url
        self.seconds = seconds
        self.workers = workers
        self.children: list[Child] = []
        self.width = max(len("demo"), len(f"w{workers}"))
        self.running: anyio.CancelScope | None = None  # made in run(): it needs the event loop
        self.stop_called = False
        self.stopping = False
        self.failure = ""
        self.flowing_since: float | None = None
        self.flowed = 0.0

    def say(self, label: str, pid: int, line: str) -> None:
        if not say(f"{label:<{self.width}} [pid {pid}] {line}"):
            self.stop()  # `| head` has seen enough: stop as on Ctrl-C

    def note(self, line: str) -> None:
        self.say("demo", os.getpid(), line)

    def stop(self, reason: str = "", *, failed: bool = False) -> None:
        if failed and not self.failure:
            self.failure = reason
            self.note(f"error: {reason}")
        self.stop_called = True
        if self.running is not None:
            self.running.cancel()

    async def run(self) -> int:
        until = f"{self.seconds:g} s of prices" if self.seconds > 0 else "Ctrl-C"
        self.note(
            f"stock-price demo on {BusURL.parse(self.url)}: a hub and {self.workers} "
            f"worker(s), each its own process, until {until}"
        )
        self.running = anyio.CancelScope()
        if self.stop_called:
            self.running.cancel()
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self._watch_signals)
                with self.running:
                    if await self._start(tg):
                        await self._flow()
                with anyio.CancelScope(shield=True):
                    await self._stop_children()
                tg.cancel_scope.cancel()
        finally:
            for child in self.children:  # only if something above went wrong
                if child.process.returncode is None:
                    child.process.kill()
        if self.flowing_since is not None:
            self._summary()
        clean = all(child.clean for child in self.children)
        return 0 if clean and not self.failure else 1

    async def _watch_signals(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The first SIGINT/SIGTERM stops the demo in order; a second one kills at once."""
        try:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                task_status.started()
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if not self.stop_called:
                        self.note(f"{name}: stopping the workers, then the hub")
                        self.stop()
                    else:
                        self.note(f"{name} again: killing every process of the demo")
                        self._kill([c for c in self.children if not c.exited.is_set()])
        except NotImplementedError:  # Windows: Ctrl-C arrives as KeyboardInterrupt instead
            task_status.started()

    async def _spawn(
        self, tg: anyio.abc.TaskGroup, label: str, name: str, role: list[str], url: str
    ) -> Child:
        with anyio.CancelScope(shield=True):  # a started process is always tracked
            process = await anyio.open_process(
                [sys.executable, "-m", "nanomitter.demo", *role],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={**os.environ, URL_ENVIRONMENT_VARIABLE: url},
                start_new_session=True,  # Ctrl-C reaches the launcher only; it stops them in order
            )
        child = Child(label, name, process)
        self.children.append(child)
        tg.start_soon(self._relay, child)
        return child

    async def _relay(self, child: Child) -> None:
        """Print the child's lines under its label; note its summary; notice it exiting."""
        assert child.process.stdout is not None
        pending = ""
        async for chunk in TextReceiveStream(child.process.stdout, errors="replace"):
            *lines, pending = (pending + chunk).split("\n")
            for line in lines:
                self._line(child, line)
        if pending:
            self._line(child, pending)
        code = await child.process.wait()
        child.exited.set()
        if not self.stopping:
            when = "while running" if child.ready.is_set() else "before it was ready"
            self.stop(f"{child.name} exited {when} (exit code {code})", failed=True)

    def _line(self, child: Child, line: str) -> None:
        if line.startswith(SUMMARY):
            try:
                child.summary = json.loads(line.removeprefix(SUMMARY))
                return
            except ValueError:
                pass
        if line.startswith(READY):
            child.ready.set()
        self.say(child.label, child.process.pid, line)

    async def _start(self, tg: anyio.abc.TaskGroup) -> bool:
        """The hub first (it binds); the workers once it is ready. True once all joined."""
        hub = await self._spawn(tg, "hub", "hub", ["hub"], self.hub_url)
        try:
            with anyio.fail_after(START_TIMEOUT):
                await hub.ready.wait()
        except TimeoutError:
            self.stop(f"the hub was not ready within {START_TIMEOUT:g} s", failed=True)
            return False
        workers = [
            await self._spawn(
                tg, f"w{i}", f"worker-{i}", ["worker", f"--index={i}"], self.worker_url
            )
            for i in range(1, self.workers + 1)
        ]
        try:
            with anyio.fail_after(START_TIMEOUT):
                for worker in workers:
                    await worker.ready.wait()
        except TimeoutError:
            self.stop(f"the workers were not ready within {START_TIMEOUT:g} s", failed=True)
            return False
        return True

    async def _flow(self) -> None:
        """Let prices flow for ``seconds`` (0: until a signal); the clock starts once all
        workers have joined, so a slow start does not eat the demo."""
        self.flowing_since = anyio.current_time()
        if self.seconds > 0:
            self.note(f"prices are flowing; stopping in {self.seconds:g} s (Ctrl-C stops sooner)")
            await anyio.sleep(self.seconds)
        else:
            self.note("prices are flowing; Ctrl-C stops the demo")
            await anyio.sleep_forever()

    async def _stop_children(self) -> None:
        """Workers first, so the hub logs everything they sent; then the hub."""
        self.stopping = True
        if self.flowing_since is not None:
            self.flowed = anyio.current_time() - self.flowing_since
        await self._terminate([c for c in self.children if c.name != "hub"])
        await self._terminate([c for c in self.children if c.name == "hub"])

    async def _terminate(self, children: list[Child]) -> None:
        alive = [child for child in children if not child.exited.is_set()]
        for child in alive:
            with suppress(ProcessLookupError):  # it exited on its own meanwhile
                child.process.terminate()
        with anyio.move_on_after(GRACE):
            for child in alive:
                await child.exited.wait()
        self._kill([child for child in alive if not child.exited.is_set()])  # out of grace
        with anyio.move_on_after(GRACE):
            for child in alive:
                await child.exited.wait()

    def _kill(self, children: list[Child]) -> None:
        for child in children:
            if child.process.returncode is None:
                self.note(f"killing {child.name} (pid {child.process.pid})")
                child.process.kill()

    def _summary(self) -> None:
        hub = next((c for c in self.children if c.name == "hub"), None)
        tally = hub.summary.get("by_sender", {}) if hub and hub.summary else {}
        received = {entry.get("pid"): entry.get("count", 0) for entry in tally.values()}
        self.note(f"summary after {self.flowed:.1f} s of prices:")
        for child in self.children:
            figures = child.summary
            who = f"{child.name:<{len(f'worker-{self.workers}')}} (pid {child.process.pid})"
            if figures is None:
                self.note(f"  {who}  no summary (exit code {child.process.returncode})")
            elif child.name == "hub":
                logged = sum(entry.get("count", 0) for entry in tally.values())
                self.note(
                    f"  {who}  logged {logged} {TOPIC} event(s) from {len(tally)} sender(s); "
                    f"lost={figures['lost']} dropped={figures['dropped']} "
                    f"decode_errors={figures['decode_errors']}"
                )
            else:
                self.note(
                    f"  {who}  emitted {figures['emitted']}, the hub received "
                    f"{received.get(figures['pid'], 0)}; "
                    f"lost={figures['lost']} dropped={figures['dropped']}"
                )


# ---------------------------------------------------------------------------- entry points


def run(url: str | None = None, seconds: float = 10.0, workers: int = 2) -> int:
    """Run the demo: a hub process and ``workers`` worker processes for ``seconds`` of
    prices (0: until Ctrl-C or SIGTERM). Returns the exit code: 0 when every process
    stopped cleanly, 1 when one failed, 2 when the URL cannot work (said in one line)."""
    if workers < 1 or seconds < 0:
        print("nanomitter demo: need workers >= 1 and seconds >= 0", file=sys.stderr)
        return 2
    try:
        launcher = Launcher(url if url is not None else nanomitter.default_url(), seconds, workers)
    except DemoError as exc:
        print(f"nanomitter demo: {exc}", file=sys.stderr)
        return 2
    try:
        return anyio.run(launcher.run)
    except KeyboardInterrupt:  # a platform without signal receivers
        return 130


def run_role(argv: Sequence[str]) -> int:
    """``hub`` or ``worker --index N``: one process of the demo, on ``$NANOMITTER_URL``."""
    parser = argparse.ArgumentParser(prog="python -m nanomitter.demo", description=__doc__)
    parser.add_argument("role", choices=["hub", "worker"])
    parser.add_argument("--url", default=None, help="bus URL (default: $NANOMITTER_URL)")
    parser.add_argument("--index", type=int, default=1, help="the worker's number (from 1)")
    parser.add_argument("--interval", type=float, default=INTERVAL, help="seconds per price")
    args = parser.parse_args(argv)
    url = args.url or nanomitter.default_url()
    code = 0
    try:
        if args.role == "hub":
            code = anyio.run(hub_role, url)
        else:
            code = anyio.run(worker_role, url, args.index, args.interval)
    except (nanomitter.NanomitterError, OSError, ValueError) as exc:  # taken address, no hub
        print(f"{args.role}: {exc}", file=sys.stderr, flush=True)
        code = 2
    except KeyboardInterrupt:
        code = 130
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["hub"], ["worker"]):
        return run_role(args)
    parser = argparse.ArgumentParser(
        prog="python -m nanomitter.demo",
        description="The seed's stock-price demo: a hub and workers as separate processes.",
        epilog="The roles it starts: 'python -m nanomitter.demo hub|worker --help'.",
    )
    default = nanomitter.default_url()
    parser.add_argument("--url", default=default, help=f"bus URL (default {default})")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="seconds of prices; 0 = until Ctrl-C"
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    options = parser.parse_args(args)
    if options.workers < 1 or options.seconds < 0:
        parser.error("--workers must be at least 1 and --seconds at least 0")
    return run(options.url, options.seconds, options.workers)


if __name__ == "__main__":
    sys.exit(main())
