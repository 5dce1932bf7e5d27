"""Across processes over ZeroMQ: nanomitter ``zmq+tcp://`` against raw pyzmq, the same job.

Topology, the same for both contenders: one hub process, one publisher process and N
subscriber processes (N = 1 and 4), on ``tcp://127.0.0.1:P`` (publishers) and ``P+1``
(subscribers). The structure, figures and loss accounting mirror ``benchmarks/nng.py``.

- raw pyzmq: the hub is libzmq's ``zmq.proxy(XSUB, XPUB)`` in a thread (C forwards every
  message, as in nanomitter's hub). The publisher msgspec-encodes a dict ``{topic, data,
  fromLeader, sender, seq}`` per event (the bytes nanomitter puts in frame 2) and sends
  ``[topic, envelope]`` with a PUB socket (``send(topic, SNDMORE)``, ``send(frame)``; a
  plain PUB drops when its queue is full, it never blocks). A subscriber is a plain fd-based
  loop with no event loop: ``recv(NOBLOCK)`` until ``Again``, then ``zmq.EVENTS`` and
  ``poll()`` on ``zmq.FD``; each envelope is msgspec-decoded (to a dict) and dispatched by
  frame 1 to a function that counts sequence gaps and does the listener's work.
  ``--raw-loop block`` uses blocking ``recv()`` instead.
- nanomitter: the hub is ``nanomitter.connect(url, role="hub")`` kept open; the publisher
  ``await bus.emit(topic, data)`` (coalescing under load, see docs/transports/zmq.md); each
  subscriber ``bus.on(topic, fn)`` with a sync listener.

Every node runs in its own process (multiprocessing, spawn). Both contenders use the same
high-water mark, ``--hwm`` messages per socket and direction (a nanomitter message may carry
up to 64 coalesced events).

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
  ``--trial-seconds``) with < 0.1% loss on every subscriber, the publisher on schedule and
  every subscriber done within ``--max-lag-ms`` of the last send.
- latency p50/p99 (send to listener call) at a fixed paced rate ``--latency-rate``, the
  same for both contenders, pooled over subscribers.

    python benchmarks/zmq_bench.py              # full run (about 5 minutes)
    python benchmarks/zmq_bench.py --quick      # smoke run (< 40 s)
    python benchmarks/zmq_bench.py --markdown   # the table for docs/benchmarks.md

(Not ``benchmarks/zmq.py``: run as a script, or checked by mypy, that name would shadow
pyzmq itself.)
"""

from __future__ import annotations

import os
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any, cast

import msgspec
import zmq
from common import (
    FENCE_INTERVAL,
    I_BASE,
    MAX_FRAME,
    TOPIC,
    Cell,
    Roles,
    Schedule,
    SeqGaps,
    Settings,
    Tally,
    Topology,
    accounting,
    finish,
    frame_size,
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
from common import control as _control

import nanomitter
from nanomitter.machine import describe
from nanomitter.transports.zmq import ZmqTransport

TOPIC_BYTES = TOPIC.encode()
SENDER = "rawpyzmqpublisher0001"  # 21 characters, the shape of a nanomitter sender id


# ---------------------------------------------------------------------------- sockets


def _nano_url(url: str, role: str, hwm: int) -> str:
    return f"{url}?role={role}&hwm={hwm}&max_frame_bytes={MAX_FRAME // 4}"


def _endpoints(url: str) -> tuple[str, str]:
    """(publishers' endpoint, subscribers' endpoint) of a zmq+tcp:// URL, as nanomitter does."""
    host, port = url.removeprefix("zmq+tcp://").rsplit(":", 1)
    return f"tcp://{host}:{port}", f"tcp://{host}:{int(port) + 1}"


# ---------------------------------------------------------------------------- hubs


def raw_hub(conn: Connection, url: str, hwm: int) -> None:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    xsub, xpub = context.socket(zmq.XSUB), context.socket(zmq.XPUB)
    xsub.rcvhwm = xpub.sndhwm = hwm
    xsub.maxmsgsize = MAX_FRAME
    publish, subscribe = _endpoints(url)
    xsub.bind(publish)
    xpub.bind(subscribe)
    threading.Thread(target=zmq.proxy, args=(xsub, xpub), daemon=True).start()
    conn.send({"ready": True})
    while True:
        _control(conn)  # the process exits on stop; the proxy thread is a daemon


def nano_hub(conn: Connection, url: str, hwm: int) -> None:
    run_nano_hub(conn, _nano_url(url, "hub", hwm))


# ---------------------------------------------------------------------------- subscribers


def _raw_socket(kind: int, endpoint: str, hwm: int) -> tuple[Any, zmq.Socket[bytes]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = context.socket(kind)
    sock.sndhwm = sock.rcvhwm = hwm
    sock.linger = 1000
    sock.connect(endpoint)
    return context, sock


def raw_subscriber(conn: Connection, url: str, hwm: int, loop: str) -> None:
    context, sock = _raw_socket(zmq.SUB, _endpoints(url)[1], hwm)
    sock.maxmsgsize = MAX_FRAME
    sock.subscribe(TOPIC_BYTES)
    try:
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

        handlers: Handlers = {TOPIC_BYTES: on_tick}
        decode = msgspec.msgpack.Decoder().decode
        conn.send({"ready": True})
        if loop == "poll":
            _raw_poll_loop(conn, sock, decode, handlers)
        else:
            _raw_block_loop(conn, sock, decode, handlers)
    finally:
        sock.close(0)
        context.term()


Handlers = dict[bytes, Callable[[dict[str, Any]], None]]


def _raw_poll_loop(
    conn: Connection, sock: zmq.Socket[bytes], decode: Callable[[bytes], Any], handlers: Handlers
) -> None:
    recv = sock.recv
    getsockopt = sock.getsockopt
    again = zmq.Again
    control = conn.fileno()
    poller = select.poll()
    poller.register(cast(int, sock.getsockopt(zmq.FD)), select.POLLIN)
    poller.register(control, select.POLLIN)
    while True:
        try:
            topic = recv(zmq.NOBLOCK)
            frame = recv(zmq.NOBLOCK)
        except again:
            if cast(int, getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                continue  # the fd is edge-triggered: it may be quiet with messages queued
            for fd, _ in poller.poll():
                if fd == control:
                    _control(conn)
            continue
        handler = handlers.get(topic)
        if handler is not None:
            handler(decode(frame))


def _raw_block_loop(
    conn: Connection, sock: zmq.Socket[bytes], decode: Callable[[bytes], Any], handlers: Handlers
) -> None:
    sock.rcvtimeo = 100
    recv = sock.recv
    while True:
        try:
            topic = recv()
            frame = recv()
        except zmq.Again:
            if conn.poll():
                _control(conn)
            continue
        handler = handlers.get(topic)
        if handler is not None:
            handler(decode(frame))


async def _sync_interest(bus: nanomitter.DistributedEventEmitter) -> None:
    assert isinstance(bus.transport, ZmqTransport)
    await bus.transport.sync_interest()


def nano_subscriber(conn: Connection, url: str, hwm: int, loop: str) -> None:
    run_nano_subscriber(conn, _nano_url(url, "node", hwm), _sync_interest)


# ---------------------------------------------------------------------------- publishers


def raw_publisher(conn: Connection, url: str, hwm: int, loop: str) -> None:
    context, sock = _raw_socket(zmq.PUB, _endpoints(url)[0], hwm)
    try:
        encode = msgspec.msgpack.Encoder().encode
        send = sock.send
        more = zmq.SNDMORE
        clock = time.monotonic_ns
        seq = 0
        index = I_BASE
        conn.send({"ready": True})
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
                    send(TOPIC_BYTES, more)
                    send(frame)
                    sent += 1
                if sent < count:
                    time.sleep(schedule.pause(sent))
            end = clock()
            fences = 0
            while not conn.poll(FENCE_INTERVAL):
                seq += 1
                index += 1
                data = {"i": index, "ts": clock(), "t": trial, "f": 1, "pad": pad}
                send(TOPIC_BYTES, more)
                send(
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
        context.term()


def nano_publisher(conn: Connection, url: str, hwm: int, loop: str) -> None:
    run_nano_publisher(conn, _nano_url(url, "node", hwm))


ROLES: Roles = {
    "raw": {"hub": raw_hub, "sub": raw_subscriber, "pub": raw_publisher},
    "nanomitter": {"hub": nano_hub, "sub": nano_subscriber, "pub": nano_publisher},
}


# ---------------------------------------------------------------------------- controller


def free_port_pair() -> int:
    """A port P with P and P+1 free on 127.0.0.1 (never 55555)."""
    while True:
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port: int = first.getsockname()[1]
            if port in (55555, 55554, 65535):
                continue
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port


def ceilings(row: dict[str, Cell]) -> dict[str, float]:
    """Each cell's own ceiling: 1.25x its flat-out delivered rate."""
    return {name: 1.25 * max(t.delivered for t in cell.flat) for name, cell in row.items()}


def goals_zmq(cells: Sequence[Cell]) -> list[str]:
    out = goals(cells, 0.7)
    for cell in cells:
        if cell.contender == "nanomitter" and cell.size == 64 and cell.subs == 1:
            rate = cell.median_flat.delivered
            out.append(
                f"goal nanomitter >= 200k events/s at 64 B, 1 subscriber (flat-out delivered): "
                f"{'MET' if rate >= 200_000 else 'MISSED'} ({rate:,.0f}/s)"
            )
    return out


def environment(settings: Settings, sizes: Sequence[int], raw_loop: str, hub: str) -> list[str]:
    frames = ", ".join(f"{s} B payload = {frame_size(s, SENDER)} B frame" for s in sizes)
    return [
        describe(("nanomitter", "pyzmq", "msgspec", "anyio")),
        f"tcp://127.0.0.1 (libzmq {zmq.zmq_version()}), one hub + one publisher + N "
        f"subscribers, each its own process; high-water mark {settings.buffer} messages per "
        f"socket and direction; {frames}",
        method(settings),
        f"raw subscriber loop: {raw_loop}; nanomitter on asyncio; nanomitter's hub: "
        + ("connect(role=hub)" if hub == "own" else "libzmq's bare proxy (diagnostic)"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser(__doc__, count=200_000, repeat=3)
    parser.add_argument("--hwm", type=int, default=10_000, help="high-water marks (messages)")
    parser.add_argument(
        "--raw-loop", choices=("poll", "block"), default="poll", help="raw receive form"
    )
    parser.add_argument(
        "--nano-hub",
        choices=("own", "raw"),
        default="own",
        help="nanomitter's hub: its own (connect role=hub; default) or libzmq's bare proxy",
    )
    args, settings, sizes, subs_counts = parse_settings(parser, argv, "hwm", quick_steps=2)

    def topology(contender: str, subs: int) -> Topology:
        # "own": each contender's hub; "raw": libzmq's bare proxy for both
        return Topology(
            ROLES,
            f"zmq+tcp://127.0.0.1:{free_port_pair()}",
            contender,
            subs,
            settings.buffer,
            raw_loop=args.raw_loop,
            hub=args.nano_hub,
            bare_hub="raw",
        )

    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    cells, trials = measure(subs_counts, sizes, settings, topology, ceilings)
    env = environment(settings, sizes, args.raw_loop, args.nano_hub)
    lines = accounting(trials) + goals_zmq(cells)
    return finish(
        args,
        transport="zmq",
        raw_name="raw pyzmq",
        environment=env,
        started=started,
        load_before=load_before,
        load_note="both contenders' trials alternate, so load from elsewhere hits both",
        cells=cells,
        trials=trials,
        lines=lines,
        cpu_column=False,
    )


if __name__ == "__main__":
    sys.exit(main())
