"""In-process throughput: nanomitter ``memory://`` against pyee and encode/broadcaster.

The job is what a user would hand-write: one emitter emits ``--count`` events of a small dict
payload, one listener receives each event and counts it. We time from the first emit until
the listener has seen all of them (for coroutine handlers: until every handler finished) and
report events/s delivered, the best (or ``--stat median``) of ``--repeat`` runs, and the
ratio nanomitter / contender measured in the same run.

Scenarios (all on asyncio; nanomitter is also run on trio for reference):

- ``sync``: one emitter, a plain-function listener on it. pyee ``AsyncIOEventEmitter``
  handler vs nanomitter ``bus.on`` (``echo=True``: the emitter's own listeners get its events).
- ``async``: the same with an ``async def`` listener. pyee schedules one task per event;
  nanomitter queues to the listener's own task.
- ``bus``: across two parties on one ``memory://`` bus. broadcaster's ``publish`` and an
  ``async for`` over ``subscribe`` vs two nanomitter emitters on the same ``memory://NAME``
  (listener sync, async, or ``subscribe()`` pull style).

nanomitter runs with the default codec (msgpack: every event really serialised and decoded,
what users get by default) and with ``?codec=none`` (objects passed through, as pyee and
broadcaster do). The goals compare like with like (``codec=none``).

No contender may lose events silently: each run checks that the listener saw every event
(nanomitter's ``stats()`` must show nothing dropped or lost) and the table reports any loss.

    python benchmarks/memory.py               # full run (about 1-2 minutes)
    python benchmarks/memory.py --quick       # smoke run, a few seconds
    python benchmarks/memory.py --markdown    # the table for docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import itertools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
from broadcaster import Broadcast
from pyee.asyncio import AsyncIOEventEmitter

import nanomitter
from nanomitter import DistributedEventEmitter
from nanomitter.machine import describe

TOPIC = "tick"
_bus_names = itertools.count()


# ---------------------------------------------------------------------------- payloads


def make_payload(size: int) -> dict[str, Any]:
    """A small stock-tick dict whose msgpack encoding is exactly ``size`` bytes (>= 40)."""
    base: dict[str, Any] = {"ticker": "AAPL", "price": 251.3, "volume": 1200, "pad": ""}
    overhead = len(msgspec.msgpack.encode(base))
    if size < overhead:
        raise ValueError(f"payload size must be >= {overhead} bytes, got {size}")
    pad = size - overhead
    for guess in range(max(0, pad - 4), pad + 1):  # the str header grows by 1-2 bytes at 32/256
        candidate = {**base, "pad": "x" * guess}
        if len(msgspec.msgpack.encode(candidate)) == size:
            return candidate
    raise ValueError(f"cannot build a payload of exactly {size} bytes")


# ---------------------------------------------------------------------------- one run


@dataclass
class Run:
    """One timed run: how long it took and how many events the listener saw."""

    seconds: float
    seen: int
    dropped: int = 0


class Counter:
    """The listener's trivial work: count, and wake the timer at the last event."""

    __slots__ = ("done", "seen", "target")

    def __init__(self, target: int, done: Callable[[], object]) -> None:
        self.seen = 0
        self.target = target
        self.done = done

    def sync(self, event: object) -> None:
        self.seen += 1
        if self.seen == self.target:
            self.done()

    async def coro(self, event: object) -> None:
        self.seen += 1
        if self.seen == self.target:
            self.done()


def _nothing() -> None:
    return None


# pyee ------------------------------------------------------------------------------------


async def pyee_sync(count: int, payload: dict[str, Any]) -> Run:
    ee = AsyncIOEventEmitter()
    counter = Counter(count, _nothing)
    ee.on(TOPIC, counter.sync)
    emit = ee.emit
    start = time.perf_counter()
    for _ in range(count):
        emit(TOPIC, payload)
    elapsed = time.perf_counter() - start
    return Run(elapsed, counter.seen)


async def pyee_async(count: int, payload: dict[str, Any]) -> Run:
    ee = AsyncIOEventEmitter()
    counter = Counter(count, _nothing)
    ee.on(TOPIC, counter.coro)
    emit = ee.emit
    start = time.perf_counter()
    for _ in range(count):
        emit(TOPIC, payload)
    await ee.wait_for_complete()  # end to end: every handler coroutine has finished
    elapsed = time.perf_counter() - start
    return Run(elapsed, counter.seen)


# broadcaster ------------------------------------------------------------------------------


async def broadcaster_bus(count: int, payload: dict[str, Any]) -> Run:
    done = asyncio.Event()
    counter = Counter(count, done.set)
    async with Broadcast("memory://") as broadcast, broadcast.subscribe(TOPIC) as subscriber:

        async def consume() -> None:
            async for event in subscriber:  # type: ignore[union-attr]
                counter.sync(event)
                if done.is_set():
                    return

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0)  # the consumer is parked on its queue, as a real one would be
        publish = broadcast.publish
        start = time.perf_counter()
        for _ in range(count):
            await publish(TOPIC, payload)
        await done.wait()
        elapsed = time.perf_counter() - start
        await consumer
    return Run(elapsed, counter.seen)


# nanomitter -------------------------------------------------------------------------------


def _url(codec: str) -> str:
    return f"memory://bench-{os.getpid()}-{next(_bus_names)}?codec={codec}"


def _check(bus: DistributedEventEmitter) -> int:
    """Events nanomitter itself counted as dropped or lost (must be 0 for a clean run)."""
    stats = bus.stats()
    return stats.dropped + stats.lost + stats.decode_errors + stats.listener_errors


async def nano_same(count: int, payload: dict[str, Any], codec: str, kind: str) -> Run:
    """One emitter, its own listener (echo=True): ``kind`` is ``sync`` or ``async``."""
    done = anyio.Event()
    counter = Counter(count, done.set)
    # An async listener's queue is bounded (drop-newest); a tight emit loop never yields, so
    # the queue must hold the whole burst, like pyee's unbounded set of tasks does.
    async with nanomitter.connect(_url(codec), echo=True, listener_queue_size=count) as bus:
        bus.on(TOPIC, counter.sync if kind == "sync" else counter.coro)
        emit = bus.emit
        start = time.perf_counter()
        for _ in range(count):
            await emit(TOPIC, payload)
        if counter.seen < count:
            with anyio.move_on_after(max(5.0, count / 10_000)):
                await done.wait()
        elapsed = time.perf_counter() - start
        dropped = _check(bus)
    return Run(elapsed, counter.seen, dropped)


async def nano_bus(count: int, payload: dict[str, Any], codec: str, kind: str) -> Run:
    """Two emitters on one ``memory://`` bus: ``kind`` is ``sync``, ``async`` or ``pull``."""
    done = anyio.Event()
    counter = Counter(count, done.set)
    url = _url(codec)
    async with (
        nanomitter.connect(url, listener_queue_size=count) as sender,
        nanomitter.connect(url, listener_queue_size=count) as receiver,
        anyio.create_task_group() as tg,
    ):
        if kind == "pull":
            ready = anyio.Event()

            async def consume() -> None:
                async with receiver.subscribe(TOPIC, capacity=count) as events:
                    ready.set()
                    async for event in events:
                        counter.sync(event)
                        if counter.seen == count:
                            return

            tg.start_soon(consume)
            await ready.wait()
        else:
            receiver.on(TOPIC, counter.sync if kind == "sync" else counter.coro)
        await anyio.lowlevel.checkpoint()
        emit = sender.emit
        start = time.perf_counter()
        for _ in range(count):
            await emit(TOPIC, payload)
        with anyio.move_on_after(max(5.0, count / 10_000)):
            await done.wait()
        elapsed = time.perf_counter() - start
        dropped = _check(sender) + _check(receiver)
        tg.cancel_scope.cancel()
    return Run(elapsed, counter.seen, dropped)


# ---------------------------------------------------------------------------- the table


Job = Callable[[int, dict[str, Any]], Coroutine[Any, Any, Run]]


@dataclass
class Contender:
    scenario: str  # "sync", "async" or "bus"
    name: str
    job: Job
    baseline: bool = False  # the contender nanomitter rows are compared with
    backend: str = "asyncio"
    codec: str = "-"
    goal: float | None = None  # required ratio against the baseline, for codec=none rows
    runs: dict[int, list[Run]] = field(default_factory=dict)  # payload size -> runs


def contenders(with_trio: bool) -> list[Contender]:
    def same(codec: str, kind: str) -> Job:
        return lambda n, p: nano_same(n, p, codec, kind)

    def bus(codec: str, kind: str) -> Job:
        return lambda n, p: nano_bus(n, p, codec, kind)

    rows = [
        Contender("sync", "pyee AsyncIOEventEmitter, sync handler", pyee_sync, baseline=True),
        Contender("sync", "nanomitter bus.on, sync listener", same("none", "sync"), goal=1.0),
        Contender("sync", "nanomitter bus.on, sync listener", same("msgpack", "sync")),
        Contender("async", "pyee AsyncIOEventEmitter, coroutine handler", pyee_async, True),
        Contender("async", "nanomitter bus.on, async listener", same("none", "async"), goal=4.0),
        Contender("async", "nanomitter bus.on, async listener", same("msgpack", "async")),
        Contender("bus", "broadcaster memory://, async for subscriber", broadcaster_bus, True),
        Contender("bus", "nanomitter 2 emitters, sync listener", bus("none", "sync"), goal=1.5),
        Contender("bus", "nanomitter 2 emitters, async listener", bus("none", "async"), goal=1.5),
        Contender(
            "bus", "nanomitter 2 emitters, async for subscribe()", bus("none", "pull"), goal=1.5
        ),
        Contender("bus", "nanomitter 2 emitters, sync listener", bus("msgpack", "sync")),
        Contender("bus", "nanomitter 2 emitters, async listener", bus("msgpack", "async")),
        Contender("bus", "nanomitter 2 emitters, async for subscribe()", bus("msgpack", "pull")),
    ]
    for row in rows:
        if row.name.startswith("nanomitter"):
            row.codec = "none" if row.goal is not None else "msgpack"
    if with_trio:
        for row in list(rows):
            if row.name.startswith("nanomitter"):
                rows.append(
                    Contender(row.scenario, row.name, row.job, backend="trio", codec=row.codec)
                )
    return rows


def run_once(contender: Contender, count: int, payload: dict[str, Any]) -> Run:
    gc.collect()
    if contender.backend == "trio":
        return anyio.run(contender.job, count, payload, backend="trio")
    return asyncio.run(contender.job(count, payload))


def measure(rows: Sequence[Contender], count: int, sizes: Sequence[int], repeat: int) -> None:
    """Interleave the contenders (round robin) so machine noise spreads over all of them."""
    for size in sizes:
        payload = make_payload(size)
        for row in rows:  # warm-up: imports, code paths, allocator
            run_once(row, min(count, 2000), payload)
        for _ in range(repeat):
            for row in rows:
                row.runs.setdefault(size, []).append(run_once(row, count, payload))


STATISTICS: dict[str, Callable[[Sequence[float]], float]] = {
    "best": max,
    "median": statistics.median,
}
"""How the runs of one contender are summarised. Best of N is the default: on a shared, noisy
machine other work only ever slows a run down, so the fastest run is the least disturbed."""


def rate(runs: Sequence[Run], count: int, stat: str) -> float:
    return STATISTICS[stat]([count / r.seconds for r in runs])


def spread(runs: Sequence[Run], count: int) -> float:
    """Half the min-max range of the rates, as a fraction of the median: the noise."""
    rates = [count / r.seconds for r in runs]
    return (max(rates) - min(rates)) / 2 / statistics.median(rates)


def loss(runs: Sequence[Run], count: int) -> int:
    return max(max(count - r.seen, 0) + r.dropped for r in runs)


@dataclass
class Line:
    scenario: str
    name: str
    backend: str
    codec: str
    size: int
    rate: float
    spread: float
    ratio: float | None
    goal: float | None
    lost: int


def lines(rows: Sequence[Contender], count: int, sizes: Sequence[int], stat: str) -> list[Line]:
    out: list[Line] = []
    for size in sizes:
        for scenario in ("sync", "async", "bus"):
            group = [r for r in rows if r.scenario == scenario]
            base = next(r for r in group if r.baseline)
            base_rate = rate(base.runs[size], count, stat)
            for row in group:
                runs = row.runs[size]
                r = rate(runs, count, stat)
                ratio = None if row.baseline else r / base_rate
                goal = row.goal if row.backend == "asyncio" else None
                out.append(
                    Line(
                        scenario,
                        row.name,
                        row.backend,
                        row.codec,
                        size,
                        r,
                        spread(runs, count),
                        ratio,
                        goal,
                        loss(runs, count),
                    )
                )
    return out


def environment(count: int, repeat: int, stat: str, sizes: Sequence[int], load: str) -> list[str]:
    """How and where the figures were taken (``load``: the load average before the runs)."""
    return [
        f"count {count} events per run, {stat} of {repeat} runs (contenders interleaved), "
        f"payload {' and '.join(f'{s} B' for s in sizes)} (msgpack size of the dict)",
        describe(("nanomitter", "pyee", "broadcaster", "anyio", "msgspec", "trio")),
        f"load average: {load}",
    ]


def _fmt_rate(value: float) -> str:
    return f"{value / 1000:,.0f}k" if value >= 10_000 else f"{value:,.0f}"


def _fmt_ratio(line: Line) -> str:
    if line.ratio is None:
        return "1.00x (baseline)"
    text = f"{line.ratio:.2f}x"
    if line.goal is not None:
        text += f" (goal {line.goal:g}x {'met' if line.ratio >= line.goal else 'MISSED'})"
    return text


def table(data: Sequence[Line], markdown: bool) -> str:
    header = ["scenario", "payload", "contender", "loop", "codec", "events/s", "±", "ratio", "loss"]
    body = [
        [
            line.scenario,
            f"{line.size} B",
            line.name,
            line.backend,
            line.codec,
            _fmt_rate(line.rate),
            f"{line.spread:.0%}",
            _fmt_ratio(line),
            "none" if line.lost == 0 else f"LOST {line.lost}",
        ]
        for line in data
    ]
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(out)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    previous = ""
    for row in body:
        key = row[0] + row[1]
        if previous and key != previous:
            out.append("")
        previous = key
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(out)


def goals(data: Sequence[Line]) -> list[str]:
    """One verdict per goal: the worst codec=none nanomitter row against its baseline."""
    out = []
    titles = {
        "sync": "sync listeners >= 1x pyee",
        "async": "async listeners >= 4x pyee coroutine handlers",
        "bus": ">= 1.5x broadcaster memory://",
    }
    for scenario, title in titles.items():
        rows = [ln for ln in data if ln.scenario == scenario and ln.goal is not None]
        if not rows:
            continue
        worst = min(rows, key=lambda ln: ln.ratio or 0.0)
        met = all((ln.ratio or 0.0) >= (ln.goal or 0.0) and ln.lost == 0 for ln in rows)
        ratios = ", ".join(f"{ln.ratio or 0.0:.2f}x" for ln in rows)
        out.append(
            f"{title}: {'MET' if met else 'MISSED'} (codec=none: {ratios}; worst "
            f"{worst.ratio or 0.0:.2f}x = {worst.name}, {worst.size} B)"
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=100_000, help="events per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per contender")
    parser.add_argument(
        "--stat", choices=sorted(STATISTICS), default="best", help="summary of the runs"
    )
    parser.add_argument(
        "--sizes", default="64,1024", help="payload sizes in bytes (msgpack), comma-separated"
    )
    parser.add_argument("--no-trio", action="store_true", help="skip nanomitter on trio")
    parser.add_argument("--markdown", action="store_true", help="print the table in markdown")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny count, one run")
    parser.add_argument("--results", help="also write the figures to this file (JSON)")
    args = parser.parse_args(argv)
    count: int = args.count
    repeat: int = args.repeat
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.quick:
        count, repeat = min(count, 2000), 1
    if count < 1 or repeat < 1:
        parser.error("--count and --repeat must be >= 1")

    rows = contenders(with_trio=not args.no_trio)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    measure(rows, count, sizes, repeat)
    data = lines(rows, count, sizes, args.stat)
    prefix = "- " if args.markdown else ""
    load = f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after (other work on the machine)"
    env = environment(count, repeat, args.stat, sizes, load)
    if args.results:
        with open(args.results, "w", encoding="utf-8") as out:
            rows_json = [dataclasses.asdict(ln) for ln in data]
            record = {"environment": env, "count": count, "lines": rows_json, "goals": goals(data)}
            json.dump(record, out, indent=1)
    print("\n".join(prefix + text for text in env))
    print(f"{prefix}wall time {time.perf_counter() - started:.0f} s")
    print()
    print(table(data, args.markdown))
    print()
    print("\n".join(prefix + text for text in goals(data)))
    lost = [ln for ln in data if ln.lost]
    for ln in lost:
        print(f"LOSS: {ln.name} ({ln.backend}, codec {ln.codec}, {ln.size} B) lost {ln.lost}")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
