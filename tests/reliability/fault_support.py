"""Publishers, subscribers and hubs in their own processes, for the fault tests (issue 8).

As a script, ``python fault_support.py ROLE URL NAME BACKEND [OPTIONS-JSON]`` runs one bus
member in a child process:

- ``pub`` emits warm-up probes on ``fault.probe`` every 50 ms until told ``start``, then
  ``{"n": 1, "t": <emit time>}, {"n": 2, ...}`` on ``fault.tick`` at ``rate`` events per second
  (an absolute schedule that never bursts to catch up after a stall) until told ``stop``
  (``more`` emits a given count more; ``end`` starts end markers on ``fault.end``, another
  topic, so they leave the ticks' numbering alone).
- ``sub`` listens on ``fault.>``; it notes what it received (count, first and last number,
  gaps, anything out of order, the longest silence between two ticks) and, on ``mark``, the
  arrival time of the first tick emitted after a given instant (recovery times).

Both print one JSON status line every 100 ms (``"t"`` is CLOCK_MONOTONIC, comparable across
processes), read JSON commands on stdin (``{"cmd": ...}``) and end with a ``{"closed": true}``
line after ``aclose()``. The test side drives them with :func:`member` and :class:`Child`;
hubs to SIGKILL and restart are :class:`peers.HubProcess` (nng, ZeroMQ) and
:class:`nats_support.NatsServer` (NATS), behind :func:`hub_for`.
"""

from __future__ import annotations

import bisect
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.abc
import anyio.to_thread
import msgspec

PROBE = "fault.probe"
TICK = "fault.tick"
END = "fault.end"
PATTERN = "fault.>"
STATUS_EVERY = 0.1
PROBE_EVERY = 0.05
MAX_GAPS_REPORTED = 50


# ---------------------------------------------------------------- the child processes


class Problems:
    """The error hook of a child: counts every problem by kind, keeps the first few texts."""

    def __init__(self) -> None:
        self.kinds: dict[str, int] = {}
        self.texts: list[str] = []

    def __call__(self, problem: Exception) -> None:
        kind = str(getattr(problem, "kind", type(problem).__name__))
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if len(self.texts) < 10:
            self.texts.append(f"{type(problem).__name__}: {problem}"[:300])


def _say(line: dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)


async def _commands(handle: Callable[[dict[str, Any]], Any]) -> None:
    """Hand each JSON line from stdin to ``handle``; cancellable (no thread blocked in read)."""
    fd = sys.stdin.fileno()
    os.set_blocking(fd, False)
    buffer = b""
    while True:
        await anyio.wait_readable(fd)
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            continue
        if not chunk:
            return
        *lines, buffer = (buffer + chunk).split(b"\n")
        for line in lines:
            if line.strip():
                await handle(json.loads(line))


async def _publisher(url: str, name: str, options: dict[str, Any]) -> None:
    import nanomitter

    rate = float(options.get("rate", 200))
    pad = "x" * int(options.get("pad", 0))
    problems = Problems()
    started, closing = anyio.Event(), anyio.Event()
    changed = anyio.Event()
    budget: int | None = None  # emit until ``sent`` reaches it (None: until told to stop)
    sent = 0
    window_max = 0.0  # the longest emit() since the last status line
    longest = 0.0
    started_at = 0.0

    # one heartbeat when it opens and none after (the test reads every line it prints), but
    # the bye when it closes: it tells the receivers the last number (a lost tail counts)
    async with nanomitter.connect(
        url, service=name, on_error=problems, heartbeat_interval=3600
    ) as bus:

        def status(**extra: Any) -> None:
            nonlocal window_max
            _say(
                {
                    "t": time.monotonic(),
                    "sent": sent,
                    "started_at": started_at,
                    "max_emit": window_max,
                    "longest_emit": longest,
                    "stats": msgspec.structs.asdict(bus.stats()),
                    "problems": problems.kinds,
                    **extra,
                }
            )
            window_max = 0.0

        async def probes(topic: str, until: anyio.Event) -> None:
            probe = 0
            while not until.is_set():
                probe += 1
                await bus.emit(topic, {"probe": probe})
                with anyio.move_on_after(PROBE_EVERY):
                    await until.wait()

        async def stream() -> None:
            nonlocal sent, window_max, longest, started_at, changed
            await started.wait()
            period = 1 / rate
            started_at = next_at = time.monotonic()
            while True:
                if budget is not None and sent >= budget:
                    status(idle=True, problem_texts=problems.texts)
                    await changed.wait()
                    changed = anyio.Event()
                    next_at = time.monotonic()
                    continue
                now = time.monotonic()
                if next_at > now:
                    await anyio.sleep(next_at - now)
                before = time.monotonic()
                await bus.emit(TICK, {"n": sent + 1, "t": before, "pad": pad})
                sent += 1
                took = time.monotonic() - before
                window_max, longest = max(window_max, took), max(longest, took)
                next_at = max(next_at + period, time.monotonic())

        async def handle(command: dict[str, Any]) -> None:
            nonlocal budget
            if command["cmd"] == "start":
                started.set()
            elif command["cmd"] == "stop":  # stop the stream; an idle status line says so
                budget = sent
            elif command["cmd"] == "more":  # emit ``count`` more events, then idle again
                budget = sent + int(command["count"])
            elif command["cmd"] == "end":  # an end marker on END every 50 ms from now on
                tg.start_soon(probes, END, closing)
            elif command["cmd"] == "close":
                closing.set()
            changed.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(_commands, handle)
            tg.start_soon(probes, PROBE, started)
            tg.start_soon(_report_until, closing, status)
            tg.start_soon(stream)
            _say({"ready": True, "id": bus.id})
            await closing.wait()
            tg.cancel_scope.cancel()
    _say({"closed": True, "sent": sent, "stats": msgspec.structs.asdict(bus.stats())})


async def _report_until(closing: anyio.Event, status: Callable[[], None]) -> None:
    """A child's status line every STATUS_EVERY seconds until it closes."""
    while not closing.is_set():
        status()
        with anyio.move_on_after(STATUS_EVERY):
            await closing.wait()


class Arrivals:
    """What a subscriber received on ``fault.tick``, by the numbers its publisher gave."""

    def __init__(self) -> None:
        self.received = 0
        self.first = 0
        self.last = 0
        self.out_of_order = 0
        self.missing = 0  # numbers skipped between first and last (the gaps seen here)
        self.gaps: list[tuple[int, int]] = []
        self.emitted: list[float] = []  # emit times of the ticks, in arrival order
        self.arrived: list[float] = []
        self.silence = 0.0  # longest pause between two ticks since the last status line
        self.longest_silence = 0.0
        self.probed = False
        self.ended = False

    def __call__(self, event: Any) -> None:
        now = time.monotonic()
        if event.topic == PROBE:
            self.probed = True
            return
        if event.topic == END:
            self.ended = True
            return
        n = int(event.data["n"])
        if self.received and n <= self.last:
            self.out_of_order += 1
        else:
            if self.received and n > self.last + 1:
                self.missing += n - self.last - 1
                if len(self.gaps) < MAX_GAPS_REPORTED:
                    self.gaps.append((self.last + 1, n - 1))
            self.last = n
        if not self.received:
            self.first = n
        elif self.arrived:
            pause = now - self.arrived[-1]
            self.silence = max(self.silence, pause)
            self.longest_silence = max(self.longest_silence, pause)
        self.received += 1
        self.emitted.append(float(event.data.get("t", 0.0)))
        self.arrived.append(now)

    def first_emitted_after(self, instant: float) -> dict[str, float] | None:
        """The tick first emitted after ``instant`` that arrived here: its number, times."""
        index = bisect.bisect_right(self.emitted, instant)
        if index >= len(self.emitted):
            return None
        return {"emitted": self.emitted[index], "arrived": self.arrived[index]}


async def _subscriber(url: str, name: str, options: dict[str, Any]) -> None:
    import nanomitter

    problems = Problems()
    arrivals = Arrivals()
    marks: dict[str, float] = {}
    closing = anyio.Event()

    async with nanomitter.connect(
        url, service=name, on_error=problems, heartbeat_interval=0
    ) as bus:
        bus.on(PATTERN, arrivals)
        await bus.listening()

        def status(**extra: Any) -> None:
            resumed = {}
            for key, instant in marks.items():
                found = arrivals.first_emitted_after(instant)
                if found is not None:
                    resumed[key] = found
            _say(
                {
                    "t": time.monotonic(),
                    "probed": arrivals.probed,
                    "ended": arrivals.ended,
                    "received": arrivals.received,
                    "first": arrivals.first,
                    "last": arrivals.last,
                    "missing": arrivals.missing,
                    "gaps": arrivals.gaps,
                    "out_of_order": arrivals.out_of_order,
                    "silence": arrivals.silence,
                    "longest_silence": arrivals.longest_silence,
                    "resumed": resumed,
                    "stats": msgspec.structs.asdict(bus.stats()),
                    "problems": problems.kinds,
                    **extra,
                }
            )
            arrivals.silence = 0.0

        async def handle(command: dict[str, Any]) -> None:
            if command["cmd"] == "mark":
                marks[str(command["id"])] = float(command["t"])
            elif command["cmd"] == "close":
                closing.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(_commands, handle)
            tg.start_soon(_report_until, closing, status)
            _say({"ready": True, "id": bus.id})
            await closing.wait()
            status(final=True, problem_texts=problems.texts)
            tg.cancel_scope.cancel()
    _say({"closed": True, "stats": msgspec.structs.asdict(bus.stats())})


def main(argv: list[str]) -> None:
    role, url, name, backend = argv[:4]
    options = json.loads(argv[4]) if len(argv) > 4 else {}
    run = {"pub": _publisher, "sub": _subscriber}[role]
    anyio.run(run, url, name, options, backend=backend)


# ---------------------------------------------------------------- the test side

WAIT = 30.0
"""Generous deadline for anything a child must do (two shared, noisy cores)."""


class Child:
    """A running ``fault_support.py`` child: its status lines, commands, signals."""

    def __init__(self, name: str, process: anyio.abc.Process, output: Any) -> None:
        self.name = name
        self.process = process
        self.output = output
        self._parsed: list[dict[str, Any]] = []
        self._seen = 0

    def statuses(self) -> list[dict[str, Any]]:
        lines = self.output.lines
        for line in lines[self._seen :]:
            if line.startswith("{"):
                self._parsed.append(json.loads(line))
        self._seen = len(lines)
        return self._parsed

    def latest(self) -> dict[str, Any]:
        statuses = [s for s in self.statuses() if "t" in s]
        assert statuses, f"{self.name} has printed no status yet: {self.output.lines[-5:]}"
        return statuses[-1]

    def log_tail(self) -> str:
        return "\n".join(line for line in self.output.lines[-15:] if not line.startswith("{"))

    async def status(
        self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = WAIT
    ) -> dict[str, Any]:
        """The first status line (earlier ones included) for which ``predicate`` holds."""
        try:
            line = await self.output.wait_for(
                lambda text: text.startswith("{") and predicate(json.loads(text)), timeout
            )
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: {what} within {timeout} s; last status "
                f"{self.statuses()[-1] if self.statuses() else None}; log:\n{self.log_tail()}"
            ) from None
        return dict(json.loads(line))

    async def send(self, **command: Any) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send((json.dumps(command) + "\n").encode())

    def signal(self, number: signal.Signals) -> None:
        self.process.send_signal(number)


@asynccontextmanager
async def member(
    role: str, url: str, name: str, backend: str, **options: Any
) -> AsyncIterator[Child]:
    """A ``pub`` or ``sub`` child on ``url``, ready (connected, listening); always reaped."""
    from peers import running

    command = [sys.executable, __file__, role, url, name, backend, json.dumps(options)]
    async with running(command, stdin=True) as (process, output):
        child = Child(name, process, output)
        await child.status(lambda s: bool(s.get("ready")), "did not start")
        yield child


class Hub(Protocol):
    """A hub or server process that a test can SIGKILL and start again at the same address."""

    def start(self) -> None: ...
    def kill(self) -> None: ...


@dataclass
class Bus:
    """A bus whose hub runs in its own process: ``url`` is for members, ``hub`` to kill."""

    transport: str
    url: str
    hub: Hub

    async def kill_hub(self) -> float:
        """SIGKILL the hub; the instant it was reaped (nothing it forwards is emitted later:
        an event emitted between the call and the signal may still get through)."""
        await anyio.to_thread.run_sync(self.hub.kill)
        return time.monotonic()

    async def start_hub(self) -> float:
        """Start the hub again on the same address; the instant it was ready."""
        await anyio.to_thread.run_sync(self.hub.start)
        return time.monotonic()


def configured_nats_server(directory: Path, extra_config: str) -> Any:
    """A :class:`nats_support.NatsServer` whose config file ends with ``extra_config``."""
    from nats_support import NatsServer

    class Configured(NatsServer):
        def config(self) -> str:
            return super().config() + extra_config

    return Configured(directory)


@asynccontextmanager
async def hub_for(
    transport: str, directory: Path, *, hub_options: str = "", nats_config: str = ""
) -> AsyncIterator[Bus]:
    """A started hub in its own process (nng: role=hub, ZeroMQ: the proxy, NATS: a
    nats-server) and the URL members use (role=node, so that none of them takes over);
    killed and reaped however the block ends."""
    from peers import HubProcess, free_port
    from zmq_support import free_port_pair

    hub: Any
    if transport == "nats":
        hub = configured_nats_server(directory / "nats", nats_config)
        url = hub.url
    else:
        if transport == "nng":
            address = f"tcp://127.0.0.1:{free_port()}"
        elif transport == "zmq":
            address = f"zmq+tcp://127.0.0.1:{free_port_pair()}"
        else:
            raise ValueError(transport)
        hub = HubProcess(address + (f"?{hub_options}" if hub_options else ""))
        url = f"{address}?role=node"
    try:
        await anyio.to_thread.run_sync(hub.start)
        yield Bus(transport, url, hub)
    finally:
        await anyio.to_thread.run_sync(hub.kill)


def rate_between(publisher: Child, start: float, end: float) -> tuple[float, float]:
    """The publisher's emit rate (events/s) between two instants, from its status lines,
    and the longest single ``emit()`` it reported in that window."""
    lines = [s for s in publisher.statuses() if "t" in s and "sent" in s]
    inside = [s for s in lines if start <= s["t"] <= end]
    before = [s for s in lines if s["t"] <= start]
    if not inside:
        return 0.0, 0.0
    first = before[-1] if before else inside[0]
    last = inside[-1]
    elapsed = last["t"] - first["t"]
    rate = (last["sent"] - first["sent"]) / elapsed if elapsed > 0 else 0.0
    return rate, max(s["max_emit"] for s in inside)


if __name__ == "__main__":
    main(sys.argv[1:])
