"""The subscriber side of ``nanomitter bench``: count, time and report what arrives.

``nanomitter bench`` starts one of these per subscriber, as a child process that runs
:func:`main` with ``$NANOMITTER_URL`` set (the URL goes by environment, so credentials in
it never show in ``ps``), so the subscriber competes for
the CPU like a real one; for transports that cannot cross processes (``memory://``) the
same :class:`Tally` runs in the bench's own process. The child speaks JSON lines on stdout
(``{"ready": ...}``, then one ``{"report": ...}`` per phase) and exits when its stdin
closes, so it never outlives the bench, even one that was SIGKILLed.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import anyio
import msgspec

import nanomitter

from ..connect import URL_ENVIRONMENT_VARIABLE

TOPIC = "bench.tick"
MAX_LATENCY_SAMPLES = 10_000
"""Latency samples one subscriber reports per phase (evenly thinned above this)."""

Report = dict[str, Any]


class Tally:
    """One subscriber's bookkeeping: a sync listener cheap enough not to be the bottleneck.

    The publisher numbers every event (``i``) and, after each phase, sends *fence* events
    (``f=1``) until every subscriber has reported. At its first fence of a phase a
    subscriber reports what it delivered, the loss it saw (gaps in ``i`` since its previous
    report) and the loss nanomitter counted over the same window (``stats().lost``); both
    are read at the same instant, so they must be equal.
    """

    __slots__ = (
        "data",
        "done_phase",
        "first_ns",
        "last_ns",
        "lats",
        "prev_dropped",
        "prev_i",
        "prev_lost",
        "send",
        "stats",
        "window",
    )

    def __init__(self, send: Callable[[Report], None], stats: Callable[[], nanomitter.Stats]):
        self.send = send
        self.stats = stats
        self.prev_i = -1  # index before the window; set from the first event seen
        self.prev_lost = 0
        self.prev_dropped = 0
        self.window = 0  # events (data and fences) received in the window
        self.data = 0  # data events delivered in the window
        self.first_ns = 0
        self.last_ns = 0
        self.lats: list[int] = []
        self.done_phase = 0

    def listener(self, event: nanomitter.DistributedEvent) -> None:
        now = time.monotonic_ns()
        data = event.data
        i = data["i"]
        if self.prev_i < 0:
            self.prev_i = i - 1  # like stats().lost: loss before the first event is not a gap
        self.window += 1
        if data["f"]:
            if data["p"] > self.done_phase:
                self.report(i, data["p"])
            return
        self.data += 1
        if not self.first_ns:
            self.first_ns = now
        self.last_ns = now
        self.lats.append(now - data["ts"])

    def report(self, i: int, phase: int) -> None:
        stats = self.stats()
        lats = self.lats
        step = max(1, -(-len(lats) // MAX_LATENCY_SAMPLES))
        self.send(
            {
                "phase": phase,
                "delivered": self.data,
                "first_ns": self.first_ns,
                "last_ns": self.last_ns,
                "observed": (i - self.prev_i) - self.window,
                "reported": stats.lost - self.prev_lost,
                "dropped": stats.dropped - self.prev_dropped,
                "decode_errors": stats.decode_errors,
                "lats": lats[::step],
            }
        )
        self.done_phase = phase
        self.prev_i = i
        self.prev_lost = stats.lost
        self.prev_dropped = stats.dropped
        self.window = 0
        self.data = 0
        self.first_ns = 0
        self.last_ns = 0
        self.lats = []


async def subscribe(
    url: str,
    options: dict[str, Any],
    send: Callable[[Report], None],
    ready: Callable[[], None],
    until: Callable[[], Any],
) -> None:
    """Join ``url``, listen, call ``ready()`` once listening is in force, run to ``until()``."""
    bus = nanomitter.connect(url, **options)
    tally = Tally(send, bus.stats)
    bus.on(TOPIC, tally.listener)
    async with bus:
        await bus.listening()
        ready()
        await until()


def _write(message: Report) -> None:
    sys.stdout.buffer.write(msgspec.json.encode(message) + b"\n")
    sys.stdout.buffer.flush()


async def _stdin_closed() -> None:
    """Return when the bench closes our stdin (or writes to it): our signal to stop."""
    fd = sys.stdin.fileno()
    os.set_blocking(fd, False)
    while True:
        await anyio.wait_readable(fd)
        try:
            os.read(fd, 4096)
        except BlockingIOError:
            continue
        return


def main(argv: list[str]) -> int:
    """``bench_worker OPTIONS_JSON``, URL in ``$NANOMITTER_URL``: a bench subscriber."""
    url = os.environ.get(URL_ENVIRONMENT_VARIABLE)
    if len(argv) != 1 or not url:
        print(
            f"usage: {URL_ENVIRONMENT_VARIABLE}=URL python -m nanomitter.cli.bench_worker "
            "OPTIONS_JSON (nanomitter bench starts it)",
            file=sys.stderr,
        )
        return 2
    options = msgspec.json.decode(argv[0], type=dict[str, Any])

    def ready() -> None:
        _write({"ready": True, "pid": os.getpid()})

    try:
        anyio.run(subscribe, url, options, _write, ready, _stdin_closed)
    except KeyboardInterrupt:
        return 130
    except Exception as raised:  # the bench shows this line in its error
        exc: BaseException = raised
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]  # the emitter's task group wraps what failed in it
        text = " ".join(str(exc).split())
        print(f"bench subscriber: {type(exc).__name__}: {text}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
