"""``nanomitter hub``: run a bus's hub on its own and say who comes and goes.

The hub is the transport's own (an nng reflector or a ZeroMQ proxy, each in a thread, no
Python per message), run by an emitter connected with ``role=hub``. That emitter's presence
table (the ``<3`` heartbeats) names the services joining and leaving the bus; the
transports report peers joining and leaving from their own threads (:class:`PeerNews`
carries that to the event loop without ever blocking them).
"""

from __future__ import annotations

import contextlib
import queue
import socket
from collections.abc import Callable
from functools import partial
from typing import NoReturn

import anyio
import click

from ..core.emitter import DistributedEventEmitter
from ..core.errors import NanomitterError
from ..core.presence import Peer
from ..transports.nng import NngTransport
from ..transports.registry import NATS_SCHEMES, transport_class
from ..transports.url import BusURL
from ..transports.zmq import ZmqTransport
from .common import (
    OK,
    RuntimeFailure,
    bus_url,
    clock,
    open_bus,
    parse_url,
    require_network_bus,
    run,
    shown,
    stdout,
    stop_on_signals,
    url_option,
)

PeerReport = Callable[[bool, str], None]


@click.command(short_help="Run a bus's hub; show peers, services and statistics.")
@click.argument("url_argument", metavar="[URL]", required=False)
@url_option
@click.option(
    "--stats-interval",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="seconds between statistics lines; 0 turns them off",
)
def hub(url_argument: str | None, url: str | None, stats_interval: float) -> int:
    """Run the hub of the bus at URL until SIGINT or SIGTERM (then exit 0).

    The hub re-broadcasts between all members: the nng reflector for tcp:// ipc:// ws://
    tls+tcp://, the XSUB/XPUB proxy for zmq+tcp:// zmq+ipc:// (PORT and PORT+1). It prints
    peers joining and leaving, services announcing themselves (heartbeat <3) and, every
    --stats-interval seconds, its statistics. NATS needs no hub: run nats-server.
    """
    if url_argument is not None and url is not None and url_argument != url:
        raise click.UsageError("give the hub's URL once: as the argument or as --url, not both")
    address = bus_url(url_argument if url_argument is not None else url)
    check_hub_url(parse_url(address))
    bus = open_bus(address, role="hub", echo=False)
    return run(partial(serve, bus, address, stats_interval))


def check_hub_url(url: BusURL) -> None:
    """Only transports with a hub role have a hub to run; say what to do instead."""
    if url.scheme in NATS_SCHEMES:
        raise click.UsageError(
            "NATS has no nanomitter hub: the NATS server is the hub; run nats-server "
            "(e.g. 'nats-server -p 4222') and point every node at nats://HOST:4222"
        )
    require_network_bus(url, "hub")
    if "role" not in transport_class(url.scheme).options:
        raise click.UsageError(f"{url.scheme}:// has no hub role: there is no hub to run")
    role = url.options.get("role", "hub")
    if role != "hub":
        raise click.UsageError(
            f"the hub command always runs role=hub; drop role={role} from the URL"
        )


async def serve(bus: DistributedEventEmitter, address: str, stats_interval: float) -> int:
    news = PeerNews()
    peers = PeerCounter()
    services = ServiceLog()
    transport = bus.transport
    if isinstance(transport, NngTransport | ZmqTransport):
        transport.on_peer = news.put
    bus.on_peer("joined", services.joined)
    bus.on_peer("left", services.left)

    final: list[str] = []

    async def body() -> None:
        opened = False
        try:
            async with bus:
                opened = True
                say(f"hub running on {shown(address)} ({describe(bus)}); Ctrl-C stops it")
                try:
                    async with anyio.create_task_group() as group:
                        group.start_soon(news.relay, peers.report)
                        if stats_interval > 0:
                            group.start_soon(report_statistics, bus, peers, stats_interval)
                finally:  # while the transport still has its figures
                    final.append(statistics_line(bus, peers))
        except NanomitterError as exc:
            if opened or "in use" not in str(exc):
                raise
            raise RuntimeFailure(  # the transport's advice (role=node) is for library users
                f"cannot run the hub at {shown(address)}: the address is in use; is another "
                "hub running there? Stop it, or give this hub another URL"
            ) from None

    try:
        stopped_by = await stop_on_signals(body)
    finally:
        news.close()
    why = f" ({stopped_by.name})" if stopped_by is not None else ""
    say(f"hub stopped{why}; {final[0] if final else statistics_line(bus, peers)}")
    return OK


def describe(bus: DistributedEventEmitter) -> str:
    transport = bus.transport
    if isinstance(transport, ZmqTransport):
        ends = transport.endpoints
        return f"ZeroMQ proxy: publishers -> {ends.publish}, {ends.subscribe} -> subscribers"
    if isinstance(transport, NngTransport):
        return "nng reflector"
    return type(transport).__name__


class PeerNews:
    """Carries ``(joined, address)`` from the transport's threads to the event loop.

    ``put`` never blocks (the callers are nng's and libzmq's own threads, some of them
    waiting for this loop while a socket closes): it queues the news and wakes the loop
    through a socket pair.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[bool, str]] = queue.SimpleQueue()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)

    def put(self, joined: bool, address: str) -> None:
        """Any thread: queue one change."""
        self._queue.put((joined, address))
        with contextlib.suppress(OSError):  # full: a wake-up is pending anyway; closed: done
            self._wake_writer.send(b"\0")

    async def relay(self, report: PeerReport) -> NoReturn:
        """Call ``report(joined, address)`` on the event loop for each change, in order."""
        while True:
            await anyio.wait_readable(self._wake_reader.fileno())
            with contextlib.suppress(BlockingIOError):
                while self._wake_reader.recv(4096):
                    pass
            while True:
                try:
                    joined, address = self._queue.get_nowait()
                except queue.Empty:
                    break
                report(joined, address)

    def close(self) -> None:
        self._wake_writer.close()
        self._wake_reader.close()


class PeerCounter:
    """Counts the peers connected to this hub and prints each arrival and departure."""

    def __init__(self) -> None:
        self.connected = 0

    def report(self, joined: bool, address: str) -> None:
        self.connected = max(0, self.connected + (1 if joined else -1))
        what = "peer joined" if joined else "peer left"
        where = f"  {address}" if address else ""
        say(f"{what} ({self.connected} connected){where}", style="green" if joined else "yellow")


class ServiceLog:
    """Says when a service joins or leaves, from presence (the ``<3`` heartbeats)."""

    def joined(self, peer: Peer) -> None:
        where = f" on {peer.host} (pid {peer.pid})" if peer.host else ""
        answers = f", answers {', '.join(peer.responds)}" if peer.responds else ""
        say(f"service {peer.service or '?'} ({peer.id}) joined{where}{answers}", style="cyan")

    def left(self, peer: Peer) -> None:
        say(f"service {peer.service or '?'} ({peer.id}) left", style="cyan")


async def report_statistics(
    bus: DistributedEventEmitter, peers: PeerCounter, interval: float
) -> NoReturn:
    while True:
        await anyio.sleep(interval)
        say(statistics_line(bus, peers), style="dim")


def statistics_line(bus: DistributedEventEmitter, peers: PeerCounter) -> str:
    """The emitter's counters that matter at a hub, then every transport figure."""
    stats = bus.stats()
    own = (
        f"peers={peers.connected} received={stats.received} lost={stats.lost} "
        f"dropped={stats.dropped} decode_errors={stats.decode_errors}"
    )
    figures = " ".join(f"{name}={value}" for name, value in bus.transport.statistics().items())
    return f"stats: {own} | transport: {figures}" if figures else f"stats: {own}"


def say(text: str, style: str | None = None) -> None:
    """One timestamped line on stdout: the hub's output is its log."""
    stdout.print(f"{clock()} {text}", style=style, markup=False)
