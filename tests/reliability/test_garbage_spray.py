"""A foreign peer sprays garbage at full speed while valid traffic flows (issue 8, item 2).

Per transport, three processes: this one is the receiver (and, on nng and ZeroMQ, the hub),
a child is a nanomitter emitter sending numbered events on ``spray.valid`` (about 1000/s),
and another child is a raw foreign peer spraying bad frames as fast as it can: a pynng Bus0
socket dialled to the nng hub, a pyzmq PUB socket on the proxy's XSUB side (two-frame,
one-frame and three-frame messages), or a raw NATS protocol client publishing bad bodies and
bad headers on the subjects the receiver subscribes to. ``spray_support.py`` says what the
garbage is; every piece of it is bad by construction. The spray starts once the receiver has
the valid emitter's first event (a lost head would look like joining late, which is no loss).

Asserted, per run:

- nothing escapes: the receiver's emitter stays open and its error hook hears only
  ``FrameDecodeError`` (and, on NATS, a ``ConnectionStateChanged`` per disconnect and
  reconnect when the server cuts the flooded receiver off as a slow consumer); the default
  log hook, fed the same problems, logs each kind at most about once a second and
  accounts for every one it suppressed;
- every bad frame that reached the receiver is counted exactly once: a counter around the
  receiver's frame decoder (nng, ZeroMQ) or its NATS message sink sees each frame handed
  in, and ``stats().decode_errors`` equals the frames that did not decode plus the decoded
  garbage envelopes the emitter rejected. On NATS, where the server drops nothing unless
  it cuts off a slow consumer, that is also exactly what the sprayer sent;
- valid events keep arriving: no silence longer than a third of the spray (at most 5 s),
  and ``stats().lost`` equals the gaps actually observed in their sequence numbers
  (nothing duplicated or reordered);
- the receiver's resident memory grows by less than 100 MB.

``make test`` runs a 3 s spray on nng (asyncio), ZeroMQ (trio) and NATS (asyncio); ``make
soak`` runs min(30, DURATION) seconds on nng (trio), ZeroMQ (asyncio) and NATS (asyncio).
The figures are printed and appended to /tmp/nanomitter-reliability/garbage_spray.jsonl.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
import nats
import pytest
from spray_support import (
    GARBAGE_SENDER,
    MAX_FRAME_BYTES,
    SCRIPT,
    VALID_TOPIC,
    rss_bytes,
)

import nanomitter
from nanomitter import DistributedEvent, FrameDecodeError, Problem
from nanomitter.core.codecs import Codec, FrameDecoder
from nanomitter.core.context import TransportContext
from nanomitter.core.report import LogProblems
from nanomitter.core.stats import Counters
from nanomitter.transports.nats import NatsTransport
from nats_support import NatsServer, nats_server
from peers import Recorder, free_port, running
from zmq_support import free_port_pair

__all__ = ["nats_server"]  # a fixture: imported so that pytest finds it

pytestmark = pytest.mark.anyio

SHORT_SECONDS = 3.0
RSS_BOUND = 100 * 1024 * 1024
RESULTS = Path("/tmp/nanomitter-reliability/garbage_spray.jsonl")
SHORT_CASES = [("nng", "asyncio"), ("zmq", "trio"), ("nats", "asyncio")]
SOAK_CASES = [("nng", "trio"), ("zmq", "asyncio"), ("nats", "asyncio")]
"""With SHORT_CASES, every transport on every backend it supports, once each."""


# ---------------------------------------------------------------------------- accounting


@dataclass
class FrameTally:
    """What reached the receiver's decoder (or NATS sink), frame by frame."""

    frames: int = 0
    rejected: int = 0
    """Frames the decoder (or sink) counted in decode_errors."""
    decoded: int = 0
    garbage_envelopes: int = 0
    """Decoded envelopes from the sprayer (for the emitter to reject: bad topic/request)."""
    skipped: int = 0
    """NATS only: copies skipped as duplicates or plumbing."""
    anomalies: list[str] = field(default_factory=list)
    """Frames that neither yielded events nor were counted exactly once."""

    def check(self, errors: int, added: list[DistributedEvent], extra: int = 0) -> None:
        if errors == 1 and not added and not extra:
            self.rejected += 1
        elif errors == 0 and added:
            self.decoded += 1
            self.garbage_envelopes += sum(e.sender == GARBAGE_SENDER for e in added)
        elif errors == 0 and not added and extra == 1:
            self.skipped += 1
        elif len(self.anomalies) < 20:
            self.anomalies.append(f"decode_errors +{errors}, {len(added)} events, extra {extra}")


class CountingDecoder:
    """Stands in for the receiver's FrameDecoder and tallies each frame's outcome."""

    def __init__(self, inner: FrameDecoder, counters: Counters, tally: FrameTally) -> None:
        self.inner = inner
        self.codec = inner.codec
        self.max_frame_bytes = inner.max_frame_bytes
        self._counters = counters
        self._tally = tally

    def decode_into(self, frame: bytes | memoryview, out: list[DistributedEvent]) -> None:
        errors, size = self._counters.decode_errors, len(out)
        self._tally.frames += 1
        self.inner.decode_into(frame, out)
        self._tally.check(self._counters.decode_errors - errors, out[size:])

    def reject(self, reason: str, frame: bytes | None = None) -> None:
        errors = self._counters.decode_errors
        self._tally.frames += 1
        self.inner.reject(reason, frame)
        self._tally.check(self._counters.decode_errors - errors, [])


@contextmanager
def counting_decoders(tally: FrameTally) -> Iterator[None]:
    """Every emitter opened meanwhile (only the receiver, here) decodes through the tally."""
    original = TransportContext.decoder

    def decoder(self: TransportContext, codec: Codec, max_frame_bytes: int) -> FrameDecoder:
        inner = original(self, codec, max_frame_bytes)
        return CountingDecoder(inner, self.counters, tally)  # type: ignore[return-value]

    TransportContext.decoder = decoder  # type: ignore[method-assign]
    try:
        yield
    finally:
        TransportContext.decoder = original  # type: ignore[method-assign]


def count_nats_sinks(transport: NatsTransport, counters: Counters, tally: FrameTally) -> None:
    """Route every bus subscription's messages through the tally (sinks are looked up per
    message, so this takes effect at once)."""
    client = transport.client
    assert client is not None
    for sid, sink in list(client.sinks.items()):
        client.sinks[sid] = _counting_sink(transport, counters, tally, sink)


Sink = Callable[[int, bytes, bytes, bytes, bytes], None]


def _counting_sink(
    transport: NatsTransport, counters: Counters, tally: FrameTally, sink: Sink
) -> Sink:
    def counted(sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        errors, size = counters.decode_errors, len(transport._ready)
        skipped = transport.duplicates_skipped + transport.plumbing_skipped
        dropped = transport.recv_dropped
        tally.frames += 1
        sink(sid, subject, reply, data, headers)
        added = transport._ready[size:]
        if transport.recv_dropped > dropped:  # the receive queue was full: counted there
            added = [DistributedEvent(topic="?", sender="dropped")]
        extra = transport.duplicates_skipped + transport.plumbing_skipped - skipped
        tally.check(counters.decode_errors - errors, added, extra)

    return counted


class _ListHandler(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class ProblemCounter:
    """The receiver's error hook: counts problems by type and feeds the default log hook
    (whose output is counted too), without keeping millions of problem objects."""

    def __init__(self) -> None:
        self.by_type: dict[str, int] = {}
        self.samples: list[str] = []
        self.log_records: list[logging.LogRecord] = []
        log = logging.getLogger(f"nanomitter.test.spray.{id(self)}")
        log.propagate = False
        log.addHandler(_ListHandler(self.log_records))
        self.log_hook = LogProblems(log=log)

    def __call__(self, problem: Problem) -> None:
        name = type(problem).__name__
        self.by_type[name] = self.by_type.get(name, 0) + 1
        if len(self.samples) < 5 and not isinstance(problem, FrameDecodeError):
            self.samples.append(f"{name}: {problem}")
        self.log_hook(problem)

    def logged_and_suppressed(self) -> tuple[int, int]:
        """(records logged, problems they say were suppressed + still pending)."""
        suppressed = sum(self.log_hook._suppressed.values())
        for record in self.log_records:
            text = record.getMessage()
            if " more " in text and text.endswith("problems since the last report)"):
                suppressed += int(text.rsplit("(", 1)[1].split(" ", 1)[0])
        return len(self.log_records), suppressed


class ValidRecorder:
    """The numbered events of the valid emitter, with their arrival times."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.times: list[float] = []
        self.leaks: list[DistributedEvent] = []
        self.first: anyio.Event = anyio.Event()
        self.last: anyio.Event = anyio.Event()

    def __call__(self, event: DistributedEvent) -> None:
        if event.topic != VALID_TOPIC or event.sender == GARBAGE_SENDER:
            if len(self.leaks) < 20:
                self.leaks.append(event)
            return
        self.seqs.append(event.seq)
        self.times.append(time.monotonic())
        self.first.set()
        if isinstance(event.data, dict) and event.data.get("last"):
            self.last.set()


# ---------------------------------------------------------------------------- the run


def urls(transport: str, server: NatsServer | None) -> tuple[str, str, str]:
    """(receiver, valid emitter, sprayer) URLs."""
    if transport == "nng":
        port = free_port()
        base = f"tcp://127.0.0.1:{port}"
        return f"{base}?role=hub&max_frame_bytes={MAX_FRAME_BYTES}", f"{base}?role=node", base
    if transport == "zmq":
        port = free_port_pair()
        base = f"zmq+tcp://127.0.0.1:{port}"
        return f"{base}?role=hub&max_frame_bytes={MAX_FRAME_BYTES}", f"{base}?role=node", base
    assert server is not None
    return server.url, server.url, server.url


async def spray(transport: str, seconds: float, server: NatsServer | None) -> dict[str, Any]:
    receiver_url, valid_url, spray_url = urls(transport, server)
    tally = FrameTally()
    problems = ProblemCounter()
    valid = ValidRecorder()
    rss: list[int] = []
    with counting_decoders(tally):
        bus = nanomitter.connect(receiver_url, on_error=problems, heartbeat_interval=0)
        async with bus:
            bus.on("*", valid)

            @bus.responder("spray.svc")
            def serve(event: DistributedEvent) -> object:
                return event.data

            await bus.listening()
            if isinstance(bus.transport, NatsTransport):
                count_nats_sinks(bus.transport, bus._counters, tally)
            in_msgs = _in_msgs(bus)
            python = sys.executable
            async with (
                running([python, str(SCRIPT), "valid", valid_url], stdin=True) as (child, out),
                running([python, str(SCRIPT), transport, spray_url, str(seconds)], stdin=True) as (
                    sprayer,
                    spray_out,
                ),
            ):
                assert child.stdin is not None and sprayer.stdin is not None
                await out.wait_for(lambda line: line == "ready", 60)
                await spray_out.wait_for(lambda line: line == "ready", 60)
                baseline = rss_bytes()
                started = time.monotonic()
                await child.stdin.send(b"go\n")
                # the garbage starts once the valid stream has: a receiver that never saw a
                # sender's first event cannot tell a lost head from joining late (not a loss)
                with anyio.fail_after(30):
                    await valid.first.wait()
                await sprayer.stdin.send(b"go\n")
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_sample_rss, rss)
                    line = await spray_out.wait_for(lambda line: line.startswith("{"), seconds + 60)
                    tg.cancel_scope.cancel()
                stopped = time.monotonic()
                sprayed = json.loads(line)
                # the valid emitter's last event must not meet queues still full of garbage
                # (the hub would drop it like any other): wait until the garbage stops coming
                await _drained(tally)
                await child.stdin.send(b"finish\n")
                with anyio.fail_after(30):
                    await valid.last.wait()
                emitter = json.loads(await out.wait_for(lambda line: line.startswith("{"), 30))
            # one instant: the tally, the problems and the counters are read together
            stats = bus.stats()
            tally = replace(tally, anomalies=list(tally.anomalies))
            problem_counts = dict(problems.by_type)
            logged, suppressed = problems.logged_and_suppressed()
            received_msgs = _in_msgs(bus) - in_msgs
            transport_stats = dict(bus.transport.statistics())
            assert not bus.closed
        rss.append(rss_bytes())
    windows = _arrivals_per_second(valid.times, started + 0.2, stopped)
    during = [at for at in valid.times if started <= at <= stopped]
    gaps = [b - a for a, b in zip([started, *during], [*during, stopped], strict=True)]
    final = valid.seqs[-1]
    return {
        "transport": transport,
        "backend": "",  # filled in by the caller
        "seconds": round(stopped - started, 2),
        "garbage_sent": sprayed["sent"],
        "garbage_kinds": sprayed["kinds"],
        "garbage_levels": sprayed.get("levels"),
        "frames_in": tally.frames,
        "rejected_by_decoder": tally.rejected,
        "garbage_envelopes": tally.garbage_envelopes,
        "garbage_arrived": tally.rejected + tally.garbage_envelopes,
        "decoded_frames": tally.decoded,
        "skipped": tally.skipped,
        "anomalies": tally.anomalies,
        "nats_in_msgs": received_msgs,
        "decode_errors": stats.decode_errors,
        "problems": problem_counts,
        "problem_samples": problems.samples,
        "log_records": logged,
        "log_suppressed": suppressed,
        "valid_emitted": emitter["emitted"],
        "valid_received": len(valid.seqs),
        "valid_distinct": len(set(valid.seqs)),
        "valid_first_seq": valid.seqs[0],
        "valid_final_seq": final,
        "valid_per_second": windows,
        "valid_longest_gap_s": round(max(gaps), 2),
        "lost_counted": stats.lost,
        "reordered": stats.reordered,
        "valid_emitter_stats": emitter["stats"],
        "leaks": [repr(event)[:200] for event in valid.leaks],
        "rss_baseline_mb": round(baseline / 2**20, 1),
        "rss_growth_mb": round((max(rss) - baseline) / 2**20, 1),
        "transport_stats": transport_stats,
    }


def _in_msgs(bus: nanomitter.DistributedEventEmitter) -> int:
    transport = bus.transport
    if isinstance(transport, NatsTransport) and transport.client is not None:
        return int(transport.client.stats["in_msgs"])
    return 0


async def _drained(tally: FrameTally) -> None:
    """Return once no garbage has arrived for 0.3 s (polled: nothing signals the end of a
    backlog in the hub's and the receiver's queues)."""
    with anyio.fail_after(30):
        seen = -1
        while seen != tally.rejected + tally.garbage_envelopes:
            seen = tally.rejected + tally.garbage_envelopes
            await anyio.sleep(0.3)


async def _sample_rss(samples: list[int]) -> None:
    while True:
        samples.append(rss_bytes())
        await anyio.sleep(0.1)  # a sampling period, not synchronisation


def _arrivals_per_second(times: list[float], start: float, end: float) -> list[int]:
    """Valid arrivals in each whole second of [start, end] (the last partial one dropped)."""
    count = max(1, int(end - start))
    windows = [0] * count
    for at in times:
        index = int(at - start)
        if 0 <= index < count:
            windows[index] += 1
    return windows


def check(result: dict[str, Any]) -> None:
    """The assertions the module docstring lists; the figures go to RESULTS first."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as results:
        results.write(json.dumps(result) + "\n")
    print(json.dumps(result, indent=1))
    where = f"{result['transport']} ({result['backend']})"
    problems = dict(result["problems"])
    # nothing escaped: only bad-frame reports, and on NATS the reconnects of a receiver the
    # server cut off as a slow consumer (one report per disconnect and per reconnect)
    assert problems.pop("FrameDecodeError", 0) == result["decode_errors"], where
    if result["transport"] == "nats":
        figures = result["transport_stats"]
        reconnected = figures["disconnects"] + figures["reconnects"]
        assert problems.pop("ConnectionStateChanged", 0) == reconnected, where
    assert problems == {}, (where, result["problem_samples"])
    # the log hook was not flooded, and accounts for every problem it did not log
    total = sum(result["problems"].values())
    assert result["log_records"] <= 2 * (result["seconds"] + 5) + total - result["decode_errors"]
    assert result["log_records"] + result["log_suppressed"] == total, where
    # every frame handed in yielded events or was counted exactly once
    assert result["anomalies"] == [], where
    assert result["garbage_arrived"] > 0, f"{where}: no garbage reached the receiver"
    assert result["decode_errors"] == result["garbage_arrived"], where
    assert result["garbage_arrived"] <= result["garbage_sent"], where
    assert result["leaks"] == [], where
    if result["transport"] == "nats":
        assert result["frames_in"] == result["nats_in_msgs"], where
        if result["transport_stats"]["disconnects"] == 0:  # nothing was cut off: all arrived
            assert result["garbage_arrived"] == result["garbage_sent"], where
    # valid traffic kept flowing (no silence longer than a third of the run, at most 5 s:
    # with two shared cores a busy second without any can happen), its loss counted exactly
    patience = min(5.0, max(1.5, result["seconds"] / 3))
    assert result["valid_longest_gap_s"] < patience, (where, result["valid_per_second"])
    assert result["valid_received"] == result["valid_distinct"], f"{where}: duplicates"
    assert result["valid_final_seq"] == result["valid_emitted"], where
    assert result["valid_first_seq"] == 1, where
    assert result["reordered"] == 0, where
    assert result["lost_counted"] == result["valid_final_seq"] - result["valid_distinct"], where
    # memory stays bounded
    assert result["rss_growth_mb"] * 2**20 < RSS_BOUND, where


async def run_case(
    transport: str, backend: str, seconds: float, request: pytest.FixtureRequest
) -> None:
    server: NatsServer | None = None
    if transport == "nats":
        server = request.getfixturevalue("nats_server")
    result = await spray(transport, seconds, server)
    result["backend"] = backend
    check(result)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("transport", "anyio_backend"), SHORT_CASES)
async def test_garbage_spray(
    transport: str, anyio_backend: str, request: pytest.FixtureRequest
) -> None:
    await run_case(transport, anyio_backend, SHORT_SECONDS, request)


@pytest.mark.soak
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("transport", "anyio_backend"), SOAK_CASES)
async def test_garbage_spray_soak(
    transport: str, anyio_backend: str, soak_duration: float, request: pytest.FixtureRequest
) -> None:
    await run_case(transport, anyio_backend, min(30.0, soak_duration), request)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_nats_request_from_a_sender_that_is_not_a_token_is_counted(
    nats_server: NatsServer,
) -> None:
    """A responder builds the reply subject from the request's sender id. A plain client
    that sends ``Nanomitter-Sender: a b c`` must not make it publish ``HPUB <!.a b c.1 ...``
    (a protocol error: the server closes the responder's connection) nor, with ``a b``,
    publish on ``<!.a`` with ``b.1`` as the reply subject: counted as a bad request,
    unanswered, and the responder keeps serving without a reconnect.
    (Reproduction: /tmp/notes/badinput-nats-bad-headers.py.)"""
    problems = Recorder()
    url = nats_server.url
    async with (
        nanomitter.connect(url, on_error=problems, heartbeat_interval=0) as responder,
        nanomitter.connect(url, heartbeat_interval=0) as requester,
    ):

        @responder.responder("svc")
        def serve(event: DistributedEvent) -> object:
            return event.data

        await responder.listening()
        senders = ["a b c", "a b", "x\ty", "a.b"]
        client = await nats.connect(url, allow_reconnect=False)
        try:
            for sender in senders:
                headers = {"Content-Type": "application/json", "Nanomitter-Sender": sender}
                await client.publish("<?.svc", b'{"id": 1, "to": "", "data": 1}', headers=headers)
            await client.flush()
        finally:
            await client.close()
        await problems.wait(len(senders), timeout=10)
        assert all(isinstance(p, FrameDecodeError) for p in problems.events), problems.events
        assert await requester.request("svc", 5, timeout=5) == 5
        assert responder.stats().decode_errors == len(senders)
        assert responder.stats().served == 1
        assert responder.transport.statistics()["disconnects"] == 0
