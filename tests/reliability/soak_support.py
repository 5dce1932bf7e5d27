"""Child processes and bookkeeping of the slow-consumer and soak tests (issue 8).

As a script it runs bus members in a child process (BACKEND is asyncio or trio)::

    python soak_support.py publisher URL BACKEND           # the soak's (and the flood's) publisher
    python soak_support.py subscriber URL BACKEND NAME     # a soak subscriber
    python soak_support.py memory BACKEND SUBSCRIBERS      # memory://: the publisher and the
                                                           # subscribers in one process
    python soak_support.py slow-node URL BACKEND           # one node with stalled listeners
    python soak_support.py slow-memory BACKEND             # the same with its publisher, memory://

Every child prints JSON lines ``{"who": ..., "what": ..., ...}`` and reads commands on stdin,
one per line. Events travel on one topic, ``tick``, as ``{"i": n, "p": phase, "ts": ns}``: ``i``
counts every event the publisher emitted (1, 2, 3 ...: the subscriber's own loss accounting,
independent of nanomitter's sequence numbers), ``ts`` is ``time.time_ns()`` at the emit (one
machine: comparable across processes). The publisher's phases:

- ``probe`` every 20 ms until the first command (subscribers say ``primed`` at the first event);
- ``burst SECONDS [TURN]``: flat out (``burst``); with TURN, yielding to the event loop after
  every TURN events (1: as a paced stream emits, so ZeroMQ coalesces no more than it would in
  one; without: 64 at a time, yielding only where ``emit`` does); then ``fence`` every 10 ms
  until the next command; a subscriber reports what it got of the burst at its first fence;
- ``soak RATE SECONDS``: ``soak`` events paced at RATE per second, a pause of 0.5 s, then
  ``end`` markers every 10 ms until the next command. The markers are on the same topic, so a
  subscriber's ``stats().lost`` also counts the soak's tail (the last events, which no later
  ``soak`` event follows); each marker carries what was sent, and a subscriber reports its
  final figures at its first marker;
- ``quit``: every child closes its emitters, prints ``closed`` and exits.

The slow node (``slow-node``) listens on ``tick`` with a fast sync listener, an async listener
stalled until released, a fast async listener and an async listener that takes 1 s per event
until released; ``finish`` releases the stalled ones, closes the emitter (which lets them drain
what their queues accepted) and prints the final counts.

The test side (:class:`Fleet`, :class:`Child`, :class:`RssSampler`, the report) is at the end.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from array import array
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel

import nanomitter
from nanomitter import OverflowProblem, Problem
from nanomitter.core.report import LogProblems
from nanomitter.machine import describe

if TYPE_CHECKING:
    from peers import Output

TOPIC = "tick"
PROBE_EVERY = 0.02
FENCE_EVERY = 0.01
END_PAUSE = 0.5
"""Silence between the last soak event and the first end marker."""
STATUS_EVERY = 0.5
RESERVOIR = 1 << 15
"""Latency samples a subscriber keeps (a systematic sample; fixed memory)."""
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1024 * 1024
SCRIPT = Path(__file__).resolve()
TESTS = SCRIPT.parent.parent


# ---------------------------------------------------------------------------- small helpers


def soak_seconds() -> float:
    """``make soak DURATION=N`` -> N (default 60), as in tests/conftest.py (repeated here:
    the children import this module without pytest)."""
    return float(os.environ.get("NANOMITTER_SOAK_SECONDS", "60"))


def rss_of(pid: int) -> int | None:
    """Resident memory of process ``pid`` in bytes (/proc/PID/statm), None once it is gone."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return None


def peak_rss() -> int:
    """This process's peak resident memory in bytes (VmHWM in /proc/self/status)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def say(who: str, what: str, **fields: Any) -> None:
    print(json.dumps({"who": who, "what": what, **fields}), flush=True)


def percentile(ordered: Sequence[int], q: float) -> int:
    """Nearest-rank percentile of sorted values (0 for none)."""
    if not ordered:
        return 0
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class Reservoir:
    """A systematic sample of at most RESERVOIR values in a preallocated array: when full,
    every other sample is kept and the stride doubles, so memory never grows."""

    __slots__ = ("count", "samples", "seen", "stride")

    def __init__(self) -> None:
        self.samples = array("q", bytes(8 * RESERVOIR))
        self.count = 0
        self.stride = 1
        self.seen = 0

    def add(self, value: int) -> None:
        self.seen += 1
        if self.seen % self.stride:
            return
        if self.count == RESERVOIR:
            half = RESERVOIR // 2
            self.samples[:half] = self.samples[::2]
            self.count = half
            self.stride *= 2
        self.samples[self.count] = value
        self.count += 1

    def sorted(self) -> list[int]:
        return sorted(self.samples[: self.count])


class Problems:
    """A child's error hook: counts problems by kind (and phase), logs them rate limited."""

    def __init__(self, log: logging.Logger | None = None) -> None:
        self.kinds: dict[str, int] = {}
        self.texts: list[str] = []
        self.overflow: dict[str, int] = {}
        self.phase = "start"
        self._log = LogProblems(log=log) if log is not None else LogProblems()

    def __call__(self, problem: Problem) -> None:
        kind = f"{self.phase}:{getattr(problem, 'kind', type(problem).__name__)}"
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if isinstance(problem, OverflowProblem):
            self.overflow[problem.where] = self.overflow.get(problem.where, 0) + 1
        if len(self.texts) < 10:
            self.texts.append(f"{type(problem).__name__}: {problem}"[:300])
        self._log(problem)


class CountingHandler(logging.Handler):
    """Counts the log records the rate-limited default hook lets through."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage()[:200])


class Commands:
    """Lines from stdin, and a way to wait for the next one (or give up after a while)."""

    def __init__(self) -> None:
        self.pending: list[str] = []
        self._arrived = anyio.Event()

    def push(self, line: str) -> None:
        self.pending.append(line)
        self._arrived.set()
        self._arrived = anyio.Event()

    async def read(self) -> None:
        """Queue stdin's lines; at its end (the test went away), ``quit`` and ``finish``."""
        async with anyio.wrap_file(sys.stdin) as stdin:
            async for line in stdin:
                if line.strip():
                    self.push(line.strip())
        self.push("quit")
        self.push("finish")

    async def wait(self, timeout: float | None = None) -> None:
        """Return when a command is pending, or after ``timeout`` seconds."""
        if self.pending:
            return
        with anyio.move_on_after(timeout):
            await self._arrived.wait()

    async def next(self) -> list[str]:
        while not self.pending:
            await self.wait()
        return self.pending.pop(0).split()


# ---------------------------------------------------------------------------- the publisher


async def publish(
    bus: nanomitter.DistributedEventEmitter, commands: Commands, problems: Problems
) -> None:
    """The publisher's phases (see the module docstring) until ``quit``; ``problems`` (its
    error hook) learns the phase."""
    emit = bus.emit
    now_ns = time.time_ns
    clock = time.monotonic
    i = 0
    idle = "probe"
    idle_every = PROBE_EVERY
    idle_extra: dict[str, Any] = {}
    while True:
        while not commands.pending:
            i += 1
            await emit(TOPIC, {"i": i, "p": idle, "ts": now_ns(), **idle_extra})
            await commands.wait(idle_every)
        command = await commands.next()
        if command[0] == "quit":
            return
        problems.phase = command[0]
        if command[0] == "burst":
            seconds = float(command[1])
            turn = int(command[2]) if len(command) > 2 else None
            start_ns = now_ns()
            deadline = clock() + seconds
            sent = 0
            while clock() < deadline:
                for _ in range(turn or 64):
                    i += 1
                    await emit(TOPIC, {"i": i, "p": "burst", "ts": now_ns()})
                sent += turn or 64
                if turn:
                    await anyio.lowlevel.checkpoint()
            end_ns = now_ns()
            say("pub", "burst", sent=sent, last=i, start_ns=start_ns, end_ns=end_ns)
            idle, idle_every, idle_extra = "fence", FENCE_EVERY, {}
            problems.phase = idle
        elif command[0] == "soak":
            rate, seconds = float(command[1]), float(command[2])
            total = max(1, int(rate * seconds))
            first = i + 1
            start = clock()
            start_ns = now_ns()
            sent = 0
            behind = 0.0
            while sent < total:
                elapsed = clock() - start
                due = min(total, int(elapsed * rate) + 1)
                behind = max(behind, elapsed - sent / rate)
                while sent < due:
                    i += 1
                    sent += 1
                    await emit(TOPIC, {"i": i, "p": "soak", "ts": now_ns()})
                if sent < total:
                    wait = start + sent / rate - clock()
                    if wait > 0:
                        await anyio.sleep(wait)
                    else:
                        await anyio.lowlevel.checkpoint()
            end_ns = now_ns()
            say(
                "pub",
                "soak",
                sent=sent,
                first=first,
                last=i,
                start_ns=start_ns,
                end_ns=end_ns,
                rate=rate,
                behind_max=behind,
                stats=_stats(bus),
            )
            await anyio.sleep(END_PAUSE)  # the pause before the marker: the tail is what it is
            idle, idle_every = "end", FENCE_EVERY
            idle_extra = {"sent": sent, "first": first, "last": i}
            problems.phase = idle
        else:
            raise ValueError(f"unknown command {command!r}")


def _stats(bus: nanomitter.DistributedEventEmitter) -> dict[str, int]:
    stats = bus.stats()
    return {name: getattr(stats, name) for name in stats.__struct_fields__}


# ---------------------------------------------------------------------------- the subscriber


class Tally:
    """A soak subscriber's sync listener: counts per phase, gaps in ``i``, latency."""

    def __init__(self, who: str, bus: nanomitter.DistributedEventEmitter, problems: Problems):
        self.who = who
        self.bus = bus
        self.problems = problems
        self.got = 0
        self.last = 0
        self.observed = 0  # events missing between two that arrived (gaps in i)
        self.backwards = 0  # duplicates or reordering (must stay 0)
        self.burst_got = 0
        self.burst_last_ns = 0
        self.soak_got = 0
        self.soak_first = 0
        self.soak_last = 0
        self.lat_max = 0
        self.lats = Reservoir()
        self.primed = self.burst_reported = self.final = False

    def __call__(self, event: nanomitter.DistributedEvent) -> None:
        data = event.data
        i = data["i"]
        last = self.last
        if last:
            if i > last + 1:
                self.observed += i - last - 1
            elif i <= last:
                self.backwards += 1
        self.last = i
        self.got += 1
        phase = data["p"]
        if phase == "soak":
            lat = time.time_ns() - data["ts"]
            self.soak_got += 1
            self.soak_last = i
            if not self.soak_first:
                self.soak_first = i
                self.problems.phase = phase
            self.lat_max = max(self.lat_max, lat)
            self.lats.add(lat)
            return
        if phase == "burst":
            self.burst_got += 1
            self.burst_last_ns = time.time_ns()
            self.problems.phase = phase
            return
        self.problems.phase = phase
        if not self.primed:
            self.primed = True
            say(self.who, "primed", i=i)
        if phase == "fence" and not self.burst_reported:
            self.burst_reported = True
            say(
                self.who,
                "burst",
                got=self.burst_got,
                last_ns=self.burst_last_ns,
                observed=self.observed,
                stats=_stats(self.bus),
            )
        elif phase == "end" and not self.final:
            self.final = True
            ordered = self.lats.sorted()
            say(
                self.who,
                "final",
                got=self.got,
                soak_got=self.soak_got,
                soak_first=self.soak_first,
                soak_last=self.soak_last,
                sent=data["sent"],
                first=data["first"],
                last=data["last"],
                end_i=i,
                observed=self.observed,
                backwards=self.backwards,
                stats=_stats(self.bus),
                transport=dict(self.bus.transport.statistics()),
                lat_p50=percentile(ordered, 50),
                lat_p99=percentile(ordered, 99),
                lat_max=self.lat_max,
                lat_samples=len(ordered),
                problems=self.problems.kinds,
                problem_texts=self.problems.texts,
            )


@asynccontextmanager
async def subscriber(url: str, who: str) -> AsyncIterator[Tally]:
    problems = Problems()
    bus = nanomitter.connect(url, on_error=problems)
    tally = Tally(who, bus, problems)
    bus.on(TOPIC, tally)
    async with bus:
        await bus.listening()
        say(who, "ready", pid=os.getpid())
        yield tally
    say(
        who,
        "closed",
        stats=_stats(bus),
        got=tally.got,
        problems=problems.kinds,
        problem_texts=problems.texts,
    )


# ---------------------------------------------------------------------------- the slow node


async def slow_node(url: str, commands: Commands) -> None:
    """The slow-consumer node (see the module docstring), until ``finish``."""
    log = logging.getLogger(f"soak.slow-node.{os.getpid()}")
    log.propagate = False
    handler = CountingHandler()
    log.addHandler(handler)
    problems = Problems(log)
    release = anyio.Event()
    counts = {"sync": 0, "async": 0, "forever": 0, "sleepy": 0}
    gaps = {"last": 0, "observed": 0, "backwards": 0}

    def fast_sync(event: nanomitter.DistributedEvent) -> None:
        counts["sync"] += 1
        i = event.data["i"]
        last = gaps["last"]
        if last:
            if i > last + 1:
                gaps["observed"] += i - last - 1
            elif i <= last:
                gaps["backwards"] += 1
        gaps["last"] = i
        if counts["sync"] == 1:
            say("node", "primed", i=i)

    async def stalled_forever(event: nanomitter.DistributedEvent) -> None:
        counts["forever"] += 1
        await release.wait()

    async def fast_async(event: nanomitter.DistributedEvent) -> None:
        counts["async"] += 1

    async def stalled_sleepy(event: nanomitter.DistributedEvent) -> None:
        counts["sleepy"] += 1
        with anyio.move_on_after(1.0):  # 1 s per event until released
            await release.wait()

    bus = nanomitter.connect(url, on_error=problems, close_timeout=10)
    for listener in (fast_sync, stalled_forever, fast_async, stalled_sleepy):
        bus.on(TOPIC, listener)
    opened = time.monotonic()
    async with bus:
        await bus.listening()
        say("node", "ready", pid=os.getpid())
        async with anyio.create_task_group() as tg:

            async def status() -> None:  # for a failing test's output
                while True:
                    stats = bus.stats()
                    say(
                        "node",
                        "status",
                        received=stats.received,
                        dropped=stats.dropped,
                        counts=counts,
                    )
                    await anyio.sleep(STATUS_EVERY)

            tg.start_soon(status)
            while await commands.next() != ["finish"]:
                pass
            tg.cancel_scope.cancel()
        hwm = peak_rss()
        stalled = dict(counts)  # the calls before the release (the stalled one: 1)
        release.set()
        await bus.aclose()  # the stalled listeners, released, drain what their queues took
    say(
        "node",
        "final",
        stats=_stats(bus),
        counts=counts,
        before_release=stalled,
        observed=gaps["observed"],
        backwards=gaps["backwards"],
        overflow=problems.overflow,
        problems=problems.kinds,
        problem_texts=problems.texts,
        log_lines=len(handler.records),
        log_dropped_lines=sum(1 for text in handler.records if text.startswith("dropped an")),
        log_samples=handler.records[:3],
        lifetime=time.monotonic() - opened,
        hwm=hwm,
        transport={k: int(v) for k, v in bus.transport.statistics().items()},
    )


# ---------------------------------------------------------------------------- child entry points


def connect_url(url: str) -> str:
    """Members join the hub another process runs (nng, ZeroMQ); NATS and memory as given."""
    if url.startswith(("tcp://", "zmq+tcp://")):
        return url + ("&" if "?" in url else "?") + "role=node"
    return url


def publisher_bus(url: str, problems: Problems) -> nanomitter.DistributedEventEmitter:
    """A publisher's emitter. It sends no heartbeat, hence no bye: the figures compare
    ``lost`` with the gaps the listeners saw (a bye would add a flood's tail when it gets
    through; tests/test_tail.py and the faults' phase 4 check that)."""
    return nanomitter.connect(url, on_error=problems, heartbeat_interval=0)


async def run_publisher(url: str) -> None:
    commands = Commands()
    async with anyio.create_task_group() as tg:
        tg.start_soon(commands.read)
        problems = Problems()
        async with publisher_bus(connect_url(url), problems) as bus:
            say("pub", "ready", pid=os.getpid())
            await publish(bus, commands, problems)
        say("pub", "closed", stats=_stats(bus), problems=problems.kinds, texts=problems.texts)
        tg.cancel_scope.cancel()


async def run_subscriber(url: str, who: str) -> None:
    commands = Commands()
    async with anyio.create_task_group() as tg:
        tg.start_soon(commands.read)
        async with subscriber(connect_url(url), who):
            while (await commands.next())[0] != "quit":
                pass
        tg.cancel_scope.cancel()


async def run_memory(count: int) -> None:
    """memory://: a publisher and ``count`` subscribers, each its own emitter, one process."""
    url = f"memory://soak-{os.getpid()}"
    commands = Commands()
    async with anyio.create_task_group() as tg:
        tg.start_soon(commands.read)
        async with AsyncExitStack() as stack:
            for index in range(count):
                await stack.enter_async_context(subscriber(url, f"sub{index}"))
            problems = Problems()
            async with publisher_bus(url, problems) as bus:
                say("pub", "ready", pid=os.getpid())
                await publish(bus, commands, problems)
            say("pub", "closed", stats=_stats(bus), problems=problems.kinds, texts=problems.texts)
        tg.cancel_scope.cancel()


async def run_slow_node(url: str) -> None:
    commands = Commands()
    async with anyio.create_task_group() as tg:
        tg.start_soon(commands.read)
        await slow_node(connect_url(url), commands)
        tg.cancel_scope.cancel()


async def run_slow_memory() -> None:
    """The slow node and its publisher in one process (memory:// is in-process)."""
    url = f"memory://slow-{os.getpid()}"
    node_commands, pub_commands = Commands(), Commands()

    async def read() -> None:  # "finish" is the node's; the rest is the publisher's
        async with anyio.wrap_file(sys.stdin) as stdin:
            async for line in stdin:
                if line.strip():
                    target = node_commands if line.strip() == "finish" else pub_commands
                    target.push(line.strip())
        node_commands.push("finish")
        pub_commands.push("quit")

    async def publisher() -> None:
        problems = Problems()
        async with publisher_bus(url, problems) as bus:
            say("pub", "ready", pid=os.getpid())
            await publish(bus, pub_commands, problems)
        say("pub", "closed", stats=_stats(bus), problems=problems.kinds, texts=problems.texts)

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        tg.start_soon(publisher)
        await slow_node(url, node_commands)
        tg.cancel_scope.cancel()


def main(argv: Sequence[str]) -> None:
    role, *args = argv
    if role == "publisher":
        url, backend = args
        anyio.run(run_publisher, url, backend=backend)
    elif role == "subscriber":
        url, backend, who = args
        anyio.run(run_subscriber, url, who, backend=backend)
    elif role == "memory":
        backend, count = args
        anyio.run(run_memory, int(count), backend=backend)
    elif role == "slow-node":
        url, backend = args
        anyio.run(run_slow_node, url, backend=backend)
    elif role == "slow-memory":
        (backend,) = args
        anyio.run(run_slow_memory, backend=backend)
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1:])


# ---------------------------------------------------------------------------- the test side


@dataclass
class Child:
    """A child process of this script (or a hub), its output and its JSON messages."""

    name: str
    process: anyio.abc.Process
    output: Output

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    async def expect(self, who: str, what: str, timeout: float = 30) -> dict[str, Any]:
        """The first ``what`` message of ``who``, waiting for it (no sleeps)."""

        def matches(line: str) -> bool:
            message = _message(line)
            return message is not None and message["who"] == who and message["what"] == what

        try:
            line = await self.output.wait_for(matches, timeout)
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: no {what!r} from {who} within {timeout:g} s "
                f"(exit code {self.process.returncode}); its output ends:\n{self.tail()}"
            ) from None
        message = _message(line)
        assert message is not None
        return message

    async def send(self, command: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(command.encode() + b"\n")

    def tail(self, lines: int = 25) -> str:
        return "\n".join(line[:400] for line in self.output.lines[-lines:])


def _message(line: str) -> dict[str, Any] | None:
    if not line.startswith('{"who"'):
        return None
    try:
        message: dict[str, Any] = json.loads(line)
    except ValueError:
        return None
    return message


class Fleet:
    """The children of one test: started in an exit stack that kills and reaps them all.

    ``route`` says which child speaks for (and takes the commands of) each ``who``: on
    ``memory://`` the publisher and the subscribers share one process.
    """

    def __init__(self, stack: AsyncExitStack) -> None:
        self.stack = stack
        self.children: dict[str, Child] = {}
        self.route: dict[str, Child] = {}

    async def start(
        self, name: str, argv: Sequence[str], *, speaks_for: Sequence[str] = ()
    ) -> Child:
        from peers import running

        process, output = await self.stack.enter_async_context(running(list(argv), stdin=True))
        child = Child(name, process, output)
        self.children[name] = child
        for who in (name, *speaks_for):
            self.route[who] = child
        return child

    async def role(self, name: str, *args: str, speaks_for: Sequence[str] = ()) -> Child:
        """Start this script as a child: ``python soak_support.py ROLE ARGS...``."""
        return await self.start(name, [sys.executable, str(SCRIPT), *args], speaks_for=speaks_for)

    async def expect(self, who: str, what: str, timeout: float = 30) -> dict[str, Any]:
        return await self.route[who].expect(who, what, timeout)

    async def send(self, who: str, command: str) -> None:
        await self.route[who].send(command)


def member_url(transport: str) -> str:
    """A fresh bus address for ``transport`` (nng, zmq) on free loopback ports."""
    from peers import free_port
    from zmq_support import free_port_pair

    if transport == "nng":
        return f"tcp://127.0.0.1:{free_port()}"
    if transport == "zmq":
        return f"zmq+tcp://127.0.0.1:{free_port_pair()}"
    raise ValueError(transport)


@asynccontextmanager
async def bus_for(transport: str, fleet: Fleet, directory: Path) -> AsyncIterator[tuple[str, int]]:
    """The hub of a network transport in its own process: ``(url, hub pid)``.

    nng and ZeroMQ: ``tests/bus_hub.py`` (``role=hub``); NATS: a nats-server."""
    if transport == "nats":
        import anyio.to_thread

        from nats_support import NatsServer

        server = NatsServer(directory / "nats")
        try:
            await anyio.to_thread.run_sync(server.start)
            assert server._process is not None
            yield server.url, server._process.pid
        finally:
            await anyio.to_thread.run_sync(server.kill)
        return
    url = member_url(transport)
    hub = await fleet.start("hub", [sys.executable, str(TESTS / "bus_hub.py"), url + "?role=hub"])
    await hub.output.wait_for(lambda line: line.strip() == "ready", 30)
    yield url, hub.pid


@dataclass
class RssSampler:
    """Resident memory of some processes, sampled every second by the test (not the child)."""

    pids: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[tuple[float, int]]] = field(default_factory=dict)

    def watch(self, name: str, pid: int) -> None:
        self.pids[name] = pid
        self.samples.setdefault(name, [])

    def sample(self) -> None:
        now = time.monotonic()
        for name, pid in self.pids.items():
            rss = rss_of(pid)
            if rss is not None:
                self.samples[name].append((now, rss))

    async def run(self, every: float = 1.0) -> None:
        while True:
            self.sample()
            await anyio.sleep(every)  # the sampling period, not a synchronisation

    def summary(self, name: str, start: float, warm: float, end: float) -> dict[str, float]:
        """RSS of ``name`` in MB between ``start`` and ``end``: min, max, last, and growth =
        the highest sample after ``warm`` minus the sample at ``warm`` (after the warm-up)."""
        window = [(t, r) for t, r in self.samples.get(name, []) if start <= t <= end + 1.5]
        if not window:
            return {"min": 0.0, "max": 0.0, "last": 0.0, "at_warm": 0.0, "growth": 0.0, "n": 0}
        rss = [r for _, r in window]
        after = [r for t, r in window if t >= warm] or rss[-1:]
        at_warm = after[0]
        return {
            "min": min(rss) / MB,
            "max": max(rss) / MB,
            "last": rss[-1] / MB,
            "at_warm": at_warm / MB,
            "growth": (max(after) - at_warm) / MB,
            "n": len(window),
        }


# ---------------------------------------------------------------------------- the report


_SECTIONS: dict[str, tuple[str, Any]] = {}


def report_path() -> Path:
    return Path(os.environ.get("NANOMITTER_SOAK_REPORT", "/tmp/nanomitter-soak.md"))


def publish_report(title: str, markdown: str, data: Any, path: Path | None = None) -> str:
    """Add (or replace) a section of this session's report; rewrite the markdown at
    ``path`` ($NANOMITTER_SOAK_REPORT, default /tmp/nanomitter-soak.md) and its JSON twin
    (same name, ``.json``). Returns the whole markdown."""
    _SECTIONS[title] = (markdown, data)
    path = path or report_path()
    seconds = os.environ.get("NANOMITTER_SOAK_SECONDS", "(unset: 60)")
    head = (
        "# nanomitter soak report\n\n"
        f"- written {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; "
        f"NANOMITTER_SOAK_SECONDS={seconds}\n"
        f"- command: `{' '.join(sys.argv)}`\n- machine: {describe()}\n"
    )
    text = head + "".join(f"\n## {name}\n\n{body}\n" for name, (body, _) in _SECTIONS.items())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.with_suffix(".json").write_text(
        json.dumps({name: payload for name, (_, payload) in _SECTIONS.items()}, indent=1),
        encoding="utf-8",
    )
    return text


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
