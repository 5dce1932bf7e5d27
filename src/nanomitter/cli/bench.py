"""``nanomitter bench``: throughput, p50/p99 latency and loss of a bus URL, on this machine.

Why it exists: the scripts in ``benchmarks/`` compare nanomitter against the raw libraries
(a maintainer's question); this command answers a user's: how fast, how lossy and how
quick is *my* URL here, and how do two URLs compare. Per URL: this process publishes (and,
for nng and ZeroMQ, hosts the hub, so the hub lives exactly as long as the measurement);
each subscriber is its own process (:mod:`nanomitter.cli.bench_worker`), or a task here for
transports that cannot cross processes (``memory://``). Three phases: a short warm-up, the
throughput phase (``--count`` events, flat out or at ``--rate``) and the latency phase
(``--latency-rate`` events/s for ``--latency-seconds``). Each phase ends with fence events
until every subscriber has reported (see :class:`~nanomitter.cli.bench_worker.Tally`).
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import time
from collections import deque
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from subprocess import PIPE
from typing import IO, Any

import anyio
import anyio.abc
import anyio.lowlevel
import click
import msgspec
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

import nanomitter

from ..connect import URL_ENVIRONMENT_VARIABLE
from ..core.errors import NanomitterError
from ..machine import describe
from ..transports.registry import NNG_SCHEMES, ZMQ_SCHEMES, transport_class
from ..transports.url import BusURL, redact
from .bench_report import rate_text, ratio_of, table, us_text
from .bench_worker import TOPIC, Report, subscribe
from .common import one_line

I_BASE = 1 << 16
"""Indexes start here so ``i`` always takes 5 bytes of msgpack and payload sizes are exact."""
MAX_SIZE = 1_000_000
FENCE_INTERVAL = 0.001
WARMUP_EVENTS, WARMUP_RATE = 200, 2000.0
READY_TIMEOUT = 30.0
PUBLISHER_CONNECT_TIMEOUT = 3.0
"""For a URL that does not set ``connect_timeout``: a benchmark need not wait 10 s to learn
that nothing answers."""
WORKER = "import sys; from nanomitter.cli.bench_worker import main; sys.exit(main(sys.argv[1:]))"
"""The subscriber's entry (``-c``, not ``-m``: runpy would import the module twice if the
package imports it too)."""
IN_PROCESS_SCHEMES = ("inproc", "nng+inproc")
"""nng schemes that, like ``memory://``, cannot cross processes."""


# ---------------------------------------------------------------------------- payloads


def _data(pad: str) -> dict[str, Any]:
    return {"i": I_BASE, "ts": time.monotonic_ns() | (1 << 40), "f": 0, "p": 1, "pad": pad}


def make_pad(size: int) -> tuple[str, int]:
    """The pad that makes the event's data ``size`` bytes of msgpack, and the size it makes.

    A few sizes cannot be hit exactly (msgpack's string header grows at 32 characters);
    those get the next size up.
    """
    bare = len(msgspec.msgpack.encode(_data("")))
    length = max(0, size - bare - 4)  # the string header takes 0 to 4 bytes more
    while True:
        actual = len(msgspec.msgpack.encode(_data("x" * length)))
        if actual >= size:
            return "x" * length, actual
        length += 1


MIN_SIZE = make_pad(0)[1]


# ---------------------------------------------------------------------------- what to run


class BenchUsageError(click.UsageError):
    """A usage error on one line (``Error: ... (see '... --help')``), exit code 2."""

    def show(self, file: IO[Any] | None = None) -> None:
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        click.echo(f"Error: {self.format_message()}{hint}", err=True, file=file)


class BenchError(click.ClickException):
    """A runtime failure (unreachable URL, dead subscriber ...): one line, exit code 1."""


@dataclass(frozen=True)
class Plan:
    """How one URL is measured: who publishes, who subscribes, where."""

    url: str
    display: str  # credentials redacted
    transport: str
    publisher_options: dict[str, Any]
    subscriber_options: dict[str, Any]
    in_process: bool


def plan(url: str) -> Plan:
    """Check ``url`` (scheme, options and their values) without opening anything.

    nng and ZeroMQ: the publisher is the hub (``role=hub``) and subscribers join it
    (``role=node``), unless the URL says ``role=node``: then everyone joins a hub that
    runs elsewhere.
    """
    try:
        parsed = BusURL.parse(url)
        cls = transport_class(parsed.scheme)
    except ImportError as exc:
        raise BenchError(
            f"{redact(url)}: the transport is not installed ({one_line(exc)}); for nats:// "
            "install nanomitter[nats]"
        ) from None
    except (ValueError, NanomitterError) as exc:
        raise BenchUsageError(one_line(exc)) from None
    publisher: dict[str, Any] = {}
    subscriber: dict[str, Any] = {}
    hubbed = parsed.scheme in NNG_SCHEMES or parsed.scheme in ZMQ_SCHEMES
    if hubbed and parsed.options.get("role") != "node":
        publisher["role"], subscriber["role"] = "hub", "node"
    if "connect_timeout" in cls.options and "connect_timeout" not in parsed.options:
        publisher["connect_timeout"] = PUBLISHER_CONNECT_TIMEOUT
    try:
        for options in ({}, publisher):  # as given, then as the publisher opens it
            parsed = BusURL.parse(url, options)
            parsed.check_options(cls.options)
            cls.from_url(parsed)  # option values are checked here; nothing is opened
    except (ValueError, NanomitterError) as exc:
        raise BenchUsageError(one_line(exc)) from None
    name = cls.__name__.removesuffix("Transport").lower() or cls.__name__
    in_process = not cls.capabilities.crosses_processes or parsed.scheme in IN_PROCESS_SCHEMES
    return Plan(url, redact(url), name, publisher, subscriber, in_process)


@dataclass(frozen=True)
class Settings:
    count: int
    size: int
    subscribers: int
    rate: float  # 0: flat out
    latency_rate: float  # 0: no latency phase
    latency_seconds: float

    @property
    def latency_count(self) -> int:
        if not self.latency_rate:
            return 0
        return max(1, round(self.latency_rate * self.latency_seconds))


# ---------------------------------------------------------------------------- results


@dataclass
class SubscriberResult:
    """One subscriber's report for one phase."""

    delivered: int
    first_ns: int
    last_ns: int
    observed: int  # gaps in the publisher's index, counted by the subscriber
    reported: int  # stats().lost over the same window
    dropped: int
    decode_errors: int
    lats: list[int]

    @classmethod
    def from_report(cls, report: Report) -> SubscriberResult:
        return cls(
            report["delivered"],
            report["first_ns"],
            report["last_ns"],
            report["observed"],
            report["reported"],
            report["dropped"],
            report["decode_errors"],
            report["lats"],
        )


@dataclass
class Phase:
    count: int
    start_ns: int
    end_ns: int
    subscribers: list[SubscriberResult]
    publisher_dropped: int  # the publisher's stats().dropped during the phase

    @property
    def sent_per_s(self) -> float:
        return self.count / max(self.end_ns - self.start_ns, 1) * 1e9

    def delivered_per_s(self, sub: SubscriberResult) -> float:
        return sub.delivered / max(sub.last_ns - self.start_ns, 1) * 1e9 if sub.delivered else 0.0

    @property
    def mean_delivered_per_s(self) -> float:
        return statistics.fmean(self.delivered_per_s(s) for s in self.subscribers)

    @property
    def loss(self) -> float:
        """Fraction of the phase's events that did not arrive, averaged over subscribers."""
        return statistics.fmean(1 - s.delivered / self.count for s in self.subscribers)

    def percentile_us(self, q: float) -> float | None:
        lats = sorted(x for s in self.subscribers for x in s.lats)
        if not lats:
            return None
        return lats[min(len(lats) - 1, int(q * len(lats)))] / 1e3


@dataclass
class Outcome:
    """Everything measured for one URL (or why it failed)."""

    plan: Plan
    settings: Settings
    size: int  # the payload size actually sent
    phases: list[Phase] = field(default_factory=list)  # warm-up, throughput[, latency]
    error: str = ""

    @property
    def throughput(self) -> Phase:
        return self.phases[1]

    @property
    def latency(self) -> Phase | None:
        return self.phases[2] if len(self.phases) > 2 else None

    @property
    def lost_matches(self) -> bool:
        """``stats().lost`` equalled the observed gaps in every subscriber's every window."""
        return all(s.reported == s.observed for p in self.phases for s in p.subscribers)

    def to_json(self, ratio: float | None) -> dict[str, Any]:
        head: dict[str, Any] = {
            "url": self.plan.display,
            "transport": self.plan.transport,
            "size": self.size,
            "subscribers": self.settings.subscribers,
            "count": self.settings.count,
            "rate": self.settings.rate,
            "machine": describe(),
        }
        if self.error:
            return {**head, "error": self.error}
        phase = self.throughput
        latency = self.latency
        result = {
            **head,
            "sent_per_s": round(phase.sent_per_s, 1),
            "delivered_per_s": round(phase.mean_delivered_per_s, 1),
            "loss": phase.loss,
            "lost_observed": sum(s.observed for s in phase.subscribers),
            "lost_reported": sum(s.reported for s in phase.subscribers),
            "lost_matches": self.lost_matches,
            "dropped": sum(s.dropped for s in phase.subscribers),
            "publisher_dropped": phase.publisher_dropped,
            "latency_rate": self.settings.latency_rate,
            "latency_events": latency.count if latency else 0,
            "latency_loss": latency.loss if latency else None,
            "p50_us": latency.percentile_us(0.50) if latency else None,
            "p99_us": latency.percentile_us(0.99) if latency else None,
            "per_subscriber": [
                {
                    "delivered": s.delivered,
                    "delivered_per_s": round(phase.delivered_per_s(s), 1),
                    "missing": phase.count - s.delivered,
                    "lost_observed": s.observed,
                    "lost_reported": s.reported,
                    "dropped": s.dropped,
                    "decode_errors": s.decode_errors,
                }
                for s in phase.subscribers
            ],
        }
        if ratio is not None:
            result["ratio"] = round(ratio, 3)
        return result


# ---------------------------------------------------------------------------- subscribers

Inbox = MemoryObjectSendStream[tuple[int, Report]]


class ChildSubscribers:
    """Subscribers as child processes speaking JSON lines; each exits when stdin closes.

    They run in a session of their own, so a Ctrl-C reaches only the bench, which then
    stops and reaps them itself.
    """

    def __init__(self, plan: Plan, count: int, inbox: Inbox) -> None:
        self.plan = plan
        self.count = count
        self.inbox = inbox
        self.processes: list[anyio.abc.Process] = []
        self.stopping = False

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        options = msgspec.json.encode(self.plan.subscriber_options).decode()
        command = [sys.executable, "-c", WORKER, options]
        # the URL goes by environment, not argv: credentials in it must not show in `ps`
        env = {**os.environ, URL_ENVIRONMENT_VARIABLE: self.plan.url}
        for number in range(self.count):
            process = await anyio.open_process(
                command, stdin=PIPE, stdout=PIPE, stderr=PIPE, env=env, start_new_session=True
            )
            self.processes.append(process)
            errors: deque[str] = deque(maxlen=3)
            drained = anyio.Event()
            task_group.start_soon(self._errors, process, errors, drained)
            task_group.start_soon(self._reports, number, process, errors, drained)

    def describe(self) -> str:
        pids = ", ".join(str(p.pid) for p in self.processes)
        return f"{self.count} subscriber process(es) ready (pid {pids})"

    async def _errors(
        self, process: anyio.abc.Process, errors: deque[str], drained: anyio.Event
    ) -> None:
        """Drain stderr (a full pipe would stall the child), keeping the last lines."""
        assert process.stderr is not None
        try:
            buffer = b""
            async for chunk in process.stderr:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                errors.extend(
                    t for t in (line.decode(errors="replace").strip() for line in lines) if t
                )
            if buffer.strip():
                errors.append(buffer.decode(errors="replace").strip())
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        finally:
            drained.set()

    async def _reports(
        self,
        number: int,
        process: anyio.abc.Process,
        errors: deque[str],
        drained: anyio.Event,
    ) -> None:
        assert process.stdout is not None
        lines = BufferedByteReceiveStream(process.stdout)
        try:
            while True:
                line = await lines.receive_until(b"\n", 64 * 1024 * 1024)
                try:
                    message = msgspec.json.decode(line)
                except msgspec.DecodeError:
                    continue  # not ours: something else wrote to the child's stdout
                await self.inbox.send((number, message))
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.ClosedResourceError):
            pass
        if self.stopping:
            return
        code = await process.wait()
        with anyio.move_on_after(2):
            await drained.wait()
        how = f"was killed by {_signal_name(-code)}" if code < 0 else f"exited with code {code}"
        why = f": {errors[-1]}" if errors else ""
        message = f"subscriber {number + 1} (pid {process.pid}) {how}{why}"
        await self.inbox.send((number, {"error": message}))

    async def stop(self) -> None:
        """Close every child's stdin (its signal to leave), then kill what lingers; reap all."""
        self.stopping = True
        with anyio.CancelScope(shield=True):
            for process in self.processes:
                if process.stdin is not None:
                    await process.stdin.aclose()
            with anyio.move_on_after(5):
                for process in self.processes:
                    await process.wait()
            for process in self.processes:
                if process.returncode is None:
                    process.kill()
                await process.wait()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class LocalSubscribers:
    """Subscribers as tasks in this process, for transports that cannot cross processes."""

    def __init__(self, plan: Plan, count: int, inbox: Inbox) -> None:
        self.plan = plan
        self.count = count
        self.inbox = inbox
        self.leave = anyio.Event()
        self.running = 0
        self.gone = anyio.Event()

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        for number in range(self.count):
            self.running += 1
            task_group.start_soon(self._run, number)

    def describe(self) -> str:
        where = f"in this process ({self.plan.url.split(':', 1)[0]}:// is in-process)"
        return f"{self.count} subscriber(s) ready {where}"

    async def _run(self, number: int) -> None:
        def send(report: Report) -> None:
            self.inbox.send_nowait((number, report))

        def ready() -> None:
            self.inbox.send_nowait((number, {"ready": True}))

        try:
            await subscribe(
                self.plan.url, self.plan.subscriber_options, send, ready, self.leave.wait
            )
        except Exception as exc:
            self.inbox.send_nowait((number, {"error": f"subscriber {number + 1}: {one_line(exc)}"}))
        finally:
            self.running -= 1
            if not self.running:
                self.gone.set()

    async def stop(self) -> None:
        self.leave.set()
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            await self.gone.wait()


# ---------------------------------------------------------------------------- view


class RateColumn(ProgressColumn):
    """Events per second so far."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} events/s", style="progress.data.speed")


class View:
    """What a person sees on stderr: a progress bar while a phase runs, a line once it
    has run. Quiet (``--json``): nothing at all.
    """

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        console = Console(stderr=True, highlight=False)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=quiet or not console.is_terminal,  # a log file gets the lines alone
            transient=True,  # each phase ends with a line of its own instead
        )
        self.task: TaskID | None = None

    def note(self, text: str) -> None:
        if not self.quiet:
            self.progress.console.print(text, markup=False, soft_wrap=True)

    def begin(self, description: str, total: int) -> None:
        if not self.quiet:
            self.task = self.progress.add_task(description, total=total)

    def advance(self, done: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=done)

    def end(self) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None


# ---------------------------------------------------------------------------- publishing


class Publisher:
    """Emits the phases on an open bus and collects each phase's reports."""

    def __init__(
        self,
        bus: nanomitter.DistributedEventEmitter,
        inbox: MemoryObjectReceiveStream[tuple[int, Report]],
        subscribers: int,
        pad: str,
        view: View,
        *,
        precise: bool,
    ) -> None:
        self.bus = bus
        self.precise = precise
        self.inbox = inbox
        self.subscribers = subscribers
        self.pad = pad
        self.view = view
        self.index = I_BASE
        self.phases = 0
        self.pending: deque[tuple[int, Report]] = deque()

    async def wait_ready(self) -> None:
        ready: set[int] = set()
        with anyio.move_on_after(READY_TIMEOUT):
            while len(ready) < self.subscribers:
                number, _ = await self._receive()
                ready.add(number)
            return
        raise BenchError(
            f"{self.subscribers - len(ready)} subscriber(s) were not ready within "
            f"{READY_TIMEOUT:g} s: is the machine overloaded?"
        )

    def _check(self, message: Report) -> None:
        if "error" in message:
            raise BenchError(message["error"])

    def _poll(self) -> None:
        """While publishing: fail at once if a subscriber died; keep the rest for later."""
        inbox = self.inbox
        while inbox.statistics().current_buffer_used:
            number, message = inbox.receive_nowait()
            self._check(message)
            self.pending.append((number, message))

    async def _receive(self) -> tuple[int, Report]:
        number, message = self.pending.popleft() if self.pending else await self.inbox.receive()
        self._check(message)
        return number, message

    async def phase(self, name: str, count: int, rate: float) -> Phase:
        """Emit ``count`` events (flat out if ``rate`` is 0), then fence until all report."""
        self.phases += 1
        number = self.phases
        emit = self.bus.emit
        clock = time.monotonic_ns
        pad = self.pad
        advance = self.view.advance
        self.view.begin(name, count)
        index = self.index
        dropped = self.bus.stats().dropped
        start = clock()
        sent = 0
        interval = 1 / rate if rate else 0.0
        began = time.monotonic()
        while sent < count:
            due = count if not rate else min(count, int((time.monotonic() - began) * rate) + 1)
            while sent < due:
                index += 1
                await emit(TOPIC, {"i": index, "ts": clock(), "f": 0, "p": number, "pad": pad})
                sent += 1
                if not sent & 1023:
                    advance(sent)
                    self._poll()
                    await anyio.lowlevel.checkpoint()  # Ctrl-C and the subscribers' pipes
            if sent < count:
                advance(sent)
                self._poll()
                await _pace(began + sent * interval, self.precise)
        end = clock()
        advance(sent)
        self.view.end()
        self.index = index
        reports = await self._fence(number, count)
        results = [SubscriberResult.from_report(reports[n]) for n in range(self.subscribers)]
        return Phase(count, start, end, results, self.bus.stats().dropped - dropped)

    async def _fence(self, number: int, count: int) -> dict[int, Report]:
        """Send fence events every ms until every subscriber has reported this phase."""
        budget = 30 + count / 5000
        deadline = time.monotonic() + budget
        reports: dict[int, Report] = {}
        next_fence = 0.0
        while len(reports) < self.subscribers:
            now = time.monotonic()
            if now > deadline:
                missing = sorted(n + 1 for n in range(self.subscribers) if n not in reports)
                raise BenchError(
                    f"subscriber(s) {missing} did not finish within {budget:.0f} s of the last "
                    "event: try a smaller --count, a --rate, or fewer --subscribers"
                )
            if now >= next_fence:
                self.index += 1
                data = {"i": self.index, "ts": time.monotonic_ns(), "f": 1, "p": number, "pad": ""}
                await self.bus.emit(TOPIC, data)
                next_fence = now + FENCE_INTERVAL
            with anyio.move_on_after(max(0.0, next_fence - time.monotonic())):
                subscriber, message = await self._receive()
                if message.get("phase") == number:
                    reports[subscriber] = message
        return reports


async def _pace(until: float, precise: bool) -> None:
    """Wait until ``until`` (``time.monotonic()``) for the next paced event.

    First let the loop run once (a transport may flush on the next loop turn), then, when
    ``precise`` and less than 2 ms remain, ``time.sleep``: asyncio rounds timers up to
    whole milliseconds. Not ``precise`` when subscribers run in this loop: they must run
    while the publisher waits.
    """
    await anyio.lowlevel.checkpoint()
    seconds = until - time.monotonic()
    if seconds > 0.002 or (seconds > 0 and not precise):
        await anyio.sleep(seconds)
    elif seconds > 0:
        time.sleep(seconds)  # noqa: ASYNC251 (sub-ms pacing; this loop has nothing to do)


async def measure(plan: Plan, settings: Settings, view: View) -> Outcome:
    """Open the publisher (the hub), start the subscribers, run the phases, tear down."""
    pad, size = make_pad(settings.size)
    outcome = Outcome(plan, settings, size)
    failure: BenchError | None = None
    inbox_in, inbox_out = anyio.create_memory_object_stream[tuple[int, Report]](1024)
    async with AsyncExitStack() as stack:
        bus = nanomitter.connect(plan.url, **plan.publisher_options)
        try:
            await stack.enter_async_context(bus)
        except (NanomitterError, OSError, RuntimeError, ValueError) as exc:
            raise BenchError(f"cannot open {plan.display}: {one_line(exc)}") from None
        kind = LocalSubscribers if plan.in_process else ChildSubscribers
        subscribers = kind(plan, settings.subscribers, inbox_in)
        publisher = Publisher(
            bus, inbox_out, settings.subscribers, pad, view, precise=not plan.in_process
        )
        async with anyio.create_task_group() as task_group:
            try:
                await subscribers.start(task_group)
                await publisher.wait_ready()
                hub = plan.publisher_options.get("role") == "hub"
                role = "publisher and the hub" if hub else "publisher"
                view.note(f"{plan.display}: {subscribers.describe()}; this process is the {role}")
                await _phases(publisher, settings, view, outcome)
            except BenchError as exc:
                failure = exc
            except (NanomitterError, OSError) as exc:
                failure = BenchError(f"{plan.display}: {one_line(exc)}")
            finally:
                await subscribers.stop()
                task_group.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return outcome


async def _phases(publisher: Publisher, settings: Settings, view: View, outcome: Outcome) -> None:
    """Warm-up, throughput, latency; a line for each measuring phase once it has run."""
    warmup = min(WARMUP_EVENTS, settings.count)
    outcome.phases.append(await publisher.phase("  warm-up", warmup, WARMUP_RATE))
    phase = await publisher.phase("  throughput", settings.count, settings.rate)
    outcome.phases.append(phase)
    reported = sum(s.reported for s in phase.subscribers)
    observed = sum(s.observed for s in phase.subscribers)
    view.note(
        f"  throughput: sent {rate_text(phase.sent_per_s)}/s, delivered "
        f"{rate_text(phase.mean_delivered_per_s)}/s per subscriber, loss {phase.loss:.1%} "
        f"(stats().lost {reported:,}, seen {observed:,})"
    )
    if settings.latency_count:
        phase = await publisher.phase("  latency", settings.latency_count, settings.latency_rate)
        outcome.phases.append(phase)
        view.note(
            f"  latency at {settings.latency_rate:,.0f} events/s: p50 "
            f"{us_text(phase.percentile_us(0.5))}, p99 {us_text(phase.percentile_us(0.99))}, "
            f"loss {phase.loss:.1%}"
        )


# ---------------------------------------------------------------------------- report


class BenchCommand(click.Command):
    """Usage errors on one line: the error and where to look, no usage dump."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise BenchUsageError(exc.format_message(), ctx) from None


@click.command(
    cls=BenchCommand, short_help="Measure throughput, p50/p99 latency and loss of a URL."
)
@click.argument("urls", nargs=-1, metavar="[URL]...")
@click.option(
    "--url", "url", metavar="URL",
    help="The bus URL to measure (default: $NANOMITTER_URL, then tcp://127.0.0.1:55555).",
)  # fmt: skip
@click.option(
    "--compare", is_flag=True, help="Measure every URL given, one after another; add a ratio."
)
@click.option(
    "--count", type=click.IntRange(min=1), default=20_000, show_default=True,
    help="Events in the throughput phase.",
)  # fmt: skip
@click.option(
    "--size", type=click.IntRange(min=MIN_SIZE, max=MAX_SIZE), default=64, show_default=True,
    help="Bytes of each event's data, msgpack-encoded.",
)  # fmt: skip
@click.option(
    "--subscribers", type=click.IntRange(min=1, max=64), default=1, show_default=True,
    help="Subscriber processes.",
)  # fmt: skip
@click.option(
    "--rate", type=click.FloatRange(min=0), default=0, show_default=True,
    help="Events/s in the throughput phase (0: flat out).",
)  # fmt: skip
@click.option(
    "--latency-rate", type=click.FloatRange(min=0), default=2000, show_default=True,
    help="Events/s in the latency phase (0: skip it).",
)  # fmt: skip
@click.option(
    "--latency-seconds", type=click.FloatRange(min=0.05, max=60), default=1.0,
    show_default=True, help="Length of the latency phase.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One JSON object per URL on stdout, no bar.")
def bench(
    *,
    urls: tuple[str, ...],
    url: str | None,
    compare: bool,
    count: int,
    size: int,
    subscribers: int,
    rate: float,
    latency_rate: float,
    latency_seconds: float,
    as_json: bool,
) -> None:
    """Measure throughput, p50/p99 latency and loss of a bus URL on this machine.

    This process publishes (and hosts the hub for nng and ZeroMQ URLs); each subscriber
    is a process of its own (a task here for memory://). `--compare URL URL ...` runs
    several URLs one after another and adds each one's ratio to the first.
    """
    given = ([url] if url else []) + list(urls)
    if len(given) > 1 and not compare:
        raise BenchUsageError("several URLs given: add --compare to measure them side by side")
    if compare and len(given) < 2:
        raise BenchUsageError("--compare needs at least two URLs (--compare URL URL ...)")
    plans = [plan(u) for u in (given or [nanomitter.default_url()])]
    settings = Settings(count, size, subscribers, rate, latency_rate, latency_seconds)
    try:
        outcomes = anyio.run(_run_all, plans, settings, as_json, compare, backend="asyncio")
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        raise click.exceptions.Exit(130) from None
    failed = [o for o in outcomes if o.error]
    if failed:
        raise BenchError(failed[0].error)
    mismatched = [o.plan.display for o in outcomes if not o.lost_matches]
    if mismatched:
        raise BenchError(
            f"loss accounting mismatch on {', '.join(mismatched)}: stats().lost differs from "
            "the loss observed; please report this as a nanomitter bug"
        )


async def _run_all(
    plans: Sequence[Plan], settings: Settings, as_json: bool, compare: bool
) -> list[Outcome]:
    view = View(quiet=as_json)
    outcomes: list[Outcome] = []
    with view.progress:
        for item in plans:
            view.note(f"{item.display}: starting")
            try:
                outcome = await measure(item, settings, view)
            except BenchError as exc:
                if not compare:
                    raise
                outcome = Outcome(item, settings, make_pad(settings.size)[1], error=exc.message)
                view.note(f"{item.display}: failed: {exc.message}")
            outcomes.append(outcome)
            if as_json:
                ratio = ratio_of(outcomes[0], outcome) if compare else None
                _print_json(outcome.to_json(ratio))
    if not as_json:
        # a terminal gets what fits its width; a pipe or file the full table
        stdout = Console(highlight=False, width=None if sys.stdout.isatty() else 10_000)
        stdout.print(table(outcomes, compare, stdout.width))
        stdout.print(f"machine: {describe()}", markup=False, soft_wrap=True)
    return outcomes


def _print_json(obj: dict[str, Any]) -> None:
    sys.stdout.buffer.write(msgspec.json.encode(obj) + b"\n")
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    bench()
