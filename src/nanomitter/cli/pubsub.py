"""``nanomitter sub`` prints the bus's events; ``nanomitter pub`` emits some.

``sub`` says ``listening on URL for PATTERNS`` on stderr only once every pattern is in force
end to end (``bus.listening()``), so whatever is emitted after that line reaches it. ``pub``
emits once it has joined the bus and exits after the last event is flushed.

In ``--json`` output and in readable lines, data is compact JSON; binary data (msgpack
``bin``) appears as a base64 string, msgspec's rule for bytes in JSON, and anything JSON
cannot express (e.g. msgpack extension types) as its Python repr in a string.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import click
import msgspec
from rich.text import Text

from ..core.emitter import DistributedEventEmitter
from ..core.event import DistributedEvent
from ..core.topics import validate_pattern, validate_topic
from .common import (
    OK,
    bus_url,
    clock,
    open_bus,
    parse_url,
    quiet_broken_pipe,
    require_network_bus,
    run,
    shown,
    stderr,
    stdout,
    stop_on_signals,
    url_option,
)

_json = msgspec.json.Encoder(enc_hook=repr)
"""bytes -> base64 (msgspec's JSON rule); values JSON cannot hold -> their repr."""

service_option = click.option(
    "--service",
    default="",
    metavar="NAME",
    help="announce this service with the original nanomitter's heartbeat (<3) every 60 s "
    "('nanomitter hub' prints it)",
)


# ---------------------------------------------------------------------------- sub


@click.command(short_help="Print events as they arrive (readable or --json).")
@click.argument("patterns", nargs=-1, metavar="[PATTERN]...")
@url_option
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='one JSON object per line, {"topic","data","sender","seq"}, for piping',
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="exit (0) after N events",
)
@service_option
def sub(
    patterns: tuple[str, ...], url: str | None, as_json: bool, count: int | None, service: str
) -> int:
    """Print events matching PATTERN(s) as they arrive (default: *, every event).

    Patterns: 'stockprice', 'stock.*.price' (* = one token), 'stock.>' (one or more
    trailing tokens), '*' alone (everything). Once every pattern is in force, it prints
    'listening on URL for PATTERNS' on stderr: events emitted after that reach it.
    SIGINT or SIGTERM stops it (exit 0).
    """
    chosen = patterns or ("*",)
    for pattern in chosen:
        try:
            validate_pattern(pattern)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    address = bus_url(url)
    require_network_bus(parse_url(address), "sub")
    bus = open_bus(address, service=service, echo=False)
    write = json_line if as_json else readable_line(styled=stdout.is_terminal)
    with quiet_broken_pipe():
        return run(partial(listen, bus, address, chosen, write, count))


async def listen(
    bus: DistributedEventEmitter,
    address: str,
    patterns: tuple[str, ...],
    write: Callable[[DistributedEvent], None],
    count: int | None,
) -> int:
    done = anyio.Event()
    shown_so_far = 0
    last: list[DistributedEvent] = []

    def show(event: DistributedEvent) -> None:
        nonlocal shown_so_far
        if done.is_set() or (last and last[0] is event):
            return  # overlapping patterns hand one event to each: print it once
        last[:] = [event]
        try:
            write(event)
        except BrokenPipeError:  # the reader went away (sub | head): nothing more to do
            done.set()
            return
        shown_so_far += 1
        if count is not None and shown_so_far >= count:
            done.set()

    for pattern in patterns:
        bus.on(pattern, show)

    async def body() -> None:
        async with bus:
            await bus.listening()
            hub_note = " (no hub was running: this process is the hub)" if is_hub(bus) else ""
            stderr.print(
                f"listening on {shown(address)} for {' '.join(patterns)}{hub_note}",
                markup=False,
            )
            await done.wait()

    await stop_on_signals(body)
    return OK


def json_line(event: DistributedEvent) -> None:
    record = {"topic": event.topic, "data": event.data, "sender": event.sender, "seq": event.seq}
    out = sys.stdout.buffer
    out.write(encode(record) + b"\n")
    out.flush()


def readable_line(*, styled: bool) -> Callable[[DistributedEvent], None]:
    """``12:00:01.234 stockprice <- SENDER#SEQ {"price":251.3}``, styled on a terminal."""

    def plain(event: DistributedEvent) -> None:
        data = encode(event.data).decode()
        sys.stdout.write(f"{clock(True)} {event.topic} <- {event.sender}#{event.seq} {data}\n")
        sys.stdout.flush()

    def rich(event: DistributedEvent) -> None:
        line = Text.assemble(
            (clock(True), "dim"),
            " ",
            (event.topic, "bold cyan"),
            " <- ",
            (f"{event.sender}#{event.seq}", "magenta"),
            " ",
            encode(event.data).decode(),
        )
        stdout.print(line)

    return rich if styled else plain


def encode(value: Any) -> bytes:
    try:
        return _json.encode(value)
    except (TypeError, ValueError):  # e.g. a map with keys JSON cannot hold
        return _json.encode(repr(value))


def is_hub(bus: DistributedEventEmitter) -> bool:
    """Whether this process ended up running the hub (role=auto and nobody else did)."""
    return bool(bus.transport.statistics().get("hub"))


# ---------------------------------------------------------------------------- pub


@click.command(short_help="Emit an event (JSON data, or JSON lines on stdin).")
@click.argument("topic")
@click.argument("data", required=False)
@url_option
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="N",
    help="emit each event N times",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="R",
    help="events per second (default: as fast as the bus takes them)",
)
@service_option
def pub(
    *, topic: str, data: str | None, url: str | None, count: int, rate: float | None, service: str
) -> int:
    """Emit DATA (JSON) on TOPIC; without DATA, one event per JSON line on stdin.

    DATA must be JSON: 42, true, '{"ticker": "AAPL"}', and a string in JSON quotes,
    '"hello"' (put -- before a negative number: pub t -- -1). It joins the bus first and
    exits (0) once the last event is flushed; SIGINT or SIGTERM before then exits 130 or 143.
    """
    try:
        validate_topic(topic)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    values = given_value(data) if data is not None else stdin_values
    address = bus_url(url)
    require_network_bus(parse_url(address), "pub")
    bus = open_bus(address, service=service, echo=False)
    return run(
        partial(
            publish, bus=bus, address=address, topic=topic, values=values, count=count, rate=rate
        )
    )


def parse_json(text: str, where: str) -> Any:
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise click.UsageError(
            f"{where} {text.strip()[:60]!r} is not valid JSON ({exc}); "
            f"to send a string, quote it as JSON: '\"{text.strip()[:20]}\"'"
        ) from None


def given_value(text: str) -> Callable[[], AsyncIterator[Any]]:
    value = parse_json(text, "DATA")  # before connecting: a usage error costs nothing

    async def one() -> AsyncIterator[Any]:
        yield value

    return one


async def stdin_values() -> AsyncIterator[Any]:
    """One JSON value per non-blank line of stdin, as the lines arrive."""
    if sys.stdin.isatty():
        stderr.print("reading JSON values from stdin, one per line (Ctrl-D ends)", markup=False)
    number = 0
    async for line in stdin_lines():
        number += 1
        if line.strip():
            yield parse_json(line, f"line {number} of stdin,")


async def stdin_lines() -> AsyncIterator[str]:
    """Lines of stdin read by a daemon thread: a read blocked on a terminal or an idle pipe
    must not keep the process alive once it is told to stop."""
    send, receive = anyio.create_memory_object_stream[str](64)
    token = anyio.lowlevel.current_token()

    def read() -> None:
        try:
            for line in sys.stdin:
                anyio.from_thread.run(send.send, line, token=token)
        except Exception:  # the loop is gone or the reader stopped: nothing left to feed
            return
        finally:
            with contextlib.suppress(Exception):  # the loop is gone: no one waits for the end
                anyio.from_thread.run_sync(send.close, token=token)

    threading.Thread(target=read, name="nanomitter-pub-stdin", daemon=True).start()
    async with receive:
        async for line in receive:
            yield line


class Pacer:
    """Spaces events ``1 / rate`` seconds apart; without a rate, never waits. A pause in the
    input (stdin) is not made up for by a burst afterwards."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1 / rate if rate else 0.0
        self.next_at: float | None = None

    async def wait(self) -> None:
        if not self.interval:
            return
        now = anyio.current_time()
        if self.next_at is not None and self.next_at > now:
            await anyio.sleep(self.next_at - now)
            now = self.next_at
        self.next_at = now + self.interval


async def publish(
    *,
    bus: DistributedEventEmitter,
    address: str,
    topic: str,
    values: Callable[[], AsyncIterator[Any]],
    count: int,
    rate: float | None,
) -> int:
    sent = 0
    pacer = Pacer(rate)

    async def body() -> None:
        nonlocal sent
        async with bus:  # leaving it flushes what was emitted
            if is_hub(bus):
                stderr.print(
                    f"warning: no hub was running at {shown(address)}, so this pub became "
                    "the hub and nobody received its events; start 'nanomitter hub' (or a "
                    "sub) first",
                    style="yellow",
                    markup=False,
                )
            async for value in values():
                for _ in range(count):
                    await pacer.wait()
                    await bus.emit(topic, value)
                    sent += 1

    stopped_by = await stop_on_signals(body)
    if stopped_by is not None:
        stderr.print(f"interrupted ({stopped_by.name}) after {sent} event(s)", markup=False)
        return 128 + int(stopped_by)
    stderr.print(f"sent {sent} event(s) on {topic} to {shown(address)}", markup=False)
    return OK


__all__ = ["pub", "sub"]
