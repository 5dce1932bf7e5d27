"""Across processes over nng: nanomitter ``tcp://`` against raw pynng doing the same job.

Topology, the same for both contenders: one hub process, one publisher process and N
subscriber processes (N = 1 and 4), all on ``tcp://127.0.0.1:<free port>``.

- raw pynng: the hub is a raw bus0 socket reflected by ``nng_device`` (nanomitter's own
  ``Reflector``, the same C device, so the hubs are identical and the comparison is about the
  endpoints). The publisher msgspec-encodes a dict ``{topic, data, fromLeader, sender, seq}``
  per event (the very bytes nanomitter puts on the wire) and calls ``send(block=False)``.
  A subscriber is a plain (no event loop) fd-based loop: ``recv(block=False)`` until
  ``TryAgain``, then ``poll()`` on ``recv_fd``; each frame is msgspec-decoded (to a dict),
  dispatched by topic to a function that counts sequence gaps and does the listener's work.
  ``--raw-loop`` picks another form (``block``: blocking ``recv()``; ``anyio``: the same
  drain with ``anyio.wait_readable``); the three measured within noise of each other here
  (flat out, 64 B: 90k, 93k, 91k events/s), so the default is the fd-based ``poll``.
- nanomitter: the hub is ``nanomitter.connect(url, role="hub")`` kept open (the reflector plus
  the hub's own member, which receives every event like any member); the publisher
  ``await bus.emit(topic, data)``; each subscriber ``bus.on(topic, fn)`` with a sync listener.

Every node runs in its own process (multiprocessing, spawn). Both contenders use the same
socket buffers (``--buffer`` messages per socket and direction, nanomitter's ``?buffer=``).

The listener's work, identical for both: take ``i`` (the publisher's running index) and
``ts`` (``time.monotonic_ns()`` at emit, CLOCK_MONOTONIC is system-wide) from ``data``,
count, and record the latency.

Each trial: the publisher sends ``count`` events (flat out, or paced at a rate), then keeps
sending *fence* events (same topic, every ms) until every subscriber has seen one. At its
first fence a subscriber reports: events delivered, its receive time of the last one, the
loss it observed (gaps in the publisher's index since the previous fence) and the loss the
library reported over the same window (nanomitter: ``stats().lost``; raw: its own sequence
gap count). Both are read at the same instant, so they must be equal.

Figures, per payload size and subscriber count:

- flat out: the publisher emits ``--count`` events as fast as it can; events/s delivered per
  subscriber = delivered / (last receive - first send), loss % = 1 - delivered / sent.
- sustainable: the highest paced rate a bisection finds (``--search-steps`` trials of
  ``--trial-seconds``, from a ceiling of 1.5x the best flat-out delivered rate, both
  contenders' trials alternating) with < 0.1% loss on every subscriber, the publisher on
  schedule and every subscriber done within ``--max-lag-ms`` of the last send (so the rate
  is not merely absorbed by socket buffers). A failing rate is tried ``--retries`` more
  times: at these rates a 20 ms scheduling stall overflows 1024-message queues.
- latency p50/p99 (send to listener call) at a fixed paced rate ``--latency-rate``, the
  same for both contenders, pooled over subscribers; and the CPU time (user + system, from
  ``/proc``) every process of the topology spent per delivered event in that trial, a
  figure that load from elsewhere on the machine barely moves.

    python benchmarks/nng.py               # full run (about 3 minutes)
    python benchmarks/nng.py --quick       # smoke run (< 30 s)
    python benchmarks/nng.py --markdown    # the table for docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import multiprocessing
import multiprocessing.process
import os
import platform
import select
import socket
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pynng

import nanomitter
from nanomitter.transports.nng_lowlevel import Reflector

TOPIC = "tick"
SENDER = "rawpynngpublisher0001"  # 21 characters, the shape of a nanomitter sender id
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
    for length in range(size):
        if len(msgspec.msgpack.encode({**base, "pad": "x" * length})) == size:
            return "x" * length
    raise ValueError(f"cannot build a payload of exactly {size} bytes (minimum about 40)")


def frame_size(size: int) -> int:
    """What one event of a ``size``-byte payload takes on the wire (nanomitter's envelope)."""
    data = {"i": I_BASE, "ts": 1 << 40, "t": 1, "f": 0, "pad": make_pad(size)}
    envelope = {"topic": TOPIC, "data": data, "fromLeader": False, "sender": SENDER, "seq": 1000}
    return len(msgspec.msgpack.encode(envelope))


# ---------------------------------------------------------------------------- child plumbing


class Stop(Exception):
    """The controller asked this child to stop, or went away."""


def _control(conn: Connection) -> tuple[Any, ...]:
    try:
        message: tuple[Any, ...] = conn.recv()
    except (EOFError, OSError):
        raise Stop from None
    if message[0] == "stop":
        raise Stop
    return message


def _child(main: Callable[..., None], conn: Connection, *args: Any) -> None:
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


def _bus0(buffer: int) -> Any:
    return pynng.Bus0(recv_max_size=MAX_FRAME, recv_buffer_size=buffer, send_buffer_size=buffer)


def _nano_url(url: str, role: str, buffer: int) -> str:
    return f"{url}?role={role}&buffer={buffer}&max_frame_bytes={MAX_FRAME // 4}"


# ---------------------------------------------------------------------------- hubs


def raw_hub(conn: Connection, url: str, buffer: int) -> None:
    hub = Reflector([url], recv_max_size=MAX_FRAME, buffer_size=buffer)
    try:
        conn.send({"ready": True})
        while True:
            _control(conn)
    finally:
        hub.close()


def nano_hub(conn: Connection, url: str, buffer: int) -> None:
    async def main() -> None:
        async with nanomitter.connect(_nano_url(url, "hub", buffer)):
            conn.send({"ready": True})
            while True:
                await anyio.wait_readable(conn.fileno())
                _control(conn)

    anyio.run(main)


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
    """Raw pynng's loss accounting: gaps in the envelope's sequence numbers."""

    __slots__ = ("last", "lost")

    def __init__(self) -> None:
        self.last = 0
        self.lost = 0


def raw_subscriber(conn: Connection, url: str, buffer: int, loop: str) -> None:
    sock = _bus0(buffer)
    try:
        sock.dial(url, block=True)
        gaps = SeqGaps()
        tally = Tally(conn, lambda: gaps.lost)
        event = tally.event

        def on_tick(msg: dict[str, Any]) -> None:
            seq = msg["seq"]
            last = gaps.last
            if last and seq > last + 1:
                gaps.lost += seq - last - 1
            gaps.last = seq
            data = msg["data"]
            event(data["i"], data["ts"], data["t"], data["f"])

        handlers: dict[str, Callable[[dict[str, Any]], None]] = {TOPIC: on_tick}
        decode = msgspec.msgpack.Decoder().decode
        conn.send({"ready": True})
        if loop == "poll":
            _raw_poll_loop(conn, sock, decode, handlers)
        elif loop == "block":
            _raw_block_loop(conn, sock, decode, handlers)
        else:
            anyio.run(_raw_anyio_loop, conn, sock, decode, handlers)
    finally:
        sock.close()


Handlers = dict[str, Callable[[dict[str, Any]], None]]


def _raw_poll_loop(
    conn: Connection, sock: Any, decode: Callable[[bytes], Any], handlers: Handlers
) -> None:
    recv = sock.recv
    try_again = pynng.TryAgain
    control = conn.fileno()
    poller = select.poll()
    poller.register(sock.recv_fd, select.POLLIN)
    poller.register(control, select.POLLIN)
    while True:
        try:
            frame = recv(block=False)
        except try_again:
            for fd, _ in poller.poll():
                if fd == control:
                    _control(conn)
            continue
        msg = decode(frame)
        handler = handlers.get(msg["topic"])
        if handler is not None:
            handler(msg)


def _raw_block_loop(
    conn: Connection, sock: Any, decode: Callable[[bytes], Any], handlers: Handlers
) -> None:
    sock.recv_timeout = 100
    recv = sock.recv
    timeout = pynng.Timeout
    while True:
        try:
            frame = recv()
        except timeout:
            if conn.poll():
                _control(conn)
            continue
        msg = decode(frame)
        handler = handlers.get(msg["topic"])
        if handler is not None:
            handler(msg)


async def _raw_anyio_loop(
    conn: Connection, sock: Any, decode: Callable[[bytes], Any], handlers: Handlers
) -> None:
    recv = sock.recv
    try_again = pynng.TryAgain
    fd = sock.recv_fd
    async with anyio.create_task_group() as tg:
        tg.start_soon(_watch_control, conn)
        while True:
            try:
                frame = recv(block=False)
            except try_again:
                await anyio.wait_readable(fd)
                continue
            msg = decode(frame)
            handler = handlers.get(msg["topic"])
            if handler is not None:
                handler(msg)


async def _watch_control(conn: Connection) -> None:
    while True:
        await anyio.wait_readable(conn.fileno())
        _control(conn)


def nano_subscriber(conn: Connection, url: str, buffer: int, loop: str) -> None:
    async def main() -> None:
        bus = nanomitter.connect(_nano_url(url, "node", buffer))
        tally = Tally(conn, lambda: bus.stats().lost)
        event = tally.event

        def on_tick(e: nanomitter.DistributedEvent) -> None:
            data = e.data
            event(data["i"], data["ts"], data["t"], data["f"])

        bus.on(TOPIC, on_tick)
        async with bus:
            conn.send({"ready": True})
            await _watch_control(conn)

    anyio.run(main)


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


def raw_publisher(conn: Connection, url: str, buffer: int, loop: str) -> None:
    sock = _bus0(buffer)
    try:
        sock.dial(url, block=True)
        encode = msgspec.msgpack.Encoder().encode
        send = sock.send
        try_again = pynng.TryAgain
        clock = time.monotonic_ns
        seq = 0
        index = I_BASE
        conn.send({"ready": True})

        def send_blocking(frame: bytes) -> None:
            while True:
                try:
                    send(frame, block=False)
                    return
                except try_again:
                    select.select([], [sock.send_fd], [], 0.1)

        while True:
            _, trial, count, rate, size = _control(conn)
            pad = make_pad(size)
            schedule = Schedule(rate)
            start = clock()
            sent = 0
            while sent < count:
                due = schedule.due(sent, count)
                while sent < due:
                    seq += 1
                    index += 1
                    frame = encode(
                        {
                            "topic": TOPIC,
                            "data": {"i": index, "ts": clock(), "t": trial, "f": 0, "pad": pad},
                            "fromLeader": False,
                            "sender": SENDER,
                            "seq": seq,
                        }
                    )
                    try:
                        send(frame, block=False)
                    except try_again:
                        send_blocking(frame)
                    sent += 1
                if sent < count:
                    time.sleep(schedule.pause(sent))
            end = clock()
            fences = 0
            while not conn.poll(FENCE_INTERVAL):
                seq += 1
                index += 1
                data = {"i": index, "ts": clock(), "t": trial, "f": 1, "pad": pad}
                send_blocking(
                    encode(
                        {
                            "topic": TOPIC,
                            "data": data,
                            "fromLeader": False,
                            "sender": SENDER,
                            "seq": seq,
                        }
                    )
                )
                fences += 1
            _control(conn)  # "fenced"
            conn.send({"trial": trial, "start_ns": start, "end_ns": end, "fences": fences})
    finally:
        sock.close()


def nano_publisher(conn: Connection, url: str, buffer: int, loop: str) -> None:
    async def main() -> None:
        async with nanomitter.connect(_nano_url(url, "node", buffer)) as bus:
            emit = bus.emit
            clock = time.monotonic_ns
            index = I_BASE
            conn.send({"ready": True})
            while True:
                await anyio.wait_readable(conn.fileno())
                _, trial, count, rate, size = _control(conn)
                pad = make_pad(size)
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
                _control(conn)  # "fenced"
                conn.send({"trial": trial, "start_ns": start, "end_ns": end, "fences": fences})

    anyio.run(main)


ROLES: dict[str, dict[str, Callable[..., None]]] = {
    "raw": {"hub": raw_hub, "sub": raw_subscriber, "pub": raw_publisher},
    "nanomitter": {"hub": nano_hub, "sub": nano_subscriber, "pub": nano_publisher},
}


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


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port != 55555:
            return port


class Topology:
    """A hub, N subscribers and a publisher, each in its own process, for one contender."""

    def __init__(
        self, contender: str, subs: int, buffer: int, raw_loop: str, hub: str = "own"
    ) -> None:
        self.contender = contender
        self.hub = hub  # "own": each contender's hub; "reflector": the bare C hub for both
        self.subs = subs
        self.buffer = buffer
        self.raw_loop = raw_loop
        self.url = f"tcp://127.0.0.1:{free_port()}"
        self.ctx = multiprocessing.get_context("spawn")
        self.children: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
        self.sub_conns: list[Connection] = []
        self.pub_conn: Connection | None = None
        self.trials = 0
        self.all_trials: list[Trial] = []

    def _start(self, role: str, *args: Any) -> Connection:
        ours, theirs = self.ctx.Pipe()
        main = ROLES["raw" if role == "hub" and self.hub == "reflector" else self.contender][role]
        process = self.ctx.Process(
            target=_child,
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
        if not conn.poll(timeout):
            raise ChildFailed(f"{self.contender}: a child did not answer within {timeout} s")
        try:
            message: dict[str, Any] = conn.recv()
        except EOFError:
            raise ChildFailed(f"{self.contender}: a child died") from None
        if "error" in message:
            raise ChildFailed(f"{self.contender}: a child failed:\n{message['error']}")
        return message

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
        for _, conn in self.children:
            with contextlib.suppress(OSError):
                conn.send(("stop",))
        deadline = time.monotonic() + 3
        for process, _ in reversed(self.children):
            process.join(max(0.0, deadline - time.monotonic()))
        for process, _ in self.children:
            if process.is_alive():
                process.terminate()
                process.join(2)
            if process.is_alive():
                process.kill()
                process.join()
        for _, conn in self.children:
            conn.close()
        self.children = []

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of every child so far (None where /proc is missing)."""
        total = 0.0
        for process, _ in self.children:
            try:
                with open(f"/proc/{process.pid}/stat", encoding="ascii") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                return None
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
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


def search(topologies: dict[str, Topology], row: dict[str, Cell], settings: Settings) -> None:
    """Bisect every contender's cell in lockstep, alternating trials (noise hits both), from
    a common ceiling: 1.5x the best flat-out delivered rate of either contender."""
    ceiling = 1.5 * max(t.delivered for cell in row.values() for t in cell.flat)
    searches = {name: Bisection(row[name], ceiling, settings.search_steps) for name in topologies}
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
    raw_loop: str,
    hub: str = "own",
) -> tuple[list[Cell], list[Trial]]:
    """Both contenders' topologies run side by side; their trials alternate.

    Returns the cells and every trial run (warm-ups and search trials included).
    """
    cells: list[Cell] = []
    trials: list[Trial] = []
    for subs in subs_counts:
        with contextlib.ExitStack() as stack:
            topologies = {
                name: stack.enter_context(Topology(name, subs, settings.buffer, raw_loop, hub))
                for name in CONTENDERS
            }
            for size in sizes:
                row = {name: Cell(name, subs, size) for name in CONTENDERS}
                for topology in topologies.values():  # warm-up; also sets each base index
                    topology.trial(2000, 20_000, size)
                for _ in range(settings.repeat):
                    for name, topology in topologies.items():
                        row[name].flat.append(topology.trial(settings.count, 0, size))
                for name, topology in topologies.items():
                    row[name].latency = topology.trial(
                        max(200, int(settings.latency_rate * settings.latency_seconds)),
                        settings.latency_rate,
                        size,
                    )
                search(topologies, row, settings)
                cells.extend(row.values())
                progress(row)
            for topology in topologies.values():
                trials.extend(topology.all_trials)
    return cells, trials


def progress(row: dict[str, Cell]) -> None:
    for cell in row.values():
        flat = cell.median_flat
        print(
            f"  [{cell.contender} {cell.size} B x{cell.subs}] flat out {flat.delivered:,.0f}/s "
            f"(offered {flat.offered:,.0f}/s, loss {flat.loss:.1%}), sustainable "
            f"{cell.sustainable:,.0f}/s, search "
            + ", ".join(f"{r / 1000:.1f}k {why or 'ok'}" for r, why in cell.search),
            file=sys.stderr,
            flush=True,
        )


# ---------------------------------------------------------------------------- report


def _rate(value: float) -> str:
    return f"{value / 1000:,.1f}k" if value >= 10_000 else f"{value:,.0f}"


def _us(value: float) -> str:
    return f"{value / 1000:.1f} ms" if value >= 1000 else f"{value:.0f} µs"


def _cpu(trial: Trial | None) -> str:
    value = None if trial is None else trial.cpu_per_delivery
    return "-" if value is None else f"{value:.1f}"


def table(cells: Sequence[Cell], markdown: bool) -> str:
    header = [
        "payload",
        "subs",
        "contender",
        "flat out: delivered/s per sub",
        "ratio",
        "loss",
        "lost: stats / observed",
        "offered/s",
        "CPU µs/delivery (paced)",
        "sustainable/s (<0.1% loss)",
        "ratio",
        "p50",
        "p99",
    ]
    body: list[list[str]] = []
    for cell in cells:
        base = next(
            c for c in cells if c.contender == "raw" and c.subs == cell.subs and c.size == cell.size
        )
        flat = cell.median_flat
        is_raw = cell.contender == "raw"
        latency = cell.latency
        body.append(
            [
                f"{cell.size} B",
                str(cell.subs),
                "raw pynng" if is_raw else "nanomitter",
                _rate(flat.delivered),
                "1.00x" if is_raw else f"{flat.delivered / base.median_flat.delivered:.2f}x",
                f"{flat.loss:.1%}",
                f"{flat.reported:,} / {flat.observed:,}",
                _rate(flat.offered),
                _cpu(latency),
                ("≥ " if cell.sustainable_capped else "") + _rate(cell.sustainable),
                "1.00x" if is_raw else f"{cell.sustainable / max(base.sustainable, 1):.2f}x",
                _us(latency.percentile(0.50)) if latency else "-",
                _us(latency.percentile(0.99)) if latency else "-",
            ]
        )
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(out)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    for n, row in enumerate(body):
        if n and n % len(CONTENDERS) == 0:
            out.append("")
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(out)


def accounting(topologies_trials: Sequence[Trial]) -> list[str]:
    """Reported (``stats().lost``) against observed loss, over every trial of the run."""
    out = []
    for contender in CONTENDERS:
        trials = [t for t in topologies_trials if t.contender == contender]
        windows = sum(len(t.results) for t in trials)
        mismatched = [(t, s) for t in trials for s in t.results if s.reported != s.observed]
        reported = sum(t.reported for t in trials)
        observed = sum(t.observed for t in trials)
        source = "stats().lost" if contender == "nanomitter" else "sequence gaps"
        verdict = "match" if not mismatched else f"MISMATCH in {len(mismatched)} windows"
        out.append(
            f"loss accounting, {contender}: {source} {reported:,} vs observed {observed:,} "
            f"over {len(trials)} trials x subscribers = {windows} windows: {verdict}"
        )
    return out


def goals(cells: Sequence[Cell]) -> list[str]:
    out = []
    figures: list[tuple[str, Callable[[Cell], float]]] = [
        ("flat-out delivered", lambda c: c.median_flat.delivered),
        ("sustainable", lambda c: c.sustainable),
    ]
    for figure, value in figures:
        ratios = []
        for cell in cells:
            if cell.contender != "nanomitter":
                continue
            base = next(
                c
                for c in cells
                if c.contender == "raw" and c.subs == cell.subs and c.size == cell.size
            )
            ratios.append((value(cell) / max(value(base), 1), cell))
        worst, cell = min(ratios, key=lambda r: r[0])
        met = all(r >= 0.8 for r, _ in ratios)
        listed = ", ".join(f"{r:.2f}x" for r, _ in ratios)
        out.append(
            f"goal nanomitter >= 0.8x raw ({figure}): {'MET' if met else 'MISSED'} "
            f"({listed}; worst {worst:.2f}x at {cell.size} B, {cell.subs} subscribers)"
        )
    return out


def environment(settings: Settings, sizes: Sequence[int], raw_loop: str, hub: str) -> list[str]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as info:
        for text in info:
            if text.startswith("model name"):
                cpu = text.split(":", 1)[1].strip()
                break

    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    libs = ", ".join(f"{n} {version(n)}" for n in ("nanomitter", "pynng", "msgspec", "anyio"))
    frames = ", ".join(f"{s} B payload = {frame_size(s)} B frame" for s in sizes)
    return [
        f"CPU: {cpu}, nproc {os.cpu_count()}; Python {platform.python_version()} "
        f"({platform.python_implementation()}), {platform.system()} {platform.machine()}; "
        f"{libs}",
        f"tcp://127.0.0.1, one hub + one publisher + N subscribers, each its own process; "
        f"buffer {settings.buffer} messages per socket and direction; {frames}",
        f"flat out: {settings.count:,} events, median of {settings.repeat}; sustainable: "
        f"{settings.search_steps}-step bisection, {settings.trial_seconds:g} s trials "
        f"(a failed rate retried {settings.retries}x), "
        f"< 0.1% loss and lag <= {settings.max_lag * 1000:g} ms; latency at "
        f"{settings.latency_rate:,.0f} events/s for {settings.latency_seconds:g} s, with the "
        "CPU time (user + system) of every process of the topology per event delivered",
        f"raw subscriber loop: {raw_loop}; nanomitter on asyncio; nanomitter's hub: "
        + ("connect(role=hub)" if hub == "own" else "the bare reflector (diagnostic)"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=100_000, help="events per flat-out run")
    parser.add_argument("--repeat", type=int, default=5, help="flat-out runs (median)")
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
    parser.add_argument("--buffer", type=int, default=1024, help="socket buffers (messages)")
    parser.add_argument(
        "--raw-loop", choices=("poll", "block", "anyio"), default="poll", help="raw receive form"
    )
    parser.add_argument(
        "--nano-hub",
        choices=("own", "reflector"),
        default="own",
        help="nanomitter's hub: its own (connect role=hub; default) or the bare reflector",
    )
    parser.add_argument("--markdown", action="store_true", help="print the table in markdown")
    parser.add_argument("--quick", action="store_true", help="smoke run: small counts, < 30 s")
    args = parser.parse_args(argv)
    settings = Settings(
        count=args.count,
        repeat=args.repeat,
        trial_seconds=args.trial_seconds,
        search_steps=args.search_steps,
        retries=args.retries,
        latency_rate=args.latency_rate,
        latency_seconds=args.latency_seconds,
        max_lag=args.max_lag_ms / 1000,
        buffer=args.buffer,
    )
    if args.quick:
        settings.count = min(settings.count, 20_000)
        settings.repeat = 1
        settings.trial_seconds = min(settings.trial_seconds, 0.2)
        settings.search_steps = min(settings.search_steps, 3)
        settings.retries = 0
        settings.latency_seconds = min(settings.latency_seconds, 0.2)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    subs_counts = [int(s) for s in args.subs.split(",") if s.strip()]
    if settings.count < 1 or settings.repeat < 1 or settings.search_steps < 1:
        parser.error("--count, --repeat and --search-steps must be >= 1")

    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    cells, trials = measure(subs_counts, sizes, settings, args.raw_loop, args.nano_hub)
    prefix = "- " if args.markdown else ""
    print(
        "\n".join(
            prefix + text for text in environment(settings, sizes, args.raw_loop, args.nano_hub)
        )
    )
    print(
        f"{prefix}wall time {time.perf_counter() - started:.0f} s; 1-minute load average "
        f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after (this run's own processes "
        "included; the contenders' trials alternate, so load from elsewhere hits both)"
    )
    print()
    print(table(cells, args.markdown))
    print()
    lines = accounting(trials) + goals(cells)
    print("\n".join(prefix + text for text in lines))
    return 1 if any("MISMATCH" in text for text in lines) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # every child has been stopped and reaped on the way out
        print("interrupted", file=sys.stderr)
        sys.exit(130)
