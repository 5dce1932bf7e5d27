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

import os
import select
import sys
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import anyio
import msgspec
import pynng
from common import (
    FENCE_INTERVAL,
    I_BASE,
    MAX_FRAME,
    TOPIC,
    Roles,
    Schedule,
    SeqGaps,
    Settings,
    Tally,
    Topology,
    accounting,
    finish,
    frame_size,
    free_port,
    goals,
    make_pad,
    make_parser,
    measure,
    method,
    parse_settings,
    run_nano_hub,
    run_nano_publisher,
    run_nano_subscriber,
)
from common import (
    common_ceilings as ceilings,
)
from common import (
    control as _control,
)
from common import (
    watch_control as _watch_control,
)

from nanomitter.machine import describe
from nanomitter.transports.nng import DEFAULT_BUFFER
from nanomitter.transports.nng_lowlevel import Reflector

SENDER = "rawpynngpublisher0001"  # 21 characters, the shape of a nanomitter sender id


# ---------------------------------------------------------------------------- sockets


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
    run_nano_hub(conn, _nano_url(url, "hub", buffer))


# ---------------------------------------------------------------------------- subscribers


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


def nano_subscriber(conn: Connection, url: str, buffer: int, loop: str) -> None:
    run_nano_subscriber(conn, _nano_url(url, "node", buffer))


# ---------------------------------------------------------------------------- publishers


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
    run_nano_publisher(conn, _nano_url(url, "node", buffer))


ROLES: Roles = {
    "raw": {"hub": raw_hub, "sub": raw_subscriber, "pub": raw_publisher},
    "nanomitter": {"hub": nano_hub, "sub": nano_subscriber, "pub": nano_publisher},
}


# ---------------------------------------------------------------------------- controller


def environment(settings: Settings, sizes: Sequence[int], raw_loop: str, hub: str) -> list[str]:
    frames = ", ".join(f"{s} B payload = {frame_size(s, SENDER)} B frame" for s in sizes)
    return [
        describe(("nanomitter", "pynng", "msgspec", "anyio")),
        f"tcp://127.0.0.1, one hub + one publisher + N subscribers, each its own process; "
        f"buffer {settings.buffer} messages per socket and direction; {frames}",
        f"{method(settings)}, with the "
        "CPU time (user + system) of every process of the topology per event delivered",
        f"raw subscriber loop: {raw_loop}; nanomitter on asyncio; nanomitter's hub: "
        + ("connect(role=hub)" if hub == "own" else "the bare reflector (diagnostic)"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser(__doc__, count=100_000, repeat=5)
    parser.add_argument(
        "--buffer",
        type=int,
        default=DEFAULT_BUFFER,
        help=f"socket buffers, messages (default {DEFAULT_BUFFER}: nanomitter's)",
    )
    parser.add_argument(
        "--raw-loop", choices=("poll", "block", "anyio"), default="poll", help="raw receive form"
    )
    parser.add_argument(
        "--nano-hub",
        choices=("own", "reflector"),
        default="own",
        help="nanomitter's hub: its own (connect role=hub; default) or the bare reflector",
    )
    args, settings, sizes, subs_counts = parse_settings(parser, argv, "buffer", quick_steps=3)

    def topology(contender: str, subs: int) -> Topology:
        # "own": each contender's hub; "reflector": the bare C hub for both
        return Topology(
            ROLES,
            f"tcp://127.0.0.1:{free_port()}",
            contender,
            subs,
            settings.buffer,
            raw_loop=args.raw_loop,
            hub=args.nano_hub,
            bare_hub="reflector",
            measure_cpu=True,
        )

    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    cells, trials = measure(subs_counts, sizes, settings, topology, ceilings)
    env = environment(settings, sizes, args.raw_loop, args.nano_hub)
    lines = accounting(trials) + goals(cells, 0.8)
    return finish(
        args,
        transport="nng",
        raw_name="raw pynng",
        environment=env,
        started=started,
        load_before=load_before,
        load_note="this run's own processes "
        "included; the contenders' trials alternate, so load from elsewhere hits both",
        cells=cells,
        trials=trials,
        lines=lines,
        cpu_column=True,
    )


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # every child has been stopped and reaped on the way out
        print("interrupted", file=sys.stderr)
        sys.exit(130)
