"""What ``benchmarks/nng.py``, ``benchmarks/zmq_bench.py`` and ``benchmarks/nats_bench.py`` share.

Both run nanomitter against a raw library doing the same job, across processes: one hub,
one publisher and N subscribers, the contenders' trials alternating. Everything here is the
same for both transports: the payloads, the child plumbing (spawning, control messages,
reaping), the subscriber's bookkeeping and loss-accounting windows, the pacing, nanomitter's
own hub, publisher and subscriber, the trial bookkeeping, the sustainable-rate bisection,
latency percentiles and the report (machine info, table, accounting, goals).

What differs (the raw contender's sockets and loops, URLs, defaults, wording) stays in each
script. Not a module to run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import multiprocessing.process
import os
import socket
import statistics
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

import anyio
import anyio.lowlevel
import msgspec

import nanomitter

TOPIC = "tick"
I_BASE = 1 << 16
"""Indexes start here so ``i`` always takes 5 bytes of msgpack and payload sizes are exact."""
MAX_FRAME = 4 * 1024 * 1024
FENCE_INTERVAL = 0.001
LOSS_LIMIT = 0.001
"""Sustainable means less than 0.1% loss."""
LATENCY_SAMPLES = 20_000
CONTENDERS = ("raw", "nanomitter")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# ---------------------------------------------------------------------------- payloads


def make_pad(size: int) -> str:
    """The pad string that makes the data dict's msgpack encoding exactly ``size`` bytes."""
    base: dict[str, Any] = {"i": I_BASE, "ts": time.monotonic_ns() | (1 << 40), "t": 1, "f": 0}
    shortest = len(msgspec.msgpack.encode({**base, "pad": ""}))
    for length in range(max(0, size - shortest - 4), size):  # a str header takes <= 5 bytes
        if len(msgspec.msgpack.encode({**base, "pad": "x" * length})) == size:
            return "x" * length
    raise ValueError(f"cannot build a payload of exactly {size} bytes (minimum about 40)")


def frame_size(size: int, sender: str) -> int:
    """What one event of a ``size``-byte payload takes on the wire (nanomitter's envelope)."""
    data = {"i": I_BASE, "ts": 1 << 40, "t": 1, "f": 0, "pad": make_pad(size)}
    envelope = {"topic": TOPIC, "data": data, "fromLeader": False, "sender": sender, "seq": 1000}
    return len(msgspec.msgpack.encode(envelope))


# ---------------------------------------------------------------------------- child plumbing


class Stop(Exception):
    """The controller asked this child to stop, or went away."""


def control(conn: Connection) -> tuple[Any, ...]:
    try:
        message: tuple[Any, ...] = conn.recv()
    except (EOFError, OSError):
        raise Stop from None
    if message[0] == "stop":
        raise Stop
    return message


def child(main: Callable[..., None], conn: Connection, *args: Any) -> None:
    """Run a child's ``main``; report a crash to the controller; quiet on stop or Ctrl-C."""
    try:
        main(conn, *args)
    except (Stop, KeyboardInterrupt):
        pass
    except BaseException:
        with contextlib.suppress(OSError):
            conn.send({"error": traceback.format_exc()})
        raise
    finally:
        conn.close()


async def watch_control(conn: Connection) -> None:
    while True:
        await anyio.wait_readable(conn.fileno())
        control(conn)


# ---------------------------------------------------------------------------- subscribers


class Tally:
    """The subscriber's bookkeeping, shared by both contenders; reports at each first fence.

    ``event`` is the listener's work (count, timestamp); the rest runs once per trial.
    """

    __slots__ = (
        "conn",
        "data",
        "done_trial",
        "last_ns",
        "lats",
        "prev_i",
        "prev_reported",
        "reported_lost",
        "window",
    )

    def __init__(self, conn: Connection, reported_lost: Callable[[], int]) -> None:
        self.conn = conn
        self.reported_lost = reported_lost
        self.prev_i = -1  # index before the current window; set from the first event seen
        self.prev_reported = 0
        self.window = 0  # events received in the window (data and fences)
        self.data = 0  # data events delivered in this trial
        self.last_ns = 0
        self.lats: list[int] = []
        self.done_trial = 0

    def event(self, i: int, ts: int, t: int, f: int) -> None:
        now = time.monotonic_ns()
        if self.prev_i < 0:
            self.prev_i = i - 1  # like nanomitter: loss before the first event is not counted
        self.window += 1
        if not f:
            self.data += 1
            self.lats.append(now - ts)
            self.last_ns = now
        elif t > self.done_trial:
            self.report(i, t)

    def report(self, i: int, t: int) -> None:
        reported_now = self.reported_lost()
        lats = self.lats
        step = max(1, len(lats) // LATENCY_SAMPLES)
        self.conn.send(
            {
                "trial": t,
                "data": self.data,
                "last_ns": self.last_ns,
                "observed": (i - self.prev_i) - self.window,
                "reported": reported_now - self.prev_reported,
                "lats": lats[::step],
            }
        )
        self.done_trial = t
        self.prev_i = i
        self.prev_reported = reported_now
        self.window = 0
        self.data = 0
        self.last_ns = 0
        self.lats = []


class SeqGaps:
    """The raw contender's loss accounting: gaps in the envelope's sequence numbers."""

    __slots__ = ("last", "lost")

    def __init__(self) -> None:
        self.last = 0
        self.lost = 0


# ---------------------------------------------------------------------------- publishers


class Schedule:
    """When the next event of a paced burst is due; ``rate=0`` means flat out."""

    __slots__ = ("rate", "start")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = time.monotonic()

    def due(self, sent: int, count: int) -> int:
        """How many events should have been sent by now (flat out: all of them)."""
        if not self.rate:
            return count
        return min(count, int((time.monotonic() - self.start) * self.rate) + 1)

    def pause(self, sent: int) -> float:
        """Seconds until event ``sent`` is due."""
        return max(0.0, self.start + sent / self.rate - time.monotonic())


async def pace(seconds: float) -> None:
    """Sleep as precisely as ``time.sleep`` (asyncio rounds timers up to whole ms), so both
    publishers pace alike; still a checkpoint, so the emitter's own tasks run."""
    if seconds > 0.002:
        await anyio.sleep(seconds)
        return
    time.sleep(seconds)  # noqa: ASYNC251 (sub-ms pacing; the loop has nothing else to do)
    await anyio.lowlevel.checkpoint()


# ---------------------------------------------------------------------------- nanomitter's nodes


def run_nano_hub(conn: Connection, nano_url: str) -> None:
    """nanomitter's hub: ``connect(role=hub)`` kept open until told to stop."""

    async def main() -> None:
        async with nanomitter.connect(nano_url):
            conn.send({"ready": True})
            while True:
                await anyio.wait_readable(conn.fileno())
                control(conn)

    anyio.run(main)


def run_nano_subscriber(
    conn: Connection,
    nano_url: str,
    before_ready: Callable[[nanomitter.DistributedEventEmitter], Awaitable[None]] | None = None,
) -> None:
    """nanomitter's subscriber: a sync listener doing the listener's work.

    ``before_ready`` runs once the bus is open, before the controller hears it is ready.
    """

    async def main() -> None:
        bus = nanomitter.connect(nano_url)
        tally = Tally(conn, lambda: bus.stats().lost)
        event = tally.event

        def on_tick(e: nanomitter.DistributedEvent) -> None:
            data = e.data
            event(data["i"], data["ts"], data["t"], data["f"])

        bus.on(TOPIC, on_tick)
        async with bus:
            if before_ready is not None:
                await before_ready(bus)
            conn.send({"ready": True})
            await watch_control(conn)

    anyio.run(main)


def run_nano_publisher(
    conn: Connection, nano_url: str, pad_for: Callable[[int], str] = make_pad
) -> None:
    """nanomitter's publisher: ``await bus.emit(topic, data)`` per event, then fences.

    ``pad_for(size)`` is the pad string of a ``size``-byte payload (default: the msgpack size
    of ``data``; another codec sizes the payload its own way).
    """

    async def main() -> None:
        async with nanomitter.connect(nano_url) as bus:
            emit = bus.emit
            clock = time.monotonic_ns
            index = I_BASE
            conn.send({"ready": True})
            while True:
                await anyio.wait_readable(conn.fileno())
                _, trial, count, rate, size = control(conn)
                pad = pad_for(size)
                schedule = Schedule(rate)
                start = clock()
                sent = 0
                while sent < count:
                    due = schedule.due(sent, count)
                    while sent < due:
                        index += 1
                        await emit(
                            TOPIC, {"i": index, "ts": clock(), "t": trial, "f": 0, "pad": pad}
                        )
                        sent += 1
                    if sent < count:
                        await pace(schedule.pause(sent))
                end = clock()
                fences = 0
                while not conn.poll():
                    index += 1
                    await emit(TOPIC, {"i": index, "ts": clock(), "t": trial, "f": 1, "pad": pad})
                    fences += 1
                    await anyio.sleep(FENCE_INTERVAL)
                control(conn)  # "fenced"
                conn.send({"trial": trial, "start_ns": start, "end_ns": end, "fences": fences})

    anyio.run(main)


Roles = dict[str, dict[str, Callable[..., None]]]


# ---------------------------------------------------------------------------- controller


class ChildFailed(RuntimeError):
    pass


@dataclass
class SubResult:
    data: int
    last_ns: int
    observed: int
    reported: int
    lats: list[int]


@dataclass
class Trial:
    contender: str
    subs: int
    size: int
    count: int
    rate: float  # 0: flat out
    start_ns: int
    end_ns: int
    results: list[SubResult]
    cpu: float | None = None  # CPU seconds all the topology's processes used (Linux)

    @property
    def cpu_per_delivery(self) -> float | None:
        """CPU microseconds (hub + publisher + subscribers) per event delivered to one
        subscriber: robust against load from elsewhere, unlike rates."""
        deliveries = sum(s.data for s in self.results)
        if self.cpu is None or not deliveries:
            return None
        return self.cpu / deliveries * 1e6

    @property
    def offered(self) -> float:
        """Events/s the publisher achieved."""
        return self.count / max(self.end_ns - self.start_ns, 1) * 1e9

    def delivered_rate(self, sub: SubResult) -> float:
        if not sub.data:
            return 0.0
        return sub.data / max(sub.last_ns - self.start_ns, 1) * 1e9

    @property
    def delivered(self) -> float:
        """Events/s delivered, averaged over subscribers."""
        return statistics.fmean(self.delivered_rate(s) for s in self.results)

    @property
    def loss(self) -> float:
        """Fraction of data events lost, averaged over subscribers."""
        return statistics.fmean(1 - s.data / self.count for s in self.results)

    @property
    def worst_loss(self) -> float:
        return max(1 - s.data / self.count for s in self.results)

    @property
    def lag(self) -> float:
        """Seconds from the last send until the slowest subscriber got its last event."""
        return max(0, max(s.last_ns for s in self.results) - self.end_ns) / 1e9

    @property
    def reported(self) -> int:
        return sum(s.reported for s in self.results)

    @property
    def observed(self) -> int:
        return sum(s.observed for s in self.results)

    def percentile(self, q: float) -> float:
        lats = sorted(x for s in self.results for x in s.lats)
        if not lats:
            return float("nan")
        return lats[min(len(lats) - 1, int(q * len(lats)))] / 1e3  # microseconds


class Topology:
    """A hub, N subscribers and a publisher, each in its own process, for one contender.

    ``roles`` maps contender and role to each child's ``main``; ``bare_hub`` is the
    ``hub`` value that runs the raw contender's hub for both; ``buffer`` goes to every child
    after the URL (socket buffers or high-water marks, in messages); ``measure_cpu`` adds the
    topology's CPU time (from ``/proc``) to every trial.
    """

    def __init__(
        self,
        roles: Roles,
        url: str,
        contender: str,
        subs: int,
        buffer: int,
        *,
        raw_loop: str,
        hub: str = "own",
        bare_hub: str = "",
        measure_cpu: bool = False,
    ) -> None:
        self.roles = roles
        self.contender = contender
        self.hub = hub
        self.bare_hub = bare_hub
        self.subs = subs
        self.buffer = buffer
        self.raw_loop = raw_loop
        self.url = url
        self.measure_cpu = measure_cpu
        self.ctx = multiprocessing.get_context("spawn")
        self.children: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
        self.sub_conns: list[Connection] = []
        self.pub_conn: Connection | None = None
        self.trials = 0
        self.all_trials: list[Trial] = []

    def _start(self, role: str, *args: Any) -> Connection:
        ours, theirs = self.ctx.Pipe()
        bare = role == "hub" and self.hub == self.bare_hub
        main = self.roles["raw" if bare else self.contender][role]
        process = self.ctx.Process(
            target=child,
            args=(main, theirs, self.url, self.buffer, *args),
            name=f"{self.contender}-{role}",
            daemon=True,
        )
        process.start()
        theirs.close()
        self.children.append((process, ours))
        return ours

    def _ready(self, conns: Sequence[Connection], timeout: float = 30) -> None:
        for conn in conns:
            self._expect(conn, timeout)

    def _expect(self, conn: Connection, timeout: float) -> dict[str, Any]:
        return expect_message(conn, timeout, f"{self.contender}: a child")

    def __enter__(self) -> Topology:
        try:
            self._ready([self._start("hub")])
            self.sub_conns = [self._start("sub", self.raw_loop) for _ in range(self.subs)]
            self._ready(self.sub_conns)
            self.pub_conn = self._start("pub", self.raw_loop)
            self._ready([self.pub_conn])
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every child: ask, then terminate, then kill; always reap."""
        stop_children(self.children)

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of every child so far, and of the processes a child runs
        (a hub that is a server program), while they run (None where /proc is missing, or
        when this topology does not measure CPU)."""
        if not self.measure_cpu:
            return None
        total = 0.0
        for process, _ in self.children:
            own = process_cpu_seconds(process.pid) if process.pid is not None else None
            if own is None:
                return None
            total += own
            if process.pid is not None:
                total += _descendants_cpu(process.pid)
        return total

    def trial(self, count: int, rate: float, size: int) -> Trial:
        """Send ``count`` events (flat out if ``rate`` is 0) and collect every subscriber's
        report, taken at its first fence."""
        assert self.pub_conn is not None
        self.trials += 1
        number = self.trials
        cpu_before = self.cpu_seconds()
        self.pub_conn.send(("run", number, count, rate, size))
        budget = 60 + (count / rate if rate else count / 10_000)
        deadline = time.monotonic() + budget
        reports: dict[int, SubResult] = {}
        conns = {id(c): n for n, c in enumerate(self.sub_conns)}
        while len(reports) < self.subs:
            left = deadline - time.monotonic()
            ready = wait([*self.sub_conns, self.pub_conn], timeout=max(left, 0))
            if not ready:
                raise ChildFailed(f"{self.contender}: trial {number} did not finish in {budget} s")
            for conn in ready:
                assert isinstance(conn, Connection)
                message = self._expect(conn, 0)
                if conn is self.pub_conn or message.get("trial") != number:
                    raise ChildFailed(f"{self.contender}: unexpected message {message!r}")
                reports[conns[id(conn)]] = SubResult(
                    message["data"],
                    message["last_ns"],
                    message["observed"],
                    message["reported"],
                    message["lats"],
                )
        self.pub_conn.send(("fenced",))
        sent = self._expect(self.pub_conn, 30)
        cpu_after = self.cpu_seconds()
        result = Trial(
            self.contender,
            self.subs,
            size,
            count,
            rate,
            sent["start_ns"],
            sent["end_ns"],
            [reports[n] for n in range(self.subs)],
            None if cpu_before is None or cpu_after is None else cpu_after - cpu_before,
        )
        self.all_trials.append(result)
        return result


def _descendants_cpu(pid: int) -> float:
    """User + system CPU time of the live child processes of ``pid`` (Linux; else 0)."""
    total = 0.0
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as listing:
            kids = listing.read().split()
    except OSError:
        return 0.0
    for kid in kids:
        total += process_cpu_seconds(int(kid)) or 0.0
    return total


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of one process so far (Linux /proc; None if unreadable)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def expect_message(conn: Connection, timeout: float, who: str) -> dict[str, Any]:
    """A child's next message; ``ChildFailed`` when it crashed, died or took too long."""
    if not conn.poll(timeout):
        raise ChildFailed(f"{who}: no answer within {timeout:g} s")
    try:
        message: dict[str, Any] = conn.recv()
    except (EOFError, OSError):
        raise ChildFailed(f"{who}: the process died") from None
    if "error" in message:
        raise ChildFailed(f"{who} failed:\n{message['error']}")
    return message


def stop_children(children: list[tuple[multiprocessing.process.BaseProcess, Connection]]) -> None:
    """Stop child processes: ask each (the last started first), then terminate, then kill;
    always reap and close their pipes. Empties ``children``."""
    for _, conn in children:
        with contextlib.suppress(OSError):
            conn.send(("stop",))
    deadline = time.monotonic() + 3
    for process, _ in reversed(children):
        process.join(max(0.0, deadline - time.monotonic()))
    for process, _ in children:
        if process.is_alive():
            process.terminate()
            process.join(2)
        if process.is_alive():
            process.kill()
            process.join()
    for _, conn in children:
        conn.close()
    children.clear()


# ---------------------------------------------------------------------------- measurement


@dataclass
class Settings:
    count: int
    repeat: int
    trial_seconds: float
    search_steps: int
    retries: int
    latency_rate: float
    latency_seconds: float
    max_lag: float
    buffer: int
    """Messages per socket and direction: nng's socket buffers, ZeroMQ's high-water marks;
    NATS: messages a subscriber's client may hold undispatched."""
    flat_only: bool = False
    """Skip the sustainable-rate search (the suite's profile: it takes most of a run)."""
    max_bytes: int = 0
    """Cap on a flat-out run's payload bytes, so large payloads take fewer events (0: none)."""

    def flat_count(self, size: int) -> int:
        """Events per flat-out run of ``size``-byte payloads."""
        if not self.max_bytes:
            return self.count
        return max(1, min(self.count, self.max_bytes // size))


@dataclass
class Cell:
    """Everything measured for one contender, payload size and subscriber count."""

    contender: str
    subs: int
    size: int
    flat: list[Trial] = field(default_factory=list)
    latency: Trial | None = None
    sustainable: float = 0.0
    sustainable_capped: bool = False
    search: list[tuple[float, str]] = field(default_factory=list)  # rate, why it failed

    @property
    def median_flat(self) -> Trial:
        ordered = sorted(self.flat, key=lambda t: t.delivered)
        return ordered[len(ordered) // 2]

    @property
    def searched(self) -> bool:
        """Whether the sustainable rate was measured (not with ``--flat-only``)."""
        return bool(self.search)


def failure(trial: Trial, settings: Settings) -> str:
    """Why a paced trial is not sustainable ("" if it is)."""
    if trial.worst_loss >= LOSS_LIMIT:
        return f"loss {trial.worst_loss:.2%}"
    if trial.offered < 0.97 * trial.rate:
        return f"publisher only reached {trial.offered:,.0f}/s"
    if trial.lag > settings.max_lag:
        return f"lag {trial.lag * 1000:.0f} ms"
    return ""


class Bisection:
    """The search for one cell's sustainable rate: first the ceiling, then halving the
    interval between the best pass and the lowest fail."""

    def __init__(self, cell: Cell, ceiling: float, steps: int) -> None:
        self.cell = cell
        self.low = 0.0
        self.high = ceiling
        self.left = steps

    @property
    def done(self) -> bool:
        return self.left <= 0

    def next_rate(self) -> float:
        return self.high if not self.cell.search else (self.low + self.high) / 2

    def record(self, rate: float, why: str) -> None:
        first = not self.cell.search
        self.cell.search.append((rate, why))
        self.left -= 1
        if first and not why:
            self.low, self.left = rate, 0
            self.cell.sustainable_capped = True
        elif why:
            self.high = rate
        else:
            self.low = rate
        self.cell.sustainable = self.low


Ceilings = Callable[[dict[str, Cell]], dict[str, float]]
"""Each contender's first (highest) rate of the search, from the row's flat-out trials."""


def search(
    topologies: dict[str, Topology], row: dict[str, Cell], settings: Settings, ceilings: Ceilings
) -> None:
    """Bisect every contender's cell in lockstep, alternating trials (noise hits both)."""
    tops = ceilings(row)
    searches = {
        name: Bisection(row[name], tops[name], settings.search_steps) for name in topologies
    }
    while not all(b.done for b in searches.values()):
        for name, bisection in searches.items():
            if bisection.done:
                continue
            rate = bisection.next_rate()
            count = max(200, int(rate * settings.trial_seconds))
            why = ""
            for _ in range(1 + settings.retries):
                why = failure(topologies[name].trial(count, rate, row[name].size), settings)
                if not why:
                    break
            bisection.record(rate, why)


def measure(
    subs_counts: Sequence[int],
    sizes: Sequence[int],
    settings: Settings,
    topology: Callable[[str, int], Topology],
    ceilings: Ceilings,
) -> tuple[list[Cell], list[Trial]]:
    """Both contenders' topologies (``topology(contender, subs)``) run side by side; their
    trials alternate.

    Returns the cells and every trial run (warm-ups and search trials included).
    """
    cells: list[Cell] = []
    trials: list[Trial] = []
    for subs in subs_counts:
        with contextlib.ExitStack() as stack:
            topologies = {name: stack.enter_context(topology(name, subs)) for name in CONTENDERS}
            for size in sizes:
                row = {name: Cell(name, subs, size) for name in CONTENDERS}
                for top in topologies.values():  # warm-up; also sets each base index
                    top.trial(min(2000, settings.flat_count(size)), 20_000, size)
                for _ in range(settings.repeat):
                    for name, top in topologies.items():
                        row[name].flat.append(top.trial(settings.flat_count(size), 0, size))
                for name, top in topologies.items():
                    row[name].latency = top.trial(
                        max(200, int(settings.latency_rate * settings.latency_seconds)),
                        settings.latency_rate,
                        size,
                    )
                if not settings.flat_only:
                    search(topologies, row, settings, ceilings)
                cells.extend(row.values())
                progress(row)
            for top in topologies.values():
                trials.extend(top.all_trials)
    return cells, trials


def progress(row: dict[str, Cell]) -> None:
    for cell in row.values():
        flat = cell.median_flat
        searched = (
            f", sustainable {cell.sustainable:,.0f}/s, search "
            + ", ".join(f"{r / 1000:.1f}k {why or 'ok'}" for r, why in cell.search)
            if cell.searched
            else ""
        )
        print(
            f"  [{cell.contender} {cell.size} B x{cell.subs}] flat out {flat.delivered:,.0f}/s "
            f"(offered {flat.offered:,.0f}/s, loss {flat.loss:.1%}){searched}",
            file=sys.stderr,
            flush=True,
        )


# ---------------------------------------------------------------------------- report


def fmt_rate(value: float) -> str:
    return f"{value / 1000:,.1f}k" if value >= 10_000 else f"{value:,.0f}"


def fmt_us(value: float) -> str:
    return f"{value / 1000:.1f} ms" if value >= 1000 else f"{value:.0f} µs"


def _cpu(trial: Trial | None) -> str:
    value = None if trial is None else trial.cpu_per_delivery
    return "-" if value is None else f"{value:.1f}"


def _sustainable(cell: Cell) -> str:
    if not cell.searched:
        return "-"
    return ("≥ " if cell.sustainable_capped else "") + fmt_rate(cell.sustainable)


def _base(cells: Sequence[Cell], cell: Cell) -> Cell:
    """The raw contender's cell of the same payload size and subscriber count."""
    return next(
        c for c in cells if c.contender == "raw" and c.subs == cell.subs and c.size == cell.size
    )


def table(cells: Sequence[Cell], markdown: bool, raw_name: str, cpu_column: bool) -> str:
    header = [
        "payload",
        "subs",
        "contender",
        "flat out: delivered/s per sub",
        "ratio",
        "loss",
        "lost: stats / observed",
        "offered/s",
        *(["CPU µs/delivery (paced)"] if cpu_column else []),
        "sustainable/s (<0.1% loss)",
        "ratio",
        "p50",
        "p99",
    ]
    body: list[list[str]] = []
    for cell in cells:
        base = _base(cells, cell)
        flat = cell.median_flat
        is_raw = cell.contender == "raw"
        latency = cell.latency
        body.append(
            [
                f"{cell.size} B",
                str(cell.subs),
                raw_name if is_raw else "nanomitter",
                fmt_rate(flat.delivered),
                "1.00x" if is_raw else f"{flat.delivered / base.median_flat.delivered:.2f}x",
                f"{flat.loss:.1%}",
                f"{flat.reported:,} / {flat.observed:,}",
                fmt_rate(flat.offered),
                *([_cpu(latency)] if cpu_column else []),
                _sustainable(cell),
                "-"
                if not cell.searched
                else "1.00x"
                if is_raw
                else f"{cell.sustainable / max(base.sustainable, 1):.2f}x",
                fmt_us(latency.percentile(0.50)) if latency else "-",
                fmt_us(latency.percentile(0.99)) if latency else "-",
            ]
        )
    pairs = [body[n : n + len(CONTENDERS)] for n in range(0, len(body), len(CONTENDERS))]
    return grid(header, pairs, markdown)


def grid(header: Sequence[str], groups: Sequence[Sequence[Sequence[str]]], markdown: bool) -> str:
    """A table in markdown, or aligned text with a blank line between ``groups`` of rows."""
    body = [row for group in groups for row in group]
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(out)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    for n, group in enumerate(groups):
        if n:
            out.append("")
        out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in group]
    return "\n".join(out)


def loss_accounting(topologies_trials: Sequence[Trial]) -> dict[str, dict[str, int]]:
    """Per contender: trials, windows (trials x subscribers), windows where the reported loss
    differs from the observed, and both losses, over every trial of the run."""
    out = {}
    for contender in CONTENDERS:
        trials = [t for t in topologies_trials if t.contender == contender]
        out[contender] = {
            "trials": len(trials),
            "windows": sum(len(t.results) for t in trials),
            "mismatched": sum(s.reported != s.observed for t in trials for s in t.results),
            "reported": sum(t.reported for t in trials),
            "observed": sum(t.observed for t in trials),
        }
    return out


def accounting(topologies_trials: Sequence[Trial]) -> list[str]:
    """Reported (``stats().lost``) against observed loss, over every trial of the run."""
    out = []
    for contender, f in loss_accounting(topologies_trials).items():
        source = "stats().lost" if contender == "nanomitter" else "sequence gaps"
        verdict = "match" if not f["mismatched"] else f"MISMATCH in {f['mismatched']} windows"
        out.append(
            f"loss accounting, {contender}: {source} {f['reported']:,} vs observed "
            f"{f['observed']:,} over {f['trials']} trials x subscribers = {f['windows']} "
            f"windows: {verdict}"
        )
    return out


def goals(cells: Sequence[Cell], goal: float) -> list[str]:
    """Whether nanomitter reaches ``goal`` times raw, flat out and sustainable."""
    out = []
    figures: list[tuple[str, Callable[[Cell], float]]] = [
        ("flat-out delivered", lambda c: c.median_flat.delivered),
        ("sustainable", lambda c: c.sustainable),
    ]
    if not any(cell.searched for cell in cells):
        figures = figures[:1]
    for figure, value in figures:
        ratios = []
        for cell in cells:
            if cell.contender != "nanomitter":
                continue
            base = _base(cells, cell)
            ratios.append((value(cell) / max(value(base), 1), cell))
        worst, cell = min(ratios, key=lambda r: r[0])
        met = all(r >= goal for r, _ in ratios)
        listed = ", ".join(f"{r:.2f}x" for r, _ in ratios)
        out.append(
            f"goal nanomitter >= {goal}x raw ({figure}): {'MET' if met else 'MISSED'} "
            f"({listed}; worst {worst:.2f}x at {cell.size} B, {cell.subs} subscribers)"
        )
    return out


def free_port() -> int:
    """A free TCP port on 127.0.0.1, never the seed's default 55555."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port != 55555:
            return port


def common_ceilings(row: dict[str, Cell]) -> dict[str, float]:
    """A common ceiling: 1.5x the best flat-out delivered rate of either contender."""
    ceiling = 1.5 * max(t.delivered for cell in row.values() for t in cell.flat)
    return dict.fromkeys(row, ceiling)


def method(settings: Settings) -> str:
    """How the figures were taken (without the latency trial's CPU note)."""
    cap = f" (at most {settings.max_bytes:,} payload bytes)" if settings.max_bytes else ""
    sustainable = (
        "sustainable: not measured (--flat-only)"
        if settings.flat_only
        else f"sustainable: {settings.search_steps}-step bisection, "
        f"{settings.trial_seconds:g} s trials (a failed rate retried {settings.retries}x), "
        f"< 0.1% loss and lag <= {settings.max_lag * 1000:g} ms"
    )
    return (
        f"flat out: {settings.count:,} events{cap}, median of {settings.repeat}; "
        f"{sustainable}; latency at "
        f"{settings.latency_rate:,.0f} events/s for {settings.latency_seconds:g} s"
    )


# ---------------------------------------------------------------------------- command line


def make_parser(doc: str | None, count: int, repeat: int) -> argparse.ArgumentParser:
    """The options both benchmarks take first; each adds its own, then calls ``parse_settings``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument("--count", type=int, default=count, help="events per flat-out run")
    parser.add_argument("--repeat", type=int, default=repeat, help="flat-out runs (median)")
    parser.add_argument("--sizes", default="64,1024", help="payload sizes in bytes (msgpack)")
    parser.add_argument("--subs", default="1,4", help="subscriber counts, comma-separated")
    parser.add_argument("--trial-seconds", type=float, default=1.0, help="paced trial length")
    parser.add_argument("--search-steps", type=int, default=6, help="sustainable-rate trials")
    parser.add_argument(
        "--retries",
        type=int,
        default=1,
        help="times a failing rate is tried again (a ~20 ms stall overflows the queues)",
    )
    parser.add_argument("--latency-rate", type=float, default=5000, help="events/s for latency")
    parser.add_argument("--latency-seconds", type=float, default=2.0)
    parser.add_argument("--max-lag-ms", type=float, default=20.0)
    return parser


def parse_settings(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    buffer: str,
    quick_steps: int,
) -> tuple[argparse.Namespace, Settings, list[int], list[int]]:
    """Add ``--markdown`` and ``--quick``, parse, and return the arguments, the settings
    (``buffer`` names the option that sets ``Settings.buffer``), sizes and subscriber counts.
    """
    parser.add_argument("--markdown", action="store_true", help="print the table in markdown")
    parser.add_argument("--quick", action="store_true", help="smoke run: small counts, < 30 s")
    parser.add_argument("--flat-only", action="store_true", help="skip the sustainable-rate search")
    parser.add_argument(
        "--max-bytes",
        type=int,
        default=0,
        help="cap a flat-out run at this many payload bytes (fewer large events; 0: no cap)",
    )
    parser.add_argument("--results", help="also write the figures to this file (JSON)")
    args = parser.parse_args(argv)
    result = Settings(
        count=args.count,
        repeat=args.repeat,
        trial_seconds=args.trial_seconds,
        search_steps=args.search_steps,
        retries=args.retries,
        latency_rate=args.latency_rate,
        latency_seconds=args.latency_seconds,
        max_lag=args.max_lag_ms / 1000,
        buffer=getattr(args, buffer),
        flat_only=args.flat_only,
        max_bytes=args.max_bytes,
    )
    if args.quick:
        result.count = min(result.count, 20_000)
        result.repeat = 1
        result.trial_seconds = min(result.trial_seconds, 0.2)
        result.search_steps = min(result.search_steps, quick_steps)
        result.retries = 0
        result.latency_seconds = min(result.latency_seconds, 0.2)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    subs_counts = [int(s) for s in args.subs.split(",") if s.strip()]
    if result.count < 1 or result.repeat < 1 or result.search_steps < 1:
        parser.error("--count, --repeat and --search-steps must be >= 1")
    return args, result, sizes, subs_counts


def finish(
    args: argparse.Namespace,
    *,
    transport: str,
    raw_name: str,
    environment: Sequence[str],
    started: float,
    load_before: float,
    load_note: str,
    cells: Sequence[Cell],
    trials: Sequence[Trial],
    lines: Sequence[str],
    cpu_column: bool,
) -> int:
    """The end of every transport script: write ``--results``, print the report; its exit
    status (1 on a loss-accounting mismatch)."""
    save_results(
        args.results,
        transport=transport,
        raw_name=raw_name,
        environment=environment,
        cells=cells,
        trials=trials,
        lines=lines,
    )
    return report(
        environment,
        started,
        load_before,
        load_note=load_note,
        table_text=table(cells, args.markdown, raw_name, cpu_column=cpu_column),
        lines=lines,
        markdown=args.markdown,
    )


def report(
    environment: Sequence[str],
    started: float,
    load_before: float,
    *,
    load_note: str,
    table_text: str,
    lines: Sequence[str],
    markdown: bool,
) -> int:
    """Print the run's description, the table and the verdicts; 1 on a loss mismatch."""
    prefix = "- " if markdown else ""
    print("\n".join(prefix + text for text in environment))
    print(
        f"{prefix}wall time {time.perf_counter() - started:.0f} s; 1-minute load average "
        f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after ({load_note})"
    )
    print()
    print(table_text)
    print()
    print("\n".join(prefix + text for text in lines))
    return 1 if any("MISMATCH" in text for text in lines) else 0


# ---------------------------------------------------------------------------- results file


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def cell_record(cell: Cell) -> dict[str, Any]:
    """One cell's figures, for ``--results`` (what ``benchmarks/suite.py`` reads)."""
    flat = cell.median_flat
    latency = cell.latency
    return {
        "contender": cell.contender,
        "subs": cell.subs,
        "size": cell.size,
        "count": flat.count,
        "runs": [t.delivered for t in cell.flat],
        "delivered": flat.delivered,
        "offered": flat.offered,
        "loss": flat.loss,
        "sustainable": cell.sustainable if cell.searched else None,
        "latency_rate": latency.rate if latency else None,
        "latency_count": latency.count if latency else None,
        "p50_us": _finite(latency.percentile(0.50)) if latency else None,
        "p99_us": _finite(latency.percentile(0.99)) if latency else None,
        "cpu_us": _finite(latency.cpu_per_delivery) if latency else None,
    }


def save_results(
    path: str | None,
    *,
    transport: str,
    raw_name: str,
    environment: Sequence[str],
    cells: Sequence[Cell],
    trials: Sequence[Trial],
    lines: Sequence[str],
) -> None:
    """Write the run's figures as JSON to ``path`` (nothing without ``--results``)."""
    if not path:
        return
    record = {
        "transport": transport,
        "raw": raw_name,
        "environment": list(environment),
        "cells": [cell_record(cell) for cell in cells],
        "accounting": loss_accounting(trials),
        "lines": list(lines),
    }
    with open(path, "w", encoding="utf-8") as out:
        json.dump(record, out, indent=1)
